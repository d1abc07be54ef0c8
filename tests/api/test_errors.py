"""Every client mistake gets its 4xx in the one error shape, and nothing is a 500."""

from __future__ import annotations

import io

import pytest
from PIL import Image


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code:
        assert body["error"]["code"] == code, body
    assert "Traceback" not in response.text
    return body["error"]


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (width, height), 0).save(out, format="PNG")
    return out.getvalue()


def test_malformed_json_is_400(client):
    response = client.post("/sentiment", content=b'{"text": "unfinished', headers={"content-type": "application/json"})
    assert_error(response, 400, "bad_request")


def test_undecodable_image_is_400(client):
    truncated = png(64, 64)[:40]  # a PNG signature and header, then nothing
    response = client.post("/classify-image", files={"file": ("x.png", truncated, "image/png")})
    assert_error(response, 400, "bad_request")


def test_empty_upload_is_400(client):
    response = client.post("/classify-image", files={"file": ("x.png", b"", "image/png")})
    assert_error(response, 400, "bad_request")


def test_body_over_limit_is_413(client):
    # The test server runs with --max-request-mb 2.
    response = client.post("/sentiment", content=b"x" * (3 * 1024 * 1024), headers={"content-type": "application/json"})
    assert_error(response, 413, "payload_too_large")


def test_streamed_body_over_limit_is_413(client):
    def chunks():
        for _ in range(48):
            yield b"y" * 65536

    response = client.post("/sentiment", content=chunks(), headers={"content-type": "application/json"})
    assert_error(response, 413, "payload_too_large")


def test_image_with_too_many_pixels_is_413(client):
    response = client.post("/classify-image", files={"file": ("big.png", png(8000, 8000), "image/png")})
    assert_error(response, 413, "payload_too_large")


def test_not_an_image_is_415(client):
    pdf = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n"
    response = client.post("/classify-image", files={"file": ("doc.pdf", pdf, "application/pdf")})
    assert_error(response, 415, "unsupported_media_type")


def test_image_format_outside_the_list_is_415(client):
    out = io.BytesIO()
    Image.new("L", (32, 32), 0).save(out, format="PPM")
    response = client.post("/classify-image", files={"file": ("x.ppm", out.getvalue(), "image/x-portable-pixmap")})
    assert_error(response, 415, "unsupported_media_type")


def test_json_to_image_endpoint_is_415(client):
    assert_error(client.post("/classify-image", json={"file": "nope"}), 415, "unsupported_media_type")


def test_text_plain_to_json_endpoint_is_415(client):
    response = client.post("/sentiment", content=b"great movie", headers={"content-type": "text/plain"})
    assert_error(response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "path, body",
    [
        ("/sentiment", {"text": ""}),
        ("/sentiment", {"texts": []}),
        ("/sentiment", {"texts": ["fine"] * 65}),
        ("/sentiment", {"text": "x" * 10_001}),
        ("/sentiment", {"text": "a", "texts": ["b"]}),
        ("/sentiment", {}),
        ("/predict-sequence", {"series": [1.0] * 11}),
        ("/predict-sequence", {"series": [1.0] * 24, "horizon": 0}),
        ("/predict-sequence", {"series": [1.0] * 24, "horizon": 10_000}),
        ("/predict-sequence", {"series": [1.0] * 24 + ["a"]}),
        ("/predict-sequence", {"series": [1.0] * 100_001}),
    ],
    ids=["empty-text", "no-texts", "too-many-texts", "text-too-long", "both-forms", "neither-form",
         "series-too-short", "horizon-zero", "horizon-too-far", "not-a-number", "series-too-long"],
)
def test_validation_errors_are_422(client, path, body):
    assert_error(client.post(path, json=body), 422, "invalid_input")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_422(client, literal):
    raw = '{"series": [' + ", ".join(["1.0"] * 20 + [literal]) + "]}"
    response = client.post("/predict-sequence", content=raw, headers={"content-type": "application/json"})
    assert_error(response, 422, "invalid_input")


def test_top_k_out_of_range_is_422(client):
    response = client.post("/classify-image", params={"top_k": 11}, files={"file": ("x.png", png(28, 28), "image/png")})
    assert_error(response, 422, "invalid_input")


def test_blank_image_is_422(client):
    response = client.post("/classify-image", files={"file": ("x.png", png(28, 28), "image/png")})
    assert_error(response, 422, "invalid_input")


def test_unknown_route_and_method(client):
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/sentiment"), 405, "method_not_allowed")
