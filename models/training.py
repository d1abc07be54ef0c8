"""Helpers shared by the training loops: seeds, threads, splits, progress."""

from __future__ import annotations

import os
import random

import numpy as np
import torch
from tqdm.auto import tqdm

from service.runtime import usable_cpus


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


def progress(iterable=None, **kwargs) -> tqdm:
    """A tqdm bar with ETA that stays readable in CI logs (no carriage-return spam)."""
    kwargs.setdefault("mininterval", 5.0 if os.environ.get("CI") else 0.5)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
