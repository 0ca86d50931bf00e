"""What the group and transaction coordinators share about the internal topic each keeps its state in
(``__consumer_offsets``, ``__transaction_state``): creating it on the first write, the partition a key
lives in, reading a partition back at start-up, and the background tasks of a coordinator shell.

Kafka behaviours: the topic is created on first use with the coordinator's partition count and
``cleanup.policy=compact`` (an existing topic keeps its partition count); a key lives in partition
``Utils.abs(key.hashCode()) % partitions``; the load reads each partition from its log start in
chunks of ``*.load.buffer.size`` (5 MiB).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from broker.groups.persistence import partition_for
from protocol.errors import ErrorCode, KafkaError
from protocol.records import RecordBatch, iter_batches, iter_records
from storage.tasks import retrieve_outcome

log = structlog.get_logger()

LOAD_BUFFER_BYTES = 5 * 1024 * 1024  # Kafka's offsets.load.buffer.size and transaction.state.log.load.buffer.size
STOP_GRACE_S = 2.0


class InternalTopic:
    """One internal topic: created on the first write, shared by concurrent first writers."""

    def __init__(self, cluster: Any, name: str, partitions: Callable[[], int],
                 configs: Callable[[], dict[str, Any]]) -> None:
        self.cluster = cluster
        self.name = name
        self._partitions = partitions
        self._configs = configs
        self._creating: asyncio.Future[Any] | None = None

    def get(self) -> Any:
        """The topic, or None before its first write."""
        return self.cluster.get(self.name)

    async def ensure(self) -> Any:
        topic = self.cluster.get(self.name)
        if topic is not None:
            return topic
        if self._creating is None or self._creating.done():
            self._creating = asyncio.ensure_future(self._create())
            # Its failure is each waiting writer's to report; when every one of them was cancelled (their
            # clients went away), nobody is left to, and asyncio would log it as never retrieved.
            self._creating.add_done_callback(retrieve_outcome)
        return await asyncio.shield(self._creating)

    async def _create(self) -> Any:
        try:
            return await self.cluster.create_topic(self.name, self._partitions(), 1, self._configs())
        except KafkaError as exc:
            topic = self.cluster.get(self.name)
            if exc.code is not ErrorCode.TOPIC_ALREADY_EXISTS or topic is None:
                raise
            return topic

    async def partition(self, key: str) -> Any:
        """The partition ``key`` lives in (the topic is created if it is missing)."""
        topic = await self.ensure()
        return topic.partitions[partition_for(key, len(topic.partitions))]

    def holds(self, key: str, index: int) -> bool:
        """Whether ``key`` lives in partition ``index`` of the existing topic."""
        topic = self.cluster.get(self.name)
        return topic is not None and bool(topic.partitions) and partition_for(key, len(topic.partitions)) == index


async def replay_partition(partition: Any, on_record: Callable[[RecordBatch, Any], None],
                           on_control: Callable[[RecordBatch], None], start: int | None = None) -> int:
    """Read one partition from its log start (or ``start``) to its log end, in order: ``on_record(batch,
    record)`` for each record of a data batch, ``on_control(batch)`` for each control batch. Returns how
    many records."""
    plog = partition.log
    offset = plog.log_start_offset if start is None else max(start, plog.log_start_offset)
    end = plog.log_end_offset
    count = 0
    while offset < end:
        result = await plog.read(offset, LOAD_BUFFER_BYTES)
        start = offset
        for chunk in result.chunks:
            for _, batch in iter_batches(chunk):
                if batch.next_offset <= offset:
                    continue
                if batch.is_control:
                    on_control(batch)
                else:
                    for record in iter_records(batch):
                        if record.offset >= offset:
                            count += 1
                            on_record(batch, record)
                offset = batch.next_offset
        if offset == start:
            break
        await asyncio.sleep(0)  # a long load must not starve the listener
    return count


class BackgroundTasks:
    """A coordinator's tasks: each one's failure is logged, and `stop` lets them finish for a while."""

    def __init__(self, failure_event: str) -> None:
        self._failure_event = failure_event
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(self._failure_event, exc_info=task.exception())

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Wait up to ``grace_s`` for the tasks (in-flight writes), then cancel the rest."""
        late = set(self._tasks)
        if late and grace_s > 0:
            _, late = await asyncio.wait(late, timeout=grace_s)
        for task in late:
            task.cancel()
        if late:
            await asyncio.gather(*late, return_exceptions=True)
