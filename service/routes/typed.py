"""The task endpoints: parse, call the dataplane, return."""

from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from pydantic import BaseModel, Field

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


def require_media_type(*accepted: str):
    async def check(request: Request) -> None:
        content_type = request.headers.get("content-type", "")
        media_type = content_type.split(";")[0].strip().lower()
        if media_type not in accepted and not (media_type == "" and "application/json" in accepted):
            raise UnsupportedMediaType(f"send {' or '.join(accepted)}, not {media_type or 'no content type'}")

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
