"""python scripts/gpu_check.py: start the service on CUDA, prove every model runs there, score held-out digits.

Exits non-zero, saying why, when a model is not on CUDAExecutionProvider or the accuracy through the
service falls below what the build measured on the CPU. scripts/gpu-check.sh runs it after `make setup ORT=gpu`.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import tempfile
from pathlib import Path

import httpx
from PIL import Image

from bench.servers import running
from models.mnist_data import load_digits

CUDA = "CUDAExecutionProvider"
ROOT = Path(__file__).resolve().parent.parent
# GPU kernels may round differently from the CPU's: allow a few of the 1,000 held-out digits to flip.
ACCURACY_SLACK = 0.005


class CheckFailed(RuntimeError):
    pass


def check_providers(url: str) -> list[dict]:
    """Every model ready, and the session of each really on CUDA (what get_providers() read back)."""
    health = httpx.get(f"{url}/health", timeout=30).json()
    for model in health["models"]:
        print(f"  {model['name']}/{model['version']} ({model['variant']}): {', '.join(model['providers']) or 'not loaded'}"
              + (f"  note: {model['note']}" if model["note"] else ""))
    wrong = [m["name"] for m in health["models"] if not m["ready"] or not m["providers"] or m["providers"][0] != CUDA]
    if health["status"] != "ok" or wrong:
        raise CheckFailed(f"not every model is ready on {CUDA}: {', '.join(wrong) or health['status']}")
    exposition = httpx.get(f"{url}/metrics", timeout=30).text
    on_cuda = set(re.findall(r'ortserve_model_ready\{[^}]*model="([^"]+)"[^}]*provider="' + CUDA + r'"[^}]*\} 1', exposition))
    if on_cuda != {m["name"] for m in health["models"]}:
        raise CheckFailed(f"/metrics reports {CUDA} only for {sorted(on_cuda)}")
    return health["models"]


def recorded_accuracy(description: dict) -> float:
    """What the build measured on the CPU for the variant being served."""
    manifest = description["manifest"]
    if description["variant"] in (None, "fp32"):
        return manifest["metrics"]["model"]["accuracy"]
    record = next(v for v in manifest["variants"] if v["name"] == description["variant"])
    return record["metrics"]["accuracy"]


def check_digit_accuracy(url: str) -> tuple[float, float, int]:
    """The held-out MNIST digits (never trained on) as PNG through /classify-image."""
    description = next(m for m in httpx.get(f"{url}/models", timeout=30).json()["models"] if m["name"] == "mnist-cnn")
    data = load_digits(seed=description["manifest"]["training"]["seed"])
    correct = 0
    with httpx.Client(base_url=url, timeout=30) as client:
        for index in data.test:
            png = io.BytesIO()
            Image.fromarray(data.images[index]).save(png, format="PNG")
            response = client.post("/classify-image", params={"top_k": 1}, files={"file": ("digit.png", png.getvalue(), "image/png")})
            response.raise_for_status()
            correct += int(response.json()["label"] == str(data.labels[index]))
    accuracy, expected = correct / len(data.test), recorded_accuracy(description)
    if accuracy < expected - ACCURACY_SLACK:
        raise CheckFailed(f"mnist-cnn held-out accuracy on CUDA {accuracy:.4f} < {expected:.4f} measured on the CPU at build time")
    return accuracy, expected, len(data.test)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/gpu_check.py", description=__doc__)
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--variants", default="", help='as the service\'s --variants, e.g. {"mnist-cnn": "fp32"}')
    args = parser.parse_args(argv)
    command = ["-m", "service", "--model-repository", str(args.repository.resolve()), "--providers", "cuda", "--log-level", "warning"]
    if args.variants:
        command += ["--variants", args.variants]
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "service.log"
        try:
            with running(command, log) as url:
                print(f"== service on {url} with --providers cuda")
                check_providers(url)
                accuracy, expected, count = check_digit_accuracy(url)
                print(f"== mnist-cnn held-out accuracy through /classify-image on CUDA: {accuracy:.4f} "
                      f"({count} digits; the build measured {expected:.4f} on the CPU)")
        except CheckFailed as exc:
            print(f"GPU CHECK FAILED: {exc}\n{log.read_text()[-3000:]}", file=sys.stderr)
            return 1
        except (RuntimeError, TimeoutError) as exc:  # the service did not start or never became healthy
            print(f"GPU CHECK FAILED: {exc}", file=sys.stderr)
            return 1
    print("== every model served on CUDAExecutionProvider; accuracy holds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
