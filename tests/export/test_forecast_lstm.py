"""forecast-lstm: the real series, training windows = service windows, and the honesty of the built manifest."""

from __future__ import annotations

import numpy as np
import pytest

from export.forecast_lstm import BUILDER, hyperparameters, preprocessing, seasonal_naive
from models.lstm import smape, training_examples
from models.series_data import MIN_LENGTH, PERIODS, TEST_HORIZON, load_series
from service.manifest import ModelManifest
from service.tasks.forecast import ForecastRequest, ForecastTask


@pytest.fixture(scope="module")
def series():
    return load_series()


def test_hundreds_of_real_series_of_every_frequency(series):
    counts = {p: sum(s.period == p for s in series) for p in PERIODS}
    assert len(series) >= 400 and all(n >= 100 for n in counts.values()), counts
    keys = [s.key for s in series]
    assert len(set(keys)) == len(keys)
    assert sum(k.startswith("fpp3/us_employment/") for k in keys) > 100  # panels are split per key
    for item in series:
        assert item.values.dtype == np.float64 and np.all(np.isfinite(item.values)) and np.all(item.values > 0)
        assert len(item.values) >= MIN_LENGTH[item.period]
        train, validation, test = item.split()
        assert len(validation) == len(test) == TEST_HORIZON[item.period]
        assert len(train) >= 12


def test_loading_is_deterministic(series):
    again = load_series()
    assert [s.key for s in again] == [s.key for s in series]
    assert all(np.array_equal(a.values, b.values) for a, b in zip(again, series))


def test_known_series_arrive_intact(series):
    by_key = {s.key: s for s in series}
    air = by_key["datasets/AirPassengers"]
    assert air.period == 12 and air.values[:3].tolist() == [112, 118, 132] and len(air.values) == 144
    assert by_key["fpp2/ausbeer"].period == 4
    assert by_key["datasets/Nile"].period == 1


def test_training_windows_are_what_the_service_decodes(series):
    """A training example and a request with the same history give identical network inputs."""
    hp = hyperparameters(quick=True)
    chosen = [next(s for s in series if s.period == p) for p in PERIODS]
    examples = training_examples(chosen, hp["window"], hp["context_window"], hp["horizon_max"], max_origins=10**6)
    task = ForecastTask(preprocessing(hp), [], version_dir=None)
    for index, item in enumerate(chosen):
        rows = np.flatnonzero(examples.owner == index)
        for position in (0, len(rows) // 2, len(rows) - 1):
            origin = 12 + position  # origins run from the minimum history up, one per step
            decoded = task.decode(ForecastRequest(series=item.values[:origin].tolist(), period=item.period))
            feeds = task.collate(decoded.rows)
            np.testing.assert_array_equal(feeds["window"][0], examples.steps[rows[position]])
            np.testing.assert_array_equal(feeds["context"][0], examples.context[rows[position]])
        train, _, _ = item.split()
        assert len(rows) == len(train) - 12  # never an origin inside the validation or test tail
        assert np.all(np.isnan(examples.targets[rows[-1], 1:]))  # targets stop where training data ends


def test_the_build_key_covers_the_shared_scaling_code():
    from export.build import module_closure

    training = module_closure(BUILDER.train.__module__)
    assert "service.preprocessing.series" in training and "models.series_data" in training
    assert "service.tasks.forecast" in module_closure(BUILDER.export.__module__)
    assert hyperparameters(True) != hyperparameters(False)
    assert hyperparameters(False)["horizon_max"] >= 24


@pytest.fixture(scope="module")
def real_forecast_repository(real_repository):
    return real_repository / "forecast-lstm" / "1"


@pytest.mark.real_models
def test_real_model_meets_its_target(real_forecast_repository):
    manifest = ModelManifest.load(real_forecast_repository)
    assert not manifest.build.quick and manifest.task == "sequence-forecast"
    lstm, naive = manifest.metrics.model, manifest.metrics.baselines["seasonal_naive"]
    assert lstm["smape"] <= 0.9 * naive["smape"]
    assert {"theta", "auto_ets"} <= set(manifest.metrics.baselines)
    for frequency in ("monthly", "quarterly", "yearly"):
        assert f"smape_{frequency}" in lstm and f"smape_{frequency}" in naive
    assert manifest.preprocessing.horizon_max >= 24
    assert manifest.parity.max_abs_diff <= 1e-4


@pytest.mark.real_models
def test_real_manifest_metrics_are_recomputed(real_forecast_repository, series):
    """Re-score the held-out tails with onnxruntime + ForecastTask: the manifest's numbers must come out."""
    import onnxruntime as ort

    manifest = ModelManifest.load(real_forecast_repository)
    assert manifest.metrics.n == len(series) == manifest.data.splits["series"]
    session = ort.InferenceSession(str(real_forecast_repository / manifest.model_file), providers=["CPUExecutionProvider"])
    task = ForecastTask(manifest.preprocessing, manifest.labels, real_forecast_repository)

    def lstm_smape(item) -> float:
        h = item.test_horizon
        decoded = task.decode(ForecastRequest(series=item.values[:-h].tolist(), horizon=h, period=item.period))
        outputs = session.run(None, task.collate(decoded.rows))
        forecast = task.encode(outputs, decoded, manifest.name, manifest.version).forecast
        assert len(forecast) == h
        return smape(item.values[-h:], np.array(forecast))

    lstm = np.array([lstm_smape(s) for s in series])
    naive = np.array([smape(s.values[-s.test_horizon :], seasonal_naive(s.values[: -s.test_horizon], s.period, s.test_horizon)) for s in series])
    assert lstm.mean() == pytest.approx(manifest.metrics.model["smape"], abs=2e-3)
    assert naive.mean() == pytest.approx(manifest.metrics.baselines["seasonal_naive"]["smape"], abs=2e-3)
    monthly = np.array([s.period == 12 for s in series])
    assert lstm[monthly].mean() == pytest.approx(manifest.metrics.model["smape_monthly"], abs=2e-3)
    # And on a sample, by hand, the target holds series-for-series on average.
    sample = np.arange(0, len(series), 7)
    assert lstm[sample].mean() <= naive[sample].mean()
