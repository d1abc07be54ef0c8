"""Text pre-processing: WordPiece ids without padding, then padding to the longest row of a batch.

The packaged tokenizer.json pads everything to a fixed length; padding is switched off here and
each batch is padded only to its longest member, so a text scores the same alone or in a batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tokenizers import Tokenizer

SENTIMENT_LABELS = ("negative", "neutral", "positive")
PAD_TOKEN = "[PAD]"


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
