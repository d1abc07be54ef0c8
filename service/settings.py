"""All service settings: one pydantic-settings class, flags on the command line or ORTSERVE_* variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.batch_policy import BatchPolicy
from service.limits import DEFAULT_LIMITS, InputLimits

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
    grpc_port: int = Field(
        8081, ge=-1, le=65535, description="gRPC port of the Open Inference Protocol (0 picks a free one, -1 turns gRPC off)"
    )
    model_repository: Path = Field(Path("model_repository"), description="folder of <model>/<version>/ directories")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    http: Literal["auto", "httptools", "h11"] = Field("auto", description="HTTP parser (auto = httptools when installed)")
    loop: Literal["auto", "uvloop", "asyncio"] = Field("auto", description="event loop (auto = uvloop when installed)")

    providers: Literal["auto", "cuda", "cpu"] = Field(
        "auto", description="execution providers: auto = CUDA when onnxruntime offers it, else CPU"
    )
    cuda_device_id: int = Field(0, ge=0, description="CUDA device ordinal")
    cuda_mem_limit_mb: int = Field(0, ge=0, description="CUDA memory arena limit in MiB (0 = no limit)")
    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = Field(
        "HEURISTIC", description="cuDNN convolution algorithm search"
    )
    intra_op_threads: int = Field(
        0, ge=0, description="threads inside one session run (0 = the physical cores this process may use; 1 for a variant whose graph runs its rows one at a time)"
    )
    inter_op_threads: int = Field(1, ge=1, description="threads across operators")
    inference_workers: int = Field(
        1, ge=1, le=64,
        description="full-width session runs at once across all models: the compute budget is this times the physical cores, "
        "and each run takes its intra-op threads from it (so single-threaded runs of a variant that runs its rows one at a time go one per core)",
    )
    compute_priority: Literal["idle", "normal"] = Field(
        "idle",
        description="scheduling of the threads that run sessions: idle (Linux SCHED_IDLE) lets the event loop and decoding "
        "run the moment they need a core and gives compute every cycle left over; normal when other busy processes "
        "share the service's cgroup",
    )
    workers: int = Field(
        0, ge=0, le=64,
        description="serving processes sharing the port (0 = one per physical core, at most 8 when serving on CUDA); "
        "each loads every model and runs sessions on its share of the cores (cores / workers), and model control "
        "reaches all of them",
    )
    decode_workers: int = Field(2, ge=1, le=64, description="threads that decode images (a bounded pool, per process)")
    max_decode_mb: int = Field(
        768, ge=16,
        description="memory all decode threads together may spend decoding images: each image may take "
        "max_decode_mb / decode_workers (413 beyond, refused from its header before decoding)",
    )
    batching: dict[str, BatchPolicy] = Field(
        default_factory=dict,
        description='per-model batching as JSON, e.g. {"sentiment-transformer": {"max_batch_size": 32, "max_queue_delay_ms": 2}}; '
        "models not named keep their manifest's (serving.batching)",
    )
    routes: dict[str, str] = Field(
        default_factory=dict,
        description='typed REST routes as JSON {path: model}, e.g. {"/digits": "mnist-cnn"}, beside (or instead of, for '
        "the same path) the route each manifest declares (serving.route)",
    )
    max_queue_rows: int = Field(1024, ge=1, description="rows that may wait per model; beyond, 503 with Retry-After")
    max_decode_backlog: int = Field(
        128, ge=1, description="uploads decoding or waiting for a decode thread, across models; beyond, 503 with Retry-After"
    )
    variants: dict[str, str] = Field(
        default_factory=dict,
        description='per-model variant as JSON, e.g. {"sentiment-transformer": "fp32"}; default: the manifest\'s served_variant',
    )

    max_request_mb: float = Field(8.0, gt=0, description="largest request body accepted (413 beyond)")
    max_header_kb: int = Field(64, ge=1, description="largest request line plus headers (431 beyond, connection closed)")
    idle_timeout_s: float = Field(
        5.0, gt=0, description="a connection with no request in progress is closed after this long without one (also keep-alive)"
    )
    head_timeout_s: float = Field(
        10.0, gt=0, description="a request's line and headers must arrive within this long of its first byte (408 beyond)"
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="a request's body must arrive within this long of its headers (408 beyond)"
    )
    max_connections: int = Field(
        1024, ge=1, description="open connections per process; a request on one beyond is answered 503 at once"
    )
    max_image_pixels: int = Field(
        DEFAULT_LIMITS.image_pixels, ge=1, description="largest image (width x height) decoded; 413 beyond, refused before decoding"
    )
    max_texts: int = Field(DEFAULT_LIMITS.texts, ge=1, description="texts in one sentiment request (422 beyond)")
    max_text_chars: int = Field(DEFAULT_LIMITS.text_chars, ge=1, description="characters in one text (422 beyond)")
    max_series_length: int = Field(
        DEFAULT_LIMITS.series_length, ge=1, description="values in one forecast series (422 beyond)"
    )
    max_images: int = Field(DEFAULT_LIMITS.images, ge=1, description="images in one V2 request to the image model (400 beyond)")

    request_timeout_s: float = Field(
        30.0, gt=0, description="deadline of one inference request, queueing included (504 beyond; its queued rows are dropped)"
    )
    unready_s: float = Field(
        2.0, ge=0, description="on SIGTERM: seconds of readiness 503 while still serving, before new connections are refused"
    )
    drain_s: float = Field(30.0, ge=0, description="on SIGTERM, then: time allowed for accepted requests to finish")
    strict: bool = Field(False, description="fail start-up when any model cannot be loaded (default: serve the others)")

    api_keys: list[str] = Field(
        default_factory=list, description='keys for inference (JSON list); when any is set, "Authorization: Bearer <key>" is required'
    )
    api_keys_file: Path | None = Field(None, description="file with one inference key per line (e.g. a mounted secret)")
    admin_keys: list[str] = Field(
        default_factory=list, description="keys for model control (/v2/repository); model control is off without one"
    )
    admin_keys_file: Path | None = Field(None, description="file with one admin key per line")
    protect_health: bool = Field(False, description="require a key for health and /metrics too")
    cors_origins: list[str] = Field(default_factory=list, description='origins allowed by CORS (JSON list); default none')
    otel: bool = Field(
        False,
        description="OpenTelemetry traces (needs the otel extra): a span per request with decode, queue, compute and "
        "encode as its children, the trace id as the request id; exported as OTEL_* variables say",
    )
    log_format: Literal["text", "json"] = Field("text", description="log lines as text or as JSON objects (one per line)")

    def input_limits(self) -> InputLimits:
        return InputLimits(
            image_pixels=self.max_image_pixels,
            texts=self.max_texts,
            text_chars=self.max_text_chars,
            series_length=self.max_series_length,
            images=self.max_images,
            decode_bytes=self.max_decode_mb * 1024 * 1024 // self.decode_workers,
        )

