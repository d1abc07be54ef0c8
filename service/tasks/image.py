"""Digit classification: image bytes -> MNIST-style 28x28 tensor -> top-k labels.

The pre-processing makes photos and drawings look like MNIST digits: grayscale, light strokes on
a dark background, cropped to the ink, the longer side scaled to 20 px and pasted into 28x28 so
that the centre of mass sits in the middle. Training applies the same function to MNIST itself.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, Field

from service.errors import BadRequest, InvalidInput, PayloadTooLarge, UnsupportedMediaType
from service.manifest import ImagePreprocessing
from service.tasks import Decoded

ACCEPTED_FORMATS = {"PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF"}
# File signatures of the accepted formats: such a file that fails to decode is corrupt (400), not foreign (415).
SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*")
MAX_PIXELS = 40_000_000  # larger images are refused (413) before their pixels are decoded
INK_THRESHOLD = 0.2  # share of the strongest ink that still counts as ink for the bounding box


class LabelScore(BaseModel):
    label: str
    score: float = Field(description="softmax probability")


class ImageClassification(BaseModel):
    model: str
    version: str
    label: str
    score: float
    top_k: list[LabelScore]


def open_image(data: bytes) -> Image.Image:
    """Decode the bytes of one image; refuse what is not an accepted, sane image."""
    if not data:
        raise BadRequest("the uploaded file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in ACCEPTED_FORMATS:
                raise UnsupportedMediaType(
                    f"image format {image.format} is not accepted; send one of {', '.join(sorted(ACCEPTED_FORMATS))}"
                )
            if image.width * image.height > MAX_PIXELS:
                raise PayloadTooLarge(f"image is {image.width}x{image.height}; at most {MAX_PIXELS:,} pixels")
            image.seek(0)
            image.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        if isinstance(exc, UnidentifiedImageError):
            if data.startswith(SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
                raise BadRequest("the image is corrupt or truncated and could not be decoded") from None
            raise UnsupportedMediaType("the file is not an image in an accepted format") from None
        raise PayloadTooLarge("image is too large to decode") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadRequest(f"the image could not be decoded: {exc}") from None
    return image


def to_grayscale(image: Image.Image) -> np.ndarray:
    """Luminance in [0, 255] as float32; transparency is flattened onto a contrasting background."""
    image = ImageOps.exif_transpose(image) if image.format in {"JPEG", "TIFF", "WEBP"} else image
    if image.mode in ("P", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        gray = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        alpha = rgba[..., 3] / 255.0
        if alpha.min() < 1.0:
            opaque = alpha > 0.5
            strokes_light = opaque.any() and float(gray[opaque].mean()) > 127.5
            background = 0.0 if strokes_light else 255.0
            return gray * alpha + background * (1.0 - alpha)
        return gray
    return np.asarray(image.convert("L"), dtype=np.float32)


def _border_level(gray: np.ndarray) -> float:
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return float(np.median(border))


def digit_to_mnist(gray: np.ndarray, spec: ImagePreprocessing) -> np.ndarray:
    """A grayscale array (any size, any polarity) -> 28x28 float32 in [0, 1], ink bright."""
    background = _border_level(gray)
    ink = (gray - background) if background < 127.5 else (background - gray)
    ink = np.clip(ink, 0.0, None)
    peak = float(ink.max())
    if peak < 1.0:
        raise InvalidInput("the image contains no visible digit (it is a single flat colour)")
    rows = np.flatnonzero((ink >= INK_THRESHOLD * peak).any(axis=1))
    cols = np.flatnonzero((ink >= INK_THRESHOLD * peak).any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] * (255.0 / peak)

    height, width = crop.shape
    scale = spec.digit_box / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(crop.astype(np.float32), mode="F").resize(size, Image.Resampling.LANCZOS)
    digit = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 255.0) / 255.0

    canvas = np.zeros((spec.image_size, spec.image_size), dtype=np.float32)
    total = float(digit.sum())
    ys, xs = np.indices(digit.shape)
    centre_y = float((ys * digit).sum() / total) if total > 0 else digit.shape[0] / 2
    centre_x = float((xs * digit).sum() / total) if total > 0 else digit.shape[1] / 2
    top = int(round(spec.image_size / 2 - centre_y - 0.5))
    left = int(round(spec.image_size / 2 - centre_x - 0.5))
    top = min(max(top, 0), spec.image_size - digit.shape[0])
    left = min(max(left, 0), spec.image_size - digit.shape[1])
    canvas[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return canvas


def normalise(digits: np.ndarray, spec: ImagePreprocessing) -> np.ndarray:
    """(N, 28, 28) in [0, 1] -> the model's (N, 1, 28, 28) input."""
    return ((digits - spec.mean) / spec.std).astype(np.float32)[:, None, :, :]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


class ImageTask:
    def __init__(self, preprocessing: ImagePreprocessing, labels: list[str], version_dir: Path):
        self.preprocessing = preprocessing
        self.labels = labels
        self.input_name = "image"

    def decode_bytes(self, data: bytes, top_k: int) -> Decoded:
        digit = digit_to_mnist(to_grayscale(open_image(data)), self.preprocessing)
        return Decoded(feeds={self.input_name: normalise(digit[None], self.preprocessing)}, context={"top_k": top_k})

    def encode(self, outputs: list[np.ndarray], decoded: Decoded, model: str, version: str) -> ImageClassification:
        probabilities = softmax(outputs[0][0].astype(np.float64))
        order = np.argsort(-probabilities)[: decoded.context["top_k"]]
        top = [LabelScore(label=self.labels[i], score=float(probabilities[i])) for i in order]
        return ImageClassification(model=model, version=version, label=top[0].label, score=top[0].score, top_k=top)
