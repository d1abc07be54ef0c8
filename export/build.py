"""Build the model repository in two cached stages, so that only what changed is redone.

Stage 1, training: a model's weights (a PyTorch state dict) and a JSON record, cached under
``<cache>/weights/<name>/<training key>``. The training key covers exactly what shapes the weights:
the normalised code of the module that trains the model and of every project module it imports (found
by following its imports, not from a hand-kept list), the hyper-parameters, the versions of the data
and weight packages, Python, torch and numpy.

Stage 2, export: ONNX export, validation, variants, held-out metrics and the manifest, cached as a
finished version folder under ``<cache>/models/<name>/<export key>``. The export key is the training
key plus the normalised code of the builder module and everything it imports (the export spec, the
manifest schema, the serving tasks it scores through) and the onnx and onnxruntime versions. Changing
the opset or adding a variant re-exports from cached weights in seconds; it never retrains.

Code is normalised as its syntax tree without docstrings, comments or unused imports, so a comment,
a docstring or a tidy-up of imports rebuilds nothing.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from service.manifest import MODEL_FILE, BuildRecord, ModelManifest, sha256_of

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROJECT_PACKAGES = ("export", "models", "service")
TRAINING_PACKAGES = ("torch", "numpy")
EXPORT_PACKAGES = ("onnx", "onnxruntime")
# onnxruntime's module comes from one of these distributions; either keys as "onnxruntime".
ONNXRUNTIME_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")
WEIGHTS_FILE = "weights.pt"
RECORD_FILE = "training.json"


def default_cache_dir() -> Path:
    root = os.environ.get("ORTSERVE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ortserve"
    )
    return Path(root)


# --- keys ---------------------------------------------------------------------------------------


def _module_path(module: str, root: Path = PROJECT_ROOT) -> Path | None:
    """The project file of a dotted module name, or None for anything outside the project."""
    if module.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _strip_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]


def _used_names(tree: ast.AST) -> set[str]:
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    # Names used only inside string annotations (from __future__ import annotations) still count.
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
            names.add(node.value)
    return names


@dataclass(frozen=True)
class NormalisedModule:
    code: str  # the syntax tree without docstrings and import statements
    imports: tuple[tuple[str, str], ...]  # (bound name, what it refers to) for the imports the code uses
    project_imports: tuple[str, ...]  # project modules to follow


@lru_cache(maxsize=None)
def normalise_module(module: str, root: Path = PROJECT_ROOT) -> NormalisedModule:
    path = _module_path(module, root)
    if path is None:
        raise ValueError(f"{module} is not a module of this project")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    _strip_docstrings(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    used = _used_names(tree)
    imports: list[tuple[str, str]] = []
    project: set[str] = set()

    def resolve(node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        parts = package.split(".")
        base = ".".join(parts[: len(parts) - node.level + 1])
        return f"{base}.{node.module}" if node.module else base

    kept_body = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                bound = alias.asname or alias.name.split(".")[0]
                if bound in used:
                    imports.append((bound, alias.name))
                    if _module_path(alias.name, root):
                        project.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            source = resolve(node)
            if source == "__future__":
                continue
            for alias in node.names:
                bound = alias.asname or alias.name
                if bound in used:
                    imports.append((bound, f"{source}.{alias.name}"))
                    submodule = f"{source}.{alias.name}"
                    if _module_path(submodule, root):
                        project.add(submodule)
                    elif _module_path(source, root):
                        project.add(source)
        else:
            kept_body.append(node)
    tree.body = kept_body
    # Imports inside functions (heavy imports kept lazy) are followed too.
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and _module_path(node.module, root):
            project.add(node.module)
        elif isinstance(node, ast.Import):
            project.update(a.name for a in node.names if _module_path(a.name, root))
    return NormalisedModule(
        code=ast.dump(tree, annotate_fields=False, include_attributes=False),
        imports=tuple(sorted(imports)),
        project_imports=tuple(sorted(project)),
    )


def module_closure(start: str, root: Path = PROJECT_ROOT) -> list[str]:
    """The project modules `start` depends on through the imports its code uses, itself included."""
    seen: set[str] = set()
    pending = [start]
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        pending.extend(normalise_module(module, root).project_imports)
    return sorted(seen)


def code_fingerprint(start: str, root: Path = PROJECT_ROOT) -> dict[str, str]:
    """module -> sha256 of its normalised code and used imports, over the closure of `start`."""
    fingerprint = {}
    for module in module_closure(start, root):
        normalised = normalise_module(module, root)
        payload = json.dumps([normalised.code, normalised.imports])
        fingerprint[module] = hashlib.sha256(payload.encode()).hexdigest()
    return fingerprint


def package_versions(names: tuple[str, ...]) -> dict[str, str]:
    versions = {}
    for name in names:
        distributions = ONNXRUNTIME_DISTRIBUTIONS if name == "onnxruntime" else (name,)
        versions[name] = "not installed"
        for distribution in distributions:
            try:
                versions[name] = metadata.version(distribution)
                break
            except metadata.PackageNotFoundError:
                continue
    return versions


def _digest(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# --- builders -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingContext:
    quick: bool
    hyperparameters: dict[str, Any]
    cache_dir: Path  # for downloaded data (e.g. the VADER source distribution)


@dataclass(frozen=True)
class BuildContext:
    out_dir: Path  # write model.onnx and any extra files here
    quick: bool
    hyperparameters: dict[str, Any]
    training_key: str
    input_hash: str  # the export key
    cache_dir: Path
    training_record: dict[str, Any]

    @property
    def model_path(self) -> Path:
        return self.out_dir / MODEL_FILE

    def manifest_fields(self, spec, variants, parity) -> dict[str, Any]:
        """What every builder's manifest says alike: the exported file and its tensors, the parity with
        PyTorch, the variants and the one served (an export.variants.VariantsResult), and the build."""
        return {
            "sha256": sha256_of(self.model_path),
            "opset": spec.opset,
            "inputs": list(spec.inputs),
            "outputs": list(spec.outputs),
            "parity": parity,
            "variants": variants.records,
            "served_variant": variants.served,
            "guard": variants.guard,
            "rejected_variants": variants.rejected,
            "build": self.build_record(),
        }

    def build_record(self) -> BuildRecord:
        return BuildRecord(
            input_hash=self.input_hash,
            training_key=self.training_key,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            quick=self.quick,
            versions={"python": platform.python_version(), **package_versions(TRAINING_PACKAGES + EXPORT_PACKAGES)},
        )


@dataclass(frozen=True)
class ModelBuilder:
    name: str
    version: str
    train: Callable[[TrainingContext], Any]  # -> models.training.Trained; defined in a `models` module
    architecture: Callable[[dict[str, Any]], Any]  # hyper-parameters -> an untrained module of the same shape
    export: Callable[[BuildContext, Any], ModelManifest]  # (context, trained module) -> manifest
    data_packages: tuple[str, ...]  # distributions its data and weights come from
    hyperparameters: Callable[[bool], dict[str, Any]]  # quick -> hyper-parameters
    evaluation_packages: tuple[str, ...] = ()  # used only to score the export (baselines), keyed there

    def training_key(self, quick: bool, root: Path = PROJECT_ROOT) -> str:
        return _digest({
            "name": self.name,
            "quick": quick,
            "hyperparameters": self.hyperparameters(quick),
            "packages": package_versions(self.data_packages + TRAINING_PACKAGES),
            "python": platform.python_version(),
            "code": code_fingerprint(self.train.__module__, root),
        })

    def export_key(self, quick: bool, training_key: str | None = None, root: Path = PROJECT_ROOT) -> str:
        return _digest({
            "training_key": training_key or self.training_key(quick, root),
            "version": self.version,
            "packages": package_versions(EXPORT_PACKAGES + self.evaluation_packages),
            "code": code_fingerprint(self.export.__module__, root),
        })


# --- the two stages -----------------------------------------------------------------------------


class TargetMissed(RuntimeError):
    """A full build whose model or served variant misses a target its manifest declares: nothing is written."""

    def __init__(self, name: str, missed: list[str]):
        self.missed = missed
        super().__init__(f"{name}: held-out targets missed:\n  - " + "\n  - ".join(missed))


def is_complete(version_dir: Path, input_hash: str) -> bool:
    """A finished build: manifest readable, key matches, every model file matches its sha256."""
    try:
        manifest = ModelManifest.load(version_dir)
    except (OSError, ValueError):
        return False
    files = [(manifest.model_file, manifest.sha256)] + [(v.model_file, v.sha256) for v in manifest.variants]
    return manifest.build.input_hash == input_hash and all(
        (version_dir / name).is_file() and sha256_of(version_dir / name) == digest for name, digest in files
    )


def _replace_dir(source: Path, target: Path) -> None:
    staging = target.with_name(target.name + ".incoming")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def trained_weights(builder: ModelBuilder, cache_dir: Path, quick: bool, force: bool) -> tuple[Any, dict, str, str]:
    """Stage 1: (module with trained weights, training record, training key, what was done)."""
    import torch

    hp = builder.hyperparameters(quick)
    key = builder.training_key(quick)
    folder = cache_dir / "weights" / builder.name / key
    if not force and (folder / WEIGHTS_FILE).is_file() and (folder / RECORD_FILE).is_file():
        module = builder.architecture(hp)
        module.load_state_dict(torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True))
        return module.eval(), json.loads((folder / RECORD_FILE).read_text()), key, "weights from cache"

    started = time.perf_counter()
    trained = builder.train(TrainingContext(quick=quick, hyperparameters=hp, cache_dir=cache_dir))
    record = {**trained.record, "training_s": round(time.perf_counter() - started, 1)}
    work = folder.with_name(f"{key}.partial-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    torch.save(trained.module.state_dict(), work / WEIGHTS_FILE)
    (work / RECORD_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    work.rename(folder)
    return trained.module.eval(), record, key, f"trained in {record['training_s']:.0f} s"


def build_model(builder: ModelBuilder, repository: Path, cache_dir: Path, quick: bool, force: bool) -> str:
    """Make ``repository/<name>/<version>`` current; return what was done."""
    training_key = builder.training_key(quick)
    input_hash = builder.export_key(quick, training_key)
    target = repository / builder.name / builder.version
    if not force and is_complete(target, input_hash):
        return "up to date"
    cached = cache_dir / "models" / builder.name / input_hash
    if not force and is_complete(cached, input_hash):
        target.parent.mkdir(parents=True, exist_ok=True)
        _replace_dir(cached, target)
        return "restored from cache"

    module, record, training_key, trained = trained_weights(builder, cache_dir, quick, force)
    log(f"{builder.name}: {trained}; exporting")
    work = cached.with_name(f"{input_hash}.partial-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    context = BuildContext(
        out_dir=work,
        quick=quick,
        hyperparameters=builder.hyperparameters(quick),
        training_key=training_key,
        input_hash=input_hash,
        cache_dir=cache_dir,
        training_record=record,
    )
    started = time.perf_counter()
    try:
        manifest = builder.export(context, module)
        if not quick and (missed := manifest.missed_targets()):
            raise TargetMissed(builder.name, missed)
        manifest.write(work)
        if not is_complete(work, input_hash):
            raise RuntimeError(f"{builder.name}: the build did not produce a consistent model directory")
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    shutil.rmtree(cached, ignore_errors=True)
    work.rename(cached)
    target.parent.mkdir(parents=True, exist_ok=True)
    _replace_dir(cached, target)
    return f"{trained}, exported in {time.perf_counter() - started:.0f} s"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
