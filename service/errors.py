"""One error base class carrying its HTTP status; one handler renders {"error": {code, message}}."""

from __future__ import annotations


class ServiceError(Exception):
    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(ServiceError):
    status, code = 400, "bad_request"


class ModelNotFound(ServiceError):
    status, code = 404, "model_not_found"


class PayloadTooLarge(ServiceError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status, code = 415, "unsupported_media_type"


class InvalidInput(ServiceError):
    status, code = 422, "invalid_input"


class ModelNotReady(ServiceError):
    status, code = 503, "model_not_ready"


class Overloaded(ServiceError):
    """The model's queue is full: retry shortly (the answer carries Retry-After)."""

    status, code = 503, "overloaded"


class InferenceFailed(ServiceError):
    status, code = 500, "inference_failed"


def error_body(code: str, message: str, details: list[dict] | None = None) -> dict:
    error: dict = {"code": code, "message": message}
    if details:
        error["details"] = details
    return {"error": error}


def install_error_handlers(app) -> None:
    """Every error leaves the service as {"error": {"code", "message"}} with the right status."""
    import logging

    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    log = logging.getLogger("service.errors")

    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        if exc.status >= 500:
            log.error("%s %s -> %s: %s", request.method, request.url.path, exc.status, exc.message)
        return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status, headers=exc.headers or None)

    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse(error_body("bad_request", "the request body is not valid JSON"), status_code=400)
        details = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in errors
        ]
        summary = "; ".join(f"{'.'.join(d['loc'])}: {d['msg']}" for d in details)
        return JSONResponse(error_body("invalid_input", summary, details), status_code=422)

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type"}
        code = codes.get(exc.status_code, "bad_request" if exc.status_code < 500 else "internal_error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)

    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal_error", "internal server error"), status_code=500)

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)
