"""ComputeBudget: the compute threads all session runs may use at once, granted first come, first served.

A run takes as many threads as its session has intra-op threads: a batched run on a 2-core machine
takes both, a single-threaded run of a variant that runs its rows one at a time takes one, so two of
those run side by side and the cores stay busy without ever running more compute threads than cores.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter, deque

log = logging.getLogger("service.compute")


def set_compute_priority(priority: str) -> None:
    """Run the calling thread (one that runs sessions) at `priority`.

    "idle" is Linux's SCHED_IDLE: the event loop is the one thread that hands out batches and answers, so
    when it wakes it must get a core at once rather than wait out a compute thread's time slice; compute
    then takes every cycle left over. Measured on 2 cores under load (bench/README.md), the cores stood idle
    less and served more. It is unprivileged; where it is unavailable the thread runs at normal priority.
    """
    if priority != "idle" or not hasattr(os, "SCHED_IDLE"):
        return
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except OSError as exc:
        log.warning("compute threads run at normal priority: SCHED_IDLE refused (%s)", exc)


class ComputeBudget:
    """Granted and released on the event loop; `free` and `others_waiting` may be read from any thread."""

    def __init__(self, threads: int):
        self.threads = max(1, threads)
        self.free = self.threads
        self._waiting: deque[tuple[int, asyncio.Future]] = deque()
        self._waiters: Counter = Counter()  # owner -> runs it has waiting, for others_waiting

    @property
    def idle(self) -> bool:
        return self.free == self.threads

    def others_waiting(self, owner: object) -> bool:
        """Whether a run of someone other than `owner` waits for threads (a session thread that could go
        on with its own next batch gives its threads back instead)."""
        waiters = self._waiters
        return len(waiters) > (owner in waiters)

    async def acquire(self, threads: int, owner: object = None) -> None:
        threads = min(max(1, threads), self.threads)  # a run wider than the budget runs alone
        if not self._waiting and self.free >= threads:
            self.free -= threads
            return
        granted = asyncio.get_running_loop().create_future()
        self._waiting.append((threads, granted))
        self._waiters[owner] += 1
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release(threads)  # granted just as the waiter gave up
            elif (threads, granted) in self._waiting:  # else a release already passed over it
                self._waiting.remove((threads, granted))
                self._grant()
            raise
        finally:
            self._waiters[owner] -= 1
            if not self._waiters[owner]:
                del self._waiters[owner]

    def release(self, threads: int) -> None:
        self.free += min(max(1, threads), self.threads)
        self._grant()

    def _grant(self) -> None:
        # In order: a wide run at the head is not overtaken by narrow ones behind it (no starvation).
        while self._waiting and self.free >= self._waiting[0][0]:
            threads, granted = self._waiting.popleft()
            if granted.done():
                continue
            self.free -= threads
            granted.set_result(None)
