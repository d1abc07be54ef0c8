"""Every answer of a load run is checked against the model's in-process answer for the body sent: a wrong
answer, answers swapped between requests, or an answer that cannot be matched to its request fail the run."""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.answers import SAME_VARIANT, ExpectedAnswers, in_process_answers
from bench.inprocess import load_in_process
from bench.load import WrongAnswers, run_load
from bench.payloads import endpoints, request_objects
from service.manifest import ModelManifest
from tests.conftest import missing

SENTIMENT = next(e for e in endpoints() if e.name == "/sentiment")


@pytest.fixture(scope="module", autouse=True)
def wrk():
    if shutil.which("wrk") is None:
        missing("wrk is not installed (apt-get install wrk); .ci/run installs it")


@pytest.fixture(scope="module")
def served_variant(api_repository) -> str:
    return ModelManifest.load(api_repository / SENTIMENT.model / "1").served_variant


@pytest.fixture(scope="module")
def expected(api_repository, served_variant) -> ExpectedAnswers:
    return in_process_answers(api_repository, SENTIMENT, served_variant, SAME_VARIANT)


@pytest.fixture(scope="module")
def answer_bodies(api_repository, served_variant) -> list[bytes]:
    """The JSON the service would send for each body, computed in-process."""
    entry = load_in_process(api_repository, SENTIMENT.model, served_variant)
    answers = []
    for request in request_objects(SENTIMENT):
        decoded = entry.task.decode(request)
        answers.append(entry.task.encode(entry.model.run(entry.task.collate(decoded.rows)), decoded, entry.name, entry.version)
                       .model_dump_json().encode())
    return answers


def load(url: str, answers: ExpectedAnswers):
    return run_load(url + SENTIMENT.name, SENTIMENT.bodies, SENTIMENT.content_type, 2, 1, answers)


def replaced(answers: ExpectedAnswers, body: int, position: int, token) -> ExpectedAnswers:
    tokens = [list(t) for t in answers.tokens]
    tokens[body][position] = token
    return dataclasses.replace(answers, tokens=tokens)


def test_the_service_passes_with_every_answer_checked(server, expected):
    result = load(server.url, expected)
    assert result.requests > 0 and result.verified_answers == result.requests and result.wrong_answers == 0


def test_one_wrong_expected_label_fails_the_run(server, expected):
    tokens = expected.tokens[3]
    position = tokens.index(("s", "label")) + 1
    wrong = "negative" if tokens[position][1] != "negative" else "positive"
    with pytest.raises(WrongAnswers, match=r"body 4: token \d+ is \w+, expected " + wrong):
        load(server.url, replaced(expected, 3, position, ("s", wrong)))


def test_a_number_beyond_the_tolerance_fails_and_rounding_within_it_passes(server, expected):
    tokens = expected.tokens[0]
    position = tokens.index(("s", "score")) + 1
    score = tokens[position][1]
    allowed = SAME_VARIANT.absolute + SAME_VARIANT.relative * abs(score)
    load(server.url, replaced(expected, 0, position, ("n", score + 0.5 * allowed)))
    with pytest.raises(WrongAnswers, match="body 1: number"):
        load(server.url, replaced(expected, 0, position, ("n", score + 3 * allowed)))


@contextmanager
def answering(answer_for):
    """A loopback HTTP/1.1 server: `answer_for(request body, request headers)` -> (response body, headers)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body, headers = answer_for(self.rfile.read(int(self.headers["Content-Length"])), self.headers)
            self.send_response(200)
            for name, value in {"Content-Type": "application/json", "Content-Length": str(len(body)), **headers}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_that_gives_the_right_answers_passes(expected, answer_bodies):
    """The check itself: the in-process answers, served by a server that echoes the request id."""
    def right(body, headers):
        return answer_bodies[SENTIMENT.bodies.index(body)], {"X-Request-ID": headers["X-Request-ID"]}

    with answering(right) as url:
        assert load(url, expected).verified_answers > 0


def test_a_server_that_swaps_answers_between_requests_fails_the_run(expected, answer_bodies):
    """Each request gets the right answer of the next body: every answer is some request's right answer."""
    def swapped(body, headers):
        index = SENTIMENT.bodies.index(body)
        return answer_bodies[(index + 1) % len(answer_bodies)], {"X-Request-ID": headers["X-Request-ID"]}

    assert len({json.loads(a)["results"][0]["label"] for a in answer_bodies}) > 1
    with answering(swapped) as url, pytest.raises(WrongAnswers):
        load(url, expected)


def test_an_answer_that_cannot_be_matched_to_its_request_fails_the_run(expected, answer_bodies):
    def anonymous(body, headers):
        return answer_bodies[SENTIMENT.bodies.index(body)], {}

    with answering(anonymous) as url, pytest.raises(WrongAnswers, match="no X-Request-ID"):
        load(url, expected)
