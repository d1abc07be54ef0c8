"""The service's HTTP protocol pieces: one write per response, and notice of a lost connection."""

from __future__ import annotations

from types import SimpleNamespace

from service.http_protocol import DisconnectNotice, HeadWithBody


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
