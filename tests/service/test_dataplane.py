"""The dataplane in-process, on real ONNX Runtime sessions of tiny models: the one sequence both protocols
take (admit, decode, batch, run, encode), its accounting, deadlines, and a batcher per loaded session."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.compute_budget import ComputeBudget
from service.dataplane import DataPlane
from service.errors import DeadlineExceeded, InvalidInput, Overloaded
from service.metrics import Metrics
from service.registry import ModelRegistry
from service.runtime import ProviderPlan
from service.settings import Settings
from service.tasks.image import ImageRequest
from tests.tiny_models import DIGIT, expected_label, tiny_digit_model

CPU = ProviderPlan([("CPUExecutionProvider", {})], "test")


class Served:
    """A registry of tiny models and a dataplane on it, with pools that are shut down afterwards."""

    def __init__(self, repository, **settings):
        self.settings = Settings(model_repository=repository, **settings)
        self.registry = ModelRegistry(self.settings, CPU, cpus=1)
        self.registry.load_all()
        self.run_pool, self.decode_pool = ThreadPoolExecutor(1), ThreadPoolExecutor(1)
        self.budget = ComputeBudget(1)
        self.dataplane = DataPlane(self.registry, self.settings, self.run_pool, self.decode_pool, Metrics(), self.budget)

    async def close(self) -> None:
        await self.dataplane.close()
        self.run_pool.shutdown()
        self.decode_pool.shutdown()


@pytest.fixture
def repository(tmp_path):
    root = tmp_path / "repository"
    tiny_digit_model(root / "tiny-digits" / "1")
    return root


def run(scenario):
    return asyncio.run(scenario())


def test_a_typed_request_and_a_tensor_request_take_the_same_path_and_are_counted(repository):
    async def scenario():
        served = Served(repository)
        entry = served.registry.get("tiny-digits")
        answer = await served.dataplane.infer(entry, ImageRequest(data=DIGIT, top_k=2))
        assert answer.model == "tiny-digits" and answer.label == expected_label(entry.version_dir, entry.manifest)
        pixels = np.zeros((3, 1, 28, 28), np.float32)
        pixels[:, :, 8:20, 12:16] = 1.0
        outputs = await served.dataplane.infer_tensors(entry, {"image": pixels}, {})
        assert outputs["probabilities"].shape == (3, 10) and np.allclose(outputs["probabilities"].sum(axis=1), 1.0)
        summary = served.dataplane.summary(entry)
        assert (summary["requests"], summary["rows"], summary["max_batch_size"]) == (2, 4, 4)
        await served.close()

    run(scenario)


def test_an_empty_tensor_batch_is_invalid(repository):
    async def scenario():
        served = Served(repository)
        entry = served.registry.get("tiny-digits")
        with pytest.raises(InvalidInput, match="batch dimension is 0"):
            await served.dataplane.infer_tensors(entry, {"image": np.zeros((0, 1, 28, 28), np.float32)}, {})
        await served.close()

    run(scenario)


def test_a_full_queue_answers_before_any_decoding(repository):
    async def scenario():
        served = Served(repository, max_queue_rows=1)
        entry = served.registry.get("tiny-digits")
        decoded = []
        real_decode = entry.task.decode
        entry.task.decode = lambda request: decoded.append(1) or real_decode(request)
        await served.budget.acquire(1)  # the compute threads are busy: the first request's row waits
        waiting = asyncio.ensure_future(served.dataplane.infer(entry, ImageRequest(data=DIGIT)))
        while served.dataplane.queued_rows(entry) < 1:
            await asyncio.sleep(0.005)
        with pytest.raises(Overloaded):
            await served.dataplane.infer(entry, ImageRequest(data=DIGIT))
        assert decoded == [1]  # the refused request was never decoded
        served.budget.release(1)
        assert (await waiting).model == "tiny-digits"
        await served.close()

    run(scenario)


def test_a_passed_deadline_drops_the_request_and_counts_a_failure(repository):
    async def scenario():
        served = Served(repository, request_timeout_s=0.2)
        entry = served.registry.get("tiny-digits")
        await served.budget.acquire(1)
        with pytest.raises(DeadlineExceeded):
            await served.dataplane.infer(entry, ImageRequest(data=DIGIT))
        assert served.dataplane.queued_rows(entry) == 0  # its row left the queue
        assert served.dataplane.summary(entry)["failures"] == 1
        served.budget.release(1)
        await served.close()

    run(scenario)


def test_a_reloaded_version_gets_a_new_batcher_and_the_old_one_is_retired(repository):
    async def scenario():
        served = Served(repository)
        old = served.registry.get("tiny-digits")
        await served.dataplane.infer(old, ImageRequest(data=DIGIT))
        old_batcher = served.dataplane.batcher(old)
        await served.registry.load_model("tiny-digits")
        new = served.registry.get("tiny-digits")
        assert new is not old and served.dataplane.batcher(new) is not old_batcher
        assert old_batcher._retired
        assert (await served.dataplane.infer(new, ImageRequest(data=DIGIT))).label == expected_label(
            new.version_dir, new.manifest)
        await served.close()

    run(scenario)


def test_the_autoscaling_gauges_follow_the_queue_and_the_requests_in_flight(repository):
    async def scenario():
        served = Served(repository)
        entry = served.registry.get("tiny-digits")
        metrics = served.dataplane.metrics
        labels = ("tiny-digits", "1", "fp32")
        queued, inflight = metrics.child(metrics.queued_rows, *labels), metrics.child(metrics.inflight, *labels)
        await served.budget.acquire(1)
        waiting = [asyncio.ensure_future(served.dataplane.infer(entry, ImageRequest(data=DIGIT))) for _ in range(3)]
        while served.dataplane.queued_rows(entry) < 3:
            await asyncio.sleep(0.005)
        assert queued._value.get() == 3 and inflight._value.get() == 3
        served.budget.release(1)
        await asyncio.gather(*waiting)
        assert queued._value.get() == 0 and inflight._value.get() == 0
        await served.close()

    run(scenario)
