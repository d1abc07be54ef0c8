"""Digit pre-processing: any grayscale digit -> an MNIST-style 28x28 array, and the model's normalisation.

Photos and drawings are made to look like MNIST digits: light strokes on a dark background, cropped
to the ink, the longer side scaled to 20 px and pasted into 28x28 so that the centre of mass sits in
the middle. Training applies the same functions to MNIST itself.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

DIGIT_LABELS = tuple(str(digit) for digit in range(10))
INK_THRESHOLD = 0.2  # share of the strongest ink that still counts as ink for the bounding box


class BlankImage(ValueError):
    """The image is one flat colour: there is no digit to read."""


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


def digit_to_mnist(gray: np.ndarray, image_size: int = 28, digit_box: int = 20) -> np.ndarray:
    """A grayscale array (any size, any polarity) -> (image_size, image_size) float32 in [0, 1], ink bright."""
    background = _border_level(gray)
    ink = (gray - background) if background < 127.5 else (background - gray)
    ink = np.clip(ink, 0.0, None)
    peak = float(ink.max())
    if peak < 1.0:
        raise BlankImage("the image contains no visible digit (it is a single flat colour)")
    rows = np.flatnonzero((ink >= INK_THRESHOLD * peak).any(axis=1))
    cols = np.flatnonzero((ink >= INK_THRESHOLD * peak).any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] * (255.0 / peak)

    height, width = crop.shape
    scale = digit_box / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(crop.astype(np.float32), mode="F").resize(size, Image.Resampling.LANCZOS)
    digit = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 255.0) / 255.0

    canvas = np.zeros((image_size, image_size), dtype=np.float32)
    total = float(digit.sum())
    ys, xs = np.indices(digit.shape)
    centre_y = float((ys * digit).sum() / total) if total > 0 else digit.shape[0] / 2
    centre_x = float((xs * digit).sum() / total) if total > 0 else digit.shape[1] / 2
    top = int(round(image_size / 2 - centre_y - 0.5))
    left = int(round(image_size / 2 - centre_x - 0.5))
    top = min(max(top, 0), image_size - digit.shape[0])
    left = min(max(left, 0), image_size - digit.shape[1])
    canvas[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return canvas


def normalise(digits: np.ndarray, mean: float, std: float) -> np.ndarray:
    """(N, 28, 28) in [0, 1] -> the model's (N, 1, 28, 28) input."""
    return ((np.asarray(digits, dtype=np.float32) - mean) / std).astype(np.float32)[:, None, :, :]
