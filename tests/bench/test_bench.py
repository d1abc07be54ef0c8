"""`make bench` end to end in --quick mode: every server answers rightly, and the report has every field."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT, missing

pytestmark = pytest.mark.slow  # the quick benchmark, with wrk

LOAD_FIELDS = {"concurrency", "requests", "seconds", "rps", "p50_ms", "p90_ms", "p99_ms", "errors", "loadgen_cpu_s",
               "statuses", "socket_errors", "verified_answers", "wrong_answers"}


def test_quick_bench_writes_a_complete_report(api_repository, api_cache, tmp_path):
    if shutil.which("wrk") is None:
        missing("wrk is not installed (apt-get install wrk); .ci/run installs it")
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--repository", str(api_repository), "--cache-dir", str(api_cache),
         "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [report_path] = tmp_path.glob("*-quick.json")
    report = json.loads(report_path.read_text())
    assert {"meta", "servers", "models", "limits", "ratios", "targets"} <= set(report)
    assert set(report["servers"]) == {"service", "service-fp32", "naive"}
    endpoints = {"/sentiment", "/classify-image", "/predict-sequence"}
    for runs in report["servers"].values():
        assert set(runs) == endpoints
        for endpoint_runs in runs.values():
            assert [r["concurrency"] for r in endpoint_runs] == report["meta"]["concurrency"] == [1, 4]
            for run in endpoint_runs:
                assert set(run) == LOAD_FIELDS and run["requests"] > 0 and run["errors"] == 0
                # Every answer was checked against the model's in-process answer for its body.
                assert run["verified_answers"] == run["statuses"]["200"] == run["requests"] and run["wrong_answers"] == 0
    for model in report["models"].values():
        assert model["variant"] and model["batching"]["batches"] > 0
    for limit in report["limits"].values():
        assert "1" in limit["by_batch"] and all(v["rows_per_s"] > 0 for v in limit["by_batch"].values())
        assert len(limit["runs"]) == 2  # right after the service, and at the end: the better one is the limit
        for size, best in limit["by_batch"].items():
            assert best["rows_per_s"] == max(run[size]["rows_per_s"] for run in limit["runs"])
    assert {t["name"] for t in report["targets"]} and all({"value", "target", "met"} <= set(t) for t in report["targets"])
    stem = report_path.with_suffix("")
    for suffix in (".md", "-throughput.png", "-latency.png"):
        assert stem.with_name(stem.name + suffix).stat().st_size > 500
