# syntax=docker/dockerfile:1
# Three images from one file:
#   docker build -t ortserve .                            CPU runtime (the default target)
#   docker build --target gpu -t ortserve:gpu .           CUDA runtime (needs the NVIDIA driver and container toolkit)
# The `models` stage trains and exports with torch; the runtime stages copy only the model repository, no torch.

FROM python:3.11-slim AS models
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service service
COPY export export
COPY models models
# The build cache (finished models by content hash, downloaded data) survives between builds in a BuildKit
# cache mount, so an unchanged model is not retrained. torch here is the default wheel; this stage is discarded.
ENV ORTSERVE_CACHE_DIR=/cache/ortserve
# DL3013: this installs the project itself; its dependencies are bounded in pyproject.toml.
# hadolint ignore=DL3013
RUN --mount=type=cache,target=/cache/ortserve \
    pip install --no-cache-dir '.[cpu,train]' \
 && python -m export build --repository /model_repository

# What both runtimes share: the source, a non-root user, settings, the health check and the command.
FROM python:3.11-slim AS serving
WORKDIR /app
# A numeric user, so Kubernetes can verify runAsNonRoot without reading /etc/passwd.
RUN groupadd --system --gid 10001 ortserve \
 && useradd --system --uid 10001 --gid 10001 --no-create-home ortserve
COPY pyproject.toml README.md ./
COPY service service
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ORTSERVE_HOST=0.0.0.0 \
    ORTSERVE_PORT=8000 \
    ORTSERVE_GRPC_PORT=8081 \
    ORTSERVE_MODEL_REPOSITORY=/model_repository
EXPOSE 8000 8081
# Ready, not merely alive: 503 while the models load and warm up, so the start period covers warm-up.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/ready' % os.environ.get('ORTSERVE_PORT', '8000'), timeout=2)"]
CMD ["python", "-m", "service"]

# GPU: a plain Python base rather than nvidia/cuda. onnxruntime-gpu[cuda,cudnn] brings the CUDA 13 runtime
# libraries and cuDNN 9 as wheels (the versions that build was made for) and the service preloads them;
# the driver (libcuda) comes from the host through the NVIDIA container toolkit. An nvidia/cuda base would
# ship a second, possibly mismatched, copy of CUDA and pin the image to its Ubuntu Python.
FROM serving AS gpu
# hadolint ignore=DL3013
RUN pip install --no-cache-dir '.[gpu]'
COPY --from=models /model_repository /model_repository
# What the NVIDIA container toolkit reads: expose the GPUs and mount the compute libraries of the driver.
# providers=cuda: start-up fails with a clear message instead of silently serving on the CPU.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    ORTSERVE_PROVIDERS=cuda
USER 10001:10001

# CPU, the default target (last stage). The model repository stays owned by root: the service only reads it.
FROM serving AS cpu
# hadolint ignore=DL3013
RUN pip install --no-cache-dir '.[cpu]'
COPY --from=models /model_repository /model_repository
ENV ORTSERVE_PROVIDERS=cpu
USER 10001:10001
