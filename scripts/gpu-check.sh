#!/usr/bin/env bash
# The GPU check, one command on a machine with an NVIDIA GPU and its driver:
#   bash scripts/gpu-check.sh
# 1. installs the CUDA build of ONNX Runtime (make setup ORT=gpu: onnxruntime-gpu with CUDA 13 and cuDNN 9 wheels),
# 2. builds the models if they are missing or changed,
# 3. starts the service with --providers cuda on a free loopback port, fails unless every model's session
#    really runs on CUDAExecutionProvider, and scores the held-out digits through /classify-image,
# 4. runs the quick benchmark against the service on CUDA and prints its figures.
# Any step that does not hold stops the script with a non-zero exit and says why.
set -euo pipefail
cd "$(dirname "$0")/.."

REPOSITORY="${REPOSITORY:-model_repository}"
BENCH_OUT="${BENCH_OUT:-$(mktemp -d)}"
PYTHON=.venv/bin/python

fail() {
    echo "GPU CHECK FAILED: $*" >&2
    exit 1
}

command -v nvidia-smi >/dev/null 2>&1 || fail "nvidia-smi not found: this machine has no NVIDIA driver"
nvidia-smi -L || fail "nvidia-smi finds no GPU"
command -v wrk >/dev/null 2>&1 || fail "wrk not found, the benchmark's load generator (Debian/Ubuntu: apt-get install wrk)"

echo "== make setup ORT=gpu"
make setup ORT=gpu
"$PYTHON" - <<'PY' || fail "onnxruntime in .venv offers no CUDAExecutionProvider"
import onnxruntime as ort
providers = ort.get_available_providers()
print(f"onnxruntime {ort.__version__}, device {ort.get_device()}, providers {providers}")
raise SystemExit(0 if "CUDAExecutionProvider" in providers else 1)
PY

echo "== make models (only what is missing or changed)"
make models ORT=gpu REPOSITORY="$REPOSITORY"

echo "== service on CUDA: providers and held-out accuracy"
"$PYTHON" scripts/gpu_check.py --repository "$REPOSITORY"

echo "== quick benchmark, service on CUDA (results in $BENCH_OUT)"
"$PYTHON" -m bench --quick --providers cuda --repository "$REPOSITORY" --out "$BENCH_OUT"

echo "== GPU check passed"
