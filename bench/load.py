"""Closed-loop HTTP load from a separate process (wrk), loopback only, bounded in time."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
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
local non_2xx = 0
response = function(status, headers, body)
  if status < 200 or status > 299 then non_2xx = non_2xx + 1 end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, "status_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, e.connect, e.read, e.write, e.timeout, e.status))
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

    def as_dict(self) -> dict:
        return asdict(self)


def require_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("the benchmark needs wrk: apt-get install wrk (Debian/Ubuntu) or brew install wrk")
    return wrk


def run_load(url: str, bodies: list[bytes], content_type: str, concurrency: int, seconds: float) -> LoadResult:
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
             "--timeout", "30s", "-s", str(script), url],
            capture_output=True, text=True, timeout=seconds + 60,
            env={**os.environ, "BENCH_BODIES": "|".join(paths), "BENCH_CONTENT_TYPE": content_type},
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [line for line in result.stdout.splitlines() if line.startswith("BENCH ")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    figures = json.loads(lines[-1][len("BENCH "):])
    seconds_run = figures["duration_us"] / 1e6
    errors = sum(figures[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts", "status_errors"))
    return LoadResult(
        concurrency=concurrency,
        requests=figures["requests"],
        seconds=round(seconds_run, 3),
        rps=round(figures["requests"] / seconds_run, 2),
        p50_ms=round(figures["p50_us"] / 1000, 3),
        p90_ms=round(figures["p90_us"] / 1000, 3),
        p99_ms=round(figures["p99_us"] / 1000, 3),
        errors=errors,
        loadgen_cpu_s=round((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), 3),
    )
