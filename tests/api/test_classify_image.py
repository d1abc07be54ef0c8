"""POST /classify-image against the real server with real held-out MNIST digits."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from models.mnist_data import load_digits
from service.manifest import ModelManifest


def encode(digit: np.ndarray, fmt: str, invert: bool = False, size: int = 28, margin: int = 0) -> bytes:
    image = Image.fromarray(255 - digit if invert else digit)
    if size != 28:
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    if margin:
        canvas = Image.new("L", (size + 2 * margin, size + 2 * margin), 255 if invert else 0)
        canvas.paste(image, (margin, margin))
        image = canvas
    if fmt == "JPEG":
        image = image.convert("RGB")
    out = io.BytesIO()
    image.save(out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()


@pytest.fixture(scope="module")
def held_out(api_repository):
    manifest = ModelManifest.load(api_repository / "mnist-cnn" / "1")
    data = load_digits(manifest.training.seed)
    rng = np.random.default_rng(7)
    sample = rng.choice(data.test, size=60, replace=False)
    return manifest, data.images[sample], data.labels[sample]


def classify(client, payload: bytes, mime: str, top_k: int = 3):
    return client.post("/classify-image", params={"top_k": top_k}, files={"file": ("digit", payload, mime)})


def test_response_shape_and_probabilities(client, held_out):
    _, images, labels = held_out
    response = classify(client, encode(images[0], "PNG"), "image/png", top_k=5)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "mnist-cnn" and body["version"] == "1"
    assert len(body["top_k"]) == 5
    scores = [entry["score"] for entry in body["top_k"]]
    assert scores == sorted(scores, reverse=True)
    assert body["label"] == body["top_k"][0]["label"] and body["score"] == scores[0]
    assert 0 < sum(scores) <= 1 + 1e-6


@pytest.mark.real_models
@pytest.mark.parametrize(
    "variant",
    [
        {"fmt": "PNG"},
        {"fmt": "JPEG"},
        {"fmt": "PNG", "invert": True},  # black on white, as people draw
        {"fmt": "PNG", "invert": True, "size": 280, "margin": 40},
        {"fmt": "JPEG", "size": 280, "margin": 30},
    ],
    ids=["png", "jpeg", "inverted", "inverted-280px-margin", "jpeg-280px-margin"],
)
def test_held_out_digits_are_classified(client, held_out, real_repository, variant):
    manifest, images, labels = held_out
    mime = "image/png" if variant["fmt"] == "PNG" else "image/jpeg"
    correct = 0
    for digit, label in zip(images, labels):
        response = classify(client, encode(digit, **variant), mime, top_k=1)
        assert response.status_code == 200, response.text
        correct += response.json()["label"] == str(label)
    accuracy = correct / len(labels)
    assert accuracy >= manifest.metrics.model["accuracy"] - 0.02 - 1 / len(labels), accuracy


@pytest.mark.parametrize("fmt", ["BMP", "GIF", "WEBP", "TIFF"])
def test_other_accepted_formats(client, held_out, real_repository, fmt):
    _, images, labels = held_out
    correct = 0
    for digit, label in zip(images[:6], labels[:6]):
        response = classify(client, encode(digit, fmt), f"image/{fmt.lower()}")
        assert response.status_code == 200, response.text
        as_png = classify(client, encode(digit, "PNG"), "image/png").json()
        assert response.json()["label"] == as_png["label"]  # the format changes nothing
        correct += response.json()["label"] == str(label)
    assert correct >= 5, correct


def test_rgba_drawing_on_transparent_background(client, held_out, real_repository):
    _, images, labels = held_out
    ink = images[2]
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)
    rgba[..., 3] = ink  # black strokes whose opacity is the digit, transparent elsewhere
    image = Image.fromarray(rgba, mode="RGBA").resize((140, 140), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, format="PNG")
    response = classify(client, out.getvalue(), "image/png")
    assert response.status_code == 200, response.text
    assert response.json()["label"] == str(labels[2])
