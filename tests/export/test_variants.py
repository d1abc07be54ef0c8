"""Variants: the guard, the choice of the served variant, and the manifests that record both."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from export.variants import (
    BATCH_TOLERANCE,
    MIN_SPEEDUP,
    Guard,
    Split,
    VariantCandidate,
    choose_variants,
    report_variants,
    rows_one_at_a_time,
)
from service.cpus import physical_cores
from service.manifest import ModelManifest, sha256_of
from tests.conftest import MODEL_NAMES, start_server, wait_for_loading_to_end


def test_guard_for_accuracy_allows_one_point():
    guard = Guard("accuracy", higher_is_better=True, absolute=0.01)
    assert guard.holds(0.988, 0.980) and guard.holds(0.988, 0.995)
    assert not guard.holds(0.988, 0.977)


def test_guard_for_smape_allows_two_percent_relative():
    guard = Guard("smape", higher_is_better=False, relative=0.02)
    assert guard.holds(7.0, 7.13) and guard.holds(7.0, 6.0)
    assert not guard.holds(7.0, 7.15)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_manifest_variants_meet_the_rule(api_repository, name):
    version_dir = api_repository / name / "1"
    manifest = ModelManifest.load(version_dir)
    headline = {"mnist-cnn": "accuracy", "forecast-lstm": "smape", "sentiment-transformer": "binary_accuracy"}[name]
    guard = {
        "mnist-cnn": Guard("accuracy", True, absolute=0.01),
        "forecast-lstm": Guard("smape", False, relative=0.02),
        "sentiment-transformer": Guard("binary_accuracy", True, absolute=0.01),
    }[name]
    assert manifest.guard == guard.describe()
    for variant in manifest.variants:
        assert sha256_of(version_dir / variant.model_file) == variant.sha256
        assert variant.throughput_ratio >= MIN_SPEEDUP, "a variant that is not faster is not kept"
        # Judged on validation: fp32's and the variant's validation figures, never their test figures.
        assert variant.within_guard == guard.holds(manifest.metrics.validation[headline], variant.validation_metrics[headline])
        assert set(variant.metrics) >= {headline} and set(variant.validation_metrics) >= {headline} and variant.parity.n > 0
        assert variant.parity.batch_max_abs_diff <= BATCH_TOLERANCE, "a kept variant scores a row alone as in a batch"
    eligible = [v for v in manifest.variants if v.within_guard]
    expected = max(eligible, key=lambda v: v.throughput_ratio).name if eligible else "fp32"
    assert manifest.served_variant == expected
    assert not set(manifest.rejected_variants) & {v.name for v in manifest.variants}


# --- the choice reads validation only ----------------------------------------------------------------


def _graph(path: Path, matrices: list[np.ndarray]) -> None:
    """y = x @ m1 @ m2 ... for x of shape (batch, 3)."""
    nodes, previous = [], "x"
    for index in range(len(matrices)):
        output = "y" if index == len(matrices) - 1 else f"h{index}"
        nodes.append(helper.make_node("MatMul", [previous, f"m{index}"], [output]))
        previous = output
    graph = helper.make_graph(
        nodes, "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        initializer=[onnx.numpy_helper.from_array(m.astype(np.float32), f"m{i}") for i, m in enumerate(matrices)],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def _rows_whose_largest_value_is_in_column(column: int, count: int = 64) -> np.ndarray:
    x = np.random.default_rng(column).uniform(0, 1, (count, 3)).astype(np.float32)
    x[:, column] += 1.0
    return x


def _accuracy_split(x: np.ndarray, label: int) -> Split:
    def evaluate(session: ort.InferenceSession, _: int) -> dict[str, float]:
        return {"accuracy": float(np.mean(session.run(None, {"x": x})[0].argmax(1) == label))}

    return Split(feeds=[{"x": x}], evaluate=evaluate)


def test_the_served_variant_is_chosen_on_validation_and_test_figures_are_only_reported(tmp_path):
    """fp32 is the identity, slowly (80 identity MatMuls); the candidate reverses the columns in one MatMul.
    On rows whose largest value is in the middle column both are always right; on rows whose largest is in
    column 0 the candidate is always wrong. With the middle-column rows as validation the candidate is
    served, whatever the test rows say; with them as test it is not."""
    _graph(tmp_path / "model.onnx", [np.eye(3)] * 80)

    def reversed_columns(_: Path, target: Path) -> None:
        _graph(target, [np.eye(3)[::-1]])

    candidate = [VariantCandidate("reversed", "one MatMul that reverses the columns", reversed_columns)]
    guard = Guard("accuracy", higher_is_better=True, absolute=0.01)
    middle, first = _rows_whose_largest_value_is_in_column(1), _rows_whose_largest_value_is_in_column(0)

    def build(validation: Split, test: Split):
        choice = choose_variants(tmp_path, tmp_path / "model.onnx", candidate, guard, validation, {"x": middle[:16]})
        return report_variants(choice, tmp_path / "model.onnx", test, guard, classifier=True)

    chosen = build(validation=_accuracy_split(middle, 1), test=_accuracy_split(first, 0))
    [record] = chosen.records
    assert chosen.served == "reversed" and record.within_guard
    assert record.validation_metrics == {"accuracy": 1.0} and chosen.fp32_validation == {"accuracy": 1.0}
    assert record.metrics == {"accuracy": 0.0}, "the test figure is reported as measured"
    assert record.parity.argmax_agreement == 0.0 and record.throughput_ratio >= MIN_SPEEDUP

    swapped = build(validation=_accuracy_split(first, 0), test=_accuracy_split(middle, 1))
    [record] = swapped.records
    assert swapped.served == "fp32" and not record.within_guard
    assert record.validation_metrics == {"accuracy": 0.0} and record.metrics == {"accuracy": 1.0}


def test_the_service_serves_the_chosen_variant_and_the_setting_overrides_it(api_repository, tmp_path, client):
    served = {m["name"]: m["variant"] for m in client.get("/health").json()["models"]}
    for name in MODEL_NAMES:
        assert served[name] == ModelManifest.load(api_repository / name / "1").served_variant

    manifest = ModelManifest.load(api_repository / "sentiment-transformer" / "1")
    names = ["fp32", *(v.name for v in manifest.variants)]
    other = next((n for n in names if n != manifest.served_variant), None)
    if other is None:
        pytest.skip("the sentiment model has a single variant in this repository")
    overrides = json.dumps({"sentiment-transformer": other, "mnist-cnn": "no-such-variant"})
    with start_server(api_repository, tmp_path / "log", "--variants", overrides, wait_ready=False) as server:
        response = wait_for_loading_to_end(server)
        models = {m["name"]: m for m in response.json()["models"]}
    assert models["sentiment-transformer"]["variant"] == other and models["sentiment-transformer"]["ready"]
    assert models["mnist-cnn"]["state"] == "failed" and "no variant 'no-such-variant'" in models["mnist-cnn"]["error"]


def test_a_variant_whose_graph_runs_rows_one_at_a_time_runs_single_threaded_side_by_side(api_repository, client):
    for model in client.get("/models").json()["models"]:
        manifest = ModelManifest.load(api_repository / model["name"] / "1")
        record = manifest.variant_record(model["variant"])
        expected = 1 if record is not None and record.rows_one_at_a_time else physical_cores()
        assert model["batching"]["threads_per_run"] == expected  # on CPU


def _depends_on_batch_mates(path: Path) -> None:
    """y[b] = sum of row b's values - the mean of the whole (padded) batch: a row's answer depends on the
    other rows and on its padding, as a dynamically quantised graph's does."""
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axis1"], ["sums"], keepdims=1),
         helper.make_node("ReduceMean", ["x"], ["mean"], keepdims=1),
         helper.make_node("Sub", ["sums", "mean"], ["y"])],
        "mates",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence"]),
         helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        initializer=[helper.make_tensor("axis1", TensorProto.INT64, [1], [1])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def test_rows_one_at_a_time_scores_each_row_as_it_scores_alone_and_unpadded(tmp_path):
    _depends_on_batch_mates(tmp_path / "mates.onnx")
    rows_one_at_a_time(tmp_path / "mates.onnx", tmp_path / "looped.onnx", lengths_from="mask")
    original, looped = (ort.InferenceSession(str(tmp_path / f), providers=["CPUExecutionProvider"]) for f in ("mates.onnx", "looped.onnx"))
    lengths = [3, 1, 5]
    x = np.zeros((3, 5), dtype=np.float32)
    mask = np.zeros((3, 5), dtype=np.int64)
    for row, length in enumerate(lengths):
        x[row, :length] = np.arange(1, length + 1) * (row + 1)
        mask[row, :length] = 1
    alone = [original.run(None, {"x": x[r : r + 1, :n], "mask": mask[r : r + 1, :n]}) for r, n in enumerate(lengths)]
    y = looped.run(None, {"x": x, "mask": mask})[0]
    np.testing.assert_array_equal(y, np.concatenate([a[0] for a in alone]))
    assert not np.allclose(original.run(None, {"x": x, "mask": mask})[0], y), "the unwrapped graph depends on its batch"

    rows_one_at_a_time(tmp_path / "mates.onnx", tmp_path / "rows.onnx")  # no mask: rows are sliced, not cut
    unpadded = ort.InferenceSession(str(tmp_path / "rows.onnx"), providers=["CPUExecutionProvider"])
    rows = [original.run(None, {"x": x[r : r + 1], "mask": mask[r : r + 1]})[0] for r in range(3)]
    np.testing.assert_array_equal(unpadded.run(None, {"x": x, "mask": mask})[0], np.concatenate(rows))


def test_answers_of_a_variant_whose_rows_run_one_at_a_time_do_not_depend_on_batch_mates(client):
    texts = [f"{'A warm, funny and moving film. ' * (1 + i % 5)}({i})" for i in range(24)]
    alone = {text: client.post("/sentiment", json={"text": text}).json()["results"][0]["scores"] for text in texts}
    with ThreadPoolExecutor(12) as pool:
        together = list(pool.map(lambda t: client.post("/sentiment", json={"text": t}).json()["results"][0]["scores"], texts))
    for text, scores in zip(texts, together):
        assert scores == pytest.approx(alone[text], abs=1e-6)
