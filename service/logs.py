"""Logging: text or JSON lines, with the request id on every line logged while a request is handled.

The request id comes from the client's X-Request-ID when it is a sane token, else it is made here,
and it is returned in the response's X-Request-ID. Request bodies (texts, images, series) are never logged.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import re
import sys
import time
import uuid
from typing import Callable

REQUEST_ID_HEADER = b"x-request-id"
_SANE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


_ID_PREFIX = uuid.uuid4().hex[:8]  # this process
_ID_SERIAL = itertools.count(1)


def new_id() -> str:
    """Unique per process and across restarts, without a system call per request."""
    return f"{_ID_PREFIX}{next(_ID_SERIAL):08x}"


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(level: str, fmt: str) -> None:
    """Root handler for the service's and uvicorn's loggers (uvicorn is started with log_config=None)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


class RequestContext:
    """ASGI middleware: set the request id for the request's logs and echo it in X-Request-ID: the client's
    own when it sent a sane one, else, when the service traces, the trace id (`trace_id` gives the current
    one; the client's id is then noted on the span), else a new one."""

    def __init__(self, app, trace_id: Callable[[], str | None] | None = None,
                 on_client_id: Callable[[str], None] | None = None):
        self.app = app
        self.trace_id = trace_id
        self.on_client_id = on_client_id  # with tracing: notes the client's id on the request's span

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        # The client's own id first (it correlates the answer with its request), then the trace id.
        sent = dict(scope["headers"]).get(REQUEST_ID_HEADER, b"").decode("latin-1")
        if _SANE_ID.fullmatch(sent):
            rid = sent
            if self.trace_id is not None and self.on_client_id is not None:
                self.on_client_id(sent)
        else:
            traced = self.trace_id() if self.trace_id is not None else None
            rid = traced if traced is not None else new_id()
        token = request_id.set(rid)

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
