"""ASGI middleware: when a client disconnects before its answer, its request is cancelled.

Cancelling the handler cancels its wait in the batcher, which takes the request's rows out of the
queue, so work nobody will read is not computed. Once the body has been read, the middleware listens
on the connection for the server's `http.disconnect`; an answer already sent is never cancelled.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("service.cancellation")


class CancelOnDisconnect:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        body_read = asyncio.Event()
        disconnected = asyncio.Event()
        answered = False

        async def app_receive():
            if body_read.is_set():  # the watcher owns the connection now; tell the app what it saw
                await disconnected.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected.set()
                body_read.set()
            elif not message.get("more_body", False):
                body_read.set()
            return message

        async def tracking_send(message):
            nonlocal answered
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True
            await send(message)

        async def watch() -> None:
            await body_read.wait()
            while not disconnected.is_set():
                if (await receive())["type"] == "http.disconnect":
                    disconnected.set()
            if not handler.done() and not answered:
                handler.cancel()
                log.info("%s %s: the client disconnected; its work was dropped", scope.get("method"), scope.get("path"))

        handler = asyncio.ensure_future(self.app(scope, app_receive, tracking_send))
        watcher = asyncio.ensure_future(watch())
        try:
            await handler
        except asyncio.CancelledError:
            if not disconnected.is_set():
                raise  # cancelled from outside (shutdown), not by the client
        finally:
            watcher.cancel()
            if not handler.done():
                handler.cancel()
