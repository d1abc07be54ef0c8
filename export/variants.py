"""Faster variants of an exported model, each measured and guarded before it may be served.

A variant is made from the fp32 ONNX file (graph fusion, INT8 quantisation) and timed against fp32
in-process with the serving thread count at the model's default batch size. A variant whose outputs
depend on its batch mates (dynamic quantisation scales activations by the whole batch) is wrapped so that
its graph runs the rows one at a time (rows_one_at_a_time), then measured again. A variant that is not at
least MIN_SPEEDUP times faster is dropped; of those kept, the fastest whose headline metric on the
validation split is within the guard of fp32's is served by default.

The choice (choose_variants) sees the validation split only. The test split is read afterwards
(report_variants), once the choice is made, to report each kept variant's held-out metrics and its
outputs against fp32's.
"""

from __future__ import annotations

import logging
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from export.build import log
from service.cpus import physical_cores
from service.manifest import VariantParity, VariantRecord, sha256_of

MIN_SPEEDUP = 1.1
# A served variant must score a row the same alone as in a batch: the batcher mixes requests.
BATCH_TOLERANCE = 1e-4
Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class VariantCandidate:
    name: str
    description: str
    make: Callable[[Path, Path], None]  # (fp32 model, output path)


@dataclass(frozen=True)
class Guard:
    metric: str
    higher_is_better: bool
    absolute: float = 0.0  # e.g. 0.01 = one accuracy point
    relative: float = 0.0  # e.g. 0.02 = 2 % of the fp32 value

    def holds(self, fp32: float, variant: float) -> bool:
        slack = self.absolute + self.relative * abs(fp32)
        return variant >= fp32 - slack if self.higher_is_better else variant <= fp32 + slack

    def describe(self) -> str:
        bound = f"{self.absolute:g}" if self.absolute else f"{self.relative:.0%} of fp32's value"
        side = "below" if self.higher_is_better else "above"
        return (
            f"validation {self.metric} no more than {bound} {side} fp32's (chosen on the validation split; test "
            f"figures are reported, never used to choose), at least {MIN_SPEEDUP}x fp32's "
            f"throughput (in-process, {physical_cores()} intra-op threads, the model's default batch size), and "
            f"a row's outputs alone within {BATCH_TOLERANCE:g} of its outputs in a batch, or else its graph wrapped to "
            f"run the rows one at a time (then timed and scored that way)"
        )


@dataclass(frozen=True)
class Split:
    """One split of the held-out data as the variants see it."""

    feeds: list[Feeds]  # the model's inputs, in batches (outputs against fp32's, the batch test)
    evaluate: Callable[[ort.InferenceSession, int], dict[str, float]]  # (session, rows per run) -> metrics, via the task


@dataclass
class VariantsResult:
    records: list[VariantRecord]
    served: str
    rejected: dict[str, str]
    guard: str
    fp32_validation: dict[str, float]  # fp32's metrics on the validation split, the guard's reference


@dataclass(frozen=True)
class KeptVariant:
    """A variant that passed the speed rule, with what the choice was made on."""

    candidate: VariantCandidate
    path: Path
    rows_one_at_a_time: bool
    batch_max_abs_diff: float
    throughput_ratio: float
    batch_size: int
    validation_metrics: dict[str, float]
    within_guard: bool


@dataclass(frozen=True)
class VariantChoice:
    kept: list[KeptVariant]
    served: str
    rejected: dict[str, str]
    fp32_validation: dict[str, float]


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = physical_cores()
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def run_all(model: ort.InferenceSession, batches: list[Feeds]) -> np.ndarray:
    return np.concatenate([model.run(None, feeds)[0] for feeds in batches])


def batch_difference(model: ort.InferenceSession, feeds: Feeds, rows: int = 32) -> float:
    """Largest |output alone - output in the batch| over the first `rows` rows of one batch."""
    count = min(rows, len(next(iter(feeds.values()))))
    batch = {name: array[:count] for name, array in feeds.items()}
    together = model.run(None, batch)[0]
    alone = np.concatenate([model.run(None, {n: a[i : i + 1] for n, a in batch.items()})[0] for i in range(count)])
    return float(np.abs(together - alone).max())


def throughput_ratio(
    reference: ort.InferenceSession, candidate: ort.InferenceSession, feeds: Feeds, rounds: int = 5,
) -> float:
    """Rows/s of candidate over reference, both on the same batch, in interleaved rounds so that machine
    noise hits both alike."""

    def rate(model: ort.InferenceSession, inputs: Feeds, seconds: float = 0.3) -> float:
        rows = len(next(iter(inputs.values())))
        model.run(None, inputs)
        started, runs = time.perf_counter(), 0
        while time.perf_counter() - started < seconds:
            model.run(None, inputs)
            runs += 1
        return runs * rows / (time.perf_counter() - started)

    ratios = [rate(candidate, feeds) / rate(reference, feeds) for _ in range(rounds)]
    return round(statistics.median(ratios), 3)


def choose_variants(
    out_dir: Path,
    fp32_path: Path,
    candidates: list[VariantCandidate],
    guard: Guard,
    validation: Split,
    bench_feeds: Feeds,
    lengths_from: str | None = None,
) -> VariantChoice:
    """Make, wrap, time and guard each candidate, and pick the served one: the validation split only."""
    fp32 = session(fp32_path)
    batch_size = len(next(iter(bench_feeds.values())))
    fp32_validation = validation.evaluate(fp32, batch_size)
    kept, rejected = [], {}
    for candidate in candidates:
        path = out_dir / f"model.{candidate.name}.onnx"
        try:
            candidate.make(fp32_path, path)
            model = session(path)
        except Exception as exc:  # noqa: BLE001 - a variant that cannot be made is reported, not fatal
            rejected[candidate.name] = f"could not be built: {type(exc).__name__}: {exc}"[:300]
            path.unlink(missing_ok=True)
            continue
        looped = False
        batch_diff = batch_difference(model, validation.feeds[0])
        if batch_diff > BATCH_TOLERANCE:
            # Its outputs depend on the rest of its batch: run the rows one at a time, inside one session run.
            log(f"variant {candidate.name}: a row alone differs by {batch_diff:.1e} from the row in a batch; "
                f"wrapping it to run the rows one at a time")
            rows_one_at_a_time(path, path, lengths_from)
            model, looped = session(path), True
            batch_diff = batch_difference(model, validation.feeds[0])
            if batch_diff > BATCH_TOLERANCE:
                rejected[candidate.name] = f"a row alone differs by {batch_diff:.1e} from the row in a batch, even looped"
                path.unlink()
                continue
        ratio = throughput_ratio(fp32, model, bench_feeds)
        metrics = validation.evaluate(model, batch_size)
        within = guard.holds(fp32_validation[guard.metric], metrics[guard.metric])
        log(f"variant {candidate.name}: {ratio:.2f}x fp32 at batch {batch_size}, validation {guard.metric} "
            f"{metrics[guard.metric]:.4f} (fp32 {fp32_validation[guard.metric]:.4f}), within guard: {within}, "
            f"rows one at a time: {looped}")
        if ratio < MIN_SPEEDUP:
            rejected[candidate.name] = (
                f"{ratio:.2f}x fp32's throughput at batch {batch_size} (< {MIN_SPEEDUP}x); "
                f"validation {guard.metric} {metrics[guard.metric]:.4f}"
            )
            path.unlink()
            continue
        kept.append(KeptVariant(candidate, path, looped, batch_diff, ratio, batch_size, metrics, within))
    eligible = [k for k in kept if k.within_guard]
    served = max(eligible, key=lambda k: k.throughput_ratio).candidate.name if eligible else "fp32"
    return VariantChoice(kept, served, rejected, fp32_validation)


def report_variants(choice: VariantChoice, fp32_path: Path, test: Split, guard: Guard, classifier: bool) -> VariantsResult:
    """Each kept variant's held-out metrics and outputs against fp32's, on the test split, after the choice."""
    reference = run_all(session(fp32_path), test.feeds)
    records = []
    for kept in choice.kept:
        model = session(kept.path)
        outputs = run_all(model, test.feeds)
        difference = np.abs(outputs - reference)
        records.append(VariantRecord(
            name=kept.candidate.name,
            model_file=kept.path.name,
            sha256=sha256_of(kept.path),
            description=kept.candidate.description,
            metrics=test.evaluate(model, kept.batch_size),
            validation_metrics=kept.validation_metrics,
            parity=VariantParity(
                n=int(len(reference)),
                max_abs_diff=float(difference.max()),
                mean_abs_diff=float(difference.mean()),
                argmax_agreement=float(np.mean(outputs.argmax(-1) == reference.argmax(-1))) if classifier else None,
                batch_max_abs_diff=kept.batch_max_abs_diff,
            ),
            throughput_ratio=kept.throughput_ratio,
            batch_size=kept.batch_size,
            within_guard=kept.within_guard,
            rows_one_at_a_time=kept.rows_one_at_a_time,
        ))
    return VariantsResult(records, choice.served, choice.rejected, guard.describe(), choice.fp32_validation)


# --- ways to make a variant ---------------------------------------------------------------------


@contextmanager
def _quiet_quantizer():
    """The quantizer logs advice to the root logger at WARNING on every call; keep build logs readable."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def fused_transformer(num_heads: int, hidden_size: int) -> Callable[[Path, Path], None]:
    """ONNX Runtime's transformer optimizer: fused attention, embedding and skip LayerNorm, bias GELU."""

    def make(source: Path, target: Path) -> None:
        from onnxruntime.transformers import optimizer

        optimized = optimizer.optimize_model(str(source), model_type="bert", num_heads=num_heads, hidden_size=hidden_size)
        optimized.save_model_to_file(str(target))

    return make


def dynamic_int8(op_types: list[str] | None = None, before: Callable[[Path, Path], None] | None = None) -> Callable[[Path, Path], None]:
    """INT8 weights, activations quantised on the fly (onnxruntime.quantization.quantize_dynamic)."""

    def make(source: Path, target: Path) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        if before is not None:
            staged = target.with_suffix(".staged.onnx")
            before(source, staged)
            source = staged
        try:
            with _quiet_quantizer():
                quantize_dynamic(
                    str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=op_types,
                    extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
                )
        finally:
            if before is not None:
                source.unlink(missing_ok=True)

    return make


def static_int8(calibration: list[Feeds]) -> Callable[[Path, Path], None]:
    """INT8 weights and activations in QDQ form, ranges calibrated on training inputs (quantize_static)."""

    def make(source: Path, target: Path) -> None:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.batches = iter(calibration)

            def get_next(self):
                return next(self.batches, None)

        with _quiet_quantizer():
            quantize_static(
                str(source), str(target), Reader(), quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
            )

    return make


def rows_one_at_a_time(source: Path, target: Path, lengths_from: str | None = None) -> None:
    """Wrap a graph in an ONNX Loop over its batch that runs it on one row at a time, in one session run.

    Dynamic quantisation scales a batch's activations by the whole batch, so such a variant scores a row
    differently beside other rows. Looping inside the graph keeps each row alone (its outputs do not
    depend on its batch mates) in one session call per batch rather than one per row. With lengths_from
    (an attention mask padded on the right), each row is also cut to its own length along axis 1, so it
    is scored exactly as it would be alone and unpadded. Each output must have the same shape for every row
    (logits, not per-token outputs): the loop stacks them.
    """
    original = onnx.load(str(source))
    graph = original.graph
    inputs, outputs = [i.name for i in graph.input], [o.name for o in graph.output]
    inner = {name: f"row_loop/{name}" for name in inputs + outputs}

    def const(name: str, values: list[int], dims: list[int] | None = None) -> onnx.TensorProto:
        return helper.make_tensor(name, TensorProto.INT64, [len(values)] if dims is None else dims, values)

    # Loop body: iteration i slices row i (and, with a mask, its unpadded length) of every input.
    body_nodes = [
        helper.make_node("Unsqueeze", ["row_loop/i", "row_loop/axis0"], ["row_loop/start"]),
        helper.make_node("Add", ["row_loop/start", "row_loop/one"], ["row_loop/end"]),
    ]
    if lengths_from:
        body_nodes += [
            helper.make_node("Gather", ["row_loop/lengths", "row_loop/i"], ["row_loop/length"]),
            helper.make_node("Unsqueeze", ["row_loop/length", "row_loop/axis0"], ["row_loop/length1"]),
            helper.make_node("Concat", ["row_loop/start", "row_loop/zero"], ["row_loop/starts"], axis=0),
            helper.make_node("Concat", ["row_loop/end", "row_loop/length1"], ["row_loop/ends"], axis=0),
        ]
        bounds = ["row_loop/starts", "row_loop/ends", "row_loop/axes01"]
    else:
        bounds = ["row_loop/start", "row_loop/end", "row_loop/axis0"]
    body_nodes += [helper.make_node("Slice", [name, *bounds], [inner[name]]) for name in inputs]
    for node in graph.node:
        renamed = onnx.NodeProto()
        renamed.CopyFrom(node)
        renamed.input[:] = [inner.get(name, name) for name in node.input]
        renamed.output[:] = [inner.get(name, name) for name in node.output]
        body_nodes.append(renamed)
    body_nodes.append(helper.make_node("Identity", ["row_loop/cond"], ["row_loop/cond_out"]))
    body = helper.make_graph(
        body_nodes,
        "row",
        [helper.make_tensor_value_info("row_loop/i", TensorProto.INT64, []),
         helper.make_tensor_value_info("row_loop/cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("row_loop/cond_out", TensorProto.BOOL, [])]
        + [helper.make_tensor_value_info(inner[o.name], o.type.tensor_type.elem_type, None) for o in graph.output],
        initializer=[*graph.initializer, const("row_loop/axis0", [0]), const("row_loop/one", [1]),
                     const("row_loop/zero", [0]), const("row_loop/axes01", [0, 1])],
    )
    outer_nodes = [
        helper.make_node("Shape", [inputs[0]], ["row_loop/shape"]),
        helper.make_node("Gather", ["row_loop/shape", "row_loop/zero_scalar"], ["row_loop/rows"]),
    ]
    if lengths_from:
        outer_nodes.insert(0, helper.make_node("ReduceSum", [lengths_from, "row_loop/axis1"], ["row_loop/lengths"], keepdims=0))
    outer_nodes += [
        helper.make_node("Loop", ["row_loop/rows", "row_loop/true"], [f"row_loop/stacked/{o}" for o in outputs], body=body),
        *[helper.make_node("Squeeze", [f"row_loop/stacked/{o}", "row_loop/axis1"], [o]) for o in outputs],
    ]
    wrapped = helper.make_graph(
        outer_nodes, graph.name, list(graph.input), list(graph.output),
        initializer=[const("row_loop/axis1", [1]), const("row_loop/zero_scalar", [0], []),
                     helper.make_tensor("row_loop/true", TensorProto.BOOL, [], [True])],
    )
    model = helper.make_model(wrapped, opset_imports=list(original.opset_import), ir_version=original.ir_version)
    onnx.save(model, str(target))
