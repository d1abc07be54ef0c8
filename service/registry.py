"""The model registry: finds model versions in the repository, verifies and loads them, tracks readiness."""

from __future__ import annotations

import asyncio
import importlib
import logging
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from service.errors import ModelLoadFailed, ModelNotFound, ModelNotReady
from service.manifest import MANIFEST_FILE, ModelManifest, sha256_of
from service.runtime import CPU, OnnxModel, ProviderPlan, session_options
from service.batch_policy import BatchPolicy
from service.control_log import ControlLog
from service.settings import Settings
from service.tasks.base import Task

log = logging.getLogger("service.registry")

State = Literal["loading", "ready", "failed", "unloaded"]


class RepositoryError(RuntimeError):
    """The repository holds nothing that can be served."""


def task_class(kind: str) -> type[Task]:
    """The Task subclass serving a manifest's task kind: every module of service.tasks is imported once, and
    each Task subclass registers its kind (service/tasks/base.py), so a new task is a new module, nothing else."""
    found = Task.by_kind().get(kind)
    if found is None:
        import service.tasks

        for module in pkgutil.iter_modules(service.tasks.__path__):
            importlib.import_module(f"service.tasks.{module.name}")
        found = Task.by_kind().get(kind)
    if found is None:
        raise ValueError(f"no task serves {kind!r} (known: {', '.join(sorted(Task.by_kind())) or 'none'})")
    return found


@dataclass
class ModelEntry:
    name: str
    version: str
    version_dir: Path
    manifest: ModelManifest | None = None
    state: State = "loading"
    error: str | None = None
    model: OnnxModel | None = None
    task: Task | None = None
    variant: str | None = None  # which model file is served (see ModelManifest.variants)
    policy: BatchPolicy | None = None  # batching as served
    solo_model: OnnxModel | None = None  # the same file on every core, for a lone row (variants that run rows one at a time)

    @property
    def ready(self) -> bool:
        return self.state == "ready"


class ModelRegistry:
    def __init__(self, settings: Settings, plan: ProviderPlan, cpus: int):
        self.settings = settings
        self.plan = plan
        self.cpus = cpus
        self.entries: dict[tuple[str, str], ModelEntry] = {}
        # Told of versions that stop serving (replaced or unloaded), e.g. to let their batchers finish.
        self.retire_listeners: list[Callable[[list[ModelEntry]], None]] = []
        # Told whenever what serves changed (loading ended, a load or unload), e.g. to update readiness gauges.
        self.change_listeners: list[Callable[[], None]] = []
        self._control: asyncio.Lock | None = None  # one model-control operation at a time
        # With worker processes, model control goes through a log every worker applies (service/control_log.py).
        self.control_log = ControlLog.from_environment()
        self.discover()

    def discover(self) -> None:
        root = self.settings.model_repository
        if not root.is_dir():
            raise RepositoryError(f"model repository {root} does not exist: build it with `make models`")
        for model_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            for entry in self.scan(model_dir.name):
                self.entries[(entry.name, entry.version)] = entry
        if not self.entries:
            raise RepositoryError(f"model repository {root} has no <model>/<version>/{MANIFEST_FILE}: run `make models`")

    def scan(self, name: str) -> list[ModelEntry]:
        """Fresh entries for the versions of one model found on disk (manifests read, nothing loaded)."""
        found = []
        for manifest in sorted((self.settings.model_repository / name).glob(f"*/{MANIFEST_FILE}")):
            version_dir = manifest.parent
            if not version_dir.name.isdigit():
                continue
            entry = ModelEntry(name=name, version=version_dir.name, version_dir=version_dir)
            try:
                entry.manifest = ModelManifest.load(version_dir)
                if (entry.manifest.name, entry.manifest.version) != (name, entry.version):
                    raise ValueError(f"manifest names {entry.manifest.name}/{entry.manifest.version}")
            except (OSError, ValueError) as exc:
                self._fail(entry, exc)
            found.append(entry)
        return found

    # --- model control: load (or reload) and unload one model while the others serve ------------------

    async def load_model(self, name: str) -> None:
        """Load, or reload, a model: every version on disk is verified, opened and warmed up (in a thread)
        beside what serves now, then swapped in at once; requests in flight finish on the old sessions.
        If any version fails, nothing changes (ModelLoadFailed says why)."""
        await self._control_action("load", name)

    async def unload_model(self, name: str) -> None:
        """Stop serving a model; queued requests finish first, new ones get 503 until it is loaded again."""
        await self._control_action("unload", name)

    async def _control_action(self, action: str, name: str) -> None:
        if self.control_log is None:
            return await self.apply(action, name)
        if action == "load" and not (self.settings.model_repository / name).is_dir():
            raise ModelNotFound(f"the repository has no model named {name!r}")  # not worth every worker's try
        if action == "unload" and not self.versions(name):
            raise ModelNotFound(f"no model named {name!r}")
        await self.control_log.submit(action, name)

    async def apply(self, action: str, name: str) -> None:
        """One model-control action in this process."""
        async with self._control_lock():
            if action == "load":
                fresh = await asyncio.to_thread(self.prepare, name)
                self._retire(self.install(name, fresh))
            elif action == "unload":
                self._retire(self.unload(name))
            else:
                raise ValueError(f"unknown model-control action {action!r}")
        self.changed()

    def changed(self) -> None:
        for listener in self.change_listeners:
            listener()

    def _control_lock(self) -> asyncio.Lock:
        if self._control is None:
            self._control = asyncio.Lock()
        return self._control

    def _retire(self, entries: list[ModelEntry]) -> None:
        for listener in self.retire_listeners:
            listener(entries)

    def prepare(self, name: str) -> list[ModelEntry]:
        """Read, verify, open and warm up every version of a model on disk, beside what serves now.
        Blocking (call it in a thread); raises ModelLoadFailed and changes nothing when a version fails."""
        fresh = self.scan(name)
        if not fresh:
            raise ModelNotFound(f"the repository has no model named {name!r}")
        for entry in fresh:
            self.load(entry)
        failed = [f"{e.name}/{e.version}: {e.error}" for e in fresh if not e.ready]
        if failed:
            raise ModelLoadFailed("; ".join(failed))
        return fresh

    def install(self, name: str, fresh: list[ModelEntry]) -> list[ModelEntry]:
        """Swap a model's versions for freshly prepared ones; returns the replaced entries (to retire)."""
        old = [e for (n, _), e in self.entries.items() if n == name]
        entries = {key: e for key, e in self.entries.items() if key[0] != name}
        entries.update({(e.name, e.version): e for e in fresh})
        self.entries = entries  # one assignment: a reader sees the old set or the new one
        return old

    def unload(self, name: str) -> list[ModelEntry]:
        """Stop serving a model (its versions stay listed as unloaded); returns the entries to retire."""
        versions = self.versions(name)
        if not versions:
            raise ModelNotFound(f"no model named {name!r}")
        unloaded = [ModelEntry(name=e.name, version=e.version, version_dir=e.version_dir, manifest=e.manifest,
                               state="unloaded") for e in versions]
        return self.install(name, unloaded)

    def load_all(self) -> None:
        for entry in self.entries.values():
            self.load(entry)

    def load(self, entry: ModelEntry) -> None:
        """Verify, open and warm up one version; a failure marks that version failed, not the service."""
        if entry.state == "failed":
            return
        manifest = entry.manifest
        try:
            variant = self.settings.variants.get(entry.name, manifest.served_variant)
            model_file, expected = manifest.variant(variant)
            model_path = entry.version_dir / model_file
            digest = sha256_of(model_path)
            if digest != expected:
                raise ValueError(f"{model_path} sha256 {digest[:12]}... does not match the manifest's {expected[:12]}...")
            policy, one_at_a_time, threads = self.layout(entry.name, manifest, variant)
            options = session_options(self.settings, threads)
            model = OnnxModel(model_path, manifest.inputs, self.plan, options)
            max_length = getattr(manifest.preprocessing, "max_length", 0)
            # A lone row of a variant that runs its rows one at a time on an idle machine runs on a session with every core: the
            # single-threaded ones are for side-by-side runs under load.
            solo = None
            if threads < self.cpus and one_at_a_time:
                solo = OnnxModel(model_path, manifest.inputs, self.plan, session_options(self.settings, self.cpus))
                solo.warm_up(1, max_length)
            task = task_class(manifest.task)(
                manifest.preprocessing, manifest.labels, entry.version_dir, limits=self.settings.input_limits()
            )
            # A graph that loops over its rows runs each at batch 1 whatever the batch: batch 1 warms every
            # shape its kernels will see.
            model.warm_up(1 if one_at_a_time else policy.max_batch_size, max_length)
        except Exception as exc:  # one bad model must not take the others down
            self._fail(entry, exc)
            return
        entry.model, entry.task, entry.variant, entry.policy = model, task, variant, policy
        entry.solo_model = solo
        entry.state, entry.error = "ready", None
        log.info("model %s/%s (%s) ready on %s", entry.name, entry.version, variant, ", ".join(model.providers))

    def layout(self, name: str, manifest: ModelManifest, variant: str) -> tuple[BatchPolicy, bool, int]:
        """How a model variant runs: its batching, whether its graph runs rows one at a time, and the
        intra-op threads.

        A variant whose graph loops over its rows (its quantisation is not batch-invariant) still batches:
        one session call for many rows. On CPU such runs are single-threaded and run side by side, one per
        core (the compute budget allows it): intra-op threads on a one-row run spend their time
        synchronising (bench/README.md)."""
        policy = self.settings.batching.get(name) or manifest.serving.batching
        record = manifest.variant_record(variant)
        one_at_a_time = bool(record and record.rows_one_at_a_time)
        threads = self.settings.intra_op_threads or self.cpus
        if one_at_a_time and self.plan.providers[0][0] == CPU:
            threads = self.settings.intra_op_threads or 1
        return policy, one_at_a_time, threads

    @staticmethod
    def _fail(entry: ModelEntry, exc: Exception) -> None:
        entry.state, entry.error = "failed", f"{type(exc).__name__}: {exc}"
        log.error("model %s/%s failed to load: %s", entry.name, entry.version, entry.error)

    def versions(self, name: str) -> list[ModelEntry]:
        found = [e for (n, _), e in self.entries.items() if n == name]
        return sorted(found, key=lambda e: int(e.version))

    def get(self, name: str, version: str | None = None) -> ModelEntry:
        """The requested version, or the newest ready one; 404 when unknown, 503 when not ready."""
        versions = self.versions(name)
        if not versions:
            raise ModelNotFound(f"no model named {name!r}")
        if version is not None:
            entry = self.entries.get((name, version))
            if entry is None:
                raise ModelNotFound(f"model {name!r} has no version {version!r}")
        else:
            ready = [e for e in versions if e.ready]
            entry = ready[-1] if ready else versions[-1]
        if not entry.ready:
            detail = f": {entry.error}" if entry.error else f" ({entry.state})"
            raise ModelNotReady(f"model {name}/{entry.version} is not ready{detail}")
        return entry

    @property
    def loading(self) -> bool:
        return any(e.state == "loading" for e in self.entries.values())

    @property
    def status(self) -> str:
        states = {e.state for e in self.entries.values()}
        return "loading" if "loading" in states else "degraded" if "failed" in states else "ok"
