"""Digit classification API: image bytes -> one MNIST-style row -> top-k labels."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from service.errors import BadRequest, InvalidInput, PayloadTooLarge, UnsupportedMediaType
from service.manifest import ImagePreprocessing
from service.preprocessing.image import BlankImage, digit_to_mnist, normalise, to_grayscale
from service.preprocessing.numeric import softmax
from service.tasks.base import Decoded, Task, TensorDeclaration

ACCEPTED_FORMATS = {"PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF"}
# File signatures of the accepted formats: such a file that fails to decode is corrupt (400), not foreign (415).
SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*")
MAX_PIXELS = 40_000_000  # larger images are refused (413) before their pixels are decoded


class ImageRequest(BaseModel):
    """One uploaded image (the multipart file's bytes) and how many labels to return."""

    model_config = ConfigDict(extra="forbid")

    data: bytes
    top_k: int = Field(3, ge=1, le=10)


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


class ImageTask(Task):
    kind = "image-classification"
    request_model = ImageRequest
    response_model = ImageClassification
    blocking_decode = True
    tensor_inputs = (
        TensorDeclaration("image", "FP32", (-1, 1, 28, 28), "pixel intensities in [0, 1], white digit on black (MNIST)"),
    )
    tensor_outputs = (TensorDeclaration("probabilities", "FP32", (-1, 10), "softmax over the labels 0-9"),)

    preprocessing: ImagePreprocessing

    def __init__(self, preprocessing: ImagePreprocessing, labels: Sequence[str], version_dir: Path):
        super().__init__(preprocessing, labels, version_dir)
        self.input_name = "image"

    def decode(self, request: ImageRequest) -> Decoded:
        spec = self.preprocessing
        try:
            digit = digit_to_mnist(to_grayscale(open_image(request.data)), spec.image_size, spec.digit_box)
        except BlankImage as exc:
            raise InvalidInput(str(exc)) from None
        return Decoded(rows=[normalise(digit[None], spec.mean, spec.std)[0]], context={"top_k": request.top_k})

    def collate(self, rows: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        return {self.input_name: np.stack(rows)}

    def decode_tensors(self, inputs: dict[str, np.ndarray], parameters: dict) -> Decoded:
        pixels = inputs["image"].astype(np.float32)
        if not np.all(np.isfinite(pixels)) or pixels.min(initial=0.0) < 0.0 or pixels.max(initial=0.0) > 1.0:
            raise InvalidInput("image: pixel intensities must be finite and within [0, 1] (white digit on black)")
        spec = self.preprocessing
        normalised = normalise(pixels[:, 0], spec.mean, spec.std)
        return Decoded(rows=list(normalised))

    def encode_tensors(self, outputs: list[np.ndarray], decoded: Decoded) -> dict[str, np.ndarray]:
        return {"probabilities": softmax(outputs[0]).astype(np.float32)}

    def encode(self, outputs: list[np.ndarray], decoded: Decoded, model: str, version: str) -> ImageClassification:
        probabilities = softmax(outputs[0][0])
        order = np.argsort(-probabilities)[: decoded.context["top_k"]]
        top = [LabelScore(label=self.labels[i], score=float(probabilities[i])) for i in order]
        return ImageClassification(model=model, version=version, label=top[0].label, score=top[0].score, top_k=top)
