"""Graceful drain on SIGTERM (every accepted request answered) and zero-downtime model reload through the
model-control API (no failed request across a swap; answers move to the new version)."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from tests.conftest import ROOT, repository_of, start_server

pytestmark = pytest.mark.slow  # servers of its own, signalled and reloaded

ADMIN_KEY = "reload-admin-key"
POSITIVE, NEGATIVE = "A wonderful, moving film.", "Dull, joyless and far too long."


def read_response(sock: socket.socket) -> tuple[int, dict]:
    """One HTTP/1.1 response with a content-length body, read to its end."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before an answer: {data[:200]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the middle of an answer")
        body += chunk
    return int(lines[0].split()[1]), json.loads(body)


def test_sigterm_answers_every_accepted_request_then_exits(api_repository, tmp_path):
    repository = repository_of(api_repository, tmp_path / "repository", "sentiment-transformer")
    with start_server(repository, tmp_path / "log", "--unready-s", "1", "--drain-s", "60") as server:
        url = urlparse(server.url)
        sockets = []
        for i in range(200):
            body = json.dumps({"texts": [f"{POSITIVE} ({i})", f"{NEGATIVE} ({i})", POSITIVE, NEGATIVE]}).encode()
            sock = socket.create_connection((url.hostname, url.port), timeout=120)
            sock.sendall(b"POST /sentiment HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                         + f"content-length: {len(body)}\r\n\r\n".encode() + body)
            sockets.append(sock)
        time.sleep(0.3)  # let the server take the connections in from the listen queue
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        # Readiness turns 503 at once (load balancers stop sending) ...
        while (ready := httpx.get(server.url + "/health/ready", timeout=30)).status_code == 200:
            assert time.monotonic() - signalled < 0.5
        assert ready.status_code == 503 and httpx.get(server.url + "/v2/health/ready", timeout=30).status_code == 503
        # ... and once --unready-s has passed, new connections are refused while the accepted requests drain.
        time.sleep(max(0.0, signalled + 1.5 - time.monotonic()))
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.url + "/health/live", timeout=5)
        answers = []
        for sock in sockets:
            with sock:
                answers.append(read_response(sock))
        assert server.process.wait(timeout=60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it caught
    assert len(answers) == 200 and all(status == 200 for status, _ in answers), {s for s, _ in answers}
    for _, body in answers:
        assert [r["label"] for r in body["results"]] == ["positive", "negative", "positive", "negative"]


def copy_model(source: Path, target: Path, version: str) -> None:
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["version"] = version
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2))


class ClientThreads:
    """Client threads running `_run` until the `with` block ends."""

    def __init__(self, url: str, clients: int = 4):
        self.url, self.stop, self.answers = url, threading.Event(), []
        self.threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def _run(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join()


class SteadyClients(ClientThreads):
    """A few clients classifying a digit in a loop, recording for every answer when its request was sent,
    its status, model version and label."""

    def __init__(self, url: str, clients: int = 4):
        super().__init__(url, clients)
        self.digit = (ROOT / "tests" / "data" / "digit-7.png").read_bytes()

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self.stop.is_set():
                sent = time.monotonic()
                answer = client.post("/classify-image", files={"file": ("7.png", self.digit, "image/png")})
                body = answer.json()
                self.answers.append((sent, answer.status_code, body.get("version"), body.get("label")))

    def wait_for(self, condition, timeout: float = 120.0) -> None:
        """Until `condition(answers)` holds: a condition to wait for, never a guessed time."""
        deadline = time.monotonic() + timeout
        while not condition(list(self.answers)):
            assert time.monotonic() < deadline, f"not reached within {timeout} s: {self.answers[-5:]}"
            time.sleep(0.01)


def control(server, action: str, name: str = "mnist-cnn", key: str = ADMIN_KEY) -> httpx.Response:
    path = "/v2/repository/index" if action == "index" else f"/v2/repository/models/{name}/{action}"
    return httpx.post(server.url + path, headers={"authorization": f"Bearer {key}"}, timeout=120)


def test_reload_swaps_versions_under_load_without_a_failed_request(api_repository, tmp_path):
    repository = tmp_path / "repository"
    copy_model(api_repository / "mnist-cnn" / "1", repository / "mnist-cnn" / "1", "1")
    with start_server(repository, tmp_path / "log", env={"ORTSERVE_ADMIN_KEYS": json.dumps([ADMIN_KEY])}) as server:
        with SteadyClients(server.url) as clients:
            clients.wait_for(lambda answers: len(answers) >= 8)  # version 1 serves under load
            copy_model(repository / "mnist-cnn" / "1", repository / "mnist-cnn" / "2", "2")
            loaded = control(server, "load")
            swapped = time.monotonic()
            # Requests sent after the load answered are served by version 2.
            clients.wait_for(lambda answers: sum(sent > swapped for sent, *_ in answers) >= 8)
            # A version whose file does not match its manifest is refused; what serves goes on serving.
            copy_model(repository / "mnist-cnn" / "1", repository / "mnist-cnn" / "3", "3")
            for model_file in (repository / "mnist-cnn" / "3").glob("*.onnx"):
                with model_file.open("ab") as handle:
                    handle.write(b"tampered")
            refused = control(server, "load")
            after_refusal = time.monotonic()
            clients.wait_for(lambda answers: sum(sent > after_refusal for sent, *_ in answers) >= 8)
        assert loaded.status_code == 200, loaded.text
        assert refused.status_code == 400 and "mnist-cnn/3" in refused.json()["error"]
        statuses = {status for _, status, _, _ in clients.answers}
        assert statuses == {200}, statuses
        assert {label for *_, label in clients.answers} == {"7"}
        assert {version for sent, _, version, _ in clients.answers if sent < swapped} <= {"1", "2"}
        assert clients.answers[0][2] == "1"
        assert {version for sent, _, version, _ in clients.answers if sent > swapped} == {"2"}
        index = {(m["name"], m["version"]): m["state"] for m in control(server, "index").json()}
        assert index == {("mnist-cnn", "1"): "READY", ("mnist-cnn", "2"): "READY"}


def test_unload_then_load_again(api_repository, tmp_path):
    repository = tmp_path / "repository"
    copy_model(api_repository / "mnist-cnn" / "1", repository / "mnist-cnn" / "1", "1")
    (repository / "forecast-lstm").symlink_to(api_repository / "forecast-lstm")
    with start_server(repository, tmp_path / "log", env={"ORTSERVE_ADMIN_KEYS": json.dumps([ADMIN_KEY])}) as server:
        digit = (ROOT / "tests" / "data" / "digit-7.png").read_bytes()
        classify = lambda: httpx.post(server.url + "/classify-image", files={"file": ("7.png", digit, "image/png")})  # noqa: E731
        assert control(server, "unload").status_code == 200
        gone = classify()
        assert gone.status_code == 503 and gone.json()["error"]["code"] == "model_not_ready"
        assert httpx.get(server.url + "/v2/models/mnist-cnn/ready").status_code == 503
        index = {m["name"]: m for m in control(server, "index").json()}
        assert index["mnist-cnn"]["state"] == "UNAVAILABLE" and index["forecast-lstm"]["state"] == "READY"
        ready_only = httpx.post(server.url + "/v2/repository/index", json={"ready": True},
                                                headers={"authorization": f"Bearer {ADMIN_KEY}"})
        assert [m["name"] for m in ready_only.json()] == ["forecast-lstm"], ready_only.text
        assert control(server, "load").status_code == 200
        assert classify().json()["label"] == "7"
        assert control(server, "load", name="no-such-model").status_code == 404
        assert control(server, "load", name="..").status_code in (400, 404)
