"""The endpoint table: the typed routes, their OpenAPI entries and their metrics label all come from the
manifests' serving sections (and --routes), so a new model is served without a line of service/ code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, repository_of, start_server
from tests.tiny_models import DIGIT, expected_label, tiny_digit_model

pytestmark = pytest.mark.slow  # servers of its own


@pytest.fixture(scope="module")
def four_models(api_repository, tmp_path_factory):
    base = tmp_path_factory.mktemp("four")
    repository = repository_of(api_repository, base / "repository", "mnist-cnn", "sentiment-transformer", "forecast-lstm")
    manifest = tiny_digit_model(repository / "tiny-digits" / "1")
    with start_server(repository, base / "log", "--routes", json.dumps({"/digits": "mnist-cnn"})) as server:
        yield server, repository / "tiny-digits" / "1", manifest


def test_a_fourth_model_is_served_at_the_route_its_manifest_declares(four_models):
    server, folder, manifest = four_models
    with server.client() as client:
        answer = client.post("/classify-tiny", files={"file": ("7.png", DIGIT, "image/png")}, params={"top_k": 1})
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == "tiny-digits" and answer.json()["label"] == expected_label(folder, manifest)
        assert client.post("/classify-image", files={"file": ("7.png", DIGIT, "image/png")}).json()["model"] == "mnist-cnn"
        # ... with its own batching, in /models, in the OpenAPI contract, in the metrics and over V2.
        described = {m["name"]: m for m in client.get("/models").json()["models"]}
        assert described["tiny-digits"]["batching"]["max_batch_size"] == 4
        paths = client.get("/openapi.json").json()["paths"]
        assert paths["/classify-tiny"]["post"]["summary"].endswith("(tiny-digits)")
        assert 'model="tiny-digits"' in client.get("/metrics").text
        assert client.get("/v2/models/tiny-digits").json()["inputs"][0]["name"] == "image"


def test_the_routes_setting_adds_a_route_and_its_openapi_entry(four_models):
    server, *_ = four_models
    with server.client() as client:
        answer = client.post("/digits", files={"file": ("7.png", DIGIT, "image/png")})
        assert answer.status_code == 200 and answer.json() == client.post(
            "/classify-image", files={"file": ("7.png", DIGIT, "image/png")}).json()
        document = client.get("/openapi.json").json()
        assert document["paths"]["/digits"]["post"]["summary"].endswith("(mnist-cnn)")
        form = document["paths"]["/digits"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert form["properties"]["file"]["format"] == "binary" and form["required"] == ["file"]
        assert [p["name"] for p in document["paths"]["/digits"]["post"]["parameters"]] == ["top_k"]
        wrong = client.get("/digits")
        assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"


def test_the_service_holds_no_model_names():
    """Which model serves which route, and how it batches, is the manifests' business."""
    found = []
    for path in (ROOT / "service").rglob("*.py"):
        text = path.read_text()
        for name in ("mnist-cnn", "forecast-lstm", "sentiment-transformer"):
            for number, line in enumerate(text.splitlines(), 1):
                if name in line and "e.g." not in line:
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


@pytest.mark.parametrize("routes, says", [({"/digits": "no-such-model"}, "not in the model repository"),
                                          ({"/v2/x": "mnist-cnn"}, "outside /v2")])
def test_a_misconfigured_table_stops_start_up_with_one_line(api_repository, tmp_path, routes, says):
    result = subprocess.run([sys.executable, "-m", "service", "--model-repository", str(api_repository),
                             "--routes", json.dumps(routes)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and says in result.stderr and "Traceback" not in result.stderr


def test_two_models_on_one_route_stop_start_up(api_repository, tmp_path):
    repository = repository_of(api_repository, tmp_path / "repository", "mnist-cnn")
    manifest = tiny_digit_model(repository / "tiny-digits" / "1")
    manifest.serving.route = "/classify-image"
    manifest.write(repository / "tiny-digits" / "1")
    with pytest.raises(RuntimeError, match="both declare the route /classify-image"):
        with start_server(repository, tmp_path / "log"):
            pass
