"""A bound on the request head (request line and headers) for uvicorn's httptools protocol.

httptools keeps a header that is still arriving in memory, however long it grows, so a client could make
the process hold hundreds of megabytes with one header line. This protocol counts the bytes received
while a request's head is incomplete and answers 431 (in the service's error shape) and closes the
connection once they pass the limit. With h11, uvicorn's own `h11_max_incomplete_event_size` does the same.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.errors import error_body


def bounded_httptools_protocol(max_head_bytes: int) -> type[HttpToolsProtocol]:
    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        def connection_made(self, transport) -> None:  # type: ignore[override]
            self._head_bytes, self._in_head = 0, True
            super().connection_made(transport)

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
