"""Provider planning, fallback detection and input checks on a real ONNX Runtime session."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from service.errors import InvalidInput
from service.manifest import TensorSpec
from service.runtime import (
    CPU,
    CUDA,
    OnnxModel,
    ProviderPlan,
    ProviderUnavailable,
    plan_providers,
    preload_cuda_libraries,
    session_options,
)
from service.settings import Settings

INPUTS = [TensorSpec(name="x", dtype="float32", shape=["batch", 3])]


@pytest.fixture(scope="module")
def doubling_model(tmp_path_factory):
    """y = 2x with a dynamic batch axis."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])],
        "double",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    path = tmp_path_factory.mktemp("onnx") / "double.onnx"
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def two_output_model(tmp_path_factory):
    """doubled = x + x, squared = x * x: two outputs, so their order after a bound run is checked."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["doubled"]), helper.make_node("Mul", ["x", "x"], ["squared"])],
        "two",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [
            helper.make_tensor_value_info("doubled", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("squared", TensorProto.FLOAT, ["batch", 3]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    path = tmp_path_factory.mktemp("onnx") / "two.onnx"
    onnx.save(model, path)
    return path


def test_cpu_setting_uses_only_cpu():
    plan = plan_providers(Settings(providers="cpu"), available=[CUDA, CPU])
    assert plan.providers == [(CPU, {})]


def test_auto_prefers_cuda_with_its_options_when_offered():
    settings = Settings(providers="auto", cuda_device_id=1, cuda_mem_limit_mb=512, cudnn_conv_algo_search="EXHAUSTIVE")
    plan = plan_providers(settings, available=[CUDA, CPU])
    assert [name for name, _ in plan.providers] == [CUDA, CPU]
    options = plan.providers[0][1]
    assert options["device_id"] == "1"
    assert options["gpu_mem_limit"] == str(512 * 1024 * 1024)
    assert options["cudnn_conv_algo_search"] == "EXHAUSTIVE"


def test_auto_without_cuda_says_why():
    plan = plan_providers(Settings(providers="auto"), available=[CPU])
    assert plan.providers == [(CPU, {})]
    assert "offers no CUDAExecutionProvider" in plan.note and "using CPU" in plan.note


def test_cuda_without_cuda_fails_clearly():
    with pytest.raises(ProviderUnavailable, match="onnxruntime-gpu"):
        plan_providers(Settings(providers="cuda"), available=[CPU])


def test_session_gets_the_requested_options(doubling_model):
    settings = Settings(inter_op_threads=1)
    options = session_options(settings, 1)
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    model = OnnxModel(doubling_model, INPUTS, ProviderPlan([(CPU, {})], "CPU requested"), options)
    assert model.providers == [CPU] and not model.fell_back
    assert CPU in model.provider_options()


@pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="this onnxruntime has CUDA")
def test_cuda_session_that_falls_back_is_detected(doubling_model):
    """Asking a CPU-only onnxruntime for CUDA silently gives CPU: we must notice and say so."""
    plan = ProviderPlan([(CUDA, {"device_id": "0"}), (CPU, {})], "CUDA available")
    preload_cuda_libraries.cache_clear()
    model = OnnxModel(doubling_model, INPUTS, plan, session_options(Settings(), 1))
    assert model.providers == [CPU]
    assert model.fell_back and "fell back" in model.note
    assert preload_cuda_libraries.cache_info().currsize == 1, "a CUDA plan preloads the CUDA libraries first"
    assert not model.binds_io, "a session that fell back to CPU runs without IO binding"


def test_cpu_session_neither_preloads_cuda_nor_binds_io(doubling_model):
    preload_cuda_libraries.cache_clear()
    model = OnnxModel(doubling_model, INPUTS, ProviderPlan([(CPU, {})], ""), session_options(Settings(), 1))
    assert preload_cuda_libraries.cache_info().currsize == 0
    assert not model.binds_io


def test_bound_run_gives_the_plain_run_outputs_in_order(two_output_model):
    """The IO-binding path (taken on CUDA) exercised on CPU, where binding works the same way."""
    model = OnnxModel(two_output_model, INPUTS, ProviderPlan([(CPU, {})], ""), session_options(Settings(), 1))
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    doubled, squared = model.run_bound({"x": x})
    np.testing.assert_array_equal(doubled, 2 * x)
    np.testing.assert_array_equal(squared, x * x)
    strided = np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2]  # not contiguous, as a batch slice may be
    for bound, plain in zip(model.run_bound({"x": strided}), model.run({"x": strided})):
        np.testing.assert_array_equal(bound, plain)


def test_run_and_input_checks(doubling_model):
    model = OnnxModel(doubling_model, INPUTS, ProviderPlan([(CPU, {})], ""), session_options(Settings(), 1))
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(model.run({"x": x})[0], 2 * x)
    with pytest.raises(InvalidInput, match="dtype"):
        model.run({"x": x.astype(np.float64)})
    with pytest.raises(InvalidInput, match="axis 1"):
        model.run({"x": np.zeros((2, 4), np.float32)})
    with pytest.raises(InvalidInput, match="do not match"):
        model.run({"z": x})
    with pytest.raises(InvalidInput, match="empty"):
        model.run({"x": np.zeros((0, 3), np.float32)})
