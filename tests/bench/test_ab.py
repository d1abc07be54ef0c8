"""python -m bench.ab: runs alternate between A and B, ratios are paired, and it runs end to end."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from bench.ab import paired
from tests.conftest import ROOT, missing

pytestmark = pytest.mark.slow  # two services side by side under load


def test_pairs_alternate_their_order_and_ratios_pair_each_b_with_its_a():
    calls = []

    def runner(name: str, rates: list[float]):
        def run(concurrency: int) -> float:
            calls.append((name, concurrency))
            return rates[sum(1 for n, _ in calls if n == name) - 1]
        return run

    [row] = paired([16], 4, runner("a", [100, 200, 100, 400]), runner("b", [110, 180, 130, 400]))
    assert [name for name, _ in calls] == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert row["a"] == [100, 200, 100, 400] and row["b"] == [110, 180, 130, 400]
    assert row["ratio_median"] == pytest.approx(1.05) and (row["ratio_min"], row["ratio_max"]) == (0.9, 1.3)


def test_ab_runs_two_services_and_prints_the_paired_ratio(api_repository):
    if shutil.which("wrk") is None:
        missing("wrk is not installed (apt-get install wrk); .ci/run installs it")
    result = subprocess.run(
        [sys.executable, "-m", "bench.ab", "--repository", str(api_repository), "--a", "--compute-priority normal",
         "--endpoint", "/predict-sequence", "--levels", "2", "--pairs", "2", "--seconds", "0.5"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    row = re.search(r"^\| 2 \| (\d+) \| (\d+) \| \*\*([\d.]+)\*\* \|", result.stdout, re.MULTILINE)
    assert row and int(row[1]) > 0 and int(row[2]) > 0 and float(row[3]) > 0, result.stdout
