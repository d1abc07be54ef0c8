"""The task endpoints: parse, call the dataplane, return."""

from __future__ import annotations

import json
from typing import Any, Optional

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from service.errors import ServerErrors, ServiceError, UnsupportedMediaType, error_response
from service.limits import DEFAULT_LIMITS, InputLimits
from service.tasks.forecast import ForecastRequest, ForecastResponse
from service.tasks.image import ImageClassification, ImageRequest
from service.tasks.sentiment import SentimentRequest, SentimentResponse

router = APIRouter(tags=["tasks"])


class ErrorDetail(BaseModel):
    loc: list[str] = Field(description="where in the request, e.g. ['body', 'series', '3']")
    msg: str
    type: str


class ErrorInfo(BaseModel):
    code: str = Field(description="bad_request, payload_too_large, unsupported_media_type, invalid_input, ...")
    message: str
    details: Optional[list[ErrorDetail]] = Field(None, description="one entry per validation problem (422)")
    error_id: Optional[str] = Field(None, description="a 5xx's id, as logged by the server")


class ErrorResponse(BaseModel):
    """Every error of the task endpoints has this shape."""

    error: ErrorInfo


ERROR_RESPONSES = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "malformed body or undecodable image",
        401: "an API key is required and was missing or wrong",
        413: "body or image too large",
        415: "unsupported media type or image format",
        422: "the request failed validation, or is beyond a limit (texts, characters, series length, horizon)",
        500: "an internal error (error_id in the log)",
        503: "the model is not ready, or its queue is full (Retry-After)",
        504: "no answer within the request deadline",
    }.items()
}


def check_media_type(content_type: str, *accepted: str) -> None:
    media_type = content_type.split(";")[0].strip().lower()
    if media_type not in accepted and not (media_type == "" and "application/json" in accepted):
        raise UnsupportedMediaType(f"send {' or '.join(accepted)}, not {media_type or 'no content type'}")


def require_media_type(*accepted: str):
    async def check(request: Request) -> None:
        check_media_type(request.headers.get("content-type", ""), *accepted)

    return Depends(check)


@router.post(
    "/classify-image",
    response_model=ImageClassification,
    responses=ERROR_RESPONSES,
    dependencies=[require_media_type("multipart/form-data")],
)
async def classify_image(
    request: Request,
    file: UploadFile = File(..., description="PNG, JPEG, BMP, GIF, WebP or TIFF image of one digit"),
    top_k: int = Query(3, ge=1, le=10, description="how many labels to return"),
):
    body = ImageRequest(data=await file.read(), top_k=top_k)
    return await request.app.state.dataplane.infer("mnist-cnn", body)


@router.post(
    "/sentiment",
    response_model=SentimentResponse,
    responses=ERROR_RESPONSES,
    dependencies=[require_media_type("application/json")],
)
async def sentiment(request: Request, body: SentimentRequest):
    return await request.app.state.dataplane.infer("sentiment-transformer", body)


@router.post(
    "/predict-sequence",
    response_model=ForecastResponse,
    responses=ERROR_RESPONSES,
    dependencies=[require_media_type("application/json")],
)
async def predict_sequence(request: Request, body: ForecastRequest):
    return await request.app.state.dataplane.infer("forecast-lstm", body)


# --- The JSON task routes, lean --------------------------------------------------------------------------
# FastAPI's per-request machinery (its middleware, dependency resolution, body parsing, response validation)
# cost more of the event loop's CPU per request than the model's own pre-processing (bench/README.md). The
# two JSON task routes are therefore answered ahead of FastAPI by plain ASGI endpoints (TaskRoutes), which
# the declarations above describe in the OpenAPI contract: they parse and validate the same pydantic models
# and answer the same errors, and the API tests hold both to it.


def parse_json_body(body: bytes, has_content_type: bool, model: type[BaseModel], limits: InputLimits) -> BaseModel:
    """The body as `model`, with the errors FastAPI raises for a JSON body parameter; `limits` bound the
    lists before their items are validated."""
    if not body:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    data: Any = body  # without a content type FastAPI validates the raw bytes (and refuses them)
    if has_content_type:
        try:
            data = json.loads(body)
        except json.JSONDecodeError as exc:
            raise RequestValidationError(
                [{"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error", "input": {},
                  "ctx": {"error": exc.msg}}]
            ) from exc
        except Exception as exc:  # undecodable bytes, nesting past the recursion limit
            raise HTTPException(400, "There was an error parsing the body") from exc
    try:
        # as FastAPI validates a body model
        return model.model_validate(data, from_attributes=True, context={"limits": limits})
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from exc


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


JSON_HEADERS = [(b"content-type", b"application/json")]


class JsonTaskRoute:
    """POST `path`: a JSON body validated as `request_model` -> the model's answer from the dataplane."""

    def __init__(self, path: str, model_name: str, request_model: type[BaseModel]):
        self.path, self.model_name, self.request_model = path, model_name, request_model

    async def __call__(self, scope, receive, send, state) -> None:
        content_type = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
                break
        try:
            check_media_type(content_type or "", "application/json")
            body = await read_body(receive)
            limits = getattr(state, "input_limits", DEFAULT_LIMITS)
            parsed = parse_json_body(body, content_type is not None, self.request_model, limits)
            result = await state.dataplane.infer(self.model_name, parsed)
        except (ServiceError, RequestValidationError, HTTPException) as exc:
            await error_response(exc, scope["method"], scope["path"])(scope, receive, send)
            return
        body = result.__pydantic_serializer__.to_json(result)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [*JSON_HEADERS, (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})


class TaskRoutes:
    """ASGI: POST to a JSON task route is answered here; every other request goes on to the FastAPI app."""

    def __init__(self, api, routes: list[JsonTaskRoute]):
        self.api = api
        self.routes = {route.path: route for route in routes}
        self._answer = ServerErrors(self._route)  # a 500 here keeps the connection, as in the FastAPI app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            route = self.routes.get(route_path(scope))
            if route is not None:
                scope["route"] = route  # the request metrics label requests by route
                return await self._answer(scope, receive, send)
        await self.api(scope, receive, send)

    async def _route(self, scope, receive, send) -> None:
        await scope["route"](scope, receive, send, self.api.state)


def route_path(scope) -> str:
    """The path the routes match: without the root path, as Starlette's router sees it."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


TASK_ROUTES = [
    JsonTaskRoute("/sentiment", "sentiment-transformer", SentimentRequest),
    JsonTaskRoute("/predict-sequence", "forecast-lstm", ForecastRequest),
]
