"""The service's HTTP/1.1 protocol: uvicorn's httptools protocol with the bounds a public server needs.

- **Head size**: httptools keeps a header that is still arriving in memory, however long it grows. The
  bytes received while a request's head is incomplete are counted; past the limit the answer is 431.
- **Slow clients**: a new connection must start a request within `idle_s` (between requests uvicorn's
  keep-alive timeout does the same), a request's head must be complete within `head_s` of its first
  byte, and its body within `body_s` of its head. A late head or body is answered 408.
- **Connections**: beyond `max_connections` open connections, a new connection's first request is
  answered 503 (Retry-After) at once, without reaching the app.
- **Errors of its own** (400 for a request the parser refuses, 408, 431, 503) are answered in the
  service's JSON error shape, then the connection is closed the lingering way: the answer is sent, the
  write side shut, and what the client still sends is read and dropped (up to LINGER_S and LINGER_BYTES)
  before closing, so the client reads the answer instead of a connection reset.
- **Retry later**: a connection answered 503 with Retry-After (a full queue) is not read again for
  `retry_pause_s`, so clients that retry at once cannot keep the event loop busy refusing them (and the
  compute threads and health probes without a core).

Each response leaves in one write where uvicorn makes two (its head, then its body): HeadWithBody holds the
head back until the body comes (not for HEAD, whose answer has no body), which saves a system call and a
TCP segment per response on the event loop and at the client.

It also hands each request a DisconnectNotice (scope["extensions"][DISCONNECT_NOTICE]): when the connection
is lost after the whole request arrived and before the whole answer was sent, the callbacks registered on it
run. service/cancellation.py cancels the request's work with it, where otherwise a task per request would
have to listen on the connection.

uvicorn's protocol class is not a public API: `check_uvicorn_protocol` verifies, when the server starts,
that the hooks used here are still there, and pyproject.toml pins the uvicorn releases this was tested on.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from typing import Callable

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from service.errors import error_body

DISCONNECT_NOTICE = "ortserve.disconnect_notice"
# How long, and how much, a connection closed with an error answer keeps reading (and dropping) of what the
# client still sends, so that the client reads the answer rather than a reset.
LINGER_S = 2.0
LINGER_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ConnectionLimits:
    max_head_bytes: int = 64 * 1024
    idle_s: float = 5.0
    head_s: float = 10.0
    body_s: float = 30.0
    max_connections: int = 1024
    retry_pause_s: float = 1.0  # a connection answered 503 with Retry-After is not read for this long


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
    """The transport as one request's cycle sees it: its first write, the response head, waits for the next
    (unless `hold` is off: a HEAD request's answer is its head alone). It notes whether the answer is a
    503 that asks the client to come back later (Retry-After)."""

    __slots__ = ("transport", "head", "started", "hold", "retry_later")
    CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"  # the cycle's own interim answer, not the response head

    def __init__(self, transport, hold: bool = True) -> None:
        self.transport, self.head, self.started, self.hold, self.retry_later = transport, b"", False, hold, False

    def write(self, data: bytes) -> None:
        if not self.started and data != self.CONTINUE:
            self.started = True
            self.retry_later = data.startswith(b"HTTP/1.1 503") and b"\r\nretry-after:" in data
            if self.hold:
                self.head = data
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


def error_answer(status: int, reason: str, code: str, message: str, headers: tuple[str, ...] = ()) -> bytes:
    """A whole HTTP/1.1 answer in the service's error shape that closes the connection."""
    body = json.dumps(error_body(code, message)).encode()
    head = [f"HTTP/1.1 {status} {reason}", "content-type: application/json", f"content-length: {len(body)}",
            "connection: close", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class Sweep:
    """Every SWEEP_S, the connections whose deadline has passed get their timeout: one timer per server."""

    SWEEP_S = 0.25
    _running: dict[int, "Sweep"] = {}  # by the set of connections of one server

    def __init__(self, loop, connections) -> None:
        self.loop, self.connections = loop, connections
        self.loop.call_later(self.SWEEP_S, self.run)

    @classmethod
    def of(cls, loop, connections) -> None:
        found = cls._running.get(id(connections))
        if found is None or found.connections is not connections or found.loop is not loop:
            cls._running[id(connections)] = cls(loop, connections)

    def run(self) -> None:
        now = self.loop.time()
        for connection in list(self.connections):
            check = getattr(connection, "check_deadline", None)
            if check is not None:
                check(now)
        if self.loop.is_closed():
            return
        self.loop.call_later(self.SWEEP_S, self.run)


def service_protocol(limits: ConnectionLimits) -> type[HttpToolsProtocol]:
    class ServiceHttpProtocol(HttpToolsProtocol):
        def connection_made(self, transport) -> None:  # type: ignore[override]
            self._head_bytes, self._in_head, self._lingering = 0, True, False
            self._notices: list[DisconnectNotice] = []  # of this connection's requests not yet answered
            self._deadline, self._on_deadline, self._cooling, self._lingered = 0.0, None, None, 0
            super().connection_made(transport)
            # uvicorn's set holds every open connection of the process, this one included.
            self._over_capacity = len(self.connections) > limits.max_connections
            self._arm(limits.idle_s, self._idle_timeout)
            Sweep.of(self.loop, self.connections)

        def connection_lost(self, exc) -> None:
            self._disarm()
            if self._cooling is not None:
                self._cooling.cancel()
            super().connection_lost(exc)
            notices, self._notices = self._notices, []
            for notice in notices:
                notice.connection_lost()

        # --- timers ------------------------------------------------------------------------------

        # A deadline per connection, checked by one sweep of the server's connections (Sweep): no timer is
        # made and cancelled for each phase of each request.
        def _arm(self, seconds: float, callback: Callable[[], None]) -> None:
            self._deadline, self._on_deadline = self.loop.time() + seconds, callback

        def _disarm(self) -> None:
            self._on_deadline = None

        def check_deadline(self, now: float) -> None:
            if self._on_deadline is not None and now >= self._deadline:
                callback, self._on_deadline = self._on_deadline, None
                callback()

        def _idle_timeout(self) -> None:
            if not self.transport.is_closing():
                self.transport.close()  # nothing was asked: nothing to answer

        def _head_timeout(self) -> None:
            if self._busy():  # a pipelined head behind an answer in progress: close once it is sent
                self.cycle.keep_alive = False
                self.flow.pause_reading()
                return
            self._answer_and_close(error_answer(
                408, "Request Timeout", "request_timeout",
                f"the request line and headers did not arrive within {limits.head_s:g} s"))

        def _body_timeout(self) -> None:
            cycle = self.cycle
            if cycle is None or not cycle.more_body or cycle.response_complete:
                return
            answered = cycle.response_started
            # The app reads a disconnect and stops (the request ends as 499: it never got its body).
            cycle.disconnected = True
            cycle.message_event.set()
            if answered:
                self.transport.close()
                return
            self._answer_and_close(error_answer(
                408, "Request Timeout", "request_timeout",
                f"the request body did not arrive within {limits.body_s:g} s of its headers"))

        def _busy(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        # --- answering and closing without a reset ----------------------------------------------------

        def _answer_and_close(self, answer: bytes) -> None:
            """Send `answer`, shut the write side, drop what still arrives for LINGER_S, then close."""
            if self.transport.is_closing():
                return
            self._disarm()
            self._lingering = True
            self.transport.write(answer)
            self.flow.resume_reading()
            try:
                self.transport.write_eof()
            except (NotImplementedError, OSError, RuntimeError):
                self.transport.close()
                return
            self.loop.call_later(LINGER_S, self.transport.close)

        # --- the parser's callbacks ----------------------------------------------------------------

        def data_received(self, data: bytes) -> None:
            if self._lingering:
                self._lingered += len(data)
                if self._lingered > LINGER_BYTES:
                    self.transport.close()
                return
            if self._in_head:
                self._head_bytes += len(data)  # the parser resets the count once the head is complete
            super().data_received(data)
            if self._in_head and self._head_bytes > limits.max_head_bytes and not self.transport.is_closing():
                self._refuse_head()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm(limits.head_s, self._head_timeout)

        def on_headers_complete(self) -> None:
            # A head that arrived whole in one read is measured here; raising stops the parser, which
            # uvicorn answers through send_400_response (below).
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > limits.max_head_bytes:
                self._too_large = True
                raise ValueError("request head too large")
            self._head_bytes, self._in_head = 0, False
            if self._over_capacity:
                self.logger.warning("refused a connection beyond max_connections (%d)", limits.max_connections)
                self._answer_and_close(error_answer(
                    503, "Service Unavailable", "too_many_connections",
                    f"the server holds {limits.max_connections:,} connections already; retry shortly",
                    ("retry-after: 1",)))
                raise ValueError("connection beyond max_connections")  # stops the parser: nothing reaches the app
            pipelined = self._busy()
            super().on_headers_complete()
            self._disarm()
            if not pipelined:
                self._arm(limits.body_s, self._body_timeout)
            # The request's task is created but has not run yet: the scope it will read can still take the notice.
            self.cycle.transport = HeadWithBody(self.transport, hold=self.scope["method"] != "HEAD")
            notice = DisconnectNotice(self.cycle)
            self.cycle.scope.setdefault("extensions", {})[DISCONNECT_NOTICE] = notice
            self._notices.append(notice)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            if self._on_deadline == self._body_timeout:
                self._disarm()
            self._head_bytes, self._in_head = 0, True

        def on_response_complete(self) -> None:
            self._notices = [notice for notice in self._notices if not notice.cycle.response_complete]
            super().on_response_complete()
            if getattr(self.cycle.transport, "retry_later", False) and not self.transport.is_closing():
                # A client told to retry later is not read again before then: a flood of clients that
                # retry at once would otherwise keep the event loop refusing them, and leave the
                # compute threads (and the health probes) no time at all.
                self.flow.pause_reading()
                self._cooling = self.loop.call_later(limits.retry_pause_s, self._cooled)

        def _cooled(self) -> None:
            self._cooling = None
            if not self.transport.is_closing() and not self._busy():
                self.flow.resume_reading()

        def send_400_response(self, msg: str) -> None:
            if self._lingering:  # the connection was refused above: its answer is on the way
                return
            if getattr(self, "_too_large", False):
                return self._refuse_head()
            self._answer_and_close(error_answer(400, "Bad Request", "bad_request", f"invalid HTTP request: {msg}"))

        def _refuse_head(self) -> None:
            self.logger.warning("refused a request whose head passed %d bytes", limits.max_head_bytes)
            self._answer_and_close(error_answer(
                431, "Request Header Fields Too Large", "headers_too_large",
                f"the request line and headers exceed {limits.max_head_bytes:,} bytes"))

    return ServiceHttpProtocol


# What service_protocol overrides or calls in uvicorn's protocol and its request cycle.
PROTOCOL_HOOKS = ("connection_made", "connection_lost", "data_received", "on_message_begin", "on_headers_complete",
                  "on_message_complete", "on_response_complete", "send_400_response")
CYCLE_ATTRIBUTES = ("transport", "scope", "more_body", "response_complete", "response_started", "disconnected",
                    "message_event", "keep_alive")


class IncompatibleUvicorn(RuntimeError):
    """The installed uvicorn no longer has what the service's protocol builds on."""


def check_uvicorn_protocol() -> None:
    """Fail loudly, naming what is missing, when uvicorn's protocol or request cycle changed shape."""
    missing = [hook for hook in PROTOCOL_HOOKS if not callable(getattr(HttpToolsProtocol, hook, None))]
    cycle_source = inspect.getsource(RequestResponseCycle.__init__)
    missing += [f"RequestResponseCycle.{name}" for name in CYCLE_ATTRIBUTES if f"self.{name} =" not in cycle_source]
    if missing:
        from importlib.metadata import version

        raise IncompatibleUvicorn(
            f"uvicorn {version('uvicorn')} lacks what service/http_protocol.py builds on: {', '.join(missing)}; "
            "install the uvicorn release pinned in pyproject.toml, or start with --http h11"
        )
