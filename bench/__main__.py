"""python -m bench [--quick]: the service, the raw limit and a naive server, measured side by side.

Writes bench/results/<date>-<host>.json, a Markdown table (.md) and plots (-throughput.png,
-latency.png). Load comes from wrk in a separate process, on loopback only, bounded in time. Every answer
of every load run is checked against the model's in-process answer for the body sent (bench/answers.py):
one wrong answer fails the run.
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import sys
import tempfile
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import httpx

from bench.answers import PYTORCH_AGAINST_ONNX, SAME_VARIANT, ExpectedAnswers, in_process_answers
from bench.limits import raw_limit
from bench.load import require_wrk, run_load
from bench.payloads import endpoints
from bench.report import ratios_and_targets, write_markdown, write_plots
from bench.servers import running
from export.build import default_cache_dir
from service.cpus import physical_cores, usable_cpus

SERVED, FP32, NAIVE, PLAIN_HTTP = "service", "service-fp32", "naive", "service-h11-asyncio"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=None)
def expected_answers(repository: Path, endpoint_name: str, variant: str, pytorch: bool) -> ExpectedAnswers:
    """The in-process answers a server running `variant` must give (in PyTorch, the fp32 weights)."""
    endpoint = next(e for e in endpoints() if e.name == endpoint_name)
    return in_process_answers(repository, endpoint, variant, PYTORCH_AGAINST_ONNX if pytorch else SAME_VARIANT)


def measure_server(name: str, command: list[str], levels: list[int], seconds: float, log: Path,
                   repository: Path) -> tuple[dict, dict]:
    results: dict[str, list[dict]] = {}
    models: dict = {}
    with running(command, log) as url:
        # The naive server runs the fp32 weights in PyTorch; the others say which variant they serve.
        pytorch = name == NAIVE
        variants = {} if pytorch else {m["name"]: m["variant"] for m in httpx.get(url + "/models", timeout=30).json()["models"]}
        for endpoint in endpoints():
            target = url + endpoint.name
            answers = expected_answers(repository, endpoint.name, variants.get(endpoint.model, "fp32"), pytorch)
            run_load(target, endpoint.bodies, endpoint.content_type, 4, 1, answers)  # warm the path
            results[endpoint.name] = []
            for concurrency in levels:
                outcome = run_load(target, endpoint.bodies, endpoint.content_type, concurrency, seconds, answers)
                print(f"  {name:13} {endpoint.name:18} c={concurrency:<3} {outcome.rps:9.1f} req/s  "
                      f"p50 {outcome.p50_ms:7.2f} ms  p99 {outcome.p99_ms:8.2f} ms  errors {outcome.errors}  "
                      f"answers checked {outcome.verified_answers}", flush=True)
                results[endpoint.name].append(outcome.as_dict())
        if not pytorch:
            for model in httpx.get(url + "/models", timeout=30).json()["models"]:
                models[model["name"]] = {"variant": model["variant"], "batching": model["batching"]}
    return results, models


def best_limits(runs: list[dict[str, dict]]) -> dict[str, dict]:
    """Per batch size, the run with the most rows/s (this machine's speed drifts within minutes)."""
    return {size: max((run[size] for run in runs), key=lambda v: v["rows_per_s"]) for size in runs[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few seconds in all: concurrency 1 and 4, short runs")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--cache-dir", type=Path, default=None, help="the build cache (the naive server's weights)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--seconds", type=float, default=None, help="per load run (default 10, quick 1)")
    parser.add_argument("--providers", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args(argv)

    require_wrk()
    levels = [1, 4] if args.quick else [1, 4, 16, 64]
    seconds = args.seconds or (1.0 if args.quick else 10.0)
    repository = args.repository.resolve()
    cache_dir = (args.cache_dir or default_cache_dir()).resolve()
    started = datetime.now(timezone.utc)
    host = socket.gethostname()
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{started:%Y-%m-%d}-{host}" + ("-quick" if args.quick else "")

    fp32_variants = json.dumps({e.model: "fp32" for e in endpoints()})
    service = ["-m", "service", "--model-repository", str(repository), "--providers", args.providers, "--log-level", "warning"]
    commands = {
        SERVED: service,
        FP32: [*service, "--variants", fp32_variants],
        NAIVE: ["-m", "bench.baselines.naive_server", "--repository", str(repository), "--cache-dir", str(cache_dir)],
    }
    if not args.quick:  # what uvloop and httptools buy: the same service on the pure-Python parser and loop
        commands[PLAIN_HTTP] = [*service, "--http", "h11", "--loop", "asyncio"]
    servers, served_models = {}, {}
    limit_runs: list[dict[str, dict]] = []

    def measure_limits() -> None:
        print("== raw in-process limit", flush=True)
        run = {}
        for endpoint in endpoints():
            served = served_models[endpoint.model]
            sizes = sorted({1, 4, 16, served["batching"]["max_batch_size"]})
            run[endpoint.name] = raw_limit(repository, endpoint, served["variant"], sizes, 0.3 if args.quick else 2.0)
            print(f"  {endpoint.name:18} {served['variant']:13} {run[endpoint.name]}", flush=True)
        limit_runs.append(run)

    with tempfile.TemporaryDirectory() as logs:
        for name, command in commands.items():
            print(f"== {name}", flush=True)
            servers[name], models = measure_server(name, command, levels, seconds, Path(logs) / f"{name}.log", repository)
            if name == SERVED:
                served_models = models
                measure_limits()  # right after the service, so that both see the machine alike
    measure_limits()  # and again at the end: the better of the two is the limit, so no ratio flatters the service

    limits = {
        endpoint.name: {
            "model": endpoint.model,
            "variant": served_models[endpoint.model]["variant"],
            "by_batch": best_limits([run[endpoint.name] for run in limit_runs]),
            "runs": [run[endpoint.name] for run in limit_runs],
        }
        for endpoint in endpoints()
    }

    report = {
        "meta": {
            "date": started.isoformat(timespec="seconds"),
            "host": host,
            "cpu": cpu_model(),
            "usable_cpus": usable_cpus(),
            "physical_cores": physical_cores(),
            "python": platform.python_version(),
            "onnxruntime": metadata.version("onnxruntime") if _installed("onnxruntime") else metadata.version("onnxruntime-gpu"),
            "providers": args.providers,
            "quick": args.quick,
            "seconds_per_run": seconds,
            "concurrency": levels,
            "load_generator": "wrk (closed loop, one connection per concurrent client), same machine as the server",
            "endpoints": {e.name: e.describe for e in endpoints()},
        },
        "servers": servers,
        "models": served_models,
        "limits": limits,
    }
    report.update(ratios_and_targets(report))
    json_path = args.out / f"{stem}.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(report, args.out / f"{stem}.md")
    write_plots(report, args.out / stem)
    print(f"wrote {json_path} and its .md and .png files", flush=True)
    print((args.out / f"{stem}.md").read_text())
    return 0


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


if __name__ == "__main__":
    sys.exit(main())
