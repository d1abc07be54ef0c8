"""The compute budget: never more threads than it holds, first come first served, nothing lost on cancel;
and the threads that run sessions yield to the event loop."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from service.compute_budget import ComputeBudget, set_compute_priority

linux_only = pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")


def test_runs_take_their_threads_and_wait_in_order():
    async def scenario():
        budget = ComputeBudget(2)
        order: list[str] = []
        await budget.acquire(1)
        await budget.acquire(1)
        assert budget.free == 0 and not budget.idle

        async def run(name: str, threads: int):
            await budget.acquire(threads)
            order.append(name)

        wide = asyncio.ensure_future(run("wide", 2))
        await asyncio.sleep(0)
        narrow = asyncio.ensure_future(run("narrow", 1))
        await asyncio.sleep(0)
        budget.release(1)
        await asyncio.sleep(0.01)
        assert order == [], "the narrow run does not overtake the wide one waiting ahead of it"
        budget.release(1)
        await wide
        assert order == ["wide"] and budget.free == 0
        budget.release(2)
        await narrow
        assert order == ["wide", "narrow"] and budget.free == 1

    asyncio.run(scenario())


def test_a_waiter_that_gives_up_returns_nothing_it_did_not_get():
    async def scenario():
        budget = ComputeBudget(2)
        await budget.acquire(2)
        waiting = asyncio.ensure_future(budget.acquire(1))
        await asyncio.sleep(0)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        budget.release(2)
        assert budget.free == 2 and budget.idle

    asyncio.run(scenario())


def test_a_run_wider_than_the_budget_runs_alone():
    async def scenario():
        budget = ComputeBudget(2)
        await budget.acquire(8)
        assert budget.free == 0
        budget.release(8)
        assert budget.free == 2

    asyncio.run(scenario())


def test_a_waiter_dropped_by_a_release_before_it_wakes_still_just_gives_up():
    """Cancelled, then passed over by a release before its task ran: it ends cancelled, owing nothing."""

    async def scenario():
        budget = ComputeBudget(1)
        await budget.acquire(1)
        waiting = asyncio.ensure_future(budget.acquire(1))
        await asyncio.sleep(0)
        waiting.cancel()
        budget.release(1)  # before the cancelled waiter's task has run
        [outcome] = await asyncio.gather(waiting, return_exceptions=True)
        assert isinstance(outcome, asyncio.CancelledError)
        assert budget.free == 1 and budget.idle

    asyncio.run(scenario())


@linux_only
@pytest.mark.parametrize("priority, policy", [("idle", "SCHED_IDLE"), ("normal", "SCHED_OTHER")])
def test_a_compute_thread_runs_at_the_priority_asked_for(priority, policy):
    seen = []
    thread = threading.Thread(target=lambda: (set_compute_priority(priority), seen.append(os.sched_getscheduler(0))))
    thread.start()
    thread.join()
    assert seen == [getattr(os, policy)]
    assert os.sched_getscheduler(0) == os.SCHED_OTHER, "the caller's own thread is untouched"


@linux_only
def test_the_server_runs_sessions_on_idle_priority_threads_and_its_event_loop_at_normal(client, server):
    assert client.post("/sentiment", json={"text": "A fine day."}).status_code == 200
    pid = server.process.pid
    policies = {int(task.name): os.sched_getscheduler(int(task.name)) for task in Path(f"/proc/{pid}/task").iterdir()}
    assert policies[pid] == os.SCHED_OTHER, "the event loop"
    assert os.SCHED_IDLE in policies.values(), "the thread that ran the session"
