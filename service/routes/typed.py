"""The task endpoints: parse, call the dataplane, return."""

from __future__ import annotations

import json
from typing import Any, Optional

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Route

from service.errors import UnsupportedMediaType
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


def check_media_type(request: Request, *accepted: str) -> None:
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";")[0].strip().lower()
    if media_type not in accepted and not (media_type == "" and "application/json" in accepted):
        raise UnsupportedMediaType(f"send {' or '.join(accepted)}, not {media_type or 'no content type'}")


def require_media_type(*accepted: str):
    async def check(request: Request) -> None:
        check_media_type(request, *accepted)

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
# FastAPI's per-request machinery (dependency resolution, body parsing, response validation) took about a
# third of the event loop's CPU per request (bench/README.md). The two JSON task routes are therefore served by plain Starlette routes, registered
# ahead of the declarations above, which stay the OpenAPI contract: they parse and validate the same
# pydantic models and raise the same errors, and the API tests hold both to it.


async def parse_json_body(request: Request, model: type[BaseModel]) -> BaseModel:
    """The body as `model`, with the errors FastAPI raises for a JSON body parameter."""
    body = await request.body()
    if not body:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    data: Any = body  # without a content type FastAPI validates the raw bytes (and refuses them)
    if "content-type" in request.headers:
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
        return model.model_validate(data, from_attributes=True)  # as FastAPI validates a body model
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from exc


def lean_json_route(path: str, model_name: str, request_model: type[BaseModel]) -> Route:
    async def endpoint(request: Request) -> Response:
        request.scope["route"] = route  # the metrics label requests by their route
        check_media_type(request, "application/json")
        parsed = await parse_json_body(request, request_model)
        result = await request.app.state.dataplane.infer(model_name, parsed)
        return Response(result.__pydantic_serializer__.to_json(result), media_type="application/json")

    route = Route(path, endpoint, methods=["POST"], include_in_schema=False)
    return route


LEAN_ROUTES = [
    lean_json_route("/sentiment", "sentiment-transformer", SentimentRequest),
    lean_json_route("/predict-sequence", "forecast-lstm", ForecastRequest),
]
