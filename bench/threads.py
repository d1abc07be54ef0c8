"""python -m bench.threads: how to spend the cores. Each endpoint under load for several thread layouts.

A layout is (intra-op threads per session run, session runs at once). Written to
bench/results/<date>-<host>-threads.md; the rule chosen from it is in bench/README.md.
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from bench.__main__ import measure_server
from service.cpus import physical_cores

ROOT = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.threads", description=__doc__)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    cores = physical_cores()
    layouts = sorted({(cores, 1), (1, cores), (cores, 2), (max(1, cores // 2), 2)})
    started = datetime.now(timezone.utc)
    rows = []
    with tempfile.TemporaryDirectory() as logs:
        for intra, runs in layouts:
            name = f"intra {intra} x runs {runs}"
            print(f"== {name}", flush=True)
            # The compute budget is inference_workers x cores threads; each run takes `intra` of them.
            workers = max(1, -(-intra * runs // cores))
            command = ["-m", "service", "--model-repository", str(args.repository.resolve()), "--log-level", "warning",
                       "--workers", "1", "--intra-op-threads", str(intra), "--inference-workers", str(workers)]
            results, _ = measure_server(name, command, [1, 16, 64], args.seconds, Path(logs) / "log",
                                        args.repository.resolve())
            rows.append((name, results))
    endpoints = list(rows[0][1])
    lines = [
        f"Thread layouts, {started:%Y-%m-%d %H:%M} UTC, {cores} physical cores: requests/s (p50 ms) at 1 / 16 / 64 clients.",
        "",
        "| layout | " + " | ".join(f"`{e}`" for e in endpoints) + " |",
        "|---|" + "---|" * len(endpoints),
    ]
    for name, results in rows:
        cells = [" / ".join(f"{r['rps']:.0f} ({r['p50_ms']:.1f})" for r in results[e]) for e in endpoints]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{started:%Y-%m-%d}-threads.md"
    path.write_text("\n".join(lines) + "\n")
    print(path.read_text())


if __name__ == "__main__":
    main()
