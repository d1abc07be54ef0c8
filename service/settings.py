"""All service settings: one pydantic-settings class, flags on the command line or ORTSERVE_* variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "ORTSERVE_"


class Settings(BaseSettings):
    """Serve the model repository over HTTP. Every flag can also be set as an environment variable:
    ORTSERVE_ plus the flag in upper snake case (e.g. ORTSERVE_MODEL_REPOSITORY=/models)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        cli_prog_name="python -m service",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        protected_namespaces=(),
    )

    host: str = Field("127.0.0.1", description="address to bind")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 picks a free one)")
    model_repository: Path = Field(Path("model_repository"), description="folder of <model>/<version>/ directories")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")

    providers: Literal["auto", "cuda", "cpu"] = Field(
        "auto", description="execution providers: auto = CUDA when onnxruntime offers it, else CPU"
    )
    cuda_device_id: int = Field(0, ge=0, description="CUDA device ordinal")
    cuda_mem_limit_mb: int = Field(0, ge=0, description="CUDA memory arena limit in MiB (0 = no limit)")
    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = Field(
        "HEURISTIC", description="cuDNN convolution algorithm search"
    )
    intra_op_threads: int = Field(0, ge=0, description="threads inside one operator (0 = the physical cores this process may use)")
    inter_op_threads: int = Field(1, ge=1, description="threads across operators")
    inference_workers: int = Field(2, ge=1, le=64, description="threads that run ONNX Runtime sessions concurrently")

    max_request_mb: float = Field(8.0, gt=0, description="largest request body accepted (413 beyond)")
