"""The Open Inference Protocol (KServe V2 / Triton HTTP/REST): parse, call the dataplane, return.

Errors here take the protocol's shape, {"error": "message"}, with 400 for a bad request, 404 for an
unknown model and 503 for one that is not ready: the routes raise ServiceErrors and V2Route renders them.
"""

from __future__ import annotations

import json
import re
from typing import Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from service.errors import BadRequest, ModelNotFound, ServiceError, log, log_server_error
from service.protocol.v2 import (
    HEADER_LENGTH,
    InferenceRequest,
    TensorMetadata,
    check_tensors,
    encode_response,
    model_parameters,
    parse_request,
    protocol_status,
)
from service.protocol.triton import PLATFORM, model_config, model_statistics, proto_json
from service.registry import ModelEntry



class V2Error(BaseModel):
    error: str


def v2_error(exc: ServiceError, method: str = "", path: str = "/v2") -> JSONResponse:
    status = protocol_status(exc.status)
    message = exc.message
    if status == 500:
        message += f" (error id {log_server_error(log, method, path, status, exc.message)})"
    return JSONResponse({"error": message}, status_code=status, headers=exc.headers or None)


class V2Route(APIRoute):
    """Every ServiceError a V2 route raises leaves in the protocol's error shape."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except ServiceError as exc:
                return v2_error(exc, request.method, request.url.path)

        return answer


router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"], route_class=V2Route)


def v2_errors(*statuses: int) -> dict:
    """The schema of the protocol's errors, for the statuses a route answers."""
    descriptions = {
        400: "bad request: malformed JSON or binary framing, or tensors that do not fit the model",
        404: "unknown model or version",
        413: "request body too large",
        500: "internal error (error id in the message and the log)",
        503: "the model is not ready, or its queue is full (Retry-After)",
        504: "no answer within the request deadline",
    }
    return {status: {"model": V2Error, "description": descriptions[status]} for status in statuses}


def _metadata(entry: ModelEntry, versions: list[str]) -> dict:
    task = entry.task
    return {
        "name": entry.name,
        "versions": versions,
        "platform": PLATFORM,
        "inputs": [TensorMetadata(name=t.name, datatype=t.datatype, shape=list(t.shape)).model_dump() for t in task.tensor_inputs],
        "outputs": [TensorMetadata(name=t.name, datatype=t.datatype, shape=list(t.shape)).model_dump() for t in task.tensor_outputs],
    }


EXTENSIONS = ["binary_tensor_data", "model_repository", "model_configuration", "statistics"]


@router.get("")
async def server_metadata(request: Request):
    return {"name": request.app.title, "version": request.app.version, "extensions": EXTENSIONS}


@router.get("/health/live", response_class=Response, responses={200: {"description": "live (no body)"}})
async def server_live():
    return Response(status_code=200)


@router.get(
    "/health/ready",
    response_class=Response,
    responses={200: {"description": "ready (no body)"}, 503: {"description": "loading, nothing ready, or draining (no body)"}},
)
async def server_ready(request: Request):
    registry = request.app.state.registry
    draining = getattr(request.app.state, "draining", False)
    ready = not registry.loading and any(e.ready for e in registry.entries.values()) and not draining
    return Response(status_code=200 if ready else 503)


@router.get("/models/{name}/config", responses=v2_errors(404, 503))
@router.get("/models/{name}/versions/{version}/config", responses=v2_errors(404, 503))
async def model_configuration(request: Request, name: str, version: str | None = None):
    """Triton's model configuration extension: the model as its V2 view serves it (what perf_analyzer and
    Triton's clients read)."""
    entry = request.app.state.registry.get(name, version)
    return proto_json(model_config(entry, entry.policy, entry.model.providers[0]))


@router.get("/models/stats", responses=v2_errors(404))
@router.get("/models/{name}/stats", responses=v2_errors(404))
@router.get("/models/{name}/versions/{version}/stats", responses=v2_errors(404))
async def model_statistics_of(request: Request, name: str | None = None, version: str | None = None):
    """Triton's statistics extension: per model version, requests answered and failed, and the time spent
    queueing, decoding (compute_input), running (compute_infer) and encoding (compute_output)."""
    registry, dataplane = request.app.state.registry, request.app.state.dataplane
    if name is None:
        entries = [e for e in registry.entries.values() if e.ready]
    elif version is None:
        entries = [e for e in registry.versions(name) if e.ready]
        if not registry.versions(name):
            raise ModelNotFound(f"no model named {name!r}")
    else:
        entries = [registry.get(name, version)]
    return {"model_stats": [proto_json(model_statistics(e, dataplane.statistics(e))) for e in entries]}


@router.get("/models/{name}", responses=v2_errors(404, 503))
@router.get("/models/{name}/versions/{version}", responses=v2_errors(404, 503))
async def model_metadata(request: Request, name: str, version: str | None = None):
    registry = request.app.state.registry
    entry = registry.get(name, version)
    return _metadata(entry, [e.version for e in registry.versions(name)])


MODEL_READY = {200: {"description": "ready (no body)"}, **v2_errors(404, 503)}


@router.get("/models/{name}/ready", response_class=Response, responses=MODEL_READY)
@router.get("/models/{name}/versions/{version}/ready", response_class=Response, responses=MODEL_READY)
async def model_ready(request: Request, name: str, version: str | None = None):
    request.app.state.registry.get(name, version)
    return Response(status_code=200)


def inlined_schema(model: type[BaseModel]) -> dict:
    """A model's JSON schema with its $defs inlined: openapi_extra is not resolved against the components."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node):
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {key: resolve(value) for key, value in node.items()}
        return [resolve(item) for item in node] if isinstance(node, list) else node

    return resolve(schema)


# The body is read raw (JSON, or JSON then binary tensors), so its schema is declared here for clients.
INFER_BODY = {
    "requestBody": {
        "required": True,
        "description": f"JSON; or the JSON request then binary tensor data, {HEADER_LENGTH} giving the JSON's length",
        "content": {
            "application/json": {"schema": inlined_schema(InferenceRequest)},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
INFER_RESPONSES = {
    200: {"description": "the outputs as JSON, or JSON then binary tensor data (Inference-Header-Content-Length)"},
    **v2_errors(400, 404, 413, 500, 503, 504),
}


@router.post("/models/{name}/infer", responses=INFER_RESPONSES, openapi_extra=INFER_BODY)
@router.post("/models/{name}/versions/{version}/infer", responses=INFER_RESPONSES, openapi_extra=INFER_BODY)
async def infer(request: Request, name: str, version: str | None = None):
    body = await request.body()
    entry = request.app.state.registry.get(name, version)
    task = entry.task
    parsed, inputs = parse_request(body, request.headers.get(HEADER_LENGTH), task.check_tensor_shape)
    check_tensors(task.tensor_inputs, inputs)
    outputs = await request.app.state.dataplane.infer_tensors(entry, inputs, model_parameters(parsed))
    content, headers = encode_response(entry.name, entry.version, parsed, outputs)
    return Response(content=content, headers=headers, media_type=headers["content-type"])


# --- Model repository extension (Triton's model control): behind the admin key (service/auth.py) --------

REPOSITORY_STATES = {"ready": "READY", "loading": "LOADING", "failed": "UNAVAILABLE", "unloaded": "UNAVAILABLE"}
MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")


@router.post("/repository/index")
async def repository_index(request: Request):
    """Every model version the server knows, with its state (READY, LOADING or UNAVAILABLE and why)."""
    body = await request.body()
    try:
        ready_only = bool(json.loads(body).get("ready", False)) if body.strip() else False
    except (ValueError, AttributeError, RecursionError):  # RecursionError: nesting past Python's limit
        raise BadRequest("the index request must be a JSON object such as {\"ready\": true}") from None
    entries = request.app.state.registry.entries.values()
    return [
        {"name": e.name, "version": e.version, "state": REPOSITORY_STATES[e.state], "reason": e.error or ""}
        for e in entries
        if e.ready or not ready_only
    ]


@router.post("/repository/models/{name}/load")
async def repository_load(request: Request, name: str):
    """Load, or reload, a model from the repository (ModelRegistry.load_model); if any version fails,
    nothing changes and the answer says why."""
    checked_name(name)
    await request.app.state.registry.load_model(name)
    return Response(status_code=200)


@router.post("/repository/models/{name}/unload")
async def repository_unload(request: Request, name: str):
    """Stop serving a model; queued requests finish first, new ones get 503 until it is loaded again."""
    checked_name(name)
    await request.app.state.registry.unload_model(name)
    return Response(status_code=200)


def checked_name(name: str) -> None:
    """A model name is one path component of the repository, never a way out of it."""
    if not MODEL_NAME.fullmatch(name) or ".." in name:
        raise BadRequest(f"{name!r} is not a valid model name")
