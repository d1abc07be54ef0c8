"""Overload: deadlines answer 504 and drop their rows, a client that hangs up has its queued work dropped,
and a bounded load far past capacity gets only right answers or 503/504, with memory back afterwards."""

from __future__ import annotations

import io
import json
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import httpx
import pytest
from PIL import Image, ImageDraw
from prometheus_client.parser import text_string_to_metric_families

from bench.answers import SAME_VARIANT, in_process_answers
from bench.load import run_load
from bench.payloads import Endpoint
from service.manifest import ModelManifest
from tests.conftest import HealthProbe, missing, repository_of, rss_bytes, start_server

pytestmark = pytest.mark.slow  # floods and servers of its own

# Long, distinct sentences: each text is one row, and rows of this length take a while to run.
LONG = "The plot wanders between long scenes of dinner and silence, and the actors seem unsure why they are there; "


def texts(count: int, tag: str) -> list[str]:
    return [f"{tag} {i}: {LONG * 3}" for i in range(count)]


def rows_inferred(server, model: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "ortserve_inference_count"
        for sample in family.samples
        if sample.name == "ortserve_inference_count_total" and sample.labels["model"] == model
    )


def http_statuses(server) -> dict[str, float]:
    text = httpx.get(server.url + "/metrics").text
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "ortserve_http_requests":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels["endpoint"] == "/sentiment":
                    found[sample.labels["status"]] = found.get(sample.labels["status"], 0) + sample.value
    return found


@pytest.fixture(scope="module")
def sentiment_repository(api_repository, tmp_path_factory):
    return repository_of(api_repository, tmp_path_factory.mktemp("overload") / "repository", "sentiment-transformer")


def test_a_passed_deadline_answers_504_and_its_rows_are_not_computed(sentiment_repository, tmp_path):
    with start_server(sentiment_repository, tmp_path / "log", "--request-timeout-s", "0.5") as server:
        before = rows_inferred(server, "sentiment-transformer")
        with ThreadPoolExecutor(8) as pool, server.client() as client:
            answers = list(pool.map(lambda i: client.post("/sentiment", json={"texts": texts(64, f"r{i}")}), range(8)))
        late = [a for a in answers if a.status_code == 504]
        assert late, [a.status_code for a in answers]
        assert all(a.status_code in (200, 504) for a in answers)
        assert all(a.json()["error"]["code"] == "deadline_exceeded" for a in late)
        time.sleep(0.5)  # a batch already running when its deadline passed finishes; nothing more runs
        computed = rows_inferred(server, "sentiment-transformer") - before
        assert computed < 8 * 64, "rows of requests past their deadline were still computed"
        with server.client() as client:
            assert client.post("/sentiment", json={"text": "A warm and funny film."}).json()["results"][0]["label"] == "positive"


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_a_client_that_hangs_up_has_its_queued_rows_dropped(sentiment_repository, tmp_path, http):
    """httptools: the service's protocol gives notice of the lost connection; h11: a watcher listens for it."""
    with start_server(sentiment_repository, tmp_path / "log", "--http", http) as server:
        before = rows_inferred(server, "sentiment-transformer")
        url = urlparse(server.url)
        with ThreadPoolExecutor(6) as pool, server.client() as client:
            busy = [pool.submit(client.post, "/sentiment", json={"texts": texts(64, f"busy{i}")}) for i in range(6)]
            time.sleep(0.3)  # the busy rows are queued ahead
            body = json.dumps({"texts": texts(50, "abandoned")}).encode()
            with socket.create_connection((url.hostname, url.port)) as raw:
                raw.sendall(b"POST /sentiment HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                            + f"content-length: {len(body)}\r\n\r\n".encode() + body)
                time.sleep(0.3)
            assert all(f.result().status_code == 200 for f in busy)
        time.sleep(0.3)
        assert rows_inferred(server, "sentiment-transformer") - before == 6 * 64, "the abandoned rows were computed"
        assert http_statuses(server).get("499") == 1
        assert "the client disconnected; its work was dropped" in server.output()


def test_load_far_past_capacity_gets_right_answers_or_503_and_memory_comes_back(sentiment_repository, tmp_path):
    if shutil.which("wrk") is None:
        missing("wrk is not installed (apt-get install wrk)")
    # A short queue and deadline, so that overload shows within the bounded run.
    args = ("--max-queue-rows", "48", "--request-timeout-s", "2")
    with start_server(sentiment_repository, tmp_path / "log", *args) as server:
        body = [json.dumps({"texts": ["A wonderful, moving film.", "Dull and far too long."]}).encode()]
        # Every 200 must be the model's own answer for the body, computed in-process (bench/answers.py).
        served = ModelManifest.load(sentiment_repository / "sentiment-transformer" / "1").served_variant
        endpoint = Endpoint("/sentiment", "sentiment-transformer", "application/json", body, "two texts")
        answers = in_process_answers(sentiment_repository, endpoint, served, SAME_VARIANT)
        target = server.url + "/sentiment"
        warm = run_load(target, body, "application/json", 300, 5, answers, timeout_s=10)
        rss_before = rss_bytes(server.process.pid)
        loaded = run_load(target, body, "application/json", 300, 30, answers, timeout_s=10)
        time.sleep(1)
        rss_after = rss_bytes(server.process.pid)
        print(f"\nload: {loaded.requests} requests in {loaded.seconds} s at 300 connections, statuses {loaded.statuses}, "
              f"p99 {loaded.p99_ms} ms; warm-up {warm.statuses}; RSS {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB")
        assert set(loaded.statuses) <= {"200", "503", "504"}, loaded.statuses
        assert loaded.statuses.get("200", 0) > 0 and loaded.statuses.get("503", 0) > 0, "not overloaded"
        assert loaded.socket_errors == 0 and loaded.wrong_answers == 0
        assert loaded.verified_answers == loaded.statuses["200"]
        assert rss_after <= rss_before * 1.10, (rss_before, rss_after)
        with server.client() as client:
            answer = client.post("/sentiment", json={"text": "What a delight."}, timeout=10)
            assert answer.status_code == 200 and answer.json()["results"][0]["label"] == "positive"
            assert answer.elapsed.total_seconds() < 5  # it answers at once, not after a backlog


def test_uploads_past_the_decode_backlog_are_turned_away_at_once(api_repository, tmp_path):
    image = Image.new("L", (3000, 3000), 255)
    ImageDraw.Draw(image).line([(800, 700), (2200, 700), (1300, 2400)], fill=0, width=220)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    png = buffer.getvalue()
    repository = repository_of(api_repository, tmp_path / "repository", "mnist-cnn")
    args = ("--decode-workers", "1", "--max-decode-backlog", "2")
    with start_server(repository, tmp_path / "log", *args) as server, server.client() as client:
        def classify(_):
            return client.post("/classify-image", files={"file": ("7.png", png, "image/png")})

        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(classify, range(12)))
        statuses = sorted(a.status_code for a in answers)
        assert set(statuses) == {200, 503}, statuses
        assert all(a.json()["label"] == "7" for a in answers if a.status_code == 200)
        turned_away = [a for a in answers if a.status_code == 503]
        assert all(a.json()["error"]["code"] == "overloaded" and a.headers["retry-after"] == "1" for a in turned_away)


HEALTH_PATHS = ("/health", "/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready")


def test_under_a_flood_health_answers_within_a_second_and_no_connection_is_dropped(sentiment_repository, tmp_path):
    """As a load balancer sees an overloaded replica: 400 connections posting eight texts each, far past
    what the model can run, while health is probed on new connections every 100 ms."""
    if shutil.which("wrk") is None:
        missing("wrk is not installed (apt-get install wrk)")
    with start_server(sentiment_repository, tmp_path / "log") as server:
        body = [json.dumps({"texts": texts(8, "flood")}).encode()]
        served = ModelManifest.load(sentiment_repository / "sentiment-transformer" / "1").served_variant
        endpoint = Endpoint("/sentiment", "sentiment-transformer", "application/json", body, "eight long texts")
        answers = in_process_answers(sentiment_repository, endpoint, served, SAME_VARIANT)
        with HealthProbe(server.url, HEALTH_PATHS, every=0.1) as probe:
            flood = run_load(server.url + "/sentiment", body, "application/json", 400, 10, answers, timeout_s=30)
        print(f"\nflood: {flood.requests} requests, statuses {flood.statuses}, socket errors {flood.socket_errors}; "
              f"health p50 {probe.percentile(0.5) * 1000:.0f} ms, p99 {probe.percentile(0.99) * 1000:.0f} ms, "
              f"max {max(probe.latencies) * 1000:.0f} ms over {len(probe.latencies)} probes")
        assert flood.statuses.get("503", 0) > 0, "not overloaded"
        assert set(flood.statuses) <= {"200", "503"} and flood.socket_errors == 0 and flood.wrong_answers == 0
        assert probe.errors == 0 and set(probe.statuses) == {200}
        assert probe.percentile(0.99) < 1.0


def test_a_connection_told_to_retry_later_is_not_read_again_before_then(sentiment_repository, tmp_path):
    """Retry-After: 1 is held to on the connection: its next request is read a second later."""
    with start_server(sentiment_repository, tmp_path / "log", "--max-queue-rows", "1") as server:
        with server.client() as client:
            refused = client.post("/sentiment", json={"texts": ["Two rows", "never fit a queue of one."]})
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
            started = time.monotonic()
            assert client.get("/health/live").status_code == 200
            waited = time.monotonic() - started
        assert 0.8 < waited < 3, waited
        # Other connections are read at once meanwhile.
        with server.client() as client:
            client.post("/sentiment", json={"texts": ["Two rows", "never fit a queue of one."]})
        started = time.monotonic()
        assert httpx.get(server.url + "/health/live").status_code == 200
        assert time.monotonic() - started < 0.5
