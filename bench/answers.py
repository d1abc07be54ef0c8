"""The answer each benchmark request must get: the model's own answer for that body, computed in-process.

The same request objects go through the service's task code (decode, collate, encode) and ONNX Runtime,
on the variant the server under load runs. An answer is flattened into tokens in JSON order (keys and
strings, numbers, true/false/null); the load generator flattens each response the same way and compares
token by token: strings exactly (labels, keys), numbers within a tolerance. Tolerances are set per endpoint
for float rounding only (a batch of other rows, PyTorch against ONNX Runtime), far below what a different
answer moves: a label differs outright, and another input's probabilities or forecast differ by more than
a hundred times the tolerance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.inprocess import load_in_process
from bench.payloads import Endpoint, request_objects

Token = tuple[str, Any]  # ("s", text) | ("n", number) | ("w", "true" / "false" / "null")


@dataclass(frozen=True)
class Tolerance:
    """A number passes when |got - expected| <= absolute + relative x |expected|."""

    absolute: float
    relative: float


# The same ONNX variant in-process and in the service: only the rows batched beside it move the last digits
# (a served variant stays within 1e-4 of its row alone: export.variants.BATCH_TOLERANCE).
SAME_VARIANT = Tolerance(absolute=1e-4, relative=1e-4)
# The naive server's PyTorch against the fp32 ONNX file (export parity: within 1e-4 on the network's outputs).
PYTORCH_AGAINST_ONNX = Tolerance(absolute=1e-3, relative=1e-3)


@dataclass(frozen=True)
class ExpectedAnswers:
    """Per request body (same order as the endpoint's bodies), the tokens its answer must have."""

    endpoint: str
    variant: str
    tokens: list[list[Token]]
    tolerance: Tolerance


def answer_tokens(value: Any) -> list[Token]:
    """A parsed JSON value flattened in document order."""
    if isinstance(value, dict):
        return [token for key, item in value.items() for token in (("s", key), *answer_tokens(item))]
    if isinstance(value, list):
        return [token for item in value for token in answer_tokens(item)]
    if isinstance(value, bool):
        return [("w", "true" if value else "false")]
    if value is None:
        return [("w", "null")]
    if isinstance(value, (int, float)):
        return [("n", float(value))]
    return [("s", str(value))]


def in_process_answers(repository: Path, endpoint: Endpoint, variant: str, tolerance: Tolerance) -> ExpectedAnswers:
    """Each body's answer from `variant` of the endpoint's model, loaded as the service loads it."""
    entry = load_in_process(repository, endpoint.model, variant)
    tokens = []
    for request in request_objects(endpoint):
        decoded = entry.task.decode(request)
        outputs = entry.model.run(entry.task.collate(decoded.rows))
        response = entry.task.encode(outputs, decoded, entry.name, entry.version)
        tokens.append(answer_tokens(json.loads(response.model_dump_json())))
    return ExpectedAnswers(endpoint.name, variant, tokens, tolerance)


def write_answer_files(answers: ExpectedAnswers, directory: Path) -> list[str]:
    """One file per body for the load generator: a token a line, its kind first ("s", "n" or "w")."""
    paths = []
    for index, tokens in enumerate(answers.tokens):
        path = directory / f"answer{index}"
        path.write_text("".join(f"{kind}{value!r}\n" if kind == "n" else f"{kind}{value}\n" for kind, value in tokens))
        paths.append(str(path))
    return paths
