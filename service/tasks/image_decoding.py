"""Uploaded image bytes -> a grayscale array for the digit pre-processing, with every cost bounded.

An upload is refused before any pixel is decoded when its header declares more pixels than allowed, or
when decoding it would take more memory than one decode thread's share of the budget (decode_estimate:
the decoded pixels, the decoder's own buffers such as a TIFF tile, and the pre-processing's arrays).
Large images are shrunk by a whole factor before the float arrays of the pre-processing are made.
"""

from __future__ import annotations

import io
import math
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from service.limits import DEFAULT_LIMITS
from service.preprocessing.image import to_grayscale

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
WORKING_SIDE = 4096
MB = 1024 * 1024
# decode_estimate's terms, measured on Pillow 12 and numpy 2 (tests/service/test_image_decoding.py).
ROW_POINTER_BYTES = 8  # Pillow's table of row pointers: a 1 x 16,000,000 image costs 128 MB in it alone
WEBP_DECODE_COPIES = 3  # libwebp decodes into a buffer of its own, then Pillow copies and converts
WORKING_BYTES_PER_PIXEL = 40  # to_grayscale's and digit_to_mnist's float32 arrays, per working pixel
DECODE_OVERHEAD_BYTES = 16 * MB
MAX_DECODE_BYTES = DEFAULT_LIMITS.decode_bytes
EXIF_FORMATS = {"JPEG", "TIFF", "WEBP"}  # the formats whose EXIF orientation the pre-processing applies
REDUCIBLE_MODES = {"L", "LA", "RGB", "RGBA", "CMYK", "I", "F"}


def decode_estimate(image: Image.Image, declared: tuple[int, int]) -> int:
    """An upper bound, in bytes, of the memory that decoding `image` and pre-processing it takes, from its
    header alone: the decoded pixels (Pillow keeps 1, 2 or 4 bytes a pixel and a pointer a row), what the
    decoder holds besides (a TIFF tile or strip, a progressive JPEG's coefficients at full size, libwebp's
    own copy of the picture) and the pre-processing's float arrays on the shrunk working image.
    `declared` is the size in the header, before a JPEG's draft scale. Measured against real decodes in
    tests/service/test_image_decoding.py."""
    width, height = image.size  # as it will be decoded
    pixels = width * height
    pixel_bytes = 1 if image.mode in ("1", "L", "P") else 2 if image.mode in SIXTEEN_BIT_MODES else 4
    decoded = pixels * pixel_bytes + height * ROW_POINTER_BYTES
    if image.format == "WEBP":
        decoded *= WEBP_DECODE_COPIES
    if image.mode in SIXTEEN_BIT_MODES:
        decoded += pixels * 5  # eight_bit's 16-bit copy, its quotient and the 8-bit result
    factor = working_factor(width, height)
    working = (-(-width // factor)) * (-(-height // factor)) * WORKING_BYTES_PER_PIXEL
    return decoded + decoder_buffers(image, declared) + working + DECODE_OVERHEAD_BYTES


def decoder_buffers(image: Image.Image, declared: tuple[int, int]) -> int:
    """What the format's decoder allocates beside the picture, as its header declares it."""
    if image.format == "TIFF":
        tags = image.tag_v2
        bands = max(1, int(tags.get(277, 1) or 1))
        bits = tags.get(258, 8)
        bits = max(bits) if isinstance(bits, tuple) else int(bits or 8)
        row_bytes = lambda columns: -(-columns * bands * bits // 8)  # noqa: E731
        if 322 in tags and 323 in tags:  # tiled: the decoder inflates one whole tile at a time
            return row_bytes(int(tags[322])) * int(tags[323])
        rows = min(int(tags.get(278, image.height) or image.height), image.height)
        return row_bytes(image.width) * rows
    if image.format in JPEG_FAMILY and (image.info.get("progressive") or image.info.get("progression")):
        return declared[0] * declared[1] * len(image.getbands()) * 2  # 16-bit DCT coefficients, every component
    return 0


def open_image(data: bytes, max_pixels: int = MAX_PIXELS, max_decode_bytes: int = MAX_DECODE_BYTES) -> Image.Image:
    """Decode the first frame of one image; refuse what is not an accepted, sane image.

    The size, and what decoding it would cost (decode_estimate), are checked from the header before any
    pixel is decoded; further frames of an animated GIF, WebP or multi-page TIFF are never decoded.
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
            declared = image.size
            if image.format in JPEG_FAMILY and min(image.size) >= 2 * JPEG_DRAFT_SIDE:
                image.draft(None, (JPEG_DRAFT_SIDE, JPEG_DRAFT_SIDE))
            needed = decode_estimate(image, declared)
            if needed > max_decode_bytes:
                raise PayloadTooLarge(
                    f"decoding this {declared[0]}x{declared[1]} {image.format} image would take about "
                    f"{needed / MB:,.0f} MB (its pixels, its decoder's buffers and the pre-processing); at most "
                    f"{max_decode_bytes / MB:,.0f} MB per image (max_decode_mb shared by the decode workers)"
                )
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
    wide = np.asarray(upright).astype(np.uint16, copy=False)  # native byte order; 65535 // 257 = 255 fits
    return Image.fromarray(np.floor_divide(wide, 257).astype(np.uint8), mode="L")


def working_factor(width: int, height: int) -> int:
    """The whole factor an image is shrunk by before the pre-processing: its area to WORKING_PIXELS and
    its longer side to WORKING_SIDE (a 1 x 16,000,000 line is no more work than a square)."""
    by_area = math.ceil(math.sqrt(width * height / WORKING_PIXELS))
    by_side = math.ceil(max(width, height) / WORKING_SIDE)
    return max(1, by_area, by_side)


def working_image(image: Image.Image) -> Image.Image:
    """An image above WORKING_PIXELS, or longer than WORKING_SIDE, shrunk by a whole factor (box filter),
    so that the pre-processing's float arrays stay small: the digit ends up 20 px tall, so the detail lost
    does not reach the model."""
    factor = working_factor(image.width, image.height)
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


