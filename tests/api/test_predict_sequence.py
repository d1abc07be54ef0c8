"""POST /predict-sequence with a real held-out series."""

from __future__ import annotations

import numpy as np
import pytest

from models.series_data import load_series


@pytest.fixture(scope="module")
def air_passengers():
    """Monthly airline passengers 1949-1960 (R datasets), its last 18 months held out."""
    series = next(s for s in load_series() if s.key.endswith("AirPassengers"))
    history, _, test = series.split()
    return np.concatenate([history, series.split()[1]]), test


def smape(actual: np.ndarray, forecast: np.ndarray) -> float:
    return float(np.mean(2 * np.abs(forecast - actual) / (np.abs(actual) + np.abs(forecast))))


def forecast(client, series, **extra) -> np.ndarray:
    response = client.post("/predict-sequence", json={"series": [float(v) for v in series], **extra})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "forecast-lstm" and body["version"] == "1"
    return np.array(body["forecast"])


def test_length_equals_horizon(client, air_passengers):
    history, _ = air_passengers
    for horizon in (1, 7, 12, 18):
        assert len(forecast(client, history, horizon=horizon)) == horizon
    assert len(forecast(client, history)) == 12  # the default


def test_forecast_is_in_the_series_units(client, air_passengers):
    history, _ = air_passengers
    base = forecast(client, history, horizon=12, period=12)
    assert np.all(np.isfinite(base))
    scaled = forecast(client, history * 1000.0, horizon=12, period=12)
    np.testing.assert_allclose(scaled, base * 1000.0, rtol=1e-3)
    level = history[-12:].mean()
    assert 0.5 * level < base.mean() < 2.0 * level


def test_intervals_nest_around_the_forecast_in_the_series_units(client, air_passengers):
    history, _ = air_passengers
    bodies = [
        client.post(
            "/predict-sequence", json={"series": [float(v) * factor for v in history], "horizon": 18, "period": 12}
        ).json()
        for factor in (1.0, 1000.0)
    ]
    for body in bodies:
        assert [i["level"] for i in body["intervals"]] == [0.8, 0.95]
        forecast = np.array(body["forecast"])
        low80, low95 = (np.array(i["lower"]) for i in body["intervals"])
        high80, high95 = (np.array(i["upper"]) for i in body["intervals"])
        assert len(low80) == len(high95) == 18
        assert np.all(low95 <= low80) and np.all(low80 <= forecast) and np.all(forecast <= high80) and np.all(high80 <= high95)
        assert np.all(high95 > low95)
    upper95 = [np.array(body["intervals"][1]["upper"]) for body in bodies]
    np.testing.assert_allclose(upper95[1], upper95[0] * 1000.0, rtol=1e-3)


def test_period_is_echoed_or_detected(client, air_passengers):
    history, _ = air_passengers
    detected = client.post("/predict-sequence", json={"series": list(history[-48:]), "horizon": 3}).json()
    assert detected["period"] == 12
    given = client.post("/predict-sequence", json={"series": list(history[-48:]), "horizon": 3, "period": 1}).json()
    assert given["period"] == 1


def test_short_history_is_padded_not_refused(client, air_passengers):
    history, _ = air_passengers
    assert len(forecast(client, history[-12:], horizon=6)) == 6


def test_zeros_and_negative_values_are_served(client):
    values = [0.0, 3.0, -1.5, 2.0, 0.0, 4.0, -2.0, 1.0, 0.5, 0.0, 2.5, -0.5, 1.0, 0.0]
    assert np.all(np.isfinite(forecast(client, values, horizon=4)))
    assert np.all(forecast(client, [5.0] * 20, horizon=3) == pytest.approx(5.0, rel=0.1))


@pytest.mark.real_models
def test_held_out_tail_is_forecast_well(client, air_passengers, real_repository):
    history, test = air_passengers
    predicted = forecast(client, history, horizon=len(test), period=12)
    seasonal_naive = np.tile(history[-12:], 2)[: len(test)]
    assert smape(test, predicted) < 0.15
    assert smape(test, predicted) < smape(test, seasonal_naive) * 1.5


@pytest.mark.real_models
def test_tourism_quarterly_over_http_matches_the_manifest(client, real_repository):
    """The external test, request by request over HTTP: the served model's Tourism figure is the manifest's."""
    from models.series_data import tourism
    from service.manifest import ModelManifest

    manifest = ModelManifest.load(real_repository / "forecast-lstm" / "1")
    if manifest.served_variant != "fp32":
        pytest.skip(f"the served variant is {manifest.served_variant}; the Tourism figures are fp32's")
    errors = []
    for item in tourism(4):
        predicted = forecast(client, item.history, horizon=len(item.actual), period=4)
        scale = np.mean(np.abs(item.history[4:] - item.history[:-4]))
        errors.append(np.mean(np.abs(item.actual - predicted)) / scale)
    assert len(errors) == 427
    assert np.mean(errors) == pytest.approx(manifest.metrics.model["tourism_quarterly/mase"], abs=1e-3)
    assert np.mean(errors) < manifest.metrics.baselines["seasonal_naive"]["tourism_quarterly/mase"]
