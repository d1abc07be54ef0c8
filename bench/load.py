"""Closed-loop HTTP load from a separate process (wrk), loopback only, bounded in time."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Cycles through the request bodies; prints one JSON line with the figures when done.
WRK_SCRIPT = r"""
local bodies = {}
local content_type = os.getenv("BENCH_CONTENT_TYPE")
for path in string.gmatch(os.getenv("BENCH_BODIES"), "[^|]+") do
  local f = assert(io.open(path, "rb"))
  bodies[#bodies + 1] = f:read("*all")
  f:close()
end
local counter = 0
request = function()
  counter = counter + 1
  local body = bodies[(counter % #bodies) + 1]
  return wrk.format("POST", nil, {["Content-Type"] = content_type}, body)
end
-- Per-thread tallies (globals, so that done() can read them from each thread): statuses, and answers
-- with status 200 that lack the expected text (BENCH_EXPECT, when set).
local threads = {}
setup = function(thread) table.insert(threads, thread) end
statuses = {}
wrong = 0
local expect = os.getenv("BENCH_EXPECT") or ""
response = function(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  if status == 200 and expect ~= "" and not string.find(body, expect, 1, true) then wrong = wrong + 1 end
end
done = function(summary, latency, requests)
  local e = summary.errors
  local totals, wrong_total, parts = {}, 0, {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do totals[status] = (totals[status] or 0) + count end
    wrong_total = wrong_total + thread:get("wrong")
  end
  for status, count in pairs(totals) do parts[#parts + 1] = string.format('"%s": %d', status, count) end
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, "status_errors": %d, ' ..
    '"wrong": %d, "statuses": {%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, e.connect, e.read, e.write, e.timeout, e.status, wrong_total, table.concat(parts, ", ")))
end
"""


@dataclass
class LoadResult:
    concurrency: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int
    loadgen_cpu_s: float  # CPU the load generator itself used (it shares the machine with the server)
    statuses: dict[str, int] = field(default_factory=dict)  # answers by HTTP status
    socket_errors: int = 0  # connect, read and write errors and timeouts: answers that never came
    wrong_answers: int = 0  # 200s without the expected text (when one was given)

    def as_dict(self) -> dict:
        return asdict(self)


def require_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("the benchmark needs wrk: apt-get install wrk (Debian/Ubuntu) or brew install wrk")
    return wrk


def run_load(
    url: str, bodies: list[bytes], content_type: str, concurrency: int, seconds: float,
    expect: str = "", timeout_s: float = 30,
) -> LoadResult:
    """`concurrency` connections, each sending its next request when the last one was answered."""
    if not url.startswith(("http://127.", "http://localhost")):
        raise ValueError(f"load is only ever sent to loopback, not {url}")
    with tempfile.TemporaryDirectory() as scratch:
        paths = []
        for i, body in enumerate(bodies):
            path = Path(scratch) / f"body{i}"
            path.write_bytes(body)
            paths.append(str(path))
        script = Path(scratch) / "bench.lua"
        script.write_text(WRK_SCRIPT)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = subprocess.run(
            [require_wrk(), "-t", str(min(concurrency, 2)), "-c", str(concurrency), "-d", f"{max(1, round(seconds))}s",
             "--timeout", f"{max(1, round(timeout_s))}s", "-s", str(script), url],
            capture_output=True, text=True, timeout=seconds + 60,
            env={**os.environ, "BENCH_BODIES": "|".join(paths), "BENCH_CONTENT_TYPE": content_type, "BENCH_EXPECT": expect},
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [line for line in result.stdout.splitlines() if line.startswith("BENCH ")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    figures = json.loads(lines[-1][len("BENCH "):])
    seconds_run = figures["duration_us"] / 1e6
    socket_errors = sum(figures[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    return LoadResult(
        concurrency=concurrency,
        requests=figures["requests"],
        seconds=round(seconds_run, 3),
        rps=round(figures["requests"] / seconds_run, 2),
        p50_ms=round(figures["p50_us"] / 1000, 3),
        p90_ms=round(figures["p90_us"] / 1000, 3),
        p99_ms=round(figures["p99_us"] / 1000, 3),
        errors=socket_errors + figures["status_errors"],
        loadgen_cpu_s=round((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), 3),
        statuses=figures["statuses"],
        socket_errors=socket_errors,
        wrong_answers=figures["wrong"],
    )
