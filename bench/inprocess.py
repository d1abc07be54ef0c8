"""A model loaded in this process the way the service loads it: its registry, sessions and task code."""

from __future__ import annotations

from pathlib import Path

from service.cpus import physical_cores
from service.registry import ModelEntry, ModelRegistry
from service.runtime import ProviderPlan
from service.settings import Settings


def load_in_process(repository: Path, model: str, variant: str) -> ModelEntry:
    """The latest version of `model` on `variant`, loaded by the service's registry (layout, sessions, warm-up)."""
    settings = Settings(model_repository=repository, variants={model: variant})
    registry = ModelRegistry(settings, ProviderPlan([("CPUExecutionProvider", {})], "bench"), physical_cores())
    entry = registry.versions(model)[-1]
    registry.load(entry)
    if not entry.ready:
        raise RuntimeError(f"{model}/{entry.version} ({variant}) did not load: {entry.error}")
    return entry
