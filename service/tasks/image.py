"""Digit classification API: image bytes -> one MNIST-style row -> top-k labels."""

from __future__ import annotations

import io
import math
import struct
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from service.errors import BadRequest, InvalidInput, PayloadTooLarge, UnsupportedMediaType
from service.limits import DEFAULT_LIMITS
from service.manifest import ImagePreprocessing
from service.preprocessing.image import BlankImage, digit_to_mnist, normalise, to_grayscale
from service.preprocessing.numeric import softmax
from service.tasks.base import Decoded, Task, TensorDeclaration

ACCEPTED_FORMATS = {"PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF"}
# Pillow names a JPEG that carries more pictures after the first (an MPF segment, as many cameras write) MPO.
JPEG_FAMILY = {"JPEG", "MPO"}
# File signatures of the accepted formats: such a file that fails to decode is corrupt (400), not foreign (415).
SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*")
MAX_PIXELS = DEFAULT_LIMITS.image_pixels  # the default of the max_image_pixels setting
# A JPEG larger than this on its shorter side is decoded at 1/2, 1/4 or 1/8 scale (never below it):
# the digit ends up 20 px tall, and a photo's full resolution would only cost memory.
JPEG_DRAFT_SIDE = 1024
SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}
# Larger decoded images are shrunk before the pre-processing turns them into float arrays (memory).
WORKING_PIXELS = 2048 * 2048
EXIF_FORMATS = {"JPEG", "TIFF", "WEBP"}  # the formats whose EXIF orientation the pre-processing applies
REDUCIBLE_MODES = {"L", "LA", "RGB", "RGBA", "CMYK", "I", "F"}


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


def open_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode the first frame of one image; refuse what is not an accepted, sane image.

    The size is checked from the header, before any pixel is decoded; further frames of an animated
    GIF, WebP or multi-page TIFF are never decoded.
    """
    if not data:
        raise BadRequest("the uploaded file is empty")
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb guard warns below our limit's maximum; the check below is the one that counts.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if ("JPEG" if image.format in JPEG_FAMILY else image.format) not in ACCEPTED_FORMATS:
                raise UnsupportedMediaType(
                    f"image format {image.format} is not accepted; send one of {', '.join(sorted(ACCEPTED_FORMATS))}"
                )
            if image.width * image.height > max_pixels:
                raise PayloadTooLarge(
                    f"image is {image.width}x{image.height} = {image.width * image.height:,} pixels; at most {max_pixels:,}"
                )
            if image.format in JPEG_FAMILY and min(image.size) >= 2 * JPEG_DRAFT_SIDE:
                image.draft(None, (JPEG_DRAFT_SIDE, JPEG_DRAFT_SIDE))
            image.load()
    except Image.DecompressionBombError:  # Pillow's own guard, at twice its MAX_IMAGE_PIXELS, refused the header
        raise PayloadTooLarge(
            f"image has more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels; at most {max_pixels:,}"
        ) from None
    except UnidentifiedImageError:
        if data.startswith(SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
            raise BadRequest("the image is corrupt or truncated and could not be decoded") from None
        raise UnsupportedMediaType("the file is not an image in an accepted format") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise BadRequest(f"the image could not be decoded: {exc}") from None
    return image


def upright(image: Image.Image) -> Image.Image:
    """An MPO's EXIF orientation applied here: the pre-processing applies it for plain JPEGs only."""
    return ImageOps.exif_transpose(image) if image.format == "MPO" else image


def eight_bit(image: Image.Image) -> Image.Image:
    """16-bit grayscale scaled to 8 bits (Pillow's own conversion to L clips everything above 255 to white)."""
    if image.mode not in SIXTEEN_BIT_MODES:
        return image
    upright = ImageOps.exif_transpose(image)  # here, as the 8-bit copy no longer knows its EXIF
    return Image.fromarray((np.asarray(upright, dtype=np.uint32) // 257).astype(np.uint8), mode="L")


def working_image(image: Image.Image) -> Image.Image:
    """An image above WORKING_PIXELS shrunk by a whole factor (box filter), so that the pre-processing's
    float arrays stay small: the digit ends up 20 px tall, so the detail lost does not reach the model."""
    factor = math.ceil(math.sqrt(image.width * image.height / WORKING_PIXELS))
    if factor < 2:
        return image
    if image.format in EXIF_FORMATS:
        image = ImageOps.exif_transpose(image)  # here, as the shrunk copy no longer knows its EXIF
    if image.mode in ("P", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")
    elif image.mode not in REDUCIBLE_MODES:
        image = image.convert("L")
    return image.reduce(factor)


def grayscale_of(image: Image.Image) -> np.ndarray:
    """The pre-processing's grayscale of a decoded image; a broken EXIF block or colour mode is the client's 400."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about a corrupt EXIF block and reads what it can
            image = working_image(eight_bit(upright(image)))  # and the full-size decode is released
            return to_grayscale(image)
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, TypeError, KeyError) as exc:
        raise BadRequest(f"the image could not be converted to grayscale: {exc}") from None


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

    def __init__(self, preprocessing: ImagePreprocessing, labels: Sequence[str], version_dir: Path, **options):
        super().__init__(preprocessing, labels, version_dir, **options)
        self.input_name = "image"

    def decode(self, request: ImageRequest) -> Decoded:
        spec = self.preprocessing
        try:
            gray = grayscale_of(open_image(request.data, self.limits.image_pixels))
            digit = digit_to_mnist(gray, spec.image_size, spec.digit_box)
        except BlankImage as exc:
            raise InvalidInput(str(exc)) from None
        return Decoded(rows=[normalise(digit[None], spec.mean, spec.std)[0]], context={"top_k": request.top_k})

    def collate(self, rows: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        return {self.input_name: np.stack(rows)}

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
