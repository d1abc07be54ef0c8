"""Liveness, readiness and the model list. All async: they never wait behind decoding or inference."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from service.manifest import ModelManifest
from service.registry import ModelEntry

router = APIRouter(tags=["health"])


class ModelStatus(BaseModel):
    name: str
    version: str
    task: str | None
    ready: bool
    state: Literal["loading", "ready", "failed", "unloaded"]
    variant: str | None = None  # which model file is served: "fp32", "int8", ...
    providers: list[str]
    note: str | None = None  # e.g. why CUDA is not in use
    error: str | None = None


class HealthResponse(BaseModel):
    status: Literal["ok", "loading", "degraded"]
    models: list[ModelStatus]


class LiveResponse(BaseModel):
    status: Literal["alive"]


class ReadyResponse(BaseModel):
    ready: bool
    status: Literal["ok", "loading", "degraded"]
    ready_models: list[str]


class ModelDescription(ModelStatus):
    batching: dict[str, Any] | None = None  # policy and counters: batches formed, their sizes
    manifest: ModelManifest | None


class ModelsResponse(BaseModel):
    models: list[ModelDescription]


def _status(entry: ModelEntry) -> dict:
    return {
        "name": entry.name,
        "version": entry.version,
        "task": entry.manifest.task if entry.manifest else None,
        "ready": entry.ready,
        "state": entry.state,
        "variant": entry.variant,
        "providers": entry.model.providers if entry.model else [],
        "note": entry.model.note if entry.model else None,
        "error": entry.error,
    }


@router.get("/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
async def health(request: Request):
    """The combined view: 200 only when every model is ready; 503 while loading or when one failed."""
    registry = request.app.state.registry
    body = HealthResponse(status=registry.status, models=[ModelStatus(**_status(e)) for e in registry.entries.values()])
    return JSONResponse(body.model_dump(), status_code=200 if body.status == "ok" else 503)


@router.get("/health/live", response_model=LiveResponse)
async def live() -> LiveResponse:
    """The process is up and its event loop answers. A failed model does not make it unhealthy."""
    return LiveResponse(status="alive")


@router.get("/health/ready", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
async def ready(request: Request):
    """200 once loading has finished and at least one model serves (a failed model is reported in /health)."""
    registry = request.app.state.registry
    serving = [f"{e.name}/{e.version}" for e in registry.entries.values() if e.ready]
    is_ready = not registry.loading and bool(serving) and not getattr(request.app.state, "draining", False)
    body = ReadyResponse(ready=is_ready, status=registry.status, ready_models=serving)
    return JSONResponse(body.model_dump(), status_code=200 if is_ready else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus exposition format."""
    content, media_type = request.app.state.metrics.render(request.app.state.registry)
    return Response(content=content, media_type=media_type)


@router.get("/models", response_model=ModelsResponse)
async def list_models(request: Request) -> ModelsResponse:
    registry, dataplane = request.app.state.registry, request.app.state.dataplane
    return ModelsResponse(
        models=[
            ModelDescription(**_status(e), batching=dataplane.summary(e) if e.ready else None, manifest=e.manifest)
            for e in registry.entries.values()
        ]
    )
