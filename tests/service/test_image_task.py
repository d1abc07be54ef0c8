"""The MNIST-style pre-processing on real digits: polarity, cropping, scaling and centring."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from models.mnist_data import load_digits
from service.errors import BadRequest, InvalidInput, PayloadTooLarge, UnsupportedMediaType
from service.manifest import ImagePreprocessing
from service.preprocessing.image import BlankImage, digit_to_mnist, to_grayscale
from service.limits import InputLimits
from service.tasks.image import ImageRequest, ImageTask
from service.tasks.image_decoding import WORKING_PIXELS, grayscale_of, open_image, working_image

SPEC = ImagePreprocessing(mean=0.1, std=0.3)


@pytest.fixture(scope="module")
def digits():
    data = load_digits(seed=0)
    return data.images[data.test[::50]]  # two of every class


def bytes_of(image: Image.Image, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def shift_tolerant_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference, forgiving the one-pixel shifts that rounding the centre can cause."""
    return min(
        float(np.abs(np.roll(a, (dy, dx), axis=(0, 1)) - b).mean()) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
    )


def test_output_is_centred_and_scaled(digits):
    for digit in digits:
        out = digit_to_mnist(digit.astype(np.float32))
        assert out.shape == (28, 28) and out.dtype == np.float32
        assert 0.0 <= out.min() and out.max() <= 1.0
        ys, xs = np.indices(out.shape)
        centre = ((ys * out).sum() / out.sum(), (xs * out).sum() / out.sum())
        assert np.allclose(centre, (13.5, 13.5), atol=1.0)
        ink = np.argwhere(out > 0.2)
        extent = ink.max(0) - ink.min(0) + 1
        assert 17 <= extent.max() <= 21


def test_polarity_and_size_do_not_matter(digits):
    for digit in digits[:5]:
        reference = digit_to_mnist(digit.astype(np.float32))
        inverted = Image.fromarray(255 - digit).resize((280, 280), Image.Resampling.BICUBIC)
        canvas = Image.new("L", (400, 360), 255)
        canvas.paste(inverted, (70, 40))
        again = digit_to_mnist(to_grayscale(open_image(bytes_of(canvas))))
        assert shift_tolerant_difference(again, reference) < 0.05


def test_decode_gives_one_row_of_model_input(digits):
    task = ImageTask(SPEC, [str(d) for d in range(10)], version_dir=None)
    decoded = task.decode(ImageRequest(data=bytes_of(Image.fromarray(digits[0])), top_k=3))
    assert len(decoded.rows) == 1 and decoded.context["top_k"] == 3
    feeds = task.collate(decoded.rows + decoded.rows)
    assert feeds["image"].shape == (2, 1, 28, 28)
    assert feeds["image"].dtype == np.float32


def test_blank_image_is_invalid_input():
    task = ImageTask(SPEC, [str(d) for d in range(10)], version_dir=None)
    with pytest.raises(InvalidInput):
        task.decode(ImageRequest(data=bytes_of(Image.new("L", (40, 40), 255))))


def test_photo_like_grey_background(digits):
    """A light-grey, slightly noisy background with dark strokes still yields one centred digit."""
    rng = np.random.default_rng(0)
    photo = 200 - digits[3].astype(np.float32) * 0.6 + rng.normal(0, 4, (28, 28))
    out = digit_to_mnist(np.clip(photo, 0, 255))
    reference = digit_to_mnist(digits[3].astype(np.float32))
    assert shift_tolerant_difference(out, reference) < 0.08


def test_refusals():
    with pytest.raises(BadRequest):
        open_image(b"")
    with pytest.raises(UnsupportedMediaType):
        open_image(b"plain text, not an image")
    with pytest.raises(UnsupportedMediaType):
        open_image(bytes_of(Image.new("L", (8, 8)), "PPM"))
    with pytest.raises(BadRequest):
        open_image(bytes_of(Image.new("L", (64, 64)))[:60])
    with pytest.raises(PayloadTooLarge):
        open_image(bytes_of(Image.new("1", (7000, 7000))))
    with pytest.raises(BlankImage):
        digit_to_mnist(np.full((30, 30), 128, np.float32))


# --- limits, odd formats and large images ---------------------------------------------------------


def canvas_with(digit: np.ndarray, size: tuple[int, int], mode: str = "L") -> Image.Image:
    """The digit, black on white, scaled to fill most of a canvas of `size`."""
    side = min(size) * 3 // 4
    ink = Image.fromarray(255 - digit).resize((side, side), Image.Resampling.BICUBIC)
    canvas = Image.new("L", size, 255)
    canvas.paste(ink, ((size[0] - side) // 2, (size[1] - side) // 2))
    return canvas.convert(mode)


def test_the_configured_pixel_limit_is_checked_before_decoding():
    task = ImageTask(SPEC, [str(d) for d in range(10)], version_dir=None, limits=InputLimits(image_pixels=100))
    with pytest.raises(PayloadTooLarge, match="11x10 = 110 pixels; at most 100"):
        task.decode(ImageRequest(data=bytes_of(Image.new("L", (11, 10), 255))))
    with pytest.raises(InvalidInput):  # within the limit: decoded, and blank
        task.decode(ImageRequest(data=bytes_of(Image.new("L", (10, 10), 255))))


def test_sixteen_bit_grayscale_reads_as_its_eight_bit_self(digits):
    eight = Image.fromarray(255 - digits[4])
    sixteen = Image.fromarray((np.asarray(eight, dtype=np.uint16) * 257).astype(np.uint16))
    assert sixteen.mode == "I;16"
    reference = digit_to_mnist(to_grayscale(eight))
    assert shift_tolerant_difference(digit_to_mnist(grayscale_of(open_image(bytes_of(sixteen)))), reference) < 0.01


@pytest.mark.parametrize("fmt, mode", [("JPEG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"), ("TIFF", "L"), ("PNG", "1")])
def test_large_images_are_shrunk_before_the_float_arrays_and_read_the_same(digits, fmt, mode):
    small = canvas_with(digits[6], (300, 200))
    large = canvas_with(digits[6], (4800, 3200), mode)
    opened = open_image(bytes_of(large, fmt))
    if fmt == "JPEG":
        assert opened.size == (2400, 1600)  # decoded at half scale
    assert working_image(opened).width * working_image(opened).height <= WORKING_PIXELS
    reference = digit_to_mnist(to_grayscale(small))
    assert shift_tolerant_difference(digit_to_mnist(grayscale_of(opened)), reference) < 0.06


def test_only_the_first_frame_is_read(digits):
    first, second = Image.fromarray(255 - digits[1]), Image.fromarray(255 - digits[8])
    out = io.BytesIO()
    first.save(out, format="GIF", save_all=True, append_images=[second], duration=50)
    image = open_image(out.getvalue())
    assert image.n_frames == 2 and image.tell() == 0
    reference = digit_to_mnist(to_grayscale(first))
    assert shift_tolerant_difference(digit_to_mnist(grayscale_of(image)), reference) < 0.01


def test_a_corrupt_exif_block_is_read_around(digits):
    image = Image.fromarray(255 - digits[2]).convert("RGB")
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=95, exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff" + b"\x01" * 60_000)
    gray = grayscale_of(open_image(out.getvalue()))
    assert gray.shape == (28, 28)


def test_the_configured_image_count_is_enforced_on_tensors():
    task = ImageTask(SPEC, [str(d) for d in range(10)], version_dir=None, limits=InputLimits(images=2))
    assert len(task.decode_tensors({"image": np.zeros((2, 1, 28, 28), np.float32)}, {}).rows) == 2
    with pytest.raises(InvalidInput, match="3 images in one request; at most 2"):
        task.decode_tensors({"image": np.zeros((3, 1, 28, 28), np.float32)}, {})


def test_a_multi_picture_jpeg_reads_its_first_picture_upright(digits):
    first, second = Image.fromarray(255 - digits[5]).convert("RGB"), Image.fromarray(255 - digits[9]).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the stored picture is rotated; the viewer turns it 90 degrees clockwise
    out = io.BytesIO()
    first.rotate(90, expand=True).save(out, format="MPO", save_all=True, append_images=[second], exif=exif, quality=95)
    image = open_image(out.getvalue())
    assert image.format == "MPO"
    reference = digit_to_mnist(to_grayscale(first))
    assert shift_tolerant_difference(digit_to_mnist(grayscale_of(image)), reference) < 0.05
