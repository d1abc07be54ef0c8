"""--workers N: N serving processes on one listening socket, for when the event loop (HTTP, JSON,
tokenising) is the bottleneck rather than the cores that run the models.

The parent binds the port and starts N processes (spawned, not forked: each loads its own sessions); each
serves with the service's own HTTP protocol and drain (service/server.py), loads every model, and runs its
sessions on physical cores / N compute threads, so together they run no more compute threads than there
are cores. Their metrics are added up (prometheus-client's multiprocess mode, in a folder the parent
makes), and a model-control action taken by any of them reaches all (service/control_log.py).

SIGTERM or SIGINT to the parent reaches every worker, which drains as a single process does; the parent
waits for them. A worker that dies is replaced, unless it died starting up (then the parent stops: a
start-up that fails once fails every time).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import uvicorn

from service.control_log import CONTROL_LOG_ENV
from service.cpus import physical_cores
from service.metrics import MULTIPROCESS_ENV
from service.runtime import CUDA, ProviderPlan
from service.settings import Settings
from service.worker_stats import WORKER_STATS_ENV

log = logging.getLogger("service.workers")
CHECK_S = 0.5


# Measured (bench/results): one process per physical core served the most on 2 cores and on 16; on CUDA the
# GPU is shared and each process holds its own context, and 8 did best on an H200.
MOST_ON_CUDA = 8


def default_workers(plan: ProviderPlan) -> int:
    cores = physical_cores()
    return min(cores, MOST_ON_CUDA) if plan.providers[0][0] == CUDA else cores


def run_worker(settings_json: str, sockets) -> None:
    """A worker process: the same service a single process runs, on the parent's socket."""
    from service.logs import configure_logging
    from service.server import serve

    settings = Settings.model_validate_json(settings_json)
    configure_logging(settings.log_level, settings.log_format)
    raise SystemExit(serve(settings, sockets=sockets))


def serve_workers(settings: Settings) -> int:
    run_dir = Path(tempfile.mkdtemp(prefix="ortserve-workers-"))
    (run_dir / "metrics").mkdir()
    os.environ[MULTIPROCESS_ENV] = str(run_dir / "metrics")  # read by each worker's prometheus-client
    os.environ[CONTROL_LOG_ENV] = str(run_dir / "control.jsonl")
    (run_dir / "stats").mkdir()
    os.environ[WORKER_STATS_ENV] = str(run_dir / "stats")  # per-model counters (service/worker_stats.py)
    sockets = [uvicorn.Config("service.app:create_app", host=settings.host, port=settings.port).bind_socket()]
    context = multiprocessing.get_context("spawn")
    stopping = threading.Event()
    settings_json = settings.model_dump_json()

    def start() -> multiprocessing.Process:
        process = context.Process(target=run_worker, args=(settings_json, sockets), name="ortserve-worker", daemon=False)
        process.start()
        return process

    def stop(sig, frame) -> None:
        if stopping.is_set():  # a second signal: the workers skip their wait too
            for process in workers:
                if process.is_alive():
                    os.kill(process.pid, signal.SIGTERM)
            return
        stopping.set()
        log.info("stopping %d workers", len(workers))
        # The parent's copy of the listening socket goes now: once the workers close theirs (after their
        # unready time), new connections are refused, instead of waiting in a queue nobody takes them from.
        for sock in sockets:
            sock.close()
        for process in workers:
            if process.is_alive():
                os.kill(process.pid, sig)

    workers = [start() for _ in range(settings.workers)]
    log.info("serving on %s:%d with %d worker processes", settings.host, settings.port, len(workers))
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    status = 0
    try:
        while not stopping.wait(CHECK_S):
            for index, process in enumerate(workers):
                if process.is_alive():
                    continue
                from service.server import STARTUP_FAILED

                if process.exitcode == STARTUP_FAILED:
                    log.error("a worker failed to start; stopping")
                    status = 1
                    stop(signal.SIGTERM, None)
                    break
                log.warning("worker %d exited with %s; starting another", process.pid, process.exitcode)
                workers[index] = start()
        deadline = time.monotonic() + settings.unready_s + settings.drain_s + 15
        for process in workers:
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sock in sockets:
            sock.close()
        shutil.rmtree(run_dir, ignore_errors=True)
    return status
