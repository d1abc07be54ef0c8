"""One dynamic batcher for every model: rows from concurrent requests run as one session call.

Requests are split into rows (an image, a text, a series). Rows wait in a bounded queue; a worker
per model takes up to ``max_batch_size`` of them whenever the compute budget has threads for a run
(service/compute_budget.py), so a lone request on an idle model runs at once, and under load the rows
that queued while the previous batch ran go together. A session thread that finishes a batch takes the
next one itself while rows wait and no other model waits for threads, so the cores do not stand idle
while the event loop is busy writing answers; it gives its threads back when the queue is empty.
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
import threading
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
    queue_total_s: float = 0.0  # the requests' waits added up (each from its oldest row in this batch)


@dataclass
class _Request:
    future: asyncio.Future
    results: list[Any]
    remaining: int
    timing: Any = None  # a tracing.RequestTimes to fill in (only when the service traces)


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
        on_queue: Callable[[int], None] | None = None,
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
        self.on_queue = on_queue or (lambda rows: None)  # told the rows waiting whenever that changes (a gauge)
        self._queue: deque[_Row] = deque()
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self._lock = threading.Lock()  # the queue is shared with session threads taking their next batch
        self._in_flight: dict[int, list[_Row]] = {}  # batches in session threads (several when the budget allows)
        self._recovering: set[asyncio.Task] = set()  # failed batches whose requests are retried alone
        self._stopped = False
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
        self._stopped = True  # session threads take no next batch
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        for recovering in list(self._recovering):
            recovering.cancel()
        await asyncio.gather(*self._recovering, return_exceptions=True)
        with self._lock:
            waiting = [item for batch in list(self._in_flight.values()) for item in batch] + list(self._queue)
            self._queue.clear()
            self.on_queue(0)
        self._fail(waiting, InferenceFailed(f"{self.name} is shutting down"))

    def admit(self, rows: int = 1) -> None:
        """Overloaded (503 with Retry-After) when `rows` more would not fit in the queue."""
        if len(self._queue) + rows > self.max_queue_rows:
            raise Overloaded(
                f"{self.name} has {len(self._queue)} rows queued (limit {self.max_queue_rows}); retry shortly",
                headers={"Retry-After": "1"},
            )

    async def submit(self, rows: Sequence[Any], timing: Any = None) -> list[np.ndarray]:
        """The outputs for these rows: one array per model output, leading axis = the rows, in order.
        `timing` (tracing.RequestTimes), when given, is told when the rows queued and when their batches ran."""
        if not rows:
            raise ValueError("submit needs at least one row")
        self.admit(len(rows))
        if self._worker is None or self._worker.done():
            self._worker = None
            self.start()
        request = _Request(asyncio.get_running_loop().create_future(), [None] * len(rows), len(rows), timing)
        now = time.monotonic()
        if timing is not None:
            timing.queued = int(now * 1e9)
        queued = [_Row(request, i, row, self.row_length(row), now) for i, row in enumerate(rows)]
        with self._lock:
            self._queue.extend(queued)
            self.on_queue(len(self._queue))
        self._arrived.set()
        try:
            parts = await request.future
        except asyncio.CancelledError:
            # The caller gave up (deadline, disconnect): its rows leave the queue and free their places.
            with self._lock:
                self._queue = deque(item for item in self._queue if item.request is not request)
                self.on_queue(len(self._queue))
            raise
        return [np.stack([part[k] for part in parts]) for k in range(len(parts[0]))]

    # --- the worker -----------------------------------------------------------------------------

    async def _work(self) -> None:
        """The worker, supervised: a bug in one round is logged and the next round goes on, so the
        model is never left without a worker while requests wait for their deadline."""
        while True:
            try:
                if not await self._round():
                    self._worker = None
                    return
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - logged with its traceback; the queue is served on
                log.exception("batcher %s: a round of its worker failed; it goes on", self.name)
                await asyncio.sleep(0.001)  # never a busy loop, whatever keeps failing

    async def _round(self) -> bool:
        """Wait for rows and start one batch; False once a retired batcher has nothing left to do."""
        self._arrived.clear()
        if not self._queue:
            if self._retired:  # a late submit to a retired batcher starts the worker again
                return False
            await self._arrived.wait()
            return True
        if self.max_queue_delay_s and self._last_batch_rows > 1:
            await self._wait_for_fuller_batch()
        run, threads, goes_on = self.run, self.threads_per_run, True
        if self.run_alone is not None and len(self._queue) == 1 and self.budget.idle:
            (run, threads), goes_on = self.run_alone, False
        await self.budget.acquire(threads, owner=self)
        try:
            batch = self._take_batch(threads)
        except BaseException:
            self.budget.release(threads)
            raise
        if not batch:
            self.budget.release(threads)
            return True
        self._start(run, threads, batch, goes_on)
        return True

    def _start(self, run: RunRows, threads: int, batch: list[_Row], goes_on: bool) -> None:
        """Hand a batch to a session thread, which holds `threads` of the budget until it gives them back."""
        loop = asyncio.get_running_loop()
        try:
            self.executor.submit(self._serve, loop, run, threads, batch, goes_on)
        except RuntimeError as exc:  # the pool is shut down: the service is stopping
            self._ran(batch, run, threads, time.monotonic(), 0.0, None, exc, True)

    def _serve(self, loop: asyncio.AbstractEventLoop, run: RunRows, threads: int, batch: list[_Row], goes_on: bool) -> None:
        """In a session thread: run the batch, then, while rows wait, take and run the next one at once.

        Taking the next batch here rather than on the event loop keeps the session threads busy: a round
        trip through the event loop, which may be busy writing answers, left a core idle between batches
        (bench/README.md). The answers are handed to the event loop after each batch."""
        while True:
            started = time.monotonic()
            try:
                outputs, error = run([item.row for item in batch]), None
            except Exception as exc:  # noqa: BLE001 - every failure is handed to its requests
                outputs, error = None, exc
            computed = time.monotonic() - started
            following = None
            if goes_on and error is None:
                try:
                    following = self._following(threads)
                except Exception:  # noqa: BLE001 - the batch just run is still answered
                    log.exception("batcher %s: taking the next batch in a session thread failed", self.name)
            try:
                loop.call_soon_threadsafe(self._ran, batch, run, threads, started, computed, outputs, error, following is None)
            except RuntimeError:  # the event loop is closed: nobody waits for these answers any more
                return
            if following is None:
                return
            batch = following

    def _following(self, threads: int) -> list[_Row] | None:
        """The next batch for a session thread that has just run one, or None to give its threads back:
        when no rows wait, when another model waits for threads (first come, first served), when the
        batcher stops, or when a fuller batch is worth waiting for (max_queue_delay_ms)."""
        if self._stopped or not self._queue or self.budget.others_waiting(self):
            return None
        return self._take_batch(threads, unless_filling=bool(self.max_queue_delay_s)) or None

    def _take_batch(self, threads: int, unless_filling: bool = False) -> list[_Row]:
        """A batch for a run of `threads`, in flight from now on; none while a fuller batch is worth waiting
        for (unless_filling: the queue is short of a batch and its oldest row has waited less than the delay)."""
        with self._lock:
            queue = self._queue
            if unless_filling and queue and len(queue) < self.max_batch_size:
                if time.monotonic() - queue[0].arrived < self.max_queue_delay_s:
                    return []
            batch = self._take(self._share(threads))
            if batch:
                self._in_flight[id(batch)] = batch
                self.on_queue(len(self._queue))
            return batch

    async def _wait_for_fuller_batch(self) -> None:
        # Under the lock: a session thread may take the whole queue at any moment (_following).
        with self._lock:
            if not self._queue:
                return
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
        """Up to `size` live rows; when more wait, the oldest and those nearest its length. Under the lock."""
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

    def _ran(
        self, batch: list[_Row], run: RunRows, threads: int, started: float, computed: float,
        outputs: list[np.ndarray] | None, error: Exception | None, gives_back: bool,
    ) -> None:
        """On the event loop, for each batch a session thread ran: account, answer, give back its threads."""
        self._in_flight.pop(id(batch), None)
        oldest: dict[int, float] = {}
        for item in batch:
            key = id(item.request)
            if item.arrived < oldest.get(key, started):
                oldest[key] = item.arrived
        waits = [started - arrived for arrived in oldest.values()]
        self._record(batch, len(oldest), max(waits, default=0.0), computed, failed=error is not None, queue_total_s=sum(waits))
        requests = oldest
        if error is None:
            if gives_back:  # before answering: the next batch is scheduled ahead of the answers' writes
                self.budget.release(threads)
            self._deliver(batch, outputs, (started, started + computed))
            return
        # A failed batch ends its thread's turn; its requests are retried one by one on its threads.
        recovery = asyncio.get_running_loop().create_task(self._recover(batch, run, threads, error, len(requests)))
        self._recovering.add(recovery)
        recovery.add_done_callback(self._recovering.discard)

    async def _recover(self, batch: list[_Row], run: RunRows, threads: int, error: Exception, requests: int) -> None:
        try:
            if self._stopped:
                self._fail(batch, InferenceFailed(f"{self.name} is shutting down"))
            elif requests > 1:
                await self._retry_alone(batch, run)
            else:
                self._fail(batch, error)
        except asyncio.CancelledError:  # the batcher is stopping
            self._fail(batch, InferenceFailed(f"{self.name} is shutting down"))
            raise
        finally:
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

    def _deliver(self, batch: list[_Row], outputs: list[np.ndarray], ran: tuple[float, float] | None = None) -> None:
        for position, item in enumerate(batch):
            request = item.request
            if request.future.done():
                continue
            if request.timing is not None and ran is not None:
                _note_batch(request.timing, ran, len(batch))
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

    def _record(
        self, batch: list[_Row], requests: int, queue_s: float, compute_s: float, failed: bool, queue_total_s: float = 0.0
    ) -> None:
        self._last_batch_rows = len(batch)
        if self.on_batch is not None:
            self.on_batch(BatchStats(len(batch), requests, queue_s, compute_s, failed, queue_total_s))


def _note_batch(timing: Any, ran: tuple[float, float], rows: int) -> None:
    """A request's batches, as one span: from the start of the first to the end of the last."""
    start, end = int(ran[0] * 1e9), int(ran[1] * 1e9)
    timing.batch = (min(start, timing.batch[0]), max(end, timing.batch[1])) if timing.batch else (start, end)
    timing.batch_rows = max(timing.batch_rows, rows)
