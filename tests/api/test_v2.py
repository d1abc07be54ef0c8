"""The Open Inference Protocol through the official Triton client, and raw-JSON error cases."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton

from models.mnist_data import load_digits
from service.manifest import ModelManifest

MODELS = ("mnist-cnn", "sentiment-transformer", "forecast-lstm")
SERIES = [112, 118, 132, 129, 121, 135, 148, 148, 136, 119, 104, 118, 115, 126, 141, 135, 125, 149, 170, 170, 158, 133,
          114, 140, 145, 150, 178, 163, 172, 178, 199, 199, 184, 162, 146, 166, 171, 180, 193, 181, 183, 218, 230, 242]


@pytest.fixture(scope="module")
def triton_client(server):
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"), network_timeout=120)
    yield client
    client.close()


def test_server_health_and_metadata(triton_client):
    assert triton_client.is_server_live() and triton_client.is_server_ready()
    metadata = triton_client.get_server_metadata()
    assert metadata["name"] == "ortserve" and "binary_tensor_data" in metadata["extensions"]
    for name in MODELS:
        assert triton_client.is_model_ready(name) and triton_client.is_model_ready(name, "1")


def test_model_metadata_declares_the_tensors(triton_client):
    declared = {name: triton_client.get_model_metadata(name) for name in MODELS}
    assert all(m["platform"] == "onnxruntime_onnx" and m["versions"] == ["1"] for m in declared.values())
    tensors = {name: ({(t["name"], t["datatype"], tuple(t["shape"])) for t in m["inputs"]},
                      {(t["name"], t["datatype"], tuple(t["shape"])) for t in m["outputs"]}) for name, m in declared.items()}
    assert tensors["mnist-cnn"] == ({("image", "FP32", (-1, 1, 28, 28))}, {("probabilities", "FP32", (-1, 10))})
    assert tensors["sentiment-transformer"] == (
        {("text", "BYTES", (-1,))}, {("probabilities", "FP32", (-1, 3)), ("label", "BYTES", (-1,))})
    assert tensors["forecast-lstm"] == ({("history", "FP32", (1, -1))}, {("forecast", "FP32", (1, -1))})
    assert triton_client.get_model_metadata("mnist-cnn", "1")["name"] == "mnist-cnn"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_digits(triton_client, api_repository, binary):
    data = load_digits(seed=20261128)
    picked = data.test[:24]
    pixels = (data.images[picked].astype(np.float32) / 255.0)[:, None]
    tensor = triton.InferInput("image", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels, binary_data=binary)
    result = triton_client.infer("mnist-cnn", [tensor], outputs=[triton.InferRequestedOutput("probabilities", binary_data=binary)])
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (24, 10) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    if not ModelManifest.load(api_repository / "mnist-cnn" / "1").build.quick:
        assert np.mean(probabilities.argmax(axis=1) == data.labels[picked]) >= 0.9


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_texts_match_the_typed_endpoint(triton_client, client, binary):
    texts = ["Not bad at all, I would go again.", "Terrible. Cold food and a rude waiter.", "The shop opens at nine."]
    tensor = triton.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object), binary_data=binary)
    outputs = [triton.InferRequestedOutput("probabilities", binary_data=binary), triton.InferRequestedOutput("label", binary_data=binary)]
    result = triton_client.infer("sentiment-transformer", [tensor], outputs=outputs, request_id="r-1")
    assert result.get_response()["id"] == "r-1"
    typed = client.post("/sentiment", json={"texts": texts}).json()["results"]
    probabilities, labels = result.as_numpy("probabilities"), result.as_numpy("label")
    for row, expected in zip(range(len(texts)), typed):
        scores = [expected["scores"][k] for k in ("negative", "neutral", "positive")]
        np.testing.assert_allclose(probabilities[row], scores, atol=1e-5)
        label = labels[row].decode() if isinstance(labels[row], bytes) else labels[row]
        assert label == expected["label"]


def test_forecast_matches_the_typed_endpoint(triton_client, client):
    history = np.array([SERIES], dtype=np.float32)
    tensor = triton.InferInput("history", list(history.shape), "FP32")
    tensor.set_data_from_numpy(history)
    result = triton_client.infer("forecast-lstm", [tensor], parameters={"horizon": 6, "period": 12})
    typed = client.post("/predict-sequence", json={"series": SERIES, "horizon": 6, "period": 12}).json()["forecast"]
    assert result.as_numpy("forecast").shape == (1, 6)
    np.testing.assert_allclose(result.as_numpy("forecast")[0], typed, rtol=1e-5)


def infer(client, model: str, body, **kwargs):
    return client.post(f"/v2/models/{model}/infer", json=body, **kwargs)


@pytest.mark.parametrize(
    ("model", "body", "status"),
    [
        ("no-such-model", {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}, 404),
        ("mnist-cnn", {"inputs": []}, 400),
        ("mnist-cnn", {"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.5] * 10}]}, 400),
        ("mnist-cnn", {"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "INT64", "data": [0] * 784}]}, 400),
        ("mnist-cnn", {"inputs": [{"name": "image", "shape": [1, 28, 28], "datatype": "FP32", "data": [0.5] * 784}]}, 400),
        ("mnist-cnn", {"inputs": [{"name": "pixels", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.5] * 784}]}, 400),
        ("mnist-cnn", {"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [7.0] * 784}]}, 400),
        ("mnist-cnn", {"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": ["a"] * 784}]}, 400),
        ("mnist-cnn", {"inputs": [{"name": "image", "shape": [0, 1, 28, 28], "datatype": "FP32", "data": []}]}, 400),
        ("mnist-cnn", {"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP99", "data": [0.5] * 784}]}, 400),
        ("sentiment-transformer", {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [""]}]}, 400),
        ("sentiment-transformer", {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["one"]}]}, 400),
        ("sentiment-transformer", {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [3]}]}, 400),
        ("forecast-lstm", {"inputs": [{"name": "history", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}, 400),
        ("forecast-lstm", {"parameters": {"horizon": 999},
                           "inputs": [{"name": "history", "shape": [1, 44], "datatype": "FP32", "data": SERIES}]}, 400),
        ("forecast-lstm", {"inputs": [{"name": "history", "shape": [1, 44], "datatype": "FP32", "data": SERIES}],
                           "outputs": [{"name": "nope"}]}, 400),
    ],
)
def test_errors_have_the_protocol_shape(client, model, body, status):
    response = infer(client, model, body)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"} and isinstance(response.json()["error"], str)


def test_malformed_bodies(client):
    for content, headers in [
        (b"{not json", {}),
        (b"null", {}),
        (b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 99}}]}', {}),
        (b'{"inputs": []}xx', {"Inference-Header-Content-Length": "999"}),
        (b'{"inputs": []}', {"Inference-Header-Content-Length": "abc"}),
    ]:
        response = client.post("/v2/models/sentiment-transformer/infer", content=content, headers=headers)
        assert response.status_code == 400, (content, response.text)
        assert isinstance(response.json()["error"], str)
    assert client.get("/v2/models/nope").status_code == 404
    assert client.get("/v2/models/mnist-cnn/versions/7/ready").status_code == 404
