"""broker.internal_topic.InternalTopic: creation of an internal topic shared by concurrent first writers."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from broker.internal_topic import InternalTopic
from protocol.errors import ErrorCode, KafkaError


class FailingCluster:
    """A cluster whose topic creation fails once released, as a disk out of descriptors made it fail."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    def get(self, name: str) -> Any:
        return None

    async def create_topic(self, name: str, partitions: int, replication: int, configs: dict[str, Any]) -> Any:
        await self.release.wait()
        raise KafkaError(ErrorCode.KAFKA_STORAGE_ERROR, "cannot write cluster metadata: Too many open files")


def test_a_failed_creation_whose_writers_all_went_away_is_not_reported_as_never_retrieved() -> None:
    """Seen in a fuzz campaign: the writers waiting for __consumer_offsets were cancelled (their clients
    closed), the creation then failed, and asyncio logged 'Task exception was never retrieved'."""
    unretrieved: list[dict[str, Any]] = []

    async def go() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: unretrieved.append(context))
        cluster = FailingCluster()
        topic = InternalTopic(cluster, "__consumer_offsets", lambda: 50, dict)
        writers = [asyncio.create_task(topic.ensure()) for _ in range(2)]
        await asyncio.sleep(0)
        for writer in writers:
            writer.cancel()
        await asyncio.gather(*writers, return_exceptions=True)
        cluster.release.set()
        for _ in range(3):
            await asyncio.sleep(0)  # the creation fails and its task finishes

    asyncio.run(go())
    gc.collect()  # asyncio reports an unretrieved exception when the task is collected (tracebacks hold it)
    assert [context["message"] for context in unretrieved] == []


def test_a_writer_still_waiting_gets_the_failure() -> None:
    async def go() -> None:
        cluster = FailingCluster()
        topic = InternalTopic(cluster, "__transaction_state", lambda: 50, dict)
        writer = asyncio.create_task(topic.ensure())
        await asyncio.sleep(0)
        cluster.release.set()
        try:
            await writer
        except KafkaError as exc:
            return exc.code
        raise AssertionError("the creation's failure did not reach its writer")

    assert asyncio.run(go()) is ErrorCode.KAFKA_STORAGE_ERROR
