"""The limit: raw ONNX Runtime throughput in-process (no HTTP), same model file, variant and threads."""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

from bench.inprocess import load_in_process
from bench.payloads import Endpoint, request_objects, rows_for_batch
from service.cpus import physical_cores


def raw_limit(repository: Path, endpoint: Endpoint, variant: str, batch_sizes: list[int], seconds: float) -> dict[str, dict]:
    """batch size -> rows/s and median latency of one batch, pre-processing excluded.

    Batches run as the service runs them: the registry's layout (intra-op threads) and sessions, as many
    batches at once as the compute budget allows (one per core for a variant whose graph runs its rows
    one at a time on single-threaded sessions, else one); a lone row of such a variant on the session with
    every core, as the service runs it when idle."""
    cores = physical_cores()
    entry = load_in_process(repository, endpoint.model, variant)  # with the every-core session for a lone row
    task, model, solo = entry.task, entry.model, entry.solo_model
    requests = request_objects(endpoint)
    results = {}
    for batch in batch_sizes:
        rows = rows_for_batch(task, requests, batch)
        run_with = solo if solo is not None and batch == 1 else model
        side_by_side = max(1, cores // run_with.threads)
        feeds = task.collate(rows)  # pre-processing excluded
        for _ in range(3):
            run_with.run(feeds)
        latencies: list[float] = []
        stop = time.perf_counter() + seconds

        def loop() -> None:
            while time.perf_counter() < stop or len(latencies) < 5:
                begun = time.perf_counter()
                run_with.run(feeds)
                latencies.append(time.perf_counter() - begun)

        started = time.perf_counter()
        workers = [threading.Thread(target=loop) for _ in range(side_by_side)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - started
        results[str(batch)] = {
            "rows_per_s": round(batch * len(latencies) / elapsed, 2),
            "p50_ms": round(statistics.median(latencies) * 1000, 3),
        }
    return results
