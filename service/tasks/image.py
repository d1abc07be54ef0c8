"""Digit classification API: image bytes -> one MNIST-style row -> top-k labels."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from service.errors import InvalidInput
from service.manifest import ImagePreprocessing
from service.preprocessing.image import BlankImage, digit_to_mnist, normalise
from service.preprocessing.numeric import softmax
from service.tasks.base import Decoded, HttpBinding, Task, TensorDeclaration
from service.tasks.image_decoding import grayscale_of, open_image

class ImageRequest(BaseModel):
    """One uploaded image (the multipart file's bytes, in field `file`) and how many labels to return."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    data: bytes = Field(alias="file", description="PNG, JPEG, BMP, GIF, WebP or TIFF image of one digit")
    top_k: int = Field(3, ge=1, le=10, description="how many labels to return")


class LabelScore(BaseModel):
    label: str
    score: float = Field(description="softmax probability")


class ImageClassification(BaseModel):
    model: str
    version: str
    label: str
    score: float
    top_k: list[LabelScore]


class ImageTask(Task):
    kind = "image-classification"
    request_model = ImageRequest
    response_model = ImageClassification
    blocking_decode = True
    http = HttpBinding("multipart/form-data", query=("top_k",))
    summary = "Classify a digit in an uploaded image (multipart field `file`)"
    tensor_inputs = (
        TensorDeclaration("image", "FP32", (-1, 1, 28, 28), "pixel intensities in [0, 1], white digit on black (MNIST)"),
    )
    tensor_outputs = (TensorDeclaration("probabilities", "FP32", (-1, 10), "softmax over the labels 0-9"),)

    preprocessing: ImagePreprocessing

    def __init__(self, preprocessing: ImagePreprocessing, labels: Sequence[str], version_dir: Path, **options):
        super().__init__(preprocessing, labels, version_dir, **options)
        self.input_name = "image"

    def decode(self, request: ImageRequest) -> Decoded:
        spec = self.preprocessing
        try:
            gray = grayscale_of(open_image(request.data, self.limits.image_pixels, self.limits.decode_bytes))
            digit = digit_to_mnist(gray, spec.image_size, spec.digit_box)
        except BlankImage as exc:
            raise InvalidInput(str(exc)) from None
        return Decoded(rows=[normalise(digit[None], spec.mean, spec.std)[0]], context={"top_k": request.top_k})

    def collate(self, rows: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        return {self.input_name: np.stack(rows)}

    def check_tensor_shape(self, tensor: str, shape: list[int]) -> None:
        images = shape[0] if shape else 1
        size = self.preprocessing.image_size
        if images > self.limits.images or math.prod(shape) > self.limits.images * size * size:
            raise InvalidInput(f"{tensor}: {images:,} images in one request; at most {self.limits.images}")

    def decode_tensors(self, inputs: dict[str, np.ndarray], parameters: dict) -> Decoded:
        if len(inputs["image"]) > self.limits.images:
            raise InvalidInput(f"image: {len(inputs['image'])} images in one request; at most {self.limits.images}")
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
