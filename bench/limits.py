"""The limit: raw ONNX Runtime throughput in-process (no HTTP), same model file, variant and threads."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from bench.payloads import Endpoint, request_objects, rows_for_batch
from service.cpus import physical_cores
from service.manifest import ModelManifest
from service.registry import task_class
from service.runtime import OnnxModel, ProviderPlan, session_options
from service.settings import Settings


def raw_limit(repository: Path, endpoint: Endpoint, variant: str, batch_sizes: list[int], seconds: float) -> dict[str, dict]:
    """batch size -> rows/s and median latency of one session run, pre-processing excluded."""
    version_dir = repository / endpoint.model / "1"
    manifest = ModelManifest.load(version_dir)
    task = task_class(manifest.task)(manifest.preprocessing, manifest.labels, version_dir)
    model_file, _ = manifest.variant(variant)
    plan = ProviderPlan([("CPUExecutionProvider", {})], "bench")
    model = OnnxModel(version_dir / model_file, manifest.inputs, plan, session_options(Settings(), physical_cores()))
    requests = request_objects(endpoint)
    results = {}
    for batch in batch_sizes:
        feeds = task.collate(rows_for_batch(task, requests, batch))
        for _ in range(3):
            model.run(feeds)
        latencies = []
        started = time.perf_counter()
        while time.perf_counter() - started < seconds or len(latencies) < 5:
            begun = time.perf_counter()
            model.run(feeds)
            latencies.append(time.perf_counter() - begun)
        elapsed = time.perf_counter() - started
        results[str(batch)] = {
            "rows_per_s": round(batch * len(latencies) / elapsed, 2),
            "p50_ms": round(statistics.median(latencies) * 1000, 3),
        }
    return results
