"""Export validation fails hard and reports every failure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from export.spec import ExportSpec, ExportValidationError, export_to_onnx, parity_report, validate_export
from service.manifest import TensorSpec


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.linear(x)


def make_spec(output_name: str = "logits", input_shape=("batch", 4)) -> ExportSpec:
    rng = np.random.default_rng(0)
    return ExportSpec(
        name="tiny",
        inputs=(TensorSpec(name="x", dtype="float32", shape=list(input_shape)),),
        outputs=(TensorSpec(name=output_name, dtype="float32", shape=["batch", 3]),),
        make_inputs=lambda batch, _: {"x": rng.normal(size=(batch, 4)).astype(np.float32)},
        classifier=True,
    )


def test_export_validates_on_a_batch_grid(tmp_path):
    torch.manual_seed(0)
    export_to_onnx(Tiny(), make_spec(), tmp_path / "tiny.onnx")  # passes: names, axes, values


def test_every_failure_is_collected(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny.onnx"
    export_to_onnx(Tiny(), make_spec(), path)
    other = Tiny()  # different weights: values cannot match
    with pytest.raises(ExportValidationError) as caught:
        validate_export(other, make_spec(output_name="scores", input_shape=(1, 4)), path)
    failures = "\n".join(caught.value.failures)
    assert "output names" in failures
    assert "graph axes" in failures
    assert "max |onnx - torch|" in failures
    assert len(caught.value.failures) >= 5  # names, axes, and one value failure per batch size


def test_parity_report_refuses_disagreement():
    spec = make_spec()
    logits = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=np.float32)
    report = parity_report(spec, logits, logits + 1e-6)
    assert report.argmax_agreement == 1.0 and report.max_abs_diff <= 1e-5
    with pytest.raises(ExportValidationError, match="argmax agreement"):
        parity_report(spec, logits, logits[::-1])
