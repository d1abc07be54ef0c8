"""The typed task endpoints, one per row of the endpoint table (service/endpoints.py): parse, call the
dataplane, return.

They are plain ASGI, answered ahead of the FastAPI app: FastAPI's per-request machinery (its middleware,
dependency resolution, body parsing, response validation) cost more of the event loop's CPU per request
than the model's own pre-processing (bench/README.md). Their OpenAPI entries come from the same table
(service/openapi.py).
"""

from __future__ import annotations

import json
from typing import Any, Optional
from urllib.parse import parse_qsl

from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request

from service.endpoints import TaskEndpoint
from service.errors import BadRequest, InvalidInput, MethodNotAllowed, ServerErrors, ServiceError, UnsupportedMediaType, error_response
from service.limits import DEFAULT_LIMITS, InputLimits

MULTIPART = "multipart/form-data"


class ErrorDetail(BaseModel):
    loc: list[str] = Field(description="where in the request, e.g. ['body', 'series', '3']")
    msg: str
    type: str


class ErrorInfo(BaseModel):
    code: str = Field(description="bad_request, payload_too_large, unsupported_media_type, invalid_input, ...")
    message: str
    details: Optional[list[ErrorDetail]] = Field(None, description="one entry per validation problem (422), at most 10")
    error_id: Optional[str] = Field(None, description="a 5xx's id, as logged by the server")


class ErrorResponse(BaseModel):
    """Every error of the task endpoints has this shape."""

    error: ErrorInfo


ERROR_STATUSES = {
    400: "malformed body or undecodable image",
    401: "an API key is required and was missing or wrong",
    408: "the request's headers or body did not arrive in time",
    413: "body or image too large",
    415: "unsupported media type or image format",
    422: "the request failed validation, or is beyond a limit (texts, characters, series length, horizon)",
    500: "an internal error (error_id in the log)",
    503: "the model is not ready, or its queue is full (Retry-After)",
    504: "no answer within the request deadline",
}


def check_media_type(content_type: str, accepted: str) -> None:
    media_type = content_type.split(";")[0].strip().lower()
    if media_type != accepted and not (media_type == "" and accepted == "application/json"):
        raise UnsupportedMediaType(f"send {accepted}, not {media_type or 'no content type'}")


async def read_body(receive) -> bytes:
    """The whole request body; ClientDisconnect when the client (or the body limit) ends it first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    if not body:
        raise InvalidInput("body: Field required", details=[{"loc": ["body"], "msg": "Field required", "type": "missing"}])
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past Python's limit
        raise BadRequest("the request body is not valid JSON") from None


async def read_form(scope, receive, fields: set[str]) -> dict[str, Any]:
    """The multipart body's `fields`: a file as its bytes, anything else as its text; others are ignored."""
    request = Request(scope, receive)
    try:
        form = await request.form(max_files=len(fields), max_fields=len(fields) + 16)
    except (MultiPartException, HTTPException) as exc:
        message = getattr(exc, "message", None) or getattr(exc, "detail", "")
        raise BadRequest(f"the multipart body cannot be read: {message}") from None
    try:
        found = {}
        for name in fields & set(form.keys()):
            value = form[name]
            found[name] = await value.read() if hasattr(value, "read") else value
        return found
    finally:
        await form.close()


def validated(model: type[BaseModel], data: Any, limits: InputLimits) -> BaseModel:
    """`data` as the task's request model; the limits bound its lists before their items are validated."""
    try:
        return model.model_validate(data, context={"limits": limits})
    except ValidationError as exc:
        raise InvalidInput.from_errors(exc.errors(include_url=False), where=("body",)) from None


async def read_request(endpoint: TaskEndpoint, scope, receive, limits: InputLimits) -> BaseModel:
    """The HTTP request as the task's request model, by the task's HTTP binding."""
    content_type = ""
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value.decode("latin-1")
            break
    check_media_type(content_type, endpoint.media_type)
    binding, model = endpoint.task.http, endpoint.request_model
    if endpoint.media_type == MULTIPART:
        names = {field.alias or name for name, field in model.model_fields.items()}
        data: Any = await read_form(scope, receive, names)
    else:
        data = parse_json(await read_body(receive))
    if binding.query:
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        data = {**data, **{name: query[name] for name in binding.query if name in query}} if isinstance(data, dict) else data
    return validated(model, data, limits)


JSON_HEADERS = [(b"content-type", b"application/json")]


class TaskRoutes:
    """ASGI: a request to a path of the endpoint table (app.state.endpoints) is answered here; every other
    request goes on to the FastAPI app."""

    def __init__(self, api):
        self.api = api
        self._answer = ServerErrors(self._route)  # a 500 here keeps the connection, as in the FastAPI app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            endpoints = getattr(self.api.state, "endpoints", None)
            endpoint = endpoints.get(route_path(scope)) if endpoints else None
            if endpoint is not None:
                scope["route"] = endpoint  # the request metrics label requests by route and model
                return await self._answer(scope, receive, send)
        await self.api(scope, receive, send)

    async def _route(self, scope, receive, send) -> None:
        endpoint: TaskEndpoint = scope["route"]
        state = self.api.state
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowed("Method Not Allowed", headers={"Allow": "POST"})
            request = await read_request(endpoint, scope, receive, getattr(state, "input_limits", DEFAULT_LIMITS))
            entry = state.registry.get(endpoint.model)
            result = await state.dataplane.infer(entry, request)
        except ServiceError as exc:
            await error_response(exc, scope["method"], scope["path"])(scope, receive, send)
            return
        body = result.__pydantic_serializer__.to_json(result)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [*JSON_HEADERS, (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})


def route_path(scope) -> str:
    """The path the routes match: without the root path, as Starlette's router sees it."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path
