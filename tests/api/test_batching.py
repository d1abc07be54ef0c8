"""Dynamic batching through the real server: batches form under load and change no answer."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import start_server

pytestmark = pytest.mark.slow  # a server of its own, batching set

SHORT = ["Great.", "Awful!", "Fine, I guess.", "Not bad at all.", "Meh."]
LONG = [
    "I wanted to love this place, the reviews were glowing and the room was lovely, but the staff ignored us "
    "for an hour and the food arrived cold, so we will not be back no matter how pretty the view is.",
    "What a film: the writing is sharp, the cast is superb, the score soars and every scene earns its place; "
    "I left the cinema grinning and have already booked tickets to see it again with friends next week.",
]
TEXTS = [SHORT[i % len(SHORT)] if i % 3 else LONG[i % len(LONG)] for i in range(40)]


@pytest.fixture(scope="module")
def server(api_repository, tmp_path_factory):
    """fp32 everywhere with text batches of up to 16: a dynamically quantised variant is served one row per run,
    so the batching of texts is exercised on the fp32 model."""
    variants = json.dumps({"sentiment-transformer": "fp32", "mnist-cnn": "fp32", "forecast-lstm": "fp32"})
    batching = json.dumps({"sentiment-transformer": {"max_batch_size": 16}})
    log = tmp_path_factory.mktemp("batching") / "server.log"
    with start_server(api_repository, log, "--variants", variants, "--batching", batching) as running:
        yield running


@pytest.fixture
def client(server):
    with server.client() as http:
        yield http


def batching_of(client: httpx.Client, model: str) -> dict:
    return next(m["batching"] for m in client.get("/models").json()["models"] if m["name"] == model)


def alone(client: httpx.Client, text: str) -> dict:
    response = client.post("/sentiment", json={"text": text})
    assert response.status_code == 200, response.text
    return response.json()["results"][0]


def assert_same(a: dict, b: dict) -> None:
    assert a["label"] == b["label"] and a["truncated"] == b["truncated"]
    for label, score in a["scores"].items():
        assert b["scores"][label] == pytest.approx(score, abs=1e-5)


def test_concurrent_requests_form_batches_and_answers_match_the_unbatched_ones(server, client):
    reference = {text: alone(client, text) for text in set(TEXTS)}
    before = batching_of(client, "sentiment-transformer")

    def one(text: str) -> dict:
        with httpx.Client(base_url=server.url, timeout=120) as own:
            return alone(own, text)

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, TEXTS * 2))
    after = batching_of(client, "sentiment-transformer")

    for text, result in zip(TEXTS * 2, results):
        assert_same(reference[text], result)
    assert after["batches"] > before["batches"]
    batched_rows = sum(int(size) * count for size, count in after["batch_sizes"].items() if int(size) > 1)
    assert batched_rows > 0, after  # some rows shared a batch with others
    assert after["largest_batch"] <= after["max_batch_size"]


def test_a_request_larger_than_a_batch_is_split_and_reassembled_in_order(client):
    policy = batching_of(client, "sentiment-transformer")
    assert len(TEXTS) > policy["max_batch_size"]
    response = client.post("/sentiment", json={"texts": TEXTS})
    assert response.status_code == 200, response.text
    for text, result in zip(TEXTS, response.json()["results"]):
        assert_same(alone(client, text), result)


def test_images_and_series_batch_too(server, client):
    series = [112, 118, 132, 129, 121, 135, 148, 148, 136, 119, 104, 118] * 4

    def forecast(horizon: int) -> list[float]:
        with httpx.Client(base_url=server.url, timeout=120) as own:
            response = own.post("/predict-sequence", json={"series": series, "horizon": horizon, "period": 12})
            assert response.status_code == 200, response.text
            return response.json()["forecast"]

    reference = forecast(12)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(forecast, [12] * 32 + [6] * 32))
    for result in results:
        assert result == pytest.approx(reference[: len(result)], rel=1e-5)
    assert batching_of(client, "forecast-lstm")["largest_batch"] > 1


def test_one_bad_request_among_good_ones_fails_alone(server):
    payloads = [{"text": "A joy."}] * 10 + [{"texts": []}, {"text": ""}, {"series": [1, 2]}] + [{"text": "Dreadful."}] * 10

    def send(payload: dict) -> int:
        with httpx.Client(base_url=server.url, timeout=120) as own:
            return own.post("/sentiment", json=payload).status_code

    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(send, payloads))
    assert statuses == [200] * 10 + [422, 422, 422] + [200] * 10
