"""The GPU install path: the cpu/gpu extras, make's choice between them, and the GPU check's failures."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess

import pytest
from packaging.requirements import Requirement

from tests.deploy.conftest import ROOT, tool

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

GPU_CHECK_SH = ROOT / "scripts" / "gpu-check.sh"


def extras() -> dict[str, list[Requirement]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = {name: [Requirement(r) for r in reqs] for name, reqs in project["optional-dependencies"].items()}
    found[""] = [Requirement(r) for r in project["dependencies"]]
    return found


def test_one_onnxruntime_build_per_extra():
    found = extras()
    (cpu,), (gpu,) = found["cpu"], found["gpu"]
    assert cpu.name == "onnxruntime" and gpu.name == "onnxruntime-gpu"
    assert gpu.extras == {"cuda", "cudnn"}, "the CUDA and cuDNN libraries come as wheels"
    runtimes = {"onnxruntime", "onnxruntime-gpu"}
    for name, requirements in found.items():
        if name not in ("cpu", "gpu"):
            assert not runtimes & {r.name for r in requirements}, f"extra {name!r} would pull a second build"


def test_the_two_builds_share_a_major_version():
    """Both extras must accept some release of the same major version, so code written for one runs on the other."""
    cpu, gpu = extras()["cpu"][0].specifier, extras()["gpu"][0].specifier
    releases = [f"1.{minor}.0" for minor in range(20, 40)]
    assert any(cpu.contains(v) and gpu.contains(v) for v in releases)
    assert not cpu.contains("2.0.0") and not gpu.contains("2.0.0")


def make_setup(tmp_path, nvidia_smi_exit: int | None, *args: str) -> str:
    """`make -n setup` with a stand-in nvidia-smi first on PATH; the venv path is fresh, so nothing is up to date."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if nvidia_smi_exit is not None:
        fake = bin_dir / "nvidia-smi"
        fake.write_text(f"#!/bin/sh\nexit {nvidia_smi_exit}\n")
        fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    command = ["make", "-n", "setup", f"VENV={tmp_path / 'venv'}", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout


def installs(plan: str) -> tuple[str, str]:
    """(the extras pip installs, the build pip uninstalls first)."""
    (extras_installed,) = re.findall(r"pip install -e '\.\[([^\]]+)\]'", plan)
    (removed,) = re.findall(r"pip uninstall -y -q (\S+)", plan)
    return extras_installed, removed


@pytest.mark.skipif(tool("make") is None, reason="make not installed")
def test_make_picks_gpu_when_nvidia_smi_finds_one(tmp_path):
    assert installs(make_setup(tmp_path, 0)) == ("gpu,train,test,bench", "onnxruntime")


@pytest.mark.skipif(tool("make") is None, reason="make not installed")
def test_make_picks_cpu_when_nvidia_smi_fails(tmp_path):
    assert installs(make_setup(tmp_path, 1)) == ("cpu,train,test,bench", "onnxruntime-gpu")


@pytest.mark.skipif(tool("make") is None, reason="make not installed")
def test_make_ort_overrides_what_nvidia_smi_says(tmp_path):
    assert installs(make_setup(tmp_path, 0, "ORT=cpu")) == ("cpu,train,test,bench", "onnxruntime-gpu")
    assert installs(make_setup(tmp_path, 1, "ORT=gpu")) == ("gpu,train,test,bench", "onnxruntime")


def test_gpu_check_script_is_valid_shell():
    subprocess.run(["bash", "-n", str(GPU_CHECK_SH)], check=True)
    shellcheck = tool("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed")
    result = subprocess.run([shellcheck, str(GPU_CHECK_SH)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_gpu_check_script_stops_without_a_gpu(tmp_path):
    """Where nvidia-smi fails, the script stops before installing anything, and says why."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvidia-smi"
    fake.write_text("#!/bin/sh\nexit 9\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", str(GPU_CHECK_SH)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "GPU CHECK FAILED: nvidia-smi finds no GPU" in result.stderr
    assert "make setup" not in result.stdout


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_fails_loudly_on_a_cpu_only_onnxruntime(gpu_check, api_repository, capsys):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    assert gpu_check.main(["--repository", str(api_repository)]) == 1
    err = capsys.readouterr().err
    assert "GPU CHECK FAILED" in err and "providers=cuda was requested" in err


def test_gpu_check_refuses_a_service_on_the_cpu(gpu_check, server):
    """The provider check against the real (CPU) service: every model is named as not on CUDA."""
    with pytest.raises(gpu_check.CheckFailed) as failure:
        gpu_check.check_providers(server.url)
    for name in ("mnist-cnn", "forecast-lstm", "sentiment-transformer"):
        assert name in str(failure.value)


@pytest.mark.slow
def test_gpu_check_accuracy_path_on_the_cpu_service(gpu_check, server):
    """The held-out digits through /classify-image reproduce what the build recorded (here on the CPU)."""
    accuracy, expected, count = gpu_check.check_digit_accuracy(server.url)
    assert count == 1000
    assert abs(accuracy - expected) <= gpu_check.ACCURACY_SLACK
