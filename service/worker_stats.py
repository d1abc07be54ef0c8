"""Per-model counters across worker processes (--workers N), so that Triton's statistics extension (read by
perf_analyzer after every measurement window) and the counters of /models are the whole server's, whichever
worker a client's connection reaches.

Each worker writes its own counters to a file of its own in a folder the parent makes, at most every
PUBLISH_S while they change (one small JSON file, replaced whole); a worker asked for statistics adds the
others' last written counters to its own live ones. The other workers' share is thus up to PUBLISH_S
behind. The file of a worker that died stays: counters only grow, as with Prometheus counters.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("service.worker_stats")

WORKER_STATS_ENV = "ORTSERVE_WORKER_STATS"
PUBLISH_S = 0.2

Counters = dict[str, dict[str, Any]]  # "name/version" -> one model version's counters


class WorkerStats:
    def __init__(self, folder: Path):
        self.folder = folder
        # Not the pid alone: a replacement worker may get a dead worker's pid, and must not erase its counts.
        self.own = folder / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
        self._written: str | None = None

    @classmethod
    def from_environment(cls) -> "WorkerStats | None":
        folder = os.environ.get(WORKER_STATS_ENV)
        return cls(Path(folder)) if folder else None

    def publish(self, counters: Counters) -> None:
        text = json.dumps(counters, sort_keys=True)
        if text == self._written:
            return
        scratch = self.own.with_suffix(".tmp")
        scratch.write_text(text, encoding="utf-8")
        os.replace(scratch, self.own)  # readers see the old file or the new one, never half of one
        self._written = text

    def others(self) -> list[Counters]:
        """What every other worker (alive or not) last wrote."""
        found = []
        for path in self.folder.glob("*.json"):
            if path == self.own:
                continue
            try:
                found.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):  # gone meanwhile
                continue
        return found

    async def publishing(self, counters: Callable[[], Counters]) -> None:
        """Publish this worker's counters every PUBLISH_S (when they changed), until cancelled; once more then."""
        try:
            while True:
                await asyncio.sleep(PUBLISH_S)
                self._publish_safely(counters)
        finally:
            self._publish_safely(counters)

    def _publish_safely(self, counters: Callable[[], Counters]) -> None:
        try:
            self.publish(counters())
        except OSError as exc:  # a full disk costs the other workers' view of this one, not this worker
            log.warning("could not publish this worker's counters: %s", exc)
