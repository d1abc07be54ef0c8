"""One dynamic batcher for every model: rows from concurrent requests run as one session call.

Requests are split into rows (an image, a text, a series). Rows wait in a bounded queue; a worker
per model takes up to ``max_batch_size`` of them whenever the compute budget has threads for a run
(service/compute_budget.py), so a lone request on an idle model runs at once, and under load the rows
that queued while the previous batch ran go together.
``max_queue_delay_ms`` lets a loaded model wait a little longer for a fuller batch (never an idle one).
When more rows wait than fit, rows of similar length go together (the oldest row always goes), so a
short text is not padded to a long one. Results fan back out to each request in its own row order.
If a batch fails, each of its requests is retried alone so that one bad input fails only itself.

The batcher knows nothing about images or text: `run` turns a list of rows into output arrays.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from service.compute_budget import ComputeBudget
from service.errors import InferenceFailed, Overloaded, ServiceError

log = logging.getLogger("service.batching")

RunRows = Callable[[Sequence[Any]], list[np.ndarray]]


@dataclass
class BatchStats:
    rows: int
    requests: int
    queue_s: float  # the longest wait of a row in this batch
    compute_s: float
    failed: bool


@dataclass
class _Request:
    future: asyncio.Future
    results: list[Any]
    remaining: int


@dataclass
class _Row:
    request: _Request
    index: int
    row: Any
    length: int
    arrived: float = field(default_factory=time.monotonic)


class DynamicBatcher:
    def __init__(
        self,
        name: str,
        run: RunRows,
        *,
        executor: Executor,
        budget: ComputeBudget,
        threads_per_run: int = 1,
        run_alone: tuple[RunRows, int] | None = None,
        max_batch_size: int,
        max_queue_delay_ms: float = 0.0,
        max_queue_rows: int = 1024,
        row_length: Callable[[Any], int] = lambda row: 0,
        on_batch: Callable[[BatchStats], None] | None = None,
    ):
        self.name = name
        self.run = run
        self.executor = executor
        self.budget = budget
        self.threads_per_run = threads_per_run
        self.run_alone = run_alone  # (run, threads) for a lone row when no other run holds threads
        self.max_batch_size = max(1, max_batch_size)
        self.max_queue_delay_s = max(0.0, max_queue_delay_ms) / 1000.0
        self.max_queue_rows = max_queue_rows
        self.row_length = row_length
        self.on_batch = on_batch
        self._queue: deque[_Row] = deque()
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()  # batches in flight (several when the budget allows)
        self._last_batch_rows = 0
        self._retired = False

    @property
    def queued_rows(self) -> int:
        return len(self._queue)

    def retire(self) -> None:
        """The session was replaced or unloaded: finish what is queued, then let the worker end."""
        self._retired = True
        self._arrived.set()

    def start(self) -> None:
        if self._worker is None:
            # In a fresh context: the worker serves every request, so it must not carry the first one's log id.
            loop = asyncio.get_running_loop()
            self._worker = contextvars.Context().run(loop.create_task, self._work(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        for running in list(self._running):
            running.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        for item in self._queue:
            if not item.request.future.done():
                item.request.future.set_exception(InferenceFailed(f"{self.name} is shutting down"))
        self._queue.clear()

    def admit(self, rows: int = 1) -> None:
        """Overloaded (503 with Retry-After) when `rows` more would not fit in the queue."""
        if len(self._queue) + rows > self.max_queue_rows:
            raise Overloaded(
                f"{self.name} has {len(self._queue)} rows queued (limit {self.max_queue_rows}); retry shortly",
                headers={"Retry-After": "1"},
            )

    async def submit(self, rows: Sequence[Any]) -> list[np.ndarray]:
        """The outputs for these rows: one array per model output, leading axis = the rows, in order."""
        if not rows:
            raise ValueError("submit needs at least one row")
        self.admit(len(rows))
        if self._worker is None:
            self.start()
        request = _Request(asyncio.get_running_loop().create_future(), [None] * len(rows), len(rows))
        now = time.monotonic()
        self._queue.extend(_Row(request, i, row, self.row_length(row), now) for i, row in enumerate(rows))
        self._arrived.set()
        try:
            parts = await request.future
        except asyncio.CancelledError:
            # The caller gave up (deadline, disconnect): its rows leave the queue and free their places.
            self._queue = deque(item for item in self._queue if item.request is not request)
            raise
        return [np.stack([part[k] for part in parts]) for k in range(len(parts[0]))]

    # --- the worker -----------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            self._arrived.clear()
            if not self._queue:
                if self._retired:  # a late submit to a retired batcher starts the worker again
                    self._worker = None
                    return
                await self._arrived.wait()
                continue
            if self.max_queue_delay_s and self._last_batch_rows > 1:
                await self._wait_for_fuller_batch()
            run, threads = self.run, self.threads_per_run
            if self.run_alone is not None and len(self._queue) == 1 and self.budget.idle:
                run, threads = self.run_alone
            await self.budget.acquire(threads)
            batch = self._take(self._share(threads))
            if not batch:
                self.budget.release(threads)
                continue
            # The session thread starts now; the answers are handed out by a task of their own while the
            # worker waits for threads for the next batch (with threads to spare, it starts at once).
            loop = asyncio.get_running_loop()
            started = time.monotonic()
            computing = loop.run_in_executor(self.executor, run, [item.row for item in batch])
            running = loop.create_task(self._finish_batch(batch, run, computing, threads, started))
            self._running.add(running)
            running.add_done_callback(self._running.discard)

    async def _wait_for_fuller_batch(self) -> None:
        deadline = self._queue[0].arrived + self.max_queue_delay_s
        while len(self._queue) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _share(self, threads: int) -> int:
        """The most rows this run should take: max_batch_size, or, when the budget leaves room for more
        runs like it at once, an even share of what waits, so the other runs start with rows of their own."""
        runs_besides = self.budget.free // max(1, threads)
        if not runs_besides:
            return self.max_batch_size
        return max(1, min(self.max_batch_size, -(-len(self._queue) // (runs_besides + 1))))

    def _take(self, size: int) -> list[_Row]:
        """Up to `size` live rows; when more wait, the oldest and those nearest its length."""
        live = [item for item in self._queue if not item.request.future.done()]
        if len(live) <= size:
            self._queue.clear()
            return live
        if not any(item.length for item in live):
            chosen = live[:size]
        else:
            oldest = live[0]
            by_length = sorted(live, key=lambda item: item.length)
            position = by_length.index(oldest)
            best_start, best_spread = 0, None
            for start in range(max(0, position - size + 1), min(position, len(by_length) - size) + 1):
                spread = by_length[start + size - 1].length - by_length[start].length
                if best_spread is None or spread < best_spread:
                    best_start, best_spread = start, spread
            chosen = by_length[best_start : best_start + size]
        taken = {id(item) for item in chosen}
        self._queue = deque(item for item in live if id(item) not in taken)
        # Keep each request's rows in order inside the batch (not required, but cheaper to read).
        return sorted(chosen, key=lambda item: item.arrived)

    async def _finish_batch(
        self, batch: list[_Row], run: RunRows, computing: asyncio.Future, threads: int, started: float
    ) -> None:
        queue_s = started - min(item.arrived for item in batch)
        requests = {id(item.request): item.request for item in batch}
        holding = True
        try:
            try:
                outputs = await computing
            except asyncio.CancelledError:  # the batcher is stopping
                self._fail(batch, InferenceFailed(f"{self.name} is shutting down"))
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is handed to its requests
                self._record(batch, len(requests), queue_s, time.monotonic() - started, failed=True)
                if len(requests) > 1:
                    await self._retry_alone(batch, run)
                else:
                    self._fail(batch, exc)
                return
            # Give the threads back before answering: the worker's next batch is scheduled ahead of the
            # answers, so the session threads do not wait while the event loop writes responses.
            self.budget.release(threads)
            holding = False
            self._record(batch, len(requests), queue_s, time.monotonic() - started, failed=False)
            self._deliver(batch, outputs)
        finally:
            if holding:
                self.budget.release(threads)

    async def _retry_alone(self, batch: list[_Row], run: RunRows) -> None:
        loop = asyncio.get_running_loop()
        by_request: dict[int, list[_Row]] = {}
        for item in batch:
            by_request.setdefault(id(item.request), []).append(item)
        for rows in by_request.values():
            try:
                outputs = await loop.run_in_executor(self.executor, run, [item.row for item in rows])
            except Exception as exc:  # noqa: BLE001
                self._fail(rows, exc)
            else:
                self._deliver(rows, outputs)

    def _deliver(self, batch: list[_Row], outputs: list[np.ndarray]) -> None:
        for position, item in enumerate(batch):
            request = item.request
            if request.future.done():
                continue
            request.results[item.index] = [output[position] for output in outputs]
            request.remaining -= 1
            if request.remaining == 0:
                request.future.set_result(request.results)

    def _fail(self, batch: list[_Row], exc: Exception) -> None:
        if not isinstance(exc, ServiceError):
            log.error("inference failed on %s: %s: %s", self.name, type(exc).__name__, exc)
            exc = InferenceFailed(f"inference failed on {self.name}")
        for item in batch:
            if not item.request.future.done():
                item.request.future.set_exception(exc)

    def _record(self, batch: list[_Row], requests: int, queue_s: float, compute_s: float, failed: bool) -> None:
        self._last_batch_rows = len(batch)
        if self.on_batch is not None:
            self.on_batch(BatchStats(len(batch), requests, queue_s, compute_s, failed))
