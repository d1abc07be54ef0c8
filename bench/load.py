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

from bench.answers import ExpectedAnswers, write_answer_files

# Cycles through the request bodies, each sent with X-Request-ID "bench-<body>-<n>" (the server echoes it), and
# checks every 200 against the expected answer of the body it answers (BENCH_ANSWERS, when set): both are
# flattened into tokens in JSON order, strings must be equal and numbers within BENCH_ATOL + BENCH_RTOL x |expected|.
# Prints one JSON line with the figures when done.
WRK_SCRIPT = r"""
local function read(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*all")
  f:close()
  return data
end
local bodies, answers = {}, {}
local content_type = os.getenv("BENCH_CONTENT_TYPE")
for path in string.gmatch(os.getenv("BENCH_BODIES"), "[^|]+") do bodies[#bodies + 1] = read(path) end
for path in string.gmatch(os.getenv("BENCH_ANSWERS") or "", "[^|]+") do
  local tokens = {}
  for line in string.gmatch(read(path), "[^\n]+") do
    local kind, value = line:sub(1, 1), line:sub(2)
    tokens[#tokens + 1] = {kind, kind == "n" and tonumber(value) or value}
  end
  answers[#answers + 1] = tokens
end
local atol, rtol = tonumber(os.getenv("BENCH_ATOL") or "0"), tonumber(os.getenv("BENCH_RTOL") or "0")

-- A JSON document's strings (keys included, escapes left as sent), numbers and true/false/null, in order.
local function tokens_of(text)
  local out, i, n = {}, 1, #text
  while i <= n do
    local c = text:sub(i, i)
    if c == '"' then
      local j = i + 1
      while true do
        local k = text:find('["\\]', j)
        if not k then return out end
        if text:sub(k, k) == "\\" then j = k + 2 else out[#out + 1] = {"s", text:sub(i + 1, k - 1)}; i = k + 1; break end
      end
    elseif c:find("[%-%d]") then
      local number = text:match("^-?%d+%.?%d*[eE]?[-+]?%d*", i)
      out[#out + 1] = {"n", tonumber(number)}
      i = i + #number
    elseif c:find("%a") then
      local word = text:match("^%a+", i)
      out[#out + 1] = {"w", word}
      i = i + #word
    else
      i = i + 1
    end
  end
  return out
end

-- nil when the answer is the expected one, else what differs.
local function difference(expected, body)
  local got = tokens_of(body)
  for k, want in ipairs(expected) do
    local have = got[k]
    if have == nil then return string.format("ends after %d of %d tokens", k - 1, #expected) end
    if have[1] ~= want[1] then return string.format("token %d is %s, expected %s", k, tostring(have[2]), tostring(want[2])) end
    if want[1] == "n" then
      if have[2] == nil or math.abs(have[2] - want[2]) > atol + rtol * math.abs(want[2]) then
        return string.format("number %d is %.9g, expected %.9g", k, have[2] or 0 / 0, want[2])
      end
    elseif have[2] ~= want[2] then
      return string.format("token %d is %s, expected %s", k, have[2], want[2])
    end
  end
  if #got ~= #expected then return string.format("%d tokens, expected %d", #got, #expected) end
  return nil
end

local counter = 0
request = function()
  counter = counter + 1
  local index = (counter % #bodies) + 1
  return wrk.format("POST", nil, {["Content-Type"] = content_type, ["X-Request-ID"] = "bench-" .. index .. "-" .. counter},
                    bodies[index])
end
-- Per-thread tallies (globals, so that done() can read them from each thread): statuses, answers checked,
-- wrong answers and the first one's description.
local threads = {}
setup = function(thread) table.insert(threads, thread) end
statuses = {}
verified = 0
wrong = 0
first_wrong = ""
response = function(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  if status ~= 200 or #answers == 0 then return end
  verified = verified + 1
  local id = headers["x-request-id"] or headers["X-Request-ID"] or headers["X-Request-Id"] or ""
  local index = tonumber(id:match("^bench%-(%d+)%-"))
  local why
  if index == nil or answers[index] == nil then
    why = "no X-Request-ID naming the request body (got '" .. id .. "')"
  else
    why = difference(answers[index], body)
  end
  if why then
    wrong = wrong + 1
    if first_wrong == "" then first_wrong = "body " .. tostring(index) .. ": " .. why .. "; answer: " .. body:sub(1, 300) end
  end
end
done = function(summary, latency, requests)
  local e = summary.errors
  local totals, verified_total, wrong_total, first, parts = {}, 0, 0, "", {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do totals[status] = (totals[status] or 0) + count end
    verified_total = verified_total + thread:get("verified")
    wrong_total = wrong_total + thread:get("wrong")
    if first == "" then first = thread:get("first_wrong") end
  end
  for status, count in pairs(totals) do parts[#parts + 1] = string.format('"%s": %d', status, count) end
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, "status_errors": %d, ' ..
    '"verified": %d, "wrong": %d, "first_wrong": "%s", "statuses": {%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, e.connect, e.read, e.write, e.timeout, e.status, verified_total, wrong_total,
    first:gsub('[%c"\\]', "?"), table.concat(parts, ", ")))
end
"""


class WrongAnswers(RuntimeError):
    """A load run got 200s whose answers are not the model's answer for the request sent."""


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
    verified_answers: int = 0  # 200s compared with the model's in-process answer for their body
    wrong_answers: int = 0  # of those, answers that differ (the run fails when there is one)

    def as_dict(self) -> dict:
        return asdict(self)


def require_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("the benchmark needs wrk: apt-get install wrk (Debian/Ubuntu) or brew install wrk")
    return wrk


def run_load(
    url: str, bodies: list[bytes], content_type: str, concurrency: int, seconds: float,
    answers: ExpectedAnswers | None, timeout_s: float = 30, threads: int = 2,
) -> LoadResult:
    """`concurrency` connections, each sending its next request when the last one was answered.

    With `answers` (one per body), every 200 is checked against its body's answer and a wrong one raises
    WrongAnswers; None only where no in-process answer can exist (another checkout's code)."""
    if not url.startswith(("http://127.", "http://localhost")):
        raise ValueError(f"load is only ever sent to loopback, not {url}")
    if answers is not None and len(answers.tokens) != len(bodies):
        raise ValueError(f"{len(answers.tokens)} expected answers for {len(bodies)} bodies")
    with tempfile.TemporaryDirectory() as scratch:
        paths = []
        for i, body in enumerate(bodies):
            path = Path(scratch) / f"body{i}"
            path.write_bytes(body)
            paths.append(str(path))
        answer_paths = write_answer_files(answers, Path(scratch)) if answers is not None else []
        tolerance = answers.tolerance if answers is not None else None
        script = Path(scratch) / "bench.lua"
        script.write_text(WRK_SCRIPT)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = subprocess.run(
            [require_wrk(), "-t", str(max(1, min(concurrency, threads))), "-c", str(concurrency), "-d", f"{max(1, round(seconds))}s",
             "--timeout", f"{max(1, round(timeout_s))}s", "-s", str(script), url],
            capture_output=True, text=True, timeout=seconds + 60,
            env={**os.environ, "BENCH_BODIES": "|".join(paths), "BENCH_CONTENT_TYPE": content_type,
                 "BENCH_ANSWERS": "|".join(answer_paths),
                 "BENCH_ATOL": repr(tolerance.absolute) if tolerance else "0", "BENCH_RTOL": repr(tolerance.relative) if tolerance else "0"},
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [line for line in result.stdout.splitlines() if line.startswith("BENCH ")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    figures = json.loads(lines[-1][len("BENCH "):])
    if figures["wrong"]:
        raise WrongAnswers(
            f"{url} at {concurrency} clients: {figures['wrong']} of {figures['verified']} answers differ from "
            f"{answers.variant}'s in-process answer for the body sent (tolerance {answers.tolerance}); first: "
            f"{figures['first_wrong']}"
        )
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
        verified_answers=figures["verified"],
        wrong_answers=figures["wrong"],
    )
