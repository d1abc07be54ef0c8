"""Build the model repository: train, export and verify each model, skipping unchanged ones.

A model's build key is a sha256 over everything that can change its artifacts: its source files,
its hyper-parameters, the versions of the packages its data and weights come from, and the quick
flag. Finished builds are kept under the cache folder by that key, so an unchanged model is copied,
not retrained, even into a fresh checkout.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from service.manifest import MODEL_FILE, BuildRecord, ModelManifest, sha256_of

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Files whose contents shape every model's artifacts. The manifest schema is not among them: a
# build whose manifest no longer validates is rebuilt anyway (see is_complete).
COMMON_SOURCES = ("models/training.py",)
BUILD_PACKAGES = ("torch", "onnx", "onnxruntime", "numpy")


def default_cache_dir() -> Path:
    root = os.environ.get("ORTSERVE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ortserve"
    )
    return Path(root)


@dataclass(frozen=True)
class BuildContext:
    out_dir: Path  # write model.onnx and any extra files here
    quick: bool
    hyperparameters: dict[str, Any]
    input_hash: str
    cache_dir: Path  # for downloaded data (e.g. the VADER source distribution)

    @property
    def model_path(self) -> Path:
        return self.out_dir / MODEL_FILE

    def build_record(self) -> BuildRecord:
        return BuildRecord(
            input_hash=self.input_hash,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            quick=self.quick,
            versions={"python": platform.python_version(), **package_versions(BUILD_PACKAGES)},
        )


@dataclass(frozen=True)
class ModelBuilder:
    name: str
    version: str
    sources: tuple[str, ...]  # repo-relative files that define this model
    data_packages: tuple[str, ...]  # distributions its data and weights come from
    hyperparameters: Callable[[bool], dict[str, Any]]  # quick -> hyper-parameters
    build: Callable[[BuildContext], ModelManifest]

    def input_hash(self, quick: bool) -> str:
        digest = hashlib.sha256()
        key = {
            "name": self.name,
            "version": self.version,
            "quick": quick,
            "hyperparameters": self.hyperparameters(quick),
            "packages": package_versions(self.data_packages + BUILD_PACKAGES),
        }
        digest.update(json.dumps(key, sort_keys=True).encode())
        for source in sorted(set(COMMON_SOURCES + self.sources)):
            digest.update(source.encode())
            digest.update((PROJECT_ROOT / source).read_bytes())
        return digest.hexdigest()


def package_versions(names: tuple[str, ...]) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def is_complete(version_dir: Path, input_hash: str) -> bool:
    """A finished build: manifest readable, hash matches, model.onnx matches its sha256."""
    try:
        manifest = ModelManifest.load(version_dir)
    except (OSError, ValueError):
        return False
    model = version_dir / manifest.model_file
    return manifest.build.input_hash == input_hash and model.is_file() and sha256_of(model) == manifest.sha256


def _replace_dir(source: Path, target: Path) -> None:
    staging = target.with_name(target.name + ".incoming")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def build_model(builder: ModelBuilder, repository: Path, cache_dir: Path, quick: bool, force: bool) -> str:
    """Make ``repository/<name>/<version>`` current; return what was done."""
    input_hash = builder.input_hash(quick)
    target = repository / builder.name / builder.version
    if not force and is_complete(target, input_hash):
        return "up to date"
    cached = cache_dir / "models" / builder.name / input_hash
    if not force and is_complete(cached, input_hash):
        target.parent.mkdir(parents=True, exist_ok=True)
        _replace_dir(cached, target)
        return "restored from cache"

    work = cached.with_name(f"{input_hash}.partial-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    context = BuildContext(
        out_dir=work,
        quick=quick,
        hyperparameters=builder.hyperparameters(quick),
        input_hash=input_hash,
        cache_dir=cache_dir,
    )
    started = time.perf_counter()
    try:
        manifest = builder.build(context)
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
    return f"built in {time.perf_counter() - started:.0f} s"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
