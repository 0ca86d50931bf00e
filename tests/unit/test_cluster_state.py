"""ClusterState's topic mutations, as Kafka's controller applies them: a topic appears with all its
partitions or not at all, and creations, partition additions and deletions run one at a time (found by
the network fuzzer on the file engine, whose logs take a while to open: a group commit saw
``__consumer_offsets`` with no partitions yet, and a topic created while its namesake was being deleted
opened files the deletion then removed; and a topic re-created after its namesake's data removal failed
opened the old records)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from broker.cluster import ClusterState
from broker.config import BrokerConfig
from protocol.errors import ErrorCode, KafkaError
from storage.memory import MemoryEngine
from tests.waiting import wait_until_async

WAIT_S = 10


class HeldEngine(MemoryEngine):
    """A memory engine whose log opens and deletions wait until they are let through."""

    def __init__(self) -> None:
        super().__init__()
        self.opens = asyncio.Event()
        self.deletes = asyncio.Event()
        self.opening = 0
        self.deleting = 0
        self.events: list[str] = []

    async def open_log(self, topic: str, partition: int, config: Any = None) -> Any:
        self.opening += 1
        await self.opens.wait()
        self.opening -= 1
        self.events.append(f"open {topic}-{partition}")
        return await super().open_log(topic, partition, config)

    async def delete_log(self, topic: str, partition: int) -> None:
        self.deleting += 1
        await self.deletes.wait()
        self.deleting -= 1
        await super().delete_log(topic, partition)
        self.events.append(f"deleted {topic}-{partition}")


def cluster_on(engine: MemoryEngine) -> ClusterState:
    config = BrokerConfig.from_settings({"storage.url": "memory://", "listeners": "127.0.0.1:0"})
    return ClusterState(engine, config)


def test_a_topic_is_invisible_until_all_its_partitions_are_open() -> None:
    async def go() -> None:
        engine = HeldEngine()
        cluster = cluster_on(engine)
        creating = asyncio.create_task(cluster.create_topic("t", 3))
        await wait_until_async(lambda: engine.opening == 1, WAIT_S, "the first log open under way")
        assert cluster.get("t") is None and cluster.partition("t", 0) is None and "t" not in cluster.names()
        engine.opens.set()
        topic = await asyncio.wait_for(creating, WAIT_S)
        assert cluster.get("t") is topic and [p.index for p in topic.partitions] == [0, 1, 2]
    asyncio.run(go())


def test_concurrent_partition_additions_run_one_after_the_other() -> None:
    """Two CreatePartitions to 3 at once: the first adds partitions 1 and 2, the second finds them there
    (Kafka's INVALID_PARTITIONS), and no partition is opened twice."""
    async def go() -> None:
        engine = HeldEngine()
        engine.opens.set()
        cluster = cluster_on(engine)
        topic = await cluster.create_topic("t", 1)
        engine.opens.clear()
        first = asyncio.create_task(cluster.create_partitions("t", 3))
        second = asyncio.create_task(cluster.create_partitions("t", 3))
        await wait_until_async(lambda: engine.opening == 1, WAIT_S, "the first addition opening a log")
        assert len(topic.partitions) == 1  # nothing shown before the addition is complete
        engine.opens.set()
        await asyncio.wait_for(first, WAIT_S)
        with pytest.raises(KafkaError) as refused:
            await asyncio.wait_for(second, WAIT_S)
        assert refused.value.code is ErrorCode.INVALID_PARTITIONS
        assert [p.index for p in topic.partitions] == [0, 1, 2]
    asyncio.run(go())


def test_a_name_being_deleted_is_created_again_only_once_its_data_is_gone() -> None:
    async def go() -> None:
        engine = HeldEngine()
        engine.opens.set()
        cluster = cluster_on(engine)
        old = await cluster.create_topic("t", 1)
        await (await engine.open_log("t", 0)).append(_batch())
        deleting = asyncio.create_task(cluster.delete_topic("t"))
        await wait_until_async(lambda: engine.deleting == 1, WAIT_S, "the deletion removing the log")
        engine.events.clear()
        creating = asyncio.create_task(cluster.create_topic("t", 1))
        engine.deletes.set()
        await asyncio.wait_for(deleting, WAIT_S)
        new = await asyncio.wait_for(creating, WAIT_S)
        assert engine.events == ["deleted t-0", "open t-0"]  # the new log only once the old one is gone
        assert new.topic_id != old.topic_id and new.partitions[0].log.log_end_offset == 0
    asyncio.run(go())


def _batch() -> bytearray:
    from protocol.records import Record, build_batch

    return build_batch([Record(0, 1000, b"k", b"v")])


@pytest.mark.parametrize("restart", [False, True], ids=["same-broker", "after-a-restart"])
def test_a_new_topic_never_opens_the_records_of_a_deleted_namesake(tmp_path: Any, restart: bool) -> None:
    """A topic's deletion saves the metadata first, then removes the data: when the removal fails (or a
    crash comes in between) the directory stays behind. A new topic of that name removes it and starts
    empty, as the fuzzer found it did not: a re-created topic came back with 3,003 old records."""
    from storage.file import FaultInjectingFileSystem, FileEngine
    from storage.file.fs import StorageError
    from tests.unit.test_file_engine import batch

    async def go() -> None:
        fs = FaultInjectingFileSystem()
        engine = FileEngine(tmp_path, fs=fs)
        cluster = cluster_on(engine)
        await cluster.create_topic("t", 2)
        for index in (0, 1):
            await cluster.partition("t", index).log.append(batch(3))
        fs.inject("replace", path_contains="-delete", times=None)
        with pytest.raises(StorageError):
            await cluster.delete_topic("t")
        fs.clear_faults()
        assert cluster.get("t") is None
        if restart:
            await engine.close()
            engine = FileEngine(tmp_path)
            cluster = cluster_on(engine)
            await cluster.load()
        await cluster.create_topic("t", 2)
        assert [cluster.partition("t", i).log.log_end_offset for i in (0, 1)] == [0, 0]
        await engine.close()
    asyncio.run(go())


def test_metadata_changes_finish_when_the_requests_asking_for_them_are_cancelled() -> None:
    """A client that goes away cancels its request: the creation, partition addition or deletion it
    started still finishes, as Kafka's controller finishes it (cut short, a creation left open logs for a
    topic that never existed: a fuzz campaign found 345 of them)."""
    async def go() -> None:
        engine = HeldEngine()
        cluster = cluster_on(engine)
        creating = asyncio.create_task(cluster.create_topic("t", 3))
        await wait_until_async(lambda: engine.opening == 1, WAIT_S, "the first log open under way")
        creating.cancel()
        auto = asyncio.create_task(cluster.auto_create("auto"))
        other = asyncio.create_task(cluster.auto_create("auto"))
        await asyncio.sleep(0)  # let the auto-creation start, then its first asker goes away
        auto.cancel()
        engine.opens.set()
        assert (await asyncio.wait_for(other, WAIT_S)).name == "auto"  # not the first asker's cancellation
        await wait_until_async(lambda: cluster.get("t") is not None, WAIT_S, "t created")
        assert len(cluster.get("t").partitions) == 3 and engine.partitions() == [
            ("auto", 0), ("t", 0), ("t", 1), ("t", 2)]

        adding = asyncio.create_task(cluster.create_partitions("t", 5))
        deleting = asyncio.create_task(cluster.delete_topic("auto"))
        await asyncio.sleep(0)
        adding.cancel()
        deleting.cancel()
        await wait_until_async(lambda: engine.deleting == 1 or cluster.get("auto") is None, WAIT_S,
                               "the deletion under way")
        engine.deletes.set()
        await wait_until_async(lambda: cluster.get("auto") is None and len(cluster.get("t").partitions) == 5,
                               WAIT_S, "the deletion and the partition addition done")
        await wait_until_async(lambda: engine.partitions() == [("t", i) for i in range(5)], WAIT_S,
                               "only t's five logs left")
    asyncio.run(go())
