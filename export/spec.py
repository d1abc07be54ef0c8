"""Declarative export configuration per model, and the validation that fails hard.

Validation checks, in order, output names, symbolic axes, shapes and then values (allclose) on a
grid of batch sizes and sequence lengths, collecting every failure before raising.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch

from service.manifest import ParityReport, TensorSpec

SampleFactory = Callable[[int, int], dict[str, np.ndarray]]


class ExportValidationError(RuntimeError):
    """The exported graph does not match its spec or its PyTorch source."""

    def __init__(self, name: str, failures: Sequence[str]):
        self.failures = list(failures)
        super().__init__(f"{name}: export validation failed:\n  - " + "\n  - ".join(self.failures))


@dataclass(frozen=True)
class ExportSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    make_inputs: SampleFactory  # (batch, sequence) -> named numpy inputs
    opset: int = 18
    atol: float = 1e-4
    batch_sizes: tuple[int, ...] = (1, 3, 8)
    sequence_lengths: tuple[int, ...] = (0,)  # 0 = the model has no sequence axis
    classifier: bool = False  # argmax of the first output must agree too

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        axes: dict[str, dict[int, str]] = {}
        for tensor in (*self.inputs, *self.outputs):
            named = {i: d for i, d in enumerate(tensor.shape) if isinstance(d, str)}
            if named:
                axes[tensor.name] = named
        return axes


def export_to_onnx(module: torch.nn.Module, spec: ExportSpec, path: Path) -> None:
    """Export with the TorchScript exporter (symbolic dynamic axes), check, then validate."""
    module = module.eval()
    example = spec.make_inputs(2, max(spec.sequence_lengths))
    args = tuple(torch.from_numpy(example[name]) for name in spec.input_names)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=spec.input_names,
            output_names=spec.output_names,
            dynamic_axes=spec.dynamic_axes(),
            opset_version=spec.opset,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(str(path), full_check=True)
    validate_export(module, spec, path)


def _graph_shape(value_info: onnx.ValueInfoProto) -> list[int | str]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_param if d.dim_param else d.dim_value for d in dims]


def validate_export(module: torch.nn.Module, spec: ExportSpec, path: Path) -> None:
    failures: list[str] = []
    graph = onnx.load(str(path)).graph

    graph_outputs = [o.name for o in graph.output]
    if graph_outputs != spec.output_names:
        failures.append(f"output names {graph_outputs} != {spec.output_names}")
    graph_inputs = [i.name for i in graph.input]
    if graph_inputs != spec.input_names:
        failures.append(f"input names {graph_inputs} != {spec.input_names}")

    declared = {t.name: t for t in (*spec.inputs, *spec.outputs)}
    for info in (*graph.input, *graph.output):
        if info.name in declared:
            actual = _graph_shape(info)
            expected = declared[info.name].shape
            if actual != expected:
                failures.append(f"{info.name}: graph axes {actual} != declared {expected}")

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in spec.batch_sizes:
        for seq in spec.sequence_lengths:
            where = f"batch={batch}" + (f" sequence={seq}" if seq else "")
            feeds = spec.make_inputs(batch, seq)
            with torch.no_grad():
                reference = module(*(torch.from_numpy(feeds[n]) for n in spec.input_names))
            if isinstance(reference, torch.Tensor):
                reference = (reference,)
            reference = [r.numpy() for r in reference]
            got = session.run(None, feeds)  # by position: a misnamed output is reported above
            for out, want, have in zip(spec.outputs, reference, got):
                if have.shape != want.shape:
                    failures.append(f"{where} {out.name}: shape {have.shape} != torch {want.shape}")
                    continue
                if not np.allclose(have, want, atol=spec.atol, rtol=0):
                    diff = float(np.max(np.abs(have - want)))
                    failures.append(f"{where} {out.name}: max |onnx - torch| = {diff:.2e} > {spec.atol:.0e}")
    if failures:
        raise ExportValidationError(spec.name, failures)


def parity_report(spec: ExportSpec, torch_out: np.ndarray, onnx_out: np.ndarray) -> ParityReport:
    """Compare PyTorch and ONNX Runtime on the held-out inputs; raise when parity fails."""
    max_diff = float(np.max(np.abs(torch_out - onnx_out))) if torch_out.size else 0.0
    agreement = None
    failures = []
    if max_diff > spec.atol:
        failures.append(f"held-out max |onnx - torch| = {max_diff:.2e} > {spec.atol:.0e}")
    if spec.classifier:
        agreement = float(np.mean(torch_out.argmax(-1) == onnx_out.argmax(-1)))
        if agreement < 1.0:
            failures.append(f"held-out argmax agreement {agreement:.4%} < 100%")
    if failures:
        raise ExportValidationError(spec.name, failures)
    return ParityReport(
        runtime=f"onnxruntime {ort.__version__} CPUExecutionProvider",
        n=int(torch_out.shape[0]),
        max_abs_diff=max_diff,
        tolerance=spec.atol,
        argmax_agreement=agreement,
    )
