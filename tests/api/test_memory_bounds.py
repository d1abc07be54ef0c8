"""Memory stays bounded: the largest inputs the default limits accept, 16 at once, grow the server's
resident memory by well under 1 GiB (images decode on a bounded pool, large ones at reduced size).

The server's peak resident set (VmHWM in /proc/<pid>/status) is reset before each burst, so each test
measures its own peak, not a sample that could miss it.
"""

from __future__ import annotations

import io
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.limits import DEFAULT_LIMITS
from tests.conftest import start_server

DATA = Path(__file__).resolve().parent.parent / "data"
AT_ONCE = 16
GIB = 1024**3
SIDE = int(DEFAULT_LIMITS.image_pixels**0.5)  # the largest square image the default limit accepts

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")]  # a server of its own and bursts of the largest inputs


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS


@pytest.fixture(scope="module")
def default_server(api_repository, tmp_path_factory):
    """A server with every limit at its default (the shared test server lowers the body limit)."""
    with start_server(api_repository, tmp_path_factory.mktemp("memory") / "server.log") as running:
        yield running


def burst(server, send) -> int:
    """Bytes the server's resident set grew by, at its peak, while AT_ONCE requests ran at once."""
    pid = server.process.pid
    with server.client(timeout=300) as client:
        send(client)  # once alone: what is loaded on first use is not growth under load
        reset_peak(pid)
        before = memory_kib(pid, "VmRSS")
        with ThreadPoolExecutor(AT_ONCE) as pool:
            responses = list(pool.map(lambda _: send(client), range(AT_ONCE)))
        peak = memory_kib(pid, "VmHWM")
    print(f"resident {before / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB under {AT_ONCE} at once")
    for response in responses:
        assert response.status_code == 200, response.text
    return (peak - before) * 1024


def largest_image(mode: str, fmt: str) -> bytes:
    """A digit, black on white, filling a SIDE x SIDE image; RGBA gets a transparent margin too."""
    ink = Image.open(DATA / "digit-7.png").convert("L").resize((SIDE * 3 // 4,) * 2, Image.Resampling.NEAREST)
    canvas = Image.new("L", (SIDE, SIDE), 255)
    canvas.paste(ink, (SIDE // 8, SIDE // 8))
    image = canvas.convert(mode)
    if mode == "RGBA":
        alpha = np.full((SIDE, SIDE), 255, np.uint8)
        alpha[: SIDE // 16] = 0
        image.putalpha(Image.fromarray(alpha))
    out = io.BytesIO()
    image.save(out, format=fmt)
    assert SIDE * SIDE <= DEFAULT_LIMITS.image_pixels < (SIDE + 1) * (SIDE + 1)
    return out.getvalue()


@pytest.mark.parametrize(
    "mode, fmt", [("RGBA", "PNG"), ("RGBA", "WEBP"), ("RGB", "JPEG")], ids=["png-rgba", "webp-rgba", "jpeg"]
)
def test_largest_images_at_once(default_server, mode, fmt):
    payload = largest_image(mode, fmt)

    def send(client):
        return client.post("/classify-image", files={"file": (f"big.{fmt.lower()}", payload, "application/octet-stream")})

    grown = burst(default_server, send)
    assert grown < GIB, f"{fmt} {mode} {SIDE}x{SIDE} x{AT_ONCE}: resident memory grew {grown / 2**20:.0f} MiB"
    assert send(default_server.client()).json()["label"] == "7"


def test_longest_texts_at_once(default_server):
    rng = random.Random(0)
    words = ["good", "bad", "film", "plot", "slow", "lovely", "awful", "the", "and", "acting"]

    def text() -> str:
        return " ".join(rng.choice(words) for _ in range(DEFAULT_LIMITS.text_chars))[: DEFAULT_LIMITS.text_chars]

    body = {"texts": [text() for _ in range(DEFAULT_LIMITS.texts)]}
    grown = burst(default_server, lambda client: client.post("/sentiment", json=body))
    assert grown < GIB, f"{DEFAULT_LIMITS.texts} texts x{AT_ONCE}: resident memory grew {grown / 2**20:.0f} MiB"


def test_longest_series_at_once(default_server):
    series = (100 + 10 * np.sin(np.arange(DEFAULT_LIMITS.series_length) * 2 * np.pi / 12)).round(3).tolist()
    grown = burst(default_server, lambda client: client.post("/predict-sequence", json={"series": series, "horizon": 12}))
    assert grown < GIB, f"series of {len(series):,} x{AT_ONCE}: resident memory grew {grown / 2**20:.0f} MiB"
