"""ASGI middleware: when a client disconnects before its answer, its request is cancelled.

Cancelling the handler cancels its wait in the batcher, which takes the request's rows out of the
queue, so work nobody will read is not computed; an answer already sent is never cancelled. The
service's HTTP protocol (service/http_protocol.py) says when the connection is lost; under another
protocol (h11) or server, the middleware listens on the connection for `http.disconnect` once the body
has been read, in a task of its own.
"""

from __future__ import annotations

import asyncio
import logging

from service.http_protocol import DISCONNECT_NOTICE

log = logging.getLogger("service.cancellation")


class ClientGone:
    """The request's task, cancelled when its client goes away; the cancellation it caused is taken back
    once the app has stopped, as asyncio.timeout does, so the request ends normally (status 499)."""

    def __init__(self, scope) -> None:
        self.scope = scope
        self.handler = asyncio.current_task()
        self.cancelled = False

    def cancel(self) -> None:
        if not self.handler.done():
            self.cancelled = True
            self.handler.cancel()
            log.info("%s %s: the client disconnected; its work was dropped", self.scope.get("method"), self.scope.get("path"))

    async def run(self, app, receive, send) -> None:
        try:
            await app(self.scope, receive, send)
        except asyncio.CancelledError:
            if not self.cancelled or self.handler.uncancel() > 0:
                raise  # cancelled from outside (shutdown), not (only) by the client
        else:
            if self.cancelled:
                self.handler.uncancel()  # the app swallowed it


class CancelOnDisconnect:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        notice = scope.get("extensions", {}).get(DISCONNECT_NOTICE)
        if notice is None:
            return await self._watching(scope, receive, send)
        gone = ClientGone(scope)
        notice.add(gone.cancel)
        await gone.run(self.app, receive, send)

    async def _watching(self, scope, receive, send):
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

        gone = ClientGone(scope)
        done = False

        async def watch() -> None:
            await body_read.wait()
            while not disconnected.is_set():
                if (await receive())["type"] == "http.disconnect":
                    disconnected.set()
            if not answered and not done:
                gone.cancel()

        # The app runs in this task (a task of its own per request costs the event loop); the watcher cancels it.
        watcher = asyncio.ensure_future(watch())
        try:
            await gone.run(self.app, app_receive, tracking_send)
        finally:
            done = True
            watcher.cancel()
