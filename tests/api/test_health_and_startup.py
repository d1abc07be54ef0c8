"""Start-up, readiness, degraded models, provider selection and offline docs, on real servers."""

from __future__ import annotations

import shutil
import subprocess
import sys

import httpx
import pytest

from service.app import HOLD_LOADING_ENV
from tests.conftest import ROOT, start_server, wait_for_health, wait_for_loading_to_end

MODELS = {"mnist-cnn", "forecast-lstm", "sentiment-transformer"}


@pytest.mark.slow
def test_health_goes_from_503_loading_to_200(api_repository, tmp_path):
    gate = tmp_path / "go"
    with start_server(api_repository, tmp_path / "log", wait_ready=False, env={HOLD_LOADING_ENV: str(gate)}) as server:
        loading = wait_for_health(server, 503)
        assert loading.json()["status"] == "loading"
        assert all(m["state"] == "loading" for m in loading.json()["models"])
        with server.client(timeout=5) as client:
            assert client.get("/health/live").status_code == 200  # alive while loading
            not_ready = client.get("/health/ready")
            assert not_ready.status_code == 503 and not_ready.json()["ready"] is False
            gate.touch()
        response = wait_for_health(server, 200)
        with server.client(timeout=5) as client:
            ready = client.get("/health/ready")
        body = response.json()
    assert body["status"] == "ok"
    assert ready.status_code == 200 and len(ready.json()["ready_models"]) == 3
    assert {m["name"] for m in body["models"]} == MODELS
    assert all(m["ready"] and m["providers"] == ["CPUExecutionProvider"] for m in body["models"])


def test_auto_reports_cpu_and_why(client):
    body = client.get("/health").json()
    for model in body["models"]:
        assert model["providers"] == ["CPUExecutionProvider"]
        assert "CUDAExecutionProvider" in model["note"] and "CPU" in model["note"]


def test_models_lists_manifests(client):
    models = client.get("/models").json()["models"]
    by_name = {m["name"]: m for m in models}
    assert set(by_name) == MODELS
    assert by_name["mnist-cnn"]["manifest"]["labels"] == [str(d) for d in range(10)]
    assert by_name["sentiment-transformer"]["manifest"]["labels"] == ["negative", "neutral", "positive"]
    for model in models:
        manifest = model["manifest"]
        assert manifest["sha256"] and manifest["metrics"]["model"] and manifest["data"]["packages"]


@pytest.mark.slow
def test_corrupted_model_is_refused_and_the_rest_serve(api_repository, tmp_path):
    repository = tmp_path / "repository"
    shutil.copytree(api_repository, repository)
    with (repository / "forecast-lstm" / "1" / "model.onnx").open("ab") as handle:
        handle.write(b"tampered")
    with start_server(repository, tmp_path / "log", wait_ready=False) as server:
        response = wait_for_loading_to_end(server)
        assert response.status_code == 503 and response.json()["status"] == "degraded"
        # One failed model does not make the container unhealthy, nor take the others out of rotation.
        assert httpx.get(server.url + "/health/live").status_code == 200
        ready = httpx.get(server.url + "/health/ready")
        assert ready.status_code == 200 and "forecast-lstm/1" not in ready.json()["ready_models"]
        states = {m["name"]: m for m in response.json()["models"]}
        assert states["forecast-lstm"]["state"] == "failed" and "sha256" in states["forecast-lstm"]["error"]
        assert states["mnist-cnn"]["ready"] and states["sentiment-transformer"]["ready"]
        with server.client() as client:
            refused = client.post("/predict-sequence", json={"series": [float(i) for i in range(30)]})
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "model_not_ready"
            assert client.post("/sentiment", json={"text": "A lovely, warm film."}).status_code == 200


@pytest.mark.slow
def test_cuda_on_a_cpu_only_install_fails_start_up(api_repository):
    result = subprocess.run(
        [sys.executable, "-m", "service", "--port", "0", "--providers", "cuda", "--model-repository", str(api_repository)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "providers=cuda was requested" in result.stderr and "onnxruntime-gpu" in result.stderr


@pytest.mark.slow
def test_missing_repository_fails_start_up(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "service", "--port", "0", "--model-repository", str(tmp_path / "none")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0 and "make models" in result.stderr


def test_docs_work_offline(client):
    page = client.get("/docs")
    assert page.status_code == 200
    assert "https://" not in page.text and "http://" not in page.text
    assert "/static/swagger-ui/swagger-ui-bundle.js" in page.text
    script = client.get("/static/swagger-ui/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.content) > 100_000
    assert client.get("/static/swagger-ui/swagger-ui.css").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/classify-image", "/sentiment", "/predict-sequence", "/health", "/models"} <= set(schema["paths"])


@pytest.mark.slow
def test_help_lists_flags_and_environment(tmp_path):
    result = subprocess.run([sys.executable, "-m", "service", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0
    for flag in ("--host", "--port", "--model-repository", "--providers", "--intra-op-threads", "--cuda-device-id"):
        assert flag in result.stdout
    assert "ORTSERVE_" in result.stdout
