"""The Open Inference Protocol (KServe V2 / Triton HTTP/REST): parse, call the dataplane, return.

Errors here take the protocol's shape, {"error": "message"}, with 400 for a bad request, 404 for an
unknown model and 503 for one that is not ready.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from service.errors import ServiceError
from service.protocol.v2 import HEADER_LENGTH, TensorMetadata, encode_response, model_parameters, parse_request
from service.registry import ModelEntry

router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])
PLATFORM = "onnxruntime_onnx"


def v2_error(exc: ServiceError) -> JSONResponse:
    status = 400 if exc.status in (415, 422) else exc.status
    return JSONResponse({"error": exc.message}, status_code=status, headers=exc.headers or None)


def _metadata(entry: ModelEntry, versions: list[str]) -> dict:
    task = entry.task
    return {
        "name": entry.name,
        "versions": versions,
        "platform": PLATFORM,
        "inputs": [TensorMetadata(name=t.name, datatype=t.datatype, shape=list(t.shape)).model_dump() for t in task.tensor_inputs],
        "outputs": [TensorMetadata(name=t.name, datatype=t.datatype, shape=list(t.shape)).model_dump() for t in task.tensor_outputs],
    }


@router.get("")
async def server_metadata(request: Request):
    return {"name": request.app.title, "version": request.app.version, "extensions": ["binary_tensor_data"]}


@router.get("/health/live")
async def server_live():
    return Response(status_code=200)


@router.get("/health/ready")
async def server_ready(request: Request):
    registry = request.app.state.registry
    ready = not registry.loading and any(e.ready for e in registry.entries.values())
    return Response(status_code=200 if ready else 503)


@router.get("/models/{name}")
@router.get("/models/{name}/versions/{version}")
async def model_metadata(request: Request, name: str, version: str | None = None):
    registry = request.app.state.registry
    try:
        entry = registry.get(name, version)
    except ServiceError as exc:
        return v2_error(exc)
    return _metadata(entry, [e.version for e in registry.versions(name)])


@router.get("/models/{name}/ready")
@router.get("/models/{name}/versions/{version}/ready")
async def model_ready(request: Request, name: str, version: str | None = None):
    try:
        request.app.state.registry.get(name, version)
    except ServiceError as exc:
        return v2_error(exc)
    return Response(status_code=200)


@router.post("/models/{name}/infer")
@router.post("/models/{name}/versions/{version}/infer")
async def infer(request: Request, name: str, version: str | None = None):
    try:
        body = await request.body()
        parsed, inputs = parse_request(body, request.headers.get(HEADER_LENGTH))
        entry, outputs = await request.app.state.dataplane.infer_tensors(name, version, inputs, model_parameters(parsed))
        content, headers = encode_response(entry.name, entry.version, parsed, outputs)
    except ServiceError as exc:
        return v2_error(exc)
    return Response(content=content, headers=headers, media_type=headers["content-type"])
