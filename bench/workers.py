"""python -m bench.workers: requests/s of the service with 1, 2, 4, ... worker processes (--workers), side by
side on one machine, for each endpoint at a high concurrency; every answer checked against the model's
in-process answer. What `--workers` buys depends on the cores: this is how its default was chosen.

Each count runs as its own server in turn (one at a time: they would share the cores), with wrk on
`--load-threads` threads, loopback only, bounded in time; the counts are run in rounds (1, 2, 4, then again)
and the better round is kept, since machines drift within minutes.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import httpx

from bench.answers import PYTORCH_AGAINST_ONNX, SAME_VARIANT, in_process_answers
from bench.load import run_load
from bench.payloads import endpoints
from bench.servers import running
from service.cpus import physical_cores, usable_cpus

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__)
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--load-threads", type=int, default=2, help="wrk threads (more on a larger machine)")
    parser.add_argument("--service-args", default="", help="more service options, e.g. \"--providers cpu\"")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--other-provider", action="store_true",
                        help="the service runs on another execution provider (CUDA) than the in-process answers (CPU): "
                        "numbers within 1e-3 instead of 1e-4")
    args = parser.parse_args(argv)

    repository = args.repository.resolve()
    best: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory() as logs:
        for round_ in range(args.rounds):
            for count in args.counts:
                command = ["-m", "service", "--model-repository", str(repository), "--log-level", "warning",
                           "--workers", str(count), *shlex.split(args.service_args)]
                with running(command, Path(logs) / f"w{count}.log") as url:
                    served = {m["name"]: m["variant"] for m in httpx.get(url + "/models", timeout=30).json()["models"]}
                    for endpoint in endpoints():
                        tolerance = PYTORCH_AGAINST_ONNX if args.other_provider else SAME_VARIANT
                        answers = in_process_answers(repository, endpoint, served[endpoint.model], tolerance)
                        target = url + endpoint.name
                        run_load(target, endpoint.bodies, endpoint.content_type, 8, 1, answers, threads=args.load_threads)
                        result = run_load(target, endpoint.bodies, endpoint.content_type, args.concurrency, args.seconds,
                                          answers, threads=args.load_threads)
                        if result.errors or result.wrong_answers:
                            raise SystemExit(f"{endpoint.name} with {count} workers: {result.errors} errors")
                        key = (endpoint.name, count)
                        best[key] = max(best.get(key, 0.0), result.rps)
                        print(f"round {round_ + 1}  workers {count:2}  {endpoint.name:18} {result.rps:9.1f} req/s  "
                              f"p99 {result.p99_ms:8.2f} ms", flush=True)
    base = {name: best[(name, args.counts[0])] for name, _ in best}
    print(f"\n{physical_cores()} physical cores ({usable_cpus()} usable), c={args.concurrency}, best of {args.rounds} rounds:")
    for name in base:
        cells = "  ".join(f"{count}w {best[(name, count)]:8.1f} ({best[(name, count)] / base[name]:.2f}x)" for count in args.counts)
        print(f"  {name:18} {cells}")
    if args.out:
        args.out.write_text(json.dumps({
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.node(),
            "physical_cores": physical_cores(), "concurrency": args.concurrency,
            "requests_per_s": {f"{name} x{count}": rps for (name, count), rps in best.items()},
        }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
