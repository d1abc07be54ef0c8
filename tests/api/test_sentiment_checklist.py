"""The behavioural checklist against the served model, through POST /sentiment."""

from __future__ import annotations

import pytest

from export.sentiment_checklist import CASES, Prediction, run_checklist
from service.manifest import ModelManifest
from service.tasks.sentiment import MAX_TEXTS

NAME = "sentiment-transformer"
# Measured on the built model: 44 of 49 for fp32 and for its int8 variant. The misses: two negated
# negatives ("I don't hate it."), "I can't say I enjoyed it." and two intensity orderings between
# strong negatives. The floor leaves two cases of slack for a variant or a rebuild.
PASS_RATE_FLOOR = 0.85


def served_predictions(client, texts: list[str]) -> list[Prediction]:
    predictions = []
    for start in range(0, len(texts), MAX_TEXTS):
        response = client.post("/sentiment", json={"texts": texts[start : start + MAX_TEXTS]})
        assert response.status_code == 200, response.text
        for result in response.json()["results"]:
            predictions.append(Prediction(result["label"], result["scores"]["positive"] - result["scores"]["negative"]))
    return predictions


@pytest.mark.real_models
def test_checklist_pass_rate_meets_the_floor_and_the_record(client, real_repository):
    report = run_checklist(lambda texts: served_predictions(client, texts))
    assert report.total == len(CASES)
    assert report.pass_rate >= PASS_RATE_FLOOR, "\n".join([report.summary(), *report.failures])

    served = next(m for m in client.get("/models").json()["models"] if m["name"] == NAME)
    manifest = ModelManifest.load(real_repository / NAME / served["version"])
    variant = served["variant"]
    recorded = manifest.metrics.model if variant == "fp32" else manifest.variant_record(variant).metrics
    # The server batches rows with whatever else is queued: equal up to a case on a knife edge.
    assert abs(report.pass_rate - recorded["checklist_pass_rate"]) <= 1 / len(CASES), (variant, report.failures)
    vader = manifest.metrics.baselines["vader"]["checklist_pass_rate"]
    assert report.pass_rate > vader, (report.summary(), vader)
