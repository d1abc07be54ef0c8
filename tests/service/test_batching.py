"""The dynamic batcher on a real ONNX Runtime session: batches form, results fan out, failures stay alone."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from service.batching import DynamicBatcher
from service.compute_budget import ComputeBudget
from service.errors import Overloaded
from service.manifest import TensorSpec
from service.runtime import OnnxModel, ProviderPlan, session_options
from service.settings import Settings


@pytest.fixture(scope="module")
def row_sums(tmp_path_factory) -> OnnxModel:
    """y[b] = sum of x[b, :]: rows of any length, padded with zeros to the batch's longest."""
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)],
        "row_sums",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    path = tmp_path_factory.mktemp("onnx") / "row_sums.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    inputs = [TensorSpec(name="x", dtype="float32", shape=["batch", "sequence"])]
    return OnnxModel(path, inputs, ProviderPlan([("CPUExecutionProvider", {})], "test"), session_options(Settings(), 1))


def collate(rows) -> dict[str, np.ndarray]:
    longest = max(len(row) for row in rows)
    batch = np.zeros((len(rows), longest), np.float32)
    for i, row in enumerate(rows):
        batch[i, : len(row)] = row  # a row of the wrong shape fails here, failing its whole batch
    return {"x": batch}


class Harness:
    def __init__(self, model: OnnxModel, budget: int = 1, **kwargs):
        self.pool = ThreadPoolExecutor(budget)
        self.budget = ComputeBudget(budget)
        self.batches: list[int] = []
        self.computed: list[float] = []

        def run(rows):
            self.computed.extend(float(np.sum(row)) for row in rows)
            return model.run(collate(rows))

        self.batcher = DynamicBatcher(
            "row-sums", run, executor=self.pool, budget=self.budget, row_length=len,
            on_batch=lambda stats: self.batches.append(stats.rows), **kwargs,
        )

    async def hold(self) -> None:
        """Take the whole compute budget, as if another model's batch were running."""
        await self.budget.acquire(self.budget.threads)

    def let_go(self) -> None:
        self.budget.release(self.budget.threads)

    async def held(self, *submissions):
        """Submit while the compute budget is held, then let the batcher go."""
        await self.hold()
        tasks = [asyncio.ensure_future(self.batcher.submit(rows)) for rows in submissions]
        await asyncio.sleep(0.01)
        self.let_go()
        return await asyncio.gather(*tasks, return_exceptions=True)


def rows_of(*lengths: int, start: float = 1.0) -> list[np.ndarray]:
    return [np.full(n, start + i, np.float32) for i, n in enumerate(lengths)]


def test_a_lone_request_runs_at_once_in_a_batch_of_one(row_sums):
    async def scenario():
        harness = Harness(row_sums, max_batch_size=8, max_queue_delay_ms=500)
        result = await asyncio.wait_for(harness.batcher.submit(rows_of(3)), 0.4)  # no 500 ms delay for an idle model
        return harness, result

    harness, result = asyncio.run(scenario())
    assert harness.batches == [1]
    np.testing.assert_allclose(result[0], [[3.0]])


def test_concurrent_requests_share_a_batch_and_each_gets_its_own_rows(row_sums):
    async def scenario():
        harness = Harness(row_sums, max_batch_size=16)
        results = await harness.held(rows_of(2, start=1), rows_of(5, 1, start=10), rows_of(4, start=100))
        return harness, results

    harness, results = asyncio.run(scenario())
    assert harness.batches == [4]
    np.testing.assert_allclose(results[0][0], [[2.0]])
    np.testing.assert_allclose(results[1][0], [[50.0], [11.0]])
    np.testing.assert_allclose(results[2][0], [[400.0]])


def test_a_large_request_is_split_over_batches_and_reassembled_in_order(row_sums):
    async def scenario():
        harness = Harness(row_sums, max_batch_size=16)
        big = [np.full(1 + i % 5, float(i), np.float32) for i in range(40)]
        result = await harness.held(big, rows_of(3))
        return harness, big, result

    harness, big, (first, second) = asyncio.run(scenario())
    assert sorted(harness.batches, reverse=True)[:2] == [16, 16] and sum(harness.batches) == 41
    np.testing.assert_allclose(first[0][:, 0], [row.sum() for row in big])
    np.testing.assert_allclose(second[0], [[3.0]])


def test_rows_of_similar_length_go_together_and_the_oldest_always_goes(row_sums):
    async def scenario():
        harness = Harness(row_sums, max_batch_size=3)
        order: list[int] = []
        lengths = [8, 120, 9, 121, 8, 122]

        async def one(index: int):
            await harness.batcher.submit([np.ones(lengths[index], np.float32)])
            order.append(index)

        await harness.hold()
        tasks = [asyncio.ensure_future(one(i)) for i in range(len(lengths))]
        await asyncio.sleep(0.01)
        harness.let_go()
        await asyncio.gather(*tasks)
        return harness, order

    harness, order = asyncio.run(scenario())
    assert harness.batches == [3, 3]
    assert set(order[:3]) == {0, 2, 4}  # the short texts, with the oldest, ran first and apart from the long ones


def test_a_bad_row_fails_only_its_own_request(row_sums):
    async def scenario():
        harness = Harness(row_sums, max_batch_size=16)
        bad = [np.ones((2, 2), np.float32)]  # two-dimensional: collate cannot place it
        return await harness.held(rows_of(2), bad, rows_of(3, 4))

    good, failed, also_good = asyncio.run(scenario())
    np.testing.assert_allclose(good[0], [[2.0]])
    np.testing.assert_allclose(also_good[0], [[3.0], [8.0]])
    assert failed.__class__.__name__ == "InferenceFailed" and failed.status == 500


def test_the_queue_is_bounded(row_sums):
    async def scenario():
        harness = Harness(row_sums, max_batch_size=4, max_queue_rows=5)
        return await harness.held(rows_of(1, 1, 1), rows_of(1, 1), rows_of(1))

    first, second, refused = asyncio.run(scenario())
    assert first[0].shape == (3, 1) and second[0].shape == (2, 1)
    assert isinstance(refused, Overloaded) and refused.status == 503 and refused.headers["Retry-After"] == "1"


def test_a_cancelled_request_is_not_computed(row_sums):
    async def scenario():
        harness = Harness(row_sums, max_batch_size=16)
        await harness.hold()
        kept = asyncio.ensure_future(harness.batcher.submit(rows_of(2, start=1)))
        dropped = asyncio.ensure_future(harness.batcher.submit(rows_of(2, start=77)))
        await asyncio.sleep(0.01)
        dropped.cancel()
        harness.let_go()
        await kept
        return harness

    harness = asyncio.run(scenario())
    assert 154.0 not in harness.computed and harness.computed == [2.0]


def test_a_loaded_model_waits_for_a_fuller_batch_up_to_the_delay(row_sums):
    async def scenario():
        harness = Harness(row_sums, max_batch_size=8, max_queue_delay_ms=150)
        await harness.held(rows_of(1), rows_of(1))  # now under load: the last batch had 2 rows
        first = asyncio.ensure_future(harness.batcher.submit(rows_of(1)))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(harness.batcher.submit(rows_of(1)))
        await asyncio.gather(first, second)
        return harness

    harness = asyncio.run(scenario())
    assert harness.batches == [2, 2]  # the second arrival joined the first within the delay


class Overlaps:
    """A run that records how many runs were in flight at once, and which runner ran each batch."""

    def __init__(self, model: OnnxModel, name: str, seconds: float = 0.02):
        self.model, self.name, self.seconds = model, name, seconds
        self.lock = threading.Lock()
        self.now = self.most = 0
        self.batches: list[tuple[str, int]] = []

    def __call__(self, rows):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.batches.append((self.name, len(rows)))
        time.sleep(self.seconds)  # a run long enough for the next batch to start beside it
        try:
            return self.model.run(collate(rows))
        finally:
            with self.lock:
                self.now -= 1


def test_single_threaded_runs_go_side_by_side_with_an_even_share_of_the_rows(row_sums):
    """A budget of 2 threads and runs of 1 thread: two batches at once, each with half of what waits."""

    async def scenario():
        narrow = Overlaps(row_sums, "narrow")
        harness = Harness(row_sums, budget=2, max_batch_size=16)
        harness.batcher.run = narrow
        harness.batcher.threads_per_run = 1
        results = await harness.held(*[rows_of(1, start=i) for i in range(8)])
        await asyncio.sleep(0.01)
        assert harness.budget.free == 2
        return harness, narrow, results

    harness, narrow, results = asyncio.run(scenario())
    assert narrow.most == 2
    assert sorted(size for _, size in narrow.batches) == [4, 4]
    assert [float(r[0][0, 0]) for r in results] == [float(i) for i in range(8)]


def test_a_lone_row_on_an_idle_budget_runs_on_every_thread_and_gives_them_all_back(row_sums):
    """run_alone takes the whole budget and gives it all back, even when rows queued behind it meanwhile
    (a solo run that gave back one thread once left the budget at half for good)."""

    async def scenario():
        narrow, solo = Overlaps(row_sums, "narrow"), Overlaps(row_sums, "solo")
        harness = Harness(row_sums, budget=2, max_batch_size=16)
        harness.batcher.run, harness.batcher.threads_per_run = narrow, 1
        harness.batcher.run_alone = (solo, 2)
        lone = asyncio.ensure_future(harness.batcher.submit(rows_of(1, start=5)))
        await asyncio.sleep(0.005)  # the solo run is under way
        behind = [asyncio.ensure_future(harness.batcher.submit(rows_of(1, start=i))) for i in range(6)]
        results = await asyncio.gather(lone, *behind)
        await asyncio.sleep(0.01)  # a run's task ends (and gives its threads back) after it answers
        assert harness.budget.free == 2
        again = await harness.held(*[rows_of(1, start=i) for i in range(6)])
        return narrow, solo, results, again

    narrow, solo, results, again = asyncio.run(scenario())
    assert solo.batches == [("solo", 1)]
    assert [float(r[0][0, 0]) for r in results] == [5.0, *map(float, range(6))]
    assert [float(r[0][0, 0]) for r in again] == [float(i) for i in range(6)]
    assert narrow.most == 2, "after the solo run, single-threaded runs still go two at a time"


def test_a_session_thread_takes_the_next_batch_itself_while_the_event_loop_is_busy(row_sums):
    """Rows that wait when a batch ends run at once, even while the event loop is blocked (writing answers)."""

    async def scenario():
        narrow = Overlaps(row_sums, "narrow", seconds=0.05)
        starts: list[float] = []

        def run(rows):
            starts.append(time.monotonic())
            return narrow(rows)

        harness = Harness(row_sums, budget=1, max_batch_size=16)
        harness.batcher.run = run
        first = asyncio.ensure_future(harness.batcher.submit(rows_of(1)))
        await asyncio.sleep(0.01)  # the first batch is running
        second = asyncio.ensure_future(harness.batcher.submit(rows_of(2)))
        await asyncio.sleep(0)  # queued behind it
        blocked_from = time.monotonic()
        time.sleep(0.3)  # the event loop does nothing for 0.3 s
        blocked_until = time.monotonic()
        results = await asyncio.gather(first, second)
        await asyncio.sleep(0.01)
        assert harness.budget.free == 1, "the thread gave its threads back once nothing waited"
        return starts, blocked_from, blocked_until, results

    starts, blocked_from, blocked_until, results = asyncio.run(scenario())
    assert len(starts) == 2
    assert blocked_from < starts[1] < blocked_until, "the second batch waited for the event loop"
    np.testing.assert_allclose(results[1][0], [[2.0]])


def test_a_session_thread_gives_its_threads_back_when_another_model_waits(row_sums):
    """First come, first served across models: a thread does not go on with its own backlog while another
    model's run waits for the budget."""

    async def scenario():
        order: list[str] = []
        budget, pool = ComputeBudget(1), ThreadPoolExecutor(1)

        def runner(name: str):
            def run(rows):
                order.append(name)
                time.sleep(0.02)
                return row_sums.run(collate(rows))
            return run

        busy, other = (
            DynamicBatcher(name, runner(name), executor=pool, budget=budget, max_batch_size=1, row_length=len)
            for name in ("busy", "other")
        )
        backlog = asyncio.ensure_future(busy.submit(rows_of(1, 1, 1, 1, 1)))  # five batches of one row
        await asyncio.sleep(0.005)
        answer = await other.submit(rows_of(3))
        await backlog
        return order, answer

    order, answer = asyncio.run(scenario())
    assert order.index("other") <= 2, order  # right after the busy batch that was running (or the next)
    assert order.count("busy") == 5
    np.testing.assert_allclose(answer[0], [[3.0]])


def test_others_waiting_ignores_the_owners_own_runs():
    async def scenario():
        budget = ComputeBudget(1)
        await budget.acquire(1)
        mine = asyncio.ensure_future(budget.acquire(1, owner="mine"))
        await asyncio.sleep(0)
        alone = (budget.others_waiting("mine"), budget.others_waiting("theirs"))
        theirs = asyncio.ensure_future(budget.acquire(1, owner="theirs"))
        await asyncio.sleep(0)
        both = budget.others_waiting("mine")
        budget.release(1)
        await mine
        budget.release(1)
        await theirs
        return alone, both, budget.others_waiting("mine")

    alone, both, after = asyncio.run(scenario())
    assert alone == (False, True) and both is True and after is False


def test_stopping_while_a_failed_batch_is_retried_fails_its_requests_instead_of_leaving_them_waiting(row_sums):
    async def scenario():
        harness = Harness(row_sums, max_batch_size=16)
        calls = []

        def run(rows):
            calls.append(len(rows))
            if len(calls) == 1:
                raise RuntimeError("the whole batch fails")
            time.sleep(0.2)  # a retry, one request at a time, under way when the batcher stops
            return row_sums.run(collate(rows))

        harness.batcher.run = run
        await harness.hold()
        requests = [asyncio.ensure_future(harness.batcher.submit(rows_of(1, start=i))) for i in range(3)]
        await asyncio.sleep(0.01)
        harness.let_go()
        await asyncio.sleep(0.1)  # the batch failed; the first retry runs
        await harness.batcher.stop()
        return await asyncio.wait_for(asyncio.gather(*requests, return_exceptions=True), 2)

    outcomes = asyncio.run(scenario())
    assert any(type(o).__name__ == "InferenceFailed" and "shutting down" in str(o) for o in outcomes), outcomes


class EmptiedAfterCheck(deque):
    """A queue that a session thread empties right after the worker has seen it non-empty: the
    interleaving of `if not queue` on the event loop and `_take_batch` in a session thread."""

    def __init__(self, items, batcher: DynamicBatcher):
        super().__init__(items)
        self.batcher, self.armed = batcher, True

    def __bool__(self) -> bool:
        seen = len(self) > 0
        if seen and self.armed:
            self.armed = False
            taken = self.batcher._take(len(self))  # what a session thread's _following does, under the lock
            self.taken = taken
        return seen


def test_the_worker_survives_a_session_thread_emptying_the_queue_between_its_check_and_its_read(row_sums):
    """With max_queue_delay_ms, the worker read queue[0] after checking the queue outside the lock: a
    session thread taking the whole queue in between raised IndexError and ended the worker for good."""

    async def scenario():
        harness = Harness(row_sums, max_batch_size=8, max_queue_delay_ms=5)
        batcher = harness.batcher
        batcher._last_batch_rows = 2  # a loaded model: the worker waits for a fuller batch
        first = asyncio.ensure_future(batcher.submit(rows_of(3)))
        await asyncio.sleep(0)
        # Before the worker runs, swap in a queue that is emptied between the check and the read.
        with batcher._lock:
            batcher._queue = EmptiedAfterCheck(batcher._queue, batcher)
        await asyncio.sleep(0.05)
        queue = batcher._queue
        assert getattr(queue, "taken", None), "the interleaving was not exercised"
        # The rows taken by the 'session thread' are answered as its batch would be.
        batcher._deliver(queue.taken, row_sums.run(collate([item.row for item in queue.taken])))
        assert (await asyncio.wait_for(first, 5))[0].ravel().tolist() == [3.0]
        # The worker is alive: later requests are served.
        later = await asyncio.wait_for(batcher.submit(rows_of(2, 4)), 5)
        assert later[0].ravel().tolist() == [2.0, 8.0]
        assert not batcher._worker.done()

    asyncio.run(scenario())


def test_a_failing_round_is_logged_and_the_worker_goes_on(row_sums, caplog):
    async def scenario():
        harness = Harness(row_sums, max_batch_size=8)
        batcher = harness.batcher
        real_take = batcher._take_batch
        failures = []

        def take_once_broken(*args, **kwargs):
            if not failures:
                failures.append(1)
                raise RuntimeError("a bug in taking a batch")
            return real_take(*args, **kwargs)

        batcher._take_batch = take_once_broken
        answer = await asyncio.wait_for(batcher.submit(rows_of(3)), 5)
        assert answer[0].ravel().tolist() == [3.0] and failures == [1]
        assert harness.budget.idle  # the failed round gave its threads back

    with caplog.at_level("ERROR", logger="service.batching"):
        asyncio.run(scenario())
    assert "a round of its worker failed" in caplog.text and "a bug in taking a batch" in caplog.text


def test_many_requests_with_a_queue_delay_and_session_thread_continuation_are_all_answered(row_sums):
    """Hammer the worker/session-thread hand-over with a queue delay and two side-by-side runs."""

    async def scenario():
        harness = Harness(row_sums, budget=2, max_batch_size=4, max_queue_delay_ms=0.2)
        for round_ in range(30):
            sizes = [1 + (i + round_) % 3 for i in range(40)]
            results = await asyncio.wait_for(
                asyncio.gather(*(harness.batcher.submit(rows_of(*([2] * n))) for n in sizes)), 20
            )
            assert [len(r[0]) for r in results] == sizes
            await asyncio.sleep(0)
        assert not harness.batcher._worker.done()

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # let the session threads and the event loop interleave as often as possible
    try:
        asyncio.run(scenario())
    finally:
        sys.setswitchinterval(switch)
