"""--workers: several serving processes on one port, whose metrics add up, whose model control reaches every
one of them, and which drain together on SIGTERM."""

from __future__ import annotations

import json
import signal
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.test_drain_and_reload import ADMIN_KEY, ClientThreads, control, copy_model
from tests.conftest import ROOT, repository_of, start_server

pytestmark = pytest.mark.slow  # servers of its own, of several processes

DIGIT = (ROOT / "tests" / "data" / "digit-7.png").read_bytes()


def worker_of(response: httpx.Response) -> str:
    """Request ids are made per process: their first 8 characters name the worker that answered."""
    return response.headers["x-request-id"][:8]


def counted(server, endpoint: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    return sum(s.value for family in text_string_to_metric_families(text) if family.name == "ortserve_http_requests"
               for s in family.samples if s.name.endswith("_total") and s.labels["endpoint"] == endpoint)


def test_two_workers_serve_one_port_and_their_metrics_add_up(api_repository, tmp_path):
    repository = repository_of(api_repository, tmp_path / "repository", "mnist-cnn")
    with start_server(repository, tmp_path / "log", "--workers", "2") as server:
        workers = set()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for _ in range(40):
                with httpx.Client(base_url=server.url, timeout=30) as fresh:  # a new connection each time
                    answer = fresh.post("/classify-image", files={"file": ("7.png", DIGIT, "image/png")})
                assert answer.status_code == 200 and answer.json()["label"] == "7"
                workers.add(worker_of(answer))
            assert len(workers) == 2, workers
            assert counted(server, "/classify-image") == 40
            ready = [line for line in client.get("/metrics").text.splitlines() if line.startswith("ortserve_model_ready{")]
            assert ready and all(line.endswith(" 1.0") for line in ready)
        # Triton's statistics (perf_analyzer reads them between windows) are the server's, whichever worker
        # answers: each worker's own live counts plus the others' last published ones.
        answered_by: dict[str, int] = {}
        deadline = time.monotonic() + 30
        while len(answered_by) < 2 or set(answered_by.values()) != {40}:
            assert time.monotonic() < deadline, answered_by
            with httpx.Client(base_url=server.url, timeout=30) as fresh:
                answer = fresh.get("/v2/models/mnist-cnn/stats")
            assert answer.status_code == 200
            answered_by[worker_of(answer)] = answer.json()["model_stats"][0]["inference_stats"]["success"]["count"]
            time.sleep(0.05)


class WorkerClients(ClientThreads):
    """Clients classifying in a loop on new connections, noting which worker answered which version."""

    def __init__(self, url: str, clients: int = 4):
        super().__init__(url, clients)
        self.refused = []

    def _run(self) -> None:
        while not self.stop.is_set():
            with httpx.Client(base_url=self.url, timeout=60) as client:
                sent = time.monotonic()
                try:
                    answer = client.post("/classify-image", files={"file": ("7.png", DIGIT, "image/png")})
                except httpx.ConnectError:  # the server no longer takes connections: it is stopping
                    self.refused.append(sent)
                    return
                except httpx.TransportError as exc:  # an accepted request that got no answer
                    self.answers.append((sent, type(exc).__name__, None, None))
                    continue
                self.answers.append((sent, answer.status_code, worker_of(answer), answer.json().get("version")))


def test_a_reload_reaches_every_worker_without_a_failed_request(api_repository, tmp_path):
    repository = tmp_path / "repository"
    copy_model(api_repository / "mnist-cnn" / "1", repository / "mnist-cnn" / "1", "1")
    env = {"ORTSERVE_ADMIN_KEYS": json.dumps([ADMIN_KEY])}
    with start_server(repository, tmp_path / "log", "--workers", "2", env=env) as server:
        with WorkerClients(server.url) as clients:
            deadline = time.monotonic() + 60
            while len({w for *_, w, _ in clients.answers}) < 2:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            copy_model(repository / "mnist-cnn" / "1", repository / "mnist-cnn" / "2", "2")
            assert control(server, "load").status_code == 200
            loaded = time.monotonic()
            # Every worker serves version 2 shortly after (each applies the action once it reads it).
            while {w for sent, _, w, v in clients.answers if sent > loaded + 2 and v == "2"} != {w for *_, w, _ in clients.answers}:
                assert time.monotonic() < loaded + 60, clients.answers[-10:]
                time.sleep(0.05)
        assert {status for _, status, _, _ in clients.answers} == {200}
        late = [v for sent, _, _, v in clients.answers if sent > loaded + 2]
        assert late and set(late) == {"2"}
        index = {(m["name"], m["version"]): m["state"] for m in control(server, "index").json()}
        assert index == {("mnist-cnn", "1"): "READY", ("mnist-cnn", "2"): "READY"}


def test_sigterm_drains_every_worker_and_the_parent_exits(api_repository, tmp_path):
    """As behind a load balancer: clients send until readiness turns 503, then stop sending; every request
    sent is answered, and the parent exits once the workers have drained."""
    repository = repository_of(api_repository, tmp_path / "repository", "mnist-cnn")
    with start_server(repository, tmp_path / "log", "--workers", "2", "--unready-s", "1.5") as server:
        with WorkerClients(server.url, clients=6) as clients:
            time.sleep(1)
            server.process.send_signal(signal.SIGTERM)
            while httpx.get(server.url + "/health/ready", timeout=30).status_code == 200:
                time.sleep(0.02)
            clients.stop.set()  # the load balancer takes the replica out
        assert server.process.wait(timeout=60) == 0
        answered = [status for _, status, _, _ in clients.answers]
        assert answered and set(answered) == {200}, set(answered)
        assert not clients.refused


def test_a_worker_that_cannot_start_stops_the_parent(api_repository, tmp_path):
    repository = tmp_path / "repository"
    copy_model(api_repository / "mnist-cnn" / "1", repository / "mnist-cnn" / "1", "1")
    for model_file in (repository / "mnist-cnn" / "1").glob("*.onnx"):
        model_file.write_bytes(b"not a model")  # fails its sha256 when loaded
    with start_server(repository, tmp_path / "log", "--workers", "2", "--strict", wait_ready=False) as server:
        assert server.process.wait(timeout=120) == 1
        assert "a worker failed to start" in server.output()
