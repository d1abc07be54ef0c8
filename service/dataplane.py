"""The one path every protocol takes: decode -> batch -> run -> encode, with per-model accounting.

Routers parse HTTP and call ``DataPlane.infer``; the dataplane knows nothing about images or text
(the task does) and nothing about HTTP (the router does).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import Counter
from concurrent.futures import Executor
from dataclasses import dataclass, field, fields
from typing import Any

from pydantic import BaseModel

import numpy as np

from service.batching import BatchStats, DynamicBatcher
from service.compute_budget import ComputeBudget
from service.errors import DeadlineExceeded, InvalidInput, Overloaded, ServiceError
from service.faults import FaultInjector
from service.metrics import Metrics
from service.registry import ModelEntry, ModelRegistry
from service.settings import Settings
from service.tracing import RequestTimes


COUNTERS = ("batch_sizes", "batch_compute_s")  # ModelStats' fields keyed by batch size


@dataclass
class ModelStats:
    """Counters per served model version (read by /models, by Triton's statistics extension, and by metrics).
    Times are seconds added up; per request unless the name says batch."""

    requests: int = 0
    failures: int = 0
    rows: int = 0
    batches: int = 0
    batch_sizes: Counter = field(default_factory=Counter)
    batch_compute_s: Counter = field(default_factory=Counter)  # batch size -> its runs' time
    queue_s: float = 0.0  # each batch's longest wait
    compute_s: float = 0.0  # session runs
    succeeded: int = 0
    success_s: float = 0.0  # admitted to answered, for the requests answered
    errors: int = 0  # requests that ended in any error, the client's own included (failures: 5xx only)
    failure_s: float = 0.0
    request_queue_s: float = 0.0  # each request's wait for its batch
    request_compute_s: float = 0.0  # each request's share: the run of every batch it was in
    decode_s: float = 0.0
    encode_s: float = 0.0
    last_inference: float = 0.0  # when the last request was answered (epoch seconds)

    def record_batch(self, stats: BatchStats) -> None:
        self.batches += 1
        self.rows += stats.rows
        self.batch_sizes[stats.rows] += 1
        self.batch_compute_s[stats.rows] += stats.compute_s
        self.queue_s += stats.queue_s
        self.compute_s += stats.compute_s
        self.request_queue_s += stats.queue_total_s
        self.request_compute_s += stats.compute_s * stats.requests

    def as_dict(self) -> dict[str, Any]:
        """As JSON can hold it (service/worker_stats.py)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in COUNTERS:
            data[name] = {str(size): value for size, value in data[name].items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelStats":
        known = {f.name for f in fields(cls)}
        values = {name: value for name, value in data.items() if name in known}
        for name in COUNTERS:
            values[name] = Counter({int(size): value for size, value in values.get(name, {}).items()})
        return cls(**values)

    def plus(self, other: "ModelStats") -> "ModelStats":
        """Both processes' counts together (a new object)."""
        total = ModelStats()
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if f.name == "last_inference":
                value = max(mine, theirs)
            elif isinstance(mine, Counter):
                value = Counter(mine)
                value.update(theirs)  # not `+`, which drops what is not positive
            else:
                value = mine + theirs
            setattr(total, f.name, value)
        return total

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "failures": self.failures,
            "rows": self.rows,
            "batches": self.batches,
            "largest_batch": max(self.batch_sizes, default=0),
            "mean_batch": round(self.rows / self.batches, 3) if self.batches else 0.0,
            "batch_sizes": {str(size): count for size, count in sorted(self.batch_sizes.items())},
        }


class DataPlane:
    """Every inference request, whatever its protocol: admit -> decode -> batch -> run -> encode, within its
    deadline, counted per model version. It owns one batcher per loaded session."""

    def __init__(
        self,
        registry: ModelRegistry,
        settings: Settings,
        run_pool: Executor,
        decode_pool: Executor,
        metrics: Metrics,
        budget: ComputeBudget,
    ):
        self.registry = registry
        self.metrics = metrics
        self.settings = settings
        self.run_pool = run_pool
        self.decode_pool = decode_pool
        self.budget = budget  # compute threads for all models' session runs
        self.faults = FaultInjector.from_environment()
        self._decoding = 0  # requests decoding or waiting for a decode thread
        # (name, version) -> the entry whose session the batcher runs, and the batcher; a reloaded version is
        # a new entry and gets a new batcher.
        self._batchers: dict[tuple[str, str], tuple[ModelEntry, DynamicBatcher]] = {}
        self._every_batcher: weakref.WeakSet[DynamicBatcher] = weakref.WeakSet()  # retired ones too, to stop
        self.stats: dict[tuple[str, str], ModelStats] = {}
        self.tracer = None  # service.tracing.Tracer when the service traces (--otel)
        self.worker_stats = None  # service.worker_stats.WorkerStats when other worker processes serve too
        registry.retire_listeners.append(self.retire)

    def batcher(self, entry: ModelEntry) -> DynamicBatcher:
        """The entry's batcher: one per loaded session, made on first use."""
        key = (entry.name, entry.version)
        found = self._batchers.get(key)
        if found is not None and found[0] is entry:
            return found[1]
        batcher = self._batcher_for(entry)
        self._batchers[key] = (entry, batcher)
        self._every_batcher.add(batcher)
        return batcher

    def _batcher_for(self, entry: ModelEntry) -> DynamicBatcher:
        model, task, policy = entry.model, entry.task, entry.policy
        stats = self._stats_of(entry)
        labels = (entry.name, entry.version, entry.variant or "fp32")

        m = self.metrics
        runs, rows, sizes, queued, computed = (
            m.child(metric, *labels)
            for metric in (m.exec_count, m.inference_count, m.batch_size, m.queue_seconds, m.compute_seconds)
        )

        def on_batch(batch: BatchStats) -> None:
            stats.record_batch(batch)
            runs.inc()
            rows.inc(batch.rows)
            sizes.observe(batch.rows)
            queued.observe(batch.queue_s)
            computed.observe(batch.compute_s)

        def run(rows):
            self.faults.check(entry.name, "run")
            return model.run(task.collate(rows))

        solo = entry.solo_model

        def run_alone(rows):
            self.faults.check(entry.name, "run")
            return solo.run(task.collate(rows))

        return DynamicBatcher(
            f"{entry.name}/{entry.version}",
            run,
            executor=self.run_pool,
            budget=self.budget,
            threads_per_run=model.threads,
            run_alone=(run_alone, solo.threads) if solo is not None else None,
            max_batch_size=policy.max_batch_size,
            max_queue_delay_ms=policy.max_queue_delay_ms,
            max_queue_rows=self.settings.max_queue_rows,
            row_length=task.row_length,
            on_batch=on_batch,
            on_queue=m.child(m.queued_rows, *labels).set,
        )

    def queued_rows(self, entry: ModelEntry) -> int:
        found = self._batchers.get((entry.name, entry.version))
        return found[1].queued_rows if found is not None and found[0] is entry else 0

    def retire(self, entries: list[ModelEntry]) -> None:
        """Replaced or unloaded versions: their queued requests finish on the old session, then it is let go."""
        for entry in entries:
            key = (entry.name, entry.version)
            found = self._batchers.get(key)
            if found is not None and found[0] is entry:
                del self._batchers[key]
                found[1].retire()

    async def infer(self, entry: ModelEntry, request: BaseModel) -> BaseModel:
        """A validated task request for a model version -> its task response; ServiceErrors carry their status."""
        task = entry.task
        return await self._serve(
            entry,
            decode=lambda: self.decode(entry, request),
            encode=lambda outputs, decoded: task.encode(outputs, decoded, entry.name, entry.version),
        )

    async def infer_tensors(
        self, entry: ModelEntry, inputs: dict[str, np.ndarray], parameters: dict[str, Any]
    ) -> dict[str, np.ndarray]:
        """Named input tensors (the Open Inference Protocol view, already checked against the task's
        declarations) -> the output tensors."""
        task = entry.task

        async def decode():
            decoded = task.decode_tensors(inputs, parameters)
            if not decoded.rows:
                raise InvalidInput("the batch dimension is 0: nothing to infer")
            entry.model.check(task.collate(decoded.rows))
            return decoded

        return await self._serve(entry, decode=decode, encode=lambda outputs, decoded: task.encode_tensors(outputs, decoded))

    async def _serve(self, entry: ModelEntry, decode, encode):
        """The one sequence of every request: admit (a full queue answers before any decoding is spent on
        the request), decode, wait for the batch's run, encode; within the deadline, counted."""
        stats = self._stats_of(entry)
        tracer = self.tracer
        times = RequestTimes() if tracer is not None else None

        async def run():
            batcher = self.batcher(entry)
            batcher.admit()
            started = time.monotonic_ns()
            decoded = await decode()
            decoded_at = time.monotonic_ns()
            outputs = await batcher.submit(decoded.rows, times)
            self.faults.check(entry.name, "encode")
            encoding = time.monotonic_ns()
            answer = encode(outputs, decoded)
            ended = time.monotonic_ns()
            stats.decode_s += (decoded_at - started) / 1e9
            stats.encode_s += (ended - encoding) / 1e9
            if times is not None:
                times.decode, times.encode = (started, decoded_at), (encoding, ended)
            return answer

        answer = await self._accounted(entry, stats, run())
        if times is not None:
            tracer.stages(times, entry.name, entry.version)
        return answer

    def _stats_of(self, entry: ModelEntry) -> ModelStats:
        key = (entry.name, entry.version)
        found = self.stats.get(key)
        if found is None:
            found = self.stats[key] = ModelStats()
        return found

    async def _accounted(self, entry: ModelEntry, stats: ModelStats, work):
        """Run one request's work within its deadline, counting its success or failure."""
        stats.requests += 1
        labels = (entry.name, entry.version, entry.variant or "fp32")
        inflight = self.metrics.child(self.metrics.inflight, *labels)
        inflight.inc()
        timeout = self.settings.request_timeout_s
        started = time.perf_counter()
        try:
            try:
                async with asyncio.timeout(timeout):  # cancels the work in place; no task of its own
                    result = await work
            except asyncio.TimeoutError:
                raise DeadlineExceeded(f"no answer within the {timeout:g} s deadline; the request was dropped") from None
        except ServiceError as exc:
            stats.errors += 1
            stats.failure_s += time.perf_counter() - started
            self._failed(entry, stats, exc)
            raise
        finally:
            inflight.dec()
        stats.succeeded += 1
        stats.success_s += time.perf_counter() - started
        stats.last_inference = time.time()
        self.metrics.child(self.metrics.inference_success, *labels).inc()
        return result

    def _failed(self, entry: ModelEntry, stats: ModelStats, exc: ServiceError) -> None:
        if exc.status >= 500:
            stats.failures += 1
            self.metrics.child(self.metrics.inference_failure, entry.name, entry.version, entry.variant or "fp32").inc()

    async def decode(self, entry: ModelEntry, request: BaseModel):
        task = entry.task
        if task.blocking_decode:
            # Uploads waiting for a decoder hold their bodies: beyond max_decode_backlog they are turned away.
            if self._decoding >= self.settings.max_decode_backlog:
                raise Overloaded(
                    f"{self._decoding} uploads are waiting to be decoded (limit {self.settings.max_decode_backlog}); "
                    "retry shortly",
                    headers={"Retry-After": "1"},
                )
            self._decoding += 1
            try:
                decoded = await asyncio.get_running_loop().run_in_executor(self.decode_pool, task.decode, request)
            finally:
                self._decoding -= 1
        else:
            decoded = task.decode(request)
        # Refuse here what the model would refuse in a batch, so a bad input fails only its own request.
        entry.model.check(task.collate(decoded.rows))
        return decoded

    def statistics(self, entry: ModelEntry) -> ModelStats:
        """The model version's counters: the whole server's, with worker processes (service/worker_stats.py)."""
        own = self.stats.get((entry.name, entry.version), ModelStats())
        if self.worker_stats is None:
            return own
        key = f"{entry.name}/{entry.version}"
        total = own
        for counters in self.worker_stats.others():
            if key in counters:
                total = total.plus(ModelStats.from_dict(counters[key]))
        return total

    def counters(self) -> dict[str, dict[str, Any]]:
        """This process's counters, for the other workers."""
        return {f"{name}/{version}": stats.as_dict() for (name, version), stats in self.stats.items()}

    def summary(self, entry: ModelEntry) -> dict[str, Any]:
        policy = entry.policy
        stats = self.statistics(entry)
        return {
            "max_batch_size": policy.max_batch_size,
            "threads_per_run": entry.model.threads if entry.model else None,
            "max_queue_delay_ms": policy.max_queue_delay_ms,
            "queued_rows": self.queued_rows(entry),
            **stats.summary(),
        }

    async def close(self) -> None:
        for batcher in list(self._every_batcher):
            await batcher.stop()
