"""Model control across worker processes (--workers N): a load or unload asked of any worker is appended to
one file, and every worker applies every line of it, in order, to its own registry. The worker that took
the request answers once it has applied the line itself (others follow within a poll), and with its own
outcome. A worker that starts later (a replacement for one that died) replays the whole file after its
first load, so it ends in the same state as the others."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Awaitable, Callable

log = logging.getLogger("service.control")

CONTROL_LOG_ENV = "ORTSERVE_CONTROL_LOG"
POLL_S = 0.1

Apply = Callable[[str, str], Awaitable[None]]  # (action, model name): raises ServiceError when it fails


class ControlLog:
    def __init__(self, path: Path):
        self.path = path
        self._mine: dict[str, asyncio.Future] = {}  # lines this process appended, until it applied them
        self._offset = 0

    @classmethod
    def from_environment(cls) -> "ControlLog | None":
        path = os.environ.get(CONTROL_LOG_ENV)
        return cls(Path(path)) if path else None

    async def submit(self, action: str, name: str) -> None:
        """Append the action for every worker, and return (or raise) once this worker has applied it."""
        token = uuid.uuid4().hex
        applied = self._mine[token] = asyncio.get_running_loop().create_future()
        line = json.dumps({"action": action, "name": name, "token": token}) + "\n"
        with self.path.open("a", encoding="utf-8") as handle:  # one short write: appended whole (O_APPEND)
            handle.write(line)
        try:
            await applied
        finally:
            self._mine.pop(token, None)

    async def follow(self, apply: Apply) -> None:
        """Apply every line, old and new, in order, for as long as the process serves."""
        while True:
            for entry in self._new_lines():
                try:
                    await apply(entry["action"], entry["name"])
                    error = None
                except Exception as exc:  # noqa: BLE001 - told to whoever asked; the others log it
                    error = exc
                    if entry["token"] not in self._mine:
                        log.warning("model control %s %s failed in this worker: %s", entry["action"], entry["name"], exc)
                waiting = self._mine.get(entry["token"])
                if waiting is not None and not waiting.done():
                    waiting.set_exception(error) if error is not None else waiting.set_result(None)
            await asyncio.sleep(POLL_S)

    def _new_lines(self) -> list[dict]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits for the next poll
        self._offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.strip()]
