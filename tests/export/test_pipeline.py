"""The whole --quick pipeline in a temporary repository, and the build's skip/cache rules."""

from __future__ import annotations

import subprocess
import sys

import pytest

from export.build import ModelBuilder
from service.manifest import ModelManifest, sha256_of
from tests.conftest import MODEL_NAMES, ROOT


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_quick_build_is_complete_and_consistent(quick_repository, name):
    version_dir = quick_repository / name / "1"
    manifest = ModelManifest.load(version_dir)  # validates against the schema
    assert manifest.name == name and manifest.version == "1" and manifest.build.quick
    assert sha256_of(version_dir / manifest.model_file) == manifest.sha256
    assert manifest.parity.max_abs_diff <= manifest.parity.tolerance <= 1e-4
    if manifest.task != "sequence-forecast":
        assert manifest.parity.argmax_agreement == 1.0
    assert manifest.opset >= 17
    assert any(isinstance(d, str) for d in manifest.inputs[0].shape), "batch axis must be dynamic"
    assert manifest.data.packages and all(v != "not installed" for v in manifest.data.packages.values())
    assert manifest.metrics.n > 0 and manifest.metrics.model


def test_unchanged_models_are_not_rebuilt(quick_repository, tmp_path):
    cache = quick_repository.parent / "cache"
    result = subprocess.run(
        [sys.executable, "-m", "export", "build", "--quick", "--repository", str(quick_repository), "--cache-dir", str(cache)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    for name in MODEL_NAMES:
        assert f"== {name}: up to date" in result.stderr

    # A fresh repository is filled from the cache by content hash, without training.
    fresh = tmp_path / "fresh"
    result = subprocess.run(
        [sys.executable, "-m", "export", "build", "--quick", "--only", "mnist-cnn", "--repository", str(fresh), "--cache-dir", str(cache)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    assert "== mnist-cnn: restored from cache" in result.stderr
    assert (fresh / "mnist-cnn" / "1" / "manifest.json").read_text() == (quick_repository / "mnist-cnn" / "1" / "manifest.json").read_text()


def test_input_hash_follows_what_shapes_the_model():
    def builder(hp: dict, quick_sources=("export/mnist_cnn.py",)) -> ModelBuilder:
        return ModelBuilder("m", "1", quick_sources, ("numpy",), lambda quick: dict(hp, quick=quick), build=None)

    base = builder({"lr": 1e-3}).input_hash(quick=False)
    assert base == builder({"lr": 1e-3}).input_hash(quick=False)
    assert base != builder({"lr": 2e-3}).input_hash(quick=False)
    assert base != builder({"lr": 1e-3}).input_hash(quick=True)
    assert base != builder({"lr": 1e-3}, ("export/mnist_cnn.py", "models/cnn.py")).input_hash(quick=False)
