"""The task endpoints (/classify-image, /sentiment, /predict-sequence), /health and /models."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from service.errors import UnsupportedMediaType
from service.inference import infer
from service.manifest import ModelManifest
from service.registry import ModelRegistry
from service.tasks.forecast import ForecastRequest, ForecastResponse
from service.tasks.image import ImageClassification
from service.tasks.sentiment import SentimentRequest, SentimentResponse

router = APIRouter()

ERROR_RESPONSES = {
    400: {"description": "malformed body or undecodable image"},
    413: {"description": "body or image too large"},
    415: {"description": "unsupported media type or image format"},
    422: {"description": "the request failed validation"},
    503: {"description": "the model is not ready"},
}


class ModelStatus(BaseModel):
    name: str
    version: str
    task: str | None
    ready: bool
    state: Literal["loading", "ready", "failed"]
    providers: list[str]
    note: str | None = None  # e.g. why CUDA is not in use
    error: str | None = None


class HealthResponse(BaseModel):
    status: Literal["ok", "loading", "degraded"]
    models: list[ModelStatus]


class ModelDescription(ModelStatus):
    manifest: ModelManifest | None


class ModelsResponse(BaseModel):
    models: list[ModelDescription]


def registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


def require_media_type(*accepted: str):
    def check(request: Request) -> None:
        content_type = request.headers.get("content-type", "")
        media_type = content_type.split(";")[0].strip().lower()
        if media_type not in accepted and not (media_type == "" and "application/json" in accepted):
            raise UnsupportedMediaType(f"send {' or '.join(accepted)}, not {media_type or 'no content type'}")

    return Depends(check)


def _status(entry) -> dict:
    return {
        "name": entry.name,
        "version": entry.version,
        "task": entry.manifest.task if entry.manifest else None,
        "ready": entry.ready,
        "state": entry.state,
        "providers": entry.model.providers if entry.model else [],
        "note": entry.model.note if entry.model else None,
        "error": entry.error,
    }


@router.get("/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
def health(models: ModelRegistry = Depends(registry)):
    body = HealthResponse(status=models.status, models=[ModelStatus(**_status(e)) for e in models.entries.values()])
    return JSONResponse(body.model_dump(), status_code=200 if body.status == "ok" else 503)


@router.get("/models", response_model=ModelsResponse)
def list_models(models: ModelRegistry = Depends(registry)) -> ModelsResponse:
    return ModelsResponse(
        models=[ModelDescription(**_status(e), manifest=e.manifest) for e in models.entries.values()]
    )


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
) -> ImageClassification:
    entry = registry(request).get("mnist-cnn")
    data = await file.read()
    decoded = await run_in_threadpool(entry.task.decode_bytes, data, top_k)
    outputs = await infer(request, entry, decoded)
    return entry.task.encode(outputs, decoded, entry.name, entry.version)


@router.post(
    "/sentiment",
    response_model=SentimentResponse,
    responses=ERROR_RESPONSES,
    dependencies=[require_media_type("application/json")],
)
async def sentiment(request: Request, body: SentimentRequest) -> SentimentResponse:
    entry = registry(request).get("sentiment-transformer")
    decoded = await run_in_threadpool(entry.task.decode, body)
    outputs = await infer(request, entry, decoded)
    return entry.task.encode(outputs, decoded, entry.name, entry.version)


@router.post(
    "/predict-sequence",
    response_model=ForecastResponse,
    responses=ERROR_RESPONSES,
    dependencies=[require_media_type("application/json")],
)
async def predict_sequence(request: Request, body: ForecastRequest) -> ForecastResponse:
    entry = registry(request).get("forecast-lstm")
    decoded = await run_in_threadpool(entry.task.decode, body)
    outputs = await infer(request, entry, decoded)
    return entry.task.encode(outputs, decoded, entry.name, entry.version)
