"""The model registry on a repository of tiny models built here: discovery, verification, readiness, which
version serves, and model control (load, reload, unload) with its retire notices."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest

from service.errors import ModelLoadFailed, ModelNotFound, ModelNotReady
from service.registry import ModelRegistry, RepositoryError, task_class
from service.runtime import ProviderPlan
from service.settings import Settings
from service.tasks.base import Task
from service.tasks.image import ImageTask
from tests.tiny_models import tiny_digit_model

CPU = ProviderPlan([("CPUExecutionProvider", {})], "test")


def registry_of(repository, **settings) -> ModelRegistry:
    return ModelRegistry(Settings(model_repository=repository, **settings), CPU, cpus=1)


@pytest.fixture
def repository(tmp_path):
    root = tmp_path / "repository"
    tiny_digit_model(root / "tiny-digits" / "1")
    tiny_digit_model(root / "other-digits" / "1", name="other-digits", route=None, seed=8)
    return root


def test_discovery_reads_manifests_and_loading_makes_versions_ready(repository):
    registry = registry_of(repository)
    assert {key: entry.state for key, entry in registry.entries.items()} == {
        ("other-digits", "1"): "loading", ("tiny-digits", "1"): "loading"}
    registry.load_all()
    entry = registry.get("tiny-digits")
    assert entry.ready and isinstance(entry.task, ImageTask) and entry.model.providers == ["CPUExecutionProvider"]
    assert entry.policy.max_batch_size == 4  # the manifest's serving.batching
    assert registry.status == "ok" and not registry.loading


def test_the_settings_batching_overrides_the_manifests(repository):
    registry = registry_of(repository, batching={"tiny-digits": {"max_batch_size": 9}})
    registry.load_all()
    assert registry.get("tiny-digits").policy.max_batch_size == 9 and registry.get("other-digits").policy.max_batch_size == 4


def test_a_file_that_does_not_match_its_manifest_fails_alone(repository):
    with (repository / "tiny-digits" / "1" / "model.onnx").open("ab") as handle:
        handle.write(b"tampered")
    registry = registry_of(repository)
    registry.load_all()
    failed = registry.entries[("tiny-digits", "1")]
    assert failed.state == "failed" and "sha256" in failed.error
    assert registry.get("other-digits").ready and registry.status == "degraded"
    with pytest.raises(ModelNotReady, match="sha256"):
        registry.get("tiny-digits")


def test_a_manifest_that_names_another_version_fails(repository):
    shutil.copytree(repository / "tiny-digits" / "1", repository / "tiny-digits" / "2")
    registry = registry_of(repository)
    assert "manifest names tiny-digits/1" in registry.entries[("tiny-digits", "2")].error


def test_get_serves_the_newest_ready_version_unless_one_is_asked_for(repository):
    tiny_digit_model(repository / "tiny-digits" / "2", version="2", seed=9)
    registry = registry_of(repository)
    registry.load_all()
    assert registry.get("tiny-digits").version == "2" and registry.get("tiny-digits", "1").version == "1"
    with pytest.raises(ModelNotFound):
        registry.get("tiny-digits", "3")
    with pytest.raises(ModelNotFound):
        registry.get("no-such-model")


def test_an_empty_repository_stops_start_up(tmp_path):
    with pytest.raises(RepositoryError, match="make models"):
        registry_of(tmp_path)


def test_reload_swaps_in_the_new_versions_and_tells_who_listens(repository):
    async def scenario():
        registry = registry_of(repository)
        registry.load_all()
        retired = []
        registry.retire_listeners.append(retired.extend)
        old = registry.get("tiny-digits")
        tiny_digit_model(repository / "tiny-digits" / "2", version="2", seed=9)
        await registry.load_model("tiny-digits")
        assert registry.get("tiny-digits").version == "2" and registry.get("tiny-digits", "1") is not old
        assert retired == [old]
        # A version that cannot be loaded: nothing changes and the answer says why.
        tiny_digit_model(repository / "tiny-digits" / "3", version="3")
        (repository / "tiny-digits" / "3" / "model.onnx").write_bytes(b"not onnx")
        serving = dict(registry.entries)
        with pytest.raises(ModelLoadFailed, match="tiny-digits/3"):
            await registry.load_model("tiny-digits")
        assert registry.entries == serving and len(retired) == 1
        with pytest.raises(ModelNotFound):
            await registry.load_model("no-such-model")

    asyncio.run(scenario())


def test_unload_keeps_the_versions_listed_and_answers_not_ready(repository):
    async def scenario():
        registry = registry_of(repository)
        registry.load_all()
        retired = []
        registry.retire_listeners.append(retired.extend)
        await registry.unload_model("tiny-digits")
        assert registry.entries[("tiny-digits", "1")].state == "unloaded" and len(retired) == 1
        with pytest.raises(ModelNotReady, match="unloaded"):
            registry.get("tiny-digits")
        await registry.load_model("tiny-digits")
        assert registry.get("tiny-digits").ready

    asyncio.run(scenario())


def test_tasks_are_found_by_kind_and_an_unknown_kind_fails_its_model(repository):
    assert task_class("image-classification") is ImageTask
    with pytest.raises(ValueError, match="no task serves 'speech-to-text'"):
        task_class("speech-to-text")  # after every task module was looked through
    assert {"image-classification", "sequence-forecast", "text-sentiment"} <= set(Task.by_kind())
    manifest = json.loads((repository / "other-digits" / "1" / "manifest.json").read_text())
    manifest["task"] = "speech-to-text"
    (repository / "other-digits" / "1" / "manifest.json").write_text(json.dumps(manifest))
    registry = registry_of(repository)
    registry.load_all()
    assert "no task serves 'speech-to-text'" in registry.entries[("other-digits", "1")].error
    assert registry.get("tiny-digits").ready
