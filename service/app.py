"""create_app(settings): the lifespan loads the registry in the background; routers are mounted."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import swagger_ui_bundle
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles

from service.body_limit import BodySizeLimit
from service.cpus import physical_cores
from service.dataplane import DataPlane
from service.errors import install_error_handlers
from service.metrics import Metrics, RequestMetrics
from service.registry import ModelRegistry
from service.routes import demo, health, typed, v2
from service.runtime import plan_providers
from service.settings import Settings

log = logging.getLogger("service")

# For tests only: model loading waits until the file named here exists, so "loading" can be observed.
HOLD_LOADING_ENV = "ORTSERVE_TEST_HOLD_LOADING"


def load_models(registry: ModelRegistry) -> None:
    hold = os.environ.get(HOLD_LOADING_ENV)
    while hold and not os.path.exists(hold):
        time.sleep(0.02)
    registry.load_all()


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        plan = plan_providers(settings)  # providers=cuda without CUDA fails start-up here
        log.info("execution providers: %s (%s)", [name for name, _ in plan.providers], plan.note)
        registry = app.state.registry = ModelRegistry(settings, plan, physical_cores())
        run_pool = ThreadPoolExecutor(settings.inference_workers, thread_name_prefix="inference")
        decode_pool = ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="decode")
        app.state.dataplane = DataPlane(registry, settings, run_pool, decode_pool, metrics)
        # Load in the background: the server answers /health (503 "loading") while models warm up.
        loading = asyncio.create_task(asyncio.to_thread(load_models, registry))
        try:
            yield
        finally:
            loading.cancel()
            await app.state.dataplane.close()
            decode_pool.shutdown(wait=True, cancel_futures=True)
            run_pool.shutdown(wait=True, cancel_futures=True)

    app = FastAPI(
        title="ortserve",
        summary="A CNN, an LSTM and a Transformer served from ONNX Runtime",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    metrics = app.state.metrics = Metrics()
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=int(settings.max_request_mb * 1024 * 1024))
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.include_router(typed.router)
    app.include_router(health.router)
    app.include_router(v2.router)
    app.include_router(demo.router)

    # Swagger UI from a package, so /docs works on a machine with no internet.
    app.mount("/static/swagger-ui", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title="ortserve API",
            swagger_js_url="/static/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/static/swagger-ui/favicon-32x32.png",
        )

    return app
