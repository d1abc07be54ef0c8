"""Fault injection for tests: only active when ORTSERVE_TEST_FAULTS names a file, read at each check.

Each line of the file is `<model> <stage>`: stage `run` raises ONNX Runtime's own exception inside the
session run of every batch of that model (as a failing kernel would); stage `encode` raises an unexpected
Python error after the run. Removing the line or the file ends the fault.
"""

from __future__ import annotations

import os
from pathlib import Path

FAULTS_ENV = "ORTSERVE_TEST_FAULTS"


def onnxruntime_error(message: str) -> Exception:
    from onnxruntime.capi.onnxruntime_pybind11_state import RuntimeException

    return RuntimeException(message)


class FaultInjector:
    def __init__(self, path: str | None):
        self.path = Path(path) if path else None

    @classmethod
    def from_environment(cls) -> "FaultInjector":
        return cls(os.environ.get(FAULTS_ENV))

    def armed(self, model: str, stage: str) -> bool:
        if self.path is None:
            return False
        try:
            lines = self.path.read_text().splitlines()
        except OSError:
            return False
        return f"{model} {stage}" in (line.strip() for line in lines)

    def check(self, model: str, stage: str) -> None:
        if self.armed(model, stage):
            if stage == "run":
                raise onnxruntime_error(f"[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : injected fault in {model}")
            raise RuntimeError(f"injected fault in {model} after its run")
