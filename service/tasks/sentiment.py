"""Text sentiment API: texts -> one row of WordPiece ids per text -> negative / neutral / positive."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Sequence

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)

from service.errors import InvalidInput
from service.limits import DEFAULT_LIMITS, checked_items, limits_of
from service.manifest import SentimentPreprocessing
from service.preprocessing.numeric import softmax
from service.preprocessing.text import PAD_TOKEN, SENTIMENT_LABELS, load_tokenizer, pad_batch, tokenize
from service.tasks.base import Decoded, Task, TensorDeclaration

# Defaults of the limits (settings max_texts, max_text_chars); the task enforces the configured ones in decode.
MAX_TEXTS = DEFAULT_LIMITS.texts
MAX_TEXT_CHARS = DEFAULT_LIMITS.text_chars


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("text must contain at least one non-whitespace character")
    return text


Text = Annotated[
    str,
    StringConstraints(min_length=1),
    AfterValidator(_not_blank),
    Field(description=f"at most max_text_chars characters (default {MAX_TEXT_CHARS:,})"),
]


TEXT = TypeAdapter(Text)


def _plain_text(value: Any) -> bool:
    return isinstance(value, str) and not value.isspace() and value != ""


class SentimentRequest(BaseModel):
    """Either one ``text`` or a list of ``texts`` (1 to max_texts, default 64), never both."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"text": "The food was great!"}, {"texts": ["Loved it.", "Meh."]}]},
    )

    text: Optional[Text] = None
    texts: Optional[list[Text]] = Field(
        default=None, min_length=1, description=f"1 to max_texts texts (default {MAX_TEXTS}), scored in order"
    )

    @field_validator("texts", mode="before")
    @classmethod
    def _count_first(cls, texts: Any, info: ValidationInfo) -> Any:
        """The number of texts is checked before any text is, and at most a few bad texts are reported."""
        return checked_items(texts, "texts", limits_of(info).texts, "{count:,} texts in one request; at most {limit:,}",
                             _plain_text, TEXT)

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


class SentimentTask(Task):
    kind = "text-sentiment"
    summary = "Score the sentiment of one text or a list of texts"
    request_model = SentimentRequest
    response_model = SentimentResponse
    tensor_inputs = (TensorDeclaration("text", "BYTES", (-1,), "raw UTF-8 texts; the service tokenises"),)
    tensor_outputs = (
        TensorDeclaration("probabilities", "FP32", (-1, 3), "negative, neutral, positive"),
        TensorDeclaration("label", "BYTES", (-1,), "the most probable label"),
    )

    preprocessing: SentimentPreprocessing

    def __init__(self, preprocessing: SentimentPreprocessing, labels: Sequence[str], version_dir: Path, **options):
        if sorted(labels) != sorted(SENTIMENT_LABELS):
            raise ValueError(f"sentiment labels must be {list(SENTIMENT_LABELS)} in some order, got {list(labels)}")
        super().__init__(preprocessing, labels, version_dir, **options)
        self.tokenizer = load_tokenizer(version_dir / preprocessing.tokenizer_file, preprocessing.max_length)
        pad_id = self.tokenizer.token_to_id(PAD_TOKEN)
        if pad_id is None:
            raise ValueError(f"{preprocessing.tokenizer_file} has no {PAD_TOKEN} token")
        self.pad_id = pad_id

    def decode(self, request: SentimentRequest) -> Decoded:
        texts = request.all_texts()
        if not texts:
            raise InvalidInput("no text to score")
        limits = self.limits
        if len(texts) > limits.texts:
            raise InvalidInput(f"{len(texts)} texts in one request; at most {limits.texts}")
        for index, text in enumerate(texts):
            if len(text) > limits.text_chars:
                raise InvalidInput(f"text {index} has {len(text):,} characters; at most {limits.text_chars:,}")
        tokenized = tokenize(self.tokenizer, texts)
        return Decoded(rows=tokenized.ids, context={"truncated": tokenized.truncated})

    def collate(self, rows: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
        return pad_batch(rows, self.pad_id)

    def row_length(self, row: Sequence[int]) -> int:
        return len(row)

    def check_tensor_shape(self, tensor: str, shape: list[int]) -> None:
        count = math.prod(shape)
        if count > self.limits.texts:
            raise InvalidInput(f"{tensor}: {count:,} texts in one request; at most {self.limits.texts:,}")

    def decode_tensors(self, inputs: dict[str, np.ndarray], parameters: dict) -> Decoded:
        texts = []
        for raw in inputs["text"].reshape(-1):
            try:
                texts.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise InvalidInput("text: every element must be valid UTF-8") from None
        try:
            request = SentimentRequest.model_validate({"texts": texts}, context={"limits": self.limits})
        except ValueError as exc:
            raise InvalidInput(f"text: {exc.errors()[0]['msg'] if hasattr(exc, 'errors') else exc}") from None
        return self.decode(request)

    def encode_tensors(self, outputs: list[np.ndarray], decoded: Decoded) -> dict[str, np.ndarray]:
        probabilities = softmax(outputs[0])
        order = [self.labels.index(label) for label in SENTIMENT_LABELS]
        labels = np.empty(len(probabilities), dtype=object)
        labels[:] = [self.labels[i].encode() for i in probabilities.argmax(axis=1)]
        return {"probabilities": probabilities[:, order].astype(np.float32), "label": labels}

    def encode(self, outputs: list[np.ndarray], decoded: Decoded, model: str, version: str) -> SentimentResponse:
        probabilities = softmax(outputs[0])
        results = []
        for row, truncated in zip(probabilities, decoded.context["truncated"]):
            best = int(np.argmax(row))
            results.append(
                SentimentResult(
                    label=self.labels[best],
                    score=float(row[best]),
                    scores=SentimentScores(**{label: float(p) for label, p in zip(self.labels, row)}),
                    truncated=truncated,
                )
            )
        return SentimentResponse(model=model, version=version, results=results)
