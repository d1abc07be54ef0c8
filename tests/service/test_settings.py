"""Every setting is a flag and an ORTSERVE_* environment variable; flags win."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings


def test_environment_variables(monkeypatch):
    monkeypatch.setenv("ORTSERVE_PORT", "9123")
    monkeypatch.setenv("ORTSERVE_PROVIDERS", "cpu")
    monkeypatch.setenv("ORTSERVE_MODEL_REPOSITORY", "/srv/models")
    settings = Settings()
    assert settings.port == 9123 and settings.providers == "cpu"
    assert settings.model_repository == Path("/srv/models")


def test_flags_override_the_environment(monkeypatch):
    monkeypatch.setenv("ORTSERVE_PORT", "9123")
    settings = Settings(_cli_parse_args=["--port", "9200", "--cuda-mem-limit-mb", "512", "--intra-op-threads", "3"])
    assert settings.port == 9200 and settings.cuda_mem_limit_mb == 512 and settings.intra_op_threads == 3


def test_defaults():
    settings = Settings(_cli_parse_args=[])
    assert (settings.host, settings.port, settings.providers) == ("127.0.0.1", 8000, "auto")
    assert settings.inter_op_threads == 1 and settings.intra_op_threads == 0


def test_invalid_values_are_refused(monkeypatch):
    monkeypatch.setenv("ORTSERVE_PROVIDERS", "tpu")
    with pytest.raises(ValidationError):
        Settings()
