"""Triton's model configuration and statistics extensions, as the protobuf messages Triton's clients and
perf_analyzer read (the published definitions, compiled in tritonclient), and their JSON form for REST.

The configuration describes a model as the V2 view serves it: every tensor with its full shape, the batch
included (-1), so `max_batch_size` is 0 in Triton's sense; the service's own dynamic batching is reported
in `dynamic_batching` and `parameters`.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from tritonclient.grpc import model_config_pb2, service_pb2

PLATFORM = "onnxruntime_onnx"
CONFIG_TYPES = {
    "BOOL": "TYPE_BOOL", "UINT8": "TYPE_UINT8", "UINT16": "TYPE_UINT16", "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64", "INT8": "TYPE_INT8", "INT16": "TYPE_INT16", "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64", "FP16": "TYPE_FP16", "FP32": "TYPE_FP32", "FP64": "TYPE_FP64", "BYTES": "TYPE_STRING",
}
NS = 1_000_000_000
SIXTY_FOUR_BITS = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
                   FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64}


def model_config(entry, policy, provider: str) -> model_config_pb2.ModelConfig:
    task = entry.task

    def tensor(declared, kind):
        return kind(name=declared.name, data_type=model_config_pb2.DataType.Value(CONFIG_TYPES[declared.datatype]),
                    dims=list(declared.shape))

    kind = model_config_pb2.ModelInstanceGroup.Kind.Value("KIND_GPU" if provider == "CUDAExecutionProvider" else "KIND_CPU")
    return model_config_pb2.ModelConfig(
        name=entry.name,
        platform=PLATFORM,
        backend="onnxruntime",
        max_batch_size=0,
        input=[tensor(t, model_config_pb2.ModelInput) for t in task.tensor_inputs],
        output=[tensor(t, model_config_pb2.ModelOutput) for t in task.tensor_outputs],
        dynamic_batching=model_config_pb2.ModelDynamicBatching(
            max_queue_delay_microseconds=int(policy.max_queue_delay_ms * 1000)),
        instance_group=[model_config_pb2.ModelInstanceGroup(name=entry.name, kind=kind, count=1)],
        default_model_filename=entry.manifest.variant(entry.variant or "fp32")[0],
        parameters={
            "max_batch_size": model_config_pb2.ModelParameter(string_value=str(policy.max_batch_size)),
            "variant": model_config_pb2.ModelParameter(string_value=entry.variant or "fp32"),
            "task": model_config_pb2.ModelParameter(string_value=entry.manifest.task),
        },
    )


def _duration(count: int, seconds: float) -> service_pb2.StatisticDuration:
    return service_pb2.StatisticDuration(count=count, ns=int(seconds * NS))


def model_statistics(entry, stats) -> service_pb2.ModelStatistics:
    """What the dataplane counted for one model version, in Triton's terms (times added up per request)."""
    answered = stats.succeeded
    return service_pb2.ModelStatistics(
        name=entry.name,
        version=entry.version,
        last_inference=int(stats.last_inference * 1000),
        inference_count=stats.rows,
        execution_count=stats.batches,
        inference_stats=service_pb2.InferStatistics(
            success=_duration(answered, stats.success_s),
            fail=_duration(stats.errors, stats.failure_s),
            queue=_duration(answered, stats.request_queue_s),
            compute_input=_duration(answered, stats.decode_s),
            compute_infer=_duration(answered, stats.request_compute_s),
            compute_output=_duration(answered, stats.encode_s),
        ),
        batch_stats=[
            service_pb2.InferBatchStatistics(
                batch_size=size, compute_infer=_duration(count, stats.batch_compute_s[size]))
            for size, count in sorted(stats.batch_sizes.items())
        ],
    )


def proto_json(message) -> dict[str, Any]:
    """The JSON Triton's HTTP endpoints answer for a message: field names as in the .proto, and 64-bit
    integers as numbers (protobuf's own JSON writes them as strings, which Triton's clients do not read)."""
    data = json_format.MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    return _numbers(message.DESCRIPTOR, data)


def _numbers(descriptor, data: dict) -> dict:
    for name, value in data.items():
        field = descriptor.fields_by_name.get(name)
        if field is None:
            continue
        if field.type in SIXTY_FOUR_BITS:
            data[name] = [int(v) for v in value] if isinstance(value, list) else int(value)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                value_field = field.message_type.fields_by_name["value"]
                if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    for key in value:
                        value[key] = _numbers(value_field.message_type, value[key])
            elif isinstance(value, list):
                data[name] = [_numbers(field.message_type, v) for v in value]
            else:
                data[name] = _numbers(field.message_type, value)
    return data
