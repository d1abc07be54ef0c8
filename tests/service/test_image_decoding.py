"""Decoding costs are bounded from the header: the estimate holds on real decodes of the largest images the
service accepts, and an upload whose decoder would inflate far more than its picture is refused unread."""

from __future__ import annotations

import io
import json
import math
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from service.errors import PayloadTooLarge
from service.limits import DEFAULT_LIMITS
from service.settings import Settings
from service.tasks.image_decoding import MB, open_image, working_factor

ROOT = Path(__file__).resolve().parents[2]


def deflated_zeros(size: int) -> bytes:
    compressor = zlib.compressobj(9)
    block = b"\0" * (1 << 22)
    out = [compressor.compress(block) for _ in range(size // len(block))]
    return b"".join(out) + compressor.compress(b"\0" * (size % len(block))) + compressor.flush()


def tiff(width: int, height: int, layout: list[tuple[int, int, int, object]], data: bytes) -> bytes:
    """A little-endian, deflated, 8-bit grayscale TIFF with the given strip or tile tags."""
    short, long_ = 3, 4
    entries = sorted([(256, long_, 1, width), (257, long_, 1, height), (258, short, 1, 8), (259, short, 1, 8),
                      (262, short, 1, 1), (277, short, 1, 1), *layout])
    data_offset = 8 + 2 + 12 * len(entries) + 4
    out = bytearray(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries)))
    for tag, kind, count, value in entries:
        value = {"offset": data_offset, "length": len(data)}.get(value, value)
        out += struct.pack("<HHIHH", tag, kind, count, value, 0) if kind == short else struct.pack("<HHII", tag, kind, count, value)
    return bytes(out + struct.pack("<I", 0) + data)


def tile_bomb(side: int = 256, tile: int = 32768) -> bytes:
    """256x256 pixels declared, one 32768x32768 tile: about 1 MB that inflates to 1 GiB."""
    return tiff(side, side, [(322, 4, 1, tile), (323, 4, 1, tile), (324, 4, 1, "offset"), (325, 4, 1, "length")],
                deflated_zeros(tile * tile))


def drawn_digit(width: int, height: int, mode: str) -> Image.Image:
    canvas = Image.new("L", (width, height), 255)
    ImageDraw.Draw(canvas).line([(width * 0.3, height * 0.2), (width * 0.7, height * 0.2), (width * 0.45, height * 0.8)],
                                fill=0, width=max(1, min(width, height) // 30))
    if mode == "I;16":
        return Image.fromarray(np.asarray(canvas, dtype=np.uint16) * 257)
    return canvas.convert(mode)


# The largest images the default limits accept (16,000,000 pixels), in the formats and modes that cost most.
WORST_ACCEPTED = [
    ("rgba.png", 4000, 4000, "RGBA", "PNG", {}),
    ("tall.png", 1, 16_000_000, "L", "PNG", {}),
    ("wide.png", 16_000_000, 1, "1", "PNG", {}),
    ("float.tif", 4000, 4000, "F", "TIFF", {}),
    ("sixteen.tif", 4000, 4000, "I;16", "TIFF", {}),
    ("progressive.jpg", 4000, 4000, "RGB", "JPEG", {"progressive": True}),
    ("lossless.webp", 4000, 4000, "RGBA", "WEBP", {"lossless": True}),
    ("rgba.bmp", 4000, 4000, "RGBA", "BMP", {}),
]

# Run in a fresh process: the peak resident memory (reset first) of opening and pre-processing one file.
MEASURE = """
import json, sys
from pathlib import Path
from service.tasks.image_decoding import decode_estimate, grayscale_of, open_image
from service.preprocessing.image import digit_to_mnist
from PIL import Image
import io

def status(key):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key))

data = Path(sys.argv[1]).read_bytes()
header = Image.open(io.BytesIO(data))
declared = header.size
if header.format == "JPEG" and min(header.size) >= 2048:
    header.draft(None, (1024, 1024))
estimate = decode_estimate(header, declared)
del header
open("/proc/self/clear_refs", "w").write("5")
before = status("VmRSS:")
digit_to_mnist(grayscale_of(open_image(data, max_decode_bytes=1 << 40)))
print(json.dumps({"estimate": estimate, "peak": status("VmHWM:") - before}))
"""


@pytest.fixture(scope="module")
def worst_images(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("worst-images")
    paths = {}
    for name, width, height, mode, fmt, options in WORST_ACCEPTED:
        paths[name] = folder / name
        drawn_digit(width, height, mode).save(paths[name], format=fmt, **options)
    return paths


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's peak-RSS reset")
@pytest.mark.parametrize("name", [case[0] for case in WORST_ACCEPTED])
def test_the_estimate_bounds_the_real_decode_of_the_largest_accepted_images(worst_images, name):
    measured = json.loads(subprocess.run([sys.executable, "-c", MEASURE, str(worst_images[name])], cwd=ROOT,
                                         check=True, capture_output=True, text=True).stdout)
    assert measured["peak"] <= measured["estimate"], measured
    # Every one of them fits one decode thread's share of the default budget, so the defaults accept it.
    assert measured["estimate"] <= DEFAULT_LIMITS.decode_bytes, measured


def test_a_tiff_whose_tile_inflates_far_past_its_picture_is_refused_from_its_header():
    bomb = tile_bomb()
    assert len(bomb) < 2 * MB
    with pytest.raises(PayloadTooLarge, match=r"256x256 TIFF image would take about 1,0\d\d MB"):
        open_image(bomb)


def test_the_per_image_share_is_the_budget_over_the_decode_workers():
    settings = Settings(max_decode_mb=768, decode_workers=4)
    assert settings.input_limits().decode_bytes * settings.decode_workers <= 768 * MB
    # With more workers, each image's share is smaller: the largest RGBA PNG no longer fits one and is refused.
    tight = Settings(max_decode_mb=256, decode_workers=4).input_limits().decode_bytes
    rgba = Image.new("RGBA", (4000, 4000))
    buffer = io.BytesIO()
    rgba.save(buffer, format="PNG")
    with pytest.raises(PayloadTooLarge, match="at most 64 MB per image"):
        open_image(buffer.getvalue(), max_decode_bytes=tight)


def test_an_extreme_aspect_ratio_is_shrunk_by_its_longer_side():
    assert working_factor(1, 16_000_000) == math.ceil(16_000_000 / 4096)
    assert working_factor(2048, 2048) == 1 and working_factor(4000, 4000) == 2
