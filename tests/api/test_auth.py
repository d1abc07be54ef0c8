"""API keys (inference and admin), keys from a file, protected health, and the CORS allow-list."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import ROOT, repository_of, start_server

pytestmark = pytest.mark.slow  # servers of its own, with keys

INFERENCE_KEY = "inference-key-0123456789"
ADMIN_KEY = "admin-key-9876543210"
ORIGIN = "https://demo.example.org"


@pytest.fixture(scope="module")
def keyed_server(api_repository, tmp_path_factory):
    base = tmp_path_factory.mktemp("keyed")
    repository = repository_of(api_repository, base / "repository", "forecast-lstm")
    keys = base / "keys"
    keys.write_text(f"# inference keys, one a line\n{INFERENCE_KEY}\n\nsecond-key\n")
    env = {"ORTSERVE_ADMIN_KEYS": json.dumps([ADMIN_KEY]), "ORTSERVE_CORS_ORIGINS": json.dumps([ORIGIN])}
    with start_server(repository, base / "log", "--api-keys-file", str(keys), env=env) as server:
        yield server


SERIES = {"series": [float(10 + (i % 12)) for i in range(48)], "horizon": 3}


def bearer(key: str) -> dict:
    return {"authorization": f"Bearer {key}"}


def test_inference_needs_a_key(keyed_server):
    with keyed_server.client() as client:
        missing = client.post("/predict-sequence", json=SERIES)
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = client.post("/predict-sequence", json=SERIES, headers=bearer("not-a-key"))
        assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "forbidden"
        basic = client.post("/predict-sequence", json=SERIES, headers={"authorization": f"Basic {INFERENCE_KEY}"})
        assert basic.status_code == 401
        for key in (INFERENCE_KEY, "second-key", ADMIN_KEY):
            answered = client.post("/predict-sequence", json=SERIES, headers=bearer(key))
            assert answered.status_code == 200 and len(answered.json()["forecast"]) == 3


def test_v2_answers_in_its_own_error_shape(keyed_server):
    with keyed_server.client() as client:
        refused = client.get("/v2/models/forecast-lstm")
        assert refused.status_code == 401 and isinstance(refused.json()["error"], str)
        assert client.get("/v2/models/forecast-lstm", headers=bearer(INFERENCE_KEY)).status_code == 200


def test_health_metrics_and_docs_stay_open(keyed_server):
    with keyed_server.client() as client:
        for path in ("/health", "/health/live", "/health/ready", "/v2/health/ready", "/metrics", "/docs", "/openapi.json"):
            assert client.get(path).status_code == 200, path


def test_model_control_needs_the_admin_key(keyed_server):
    with keyed_server.client() as client:
        assert client.post("/v2/repository/index").status_code == 401
        assert client.post("/v2/repository/index", headers=bearer(INFERENCE_KEY)).status_code == 403
        index = client.post("/v2/repository/index", headers=bearer(ADMIN_KEY))
        assert index.status_code == 200
        assert {"name": "forecast-lstm", "version": "1", "state": "READY", "reason": ""} in index.json()


def test_keys_never_reach_the_logs(keyed_server):
    with keyed_server.client() as client:
        client.post("/predict-sequence", json=SERIES, headers=bearer(INFERENCE_KEY))
        client.post("/predict-sequence", json=SERIES, headers=bearer("a-wrong-guess-key"))
    output = keyed_server.output()
    assert INFERENCE_KEY not in output and "a-wrong-guess-key" not in output and ADMIN_KEY not in output


def test_cors_allows_only_the_listed_origin(keyed_server):
    with keyed_server.client() as client:
        preflight = {"access-control-request-method": "POST", "access-control-request-headers": "authorization,content-type"}
        allowed = client.options("/predict-sequence", headers={"origin": ORIGIN, **preflight})
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ORIGIN
        other = client.options("/predict-sequence", headers={"origin": "https://elsewhere.example", **preflight})
        assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
        answered = client.post("/predict-sequence", json=SERIES, headers={"origin": ORIGIN, **bearer(INFERENCE_KEY)})
        assert answered.headers["access-control-allow-origin"] == ORIGIN
        assert "x-request-id" in answered.headers["access-control-expose-headers"]


def test_no_cors_headers_by_default(server):
    answered = httpx.get(server.url + "/health", headers={"origin": ORIGIN})
    assert "access-control-allow-origin" not in answered.headers


def test_model_control_is_off_without_an_admin_key(server):
    refused = httpx.post(server.url + "/v2/repository/index")
    assert refused.status_code == 403 and "no admin key" in refused.json()["error"]


def test_protected_health_needs_a_key(api_repository, tmp_path):
    repository = repository_of(api_repository, tmp_path / "repository", "forecast-lstm")
    env = {"ORTSERVE_API_KEYS": json.dumps([INFERENCE_KEY]), "ORTSERVE_PROTECT_HEALTH": "true"}
    with start_server(repository, tmp_path / "log", wait_ready=False, env=env) as server:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(server.url + "/health", headers=bearer(INFERENCE_KEY)).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        assert httpx.get(server.url + "/health").status_code == 401
        assert httpx.get(server.url + "/metrics", headers=bearer("wrong")).status_code == 403
        assert httpx.get(server.url + "/metrics", headers=bearer(INFERENCE_KEY)).status_code == 200


def test_an_unreadable_key_file_fails_start_up(api_repository, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "service", "--port", "0", "--model-repository", str(api_repository),
         "--api-keys-file", str(tmp_path / "no-such-file")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and "cannot read key file" in result.stderr
