"""The service's HTTP protocol pieces: one write per response, notice of a lost connection, its own error
answers, and the check that uvicorn still has what it builds on."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.http_protocol import (
    DisconnectNotice,
    HeadWithBody,
    IncompatibleUvicorn,
    check_uvicorn_protocol,
    error_answer,
)


class Wire:
    """What reached the socket, write by write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


def test_the_head_leaves_with_the_body_in_one_write():
    wire = Wire()
    transport = HeadWithBody(wire)
    transport.write(HEAD)
    assert wire.writes == []
    transport.write(b"{}")
    assert wire.writes == [HEAD + b"{}"]
    transport.write(b"HTTP/1.1 looks like a head but is body")  # later writes pass through unchanged
    assert wire.writes[-1] == b"HTTP/1.1 looks like a head but is body"


def test_an_interim_100_continue_goes_at_once_and_a_held_head_is_not_lost_on_close():
    wire = Wire()
    transport = HeadWithBody(wire)
    transport.write(HeadWithBody.CONTINUE)
    assert wire.writes == [HeadWithBody.CONTINUE]
    transport.write(HEAD)
    transport.close()
    assert wire.writes == [HeadWithBody.CONTINUE, HEAD] and wire.closed and transport.is_closing()


def test_the_notice_runs_its_callbacks_only_for_a_whole_request_without_a_whole_answer():
    called: list[str] = []
    for name, more_body, response_complete in [("arriving", True, False), ("answered", False, True),
                                               ("waiting", False, False)]:
        notice = DisconnectNotice(SimpleNamespace(more_body=more_body, response_complete=response_complete))
        notice.add(lambda name=name: called.append(name))
        notice.connection_lost()
    assert called == ["waiting"]


def test_a_head_answer_goes_at_once_and_a_retry_later_503_is_noted():
    wire = Wire()
    transport = HeadWithBody(wire, hold=False)
    transport.write(HEAD)
    assert wire.writes == [HEAD] and not transport.retry_later
    refused = HeadWithBody(Wire())
    refused.write(b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-length: 2\r\n\r\n")
    assert refused.retry_later
    not_ready = HeadWithBody(Wire())
    not_ready.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\n")
    assert not not_ready.retry_later  # readiness 503s carry no Retry-After: the connection is read on


def test_an_incompatible_uvicorn_is_named_at_start_up(monkeypatch):
    check_uvicorn_protocol()  # the pinned release has every hook
    monkeypatch.delattr(HttpToolsProtocol, "on_message_begin")
    with pytest.raises(IncompatibleUvicorn, match="on_message_begin"):
        check_uvicorn_protocol()


def test_the_error_answers_of_the_protocol_are_whole_json_answers_that_close():
    answer = error_answer(408, "Request Timeout", "request_timeout", "too slow", ("retry-after: 1",))
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 408 Request Timeout"
    assert {"connection: close", "content-type: application/json", "retry-after: 1", f"content-length: {len(body)}"} <= set(lines)
    assert json.loads(body) == {"error": {"code": "request_timeout", "message": "too slow"}}
