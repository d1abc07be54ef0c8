"""OnnxModel: one ONNX Runtime session, the providers it really got, input checks and run()."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.errors import InvalidInput
from service.manifest import TensorSpec
from service.settings import Settings

log = logging.getLogger("service.runtime")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
NUMPY_TYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32}


class ProviderUnavailable(RuntimeError):
    """providers=cuda was asked for and cannot be honoured: start-up must fail."""


@dataclass(frozen=True)
class ProviderPlan:
    providers: list[tuple[str, dict[str, str]]]  # (name, options) in priority order
    note: str  # why this plan (shown in /health when it is not what was asked for)


def cuda_options(settings: Settings) -> dict[str, str]:
    options = {
        "device_id": str(settings.cuda_device_id),
        "cudnn_conv_algo_search": settings.cudnn_conv_algo_search,
        "arena_extend_strategy": "kSameAsRequested",
    }
    if settings.cuda_mem_limit_mb:
        options["gpu_mem_limit"] = str(settings.cuda_mem_limit_mb * 1024 * 1024)
    return options


def plan_providers(settings: Settings, available: list[str] | None = None) -> ProviderPlan:
    """Decide the provider list from the setting and what this onnxruntime build offers."""
    available = ort.get_available_providers() if available is None else available
    cpu = (CPU, {})
    if settings.providers == "cpu":
        return ProviderPlan([cpu], "CPU requested")
    if CUDA in available:
        return ProviderPlan([(CUDA, cuda_options(settings)), cpu], "CUDA available")
    why = f"onnxruntime {ort.__version__} offers no {CUDA} (available: {', '.join(available)})"
    if settings.providers == "cuda":
        raise ProviderUnavailable(
            f"providers=cuda was requested but {why}. Install onnxruntime-gpu (and its CUDA libraries) "
            "in place of onnxruntime, or start with --providers auto or cpu."
        )
    return ProviderPlan([cpu], f"auto: {why}; using CPU")


@cache
def preload_cuda_libraries() -> None:
    """Load CUDA and cuDNN from the nvidia-* wheels the gpu extra installs, once per process, before the first
    CUDA session: without it the CUDA provider finds them only on the system library path, and falls back."""
    preload = getattr(ort, "preload_dlls", None)  # onnxruntime >= 1.21
    if preload is None:
        return
    try:
        preload()
    except (OSError, RuntimeError) as exc:  # a missing library then shows up as a session that fell back
        log.warning("could not preload the CUDA libraries: %s", exc)


def session_options(settings: Settings, threads: int) -> ort.SessionOptions:
    """`threads` intra-op threads (the registry's layout: the physical cores, or 1 for variants that run their rows one at a time)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = settings.inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options


class OnnxModel:
    """A thread-safe session (ONNX Runtime allows concurrent run() on one session)."""

    def __init__(self, path: Path, inputs: list[TensorSpec], plan: ProviderPlan, options: ort.SessionOptions):
        self.inputs = inputs
        names = [name for name, _ in plan.providers]
        if CUDA in names:
            preload_cuda_libraries()
        self.session = ort.InferenceSession(
            str(path), sess_options=options, providers=names, provider_options=[opts for _, opts in plan.providers]
        )
        self.providers = self.session.get_providers()
        self.requested = names
        self.note = plan.note
        if self.fell_back:
            self.note = f"{CUDA} was requested but the session fell back to {', '.join(self.providers)}"
            log.warning("%s: %s", path, self.note)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.threads = options.intra_op_num_threads  # what one run takes from the compute budget
        # On CUDA, IO binding copies each input to the device once and each output back once; on CPU the
        # plain run() already works on the arrays in place, so binding would only add overhead.
        self.binds_io = self.providers[0] == CUDA

    @property
    def fell_back(self) -> bool:
        return CUDA in self.requested and CUDA not in self.providers

    def provider_options(self) -> dict[str, dict[str, str]]:
        return self.session.get_provider_options()

    def check(self, feeds: dict[str, np.ndarray]) -> None:
        """Refuse feeds that do not match the declared inputs (names, dtypes, ranks, fixed sizes)."""
        expected = {t.name: t for t in self.inputs}
        if set(feeds) != set(expected):
            raise InvalidInput(f"inputs {sorted(feeds)} do not match the model's {sorted(expected)}")
        batch = None
        for name, array in feeds.items():
            spec = expected[name]
            if array.dtype != NUMPY_TYPES[spec.dtype]:
                raise InvalidInput(f"input {name}: dtype {array.dtype} != {spec.dtype}")
            if array.ndim != len(spec.shape):
                raise InvalidInput(f"input {name}: {array.ndim} dimensions, expected {len(spec.shape)}")
            for axis, (size, declared) in enumerate(zip(array.shape, spec.shape)):
                if isinstance(declared, int) and size != declared:
                    raise InvalidInput(f"input {name}: axis {axis} is {size}, expected {declared}")
            if array.shape[0] == 0 or (batch is not None and array.shape[0] != batch):
                raise InvalidInput(f"input {name}: batch size {array.shape[0]} is empty or inconsistent")
            batch = array.shape[0]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.check(feeds)
        if self.binds_io:
            return self.run_bound(feeds)
        return self.session.run(self.output_names, feeds)

    def run_bound(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One run through IO binding: inputs bound from numpy, outputs bound to host memory. A binding per
        run, because a binding is not safe to share between the threads that run one session."""
        binding = self.session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for name in self.output_names:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def warm_up(self, max_batch_size: int = 1, max_sequence: int = 0) -> int:
        """Run every batch size the batcher can form (1..max_batch_size) and, for sequence inputs, lengths
        in powers of two up to max_sequence, so no request pays a first-shape cost. Returns the runs made."""
        sequences = [8]
        if max_sequence:
            sequences = sorted({min(2**k, max_sequence) for k in range(1, max_sequence.bit_length() + 1)})
        has_sequence = any(isinstance(d, str) and d != "batch" for spec in self.inputs for d in spec.shape)
        runs = 0
        for sequence in sequences if has_sequence else [0]:
            for batch in range(1, max(1, max_batch_size) + 1):
                feeds = {}
                for spec in self.inputs:
                    shape = [batch if d == "batch" else (sequence if isinstance(d, str) else d) for d in spec.shape]
                    feeds[spec.name] = np.ones(shape, dtype=NUMPY_TYPES[spec.dtype])
                self.run(feeds)
                runs += 1
        return runs
