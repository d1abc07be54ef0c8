"""deploy/ray/serve_app.py on a local Ray instance: the service's app, models loaded in the replica, answers
real requests through Serve's HTTP proxy on loopback. Ray is not part of the project's install: without it
the test is skipped."""

from __future__ import annotations

import importlib.util
import threading
import time

import httpx
import pytest

from tests.conftest import free_port
from tests.deploy.conftest import ROOT

# Found, not imported: Ray reads its environment (below) when it is first imported.
if importlib.util.find_spec("ray") is None:
    pytest.skip("ray is not installed (pip install 'ray[serve]'): the Ray Serve example is not run", allow_module_level=True)

pytestmark = pytest.mark.slow

DIGIT_7 = ROOT / "tests" / "data" / "digit-7.png"
START_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def serve_url(real_repository, monkeypatch_module):
    """The example deployed (one replica, one CPU) on a fresh local Ray instance; everything stops after."""
    # Read by Ray on import, here and in the processes it starts: no usage report, and every Ray server on
    # 127.0.0.1 (Ray's single-machine mode; otherwise it binds the machine's address even when told 127.0.0.1).
    monkeypatch_module.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch_module.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    serve = pytest.importorskip("ray.serve", reason="ray is installed without Serve (pip install 'ray[serve]')")
    from deploy.ray.serve_app import Ortserve

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=100 * 1024 * 1024,
        runtime_env={"env_vars": {"ORTSERVE_MODEL_REPOSITORY": str(real_repository), "ORTSERVE_LOG_LEVEL": "warning"}},
    )
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = Ortserve.options(num_replicas=1, ray_actor_options={"num_cpus": 1}).bind()
        # serve.run returns once the replica is up (its lifespan, model loading included, done) or raises;
        # in a thread, so that a replica that never starts fails the test in bounded time.
        outcome: dict = {}

        def deploy():
            try:
                outcome["handle"] = serve.run(app, name="ortserve", route_prefix="/")
            except Exception as error:  # raised again below, in the test's own thread
                outcome["error"] = error

        runner = threading.Thread(target=deploy, daemon=True)
        runner.start()
        runner.join(START_TIMEOUT_S)
        if "error" in outcome:
            raise outcome["error"]
        if "handle" not in outcome:
            pytest.fail(f"the Serve application did not start within {START_TIMEOUT_S} s: {serve.status()}")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture
def client(serve_url):
    with httpx.Client(base_url=serve_url, timeout=30) as http:
        yield http


def test_the_replica_is_ready_when_serve_routes_to_it(client):
    response = client.get("/health/ready")
    assert response.status_code == 200, response.text


def test_sentiment_through_serve(client):
    texts = ["The service was quick and the staff were lovely.", "What a waste of two hours."]
    response = client.post("/sentiment", json={"texts": texts})
    assert response.status_code == 200, response.text
    assert [result["label"] for result in response.json()["results"]] == ["positive", "negative"]


def test_digit_image_through_serve(client):
    response = client.post("/classify-image", files={"file": ("digit-7.png", DIGIT_7.read_bytes(), "image/png")})
    assert response.status_code == 200, response.text
    assert response.json()["label"] == "7"


def test_the_replica_counts_what_it_served(client):
    """The whole app runs in the replica, its middleware and metrics included."""
    client.post("/classify-image", files={"file": ("digit-7.png", DIGIT_7.read_bytes(), "image/png")})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        metrics = client.get("/metrics").text
        if 'ortserve_inference_request_success_total{model="mnist-cnn"' in metrics:
            break
        time.sleep(0.2)
    assert 'ortserve_inference_request_success_total{model="mnist-cnn"' in metrics
    assert "ortserve_inflight_requests" in metrics
