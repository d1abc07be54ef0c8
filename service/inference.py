"""Running a decoded request through a model, off the event loop."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
from fastapi import Request

from service.errors import InferenceFailed, ServiceError
from service.registry import ModelEntry
from service.tasks import Decoded

log = logging.getLogger("service.inference")


async def infer(request: Request, entry: ModelEntry, decoded: Decoded) -> list[np.ndarray]:
    """Run on the dedicated inference executor so /health stays responsive while models work."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(request.app.state.executor, entry.model.run, decoded.feeds)
    except ServiceError:
        raise
    except Exception as exc:
        log.exception("inference failed on %s/%s", entry.name, entry.version)
        raise InferenceFailed(f"inference failed on {entry.name}/{entry.version}") from exc
