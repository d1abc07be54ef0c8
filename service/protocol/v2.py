"""Open Inference Protocol (KServe V2 / Triton HTTP) tensors: JSON and the binary data extension <-> numpy.

Only the wire format lives here; what a tensor means for a model is the task's business.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any, Callable, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.errors import BadRequest, InferenceFailed, InvalidInput, ServiceError

HEADER_LENGTH = "Inference-Header-Content-Length"
# Request parameters that belong to the protocol or to Triton, not to a model: these, and Triton's reserved
# prefix (perf_analyzer's gRPC requests carry triton_enable_empty_final_response).
PROTOCOL_PARAMETERS = {"binary_data_output", "priority", "timeout", "sequence_id", "sequence_start", "sequence_end",
                       "headers"}
RESERVED_PREFIX = "triton_"


def is_protocol_parameter(name: str) -> bool:
    return name in PROTOCOL_PARAMETERS or name.startswith(RESERVED_PREFIX)
DATATYPES: dict[str, Any] = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_,
}


# The model's say on an input's declared shape (Task.check_tensor_shape): raises to refuse it.
ShapeCheck = Callable[[str, list[int]], None]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]  # -1 for a dynamic dimension


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: Optional[Any] = None


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Optional[str] = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: Optional[list[RequestOutput]] = None


def _flatten(data: Any, most: int, name: str) -> list:
    """Nested JSON lists as one flat list, refused as soon as it holds more than `most` elements."""
    flat: list = []
    stack = [iter(data)] if isinstance(data, list) else None
    if stack is None:
        return [data]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
            if len(flat) > most:
                raise BadRequest(f"input {name}: the data holds more elements than its shape's {most:,}")
        else:
            stack.pop()
    return flat


def _bytes_elements(raw: bytes, name: str, count: int) -> list[bytes]:
    """The binary form of BYTES: each element is a 4-byte little-endian length and that many bytes;
    refused as soon as there are more than the shape's `count`."""
    elements, offset = [], 0
    while offset < len(raw):
        if len(elements) == count:
            raise BadRequest(f"input {name}: the binary data holds more BYTES elements than its shape's {count:,}")
        if offset + 4 > len(raw):
            raise BadRequest(f"input {name}: truncated BYTES element length")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise BadRequest(f"input {name}: BYTES element of {length} bytes runs past the data")
        elements.append(raw[offset : offset + length])
        offset += length
    return elements


def element_count(name: str, datatype: str, shape: list[int], check_shape: ShapeCheck) -> int:
    """The elements a declared tensor holds; 400 for an unknown datatype or a shape that cannot be, and
    whatever the model's `check_shape` refuses, all before any element is read."""
    if datatype not in DATATYPES:
        raise BadRequest(f"input {name}: unknown datatype {datatype!r}; one of {', '.join(DATATYPES)}")
    if any(d < 0 for d in shape):
        raise BadRequest(f"input {name}: shape {list(shape)} has a negative dimension")
    count = math.prod(shape)  # Python integers: a product past 2**63 must not wrap to a small one
    if count > 50_000_000:
        raise BadRequest(f"input {name}: shape {list(shape)} is too large")
    check_shape(name, list(shape))
    return count


def from_binary(name: str, datatype: str, shape: list[int], blob: bytes, count: int) -> np.ndarray:
    """A tensor's binary form (little-endian values; BYTES as length-prefixed elements) as an array."""
    dtype = DATATYPES[datatype]
    if datatype == "BYTES":
        values = _bytes_elements(blob, name, count)
        array = np.empty(len(values), dtype=object)
        array[:] = values
    else:
        if len(blob) != count * np.dtype(dtype).itemsize:
            raise BadRequest(f"input {name}: {len(blob)} bytes of binary data for shape {list(shape)} {datatype}")
        array = np.frombuffer(blob, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
    return shaped(name, array, shape, count)


def shaped(name: str, array: np.ndarray, shape: list[int], count: int) -> np.ndarray:
    if array.size != count:
        raise BadRequest(f"input {name}: {array.size} elements for shape {list(shape)} ({count} expected)")
    return array.reshape(shape)


def to_array(tensor: RequestInput, binary: bytes | None, check_shape: ShapeCheck = lambda name, shape: None) -> np.ndarray:
    """One input tensor as a numpy array of its declared shape; 400 when data and shape disagree, or when
    `check_shape` (the model's) refuses the shape, which is asked before any element is read."""
    count = element_count(tensor.name, tensor.datatype, tensor.shape, check_shape)
    if binary is not None:
        return from_binary(tensor.name, tensor.datatype, tensor.shape, binary, count)
    if tensor.data is None:
        raise BadRequest(f"input {tensor.name}: no data (neither JSON data nor binary_data_size)")
    flat = _flatten(tensor.data, count, tensor.name)
    dtype = DATATYPES[tensor.datatype]
    if tensor.datatype == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            raise BadRequest(f"input {tensor.name}: BYTES data must be strings in JSON")
        array = np.empty(len(flat), dtype=object)
        array[:] = [v.encode("utf-8", "surrogatepass") for v in flat]
    else:
        kind = bool if tensor.datatype == "BOOL" else (int if tensor.datatype.startswith(("INT", "UINT")) else float)
        if not all(isinstance(v, (int, float, bool)) and (kind is not bool or isinstance(v, bool)) for v in flat):
            raise BadRequest(f"input {tensor.name}: {tensor.datatype} data must be {kind.__name__} values")
        if kind is int and not all(float(v).is_integer() for v in flat):
            raise BadRequest(f"input {tensor.name}: {tensor.datatype} data must be integers")
        try:
            array = np.asarray(flat, dtype=dtype)
        except (OverflowError, ValueError) as exc:
            raise BadRequest(f"input {tensor.name}: {exc}") from None
    return shaped(tensor.name, array, tensor.shape, count)


def parse_request(
    body: bytes, header_length: str | None, check_shape: ShapeCheck = lambda name, shape: None
) -> tuple[InferenceRequest, dict[str, np.ndarray]]:
    """A JSON request, or JSON followed by binary tensor data (Inference-Header-Content-Length);
    `check_shape(input name, shape)` may refuse each input before its data is read."""
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            raise BadRequest(f"{HEADER_LENGTH} must be an integer, not {header_length!r}") from None
        if not 0 < length <= len(body):
            raise BadRequest(f"{HEADER_LENGTH} {length} does not fit a body of {len(body)} bytes")
        head, rest = body[:length], body[length:]
    else:
        head, rest = body, b""
    try:
        request = InferenceRequest.model_validate_json(head)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:5])
        raise BadRequest(f"not a valid inference request: {problems}") from None
    arrays, offset = {}, 0
    for tensor in request.inputs:
        if tensor.name in arrays:
            raise BadRequest(f"input {tensor.name} is given twice")
        size = tensor.parameters.get("binary_data_size")
        binary = None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(rest):
                raise BadRequest(f"input {tensor.name}: binary_data_size {size!r} does not fit the binary data")
            binary, offset = rest[offset : offset + size], offset + size
        arrays[tensor.name] = to_array(tensor, binary, check_shape)
    if offset != len(rest):
        raise BadRequest(f"{len(rest) - offset} bytes of binary data belong to no input")
    return request, arrays


def model_parameters(request: InferenceRequest) -> dict[str, Any]:
    return {k: v for k, v in request.parameters.items() if not is_protocol_parameter(k)}


def datatype_of(array: np.ndarray) -> str:
    if array.dtype == object:
        return "BYTES"
    for name, dtype in DATATYPES.items():
        if name != "BYTES" and array.dtype == np.dtype(dtype):
            return name
    raise TypeError(f"no V2 datatype for {array.dtype}")


def binary_of(array: np.ndarray) -> bytes:
    if array.dtype == object:
        return b"".join(struct.pack("<I", len(v)) + v for v in array.reshape(-1))
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _not_in_json(name: str, array: np.ndarray) -> ServiceError:
    """JSON has no infinity or NaN: an output that holds one cannot be answered as JSON."""
    if np.isnan(array).any():
        return InferenceFailed(f"output {name} holds NaN")
    return BadRequest(
        f"output {name} holds values beyond the range of {datatype_of(array)}, which JSON cannot carry: "
        "scale the input down, or ask for the output in binary (binary_data)"
    )


def encode_response(
    model: str, version: str, request: InferenceRequest, outputs: dict[str, np.ndarray]
) -> tuple[bytes, dict[str, str]]:
    """(body, headers): JSON, or JSON then binary data for the outputs asked for in binary."""
    wanted = request.outputs if request.outputs else [RequestOutput(name=name) for name in outputs]
    default_binary = bool(request.parameters.get("binary_data_output", False))
    described, blobs = [], []
    for output in wanted:
        if output.name not in outputs:
            raise BadRequest(f"model {model} has no output {output.name!r}; it has {', '.join(outputs)}")
        array = outputs[output.name]
        entry: dict[str, Any] = {"name": output.name, "datatype": datatype_of(array), "shape": list(array.shape)}
        if output.parameters.get("binary_data", default_binary):
            blob = binary_of(array)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif array.dtype == object:
            entry["data"] = [v.decode("utf-8", "replace") for v in array.reshape(-1)]
        else:
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                raise _not_in_json(output.name, array)
            entry["data"] = array.reshape(-1).tolist()
        described.append(entry)
    head = {"model_name": model, "model_version": version, "outputs": described}
    if request.id is not None:
        head["id"] = request.id
    header = json.dumps(head, separators=(",", ":")).encode()
    if not blobs:
        return header, {"content-type": "application/json"}
    return header + b"".join(blobs), {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(header))}


def check_tensors(declared_inputs, inputs: dict[str, np.ndarray]) -> None:
    """Names, datatypes and shapes against a model's declared V2 inputs (-1 matches any size)."""
    declared = {t.name: t for t in declared_inputs}
    if set(inputs) != set(declared):
        raise InvalidInput(f"inputs {sorted(inputs)} do not match the model's {sorted(declared)}")
    for name, array in inputs.items():
        spec = declared[name]
        if array.dtype != np.dtype(DATATYPES[spec.datatype]):
            raise InvalidInput(f"input {name}: datatype must be {spec.datatype}")
        if array.ndim != len(spec.shape) or any(d != -1 and d != s for d, s in zip(spec.shape, array.shape)):
            raise InvalidInput(f"input {name}: shape {list(array.shape)} does not match {list(spec.shape)}")


def protocol_status(status: int) -> int:
    """The protocol has no 415 or 422: whatever the client sent wrong is its 400."""
    return 400 if status in (415, 422) else status
