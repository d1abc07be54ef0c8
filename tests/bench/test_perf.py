"""Triton's perf_analyzer runs against the service over REST and gRPC (a short sweep), reading the model's
configuration and the server's statistics through Triton's extensions."""

from __future__ import annotations

import csv

import pytest

from bench.perf import PerfAnalyzerUnavailable, main, perf_analyzer
from tests.conftest import missing

pytestmark = pytest.mark.slow  # a server of its own and a load generator


def test_one_short_sweep_over_rest_and_grpc(api_repository, tmp_path):
    try:
        perf_analyzer()
    except PerfAnalyzerUnavailable as exc:
        missing(str(exc))
    assert main(["--repository", str(api_repository), "--out", str(tmp_path), "--models", "sentiment-transformer",
                 "--levels", "1", "4", "--window-ms", "1000"]) == 0
    (table,) = tmp_path.glob("*-perf.csv")
    rows = list(csv.DictReader(table.read_text().splitlines()))
    assert {(r["protocol"], r["Concurrency"]) for r in rows} == {("http", "1"), ("http", "4"), ("grpc", "1"), ("grpc", "4")}
    for row in rows:
        assert float(row["Inferences/Second"]) > 0 and float(row["p99 latency"]) > 0
        # The server's side, from its statistics extension: time queued and running, per request.
        assert float(row["Server Compute Infer"]) > 0 and float(row["Server Queue"]) >= 0
    assert (tmp_path / table.name.replace(".csv", ".png")).stat().st_size > 10_000
