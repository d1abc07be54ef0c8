"""The whole --quick pipeline in a temporary repository, the two-stage cache, and what the build keys track."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from export.__main__ import load_builder
from export.build import PROJECT_PACKAGES, code_fingerprint, module_closure, normalise_module
from service.manifest import ModelManifest, sha256_of
from tests.conftest import MODEL_NAMES, ROOT

pytestmark = pytest.mark.slow  # quick builds of the whole pipeline


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
    assert manifest.build.training_key and manifest.build.training_key != manifest.build.input_hash


def build(repository: Path, cache: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "export", "build", "--quick", "--repository", str(repository), "--cache-dir", str(cache), *args],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    return result.stderr


def test_unchanged_models_are_not_rebuilt(quick_repository, tmp_path):
    cache = quick_repository.parent / "cache"
    log = build(quick_repository, cache)
    for name in MODEL_NAMES:
        assert f"== {name}: up to date" in log

    # A fresh repository is filled from the cache by key, without training or exporting.
    fresh = tmp_path / "fresh"
    assert "== mnist-cnn: restored from cache" in build(fresh, cache, "--only", "mnist-cnn")
    assert (fresh / "mnist-cnn" / "1" / "manifest.json").read_text() == (quick_repository / "mnist-cnn" / "1" / "manifest.json").read_text()

    # Without the finished export, the export stage reruns from the cached weights: no training.
    shutil.rmtree(cache / "models" / "mnist-cnn")
    log = build(tmp_path / "again", cache, "--only", "mnist-cnn")
    assert "== mnist-cnn: weights from cache, exported in" in log
    again = ModelManifest.load(tmp_path / "again" / "mnist-cnn" / "1")
    original = ModelManifest.load(quick_repository / "mnist-cnn" / "1")
    assert again.sha256 == original.sha256  # the same weights exported the same way
    assert again.build.training_key == original.build.training_key


# --- what the keys follow ------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path) -> Path:
    """A copy of the project's packages, to edit freely."""
    for package in PROJECT_PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    normalise_module.cache_clear()
    yield tmp_path
    normalise_module.cache_clear()


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))
    normalise_module.cache_clear()


def keys(root: Path) -> dict[str, tuple[str, str]]:
    result = {}
    for name in MODEL_NAMES:
        builder = load_builder(name)
        training = builder.training_key(False, root)
        result[name] = (training, builder.export_key(False, training, root))
    return result


def test_training_closure_is_found_from_imports():
    closure = module_closure(load_builder("mnist-cnn").train.__module__)
    assert "models.cnn" in closure and "service.preprocessing.image" in closure
    # The API layer (schemas, error messages) and the export code do not shape the weights.
    assert not any(m.startswith(("service.tasks", "export.")) for m in closure)
    assert "service.manifest" not in closure


def test_comments_docstrings_and_unused_imports_change_no_key(project):
    before = keys(project)
    edit(project / "models" / "cnn.py", "import math\n", "import math\nimport json  # unused\n# a comment\n")
    edit(project / "models" / "lstm.py", '"""A global LSTM', '"""Reworded: a global LSTM')
    edit(project / "service" / "preprocessing" / "text.py", "def tokenize(", "# how texts become ids\ndef tokenize(")
    edit(project / "export" / "spec.py", "def export_to_onnx(", "def export_to_onnx(  # noqa\n")
    assert keys(project) == before


def test_a_training_change_retrains_only_that_model(project):
    before = keys(project)
    edit(project / "models" / "cnn.py", "loss = F.cross_entropy(", "loss = 1.0 * F.cross_entropy(")
    after = keys(project)
    assert after["mnist-cnn"][0] != before["mnist-cnn"][0]
    assert after["forecast-lstm"] == before["forecast-lstm"]
    assert after["sentiment-transformer"] == before["sentiment-transformer"]


def test_shared_preprocessing_change_retrains_its_users(project):
    before = keys(project)
    edit(project / "service" / "preprocessing" / "series.py", "LOG_CHANGE_LIMIT = 12.0", "LOG_CHANGE_LIMIT = 11.0")
    after = keys(project)
    assert after["forecast-lstm"][0] != before["forecast-lstm"][0]
    assert after["mnist-cnn"] == before["mnist-cnn"]


def test_an_api_message_or_the_opset_re_exports_without_retraining(project):
    before = keys(project)
    edit(project / "service" / "tasks" / "image_decoding.py", "the uploaded file is empty", "the upload is empty")
    after = keys(project)
    assert after["mnist-cnn"][0] == before["mnist-cnn"][0] and after["mnist-cnn"][1] != before["mnist-cnn"][1]
    assert after["sentiment-transformer"] == before["sentiment-transformer"]

    edit(project / "export" / "spec.py", "opset: int = 18", "opset: int = 19")
    opset = keys(project)
    for name in MODEL_NAMES:
        assert opset[name][0] == before[name][0], "an opset change must not retrain"
        assert opset[name][1] != after[name][1], "an opset change must re-export"


def test_hyperparameters_change_only_their_model():
    builder = load_builder("forecast-lstm")
    base = builder.training_key(False)
    changed = type(builder)(**{**builder.__dict__, "hyperparameters": lambda quick: dict(builder.hyperparameters(quick), lr=1e-3)})
    assert changed.training_key(False) != base
    assert load_builder("mnist-cnn").training_key(False) == load_builder("mnist-cnn").training_key(False)
    assert builder.training_key(True) != base


def test_fingerprint_follows_used_imports_only(project):
    fingerprint = code_fingerprint("models.cnn", project)
    assert set(fingerprint) == set(module_closure("models.cnn", project))
