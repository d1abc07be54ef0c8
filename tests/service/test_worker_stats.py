"""Per-model counters across worker processes: each worker publishes its own, and statistics are the sum of
its live counters and the others' last published ones. Two dataplanes on one repository stand for two
workers here; tests/api/test_workers.py asks a server of two processes."""

from __future__ import annotations

import asyncio

import pytest

from service.dataplane import ModelStats
from service.tasks.image import ImageRequest
from service.worker_stats import WorkerStats
from tests.service.test_dataplane import Served
from tests.tiny_models import DIGIT, tiny_digit_model


@pytest.fixture
def repository(tmp_path):
    root = tmp_path / "repository"
    tiny_digit_model(root / "tiny-digits" / "1")
    return root


def test_counters_survive_json_and_add_up():
    one = ModelStats(requests=3, rows=5, batches=2, last_inference=10.0, success_s=0.5)
    one.batch_sizes.update({1: 1, 4: 1})
    one.batch_compute_s.update({1: 0.01, 4: 0.03})
    two = ModelStats(requests=1, rows=1, batches=1, last_inference=20.0, errors=1)
    two.batch_sizes.update({1: 1})
    two.batch_compute_s.update({1: 0.02})
    assert ModelStats.from_dict(one.as_dict()) == one
    total = one.plus(ModelStats.from_dict(two.as_dict()))
    assert (total.requests, total.rows, total.batches, total.errors) == (4, 6, 3, 1)
    assert total.batch_sizes == {1: 2, 4: 1} and abs(total.batch_compute_s[1] - 0.03) < 1e-12
    assert total.last_inference == 20.0 and total.success_s == 0.5
    assert one.requests == 3, "adding up leaves both sides as they were"


def test_a_worker_reads_the_others_published_counters_and_not_its_own_file(tmp_path):
    folder = tmp_path / "stats"
    folder.mkdir()
    first, second = WorkerStats(folder), WorkerStats(folder)
    first.publish({"m/1": ModelStats(requests=2).as_dict()})
    second.publish({"m/1": ModelStats(requests=5).as_dict()})
    assert [c["m/1"]["requests"] for c in first.others()] == [5]
    assert [c["m/1"]["requests"] for c in second.others()] == [2]
    assert not list(folder.glob("*.tmp")), "a publication replaces the file whole"


def test_two_workers_each_answer_the_whole_servers_statistics(repository, tmp_path):
    folder = tmp_path / "stats"
    folder.mkdir()

    async def scenario():
        workers = [Served(repository), Served(repository)]
        for served in workers:
            served.dataplane.worker_stats = WorkerStats(folder)
        entry_of = [served.registry.get("tiny-digits") for served in workers]
        for index, count in ((0, 3), (1, 2)):
            for _ in range(count):
                await workers[index].dataplane.infer(entry_of[index], ImageRequest(data=DIGIT, top_k=1))
        # The first worker has not published yet: the second sees only its own two.
        assert workers[1].dataplane.statistics(entry_of[1]).requests == 2
        for served in workers:
            served.dataplane.worker_stats.publish(served.dataplane.counters())
        for served, entry in zip(workers, entry_of):
            stats = served.dataplane.statistics(entry)
            assert (stats.requests, stats.succeeded, stats.rows) == (5, 5, 5)
            assert served.dataplane.summary(entry)["requests"] == 5
        assert workers[0].dataplane.stats[(entry_of[0].name, entry_of[0].version)].requests == 3, "own counters untouched"
        for served in workers:
            await served.close()

    asyncio.run(scenario())


def test_publishing_writes_once_more_when_stopped(tmp_path):
    folder = tmp_path / "stats"
    folder.mkdir()
    stats, reader = WorkerStats(folder), WorkerStats(folder)
    counts = {"m/1": ModelStats(requests=1).as_dict()}

    async def scenario():
        task = asyncio.create_task(stats.publishing(lambda: counts))
        await asyncio.sleep(0)
        counts["m/1"] = ModelStats(requests=7).as_dict()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert [c["m/1"]["requests"] for c in reader.others()] == [7]
