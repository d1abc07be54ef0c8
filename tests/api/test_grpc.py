"""The Open Inference Protocol over gRPC, through Triton's own client (tritonclient.grpc), against the real
server's gRPC port: the same answers as REST for all three models, Triton's configuration and statistics,
errors as status codes, and repository control behind the admin key."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from models.mnist_data import load_digits
from tests.conftest import free_port, start_server

MODELS = ("mnist-cnn", "sentiment-transformer", "forecast-lstm")
SERIES = [112, 118, 132, 129, 121, 135, 148, 148, 136, 119, 104, 118, 115, 126, 141, 135, 125, 149, 170, 170, 158, 133,
          114, 140, 145, 150, 178, 163, 172, 178, 199, 199, 184, 162, 146, 166, 171, 180, 193, 181, 183, 218, 230, 242]
TEXTS = ["A wonderful, moving film.", "Dull, joyless and far too long.", "The meeting is at noon."]


@pytest.fixture(scope="module")
def grpc_client(server):
    client = triton.InferenceServerClient(server.grpc_address)
    yield client
    client.close()


def test_health_metadata_and_extensions(grpc_client):
    assert grpc_client.is_server_live() and grpc_client.is_server_ready()
    metadata = grpc_client.get_server_metadata(as_json=True)
    assert metadata["name"] == "ortserve"
    assert {"binary_tensor_data", "model_configuration", "statistics", "model_repository"} <= set(metadata["extensions"])
    for name in MODELS:
        assert grpc_client.is_model_ready(name) and grpc_client.is_model_ready(name, "1")
    assert not grpc_client.is_model_ready("no-such-model")


def test_model_metadata_matches_rest(grpc_client, client):
    for name in MODELS:
        over_grpc = grpc_client.get_model_metadata(name, as_json=True)
        over_rest = client.get(f"/v2/models/{name}").json()
        assert over_grpc["platform"] == over_rest["platform"] == "onnxruntime_onnx"
        assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in over_grpc["inputs"]] == [
            (t["name"], t["datatype"], t["shape"]) for t in over_rest["inputs"]]


def test_sentiment_answers_equal_rest(grpc_client, client):
    text = triton.InferInput("text", [len(TEXTS)], "BYTES")
    text.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=object))
    result = grpc_client.infer("sentiment-transformer", [text], request_id="g-1")
    assert result.get_response().id == "g-1"
    rest = client.post("/sentiment", json={"texts": TEXTS}).json()["results"]
    assert [label.decode() for label in result.as_numpy("label")] == [r["label"] for r in rest]
    expected = [[r["scores"][k] for k in ("negative", "neutral", "positive")] for r in rest]
    assert np.allclose(result.as_numpy("probabilities"), expected, atol=1e-6)


def test_digits_in_typed_contents_and_raw_contents_equal_rest(grpc_client, client, server, api_repository):
    manifest = json.loads((api_repository / "mnist-cnn" / "1" / "manifest.json").read_text())
    digits = load_digits(seed=manifest["training"]["seed"])
    pixels = (digits.images[digits.test[:4]] / 255.0).astype(np.float32)[:, None]  # MNIST style, white on black
    image = triton.InferInput("image", list(pixels.shape), "FP32")
    image.set_data_from_numpy(pixels)  # raw_input_contents
    raw = grpc_client.infer("mnist-cnn", [image]).as_numpy("probabilities")
    typed = triton.service_pb2.ModelInferRequest(model_name="mnist-cnn")
    tensor = typed.inputs.add(name="image", datatype="FP32", shape=list(pixels.shape))
    tensor.contents.fp32_contents.extend(pixels.ravel().tolist())
    with grpc.insecure_channel(server.grpc_address) as channel:
        response = triton.service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(typed)
    typed_probabilities = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(4, 10)
    rest = client.post("/v2/models/mnist-cnn/infer", json={"inputs": [
        {"name": "image", "shape": list(pixels.shape), "datatype": "FP32", "data": pixels.ravel().tolist()}]}).json()
    expected = np.array(rest["outputs"][0]["data"], dtype=np.float32).reshape(4, 10)
    assert np.allclose(raw, expected, atol=1e-6) and np.allclose(typed_probabilities, expected, atol=1e-6)
    assert list(raw.argmax(axis=1)) == list(digits.labels[digits.test[:4]])


def test_forecast_with_parameters_equals_rest(grpc_client, client):
    history = triton.InferInput("history", [1, len(SERIES)], "FP32")
    history.set_data_from_numpy(np.array([SERIES], dtype=np.float32))
    result = grpc_client.infer("forecast-lstm", [history], parameters={"horizon": 6, "period": 12})
    rest = client.post("/predict-sequence", json={"series": SERIES, "horizon": 6, "period": 12}).json()
    assert np.allclose(result.as_numpy("forecast")[0], rest["forecast"], rtol=1e-5)


def test_tritons_reserved_parameters_are_the_protocols_and_others_still_the_models(grpc_client, client, server):
    """perf_analyzer's gRPC requests carry triton_enable_empty_final_response (tritonclient's Python client
    will not send it, so the request is made by hand); a model that refuses unknown parameters must not see
    it, nor any other triton_ name, over gRPC or REST."""
    request = triton.service_pb2.ModelInferRequest(model_name="forecast-lstm")
    request.inputs.add(name="history", datatype="FP32", shape=[1, len(SERIES)]).contents.fp32_contents.extend(SERIES)
    request.parameters["horizon"].int64_param = 6
    request.parameters["triton_enable_empty_final_response"].bool_param = False
    request.parameters["priority"].int64_param = 1
    with grpc.insecure_channel(server.grpc_address) as channel:
        response = triton.service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
        assert np.frombuffer(response.raw_output_contents[0], dtype="<f4").shape == (6,)
        request.parameters["tritonish"].int64_param = 1
        with pytest.raises(grpc.RpcError) as refused:
            triton.service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "unknown parameters" in refused.value.details()
    tensor = {"name": "history", "shape": [1, len(SERIES)], "datatype": "FP32", "data": SERIES}
    reserved = {"horizon": 6, "triton_enable_empty_final_response": False, "priority": 1}
    rest = client.post("/v2/models/forecast-lstm/infer", json={"inputs": [tensor], "parameters": reserved})
    assert rest.status_code == 200 and len(rest.json()["outputs"][0]["data"]) == 6


def test_configuration_and_statistics_are_tritons(grpc_client, client):
    config = grpc_client.get_model_config("sentiment-transformer", as_json=True)["config"]
    rest_config = client.get("/v2/models/sentiment-transformer/config").json()
    assert config["name"] == rest_config["name"] == "sentiment-transformer" and rest_config["max_batch_size"] == 0
    assert [i["data_type"] for i in rest_config["input"]] == ["TYPE_STRING"] and rest_config["input"][0]["dims"] == [-1]
    before = grpc_client.get_inference_statistics("sentiment-transformer", as_json=True)["model_stats"][0]
    text = triton.InferInput("text", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"Lovely."], dtype=object))
    grpc_client.infer("sentiment-transformer", [text])
    after = grpc_client.get_inference_statistics("sentiment-transformer", as_json=True)["model_stats"][0]
    counted = lambda stats: int(stats["inference_stats"]["success"].get("count", 0))  # noqa: E731
    assert counted(after) >= counted(before) + 1 and int(after["inference_count"]) >= int(before.get("inference_count", 0)) + 1
    rest_stats = client.get("/v2/models/sentiment-transformer/stats").json()["model_stats"][0]
    assert rest_stats["inference_stats"]["success"]["count"] >= counted(after)
    assert isinstance(rest_stats["inference_stats"]["compute_infer"]["ns"], int)  # numbers, as perf_analyzer reads them


@pytest.mark.parametrize("inputs, code", [
    ([("text", [1], "FP32", np.zeros(1, np.float32))], grpc.StatusCode.INVALID_ARGUMENT),
    ([("text", [100], "BYTES", np.array([b"x"] * 100, dtype=object))], grpc.StatusCode.INVALID_ARGUMENT),
    ([("sentence", [1], "BYTES", np.array([b"x"], dtype=object))], grpc.StatusCode.INVALID_ARGUMENT),
])
def test_client_mistakes_are_invalid_argument(grpc_client, inputs, code):
    tensors = []
    for name, shape, datatype, data in inputs:
        tensor = triton.InferInput(name, shape, datatype)
        tensor.set_data_from_numpy(data)
        tensors.append(tensor)
    with pytest.raises(InferenceServerException) as refused:
        grpc_client.infer("sentiment-transformer", tensors)
    assert refused.value.status() == str(code)


def test_unknown_model_is_not_found(grpc_client):
    with pytest.raises(InferenceServerException) as refused:
        grpc_client.get_model_metadata("no-such-model")
    assert refused.value.status() == str(grpc.StatusCode.NOT_FOUND)


@pytest.mark.slow
def test_keys_and_repository_control(api_repository, tmp_path):
    port = free_port()
    env = {"ORTSERVE_API_KEYS": json.dumps(["grpc-user"]), "ORTSERVE_ADMIN_KEYS": json.dumps(["grpc-admin"])}
    with start_server(api_repository, tmp_path / "log", "--grpc-port", str(port), env=env) as server:
        client = triton.InferenceServerClient(server.grpc_address)
        user, admin = {"authorization": "Bearer grpc-user"}, {"authorization": "Bearer grpc-admin"}
        assert client.is_server_live()  # health stays open
        for headers, code in ((None, grpc.StatusCode.UNAUTHENTICATED), ({"authorization": "Bearer wrong"},
                                                                          grpc.StatusCode.PERMISSION_DENIED)):
            with pytest.raises(InferenceServerException) as refused:
                client.get_model_metadata("mnist-cnn", headers=headers)
            assert refused.value.status() == str(code)
        assert client.get_model_metadata("mnist-cnn", headers=user).name == "mnist-cnn"
        with pytest.raises(InferenceServerException) as refused:
            client.unload_model("mnist-cnn", headers=user)
        assert refused.value.status() == str(grpc.StatusCode.PERMISSION_DENIED)
        client.unload_model("mnist-cnn", headers=admin)
        index = {m.name: m.state for m in client.get_model_repository_index(headers=admin).models}
        assert index["mnist-cnn"] == "UNAVAILABLE" and not client.is_model_ready("mnist-cnn", headers=user)
        client.load_model("mnist-cnn", headers=admin)
        assert client.is_model_ready("mnist-cnn", headers=user)
        client.close()
