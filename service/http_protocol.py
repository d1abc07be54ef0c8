"""uvicorn's httptools protocol with a bound on the request head, and notice of a client that goes away.

httptools keeps a header that is still arriving in memory, however long it grows, so a client could make
the process hold hundreds of megabytes with one header line. This protocol counts the bytes received
while a request's head is incomplete and answers 431 (in the service's error shape) and closes the
connection once they pass the limit. With h11, uvicorn's own `h11_max_incomplete_event_size` does the same.

Each response leaves in one write where uvicorn makes two (its head, then its body): HeadWithBody holds the
head back until the body comes, which saves a system call and a TCP segment per response on the event loop
and at the client.

It also hands each request a DisconnectNotice (scope["extensions"][DISCONNECT_NOTICE]): when the connection
is lost after the whole request arrived and before the whole answer was sent, the callbacks registered on it
run. service/cancellation.py cancels the request's work with it, where otherwise a task per request would
have to listen on the connection.
"""

from __future__ import annotations

import json
from typing import Callable

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.errors import error_body

DISCONNECT_NOTICE = "ortserve.disconnect_notice"


class DisconnectNotice:
    __slots__ = ("cycle", "callbacks")

    def __init__(self, cycle) -> None:
        self.cycle = cycle  # uvicorn's RequestResponseCycle
        self.callbacks: list[Callable[[], None]] = []

    def add(self, callback: Callable[[], None]) -> None:
        self.callbacks.append(callback)

    def connection_lost(self) -> None:
        # A request still arriving reads the disconnect from receive() itself; an answered one has nothing to stop.
        if self.cycle.more_body or self.cycle.response_complete:
            return
        for callback in self.callbacks:
            callback()


class HeadWithBody:
    """The transport as one request's cycle sees it: its first write, the response head, waits for the next."""

    __slots__ = ("transport", "head", "started")
    CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"  # the cycle's own interim answer, not the response head

    def __init__(self, transport) -> None:
        self.transport, self.head, self.started = transport, b"", False

    def write(self, data: bytes) -> None:
        if not self.started and data != self.CONTINUE:
            self.started, self.head = True, data
            return
        if self.head:
            data, self.head = self.head + data, b""
        self.transport.write(data)

    def close(self) -> None:
        if self.head:
            self.transport.write(self.head)
            self.head = b""
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()


def bounded_httptools_protocol(max_head_bytes: int) -> type[HttpToolsProtocol]:
    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        def connection_made(self, transport) -> None:  # type: ignore[override]
            self._head_bytes, self._in_head = 0, True
            self._notices: list[DisconnectNotice] = []  # of this connection's requests not yet answered
            super().connection_made(transport)

        def connection_lost(self, exc) -> None:
            super().connection_lost(exc)
            notices, self._notices = self._notices, []
            for notice in notices:
                notice.connection_lost()

        def data_received(self, data: bytes) -> None:
            if self._in_head:
                self._head_bytes += len(data)  # the parser resets the count once the head is complete
            super().data_received(data)
            if self._in_head and self._head_bytes > max_head_bytes and not self.transport.is_closing():
                self._refuse()

        def on_headers_complete(self) -> None:
            # A head that arrived whole in one read is measured here; raising stops the parser, which
            # uvicorn answers through send_400_response (below).
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > max_head_bytes:
                self._too_large = True
                raise ValueError("request head too large")
            self._head_bytes, self._in_head = 0, False
            super().on_headers_complete()
            # The request's task is created but has not run yet: the scope it will read can still take the notice.
            self.cycle.transport = HeadWithBody(self.transport)
            notice = DisconnectNotice(self.cycle)
            self.cycle.scope.setdefault("extensions", {})[DISCONNECT_NOTICE] = notice
            self._notices.append(notice)

        def on_response_complete(self) -> None:
            self._notices = [notice for notice in self._notices if not notice.cycle.response_complete]
            super().on_response_complete()

        def send_400_response(self, msg: str) -> None:
            if getattr(self, "_too_large", False):
                return self._refuse()
            super().send_400_response(msg)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._head_bytes, self._in_head = 0, True

        def _refuse(self) -> None:
            message = f"the request line and headers exceed {max_head_bytes:,} bytes"
            body = json.dumps(error_body("headers_too_large", message)).encode()
            self.logger.warning("refused a request whose head passed %d bytes", max_head_bytes)
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                + b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
            )
            self.transport.close()

    return BoundedHttpToolsProtocol
