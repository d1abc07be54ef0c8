"""The real mnist-cnn meets its targets, and its manifest's figures hold up when recomputed."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from export.mnist_cnn import LABELS, TARGETS, as_png, service_accuracy
from export.variants import session as variant_session
from models.mnist_data import load_digits
from service.manifest import ModelManifest
from service.tasks.image import ImageTask

pytestmark = pytest.mark.real_models


@pytest.fixture(scope="module")
def built(real_repository):
    version_dir = real_repository / "mnist-cnn" / "1"
    manifest = ModelManifest.load(version_dir)
    session = ort.InferenceSession(str(version_dir / manifest.model_file), providers=["CPUExecutionProvider"])
    return manifest, session, ImageTask(manifest.preprocessing, manifest.labels, version_dir), version_dir


def test_manifest_records_its_targets_met(built):
    manifest, _, _, _ = built
    assert not manifest.build.quick
    assert manifest.metrics.n == 1000 and manifest.data.splits["test"] == 1000
    assert manifest.metrics.targets == TARGETS  # declared once, in the builder, and recorded as declared
    assert manifest.missed_targets() == []
    assert manifest.parity.argmax_agreement == 1.0 and manifest.parity.max_abs_diff <= 1e-4
    assert manifest.labels == LABELS


def test_recomputed_accuracy_matches_manifest(built):
    manifest, session, task, _ = built
    data = load_digits(manifest.training.seed)
    sample = np.random.default_rng(11).choice(data.test, size=300, replace=False)
    accuracy = service_accuracy(session, task, [as_png(d) for d in data.images[sample]], data.labels[sample])
    # 300 of the 1,000: the sample's accuracy sits within a few points of the whole set's.
    assert abs(accuracy - manifest.metrics.model["accuracy"]) <= 0.02


def test_the_served_variant_scores_exactly_its_manifest_figures(built):
    """The variant the service serves, on every test and validation digit, through the PNG request path:
    the same inputs and code as the build, so the figures must come out to the digit (one digit is 0.001)."""
    manifest, _, task, version_dir = built
    model_file, _ = manifest.variant(manifest.served_variant)
    served = variant_session(version_dir / model_file)
    record = manifest.variant_record(manifest.served_variant)
    data = load_digits(manifest.training.seed)
    for split, figures in (("test", manifest.served_metrics()), ("validation", record.validation_metrics if record else manifest.metrics.validation)):
        indices = getattr(data, split)
        accuracy = service_accuracy(served, task, [as_png(d) for d in data.images[indices]], data.labels[indices])
        assert accuracy == pytest.approx(figures["accuracy"], abs=1e-9), split


def test_test_split_is_disjoint_from_training(built):
    manifest, _, _, _ = built
    data = load_digits(manifest.training.seed)
    assert not set(data.test) & (set(data.train) | set(data.validation))
    assert np.bincount(data.labels[data.test]).tolist() == [100] * 10
