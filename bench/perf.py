"""python -m bench.perf: Triton's own load generator, perf_analyzer, against the service over REST and gRPC.

For each model and protocol, a concurrency sweep (1, 4, 16, 64 by default) with real payloads (the same
sentences, digits and series as `make bench`); perf_analyzer reads the model's configuration and, after
each window, the server's statistics (Triton's extensions), so its CSV splits the latency into the server's
queue, decode (compute input), run (compute infer) and encode (compute output) as well. Writes
<out>/<date>-perf.csv, -perf.json and a throughput-vs-p99 plot, -perf.png.

perf_analyzer ships as a binary inside the Linux tritonclient wheels up to 2.51 (later wheels have none or
need a newer C library), which is older than the tritonclient the tests use: only the binary is taken from
the wheel, pinned by sha256 and kept in the build cache (models/pinned_files.py), with the CUDA runtime
library it links against (the nvidia-cuda-runtime-cu12 wheel; nothing runs on a GPU). It also needs libb64
(Debian: libb64-0d).
Load goes to loopback only and every run is bounded in time.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from bench.payloads import SENTENCES, digit_pngs, monthly_series
from bench.servers import free_port, running
from export.build import default_cache_dir
from models.pinned_files import PinnedFile

PERF_ANALYZER_WHEEL = "tritonclient==2.51.0"
CUDA_RUNTIME_WHEEL = "nvidia-cuda-runtime-cu12==12.6.77"
LEVELS = (1, 4, 16, 64)
MODELS = ("sentiment-transformer", "mnist-cnn", "forecast-lstm")
ROOT = Path(__file__).resolve().parent.parent


class PerfAnalyzerUnavailable(RuntimeError):
    pass


PERF_ANALYZER = PinnedFile(
    requirement=PERF_ANALYZER_WHEEL,
    distribution="wheel",
    member="tritonclient-2.51.0.data/data/bin/perf_analyzer",
    sha256="a8e3fa6d2fcd535770f18fa3c9baf21aee85697352637d24c6b2818401c95a34",
    cache_path="tritonclient-2.51.0/perf_analyzer",
    platforms=("manylinux1_x86_64",),
)
CUDA_RUNTIME = PinnedFile(
    requirement=CUDA_RUNTIME_WHEEL,
    distribution="wheel",
    member="nvidia/cuda_runtime/lib/libcudart.so.12",
    sha256="095296727cfb5f51e5b3ae69a3cb88cbd7b6592f314ace0fdfc4e1d758c2aa85",
    cache_path="nvidia-cuda-runtime-cu12-12.6.77/libcudart.so.12",
    platforms=("manylinux2014_x86_64",),
)


def perf_analyzer(cache: Path | None = None) -> tuple[Path, dict[str, str]]:
    """The perf_analyzer binary and the environment it runs in; PerfAnalyzerUnavailable says what is missing."""
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        raise PerfAnalyzerUnavailable("perf_analyzer's binary is built for x86-64 Linux only")
    cache = cache or default_cache_dir()
    binary = PERF_ANALYZER.fetch(cache)
    binary.chmod(0o755)
    libraries = CUDA_RUNTIME.fetch(cache).parent
    environment = {**os.environ, "LD_LIBRARY_PATH": f"{libraries}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    linked = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env=environment).stdout
    missing = [line.split()[0] for line in linked.splitlines() if "not found" in line]
    if missing:
        raise PerfAnalyzerUnavailable(
            f"perf_analyzer needs {', '.join(missing)}" + (" (Debian: apt-get install libb64-0d)" if any("b64" in m for m in missing) else "")
        )
    return binary, environment


def input_data(model: str) -> dict:
    """perf_analyzer's --input-data: the typical requests of `make bench`, as the model's V2 tensors."""
    if model == "sentiment-transformer":
        rows = [{"text": {"content": [text], "shape": [1]}} for text in SENTENCES]
    elif model == "mnist-cnn":
        rows = []
        for png in digit_pngs():
            pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32) / 255.0
            rows.append({"image": {"content": pixels.ravel().round(6).tolist(), "shape": [1, 1, 28, 28]}})
    else:
        rows = [{"history": {"content": series, "shape": [1, len(series)]}} for series in monthly_series()]
    return {"data": rows}


def sweep(binary: Path, environment: dict, model: str, protocol: str, address: str, levels: tuple[int, ...],
          window_ms: int, scratch: Path) -> list[dict]:
    """One perf_analyzer run per concurrency level; its CSV rows, with the model and protocol added."""
    data = scratch / f"{model}.json"
    data.write_text(json.dumps(input_data(model)))
    rows = []
    for level in levels:
        out = scratch / f"{model}-{protocol}-{level}.csv"
        command = [str(binary), "-m", model, "-u", address, "-i", protocol, "--input-data", str(data),
                   "--concurrency-range", f"{level}:{level}", "--measurement-interval", str(window_ms),
                   "--stability-percentage", "25", "--max-trials", "6", "-f", str(out)]
        result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)
        if result.returncode != 0 or not out.exists():
            raise RuntimeError(f"perf_analyzer failed ({result.returncode}) on {model} over {protocol}:\n"
                               f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        for row in csv.DictReader(out.read_text().splitlines()):
            rows.append({"model": model, "protocol": protocol, **row})
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(MODELS), figsize=(5 * len(MODELS), 4))
    for axis, model in zip(axes, MODELS):
        for protocol, marker in (("http", "o-"), ("grpc", "s--")):
            points = [r for r in rows if r["model"] == model and r["protocol"] == protocol]
            if points:
                axis.plot([float(r["p99 latency"]) / 1000 for r in points], [float(r["Inferences/Second"]) for r in points],
                          marker, label=protocol.upper())
                for r in points:
                    axis.annotate(r["Concurrency"], (float(r["p99 latency"]) / 1000, float(r["Inferences/Second"])), fontsize=7)
        axis.set(title=model, xlabel="p99 latency (ms)", ylabel="inferences/s")
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf", description=__doc__)
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--protocols", nargs="+", default=["http", "grpc"], choices=["http", "grpc"])
    parser.add_argument("--levels", type=int, nargs="+", default=list(LEVELS))
    parser.add_argument("--window-ms", type=int, default=3000, help="perf_analyzer's measurement interval")
    parser.add_argument("--service-args", default="", help='more service options, e.g. "--providers cuda"')
    args = parser.parse_args(argv)
    try:
        binary, environment = perf_analyzer()
    except PerfAnalyzerUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    grpc_port = free_port()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as scratch:
        command = ["-m", "service", "--model-repository", str(args.repository.resolve()), "--log-level", "warning",
                   "--grpc-port", str(grpc_port), *shlex.split(args.service_args)]
        with running(command, Path(scratch) / "service.log") as url:
            for model in args.models:
                for protocol in args.protocols:
                    address = url.removeprefix("http://") if protocol == "http" else f"127.0.0.1:{grpc_port}"
                    rows += sweep(binary, environment, model, protocol, address, tuple(args.levels), args.window_ms, Path(scratch))
                    print(f"{model} over {protocol}: done", flush=True)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    args.out.mkdir(parents=True, exist_ok=True)
    columns = ["model", "protocol", *[c for c in rows[0] if c not in ("model", "protocol")]]
    with (args.out / f"{stamp}-perf.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)
    (args.out / f"{stamp}-perf.json").write_text(json.dumps(
        {"date": stamp, "machine": platform.node(), "perf_analyzer": PERF_ANALYZER_WHEEL, "rows": rows}, indent=1))
    plot(rows, args.out / f"{stamp}-perf.png")
    print(f"{'model':22} {'protocol':8} {'conc':>4} {'infer/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'queue us':>9} {'infer us':>9}")
    for r in rows:
        print(f"{r['model']:22} {r['protocol']:8} {r['Concurrency']:>4} {float(r['Inferences/Second']):9.1f} "
              f"{float(r['p50 latency']) / 1000:8.2f} {float(r['p99 latency']) / 1000:8.2f} "
              f"{r.get('Server Queue', '')!s:>9} {r.get('Server Compute Infer', '')!s:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
