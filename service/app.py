"""create_app(settings): the service's ASGI app. The FastAPI app's lifespan loads the registry in the
background and its routers are mounted; the service's middleware and the lean task routes sit in front."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import swagger_ui_bundle
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles

from service.auth import ApiKeys, read_keys
from service.body_limit import BodySizeLimit
from service.cancellation import CancelOnDisconnect
from service.compute_budget import ComputeBudget, set_compute_priority
from service.cpus import physical_cores
from service.dataplane import DataPlane
from service.endpoints import endpoint_table
from service.errors import install_error_handlers
from service.logs import RequestContext
from service.metrics import Metrics, RequestMetrics
from service.openapi import install_openapi
from service.registry import ModelRegistry
from service.routes import demo, health, typed, v2
from service.routes.grpc_v2 import start_grpc, stop_grpc
from service.runtime import plan_providers
from service.settings import Settings
from service.tracing import Tracer, TracingMiddleware
from service.worker_stats import WorkerStats

log = logging.getLogger("service")

# For tests only: model loading waits until the file named here exists, so "loading" can be observed.
HOLD_LOADING_ENV = "ORTSERVE_TEST_HOLD_LOADING"


def load_models(registry: ModelRegistry) -> None:
    hold = os.environ.get(HOLD_LOADING_ENV)
    while hold and not os.path.exists(hold):
        time.sleep(0.02)
    registry.load_all()
    registry.changed()
    # What exists now (modules, sessions, tokenizers) lives as long as the process: keep it out of the
    # cyclic collector's way, or every full collection under load walks it again (measured: a quarter of
    # the event loop's time on /sentiment).
    gc.collect()
    gc.freeze()


async def follow_model_control(registry: ModelRegistry, loading: asyncio.Task) -> None:
    """With worker processes: once this worker's first load is done, apply every model-control action any
    worker took, in order (service/control_log.py)."""
    try:
        await asyncio.shield(loading)
    except Exception:  # noqa: BLE001 - a failed load is the registry's to report; the log still applies
        pass
    await registry.control_log.follow(registry.apply)


class ServiceApp:
    """What uvicorn serves: the service's middleware, around the lean task routes, around the FastAPI app
    (every other route, the OpenAPI contract and the lifespan). `state` is the FastAPI app's."""

    def __init__(self, entry, api: FastAPI):
        self.entry, self.api, self.state = entry, api, api.state

    async def __call__(self, scope, receive, send) -> None:
        await self.entry(scope, receive, send)


class HeadAsGet:
    """ASGI: a HEAD request is routed as the GET it asks about (405 where GET is not allowed); the server
    sends the GET answer's head without its body, since its own scope still says HEAD."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            return await self.app(scope, receive, send)
        as_get = {**scope, "method": "GET"}
        try:
            await self.app(as_get, receive, send)
        finally:  # what routing found, for the request metrics outside
            for key in ("route", "path_params"):
                if key in as_get:
                    scope[key] = as_get[key]


def create_app(settings: Settings) -> ServiceApp:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        plan = plan_providers(settings)  # providers=cuda without CUDA fails start-up here
        log.info("execution providers: %s (%s)", [name for name, _ in plan.providers], plan.note)
        # Worker processes share the cores: each runs sessions on its share (service/workers.py).
        registry = app.state.registry = ModelRegistry(settings, plan, max(1, physical_cores() // max(1, settings.workers)))
        registry.change_listeners.append(lambda: metrics.set_readiness(registry))
        app.state.endpoints = endpoint_table(registry, settings.routes)
        # inference_workers runs of every core's worth of threads at once: as many single-threaded runs.
        budget = ComputeBudget(settings.inference_workers * registry.cpus)
        run_pool = ThreadPoolExecutor(
            budget.threads, thread_name_prefix="inference",
            initializer=set_compute_priority, initargs=(settings.compute_priority,),
        )
        decode_pool = ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="decode")
        app.state.dataplane = DataPlane(registry, settings, run_pool, decode_pool, metrics, budget)
        app.state.dataplane.tracer = app.state.tracer
        worker_stats = app.state.dataplane.worker_stats = WorkerStats.from_environment()
        publishing = asyncio.create_task(worker_stats.publishing(app.state.dataplane.counters)) if worker_stats else None
        app.state.draining = False  # set on SIGTERM (service/__main__.py): readiness answers 503 from then on
        grpc_server = None
        if settings.grpc_port >= 0:
            keys = (read_keys(settings.api_keys, settings.api_keys_file), read_keys(settings.admin_keys, settings.admin_keys_file))
            grpc_server = await start_grpc(app.state, settings, (app.title, app.version), keys)
        # Load in the background: the server answers /health (503 "loading") while models warm up.
        loading = asyncio.create_task(asyncio.to_thread(load_models, registry))
        following = asyncio.create_task(follow_model_control(registry, loading)) if registry.control_log else None
        if settings.strict or settings.workers > 1:
            # A worker takes connections from the shared socket only once its models are loaded: the others
            # (or the listen queue) hold them meanwhile, so no request meets a worker that is still loading.
            await loading
        if settings.strict:
            failed = [f"{e.name}/{e.version}: {e.error}" for e in registry.entries.values() if e.state == "failed"]
            if failed:
                raise RuntimeError("strict: a model failed to load: " + "; ".join(failed))
        try:
            yield
        finally:
            loading.cancel()
            if following is not None:
                following.cancel()
            if grpc_server is not None:
                await stop_grpc(grpc_server, settings.drain_s)
            await app.state.dataplane.close()
            if publishing is not None:  # once more, with the last requests counted
                publishing.cancel()
                await asyncio.gather(publishing, return_exceptions=True)
            decode_pool.shutdown(wait=True, cancel_futures=True)
            run_pool.shutdown(wait=True, cancel_futures=True)
            if app.state.tracer is not None:
                app.state.tracer.shutdown()  # what is still buffered leaves
            metrics.process_ended()

    app = FastAPI(
        title="ortserve",
        summary="A CNN, an LSTM and a Transformer served from ONNX Runtime",
        version="0.1.0",
        lifespan=lifespan,
        # FastAPI's native OpenTelemetry looks up the global providers on every request; the service traces
        # every protocol itself (service/tracing.py), so it stays off.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        docs_url=None,
        redoc_url=None,
    )
    metrics = app.state.metrics = Metrics()
    app.state.input_limits = settings.input_limits()
    install_error_handlers(app)
    install_openapi(app)
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

    # Middleware, innermost first: body limit -> disconnects -> keys -> metrics -> CORS -> request id, around the
    # lean task routes and the FastAPI app alike (pure ASGI classes: no layer of FastAPI's own per request).
    entry = HeadAsGet(typed.TaskRoutes(app))
    entry = BodySizeLimit(entry, max_bytes=int(settings.max_request_mb * 1024 * 1024))
    entry = CancelOnDisconnect(entry)
    entry = ApiKeys(
        entry,
        inference_keys=read_keys(settings.api_keys, settings.api_keys_file),
        admin_keys=read_keys(settings.admin_keys, settings.admin_keys_file),
        protect_health=settings.protect_health,
    )
    entry = RequestMetrics(entry, metrics=metrics, known_model=lambda name: bool(app.state.registry.versions(name)))
    if settings.cors_origins:
        entry = CORSMiddleware(
            entry,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type", "x-request-id", "inference-header-content-length"],
            expose_headers=["x-request-id", "retry-after", "inference-header-content-length"],
        )
    tracer = app.state.tracer = Tracer(version=app.version) if settings.otel else None
    if tracer is None:
        return ServiceApp(RequestContext(entry), app)
    return ServiceApp(TracingMiddleware(RequestContext(entry, trace_id=tracer.current_trace_id, on_client_id=tracer.note_request_id), tracer), app)
