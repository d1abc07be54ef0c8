"""Open Inference Protocol tensors over gRPC: ModelInferRequest <-> numpy, with the published messages
(KServe V2 / Triton `inference` package, as compiled in tritonclient). The binary layout and the shape
checks are the REST protocol's (service/protocol/v2.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2

from service.errors import BadRequest
from service.protocol.v2 import (
    DATATYPES,
    ShapeCheck,
    binary_of,
    datatype_of,
    element_count,
    from_binary,
    is_protocol_parameter,
    shaped,
)

# The typed `contents` field that carries each datatype (FP16 travels only as raw bytes).
CONTENTS = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


def parameter_value(parameter: service_pb2.InferParameter) -> Any:
    choice = parameter.WhichOneof("parameter_choice")
    return None if choice is None else getattr(parameter, choice)


def parameters_of(request: service_pb2.ModelInferRequest) -> dict[str, Any]:
    """The request's parameters for the model (the protocol's own, such as priority, left out)."""
    return {k: parameter_value(v) for k, v in request.parameters.items() if not is_protocol_parameter(k)}


def request_arrays(request: service_pb2.ModelInferRequest, check_shape: ShapeCheck) -> dict[str, np.ndarray]:
    """The inputs, from raw_input_contents (one blob per input, in order) or from each input's contents."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    if not request.inputs:
        raise BadRequest("the request has no inputs")
    arrays: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        name, datatype, shape = tensor.name, tensor.datatype, list(tensor.shape)
        if name in arrays:
            raise BadRequest(f"input {name} is given twice")
        count = element_count(name, datatype, shape, check_shape)
        if raw:
            arrays[name] = from_binary(name, datatype, shape, raw[index], count)
            continue
        field = CONTENTS.get(datatype)
        if field is None:
            raise BadRequest(f"input {name}: {datatype} travels only in raw_input_contents")
        values = getattr(tensor.contents, field)
        if len(values) > count:
            raise BadRequest(f"input {name}: {len(values)} elements for shape {shape} ({count} expected)")
        if datatype == "BYTES":
            array = np.empty(len(values), dtype=object)
            array[:] = list(values)
        else:
            try:
                array = np.asarray(values, dtype=DATATYPES[datatype])
            except (OverflowError, ValueError) as exc:
                raise BadRequest(f"input {name}: {exc}") from None
        arrays[name] = shaped(name, array, shape, count)
    return arrays


def infer_response(
    model: str, version: str, request: service_pb2.ModelInferRequest, outputs: dict[str, np.ndarray]
) -> service_pb2.ModelInferResponse:
    """The outputs asked for (all when none is named), as raw_output_contents, as Triton answers."""
    wanted = [o.name for o in request.outputs] or list(outputs)
    response = service_pb2.ModelInferResponse(model_name=model, model_version=version, id=request.id)
    for name in wanted:
        if name not in outputs:
            raise BadRequest(f"model {model} has no output {name!r}; it has {', '.join(outputs)}")
        array = outputs[name]
        response.outputs.add(name=name, datatype=datatype_of(array), shape=list(array.shape))
        response.raw_output_contents.append(binary_of(array))
    return response
