"""POST /sentiment with real held-out sentences of the VADER corpus."""

from __future__ import annotations

import numpy as np
import pytest

from models.sentiment_data import LABELS, load_corpus, split_corpus
from service.manifest import ModelManifest


@pytest.fixture(scope="module")
def held_out(api_repository, data_cache):
    manifest = ModelManifest.load(api_repository / "sentiment-transformer" / "1")
    corpus = load_corpus(data_cache)
    test = corpus.subset(split_corpus(corpus, manifest.training.seed).test)
    rng = np.random.default_rng(3)
    pick = rng.choice(len(test), size=24, replace=False)
    return [test.texts[i] for i in pick], test.labels[pick]


def test_single_and_batch_forms_agree(client, held_out):
    texts, _ = held_out
    batch = client.post("/sentiment", json={"texts": texts})
    assert batch.status_code == 200, batch.text
    body = batch.json()
    assert body["model"] == "sentiment-transformer" and body["version"] == "1"
    assert len(body["results"]) == len(texts)
    for text, from_batch in zip(texts, body["results"]):
        alone = client.post("/sentiment", json={"text": text}).json()["results"][0]
        assert alone["label"] == from_batch["label"]
        for label in LABELS:
            assert alone["scores"][label] == pytest.approx(from_batch["scores"][label], abs=1e-5)


def test_result_shape(client, held_out):
    texts, _ = held_out
    result = client.post("/sentiment", json={"text": texts[0]}).json()["results"][0]
    assert set(result["scores"]) == set(LABELS)
    assert sum(result["scores"].values()) == pytest.approx(1.0, abs=1e-5)
    assert result["score"] == max(result["scores"].values())
    assert result["label"] == max(result["scores"], key=result["scores"].get)
    assert result["truncated"] is False


def test_long_text_is_truncated_and_flagged(client):
    text = "The plot wanders but the acting is superb. " * 200
    result = client.post("/sentiment", json={"texts": [text, "Fine."]}).json()["results"]
    assert result[0]["truncated"] is True and result[1]["truncated"] is False


@pytest.mark.real_models
def test_held_out_sentences_are_mostly_right(client, held_out, real_repository):
    texts, labels = held_out
    results = client.post("/sentiment", json={"texts": texts}).json()["results"]
    polar = [(r, y) for r, y in zip(results, labels) if LABELS[y] != "neutral"]
    correct = sum((r["scores"]["positive"] > r["scores"]["negative"]) == (LABELS[y] == "positive") for r, y in polar)
    assert correct / len(polar) >= 0.75
