"""One rule for every model's targets: stated in the manifest, met by fp32 and by the served variant, or the
full build fails and writes nothing."""

from __future__ import annotations

import shutil

import pytest
import torch

from export.build import ModelBuilder, TargetMissed, build_model
from models.training import Trained
from service.manifest import ModelManifest, Target, VariantParity, VariantRecord


def test_a_target_is_a_comparison_with_a_bound():
    assert Target(comparison=">=", bound=0.9).met_by(0.9) and not Target(comparison=">", bound=0.9).met_by(0.9)
    assert Target(comparison="<", bound=14.84).met_by(14.7) and not Target(comparison="<=", bound=14.84).met_by(14.85)
    assert Target(comparison="<", bound=1.5992, basis="min(theta, auto_ets)").describe() == "< 1.599 (min(theta, auto_ets))"


def _with(manifest: ModelManifest, accuracy: float, targets: dict[str, Target], served: float | None = None) -> ModelManifest:
    """The manifest with these figures and targets; with `served`, an int8 variant of that accuracy is served."""
    variants, served_variant = [], "fp32"
    if served is not None:
        variants = [VariantRecord(
            name="int8", model_file="model.int8.onnx", sha256="0" * 64, description="", metrics={"accuracy": served},
            validation_metrics={"accuracy": served}, parity=VariantParity(n=1, max_abs_diff=0.0, mean_abs_diff=0.0),
            throughput_ratio=2.0, batch_size=32, within_guard=True,
        )]
        served_variant = "int8"
    metrics = manifest.metrics.model_copy(update={"model": {"accuracy": accuracy}, "targets": targets})
    return manifest.model_copy(update={"metrics": metrics, "variants": variants, "served_variant": served_variant})


@pytest.mark.slow  # from the quick build
def test_missed_targets_covers_fp32_and_the_served_variant(quick_repository):
    manifest = ModelManifest.load(quick_repository / "mnist-cnn" / "1")
    target = {"accuracy": Target(comparison=">=", bound=0.9)}
    assert _with(manifest, 0.95, target).missed_targets() == []
    assert _with(manifest, 0.95, target, served=0.92).missed_targets() == []
    [missed] = _with(manifest, 0.95, target, served=0.85).missed_targets()
    assert missed.startswith("int8 accuracy 0.85 misses")
    [missed] = _with(manifest, 0.85, target).missed_targets()
    assert missed.startswith("fp32 accuracy 0.85 misses")
    [missed] = _with(manifest, 0.95, {"recall": Target(comparison=">=", bound=0.9)}).missed_targets()[:1]
    assert "recall: not measured" in missed


def _builder(quick_repository, manifest: ModelManifest) -> ModelBuilder:
    """A builder whose export hands back the quick CNN's files with the given manifest."""

    def train(_):
        return Trained(torch.nn.Linear(1, 1))

    def export(ctx, _):
        for path in (quick_repository / "mnist-cnn" / "1").iterdir():
            if path.name != "manifest.json":
                shutil.copy(path, ctx.out_dir / path.name)
        return manifest.model_copy(update={"build": manifest.build.model_copy(update={"input_hash": ctx.input_hash, "quick": ctx.quick})})

    # Keyed as a builder of this project (build keys follow a builder's own modules).
    train.__module__ = export.__module__ = "export.mnist_cnn"
    return ModelBuilder(name="mnist-cnn", version="1", train=train, architecture=lambda hp: torch.nn.Linear(1, 1),
                        export=export, data_packages=(), hyperparameters=lambda quick: {"quick": quick})


@pytest.mark.slow  # from the quick build
def test_a_full_build_below_a_target_fails_and_writes_nothing(quick_repository, tmp_path):
    manifest = ModelManifest.load(quick_repository / "mnist-cnn" / "1")
    accuracy = manifest.metrics.model["accuracy"]
    unreachable = _with(manifest, accuracy, {"accuracy": Target(comparison=">", bound=accuracy)})
    with pytest.raises(TargetMissed, match="fp32 accuracy .* misses its target >"):
        build_model(_builder(quick_repository, unreachable), tmp_path / "repository", tmp_path / "cache", quick=False, force=False)
    assert not (tmp_path / "repository").exists()
    assert not list((tmp_path / "cache" / "models").glob("mnist-cnn/*"))

    # A quick build (tiny data, few steps) records the same miss and is written; a full build that meets it too.
    build_model(_builder(quick_repository, unreachable), tmp_path / "quick", tmp_path / "cache", quick=True, force=False)
    assert ModelManifest.load(tmp_path / "quick" / "mnist-cnn" / "1").missed_targets()
    met = _with(manifest, accuracy, {"accuracy": Target(comparison=">=", bound=accuracy)})
    build_model(_builder(quick_repository, met), tmp_path / "repository", tmp_path / "cache", quick=False, force=False)
    assert ModelManifest.load(tmp_path / "repository" / "mnist-cnn" / "1").missed_targets() == []
