"""The app's start-up: once the models are loaded, the heap they made is out of the collector's way, and
FastAPI's own OpenTelemetry hooks stay off (the service traces every protocol itself, with --otel)."""

from __future__ import annotations

import asyncio
import gc

from service.app import create_app
from service.settings import Settings


def test_loading_freezes_the_startup_heap_and_fastapis_telemetry_stays_off(api_repository, monkeypatch):
    async def start() -> int:
        app = create_app(Settings(model_repository=api_repository)).api
        async with app.router.lifespan_context(app):
            for _ in range(600):  # the loader thread freezes right after the last model is ready
                if gc.get_freeze_count() or not app.state.registry.entries:
                    break
                await asyncio.sleep(0.05)
            assert not app.state.registry.loading
            return gc.get_freeze_count()

    gc.unfreeze()
    try:
        assert asyncio.run(start()) > 0
    finally:
        gc.unfreeze()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    for otel in (False, True):
        telemetry = create_app(Settings(model_repository=api_repository, otel=otel)).api._telemetry
        assert not (telemetry["tracing"] or telemetry["metrics"] or telemetry["logs"])
