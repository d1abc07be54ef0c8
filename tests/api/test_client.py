"""`python -m service.client` run as a subprocess against a real server, on real inputs and real failures."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys

import pytest

from tests.conftest import ROOT, free_port, start_server, wait_for_loading_to_end

DIGIT_7 = ROOT / "tests" / "data" / "digit-7.png"
DIGIT_3 = ROOT / "tests" / "data" / "digit-3.png"
POSITIVE = "The service was quick and the staff were lovely."
NEGATIVE = "What a waste of two hours."
# Monthly airline passengers, 1957-1960: a trend and a yearly season.
AIRLINE = [315, 301, 356, 348, 355, 422, 465, 467, 404, 347, 305, 336, 340, 318, 362, 348, 363, 435, 491, 505, 404,
           359, 310, 337, 360, 342, 406, 396, 420, 472, 548, 559, 463, 407, 362, 405, 417, 391, 419, 461, 472, 535,
           622, 606, 508, 461, 390, 432]
SERVER_ERROR, USAGE, UNREACHABLE, TIMED_OUT = 1, 2, 3, 4


def run_client(*args: str, url: str | None = None, stdin: str = "", env: dict | None = None, timeout: float = 60):
    environment = {k: v for k, v in os.environ.items() if k not in ("ORTSERVE_URL", "ORTSERVE_API_KEY")}
    command = [sys.executable, "-m", "service.client", *(["--url", url] if url else []), *args]
    return subprocess.run(
        command, cwd=ROOT, input=stdin, capture_output=True, text=True, timeout=timeout, env={**environment, **(env or {})}
    )


def table_rows(stdout: str) -> list[list[str]]:
    """The rows of the client's table under its header line, split on runs of two or more spaces."""
    lines = stdout.strip().splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] in (["image"], ["label"], ["step"], ["model"]))
    return [re.split(r"\s{2,}", line.strip()) for line in lines[start + 1 :]]


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def assert_same_answer(ours, theirs, abs_tol=1e-5):
    """The same JSON, floats within abs_tol (a row may share a batch with other requests)."""
    if isinstance(theirs, float):
        assert ours == pytest.approx(theirs, abs=abs_tol)
    elif isinstance(theirs, dict):
        assert ours.keys() == theirs.keys()
        for key in theirs:
            assert_same_answer(ours[key], theirs[key], abs_tol)
    elif isinstance(theirs, list):
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            assert_same_answer(a, b, abs_tol)
    else:
        assert ours == theirs


# --- classify ---------------------------------------------------------------------------------------------


@pytest.mark.real_models
def test_classify_reads_the_seven_and_the_three(server, real_repository):
    result = run_client("classify", str(DIGIT_7), str(DIGIT_3), "--top-k", "3", url=server.url)
    assert result.returncode == 0, result.stderr
    rows = table_rows(result.stdout)
    assert [(row[0], row[1]) for row in rows] == [(str(DIGIT_7), "7"), (str(DIGIT_3), "3")]
    assert all(0.5 < float(row[2]) <= 1.0 for row in rows)
    assert all(len(row[3].split(", ")) == 2 for row in rows)  # the two labels after the first


def test_classify_json_is_the_servers_answer(server, client):
    result = run_client("--json", "classify", str(DIGIT_7), "--top-k", "5", url=server.url)
    assert result.returncode == 0, result.stderr
    (ours,) = json_lines(result.stdout)
    direct = client.post("/classify-image", params={"top_k": 5}, files={"file": DIGIT_7.open("rb")})
    assert direct.status_code == 200
    assert len(ours["top_k"]) == 5
    assert_same_answer(ours, direct.json())


def test_classify_a_file_that_is_not_an_image(server, tmp_path):
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("these are not pixels\n")
    result = run_client("classify", str(not_an_image), str(DIGIT_7), url=server.url)
    assert result.returncode == SERVER_ERROR
    assert f"{not_an_image}: the file is not an image in an accepted format (415 unsupported_media_type)" in result.stderr
    assert [row[0] for row in table_rows(result.stdout)] == [str(DIGIT_7)]  # the good file is still answered


def test_classify_an_unreadable_file_is_a_usage_error(server, tmp_path):
    result = run_client("classify", str(DIGIT_7), str(tmp_path / "absent.png"), url=server.url)
    assert result.returncode == USAGE
    assert "cannot read" in result.stderr and "absent.png" in result.stderr
    assert result.stdout == ""  # nothing sent when one of the files cannot be read


# --- sentiment --------------------------------------------------------------------------------------------


@pytest.mark.real_models
def test_sentiment_of_a_positive_and_a_negative_sentence(server, real_repository):
    result = run_client("sentiment", POSITIVE, NEGATIVE, url=server.url)
    assert result.returncode == 0, result.stderr
    rows = table_rows(result.stdout)
    assert [(row[0], row[-1]) for row in rows] == [("positive", POSITIVE), ("negative", NEGATIVE)]
    for row in rows:
        negative, neutral, positive = map(float, row[2:5])
        assert negative + neutral + positive == pytest.approx(1.0, abs=2e-3)  # printed to three places


@pytest.mark.parametrize("dash", [[], ["-"]], ids=["no-arguments", "dash"])
def test_sentiment_reads_one_text_per_line_from_stdin(server, client, dash):
    result = run_client("--json", "sentiment", *dash, url=server.url, stdin=f"{POSITIVE}\n\n{NEGATIVE}\r\n")
    assert result.returncode == 0, result.stderr
    (ours,) = json_lines(result.stdout)
    direct = client.post("/sentiment", json={"texts": [POSITIVE, NEGATIVE]})
    assert_same_answer(ours, direct.json())


def test_sentiment_sends_more_than_one_request_when_the_server_limit_needs_it(server):
    texts = [f"Review number {i}: {POSITIVE if i % 2 else NEGATIVE}" for i in range(70)]
    result = run_client("--json", "sentiment", url=server.url, stdin="\n".join(texts))
    assert result.returncode == 0, result.stderr
    answers = json_lines(result.stdout)
    assert [len(answer["results"]) for answer in answers] == [64, 6]
    table = run_client("sentiment", url=server.url, stdin="\n".join(texts))
    assert len(table_rows(table.stdout)) == 70
    smaller = run_client("--json", "sentiment", "--batch", "30", url=server.url, stdin="\n".join(texts))
    assert [len(answer["results"]) for answer in json_lines(smaller.stdout)] == [30, 30, 10]


def test_sentiment_with_nothing_to_score_is_a_usage_error(server):
    result = run_client("sentiment", url=server.url, stdin="\n  \n")
    assert result.returncode == USAGE and "no text to score" in result.stderr


# --- forecast ---------------------------------------------------------------------------------------------


def test_forecast_of_a_seasonal_series(server):
    result = run_client("forecast", *map(str, AIRLINE), "--horizon", "6", url=server.url)
    assert result.returncode == 0, result.stderr
    assert "48 values in" in result.stdout
    rows = table_rows(result.stdout)
    assert [int(row[0]) for row in rows] == [1, 2, 3, 4, 5, 6]
    assert all(float(row[1]) > 0 for row in rows)  # passengers, in the units of the series


def test_forecast_json_from_stdin_with_a_period_is_the_servers_answer(server, client):
    stdin = "\n".join(", ".join(map(str, AIRLINE[i : i + 12])) for i in range(0, len(AIRLINE), 12))
    result = run_client("--json", "forecast", "--horizon", "9", "--period", "12", url=server.url, stdin=stdin)
    assert result.returncode == 0, result.stderr
    (ours,) = json_lines(result.stdout)
    direct = client.post("/predict-sequence", json={"series": AIRLINE, "horizon": 9, "period": 12})
    assert ours["period"] == 12 and len(ours["forecast"]) == 9
    assert_same_answer(ours, direct.json())


def test_forecast_takes_negative_values_as_arguments(server):
    series = [-5.0 - (i % 4) for i in range(24)]
    result = run_client("forecast", *map(str, series), "--horizon", "4", "--json", url=server.url)
    assert result.returncode == 0, result.stderr
    assert len(json_lines(result.stdout)[0]["forecast"]) == 4


def test_forecast_the_server_refuses_prints_its_message(server):
    result = run_client("forecast", "1", "2", "3", url=server.url)
    assert result.returncode == SERVER_ERROR
    assert result.stderr.startswith("error: ") and "(422 invalid_input)" in result.stderr
    assert "at least 12 items" in result.stderr


# --- health -----------------------------------------------------------------------------------------------


def test_health_shows_the_three_models(server):
    result = run_client("health", env={"ORTSERVE_URL": server.url})  # the address from the environment
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"{server.url}: ok"
    rows = table_rows(result.stdout)
    assert sorted(row[0] for row in rows) == ["forecast-lstm", "mnist-cnn", "sentiment-transformer"]
    assert all(row[2] == "ready" and "CPU" in row[4] for row in rows)


def test_health_json_is_the_servers_answer(server, client):
    result = run_client("health", "--json", url=server.url)  # a global option after the command
    assert result.returncode == 0, result.stderr
    assert json_lines(result.stdout) == [client.get("/health").json()]


@pytest.mark.slow
def test_a_degraded_server_is_shown_and_exits_non_zero(api_repository, tmp_path):
    repository = tmp_path / "repository"
    shutil.copytree(api_repository / "forecast-lstm", repository / "forecast-lstm")
    for name in ("mnist-cnn", "sentiment-transformer"):
        (repository / name).symlink_to(api_repository / name, target_is_directory=True)
    with (repository / "forecast-lstm" / "1" / "model.onnx").open("ab") as handle:
        handle.write(b"tampered")
    with start_server(repository, tmp_path / "log", wait_ready=False) as degraded:
        wait_for_loading_to_end(degraded)
        result = run_client("health", url=degraded.url)
        assert result.returncode == SERVER_ERROR
        assert result.stdout.splitlines()[0] == f"{degraded.url}: degraded"
        states = {row[0]: row for row in table_rows(result.stdout)}
        assert states["forecast-lstm"][2] == "failed" and "sha256" in states["forecast-lstm"][-1]
        refused = run_client("forecast", *map(str, AIRLINE), url=degraded.url)
        assert refused.returncode == SERVER_ERROR and "(503 model_not_ready)" in refused.stderr


@pytest.mark.slow
def test_api_key_from_the_environment_or_the_flag(api_repository, tmp_path):
    with start_server(api_repository, tmp_path / "log", env={"ORTSERVE_API_KEYS": '["client-test-key"]'}) as keyed:
        missing_key = run_client("classify", str(DIGIT_7), url=keyed.url)
        assert missing_key.returncode == SERVER_ERROR
        assert "(401 unauthorized)" in missing_key.stderr and "ORTSERVE_API_KEY" in missing_key.stderr
        wrong_key = run_client("classify", str(DIGIT_7), "--api-key", "not-the-key", url=keyed.url)
        assert wrong_key.returncode == SERVER_ERROR and "(403 forbidden)" in wrong_key.stderr
        assert "not-the-key" not in wrong_key.stderr
        from_environment = run_client("classify", str(DIGIT_7), url=keyed.url, env={"ORTSERVE_API_KEY": "client-test-key"})
        assert from_environment.returncode == 0, from_environment.stderr
        from_flag = run_client("sentiment", POSITIVE, "--api-key", "client-test-key", url=keyed.url)
        assert from_flag.returncode == 0, from_flag.stderr


# --- the server cannot be reached, or does not answer -----------------------------------------------------


def test_server_down_says_where_and_what_to_do():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = run_client("health", url=url)
    assert result.returncode == UNREACHABLE
    assert result.stderr.count("\n") == 1
    assert f"cannot connect to {url}: connection refused" in result.stderr and "make serve" in result.stderr


def test_a_server_that_never_answers_times_out():
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        result = run_client("--timeout", "0.5", "sentiment", POSITIVE, url=url)
    assert result.returncode == TIMED_OUT
    assert result.stderr == f"error: {url} did not answer within 0.5 s (--timeout)\n"


# --- usage ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["translate", "hello"],
        ["classify"],
        ["classify", str(DIGIT_7), "--top-k", "0"],
        ["forecast", "1", "2", "three"],
        ["forecast", "1", "2", "--period", "7"],
        ["--url", "localhost:8000", "health"],
        ["--timeout", "0", "health"],
    ],
    ids=["no-command", "unknown-command", "no-images", "top-k-0", "not-a-number", "bad-period", "url-without-scheme",
         "zero-timeout"],
)
def test_bad_usage_exits_2(args):
    result = run_client(*args)
    assert result.returncode == USAGE
    assert result.stdout == "" and "error" in result.stderr


def test_the_client_imports_nothing_of_the_service():
    """Standard library only: the client runs where the server's dependencies are not installed."""
    import ast
    import sys as system

    for path in (ROOT / "service" / "client").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for name in names:
                top = name.split(".")[0]
                assert top in system.stdlib_module_names or name.startswith("service.client") or top == "__future__", (path, name)
