"""ASGI middleware that answers 413 for request bodies over the limit, declared or streamed."""

from __future__ import annotations

import json

from service.errors import error_body

V2_PREFIX = "/v2/"


class BodySizeLimit:
    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, scope, send) -> None:
        message = f"request body exceeds {self.max_bytes:,} bytes"
        # The Open Inference Protocol's clients read {"error": "message"}.
        shape = {"error": message} if scope["path"].startswith(V2_PREFIX) else error_body("payload_too_large", message)
        body = json.dumps(shape).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._reject(scope, send)

        received = 0
        exceeded = False
        started = False

        async def limited_receive():
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            nonlocal started
            if exceeded:
                # The app saw a truncated body; whatever it answers, the client gets 413.
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._reject(scope, send)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:  # the app stopped at the cut-off body without answering
            await self._reject(scope, send)
