"""The request head is bounded (--max-header-kb): an oversized one is refused before it is held in memory,
and a large body is never mistaken for a large head."""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlparse

import pytest

from tests.conftest import repository_of, rss_bytes, start_server

pytestmark = pytest.mark.slow  # a server of its own


@pytest.fixture(scope="module")
def sentiment_server(api_repository, tmp_path_factory):
    base = tmp_path_factory.mktemp("heads")
    repository = repository_of(api_repository, base / "repository", "sentiment-transformer")
    with start_server(repository, base / "log") as server:
        yield server


def exchange(server, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    url = urlparse(server.url)
    with socket.create_connection((url.hostname, url.port), timeout=60) as sock:
        try:
            sock.sendall(head + body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused while still sending: the answer is already waiting
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and b"connection: close" not in answer.lower() and answer.endswith(b"}"):
                break
    status = int(answer.split(b" ", 2)[1])
    return status, answer.partition(b"\r\n\r\n")[2]


def sentiment_head(extra: bytes, length: int) -> bytes:
    return (b"POST /sentiment HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n" + extra
            + f"content-length: {length}\r\n\r\n".encode())


def test_a_head_over_the_limit_is_431_in_the_error_shape(sentiment_server):
    body = json.dumps({"text": "fine"}).encode()
    status, answer = exchange(sentiment_server, sentiment_head(b"x-padding: " + b"a" * 100_000 + b"\r\n", len(body)), body)
    assert status == 431 and json.loads(answer)["error"]["code"] == "headers_too_large"


def test_headers_under_the_limit_and_a_large_body_are_served(sentiment_server):
    body = json.dumps({"texts": [f"A lovely film, {i}. " + "Warm and funny. " * 600 for i in range(64)]}).encode()
    assert len(body) > 600_000
    head = sentiment_head(b"x-padding: " + b"a" * 50_000 + b"\r\n", len(body))
    status, answer = exchange(sentiment_server, head, body)
    assert status == 200 and len(json.loads(answer)["results"]) == 64


def test_an_endless_header_does_not_grow_the_process(sentiment_server):
    url = urlparse(sentiment_server.url)
    before = rss_bytes(sentiment_server.process.pid)
    refused_after = 0
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nx-endless: ")
        try:
            for _ in range(200):  # up to 200 MiB, one MiB at a time
                sock.sendall(b"a" * 2**20)
                refused_after += 1
        except (BrokenPipeError, ConnectionResetError):
            pass
        time.sleep(0.2)
    assert refused_after < 10, "the server kept reading an endless header"
    assert rss_bytes(sentiment_server.process.pid) - before < 32 * 2**20
