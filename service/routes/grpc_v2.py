"""The Open Inference Protocol over gRPC (KServe V2 / Triton's GRPCInferenceService), beside REST on its own
port: parse, call the registry or the dataplane, return. The servicer and the messages are the published
ones (compiled in tritonclient); the dataplane and the batcher are the REST routes' own, so a gRPC request
and a REST one can share a batch.

Keys follow the REST rules (service/auth.py): inference and metadata need an inference key once one is set,
sent as `authorization: Bearer <key>` metadata; repository control needs an admin key. ServiceErrors map to
gRPC status codes; a client mistake is never INTERNAL.
"""

from __future__ import annotations

import logging
import time

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from service.auth import matches
from service.errors import ModelNotFound, ServiceError, log_server_error
from service.protocol.grpc_tensors import infer_response, parameters_of, request_arrays
from service.protocol.triton import PLATFORM, model_config, model_statistics
from service.protocol.v2 import check_tensors
from service.routes.v2 import EXTENSIONS, REPOSITORY_STATES, checked_name

log = logging.getLogger("service.grpc")

STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED, 403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.RESOURCE_EXHAUSTED, 415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT, 503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


class Unauthenticated(ServiceError):
    status, code = 401, "unauthorized"


class PermissionDenied(ServiceError):
    status, code = 403, "forbidden"


def rpc(method):
    """Every RPC: keys checked, ServiceErrors (and anything else) turned into a gRPC status, counted."""
    name = method.__name__

    async def handler(self, request, context):
        tracer = self.state.tracer
        if tracer is None:
            return await answer(self, request, context)
        carrier = {k: v for k, v in (context.invocation_metadata() or ()) if k in ("traceparent", "tracestate")}
        with tracer.server_span(f"gRPC {name}", carrier) as span:
            span.set_attribute("rpc.method", name)
            return await answer(self, request, context)

    async def answer(self, request, context):
        model = getattr(request, "name", "") or getattr(request, "model_name", "")
        code = grpc.StatusCode.OK
        try:
            self.authorize(name, context)
            return await method(self, request, context)
        except ServiceError as exc:
            code = STATUS_CODES.get(exc.status, grpc.StatusCode.INTERNAL)
            message = exc.message
            if code == grpc.StatusCode.INTERNAL:
                message += f" (error id {log_server_error(log, 'gRPC', name, exc.status, exc.message)})"
            await context.abort(code, message)
        except Exception as exc:  # noqa: BLE001 - the last line of defence, as ServerErrors is for HTTP
            if isinstance(exc, grpc.aio.AbortError):
                raise
            code = grpc.StatusCode.INTERNAL
            error_id = log_server_error(log, "gRPC", name, 500, f"{type(exc).__name__}: {exc}", exc_info=exc)
            await context.abort(code, f"internal error (error id {error_id})")
        finally:
            self.count(name, model, code)

    handler.__name__ = name
    return handler


class InferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, state, server: tuple[str, str], inference_keys: tuple[bytes, ...], admin_keys: tuple[bytes, ...],
                 protect_health: bool):
        self.state = state  # the FastAPI app's state: registry, dataplane, metrics, draining
        self.server_name, self.server_version = server
        self.inference_keys, self.admin_keys, self.protect_health = inference_keys, admin_keys, protect_health

    # --- keys and accounting ----------------------------------------------------------------------

    def authorize(self, method: str, context) -> None:
        if method.startswith("Repository"):
            keys = self.admin_keys
            if not keys:
                raise PermissionDenied("model control is off: the server has no admin key")
        elif method in ("ServerLive", "ServerReady"):
            keys = (self.inference_keys + self.admin_keys) if self.protect_health else ()
        else:
            keys = (self.inference_keys + self.admin_keys) if self.inference_keys else ()
        if not keys:
            return
        given = dict(context.invocation_metadata() or ()).get("authorization", "")
        scheme, _, key = given.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthenticated("this call needs 'authorization: Bearer <key>' metadata")
        if not matches(key.strip().encode("latin-1"), keys):
            raise PermissionDenied("the key is not valid for this call")

    def count(self, method: str, model: str, code: grpc.StatusCode) -> None:
        metrics = self.state.metrics
        if model and not self.state.registry.versions(model):
            model = "_unknown"
        metrics.child(metrics.grpc_requests, method, model, code.name).inc()

    # --- health and metadata ----------------------------------------------------------------------

    @rpc
    async def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    @rpc
    async def ServerReady(self, request, context):
        registry = self.state.registry
        ready = not registry.loading and any(e.ready for e in registry.entries.values())
        return service_pb2.ServerReadyResponse(ready=ready and not getattr(self.state, "draining", False))

    @rpc
    async def ModelReady(self, request, context):
        """A yes or no, for any name: REST answers 404 for an unknown model, gRPC's readiness is a boolean."""
        try:
            self.state.registry.get(request.name, request.version or None)
        except ServiceError:
            return service_pb2.ModelReadyResponse(ready=False)
        return service_pb2.ModelReadyResponse(ready=True)

    @rpc
    async def ServerMetadata(self, request, context):
        return service_pb2.ServerMetadataResponse(name=self.server_name, version=self.server_version, extensions=EXTENSIONS)

    @rpc
    async def ModelMetadata(self, request, context):
        registry = self.state.registry
        entry = registry.get(request.name, request.version or None)
        task = entry.task

        def tensors(declared):
            return [service_pb2.ModelMetadataResponse.TensorMetadata(name=t.name, datatype=t.datatype, shape=list(t.shape))
                    for t in declared]

        return service_pb2.ModelMetadataResponse(
            name=entry.name, versions=[e.version for e in registry.versions(entry.name)], platform=PLATFORM,
            inputs=tensors(task.tensor_inputs), outputs=tensors(task.tensor_outputs),
        )

    @rpc
    async def ModelConfig(self, request, context):
        entry = self.state.registry.get(request.name, request.version or None)
        return service_pb2.ModelConfigResponse(config=model_config(entry, entry.policy, entry.model.providers[0]))

    @rpc
    async def ModelStatistics(self, request, context):
        registry, dataplane = self.state.registry, self.state.dataplane
        if not request.name:
            entries = [e for e in registry.entries.values() if e.ready]
        elif not request.version:
            if not registry.versions(request.name):
                raise ModelNotFound(f"no model named {request.name!r}")
            entries = [e for e in registry.versions(request.name) if e.ready]
        else:
            entries = [registry.get(request.name, request.version)]
        return service_pb2.ModelStatisticsResponse(
            model_stats=[model_statistics(e, dataplane.statistics(e)) for e in entries])

    # --- inference --------------------------------------------------------------------------------

    @rpc
    async def ModelInfer(self, request, context):
        entry = self.state.registry.get(request.model_name, request.model_version or None)
        task = entry.task
        inputs = request_arrays(request, task.check_tensor_shape)
        check_tensors(task.tensor_inputs, inputs)
        outputs = await self.state.dataplane.infer_tensors(entry, inputs, parameters_of(request))
        return infer_response(entry.name, entry.version, request, outputs)

    # --- model repository (Triton's model control) ------------------------------------------------

    @rpc
    async def RepositoryIndex(self, request, context):
        models = [
            service_pb2.RepositoryIndexResponse.ModelIndex(
                name=e.name, version=e.version, state=REPOSITORY_STATES[e.state], reason=e.error or "")
            for e in self.state.registry.entries.values()
            if e.ready or not request.ready
        ]
        return service_pb2.RepositoryIndexResponse(models=models)

    @rpc
    async def RepositoryModelLoad(self, request, context):
        checked_name(request.model_name)
        await self.state.registry.load_model(request.model_name)
        return service_pb2.RepositoryModelLoadResponse()

    @rpc
    async def RepositoryModelUnload(self, request, context):
        checked_name(request.model_name)
        await self.state.registry.unload_model(request.model_name)
        return service_pb2.RepositoryModelUnloadResponse()


async def start_grpc(state, settings, server_info: tuple[str, str], keys: tuple[tuple[bytes, ...], tuple[bytes, ...]]) -> grpc.aio.Server:
    """The gRPC server on settings.grpc_port (0: a free port, written to state.grpc_port), on the event loop
    the HTTP server runs."""
    largest = int(settings.max_request_mb * 1024 * 1024)
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", largest),
        ("grpc.max_send_message_length", max(largest, 64 * 1024 * 1024)),
        ("grpc.so_reuseport", 1),  # worker processes share the port, as they share the HTTP one
    ])
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceService(state, server_info, *keys, protect_health=settings.protect_health), server)
    port = server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")
    if port == 0:
        raise RuntimeError(f"cannot listen for gRPC on {settings.host}:{settings.grpc_port}")
    await server.start()
    state.grpc_port = port
    log.info("gRPC (Open Inference Protocol) on %s:%d", settings.host, port)
    return server


async def stop_grpc(server: grpc.aio.Server, grace_s: float) -> None:
    started = time.monotonic()
    await server.stop(grace_s)
    log.info("gRPC stopped in %.2f s", time.monotonic() - started)
