"""The server a reader of the PyTorch tutorials would write: FastAPI + PyTorch eager, one request at a time.

Same pre-processing as the service (its task code decodes and encodes), the same trained weights (from
the build cache), but no ONNX Runtime, no batching: each request is a batch of one, under a lock. It
echoes X-Request-ID as the service does, so that the benchmark can check each answer against the request
it answers. Kept for `make bench` only; the service never imports it.

    python -m bench.baselines.naive_server --repository model_repository --port 8100
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

import torch
import uvicorn
from fastapi import FastAPI, File, Query, UploadFile

from export.__main__ import load_builder
from export.build import WEIGHTS_FILE, default_cache_dir
from service.cpus import physical_cores
from service.logs import RequestContext
from service.manifest import ModelManifest
from service.registry import task_class
from service.tasks.forecast import ForecastRequest
from service.tasks.image import ImageRequest
from service.tasks.sentiment import SentimentRequest


def load(repository: Path, cache_dir: Path, name: str):
    version_dir = repository / name / "1"
    manifest = ModelManifest.load(version_dir)
    weights = cache_dir / "weights" / name / manifest.build.training_key / WEIGHTS_FILE
    if not weights.is_file():
        raise SystemExit(f"{weights} is missing: the naive server needs the build cache that made {version_dir}")
    builder = load_builder(name)
    module = builder.architecture(builder.hyperparameters(manifest.build.quick))
    module.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    task = task_class(manifest.task)(manifest.preprocessing, manifest.labels, version_dir)
    return manifest, module.eval(), task


def create_app(repository: Path, cache_dir: Path) -> FastAPI:
    torch.set_num_threads(physical_cores())
    models = {name: load(repository, cache_dir, name) for name in ("mnist-cnn", "sentiment-transformer", "forecast-lstm")}
    lock = threading.Lock()
    app = FastAPI(title="naive baseline")
    app.add_middleware(RequestContext)

    def predict(name: str, request):
        manifest, module, task = models[name]
        decoded = task.decode(request)
        feeds = task.collate(decoded.rows)
        with lock, torch.no_grad():
            outputs = module(*(torch.from_numpy(feeds[spec.name]) for spec in manifest.inputs))
        return task.encode([outputs.numpy()], decoded, manifest.name, manifest.version)

    @app.post("/classify-image")
    def classify_image(file: UploadFile = File(...), top_k: int = Query(3)):
        return predict("mnist-cnn", ImageRequest(data=file.file.read(), top_k=top_k))

    @app.post("/sentiment")
    def sentiment(body: SentimentRequest):
        return predict("sentiment-transformer", body)

    @app.post("/predict-sequence")
    def predict_sequence(body: ForecastRequest):
        return predict("forecast-lstm", body)

    @app.get("/health")
    def health():
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    app = create_app(args.repository, args.cache_dir or default_cache_dir())
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
