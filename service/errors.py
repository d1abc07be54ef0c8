"""One error base class carrying its HTTP status; one handler renders {"error": {code, message}}."""

from __future__ import annotations

import json
import logging

from starlette.requests import ClientDisconnect

from service.limits import MAX_ITEM_PROBLEMS
from service.logs import new_id

log = logging.getLogger("service.errors")


class ServiceError(Exception):
    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, headers: dict[str, str] | None = None, details: list[dict] | None = None):
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        self.details = details  # one entry per problem, for a request that failed validation


class BadRequest(ServiceError):
    status, code = 400, "bad_request"


class ModelNotFound(ServiceError):
    status, code = 404, "model_not_found"


class MethodNotAllowed(ServiceError):
    status, code = 405, "method_not_allowed"


class PayloadTooLarge(ServiceError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status, code = 415, "unsupported_media_type"


class InvalidInput(ServiceError):
    status, code = 422, "invalid_input"

    @classmethod
    def from_errors(cls, errors: list[dict], where: tuple[str, ...] = ()) -> "InvalidInput":
        """pydantic's validation errors (the first MAX_ITEM_PROBLEMS of them listed), located under `where`."""
        details = [
            {"loc": [*where, *(str(p) for p in e.get("loc", ()))], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in errors[:MAX_ITEM_PROBLEMS]
        ]
        summary = "; ".join(f"{'.'.join(d['loc'])}: {d['msg']}" for d in details)
        if len(errors) > MAX_ITEM_PROBLEMS:
            summary += f"; and {len(errors) - MAX_ITEM_PROBLEMS:,} more problems"
        return cls(summary, details=details)


class ModelLoadFailed(ServiceError):
    """A model-control load found a version it cannot serve; what served before serves on."""

    status, code = 400, "model_load_failed"


class ModelNotReady(ServiceError):
    status, code = 503, "model_not_ready"


class Overloaded(ServiceError):
    """The model's queue is full: retry shortly (the answer carries Retry-After)."""

    status, code = 503, "overloaded"


class InferenceFailed(ServiceError):
    status, code = 500, "inference_failed"


class DeadlineExceeded(ServiceError):
    """The request's deadline (request_timeout_s) passed before its answer was ready; its rows were dropped."""

    status, code = 504, "deadline_exceeded"


class Unauthorized(ServiceError):
    status, code = 401, "unauthorized"


class Forbidden(ServiceError):
    status, code = 403, "forbidden"


def error_body(code: str, message: str, details: list[dict] | None = None, error_id: str | None = None) -> dict:
    error: dict = {"code": code, "message": message}
    if details:
        error["details"] = details
    if error_id:
        error["error_id"] = error_id
    return {"error": error}


def log_server_error(log, method: str, path: str, status: int, message: str, exc_info=None) -> str:
    """Log a 5xx with a fresh error id; the client gets the same id to quote."""
    error_id = new_id()
    log.error("%s %s -> %s [error_id %s]: %s", method, path, status, error_id, message, exc_info=exc_info)
    return error_id


class ServerErrors:
    """ASGI middleware: an unexpected exception becomes a 500 in the error shape, with an error id, and is
    not re-raised, so the server keeps the client's connection open for its next request."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:
            # The client went away before its request was whole: nobody to answer, nothing of ours failed
            # (the request metrics count it as 499).
            log.info("%s %s: the client disconnected before its request was complete", scope.get("method"), scope.get("path"))
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            if started:
                raise
            error_id = log_server_error(log, scope.get("method", ""), scope.get("path", ""), 500,
                                        f"{type(exc).__name__}: {exc}", exc_info=exc)
            body = json.dumps(error_body("internal_error", "internal server error", error_id=error_id)).encode()
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})


def error_response(exc: Exception, method: str, path: str):
    """The answer to a ServiceError, a request that failed validation, or a Starlette HTTPException, in the
    error shape; None for any other exception (ServerErrors answers those)."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    if isinstance(exc, RequestValidationError):  # FastAPI's own, for the parameters of its routes
        exc = InvalidInput.from_errors(exc.errors())
    if isinstance(exc, ServiceError):
        error_id = None
        if exc.status == 500:  # a fault of ours; 503 and 504 are load, counted by the metrics
            error_id = log_server_error(log, method, path, exc.status, exc.message)
        body = error_body(exc.code, exc.message, exc.details, error_id=error_id)
        return JSONResponse(body, status_code=exc.status, headers=exc.headers or None)
    if isinstance(exc, HTTPException):
        codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type"}
        code = codes.get(exc.status_code, "bad_request" if exc.status_code < 500 else "internal_error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)
    return None


def install_error_handlers(app) -> None:
    """Every error of the FastAPI app leaves it as {"error": {"code", "message"}} with the right status."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    async def handler(request: Request, exc: Exception):
        return error_response(exc, request.method, request.url.path)

    for handled in (ServiceError, RequestValidationError, HTTPException):
        app.add_exception_handler(handled, handler)
    app.add_middleware(ServerErrors)  # first added = innermost: it sees what the handlers above did not
