"""Triton's perf_analyzer runs against the service over REST and gRPC (a short sweep), reading the model's
configuration and the server's statistics through Triton's extensions, for every model, from a server of two
worker processes (whichever worker perf_analyzer asks for statistics must count the requests the other
answered)."""

from __future__ import annotations

import csv

import pytest

from bench.perf import MODELS, PerfAnalyzerUnavailable, main, perf_analyzer
from tests.conftest import missing

pytestmark = pytest.mark.slow  # a server of its own and a load generator


def test_one_short_sweep_over_rest_and_grpc(api_repository, tmp_path):
    try:
        perf_analyzer()
    except PerfAnalyzerUnavailable as exc:
        missing(str(exc))
    assert main(["--repository", str(api_repository), "--out", str(tmp_path), "--levels", "1", "4",
                 "--window-ms", "1000", "--service-args", "--workers 2"]) == 0
    (table,) = tmp_path.glob("*-perf.csv")
    rows = list(csv.DictReader(table.read_text().splitlines()))
    assert {(r["model"], r["protocol"], r["Concurrency"]) for r in rows} == {
        (model, protocol, level) for model in MODELS for protocol in ("http", "grpc") for level in ("1", "4")}
    for row in rows:
        assert float(row["Inferences/Second"]) > 0 and float(row["p99 latency"]) > 0
        # The server's side, from its statistics extension: time queued and running, per request.
        assert float(row["Server Compute Infer"]) > 0 and float(row["Server Queue"]) >= 0
    assert (tmp_path / table.name.replace(".csv", ".png")).stat().st_size > 10_000
