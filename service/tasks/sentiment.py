"""Text sentiment: texts -> WordPiece ids padded to the batch's longest -> logits -> softmax.

The packaged tokenizer.json pads everything to a fixed length; padding is switched off here and
each batch is padded only to its longest member, so a text scores the same alone or in a batch.
Training uses these same functions, so the model never sees input shaped differently from serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional, Sequence

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator
from tokenizers import Tokenizer

from service.errors import InvalidInput
from service.manifest import SentimentPreprocessing
from service.tasks import Decoded

SENTIMENT_LABELS = ("negative", "neutral", "positive")
MAX_TEXTS = 64
MAX_TEXT_CHARS = 10_000
PAD_TOKEN = "[PAD]"


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("text must contain at least one non-whitespace character")
    return text


Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS), AfterValidator(_not_blank)]


class SentimentRequest(BaseModel):
    """Either one ``text`` or a list of ``texts`` (1 to 64), never both."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"text": "The food was great!"}, {"texts": ["Loved it.", "Meh."]}]},
    )

    text: Optional[Text] = None
    texts: Optional[list[Text]] = Field(default=None, min_length=1, max_length=MAX_TEXTS)

    @model_validator(mode="after")
    def _exactly_one(self) -> "SentimentRequest":
        if (self.text is None) == (self.texts is None):
            raise ValueError('give exactly one of "text" or "texts"')
        return self

    def all_texts(self) -> list[str]:
        return [self.text] if self.text is not None else list(self.texts)


class SentimentScores(BaseModel):
    negative: float
    neutral: float
    positive: float


class SentimentResult(BaseModel):
    label: Literal["negative", "neutral", "positive"]
    score: float  # probability of the label
    scores: SentimentScores
    truncated: bool  # the text was longer than the model's max_length tokens; only its start was read


class SentimentResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str
    version: str
    results: list[SentimentResult]  # one per input text, in input order


@dataclass(frozen=True)
class TokenizedTexts:
    ids: list[list[int]]
    truncated: list[bool]


def load_tokenizer(path: Path, max_length: int) -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return tokenizer


def tokenize(tokenizer: Tokenizer, texts: Sequence[str]) -> TokenizedTexts:
    encodings = tokenizer.encode_batch(list(texts))
    return TokenizedTexts(
        ids=[encoding.ids for encoding in encodings],
        truncated=[bool(encoding.overflowing) for encoding in encodings],
    )


def pad_batch(ids: Sequence[Sequence[int]], pad_id: int) -> dict[str, np.ndarray]:
    """input_ids and attention_mask (int64), padded on the right to the longest member."""
    length = max(len(row) for row in ids)
    input_ids = np.full((len(ids), length), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(ids), length), dtype=np.int64)
    for row, token_ids in enumerate(ids):
        input_ids[row, : len(token_ids)] = token_ids
        attention_mask[row, : len(token_ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


class SentimentTask:
    def __init__(self, preprocessing: SentimentPreprocessing, labels: list[str], version_dir: Path):
        if sorted(labels) != sorted(SENTIMENT_LABELS):
            raise ValueError(f"sentiment labels must be {list(SENTIMENT_LABELS)} in some order, got {labels}")
        self.labels = list(labels)
        self.tokenizer = load_tokenizer(version_dir / preprocessing.tokenizer_file, preprocessing.max_length)
        pad_id = self.tokenizer.token_to_id(PAD_TOKEN)
        if pad_id is None:
            raise ValueError(f"{preprocessing.tokenizer_file} has no {PAD_TOKEN} token")
        self.pad_id = pad_id

    def decode(self, request: SentimentRequest) -> Decoded:
        texts = request.all_texts()
        if not texts:
            raise InvalidInput("no text to score")
        tokenized = tokenize(self.tokenizer, texts)
        return Decoded(feeds=pad_batch(tokenized.ids, self.pad_id), context={"truncated": tokenized.truncated})

    def encode(self, outputs: list[np.ndarray], decoded: Decoded, model: str, version: str) -> SentimentResponse:
        probabilities = softmax(outputs[0])
        results = []
        for row, truncated in zip(probabilities, decoded.context["truncated"]):
            best = int(np.argmax(row))
            scores = {label: float(p) for label, p in zip(self.labels, row)}
            results.append(
                SentimentResult(
                    label=self.labels[best],
                    score=float(row[best]),
                    scores=SentimentScores(**scores),
                    truncated=truncated,
                )
            )
        return SentimentResponse(model=model, version=version, results=results)
