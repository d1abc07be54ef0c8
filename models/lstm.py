"""A global LSTM forecaster (one network for every series) and its training loop.

Training examples are windows cut from the training part of every series at many forecast origins,
scaled by ``service.preprocessing.series.scale_windows`` (the service's own code). Batches draw a series
uniformly, then one of its origins, so long series do not dominate. The loss is the mean absolute
error of log changes (close to sMAPE / 100 for small errors) over the steps that exist in the
training part; the validation tail of every series picks the best checkpoint. The graph that is exported
mixes the averaged networks with the Theta method (computed in the service's pre-processing) by one weight
per period, chosen on the same validation tails.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models.ensemble import averaged
from models.series_data import Catalogue, Series, load_catalogue
from models.training import Trained, TrainingContextLike, progress, seed_everything
from service.preprocessing.series import (
    CONTEXT_FEATURES,
    INTERVAL_LEVELS,
    MIN_HISTORY,
    PERIODS,
    STEP_FEATURES,
    residual_scale,
    scale_targets,
    scale_windows,
    theta_changes,
    unscale,
    windows_ending_at,
)

COMBINATION_GRID = np.linspace(0.0, 1.0, 21)  # candidate network weights per period


class ForecastLSTM(nn.Module):
    """(window (B, L, 2), context (B, C)) -> log changes from the level for steps 1..H_max (B, H_max)."""

    def __init__(self, window: int, step_features: int, context_features: int, hidden: int, horizon: int, dropout: float):
        super().__init__()
        self.lstm = nn.LSTM(step_features + context_features, hidden, batch_first=True)
        self.head = nn.Sequential(
            nn.Linear(hidden + context_features, 2 * hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(2 * hidden, horizon),
        )
        # A linear map from the scaled window straight to the outputs: trends and AR structure come cheap.
        self.linear = nn.Linear(window, horizon)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, window: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        repeated = context[:, None, :].expand(-1, window.shape[1], -1)
        _, (hidden, _) = self.lstm(torch.cat([window, repeated], dim=-1))
        return self.head(torch.cat([hidden[-1], context], dim=-1)) + self.linear(window[..., 0])


class ThetaCombination(nn.Module):
    """(window, context, theta (B, H_max)) -> (B, 3, H_max): the point forecast w * network + (1 - w) * theta,
    then the 80% and 95% interval half-widths; w and the half-widths by period.

    The period comes from the context's one-hot columns (yearly, quarterly, monthly), in PERIODS order; it
    selects by multiplication and a sum (no MatMul, so weight quantisation leaves these constants alone)."""

    def __init__(self, network: nn.Module, horizon: int):
        super().__init__()
        self.network = network
        self.register_buffer("weights", torch.ones(len(PERIODS)))
        self.register_buffer("half_widths", torch.ones(len(PERIODS), len(INTERVAL_LEVELS), horizon))

    def point(self, window: torch.Tensor, context: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        one_hot = context[:, : len(PERIODS)]
        weight = (one_hot * self.weights).sum(dim=1, keepdim=True)
        return weight * self.network(window, context) + (1.0 - weight) * theta

    def forward(self, window: torch.Tensor, context: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        one_hot = context[:, : len(PERIODS), None, None]
        half_widths = (one_hot * self.half_widths[None]).sum(dim=1)
        return torch.cat([self.point(window, context, theta)[:, None, :], half_widths], dim=1)


def interval_half_widths(point: np.ndarray, scaling, actuals: list[np.ndarray], horizon: int) -> np.ndarray:
    """Split-conformal half-widths (periods, levels, horizon) from validation errors of the point forecast.

    Per period and step: the ceil((n + 1) level) / n empirical quantile of |actual - forecast| in logs over
    the series' residual_scale. Steps past the validation tail grow from its last step like sqrt(step)."""
    scale = residual_scale(scaling.history, scaling.period)
    padded = np.full((len(actuals), horizon), np.nan)
    for row, actual in enumerate(actuals):
        padded[row, : min(len(actual), horizon)] = actual[:horizon]
    errors = np.abs(scale_targets(padded, scaling) - point[:, :horizon]) / scale[:, None]
    table = np.ones((len(PERIODS), len(INTERVAL_LEVELS), horizon))
    for p_index, period in enumerate(PERIODS):
        rows = errors[scaling.period == period]
        known = np.flatnonzero(np.isfinite(rows).sum(axis=0) > 0) if len(rows) else np.array([], dtype=int)
        if known.size == 0:
            continue
        for l_index, level in enumerate(INTERVAL_LEVELS):
            for step in known:
                column = rows[:, step][np.isfinite(rows[:, step])]
                rank = min(len(column), int(np.ceil((len(column) + 1) * level)))
                table[p_index, l_index, step] = np.sort(column)[rank - 1]
            last = known[-1]
            beyond = np.arange(last + 1, horizon)
            table[p_index, l_index, beyond] = table[p_index, l_index, last] * np.sqrt((beyond + 1) / (last + 1))
    return table


def combination_weights(network_out: np.ndarray, theta: np.ndarray, scaling, actuals: list[np.ndarray]) -> np.ndarray:
    """Per period, the network weight on COMBINATION_GRID with the lowest mean validation sMAPE."""
    chosen = np.ones(len(PERIODS))
    for index, period in enumerate(PERIODS):
        rows = np.flatnonzero(scaling.period == period)
        if rows.size == 0:
            continue
        subset = [actuals[r] for r in rows]
        errors = [
            mean_smape(w * network_out[rows] + (1.0 - w) * theta[rows], _rows(scaling, rows), subset)
            for w in COMBINATION_GRID
        ]
        chosen[index] = COMBINATION_GRID[int(np.argmin(errors))]
    return chosen


def _rows(scaling, rows: np.ndarray):
    """The scaling of a subset of rows (every field of a Scaling is per row)."""
    return type(scaling)(**{name: value[rows] for name, value in vars(scaling).items()})


@dataclass
class Examples:
    """Scaled network inputs with what is needed to score or train on them."""

    steps: np.ndarray  # (N, L, 2) float32
    context: np.ndarray  # (N, C) float32
    targets: np.ndarray  # (N, H_max) float32 scaled targets, NaN where the step is not available
    owner: np.ndarray  # (N,) index of the series each example comes from


def training_examples(series: list[Series], window: int, context_window: int, horizon: int, max_origins: int) -> Examples:
    """Windows at up to `max_origins` evenly spread origins inside each series' training part."""
    steps, contexts, targets, owners = [], [], [], []
    for index, item in enumerate(series):
        train, _, _ = item.split()
        origins = np.arange(MIN_HISTORY, len(train))
        if len(origins) > max_origins:
            origins = origins[np.linspace(0, len(origins) - 1, max_origins).round().astype(int)]
        history = windows_ending_at(train, origins, context_window)
        future = windows_ending_at(np.r_[train, np.full(horizon, np.nan)], origins + horizon, horizon)
        step, context, scaling = scale_windows(history, np.full(len(origins), item.period), keep=window)
        steps.append(step)
        contexts.append(context)
        targets.append(scale_targets(future, scaling).astype(np.float32))
        owners.append(np.full(len(origins), index))
    return Examples(np.concatenate(steps), np.concatenate(contexts), np.concatenate(targets), np.concatenate(owners))


def tail_inputs(series: list[Series], window: int, context_window: int, which: str):
    """Inputs at the validation origin (history without both tails) or the test origin (without the test tail)."""
    histories, actuals = [], []
    for item in series:
        train, validation, test = item.split()
        if which == "validation":
            histories.append(train)
            actuals.append(validation)
        else:
            histories.append(np.r_[train, validation])
            actuals.append(test)
    windows = np.full((len(series), context_window), np.nan)
    for row, history in enumerate(histories):
        tail = history[-context_window:]
        windows[row, context_window - len(tail) :] = tail
    steps, context, scaling = scale_windows(windows, np.array([s.period for s in series]), keep=window)
    return steps, context, scaling, actuals


def smape(actual: np.ndarray, forecast: np.ndarray) -> float:
    """Symmetric MAPE in percent (0..200), 0 where both are 0."""
    denominator = np.abs(actual) + np.abs(forecast)
    ratio = np.divide(2.0 * np.abs(actual - forecast), denominator, out=np.zeros_like(denominator), where=denominator > 0)
    return float(100.0 * ratio.mean())


def predict(model: nn.Module, *inputs: np.ndarray, batch: int = 4096) -> np.ndarray:
    """The model's outputs for float32 inputs (any number, batch first), in chunks."""
    model.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(inputs[0]), batch):
            chunk = [torch.from_numpy(np.ascontiguousarray(x[start : start + batch], dtype=np.float32)) for x in inputs]
            outputs.append(model(*chunk).numpy())
    return np.concatenate(outputs)


def mean_smape(outputs: np.ndarray, scaling, actuals: list[np.ndarray]) -> float:
    forecasts = unscale(outputs, scaling)
    return float(np.mean([smape(a, f[: len(a)]) for a, f in zip(actuals, forecasts)]))


def train_lstm(examples: Examples, validation, hp: dict, seed: int) -> tuple[ForecastLSTM, list[dict]]:
    """Adam with cosine decay; evaluates validation sMAPE every `eval_every` steps, returns the best."""
    rng = seed_everything(seed)
    val_steps, val_context, val_scaling, val_actuals = validation
    model = ForecastLSTM(
        window=examples.steps.shape[1],
        step_features=examples.steps.shape[2],
        context_features=examples.context.shape[1],
        hidden=hp["hidden"],
        horizon=examples.targets.shape[1],
        dropout=hp["dropout"],
    )
    optimiser = torch.optim.AdamW(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=hp["lr"], total_steps=hp["steps"], pct_start=0.1)

    owners = examples.owner
    series_ids, first = np.unique(owners, return_index=True)
    counts = np.bincount(owners)[series_ids]
    steps_t = torch.from_numpy(examples.steps)
    context_t = torch.from_numpy(examples.context)
    targets_t = torch.from_numpy(np.nan_to_num(examples.targets, nan=0.0))
    mask_t = torch.from_numpy(np.isfinite(examples.targets).astype(np.float32))

    history: list[dict] = []
    best = (float("inf"), copy.deepcopy(model.state_dict()), 0)
    started = time.perf_counter()
    bar = progress(range(1, hp["steps"] + 1), desc=f"lstm seed {seed}", unit="step")
    running = 0.0
    for step in bar:
        model.train()
        pick = rng.integers(0, len(series_ids), hp["batch_size"])
        rows = torch.from_numpy(first[pick] + (rng.random(hp["batch_size"]) * counts[pick]).astype(np.int64))
        prediction = model(steps_t[rows], context_t[rows])
        mask = mask_t[rows]
        loss = ((prediction - targets_t[rows]).abs() * mask).sum() / mask.sum().clamp(min=1.0)
        optimiser.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), hp["clip"])
        optimiser.step()
        schedule.step()
        running = 0.98 * running + 0.02 * loss.item() if step > 1 else loss.item()
        if step % hp["eval_every"] == 0 or step == hp["steps"]:
            score = mean_smape(predict(model, val_steps, val_context), val_scaling, val_actuals)
            history.append({"step": step, "loss": round(running, 5), "val_smape": round(score, 4), "s": round(time.perf_counter() - started, 1)})
            if score < best[0]:
                best = (score, copy.deepcopy(model.state_dict()), step)
            bar.set_postfix(loss=f"{running:.4f}", val_smape=f"{score:.3f}", best=f"{best[0]:.3f}@{best[2]}")
    model.load_state_dict(best[1])
    return model.eval(), history


def architecture(hp: dict) -> nn.Module:
    """The exported graph: `members` LSTMs averaged (one LSTM when members is 1), mixed with Theta."""
    return ThetaCombination(averaged([
        ForecastLSTM(
            window=hp["window"],
            step_features=len(STEP_FEATURES),
            context_features=len(CONTEXT_FEATURES),
            hidden=hp["hidden"],
            horizon=hp["horizon_max"],
            dropout=hp["dropout"],
        )
        for _ in range(hp["members"])
    ]), hp["horizon_max"])


def training_data(hp: dict) -> tuple[Catalogue, Examples]:
    catalogue = load_catalogue(hp["series_per_frequency"] or None)
    examples = training_examples(catalogue.series, hp["window"], hp["context_window"], hp["horizon_max"], hp["max_origins"])
    return catalogue, examples


def train(ctx: TrainingContextLike) -> Trained:
    """Stage 1 of the forecast-lstm build: every seed on the training windows, best validation step each."""
    hp = ctx.hyperparameters
    # Batches of this small LSTM are too small to split: a second thread mostly waits on the first,
    # and on busy shared cores it made training several times slower.
    torch.set_num_threads(1)
    seed_everything(hp["seed"])
    started = time.perf_counter()
    catalogue, examples = training_data(hp)
    validation = tail_inputs(catalogue.series, hp["window"], hp["context_window"], "validation")
    data_s = time.perf_counter() - started
    members, histories = [], []
    for member in range(hp["members"]):
        model, history = train_lstm(examples, validation, hp, hp["seed"] + member)
        members.append(model)
        histories.append(history)
    combined = ThetaCombination(averaged(members), hp["horizon_max"])
    val_steps, val_context, val_scaling, val_actuals = validation
    theta = theta_changes(val_scaling.history, hp["horizon_max"]).astype(np.float32)
    network_out = predict(combined.network, val_steps, val_context)
    weights = combination_weights(network_out, theta, val_scaling, val_actuals)
    combined.weights.copy_(torch.from_numpy(weights).float())
    point = predict(combined, val_steps, val_context, theta)[:, 0]
    half_widths = interval_half_widths(point, val_scaling, val_actuals, hp["horizon_max"])
    combined.half_widths.copy_(torch.from_numpy(half_widths).float())
    return Trained(
        combined.eval(),
        {
            "histories": histories,
            "combination_weights": {str(p): float(w) for p, w in zip(PERIODS, weights)},
            "interval_half_widths": {str(p): np.round(half_widths[i], 4).tolist() for i, p in enumerate(PERIODS)},
            "validation_smape": {
                "network": round(mean_smape(network_out, val_scaling, val_actuals), 4),
                "theta": round(mean_smape(theta, val_scaling, val_actuals), 4),
                "combined": round(mean_smape(point, val_scaling, val_actuals), 4),
            },
            "data_s": round(data_s, 1),
            "duration_s": round(time.perf_counter() - started - data_s, 1),
        },
    )
