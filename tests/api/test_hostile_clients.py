"""What a hostile or careless client can do to a real server, beyond a bad body: a million bad items,
decoder bombs, HEAD, random model names, slow or silent connections, too many connections, cut-off
bodies, and bytes that are not HTTP. Each is answered (or closed) cheaply, in the one error shape, and
costs the server neither memory nor its health probes."""

from __future__ import annotations

import json
import socket
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.api.test_hostile_inputs import raw_exchange
from tests.conftest import HealthProbe, repository_of, start_server
from tests.service.test_image_decoding import tile_bomb

MB = 1024 * 1024
ADMIN_KEY = "hostile-clients-admin-key"

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@contextmanager
def peak_growth(server):
    """Yields a dict whose "bytes" is, afterwards, how far the server's resident set grew at its peak."""
    pid = server.process.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = memory_kib(pid, "VmRSS")
    found = {}
    yield found
    found["bytes"] = (memory_kib(pid, "VmHWM") - before) * 1024


def million_items(item: bytes, key: bytes, limit: int = 2 * MB - 64) -> bytes:
    count = (limit - len(key) - 8) // (len(item) + 1)
    return b'{"' + key + b'": [' + b",".join([item] * count) + b"]}"


def v2_body(name: str, datatype: str, item: bytes, count: int) -> bytes:
    head = f'{{"inputs": [{{"name": "{name}", "shape": [{count}], "datatype": "{datatype}", "data": ['.encode()
    return head + b",".join([item] * count) + b"]}]}"


FLOODS = [
    ("/sentiment", million_items(b"1", b"texts"), 422),
    ("/sentiment", million_items(b'" "', b"texts"), 422),
    ("/predict-sequence", million_items(b'"x"', b"series"), 422),
    ("/v2/models/sentiment-transformer/infer", v2_body("text", "BYTES", b'" "', 400_000), 400),
    ("/v2/models/forecast-lstm/infer", v2_body("history", "FP32", b"1", 900_000), 400),
]


@pytest.mark.parametrize("path, body, status", FLOODS, ids=["texts-ints", "texts-blank", "series-strings", "v2-bytes", "v2-fp32"])
def test_a_million_bad_items_cost_one_short_error_and_no_memory(server, path, body, status):
    assert len(body) > 1.5 * MB
    with HealthProbe(server.url) as probe, peak_growth(server) as grown:
        with server.client() as client:
            for _ in range(3):
                response = client.post(path, content=body, headers={"content-type": "application/json"})
                assert response.status_code == status, response.text[:300]
                assert len(response.content) < 4096, len(response.content)
        time.sleep(0.2)
    assert grown["bytes"] < 128 * MB, grown
    assert probe.errors == 0 and max(probe.latencies) < 1.0, probe.latencies


def test_a_tiff_tile_bomb_is_refused_from_its_header(server):
    bomb = tile_bomb()
    with peak_growth(server) as grown, server.client() as client:
        response = client.post("/classify-image", files={"file": ("bomb.tif", bomb, "image/tiff")})
    assert response.status_code == 413 and "would take about" in response.json()["error"]["message"]
    assert grown["bytes"] < 64 * MB, grown


@pytest.mark.parametrize("path, status", [("/health", 200), ("/health/live", 200), ("/v2/health/ready", 200),
                                          ("/v2/models/mnist-cnn", 200), ("/sentiment", 405), ("/nowhere", 404)])
def test_head_is_answered_like_get_without_a_body(server, path, status):
    url = urlsplit(server.url)
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        sock.sendall(f"HEAD {path} HTTP/1.1\r\nhost: x\r\n\r\nGET /health/live HTTP/1.1\r\nhost: x\r\n\r\n".encode())
        received = b""
        while received.count(b"HTTP/1.1") < 2 or not received.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    assert int(head.split()[1]) == status, head
    assert rest.startswith(b"HTTP/1.1 200"), rest[:80]  # no body after the HEAD answer's head: the next answer
    get = httpx.get(server.url + path)
    headers = dict(line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:])
    assert get.status_code == status and int(headers["content-length"]) == len(get.content)
    if status == 405:
        assert headers["allow"] == "POST"


def test_random_model_names_share_one_metrics_label(server):
    with server.client() as client:
        before = len(client.get("/metrics").content)
        for _ in range(200):
            name = uuid.uuid4().hex
            assert client.post(f"/v2/models/{name}/infer", json={"inputs": []}).status_code in (400, 404)
            assert client.get(f"/v2/models/{name}/ready").status_code == 404
            client.request("PROPFIND", "/health")  # a method the parser knows and no route takes
        exposition = client.get("/metrics").text
    assert 'model="_unknown"' in exposition and 'method="OTHER"' in exposition
    assert len(exposition) - before < 16_000


def test_a_client_that_goes_away_mid_body_is_a_499_not_a_500(server):
    url = urlsplit(server.url)
    for path in ("/sentiment", "/v2/models/sentiment-transformer/infer", "/classify-image"):
        with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
            sock.sendall(f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                         "content-length: 1000\r\n\r\n{\"text\": \"cut".encode())
            time.sleep(0.3)
    time.sleep(0.5)
    log = server.output()
    assert "Traceback" not in log and " -> 500" not in log
    with server.client() as client:
        exposition = client.get("/metrics").text
    for endpoint in ("/sentiment", "/v2/models/{name}/infer", "/classify-image"):
        assert f'endpoint="{endpoint}",method="POST"' in exposition
        assert not any(f'endpoint="{endpoint}"' in line and 'status="500"' in line for line in exposition.splitlines())
    assert 'endpoint="/sentiment",method="POST",model="sentiment-transformer",status="499"' in exposition


@pytest.mark.parametrize("garbage", [b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nbad header line\r\n\r\n",
                                     b"POST /sentiment HTTP/1.1\r\ncontent-length: -5\r\n\r\n"])
def test_bytes_that_are_not_http_get_a_json_400(server, garbage):
    status, headers, body = raw_exchange(server.url, garbage, timeout=5)
    assert status == 400 and headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "bad_request"


# --- slow clients and connection counts, on a server of short timeouts ---------------------------------


@pytest.fixture(scope="module")
def strict_server(api_repository, tmp_path_factory):
    base = tmp_path_factory.mktemp("strict")
    repository = repository_of(api_repository, base / "repository", "sentiment-transformer")
    flags = ("--idle-timeout-s", "1", "--head-timeout-s", "1.5", "--body-timeout-s", "1.5", "--max-connections", "8")
    with start_server(repository, base / "log", *flags, env={"ORTSERVE_ADMIN_KEYS": json.dumps([ADMIN_KEY])}) as server:
        yield server


def connect(server) -> socket.socket:
    url = urlsplit(server.url)
    return socket.create_connection((url.hostname, url.port), timeout=10)


def read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


@pytest.mark.slow
def test_a_silent_connection_is_closed_after_the_idle_timeout(strict_server):
    with connect(strict_server) as sock:
        started = time.monotonic()
        assert read_until_closed(sock) == b""
        assert 0.8 < time.monotonic() - started < 3


def trickle(sock, data: bytes, pause_s: float) -> None:
    """A byte at a time, `pause_s` apart, until sent or the server closes."""
    try:
        for byte in data:
            sock.sendall(bytes([byte]))
            time.sleep(pause_s)
    except (BrokenPipeError, ConnectionResetError):
        pass


@pytest.mark.slow
def test_a_head_trickled_a_byte_at_a_time_is_answered_408(strict_server):
    request = b"GET /health/live HTTP/1.1\r\nhost: x\r\nx-slow: " + b"a" * 100
    with connect(strict_server) as sock:
        started = time.monotonic()
        trickle(sock, request, 0.1)
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_timeout"
    assert time.monotonic() - started < 5


@pytest.mark.slow
def test_a_trickled_body_is_answered_408_and_nothing_is_inferred(strict_server):
    body = json.dumps({"text": "a slow and careful review"}).encode()
    with connect(strict_server) as sock:
        sock.sendall(b"POST /sentiment HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     + f"content-length: {len(body)}\r\n\r\n".encode())
        started = time.monotonic()
        trickle(sock, body, 0.2)
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert "within 1.5 s" in json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["message"]
    assert time.monotonic() - started < 5
    assert "Traceback" not in strict_server.output()


@pytest.mark.slow
def test_connections_beyond_the_cap_are_answered_503_at_once(strict_server):
    held = [connect(strict_server) for _ in range(8)]
    try:
        for sock in held:  # each holds its connection open with a head that is still arriving
            sock.sendall(b"GET /health/live HTTP/1.1\r\n")
        time.sleep(0.2)
        status, headers, body = raw_exchange(strict_server.url, b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n", timeout=5)
        assert status == 503 and headers["retry-after"] == "1"
        assert json.loads(body)["error"]["code"] == "too_many_connections"
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert httpx.get(strict_server.url + "/health/live").status_code == 200


@pytest.mark.slow
def test_deeply_nested_json_to_model_control_is_a_400(strict_server):
    response = httpx.post(strict_server.url + "/v2/repository/index", content=b"[" * 100_000 + b"]" * 100_000,
                          headers={"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"})
    assert response.status_code == 400 and isinstance(response.json()["error"], str)
