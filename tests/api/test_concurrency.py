"""Inference and image decoding run off the event loop: health and the model list answer while both are busy."""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from PIL import Image, ImageDraw


def large_digit_png(size: int = 4000) -> bytes:
    """The largest drawing of a 7 the default limits accept: cheap to send, slow to decode and pre-process."""
    image = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(image)
    draw.line([(size * 0.25, size * 0.2), (size * 0.75, size * 0.2), (size * 0.45, size * 0.85)], fill=0, width=size // 25)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_health_answers_while_inference_and_decoding_are_busy(server):
    long_texts = [("An honest, unhurried film about a family that does not talk to itself. " * 20).strip()] * 64
    png = large_digit_png()

    def sentiment(_):
        with httpx.Client(base_url=server.url, timeout=300) as client:
            return client.post("/sentiment", json={"texts": long_texts}).status_code

    def classify(_):
        with httpx.Client(base_url=server.url, timeout=300) as client:
            return client.post("/classify-image", files={"file": ("seven.png", png, "image/png")}).status_code

    with ThreadPoolExecutor(12) as pool, httpx.Client(base_url=server.url, timeout=30) as client:
        heavy = [pool.submit(sentiment, i) for i in range(6)] + [pool.submit(classify, i) for i in range(6)]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until rows are queued behind a running batch
            batching = {m["name"]: m["batching"] for m in client.get("/models").json()["models"]}
            if batching["sentiment-transformer"]["queued_rows"] > 0:
                break
            time.sleep(0.02)
        timings = {}
        for path in ("/health", "/health/live", "/health/ready", "/models"):
            started = time.perf_counter()
            response = client.get(path)
            timings[path] = time.perf_counter() - started
            assert response.status_code == 200, (path, response.text)
        busy_when_answered = sum(not f.done() for f in heavy)
        statuses = [f.result() for f in heavy]
    assert statuses == [200] * 12
    assert busy_when_answered > 0, "the heavy requests finished before health was asked: the test proved nothing"
    assert max(timings.values()) < 1.0, timings

