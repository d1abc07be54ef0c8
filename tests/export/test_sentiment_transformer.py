"""sentiment-transformer: the corpus loader, the split, the classifier's padding invariance, and an
audit of the built model's manifest against a fresh evaluation of held-out sentences."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from models.sentiment_data import (
    CORPUS_SHA256,
    DOMAINS,
    LABELS,
    CorpusIntegrityError,
    corpus_archive,
    load_corpus,
    parse_ground_truth,
    rating_to_label,
    read_ground_truth,
    sentiment_metrics,
    split_corpus,
    verify_corpus_bytes,
)
from service.manifest import ModelManifest, sha256_of

ROWS_PER_DOMAIN = {"tweets": 4200, "movieReviewSnippets": 10605, "amazonReviewSnippets": 3708, "nytEditorialSnippets": 5190}
AUDIT_SAMPLE = 400


@pytest.fixture(scope="module")
def cache_dir(data_cache) -> Path:
    return data_cache


@pytest.fixture(scope="module")
def corpus(cache_dir):
    return load_corpus(cache_dir)


def test_rows_per_domain(corpus):
    counts = {domain: int(np.sum(corpus.domains == domain)) for domain in DOMAINS}
    assert counts == ROWS_PER_DOMAIN
    assert len(corpus) == sum(ROWS_PER_DOMAIN.values()) == 23703
    assert all(text.strip() == text and text for text in corpus.texts)
    assert corpus.ratings.min() >= -4 and corpus.ratings.max() <= 4


def test_class_mapping_with_the_neutral_band(corpus):
    assert rating_to_label(np.array([-4.0, -0.5, -0.49, 0.0, 0.49, 0.5, 4.0])).tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert np.bincount(corpus.labels).tolist() == [9181, 4244, 10278]
    assert LABELS == ("negative", "neutral", "positive")


def test_ground_truth_parsing_handles_crlf_and_utf8():
    raw = "1\t2.5\tCaf\u00e9 au lait \u2014 superb!\r\n2\t-1.25\tmeh\tstill text\r\n\r\n".encode("utf-8")
    assert parse_ground_truth(raw) == [(2.5, "Caf\u00e9 au lait \u2014 superb!"), (-1.25, "meh\tstill text")]


def test_sha256_is_checked(cache_dir, tmp_path, corpus):
    archive = corpus_archive(cache_dir)  # cached by the corpus fixture: no download here
    assert sha256_of(archive) == CORPUS_SHA256
    with pytest.raises(CorpusIntegrityError):
        verify_corpus_bytes(archive.read_bytes()[:-1])
    tampered = tmp_path / archive.name
    shutil.copyfile(archive, tampered)
    with tampered.open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(CorpusIntegrityError):
        read_ground_truth(tampered)


def test_split_is_stratified_disjoint_and_deterministic(corpus):
    splits = split_corpus(corpus, seed=13)
    again = split_corpus(corpus, seed=13)
    assert all(np.array_equal(a, b) for a, b in zip(vars(splits).values(), vars(again).values()))
    train, validation, test = (set(s.tolist()) for s in (splits.train, splits.validation, splits.test))
    assert not (train & validation) and not (train & test) and not (validation & test)
    test_texts = {corpus.texts[i] for i in test}
    assert not any(corpus.texts[i] in test_texts for i in train | validation)
    for domain in DOMAINS:
        for label in range(len(LABELS)):
            stratum = (corpus.domains == domain) & (corpus.labels == label)
            held = np.sum(stratum[splits.test])
            assert abs(held - 0.1 * stratum.sum()) <= 1
    assert len(train) + len(validation) + len(test) > 0.99 * len(corpus)


def test_metrics():
    true = np.array([0, 0, 1, 2, 2])
    predicted = np.array([0, 2, 1, 2, 1])
    positive = np.array([False, True, True, True, False])
    metrics = sentiment_metrics(true, predicted, positive)
    assert metrics["binary_accuracy"] == pytest.approx(2 / 4)  # the neutral sentence is not scored
    assert metrics["three_class_accuracy"] == pytest.approx(3 / 5)
    assert metrics["macro_f1"] == pytest.approx(np.mean([2 / 3, 2 / 3, 1 / 2]))


def test_length_buckets_cover_every_sentence_once():
    from models.transformer import length_bucketed_batches

    lengths = np.random.default_rng(0).integers(3, 100, size=1000)
    batches = length_bucketed_batches(lengths, batch_size=32, bucket_batches=4, rng=np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    assert max(len(b) for b in batches) == 32
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < 0.5 * np.ptp(lengths)


def test_exported_classifier_scores_a_text_alone_as_in_a_batch(tmp_path):
    """Padding must not change a sentence's logits: masked attention and masked mean pooling."""
    import onnxruntime as ort
    import torch

    from export.sentiment_transformer import EXPORT_SPEC
    from export.spec import export_to_onnx
    from models.transformer import SentimentClassifier, load_encoder, minilm_dir
    from service.manifest import SentimentPreprocessing
    from service.tasks.sentiment import SentimentRequest, SentimentTask

    torch.manual_seed(0)
    model = SentimentClassifier(load_encoder(num_layers=2)).eval()
    export_to_onnx(model, EXPORT_SPEC, tmp_path / "model.onnx")
    shutil.copyfile(minilm_dir() / "tokenizer.json", tmp_path / "tokenizer.json")
    task = SentimentTask(SentimentPreprocessing(max_length=128, neutral_band=0.5), list(LABELS), tmp_path)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    texts = ["no", "The plot drags, but the actors save it.", "Best. Purchase. Ever!!! " * 3]

    feeds = task.collate(task.decode(SentimentRequest(texts=texts)).rows)
    batch_logits = session.run(None, feeds)[0]
    with torch.no_grad():
        torch_logits = model(*(torch.from_numpy(feeds[n]) for n in ("input_ids", "attention_mask"))).numpy()
    np.testing.assert_allclose(batch_logits, torch_logits, atol=1e-4)
    for row, text in enumerate(texts):
        single = session.run(None, task.collate(task.decode(SentimentRequest(text=text)).rows))[0]
        np.testing.assert_allclose(single[0], batch_logits[row], atol=1e-5)


@pytest.mark.real_models
def test_built_model_meets_targets_and_its_manifest_is_honest(cache_dir, real_repository):
    version_dir = real_repository / "sentiment-transformer" / "1"
    import onnxruntime as ort

    from export.sentiment_transformer import TARGETS
    from service.tasks.sentiment import SentimentRequest, SentimentTask

    manifest = ModelManifest.load(version_dir)
    assert manifest.sha256 == sha256_of(version_dir / manifest.model_file)
    assert manifest.labels == list(LABELS)
    assert not manifest.build.quick
    assert manifest.parity.max_abs_diff <= 1e-4 and manifest.parity.argmax_agreement == 1.0

    model, vader = manifest.metrics.model, manifest.metrics.baselines["vader"]
    assert manifest.metrics.targets == TARGETS  # declared once, in the builder, and recorded as declared
    assert manifest.missed_targets() == []
    assert model["binary_accuracy_gain_over_vader"] == pytest.approx(model["binary_accuracy"] - vader["binary_accuracy"])
    assert model["three_class_accuracy"] > vader["three_class_accuracy"]
    assert model["macro_f1"] > vader["macro_f1"]

    hp = manifest.training.hyperparameters
    corpus = load_corpus(cache_dir, manifest.preprocessing.neutral_band)
    test = split_corpus(corpus, hp["seed"], hp["test_fraction"], hp["validation_fraction"]).test
    assert len(test) == manifest.metrics.n == manifest.data.splits["test"]
    sample = np.sort(np.random.default_rng(2024).choice(test, size=AUDIT_SAMPLE, replace=False))
    texts = [corpus.texts[i] for i in sample]
    labels = corpus.labels[sample]

    task = SentimentTask(manifest.preprocessing, manifest.labels, version_dir)
    session = ort.InferenceSession(str(version_dir / manifest.model_file), providers=["CPUExecutionProvider"])
    positive_over_negative = []
    for start in range(0, len(texts), 64):
        decoded = task.decode(SentimentRequest(texts=texts[start : start + 64]))
        response = task.encode(session.run(None, task.collate(decoded.rows)), decoded, manifest.name, manifest.version)
        positive_over_negative += [r.scores.positive > r.scores.negative for r in response.results]
    polar = labels != LABELS.index("neutral")
    recomputed = float(np.mean(np.asarray(positive_over_negative)[polar] == (labels[polar] == 2)))
    # A 400-sentence sample of ~330 polar ones: 3 standard errors is about 0.05.
    assert abs(recomputed - model["binary_accuracy"]) <= 0.05


@pytest.mark.real_models
def test_the_served_variant_scores_its_manifest_figures(cache_dir, real_repository):
    """The variant the service serves, on every test and validation sentence, through SentimentTask with the
    rows per run the build used: its recorded figures must come out (one sentence moves binary accuracy by
    about 5e-4, so the tolerance lets no changed answer through)."""
    from export.sentiment_transformer import _score_through_task, _served_metrics
    from export.variants import session as variant_session
    from models.sentiment_data import limited_splits
    from service.tasks.sentiment import MAX_TEXTS, SentimentTask

    version_dir = real_repository / "sentiment-transformer" / "1"
    manifest = ModelManifest.load(version_dir)
    model_file, _ = manifest.variant(manifest.served_variant)
    record = manifest.variant_record(manifest.served_variant)
    served = variant_session(version_dir / model_file)
    task = SentimentTask(manifest.preprocessing, manifest.labels, version_dir)
    _, validation, test = limited_splits(load_corpus(cache_dir, manifest.preprocessing.neutral_band), manifest.training.hyperparameters)
    rows = record.batch_size if record else MAX_TEXTS
    for split, figures in ((test, manifest.served_metrics()), (validation, record.validation_metrics if record else manifest.metrics.validation)):
        recomputed = _served_metrics(split, _score_through_task(task, served, None, split.texts, rows)[2])
        for metric in ("binary_accuracy", "three_class_accuracy", "macro_f1"):
            assert recomputed[metric] == pytest.approx(figures[metric], abs=1e-6), metric
