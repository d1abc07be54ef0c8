"""The behavioural checklist: its cases are well formed, its rules score as stated, VADER's recorded
pass rate is reproduced, and the built model's recorded pass rate is what the ONNX model scores."""

from __future__ import annotations

import pytest

from export.sentiment_checklist import (
    CASES,
    LabelCase,
    OrderCase,
    Prediction,
    SameCase,
    checklist_texts,
    run_checklist,
    vader_predictions,
)
from models.sentiment_data import LABELS
from service.manifest import ModelManifest

CAPABILITIES = {"vocabulary", "neutral", "negation", "contrast", "temporal", "intensity", "direction", "invariance"}


def test_cases_are_well_formed():
    assert 30 <= len(CASES) <= 60
    assert {case.capability for case in CASES} == CAPABILITIES
    assert len(set(CASES)) == len(CASES)
    for case in CASES:
        if isinstance(case, LabelCase):
            assert case.expected in (*LABELS, "not negative", "not positive")
        assert len(set(case.texts())) == len(case.texts()), case
        assert all(text == text.strip() and text for text in case.texts())


def test_texts_are_scored_once_each_in_order():
    texts = checklist_texts()
    assert len(texts) == len(set(texts))
    assert texts[0] == CASES[0].texts()[0]
    assert set(texts) == {text for case in CASES for text in case.texts()}


def fixed(table: dict[str, Prediction]):
    calls = []

    def predict(texts: list[str]) -> list[Prediction]:
        calls.append(list(texts))
        return [table[text] for text in texts]

    return predict, calls


def test_label_order_and_invariance_rules():
    cases = [
        LabelCase("negation", "not bad", "not negative"),
        LabelCase("negation", "not good", "negative"),
        LabelCase("neutral", "at noon", "neutral"),
        OrderCase("intensity", "good", "superb"),
        OrderCase("intensity", "bad", "terrible"),  # listed the wrong way round: must fail
        SameCase("invariance", "Anna loved it", "Ali loved it"),
        SameCase("invariance", "great", "grate"),
    ]
    table = {
        "not bad": Prediction("neutral", 0.1),
        "not good": Prediction("positive", 0.4),
        "at noon": Prediction("neutral", 0.0),
        "good": Prediction("positive", 0.6),
        "superb": Prediction("positive", 0.9),
        "bad": Prediction("negative", -0.6),
        "terrible": Prediction("negative", -0.9),
        "Anna loved it": Prediction("positive", 0.9),
        "Ali loved it": Prediction("positive", 0.8),
        "great": Prediction("positive", 0.9),
        "grate": Prediction("neutral", 0.1),
    }
    predict, calls = fixed(table)
    report = run_checklist(predict, cases)
    assert len(calls) == 1 and len(calls[0]) == len(table)
    assert (report.passed, report.total) == (4, 7)
    assert report.pass_rate == pytest.approx(4 / 7)
    assert report.by_capability == {"negation": (1, 2), "neutral": (1, 1), "intensity": (1, 2), "invariance": (1, 2)}
    assert len(report.failures) == 3
    assert any("'not good': expected negative, got positive" in line for line in report.failures)
    assert any("'terrible'" in line and "more positive than 'bad'" in line for line in report.failures)
    assert any("'great' is positive but 'grate' is neutral" in line for line in report.failures)


def test_ties_do_not_pass_an_ordering():
    predict, _ = fixed({"a": Prediction("positive", 0.5), "b": Prediction("positive", 0.5)})
    assert run_checklist(predict, [OrderCase("intensity", "a", "b")]).passed == 0


def test_vader_reading():
    predictions = vader_predictions(["I love it.", "I hate it.", "The meeting is at noon."])
    assert [p.label for p in predictions] == ["positive", "negative", "neutral"]
    assert predictions[0].positivity > 0 > predictions[1].positivity and predictions[2].positivity == 0


@pytest.mark.real_models
def test_recorded_pass_rates_are_reproduced(real_repository):
    import onnxruntime as ort

    from service.tasks.sentiment import SentimentRequest, SentimentTask

    version_dir = real_repository / "sentiment-transformer" / "1"
    manifest = ModelManifest.load(version_dir)
    recorded, vader = manifest.metrics.model["checklist_pass_rate"], manifest.metrics.baselines["vader"]
    assert vader["checklist_pass_rate"] == pytest.approx(run_checklist(vader_predictions).pass_rate, abs=1e-12)

    task = SentimentTask(manifest.preprocessing, manifest.labels, version_dir)
    session = ort.InferenceSession(str(version_dir / manifest.model_file), providers=["CPUExecutionProvider"])

    def predict(texts: list[str]) -> list[Prediction]:
        predictions = []
        for text in texts:  # one row per run: no padding, whatever the export's batches were
            decoded = task.decode(SentimentRequest(text=text))
            result = task.encode(session.run(None, task.collate(decoded.rows)), decoded, manifest.name, manifest.version).results[0]
            predictions.append(Prediction(result.label, result.scores.positive - result.scores.negative))
        return predictions

    report = run_checklist(predict)
    # Padding moves logits by ~1e-6 (the export scored in batches): equal up to a case on a knife edge.
    assert abs(report.pass_rate - recorded) <= 1 / len(CASES), report.failures
