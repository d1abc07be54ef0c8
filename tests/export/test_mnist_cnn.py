"""The real mnist-cnn meets its target, and its manifest's figure holds up when recomputed."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from export.mnist_cnn import ACCURACY_TARGET, LABELS, as_png, service_accuracy
from models.mnist_data import load_digits
from service.manifest import ModelManifest
from service.tasks.image import ImageTask

pytestmark = pytest.mark.real_models


@pytest.fixture(scope="module")
def built(real_repository):
    version_dir = real_repository / "mnist-cnn" / "1"
    manifest = ModelManifest.load(version_dir)
    session = ort.InferenceSession(str(version_dir / manifest.model_file), providers=["CPUExecutionProvider"])
    return manifest, session, ImageTask(manifest.preprocessing, manifest.labels, version_dir)


def test_manifest_records_target_met(built):
    manifest, _, _ = built
    assert not manifest.build.quick
    assert manifest.metrics.n == 1000 and manifest.data.splits["test"] == 1000
    assert manifest.metrics.model["accuracy"] >= ACCURACY_TARGET
    assert manifest.parity.argmax_agreement == 1.0 and manifest.parity.max_abs_diff <= 1e-4
    assert manifest.labels == LABELS


def test_recomputed_accuracy_matches_manifest(built):
    manifest, session, task = built
    data = load_digits(manifest.training.seed)
    sample = np.random.default_rng(11).choice(data.test, size=300, replace=False)
    accuracy = service_accuracy(session, task, [as_png(d) for d in data.images[sample]], data.labels[sample])
    # 300 of the 1,000: the sample's accuracy sits within a few points of the whole set's.
    assert abs(accuracy - manifest.metrics.model["accuracy"]) <= 0.02


def test_test_split_is_disjoint_from_training(built):
    manifest, _, _ = built
    data = load_digits(manifest.training.seed)
    assert not set(data.test) & (set(data.train) | set(data.validation))
    assert np.bincount(data.labels[data.test]).tolist() == [100] * 10
