"""The one path every protocol takes: decode -> batch -> run -> encode, with per-model accounting.

Routers parse HTTP and call ``DataPlane.infer``; the dataplane knows nothing about images or text
(the task does) and nothing about HTTP (the router does).
"""

from __future__ import annotations

import asyncio
import weakref
from collections import Counter
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

import numpy as np

from service.batching import BatchStats, DynamicBatcher
from service.compute_budget import ComputeBudget
from service.errors import DeadlineExceeded, InvalidInput, Overloaded, ServiceError
from service.faults import FaultInjector
from service.metrics import Metrics
from service.protocol.v2 import DATATYPES
from service.registry import ModelEntry, ModelRegistry
from service.settings import Settings


@dataclass
class ModelStats:
    """Counters per served model version (read by /models, and by metrics)."""

    requests: int = 0
    failures: int = 0
    rows: int = 0
    batches: int = 0
    batch_sizes: Counter = field(default_factory=Counter)
    queue_s: float = 0.0
    compute_s: float = 0.0

    def record_batch(self, stats: BatchStats) -> None:
        self.batches += 1
        self.rows += stats.rows
        self.batch_sizes[stats.rows] += 1
        self.queue_s += stats.queue_s
        self.compute_s += stats.compute_s

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
        self._batchers: weakref.WeakSet[DynamicBatcher] = weakref.WeakSet()  # to stop them on shutdown
        self.stats: dict[tuple[str, str], ModelStats] = {}

    def batcher(self, entry: ModelEntry) -> DynamicBatcher:
        """The entry's batcher: one per loaded session, so a reloaded model gets a fresh one."""
        key = (entry.name, entry.version)
        batcher = entry.batcher
        if batcher is None:
            model, task = entry.model, entry.task
            policy = entry.policy or self.settings.batch_policy(entry.name)
            stats = self.stats.setdefault(key, ModelStats())
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

            batcher = entry.batcher = DynamicBatcher(
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
            )
            self._batchers.add(batcher)
        return batcher

    @staticmethod
    def retire(entries: list[ModelEntry]) -> None:
        """Replaced or unloaded versions: their queued requests finish on the old session, then it is let go."""
        for entry in entries:
            if entry.batcher is not None:
                entry.batcher.retire()

    async def infer(self, model: str, request: BaseModel, version: str | None = None) -> BaseModel:
        """A task request for a model -> its task response; ServiceErrors carry their status."""
        entry = self.registry.get(model, version)

        async def run() -> BaseModel:
            batcher = self.batcher(entry)
            batcher.admit()  # a full queue answers before any decoding is spent on the request
            decoded = await self.decode(entry, request)
            outputs = await batcher.submit(decoded.rows)
            self.faults.check(entry.name, "encode")
            return entry.task.encode(outputs, decoded, entry.name, entry.version)

        return await self._accounted(entry, run())

    async def infer_tensors(
        self, model: str, version: str | None, inputs: dict[str, np.ndarray], parameters: dict[str, Any]
    ) -> tuple[ModelEntry, dict[str, np.ndarray]]:
        """Named input tensors (the Open Inference Protocol view) -> the entry that ran and its output tensors."""
        entry = self.registry.get(model, version)
        task = entry.task

        async def run() -> dict[str, np.ndarray]:
            check_tensors(task, inputs)
            decoded = task.decode_tensors(inputs, parameters)
            if not decoded.rows:
                raise InvalidInput("the batch dimension is 0: nothing to infer")
            entry.model.check(task.collate(decoded.rows))
            outputs = await self.batcher(entry).submit(decoded.rows)
            return task.encode_tensors(outputs, decoded)

        return entry, await self._accounted(entry, run())

    async def _accounted(self, entry: ModelEntry, work):
        """Run one request's work within its deadline, counting its success or failure."""
        stats = self.stats.setdefault((entry.name, entry.version), ModelStats())
        stats.requests += 1
        timeout = self.settings.request_timeout_s
        try:
            try:
                async with asyncio.timeout(timeout):  # cancels the work in place; no task of its own
                    result = await work
            except asyncio.TimeoutError:
                raise DeadlineExceeded(f"no answer within the {timeout:g} s deadline; the request was dropped") from None
        except ServiceError as exc:
            self._failed(entry, stats, exc)
            raise
        self.metrics.child(self.metrics.inference_success, entry.name, entry.version, entry.variant or "fp32").inc()
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

    def summary(self, entry: ModelEntry) -> dict[str, Any]:
        policy = entry.policy or self.settings.batch_policy(entry.name)
        stats = self.stats.get((entry.name, entry.version), ModelStats())
        return {
            "max_batch_size": policy.max_batch_size,
            "threads_per_run": entry.model.threads if entry.model else None,
            "max_queue_delay_ms": policy.max_queue_delay_ms,
            "queued_rows": entry.batcher.queued_rows if entry.batcher else 0,
            **stats.summary(),
        }

    async def close(self) -> None:
        for batcher in list(self._batchers):
            await batcher.stop()


def check_tensors(task, inputs: dict[str, np.ndarray]) -> None:
    """Names, datatypes and shapes against the task's declared V2 inputs (-1 matches any size)."""
    declared = {t.name: t for t in task.tensor_inputs}
    if set(inputs) != set(declared):
        raise InvalidInput(f"inputs {sorted(inputs)} do not match the model's {sorted(declared)}")
    for name, array in inputs.items():
        spec = declared[name]
        if array.dtype != np.dtype(DATATYPES[spec.datatype]):
            raise InvalidInput(f"input {name}: datatype must be {spec.datatype}")
        if array.ndim != len(spec.shape) or any(d != -1 and d != s for d, s in zip(spec.shape, array.shape)):
            raise InvalidInput(f"input {name}: shape {list(array.shape)} does not match {list(spec.shape)}")
