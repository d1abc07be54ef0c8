"""Hostile and odd requests against a real server: each gets its exact status in the one error shape,
valid-but-odd inputs get a sane 200, nothing is a 5xx, and the server still answers normally afterwards.

The typed endpoints answer errors as {"error": {"code", "message"}}; the Open Inference Protocol
routes (/v2) as {"error": "message"}, the shape its clients read. The test server runs with
--max-request-mb 2.
"""

from __future__ import annotations

import io
import json
import math
import socket
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from tests.conftest import start_server

DATA = Path(__file__).resolve().parent.parent / "data"
JSON = {"content-type": "application/json"}
SERIES = [315, 301, 356, 348, 355, 422, 465, 467, 404, 347, 305, 336, 340, 318, 362, 348, 363, 435, 491, 505, 404,
          359, 310, 337, 360, 342, 406, 396, 420, 472, 548, 559, 463, 407, 362, 405, 417, 391, 419, 461, 472, 535]
MB = 1024 * 1024


# --- images built here, small on disk -----------------------------------------------------------


def digit(name: str = "digit-7.png") -> Image.Image:
    return Image.open(DATA / name).convert("L")


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bomb(width: int, height: int) -> bytes:
    """A valid one-bit PNG of one colour: tens of kilobytes on disk, width x height pixels decoded."""
    row = b"\x00" + b"\xff" * math.ceil(width / 8)  # filter byte, then white pixels
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def jpeg_with_exif_segments(count: int) -> bytes:
    """The digit as a JPEG with `count` APP1 Exif segments of 64 KiB each right after its start marker."""
    plain = encoded(digit().convert("RGB"), "JPEG", quality=90)
    payload = b"Exif\x00\x00II*\x00\x08\x00\x00\x00" + b"\x00" * (65533 - 16)
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return plain[:2] + segment * count + plain[2:]


def animated_gif() -> bytes:
    """First frame a 7, second a 3: only the first frame is read."""
    return encoded(digit(), "GIF", save_all=True, append_images=[digit("digit-3.png")], duration=100, loop=0)


def multipage_tiff() -> bytes:
    return encoded(digit(), "TIFF", save_all=True, append_images=[digit("digit-3.png")])


def sixteen_bit_png() -> bytes:
    wide = (np.asarray(digit(), dtype=np.uint16) * 257).astype(np.uint16)
    image = Image.fromarray(wide)
    assert image.mode == "I;16"
    return encoded(image, "PNG")


def mpo() -> bytes:
    """A JPEG followed by a second picture (an MPF segment, as many cameras write): the first is read."""
    return encoded(digit().convert("RGB"), "MPO", save_all=True, append_images=[digit("digit-3.png").convert("RGB")])


def cmyk_jpeg() -> bytes:
    image = digit().convert("CMYK")
    return encoded(image, "JPEG", quality=95)


def transparent_png() -> bytes:
    """Black strokes on a fully transparent background."""
    ink = 255 - np.asarray(digit(), dtype=np.uint8)
    rgba = np.zeros((*ink.shape, 4), dtype=np.uint8)
    rgba[..., 3] = ink
    return encoded(Image.fromarray(rgba, mode="RGBA"), "PNG")


def upload(payload: bytes, mime: str = "image/png", **params) -> dict:
    return {"files": {"file": ("upload", payload, mime)}, "params": params}


# --- raw HTTP, for what an HTTP client library would not send ---------------------------------------


def raw_exchange(url: str, request: bytes, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are; read one response (status, headers, body)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return status, headers, body[:length]


def lying_length(path: str, declared: int, body: bytes, content_type: str = "application/json") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {declared}\r\nConnection: close\r\n\r\n"
    ).encode() + body


# --- the table ----------------------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    method: str
    path: str
    request: dict[str, Any] | Callable[[], dict[str, Any]]  # httpx keyword arguments (or how to build them)
    status: int
    code: str | None = None  # the typed error code; None for the V2 shape or for a 200
    check: Callable[[dict], None] | None = None  # for a 200: what a sane answer looks like
    raw: Callable[[], bytes] | None = field(default=None)  # send these bytes instead of an httpx request
    says: str | None = None  # a phrase the error message must contain, where the status alone could mislead


def label_is(expected: str) -> Callable[[dict], None]:
    def check(body: dict) -> None:
        assert body["label"] == expected, body
        assert 0.0 <= body["score"] <= 1.0

    return check


def sentiment_results(count: int, truncated: bool | None = None) -> Callable[[dict], None]:
    def check(body: dict) -> None:
        assert len(body["results"]) == count, body
        for result in body["results"]:
            assert result["label"] in {"negative", "neutral", "positive"}
            assert abs(sum(result["scores"].values()) - 1.0) < 1e-4
            if truncated is not None:
                assert result["truncated"] is truncated
    return check


def finite_forecast(horizon: int, near: float | None = None, tolerance: float = 0.05) -> Callable[[dict], None]:
    def check(body: dict) -> None:
        forecast = body["forecast"]
        assert len(forecast) == horizon and all(math.isfinite(v) for v in forecast), body
        if near is not None:
            assert all(abs(v - near) <= tolerance * abs(near) for v in forecast), forecast
    return check


def finite_v2_output(name: str, size: int) -> Callable[[dict], None]:
    def check(body: dict) -> None:
        (output,) = [o for o in body["outputs"] if o["name"] == name]
        assert len(output["data"]) == size and all(math.isfinite(v) for v in output["data"]), body
    return check


def raw_json(text: str | bytes) -> dict:
    return {"content": text.encode() if isinstance(text, str) else text, "headers": JSON}


def series_with(literal: str) -> dict:
    return raw_json('{"series": [' + ", ".join(map(str, SERIES)) + ", " + literal + "]}")


def v2_json(body: dict) -> dict:
    return {"content": json.dumps(body).encode(), "headers": JSON}


def v2_binary(header: dict, blob: bytes, header_length: int | str | None) -> dict:
    head = json.dumps(header).encode()
    headers = {"content-type": "application/octet-stream"}
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = str(header_length)
    return {"content": head + blob, "headers": headers}


def texts_tensor(texts: list[str], shape: list[int] | None = None, datatype: str = "BYTES") -> dict:
    return {"inputs": [{"name": "text", "shape": shape or [len(texts)], "datatype": datatype, "data": texts}]}


def chunked(total: int) -> Callable[[], dict]:
    def build() -> dict:
        def chunks():
            sent = 0
            while sent < total:
                sent += 65536
                yield b"0" * 65536
        return {"content": chunks(), "headers": JSON}
    return build


BINARY_SERIES = np.asarray(SERIES, dtype="<f4").tobytes()
HISTORY_HEAD = {"inputs": [{"name": "history", "shape": [1, len(SERIES)], "datatype": "FP32",
                            "parameters": {"binary_data_size": len(BINARY_SERIES)}}]}

CASES = [
    # --- bodies and content types (typed endpoints) ---
    Case("empty-body", "POST", "/sentiment", raw_json(b""), 422, "invalid_input"),
    Case("invalid-json", "POST", "/sentiment", raw_json('{"text": "unfinished'), 400, "bad_request"),
    Case("json-null", "POST", "/sentiment", raw_json("null"), 422, "invalid_input"),
    Case("top-level-array", "POST", "/sentiment", raw_json('[{"text": "fine"}]'), 422, "invalid_input"),
    Case("top-level-string", "POST", "/predict-sequence", raw_json('"series"'), 422, "invalid_input"),
    Case("deeply-nested-json", "POST", "/sentiment", raw_json("[" * 100_000 + "]" * 100_000), 400, "bad_request"),
    # Duplicated keys: the last one wins (as in every common JSON parser): one text scored, not three.
    Case("duplicated-keys", "POST", "/sentiment", raw_json('{"texts": ["a", "b", "c"], "texts": ["Lovely."]}'), 200,
         check=sentiment_results(1)),
    Case("text-plain", "POST", "/sentiment", {"content": b'{"text": "fine"}', "headers": {"content-type": "text/plain"}},
         415, "unsupported_media_type"),
    Case("form-urlencoded", "POST", "/predict-sequence", {"data": {"series": "1"}}, 415, "unsupported_media_type"),
    Case("json-to-image-endpoint", "POST", "/classify-image", {"json": {"file": "x"}}, 415, "unsupported_media_type"),
    Case("non-utf8-bytes", "POST", "/sentiment", raw_json(b'{"text": "caf\xe9 \xff\xfe"}'), 400, "bad_request"),
    Case("body-over-limit", "POST", "/sentiment", raw_json(b'{"text": "' + b"a" * (3 * MB) + b'"}'), 413,
         "payload_too_large"),
    Case("chunked-over-limit", "POST", "/sentiment", chunked(3 * MB), 413, "payload_too_large"),
    Case("chunked-over-limit-forecast", "POST", "/predict-sequence", chunked(5 * MB), 413, "payload_too_large"),
    # Content-Length that lies: a huge declared length is refused from the header alone, before any read;
    # one shorter than the body cuts the JSON short (400) and the rest is never taken for a second request.
    Case("content-length-says-huge", "POST", "/sentiment", {}, 413, "payload_too_large",
         raw=lambda: lying_length("/sentiment", 50 * MB, b'{"text": "short"}')),
    Case("content-length-says-short", "POST", "/sentiment", {}, 400, "bad_request",
         raw=lambda: lying_length("/sentiment", 10, b'{"text": "this is longer than ten bytes"}')),
    Case("unknown-route", "GET", "/nope", {}, 404, "not_found"),
    Case("wrong-method", "DELETE", "/sentiment", {}, 405, "method_not_allowed"),
    # --- text ---
    Case("lone-surrogate", "POST", "/sentiment", raw_json(r'{"text": "bad \ud800 half"}'), 422, "invalid_input"),
    Case("ten-thousand-emoji", "POST", "/sentiment", {"json": {"text": "\U0001F600" * 10_000}}, 200,
         check=sentiment_results(1)),  # one word of emoji: one unknown token
    Case("too-many-emoji", "POST", "/sentiment", {"json": {"text": "\U0001F600" * 10_001}}, 422, "invalid_input",
         says="at most 10,000"),
    Case("nul-and-bidi-controls", "POST", "/sentiment",
         {"json": {"texts": ["great\u0000 film", "\u202egood\u202c \u2066bad\u2069 \u200f", "\ufeff\u0007"]}}, 200,
         check=sentiment_results(3)),
    Case("whitespace-only", "POST", "/sentiment", {"json": {"text": " \t\n\u3000"}}, 422, "invalid_input"),
    Case("too-many-texts", "POST", "/sentiment", {"json": {"texts": ["fine"] * 65}}, 422, "invalid_input",
         says="65 texts in one request; at most 64"),
    Case("text-is-a-number", "POST", "/sentiment", {"json": {"text": 42}}, 422, "invalid_input"),
    Case("texts-nested", "POST", "/sentiment", {"json": {"texts": [["nested"]]}}, 422, "invalid_input"),
    Case("unknown-field-text", "POST", "/sentiment", {"json": {"text": "fine", "lang": "en"}}, 422, "invalid_input"),
    # --- series ---
    Case("series-null", "POST", "/predict-sequence", series_with("null"), 422, "invalid_input"),
    Case("series-nan", "POST", "/predict-sequence", series_with("NaN"), 422, "invalid_input"),
    Case("series-infinity", "POST", "/predict-sequence", series_with("-Infinity"), 422, "invalid_input"),
    Case("series-1e309", "POST", "/predict-sequence", series_with("1e309"), 422, "invalid_input"),
    Case("series-string", "POST", "/predict-sequence", series_with('"twelve"'), 422, "invalid_input"),
    Case("series-nested-list", "POST", "/predict-sequence", series_with("[1, 2]"), 422, "invalid_input"),
    Case("series-not-a-list", "POST", "/predict-sequence", {"json": {"series": 5}}, 422, "invalid_input"),
    Case("series-too-long", "POST", "/predict-sequence", {"json": {"series": [1.0] * 100_001}}, 422, "invalid_input",
         says="at most 100,000"),
    Case("constant-series", "POST", "/predict-sequence", {"json": {"series": [7.5] * 48, "horizon": 6}}, 200,
         check=finite_forecast(6, near=7.5)),
    Case("all-zero-series", "POST", "/predict-sequence", {"json": {"series": [0.0] * 48, "horizon": 6}}, 200,
         check=finite_forecast(6)),
    Case("negative-series", "POST", "/predict-sequence", {"json": {"series": [-v for v in SERIES], "horizon": 6}}, 200,
         check=finite_forecast(6)),
    Case("huge-values-1e300", "POST", "/predict-sequence", {"json": {"series": [1e300] * 24 + [2e300] * 24}}, 200,
         check=finite_forecast(12)),
    Case("mixed-magnitudes", "POST", "/predict-sequence", {"json": {"series": [1e-300, 1e300] * 24}}, 200,
         check=finite_forecast(12)),
    Case("alternating-extremes", "POST", "/predict-sequence", {"json": {"series": [1.7e308, -1.7e308] * 24}}, 200,
         check=finite_forecast(12)),
    Case("subnormal-values", "POST", "/predict-sequence", {"json": {"series": [5e-324] * 48}}, 200,
         check=finite_forecast(12)),
    Case("horizon-negative", "POST", "/predict-sequence", {"json": {"series": SERIES, "horizon": -3}}, 422,
         "invalid_input"),
    Case("horizon-zero", "POST", "/predict-sequence", {"json": {"series": SERIES, "horizon": 0}}, 422, "invalid_input"),
    Case("horizon-huge", "POST", "/predict-sequence", {"json": {"series": SERIES, "horizon": 10**40}}, 422,
         "invalid_input", says="maximum of"),
    Case("horizon-fractional", "POST", "/predict-sequence", {"json": {"series": SERIES, "horizon": 2.5}}, 422,
         "invalid_input"),
    Case("period-unsupported", "POST", "/predict-sequence", {"json": {"series": SERIES, "period": 7}}, 422,
         "invalid_input"),
    Case("unknown-field-series", "POST", "/predict-sequence", {"json": {"series": SERIES, "freq": "M"}}, 422,
         "invalid_input"),
    # --- images ---
    Case("text-file-as-image", "POST", "/classify-image", upload(b"just some text\n" * 20, "text/plain"), 415,
         "unsupported_media_type"),
    Case("random-bytes-as-image", "POST", "/classify-image",
         upload(np.random.default_rng(0).bytes(4096), "application/octet-stream"), 415, "unsupported_media_type"),
    Case("truncated-png", "POST", "/classify-image", lambda: upload(encoded(digit(), "PNG")[:300]), 400, "bad_request"),
    Case("truncated-jpeg", "POST", "/classify-image",
         lambda: upload(encoded(digit().convert("RGB"), "JPEG")[:400], "image/jpeg"), 400, "bad_request"),
    Case("png-bomb-20000", "POST", "/classify-image", lambda: upload(png_bomb(20_000, 20_000)), 413, "payload_too_large",
         says="pixels; at most 16,000,000"),
    Case("png-bomb-12000", "POST", "/classify-image", lambda: upload(png_bomb(12_000, 12_000)), 413, "payload_too_large",
         says="image is 12000x12000 = 144,000,000 pixels; at most 16,000,000"),
    Case("png-one-pixel-over", "POST", "/classify-image", lambda: upload(png_bomb(4_001, 4_000)), 413,
         "payload_too_large", says="at most 16,000,000"),
    Case("gif-bomb-header", "POST", "/classify-image",
         upload(b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\x00\x00\x00" + b",\x00\x00\x00\x00"
                + struct.pack("<HH", 65535, 65535) + b"\x00\x02\x02\x44\x01\x00;", "image/gif"), 413,
         "payload_too_large"),
    Case("jpeg-huge-exif", "POST", "/classify-image", lambda: upload(jpeg_with_exif_segments(20), "image/jpeg"), 200,
         check=label_is("7")),
    Case("animated-gif-first-frame", "POST", "/classify-image", lambda: upload(animated_gif(), "image/gif"), 200,
         check=label_is("7")),
    Case("multipage-tiff-first-page", "POST", "/classify-image", lambda: upload(multipage_tiff(), "image/tiff"), 200,
         check=label_is("7")),
    Case("sixteen-bit-png", "POST", "/classify-image", lambda: upload(sixteen_bit_png()), 200, check=label_is("7")),
    Case("mpo-jpeg-first-picture", "POST", "/classify-image", lambda: upload(mpo(), "image/jpeg"), 200,
         check=label_is("7")),
    Case("cmyk-jpeg", "POST", "/classify-image", lambda: upload(cmyk_jpeg(), "image/jpeg"), 200, check=label_is("7")),
    Case("transparent-png", "POST", "/classify-image", lambda: upload(transparent_png()), 200, check=label_is("7")),
    # One flat colour has no digit to read: a clear 422, not a guess.
    Case("one-pixel-image", "POST", "/classify-image", lambda: upload(encoded(Image.new("L", (1, 1), 0), "PNG")), 422,
         "invalid_input"),
    Case("all-white-image", "POST", "/classify-image", lambda: upload(png_bomb(4_000, 4_000)), 422, "invalid_input",
         says="no visible digit"),
    Case("ppm-image", "POST", "/classify-image", lambda: upload(encoded(digit(), "PPM"), "image/x-portable-pixmap"), 415,
         "unsupported_media_type"),
    Case("empty-file", "POST", "/classify-image", upload(b""), 400, "bad_request"),
    Case("wrong-field-name", "POST", "/classify-image", lambda: {"files": {"image": ("d.png", encoded(digit(), "PNG"))}},
         422, "invalid_input"),
    Case("top-k-not-a-number", "POST", "/classify-image", lambda: upload(encoded(digit(), "PNG"), top_k="many"), 422,
         "invalid_input"),
    Case("multipart-without-boundary", "POST", "/classify-image",
         {"content": b"--x\r\n\r\n", "headers": {"content-type": "multipart/form-data"}}, 400, "bad_request"),
    Case("multipart-broken", "POST", "/classify-image",
         {"content": b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n\x89PNG",
          "headers": {"content-type": "multipart/form-data; boundary=xyz"}}, 422, "invalid_input"),  # the part never ends: no file
    # --- the Open Inference Protocol ---
    Case("v2-invalid-json", "POST", "/v2/models/sentiment-transformer/infer", raw_json("{inputs"), 400),
    Case("v2-no-inputs", "POST", "/v2/models/sentiment-transformer/infer", v2_json({"inputs": []}), 400),
    Case("v2-unknown-model", "POST", "/v2/models/no-such-model/infer", v2_json(texts_tensor(["x"])), 404),
    Case("v2-shape-vs-data-length", "POST", "/v2/models/sentiment-transformer/infer",
         v2_json(texts_tensor(["a", "b", "c"], shape=[2])), 400),
    Case("v2-wrong-datatype", "POST", "/v2/models/sentiment-transformer/infer",
         v2_json(texts_tensor(["a"], datatype="FP32")), 400),
    Case("v2-unknown-datatype", "POST", "/v2/models/sentiment-transformer/infer",
         v2_json(texts_tensor(["a"], datatype="FP128")), 400),
    Case("v2-negative-shape", "POST", "/v2/models/sentiment-transformer/infer",
         v2_json(texts_tensor(["a"], shape=[-1])), 400),
    Case("v2-enormous-shape", "POST", "/v2/models/mnist-cnn/infer",
         v2_json({"inputs": [{"name": "image", "shape": [10**6, 1, 28, 28], "datatype": "FP32", "data": [0.0]}]}), 400),
    Case("v2-shape-product-wraps-int64", "POST", "/v2/models/sentiment-transformer/infer",
         v2_json(texts_tensor([], shape=[2**32, 2**32])), 400),
    Case("v2-shape-beyond-int64", "POST", "/v2/models/sentiment-transformer/infer",
         v2_json(texts_tensor(["a"], shape=[2**64])), 400),
    Case("v2-wrong-input-name", "POST", "/v2/models/sentiment-transformer/infer",
         v2_json({"inputs": [{"name": "sentence", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}), 400),
    Case("v2-image-wrong-shape", "POST", "/v2/models/mnist-cnn/infer",
         v2_json({"inputs": [{"name": "image", "shape": [1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}]}), 400),
    Case("v2-image-out-of-range", "POST", "/v2/models/mnist-cnn/infer",
         v2_json({"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [255.0] * 784}]}),
         400),
    Case("v2-lone-surrogate", "POST", "/v2/models/sentiment-transformer/infer",
         raw_json(r'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["\ud800"]}]}'), 400),
    # A forecast beyond FP32's range: JSON has no Infinity, so the answer is a 400 that says so, not broken JSON.
    # The history climbs steadily to the top of FP32's range, so any forecaster that follows a trend passes it.
    Case("v2-forecast-beyond-fp32", "POST", "/v2/models/forecast-lstm/infer",
         v2_json({"inputs": [{"name": "history", "shape": [1, 40], "datatype": "FP32",
                              "data": [float(v) for v in np.linspace(2.0e38, 3.4e38, 40)]}]}),
         400, says="beyond the range of FP32"),
    Case("v2-history-large-but-representable", "POST", "/v2/models/forecast-lstm/infer",
         v2_json({"inputs": [{"name": "history", "shape": [1, 40], "datatype": "FP32", "data": [1e37, -1e37] * 20}]}),
         200, check=finite_v2_output("forecast", 12)),
    Case("v2-history-strings", "POST", "/v2/models/forecast-lstm/infer",
         v2_json({"inputs": [{"name": "history", "shape": [1, 2], "datatype": "FP32", "data": ["1", "2"]}]}), 400),
    Case("v2-horizon-not-a-number", "POST", "/v2/models/forecast-lstm/infer",
         v2_json({"parameters": {"horizon": "soon"},
                  "inputs": [{"name": "history", "shape": [1, len(SERIES)], "datatype": "FP32", "data": SERIES}]}), 400),
    Case("v2-binary-nan-history", "POST", "/v2/models/forecast-lstm/infer",
         v2_binary(HISTORY_HEAD, np.asarray([math.nan] * len(SERIES), dtype="<f4").tobytes(),
                   len(json.dumps(HISTORY_HEAD))), 400, says="finite"),
    Case("v2-binary-header-length-too-long", "POST", "/v2/models/forecast-lstm/infer",
         v2_binary(HISTORY_HEAD, BINARY_SERIES, len(json.dumps(HISTORY_HEAD)) + len(BINARY_SERIES) + 1), 400),
    Case("v2-binary-header-length-cuts-json", "POST", "/v2/models/forecast-lstm/infer",
         v2_binary(HISTORY_HEAD, BINARY_SERIES, 20), 400),
    Case("v2-binary-header-length-not-a-number", "POST", "/v2/models/forecast-lstm/infer",
         v2_binary(HISTORY_HEAD, BINARY_SERIES, "lots"), 400),
    Case("v2-binary-without-header-length", "POST", "/v2/models/forecast-lstm/infer",
         v2_binary(HISTORY_HEAD, BINARY_SERIES, None), 400),
    Case("v2-binary-size-short", "POST", "/v2/models/forecast-lstm/infer",
         v2_binary(HISTORY_HEAD, BINARY_SERIES[:-4], len(json.dumps(HISTORY_HEAD))), 400),
    Case("v2-binary-bytes-length-past-end", "POST", "/v2/models/sentiment-transformer/infer",
         v2_binary({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                "parameters": {"binary_data_size": 8}}]},
                   struct.pack("<I", 1000) + b"abcd", len(json.dumps({"inputs": [{"name": "text", "shape": [1],
                   "datatype": "BYTES", "parameters": {"binary_data_size": 8}}]}))), 400),
    # More images than the limit (max_images, default 256): a 400 now, not a 503 "retry" that could never succeed.
    Case("v2-too-many-images", "POST", "/v2/models/mnist-cnn/infer", lambda: v2_binary(
        {"inputs": [{"name": "image", "shape": [300, 1, 28, 28], "datatype": "FP32",
                     "parameters": {"binary_data_size": 300 * 784 * 4}}]},
        np.zeros((300, 1, 28, 28), "<f4").tobytes(),
        len(json.dumps({"inputs": [{"name": "image", "shape": [300, 1, 28, 28], "datatype": "FP32",
                                    "parameters": {"binary_data_size": 300 * 784 * 4}}]}))), 400,
         says="300 images in one request; at most 256"),
    Case("v2-body-over-limit", "POST", "/v2/models/sentiment-transformer/infer",
         v2_json(texts_tensor(["a" * (3 * MB)])), 413),
]


def assert_error_shape(response_status: int, body: dict, case: Case) -> None:
    assert set(body) == {"error"}, body
    if case.path.startswith("/v2"):
        assert isinstance(body["error"], str) and body["error"], body
    else:
        error = body["error"]
        assert isinstance(error, dict) and isinstance(error.get("message"), str) and error["message"], body
        assert error["code"] == case.code, body
        assert set(error) <= {"code", "message", "details"}, body


def test_the_table_has_enough_hostile_cases():
    assert len(CASES) >= 40 and len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_request(server, case: Case):
    if case.raw is not None:
        status, headers, content = raw_exchange(server.url, case.raw())
        text = content.decode("utf-8", "replace")
    else:
        request = case.request() if callable(case.request) else case.request
        with server.client(timeout=120) as client:
            response = client.request(case.method, case.path, **request)
        status, headers, text = response.status_code, response.headers, response.text
    assert status == case.status, f"{case.id}: {status} {text[:500]}"
    assert "Traceback" not in text
    if status == 200:
        assert case.check is not None, "a 200 must say what a sane answer is"
        case.check(json.loads(text))
    else:
        assert headers.get("content-type", "").startswith("application/json"), headers
        assert_error_shape(status, json.loads(text), case)
        if case.says:
            assert case.says in text, text


def test_server_still_answers_normally_afterwards(server):
    with server.client() as client:
        image = client.post("/classify-image", files={"file": ("d.png", (DATA / "digit-7.png").read_bytes(), "image/png")})
        assert image.status_code == 200 and image.json()["label"] == "7", image.text
        text = client.post("/sentiment", json={"text": "An absolutely wonderful, delightful film."})
        assert text.status_code == 200 and text.json()["results"][0]["label"] == "positive", text.text
        forecast = client.post("/predict-sequence", json={"series": SERIES, "horizon": 12, "period": 12})
        assert forecast.status_code == 200 and len(forecast.json()["forecast"]) == 12, forecast.text
        assert all(200 < v < 1000 for v in forecast.json()["forecast"])
        assert client.get("/health").status_code == 200


@pytest.mark.slow
def test_limits_follow_the_settings(api_repository, tmp_path):
    """Every input limit is a setting: lowered by flags and by environment variables, each is enforced."""
    log = tmp_path / "server.log"
    flags = ("--max-texts", "2", "--max-text-chars", "50", "--max-image-pixels", "10000", "--max-images", "2")
    with start_server(api_repository, log, *flags, env={"ORTSERVE_MAX_SERIES_LENGTH": "30"}) as limited:
        with limited.client() as client:
            assert client.post("/sentiment", json={"texts": ["Good.", "Bad."]}).status_code == 200
            error = client.post("/sentiment", json={"texts": ["Good.", "Bad.", "Fine."]}).json()["error"]
            assert error["code"] == "invalid_input" and error["message"] == "body.texts: 3 texts in one request; at most 2"
            response = client.post("/sentiment", json={"text": "x" * 51})
            assert response.status_code == 422 and "at most 50" in response.json()["error"]["message"]
            v2 = client.post("/v2/models/sentiment-transformer/infer", json=texts_tensor(["a", "b", "c"]))
            assert v2.status_code == 400 and v2.json() == {"error": "text: 3 texts in one request; at most 2"}

            small = encoded(digit().resize((100, 100), Image.Resampling.LANCZOS), "PNG")
            assert client.post("/classify-image", **upload(small)).json()["label"] == "7"
            response = client.post("/classify-image", **upload((DATA / "digit-7.png").read_bytes()))
            assert response.status_code == 413
            assert response.json()["error"]["message"] == "image is 280x280 = 78,400 pixels; at most 10,000"
            images = {"name": "image", "shape": [3, 1, 28, 28], "datatype": "FP32", "data": [0.0] * (3 * 784)}
            v2 = client.post("/v2/models/mnist-cnn/infer", json={"inputs": [images]})
            assert v2.status_code == 400 and v2.json() == {"error": "image: 3 images in one request; at most 2"}

            assert client.post("/predict-sequence", json={"series": SERIES[:30], "horizon": 3}).status_code == 200
            response = client.post("/predict-sequence", json={"series": SERIES[:31], "horizon": 3})
            assert response.status_code == 422 and "at most 30" in response.json()["error"]["message"]
