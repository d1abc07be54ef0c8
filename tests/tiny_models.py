"""A model small enough to build inside a test: a linear digit classifier with a complete manifest, for the
registry, the dataplane and the endpoint table to serve without the trained models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from service.batch_policy import BatchPolicy
from service.manifest import (
    BuildRecord,
    DataProvenance,
    HeldOutMetrics,
    ImagePreprocessing,
    ModelManifest,
    ParityReport,
    ServingDefaults,
    TensorSpec,
    TrainingRecord,
    sha256_of,
)
from service.registry import task_class

DIGIT = (Path(__file__).resolve().parent / "data" / "digit-7.png").read_bytes()


def tiny_digit_model(folder: Path, name: str = "tiny-digits", version: str = "1", seed: int = 7,
                     route: str | None = "/classify-tiny") -> ModelManifest:
    """A linear classifier over the 28x28 input (fixed random weights), with a manifest whose serving
    section asks for its own route and batching."""
    weights = np.random.default_rng(seed).normal(size=(784, 10)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["image"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "w"], ["logits"])],
        "tiny_digits",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        initializer=[numpy_helper.from_array(weights, "w")],
    )
    folder.mkdir(parents=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), folder / "model.onnx")
    manifest = ModelManifest(
        name=name,
        version=version,
        task="image-classification",
        serving=ServingDefaults(route=route, batching=BatchPolicy(max_batch_size=4)),
        description="a linear layer of fixed random weights, built by a test",
        sha256=sha256_of(folder / "model.onnx"),
        opset=18,
        inputs=[TensorSpec(name="image", dtype="float32", shape=["batch", 1, 28, 28])],
        outputs=[TensorSpec(name="logits", dtype="float32", shape=["batch", 10])],
        labels=[str(d) for d in range(10)],
        preprocessing=ImagePreprocessing(mean=0.13, std=0.31),
        data=DataProvenance(packages={}, files=[], description="none: fixed random weights", splits={}),
        training=TrainingRecord(seed=seed, hyperparameters={}, duration_s=0.0),
        metrics=HeldOutMetrics(split="none", n=0, model={}),
        parity=ParityReport(runtime="none", n=0, max_abs_diff=0.0, tolerance=0.0),
        build=BuildRecord(input_hash="test", created_at="2026-01-01T00:00:00+00:00", quick=True, versions={}),
    )
    manifest.write(folder)
    return manifest


def expected_label(folder: Path, manifest: ModelManifest) -> str:
    """What the tiny model says about the digit, computed here through the task's own decoding."""
    task = task_class(manifest.task)(manifest.preprocessing, manifest.labels, folder)
    decoded = task.decode(task.request_model(data=DIGIT, top_k=1))
    logits = ort.InferenceSession(str(folder / "model.onnx")).run(None, task.collate(decoded.rows))[0]
    return manifest.labels[int(np.argmax(logits[0]))]
