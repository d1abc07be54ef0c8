"""What is chosen (epochs, checkpoints, mixing weights, interval widths, the served variant) is chosen on
validation data: poisoning the test split changes none of it, while poisoning the validation split does.

The poison is loud: test digits replaced by noise and relabelled, test sentences replaced and relabelled, the test
tails of every series (and Tourism's actual values) multiplied by 1,000. Anything chosen by looking at them
would come out differently.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import export.forecast_lstm
import export.sentiment_transformer
import models.cnn
import models.lstm
import models.transformer
from export.__main__ import load_builder
from export.build import BuildContext, TrainingContext, trained_weights
from models.series_data import Catalogue, Series
from models.series_data import TestSeries as TourismSeries
from service.manifest import ModelManifest
from tests.conftest import MODEL_NAMES

pytestmark = pytest.mark.slow  # trains with poisoned splits

# Quick builds with a real choice to make: two epochs for the classifiers (the LSTM's quick build already
# compares two checkpoints, its mixing weights and its interval widths).
MORE_THAN_ONE_EPOCH = {"mnist-cnn": {"epochs": 2, "max_steps": 0}, "sentiment-transformer": {"epochs": 2}, "forecast-lstm": {}}


def _poisoned_digits(data, which: str):
    """Noise for images and one label for all (a permutation of the labels would leave a model that answers
    one class for everything, as a quick one may, exactly as accurate)."""
    indices = getattr(data, which)
    images, labels = data.images.copy(), data.labels.copy()
    images[indices] = np.random.default_rng(0).integers(0, 256, images[indices].shape, dtype=np.uint8)
    labels[indices] = 0
    return dataclasses.replace(data, images=images, labels=labels)


def _poisoned_corpus(corpus):
    return dataclasses.replace(
        corpus, texts=[f"{text[::-1]} {i}" for i, text in enumerate(corpus.texts)], labels=2 - corpus.labels
    )


def _poisoned_series(item: Series, which: str) -> Series:
    values = item.values.copy()
    h = item.test_horizon
    tail = slice(len(values) - h, None) if which == "test" else slice(len(values) - 2 * h, len(values) - h)
    values[tail] *= 1000.0
    return dataclasses.replace(item, values=values)


def poison(monkeypatch, name: str, which: str) -> None:
    """Replace the `which` split ("test" or "validation") of `name`'s data wherever training and export load it."""
    if name == "mnist-cnn":
        load_digits = models.cnn.load_digits
        monkeypatch.setattr(models.cnn, "load_digits", lambda seed: _poisoned_digits(load_digits(seed), which))
    elif name == "sentiment-transformer":
        limited_splits = models.transformer.limited_splits

        def poisoned_splits(corpus, hp):
            train, validation, test = limited_splits(corpus, hp)
            if which == "test":
                return train, validation, _poisoned_corpus(test)
            return train, _poisoned_corpus(validation), test

        monkeypatch.setattr(models.transformer, "limited_splits", poisoned_splits)
        monkeypatch.setattr(export.sentiment_transformer, "limited_splits", poisoned_splits)
    else:
        load_catalogue = models.lstm.load_catalogue

        def poisoned_catalogue(limit):
            catalogue = load_catalogue(limit)
            return Catalogue([_poisoned_series(s, which) for s in catalogue.series], catalogue.dropped)

        monkeypatch.setattr(models.lstm, "load_catalogue", poisoned_catalogue)
        if which == "test":
            tourism = export.forecast_lstm.tourism
            monkeypatch.setattr(export.forecast_lstm, "tourism", lambda period: [
                TourismSeries(s.key, s.period, s.history, s.actual * 1000.0) for s in tourism(period)
            ])


def _without_timings(value):
    """A training record without its durations (they differ from run to run)."""
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k != "s" and not k.endswith("_s")}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _train(name: str, cache_dir):
    builder = load_builder(name)
    hp = {**builder.hyperparameters(True), **MORE_THAN_ONE_EPOCH[name]}
    trained = builder.train(TrainingContext(quick=True, hyperparameters=hp, cache_dir=cache_dir))
    return trained.module.state_dict(), _without_timings(trained.record)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_training_and_its_choices_never_read_the_test_split(name, data_cache, monkeypatch):
    clean_weights, clean_record = _train(name, data_cache)
    with monkeypatch.context() as patch:
        poison(patch, name, "test")
        weights, record = _train(name, data_cache)
    assert record == clean_record
    assert clean_weights.keys() == weights.keys()
    assert all(torch.equal(clean_weights[k], weights[k]) for k in clean_weights)

    with monkeypatch.context() as patch:  # the comparison can fail: validation is what is chosen on
        poison(patch, name, "validation")
        _, record = _train(name, data_cache)
    assert record != clean_record


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_the_served_variant_is_chosen_without_the_test_split(name, quick_repository, monkeypatch, tmp_path):
    """The quick model's export again, its test split poisoned: fp32's validation figures and each variant's
    validation figures and guard verdict are those of the clean build; only the test figures move."""
    builder = load_builder(name)
    cache = quick_repository.parent / "cache"
    module, record, training_key, _ = trained_weights(builder, cache, quick=True, force=False)
    clean = ModelManifest.load(quick_repository / name / "1")
    poison(monkeypatch, name, "test")
    context = BuildContext(
        out_dir=tmp_path, quick=True, hyperparameters=builder.hyperparameters(True), training_key=training_key,
        input_hash="test-split-poisoned", cache_dir=cache, training_record=record,
    )
    poisoned = builder.export(context, module)

    assert poisoned.metrics.validation and poisoned.metrics.validation == clean.metrics.validation
    clean_variants = {v.name: v for v in clean.variants}
    for variant in poisoned.variants:
        if variant.name in clean_variants:  # kept in both builds (the speed rule is timed, so may differ)
            assert variant.validation_metrics == clean_variants[variant.name].validation_metrics
            assert variant.within_guard == clean_variants[variant.name].within_guard
    headline = next(iter(clean.metrics.model))
    assert not np.isclose(poisoned.metrics.model[headline], clean.metrics.model[headline]), "the poison reached the test figures"
