"""Series pre- and post-processing (pure numpy): history windows -> network inputs, outputs -> forecasts.

The numpy pre- and post-processing here is the only implementation of the window scaling: the
training windows, the held-out evaluation and the service all go through ``scale_windows`` and
``unscale``. Per series, on its last ``context_window`` values (missing ones NaN on the left):

1. divide by the largest |value| and, if any value is <= 0, add a shift that makes them all
   positive (so logs exist and nothing overflows);
2. take logs; when the period is 4 or 12 and the M4 seasonality test passes on the detrended logs
   (lag-`period` autocorrelation beyond its 90% limit, three cycles of data), subtract the seasonal
   indices of a classical additive decomposition (2 x period centred moving average);
3. subtract the level, the mean of the last `period` deseasonalised logs.

The Theta method (Assimakopoulos and Nikolopoulos 2000, in the form of Hyndman and Billah 2003: simple
exponential smoothing plus half the slope of a linear trend) forecasts the same deseasonalised log
changes from the whole context window; the exported graph mixes it with the network's forecast by a
weight per period chosen on validation tails.

Prediction intervals are conformal: the graph's second and third rows are half-widths per period,
level and step, calibrated on validation tails as quantiles of |log error| / ``residual_scale`` (the
series' own mean absolute change over one period of its deseasonalised logs); ``unscale_intervals`` turns
them into bounds in the units of the series.

The network reads the last ``window`` steps of the result with an "observed" flag per step, plus the
period (one-hot), whether the series was deseasonalised and how much of the context is observed. It
returns log changes from the level for every step up to H_max; ``unscale`` adds the level and the
seasonal index back and undoes the log, the shift and the division.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_HISTORY = 12
PERIODS = (1, 4, 12)
STEP_FEATURES = ["log_change_from_level", "observed"]
CONTEXT_FEATURES = ["yearly", "quarterly", "monthly", "deseasonalised", "observed_fraction"]
# Network outputs are log changes; beyond +-12 (x160,000) a forecast means nothing, and capping keeps exp finite.
LOG_CHANGE_LIMIT = 12.0
SEASONALITY_Z = 1.645  # one-sided 90%, as in the M4 benchmarks
FLOAT_MAX = float(np.finfo(np.float64).max)
THETA_ALPHAS = np.linspace(0.05, 1.0, 20)
INTERVAL_LEVELS = (0.8, 0.95)
# The unit of the interval half-widths never falls below 0.1% (a constant history still gets an interval).
SCALE_FLOOR = 1e-3

SCALING = (
    "per series, on its last `context_window` values: divide by max |x|; if any value <= 0 add a shift "
    "(-min + max(range, 1e-3)) so all are positive; log; for period 4/12, when the M4 seasonality test "
    "(|acf(period)| > 1.645 sqrt((1 + 2 sum acf(1..period-1)^2) / n)) passes on the logs detrended by a "
    "2 x period centred moving average with >= 3 cycles of data, subtract the seasonal indices of that "
    "classical additive decomposition; subtract the level = mean of the last `period` deseasonalised logs. "
    "The network reads the last `window` steps (steps before a short history are 0 with observed = 0). "
    "Outputs are log changes from the level, clipped to +-12, re-seasonalised, exponentiated, un-shifted and "
    "multiplied back. The Theta method (SES with alpha on a grid of 20 from 0.05 to 1 by least one-step squared "
    "error, plus half the OLS trend slope) forecasts the deseasonalised log changes of the whole context window; "
    "the graph returns w * network + (1 - w) * theta with one w per period, and the 80%/95% interval half-widths "
    "per period and step in units of the series' mean absolute change over one period (lag 1 for period 1) of its "
    "deseasonalised logs (floor "
    "1e-3); bounds are point -+ half-width, mapped back like the point. A missing period is detected on "
    "the last `context_window` values with the same test: "
    "12 or 4 (the stronger autocorrelation if both pass), else 1."
)



@dataclass
class Scaling:
    """What ``unscale`` needs to map network outputs back to the units of each input window."""

    magnitude: np.ndarray  # (N,) the largest |value| of the window
    shift: np.ndarray  # (N,) added after dividing by the magnitude (0 for positive series)
    level: np.ndarray  # (N,) log level
    seasonal_phase: np.ndarray  # (N, period) log seasonal index by phase; phase 0 is the first future step
    period: np.ndarray  # (N,)
    history: np.ndarray  # (N, C) deseasonalised log changes from the level, NaN where not observed


def right_aligned(histories: list[np.ndarray], window: int) -> np.ndarray:
    """The last `window` values of each history, NaN-padded on the left: (N, window) float64."""
    out = np.full((len(histories), window), np.nan)
    for row, history in enumerate(histories):
        tail = np.asarray(history, dtype=np.float64)[-window:]
        out[row, window - len(tail) :] = tail
    return out


def windows_ending_at(values: np.ndarray, origins: np.ndarray, window: int) -> np.ndarray:
    """Windows of one series whose forecasts start at `origins` (history = values[:origin])."""
    padded = np.concatenate([np.full(window, np.nan), np.asarray(values, dtype=np.float64)])
    index = origins[:, None] + np.arange(window)[None, :]  # padded[origin : origin + window]
    return padded[index]


def autocorrelations(logs: np.ndarray, observed: np.ndarray, max_lag: int) -> np.ndarray:
    """Autocorrelations at lags 1..max_lag of each row's observed (right-aligned) values: (N, max_lag)."""
    count = observed.sum(axis=1)
    mean = np.where(observed, logs, 0.0).sum(axis=1) / np.maximum(count, 1)
    centred = np.where(observed, logs - mean[:, None], 0.0)
    variance = (centred**2).sum(axis=1)
    acf = np.stack([(centred[:, k:] * centred[:, :-k]).sum(axis=1) for k in range(1, max_lag + 1)], axis=1)
    return np.where(variance[:, None] > 0, acf / np.where(variance > 0, variance, 1.0)[:, None], 0.0)


def detrend(logs: np.ndarray, period: int) -> np.ndarray:
    """Logs minus their 2 x period centred moving average: (N, L - period), NaN where not computable.

    Column i belongs to window column i + period // 2."""
    weights = np.r_[0.5, np.ones(period - 1), 0.5] / period
    trend = np.lib.stride_tricks.sliding_window_view(logs, period + 1, axis=1) @ weights
    half = period // 2
    return logs[:, half : logs.shape[1] - half] - trend


def seasonal(detrended: np.ndarray, period: int) -> tuple[np.ndarray, np.ndarray]:
    """The M4 seasonality test on detrended logs: (passes, |acf(period)|) per row.

    Passes when |acf(period)| exceeds its 90% limit (Bartlett, lags 1..period-1) and at least two full
    cycles of detrended values (three of data) exist. The test runs on detrended values because on raw
    trending series every autocorrelation is high and the test loses its power."""
    valid = np.isfinite(detrended)
    count = valid.sum(axis=1)
    acf = autocorrelations(np.nan_to_num(detrended), valid, period)
    spread = 1.0 + 2.0 * (acf[:, : period - 1] ** 2).sum(axis=1)
    limit = SEASONALITY_Z * np.sqrt(spread / np.maximum(count, 1))
    strength = np.abs(acf[:, period - 1])
    return (count >= 2 * period) & (strength > limit), strength


def seasonal_indices(detrended: np.ndarray, window: int, period: int) -> np.ndarray:
    """Mean detrended log per phase, centred: (N, period); phase 0 is the first future step."""
    half = period // 2
    phases = (np.arange(half, window - half) - window) % period
    one_hot = (phases[:, None] == np.arange(period)[None, :]).astype(np.float64)
    valid = np.isfinite(detrended)
    sums = np.where(valid, detrended, 0.0) @ one_hot
    counts = valid.astype(np.float64) @ one_hot
    indices = sums / np.maximum(counts, 1.0)
    return indices - indices.mean(axis=1, keepdims=True)


def positive_logs(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logs of each row divided by its largest |value| and shifted positive when needed (NaN stays NaN)."""
    magnitude = np.nanmax(np.abs(windows), axis=1)
    magnitude = np.where(magnitude > 0, magnitude, 1.0)
    unit = windows / magnitude[:, None]
    low, high = np.nanmin(unit, axis=1), np.nanmax(unit, axis=1)
    shift = np.where(low > 0, 0.0, -low + np.maximum(high - low, 1e-3))
    return np.log(unit + shift[:, None]), magnitude, shift


def scale_windows(windows: np.ndarray, periods: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray, Scaling]:
    """NaN-padded context windows (N, C) and their periods (N,) -> the network's inputs and the scaling.

    Returns step features of the last `keep` steps (N, keep, 2), context features (N, 5) and ``Scaling``."""
    windows = np.asarray(windows, dtype=np.float64)
    periods = np.asarray(periods, dtype=np.int64)
    n, length = windows.shape
    observed = np.isfinite(windows)
    logs, magnitude, shift = positive_logs(windows)

    phase_index = np.zeros((n, max(PERIODS)))
    deseasonalised = np.zeros(n, dtype=bool)
    for period in PERIODS:
        rows = np.flatnonzero(periods == period)
        if period == 1 or rows.size == 0:
            continue
        detrended = detrend(logs[rows], period)
        passes, _ = seasonal(detrended, period)
        phase_index[rows[passes], :period] = seasonal_indices(detrended[passes], length, period)
        deseasonalised[rows[passes]] = True

    column_phase = (np.arange(length)[None, :] - length) % periods[:, None]
    adjusted = logs - np.take_along_axis(phase_index, column_phase, axis=1)
    recent = np.arange(length)[None, :] >= length - periods[:, None]
    level = np.nanmean(np.where(recent, adjusted, np.nan), axis=1)

    history = np.where(observed, adjusted - level[:, None], np.nan)
    change = np.where(observed, history, 0.0)
    steps = np.stack([change, observed.astype(np.float64)], axis=-1)[:, -keep:].astype(np.float32)
    context = np.stack(
        [periods == 1, periods == 4, periods == 12, deseasonalised, observed.mean(axis=1)], axis=1
    ).astype(np.float32)
    return steps, context, Scaling(magnitude, shift, level, phase_index, periods, history)


def theta_changes(history: np.ndarray, horizon: int) -> np.ndarray:
    """The Theta method on NaN-left-padded rows (N, C): forecasts for steps 1..horizon, (N, horizon).

    SES starts at the first observed value; alpha minimises the one-step squared error over a grid;
    the drift is half the OLS slope, with the SES finite-sample correction of Hyndman and Billah."""
    history = np.asarray(history, dtype=np.float64)
    rows, length = history.shape
    observed = np.isfinite(history)
    count = observed.sum(axis=1)
    time = np.arange(length, dtype=np.float64)[None, :]
    mean_time = np.where(observed, time, 0.0).sum(axis=1) / np.maximum(count, 1)
    mean_value = np.where(observed, history, 0.0).sum(axis=1) / np.maximum(count, 1)
    centred_time = np.where(observed, time - mean_time[:, None], 0.0)
    spread = (centred_time**2).sum(axis=1)
    covariance = (centred_time * np.where(observed, history - mean_value[:, None], 0.0)).sum(axis=1)
    slope = np.divide(covariance, spread, out=np.zeros(rows), where=spread > 0)

    level, squared_error = smoothing_grid(history, observed)
    best = squared_error.argmin(axis=1)
    alpha = THETA_ALPHAS[best][:, None]
    smoothed = np.nan_to_num(level[np.arange(rows), best])[:, None]
    steps = np.arange(1, horizon + 1, dtype=np.float64)[None, :]
    drift = 0.5 * slope[:, None] * (steps - 1.0 + 1.0 / alpha - (1.0 - alpha) ** count[:, None] / alpha)
    return smoothed + drift


def smoothing_grid(history: np.ndarray, observed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Simple exponential smoothing of each row (N, C) with every alpha of THETA_ALPHAS: the final levels and
    the sums of squared one-step errors, both (N, alphas). A level starts at the row's first observed value."""
    rows, length = history.shape
    first = observed.argmax(axis=1)
    if rows == 1 and observed[0, first[0]] and observed[0, first[0]:].all():
        return _smoothing_grid_of_one(history[0, first[0]:])
    alphas = THETA_ALPHAS[None, :]
    level = np.full((rows, THETA_ALPHAS.size), np.nan)
    squared_error = np.zeros((rows, THETA_ALPHAS.size))
    for column in range(length):
        value, seen = history[:, column : column + 1], observed[:, column : column + 1]
        started = np.isfinite(level)
        error = np.where(seen & started, value - level, 0.0)
        squared_error += error**2
        level = np.where(seen & ~started, value, level + alphas * error)
    return level, squared_error


def _smoothing_grid_of_one(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """smoothing_grid of one row observed throughout (a served request): the same operations in the same
    order, so the same bits, without the per-column masks (a third of the time of a forecast request)."""
    level = np.full(THETA_ALPHAS.size, values[0])
    squared_error = np.zeros(THETA_ALPHAS.size)
    error, scratch = np.empty_like(level), np.empty_like(level)
    for value in values[1:].tolist():
        np.subtract(value, level, out=error)
        np.multiply(error, error, out=scratch)
        np.add(squared_error, scratch, out=squared_error)
        np.multiply(THETA_ALPHAS, error, out=scratch)
        np.add(level, scratch, out=level)
    return level[None, :], squared_error[None, :]


def future_seasonal(scaling: Scaling, horizon: int) -> np.ndarray:
    """Log seasonal index of steps 1..horizon: (N, horizon)."""
    phases = np.arange(horizon)[None, :] % scaling.period[:, None]
    return np.take_along_axis(scaling.seasonal_phase, phases, axis=1)


def scale_targets(future: np.ndarray, scaling: Scaling) -> np.ndarray:
    """Future values (N, H) in series units -> the log changes the network should output (NaN kept)."""
    unit = np.asarray(future, dtype=np.float64) / scaling.magnitude[:, None] + scaling.shift[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        logs = np.log(unit)
    return logs - future_seasonal(scaling, future.shape[1]) - scaling.level[:, None]


def unscale(outputs: np.ndarray, scaling: Scaling) -> np.ndarray:
    """Network outputs (N, H) -> forecasts (N, H) in the units of each window; always finite."""
    change = np.clip(np.nan_to_num(np.asarray(outputs, dtype=np.float64)), -LOG_CHANGE_LIMIT, LOG_CHANGE_LIMIT)
    logs = scaling.level[:, None] + future_seasonal(scaling, change.shape[1]) + change
    unit = np.exp(logs) - scaling.shift[:, None]
    with np.errstate(over="ignore"):
        values = unit * scaling.magnitude[:, None]
    return np.clip(values, -FLOAT_MAX, FLOAT_MAX)


def residual_scale(history: np.ndarray, periods: np.ndarray) -> np.ndarray:
    """Mean |x[t] - x[t - period]| of each row's observed values (N,), lag 1 for period 1, at least SCALE_FLOOR.

    On validation tails this unit gave narrower intervals at the same coverage (a lower interval score) than
    the one-step change, a detrended standard deviation or no unit at all."""
    history = np.asarray(history, dtype=np.float64)
    periods = np.asarray(periods, dtype=np.int64)
    scale = np.full(len(history), SCALE_FLOOR)
    for period in np.unique(periods):
        rows = np.flatnonzero(periods == period)
        changes = np.abs(history[rows, period:] - history[rows, :-period])
        count = np.isfinite(changes).sum(axis=1)
        total = np.where(np.isfinite(changes), changes, 0.0).sum(axis=1)
        scale[rows] = np.maximum(total / np.maximum(count, 1), SCALE_FLOOR)
    return scale


def unscale_intervals(outputs: np.ndarray, scaling: Scaling, scale: np.ndarray) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    """Graph outputs (N, 3, H) -> {level: (lower (N, H), upper (N, H))} in the units of each window.

    Row 0 is the point forecast (log change), rows 1 and 2 the half-widths for INTERVAL_LEVELS in units of
    `scale`; bounds are the point -+ half-width, mapped back like the point, so lower <= point <= upper."""
    outputs = np.nan_to_num(np.asarray(outputs, dtype=np.float64))
    point = outputs[:, 0]
    bounds = {}
    for row, level in enumerate(INTERVAL_LEVELS, start=1):
        half = np.clip(outputs[:, row], 0.0, 2 * LOG_CHANGE_LIMIT) * scale[:, None]
        bounds[level] = (unscale(point - half, scaling), unscale(point + half, scaling))
    return bounds


def detect_period(series: np.ndarray, window: int) -> int:
    """12 or 4 when the seasonality test passes on the last `window` values (the stronger one if both), else 1."""
    logs, _, _ = positive_logs(right_aligned([series], window))
    candidates = []
    for period in (12, 4):
        passes, strength = seasonal(detrend(logs, period), period)
        if passes[0]:
            candidates.append((strength[0], period))
    return max(candidates)[1] if candidates else 1


