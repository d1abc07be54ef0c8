"""Faults inside the service: an ONNX Runtime error fails only its batch, with an error id that is also
logged; an unexpected error is a 500 in the error shape; the client's connection survives both; request ids
and JSON log lines; strict start-up."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from urllib.parse import urlparse

import pytest

from service.faults import FAULTS_ENV
from tests.conftest import ROOT, repository_of, start_server

pytestmark = pytest.mark.slow  # servers of its own, with faults injected

ZERO_DIGIT = {"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}]}


def v2_input_name(connection: http.client.HTTPConnection) -> str:
    connection.request("GET", "/v2/models/mnist-cnn")
    return json.loads(connection.getresponse().read())["inputs"][0]["name"]


def post_json(connection: http.client.HTTPConnection, path: str, body: dict, headers: dict | None = None):
    connection.request("POST", path, body=json.dumps(body), headers={"content-type": "application/json", **(headers or {})})
    response = connection.getresponse()
    return response.status, dict(response.getheaders()), json.loads(response.read())


@pytest.fixture
def faulty_server(api_repository, tmp_path):
    faults = tmp_path / "faults"
    repository = repository_of(api_repository, tmp_path / "repository", "mnist-cnn")
    with start_server(repository, tmp_path / "log", "--log-format", "json", env={FAULTS_ENV: str(faults)}) as server:
        yield server, faults


def infer_digit(connection, name: str):
    body = {"inputs": [{**ZERO_DIGIT["inputs"][0], "name": name}]}
    return post_json(connection, "/v2/models/mnist-cnn/infer", body)


def test_an_onnxruntime_error_fails_its_batch_with_an_error_id_and_the_connection_survives(faulty_server):
    server, faults = faulty_server
    url = urlparse(server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    name = v2_input_name(connection)
    status, _, body = infer_digit(connection, name)
    assert status == 200
    socket_before = connection.sock

    faults.write_text("mnist-cnn run\n")
    status, _, body = infer_digit(connection, name)
    assert status == 500 and "error id" in body["error"]
    error_id = body["error"].split("error id ")[1].rstrip(")")

    connection.request("POST", "/classify-image?top_k=3", body=b"--x--\r\n",
                       headers={"content-type": "multipart/form-data; boundary=x"})
    connection.getresponse().read()  # a client mistake in between: 4xx, still the same connection

    faults.unlink()
    status, _, body = infer_digit(connection, name)
    assert status == 200 and len(body["outputs"][0]["data"]) == 10
    assert connection.sock is socket_before, "the server closed the connection after its 500"

    lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    logged = [line for line in lines if error_id in line["message"]]
    assert logged and logged[0]["level"] == "error" and logged[0]["request_id"] != "-"
    assert any("injected fault" in line["message"] for line in lines)  # ONNX Runtime's own message is logged


def test_an_unexpected_error_is_a_500_in_the_error_shape_and_keeps_the_connection(faulty_server, api_repository):
    server, faults = faulty_server
    url = urlparse(server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    digit = (ROOT / "tests" / "data" / "digit-7.png").read_bytes()
    boundary = "ortserveboundary"
    multipart = (f"--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"7.png\"\r\n"
                 f"content-type: image/png\r\n\r\n").encode() + digit + f"\r\n--{boundary}--\r\n".encode()
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}

    def classify():
        connection.request("POST", "/classify-image", body=multipart, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())

    assert classify()[1]["label"] == "7"
    socket_before = connection.sock
    faults.write_text("mnist-cnn encode\n")
    status, body = classify()
    assert status == 500
    assert body["error"]["code"] == "internal_error" and len(body["error"]["error_id"]) == 16
    assert body["error"]["error_id"] in server.output()
    faults.write_text("")
    status, body = classify()
    assert status == 200 and body["label"] == "7"
    assert connection.sock is socket_before


def test_request_ids_are_echoed_made_when_missing_and_on_every_log_line(faulty_server):
    server, _ = faulty_server
    url = urlparse(server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    name = v2_input_name(connection)
    _, headers, _ = post_json(connection, "/v2/models/mnist-cnn/infer",
                              {"inputs": [{**ZERO_DIGIT["inputs"][0], "name": name}]}, {"x-request-id": "trace-42.a"})
    assert headers["x-request-id"] == "trace-42.a"
    _, made, _ = post_json(connection, "/v2/models/mnist-cnn/infer", {"inputs": []}, {"x-request-id": "bad id\t<script>"})
    assert made["x-request-id"] != "bad id\t<script>" and len(made["x-request-id"]) == 16
    lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "uvicorn.access" and "/infer" in line["message"]]
    assert {"trace-42.a", made["x-request-id"]} <= {line["request_id"] for line in access}
    assert all(set(line) >= {"time", "level", "logger", "message", "request_id"} for line in lines)


def test_texts_and_images_are_never_logged(api_repository, tmp_path):
    repository = repository_of(api_repository, tmp_path / "repository", "sentiment-transformer")
    secret = "my-secret-diary-entry-9f3k"
    with start_server(repository, tmp_path / "log", "--log-level", "debug") as server, server.client() as client:
        assert client.post("/sentiment", json={"text": f"I loved it {secret}"}).status_code == 200
        assert client.post("/sentiment", json={"text": f"{secret}" * 5000 + "x" * 60000}).status_code in (413, 422)
        output = server.output()
    assert secret not in output


def test_strict_start_up_fails_when_a_model_cannot_be_loaded(api_repository, tmp_path):
    repository = tmp_path / "repository"
    repository.mkdir()
    (repository / "sentiment-transformer").symlink_to(api_repository / "sentiment-transformer")
    tampered = repository / "mnist-cnn" / "1"
    tampered.mkdir(parents=True)
    for item in (api_repository / "mnist-cnn" / "1").iterdir():
        tampered.joinpath(item.name).write_bytes(item.read_bytes())
    with (tampered / "model.int8-static.onnx").open("ab") as handle:
        handle.write(b"tampered")
    with (tampered / "model.onnx").open("ab") as handle:
        handle.write(b"tampered")
    result = subprocess.run(
        [sys.executable, "-m", "service", "--port", "0", "--strict", "--model-repository", str(repository)],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode != 0
    assert "strict: a model failed to load: mnist-cnn/1" in result.stderr and "sha256" in result.stderr
