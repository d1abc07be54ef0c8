"""What the training loops share: seeds, threads, splits, progress, the offline hub, the trained result."""

from __future__ import annotations

import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from service.cpus import usable_cpus


class TrainingContextLike(Protocol):
    """What a training stage reads (export.build.TrainingContext satisfies it)."""

    quick: bool
    hyperparameters: dict[str, Any]
    cache_dir: Path


@dataclass
class Trained:
    """The training stage's result: the module (its state dict is cached) and a JSON-able record."""

    module: torch.nn.Module
    record: dict[str, Any] = field(default_factory=dict)


def use_offline_hub() -> None:
    """Pretrained weights come from installed packages only: never let a library reach for a model hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def seed_everything(seed: int) -> np.random.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return np.random.default_rng(seed)


def configure_torch_threads() -> None:
    torch.set_num_threads(usable_cpus())


def stratified_split(
    strata: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, held) with `fraction` of every stratum held out (at least one where possible)."""
    held: list[np.ndarray] = []
    rest: list[np.ndarray] = []
    for value in np.unique(strata):
        members = np.flatnonzero(strata == value)
        members = members[rng.permutation(len(members))]
        n_held = int(round(len(members) * fraction))
        if len(members) > 1:
            n_held = min(max(n_held, 1), len(members) - 1)
        held.append(members[:n_held])
        rest.append(members[n_held:])
    return np.sort(np.concatenate(rest)), np.sort(np.concatenate(held))


class _Progress(tqdm):
    """tqdm whose postfix updates wait for the next refresh, so mininterval holds in CI logs."""

    def set_postfix(self, ordered_dict=None, refresh: bool = False, **kwargs) -> None:
        super().set_postfix(ordered_dict, refresh=refresh, **kwargs)


def progress(iterable=None, **kwargs) -> tqdm:
    """A progress bar with ETA that stays readable in CI logs (no carriage-return spam)."""
    kwargs.setdefault("mininterval", 30.0 if os.environ.get("CI") or not sys.stderr.isatty() else 0.5)
    kwargs.setdefault("dynamic_ncols", True)
    return _Progress(iterable, **kwargs)
