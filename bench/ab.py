"""python -m bench.ab: is B faster than A? Two services at once, short runs in alternating order.

This machine's speed drifts by a quarter within minutes, so two configurations measured one after the
other can differ by more than any change between them. Both servers run side by side (one idle while the
other is under load); each pair of runs is measured back to back, in alternating order, and the answer
is the median of the paired ratios B/A with their spread.

  python -m bench.ab --a "--compute-priority normal" --b ""      # one setting
  python -m bench.ab --a-checkout ../old --a-repository ../old/model_repository   # two versions of the code
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import statistics
import tempfile
from pathlib import Path

import httpx

from bench.answers import SAME_VARIANT, ExpectedAnswers, in_process_answers
from bench.load import run_load
from bench.payloads import endpoints
from bench.servers import ROOT, running


def paired(levels: list[int], pairs: int, run_a, run_b) -> list[dict]:
    """Per concurrency level: the requests/s of each run and the median and range of the ratios B/A."""
    rows = []
    for concurrency in levels:
        a, b = [], []
        for index in range(pairs):
            order = [(run_a, a), (run_b, b)] if index % 2 == 0 else [(run_b, b), (run_a, a)]
            for run, sink in order:
                sink.append(run(concurrency))
        ratios = [y / x for x, y in zip(a, b)]
        rows.append({"concurrency": concurrency, "a": a, "b": b, "ratio_median": statistics.median(ratios),
                     "ratio_min": min(ratios), "ratio_max": max(ratios)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", default="", help="service options of A (one string)")
    parser.add_argument("--b", default="", help="service options of B (one string)")
    parser.add_argument("--a-checkout", type=Path, default=ROOT, help="run A from this checkout (default: this one)")
    parser.add_argument("--a-repository", type=Path, default=None, help="A's model repository (default: --repository)")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--endpoint", default="/sentiment", choices=[e.name for e in endpoints()])
    parser.add_argument("--levels", default="16,64", help="concurrency levels, comma-separated")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0, help="per run")
    args = parser.parse_args(argv)

    endpoint = next(e for e in endpoints() if e.name == args.endpoint)
    levels = [int(level) for level in args.levels.split(",")]
    repository = args.repository.resolve()
    a_repository = (args.a_repository or args.repository).resolve()

    def command(repo: Path, options: str) -> list[str]:
        return ["-m", "service", "--model-repository", str(repo), "--log-level", "warning", *shlex.split(options)]

    # A runs from its own checkout: its own code must be imported, not this one's.
    a_env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    with tempfile.TemporaryDirectory() as logs, contextlib.ExitStack() as stack:
        url_a = stack.enter_context(running(command(a_repository, args.a), Path(logs) / "a.log",
                                            cwd=args.a_checkout.resolve(), env=a_env))
        url_b = stack.enter_context(running(command(repository, args.b), Path(logs) / "b.log"))

        def answers(url: str, repo: Path) -> ExpectedAnswers:
            served = {m["name"]: m["variant"] for m in httpx.get(url + "/models", timeout=30).json()["models"]}
            return in_process_answers(repo, endpoint, served[endpoint.model], SAME_VARIANT)

        def load(url: str, expected: ExpectedAnswers | None):
            run_load(url + endpoint.name, endpoint.bodies, endpoint.content_type, 4, 1, expected)  # warm the path
            return lambda concurrency: run_load(
                url + endpoint.name, endpoint.bodies, endpoint.content_type, concurrency, args.seconds, expected
            ).rps

        # A from another checkout answers with its own code: this checkout cannot say what it must answer.
        same_code = args.a_checkout.resolve() == ROOT
        rows = paired(levels, args.pairs, load(url_a, answers(url_a, a_repository) if same_code else None),
                      load(url_b, answers(url_b, repository)))

    print(f"A: {args.a_checkout} {args.a!r}; B: {ROOT} {args.b!r}; {endpoint.name}, {args.pairs} pairs of "
          f"{args.seconds:g} s runs, alternating order\n")
    print("| clients | A req/s (median) | B req/s (median) | B / A, median of pairs | range |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['concurrency']} | {statistics.median(row['a']):.0f} | {statistics.median(row['b']):.0f} | "
              f"**{row['ratio_median']:.3f}** | {row['ratio_min']:.2f}-{row['ratio_max']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
