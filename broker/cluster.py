"""Cluster state: topics, their ids, partitions, logs and config overrides.

Every handler that touches topics goes through `ClusterState`: creation (explicit, or automatic when
``auto.create.topics.enable`` is on), deletion, partition increases, lookups by name and by topic id,
and effective topic configs. Partition logs come from the storage engine; appends to one partition
are serialised by its lock and wake any Fetch waiting on it.

The metadata (topics, ids, partition counts, overrides, producer-id blocks) is one blob the engine
saves. On storage other brokers share (PostgreSQL), every change runs in `mutation`: under the
engine's cluster-wide metadata lock, on top of the latest blob (`sync` loads what other brokers
changed), and is saved before it is answered; `sync` also runs whenever another broker announces a
change (`broker.membership`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from broker.fetch_waiters import FetchWaiters
from broker.producer_state import ProducerRegistry
from broker.topic_config import TopicConfigs, validate_overrides
from protocol.errors import ErrorCode, KafkaError
from storage.interface import PartitionLog, StorageEngine
from storage.tasks import shared, to_completion

log = structlog.get_logger()

MAX_TOPIC_NAME_LENGTH = 249
# Matched with fullmatch: "$" alone would accept a trailing newline ("abc\n").
_LEGAL_TOPIC = re.compile(r"[a-zA-Z0-9._-]+")
# Kafka's message when one request would create more partitions than controller.max.records.per.batch.
TOO_MANY_PARTITIONS_MESSAGE = "Excessively large number of partitions per request."
# The internal topics' names live here, where the broker checks for them without importing the coordinators.
OFFSETS_TOPIC = "__consumer_offsets"
TRANSACTION_STATE_TOPIC = "__transaction_state"
INTERNAL_TOPICS = frozenset({OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC})
# After a restart, idempotent producer state is rebuilt from at most this much of a log's tail: enough
# for the retries of producers that were active when the broker stopped.
PRODUCER_STATE_REBUILD_OFFSETS = 10_000
PRODUCER_STATE_REBUILD_BYTES = 8 * 1024 * 1024


def validate_topic_name(name: str | None) -> None:
    """Kafka's topic name rules; raises KafkaError(INVALID_TOPIC_EXCEPTION) saying which one failed."""
    if not name:
        raise KafkaError(ErrorCode.INVALID_TOPIC_EXCEPTION, "Topic name is illegal, it can't be empty")
    if name in (".", ".."):
        raise KafkaError(ErrorCode.INVALID_TOPIC_EXCEPTION, "Topic name cannot be \".\" or \"..\"")
    if len(name) > MAX_TOPIC_NAME_LENGTH:
        raise KafkaError(ErrorCode.INVALID_TOPIC_EXCEPTION,
                         f"Topic name is illegal, it can't be longer than {MAX_TOPIC_NAME_LENGTH} characters, "
                         f"topic name: {name[:40]}...")
    if not _LEGAL_TOPIC.fullmatch(name):
        raise KafkaError(ErrorCode.INVALID_TOPIC_EXCEPTION,
                         f"Topic name {name!r} is illegal, it contains a character other than ASCII "
                         f"alphanumerics, '.', '_' and '-'")


def _collision_key(name: str) -> str:
    # Kafka's metric names fold '.' into '_', so two topics differing only there would collide.
    return name.replace(".", "_")


@dataclass
class Partition:
    topic: Topic
    index: int
    log: PartitionLog
    leader_epoch: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class Topic:
    name: str
    topic_id: uuid.UUID
    configs: dict[str, Any]
    partitions: list[Partition] = field(default_factory=list)

    @property
    def is_internal(self) -> bool:
        return self.name in INTERNAL_TOPICS


class ClusterState:
    """All topics of this broker. Mutations are coroutines because they open or delete logs."""

    def __init__(self, engine: StorageEngine, config: Any) -> None:
        self.engine = engine
        self.config = config
        try:
            self.topic_configs = TopicConfigs.from_broker_config(config)
        except KafkaError as exc:
            from broker.config import ConfigError

            raise ConfigError(f"broker default of a topic config: {exc.message}") from None
        self.topics: dict[str, Topic] = {}
        self.by_id: dict[uuid.UUID, Topic] = {}
        self.waiters = FetchWaiters()
        self.producers = ProducerRegistry(max_entries=config.producer_state_max_entries)
        self._creating: dict[str, asyncio.Task[Topic]] = {}
        # Topic creations, partition additions and deletions run one at a time, as Kafka's controller
        # applies them: a topic appears with all its partitions or not at all, and a name being deleted
        # is not created again until its data is gone.
        self._mutations = asyncio.Lock()

    # ------------------------------------------------------------ lookups

    def get(self, name: str) -> Topic | None:
        return self.topics.get(name)

    def get_by_id(self, topic_id: uuid.UUID) -> Topic | None:
        return self.by_id.get(topic_id)

    def partition(self, name: str, index: int) -> Partition | None:
        topic = self.topics.get(name)
        if topic is None or not 0 <= index < len(topic.partitions):
            return None
        return topic.partitions[index]

    def config_value(self, topic: Topic, name: str) -> Any:
        return self.topic_configs.value(topic.configs, name)

    # ------------------------------------------------------------ mutations

    @contextlib.asynccontextmanager
    async def mutation(self) -> AsyncIterator[None]:
        """One metadata change at a time: this broker's, and on shared storage every broker's, each on
        top of the latest saved metadata. The caller persists before leaving."""
        async with self._mutations, self.engine.metadata_lock():
            if self.engine.shared:
                await self._sync_locked()
            yield

    def check_partitions_to_create(self, count: int) -> None:
        """Refuse an operation that would create more partitions than ``controller.max.records.per.batch``
        (POLICY_VIOLATION, as Kafka's controller): opening that many logs would hold the event loop and
        memory for as long as the client likes."""
        if count > self.config.controller_max_records_per_batch:
            raise KafkaError(ErrorCode.POLICY_VIOLATION, TOO_MANY_PARTITIONS_MESSAGE)

    def check_new_topic(self, name: str, num_partitions: int, replication_factor: int,
                        configs: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Validate a creation without doing it (CreateTopics validate_only); returns parsed configs."""
        validate_topic_name(name)
        if name in self.topics:
            raise KafkaError(ErrorCode.TOPIC_ALREADY_EXISTS, f"Topic '{name}' already exists.")
        clash = next((t for t in self.topics if _collision_key(t) == _collision_key(name)), None)
        if clash is not None:
            raise KafkaError(ErrorCode.INVALID_TOPIC_EXCEPTION,
                             f"Topic '{name}' collides with existing topic: {clash}")
        if num_partitions < 1:
            raise KafkaError(ErrorCode.INVALID_PARTITIONS, "Number of partitions must be larger than 0.")
        self.check_partitions_to_create(num_partitions)
        if replication_factor != 1:
            raise KafkaError(ErrorCode.INVALID_REPLICATION_FACTOR,
                             f"Replication factor {replication_factor} is larger than the number of "
                             f"available brokers: this Moldau broker is a single node, so use 1 (or -1)")
        return validate_overrides(configs or {})

    async def create_topic(self, name: str, num_partitions: int | None = None,
                           replication_factor: int | None = None,
                           configs: Mapping[str, Any] | None = None,
                           topic_id: uuid.UUID | None = None) -> Topic:
        """Create a topic (partitions default to ``num.partitions``); raises KafkaError on any rule broken.
        Once begun it finishes, whether or not the caller is still waiting (as every metadata change here)."""
        return await to_completion(self._create_topic(name, num_partitions, replication_factor, configs, topic_id))

    async def _create_topic(self, name: str, num_partitions: int | None, replication_factor: int | None,
                            configs: Mapping[str, Any] | None, topic_id: uuid.UUID | None) -> Topic:
        partitions = self.config.num_partitions if num_partitions in (None, -1) else num_partitions
        rf = self.config.default_replication_factor if replication_factor in (None, -1) else replication_factor
        async with self.mutation():
            parsed = self.check_new_topic(name, partitions, rf, configs)
            topic = Topic(name, topic_id or uuid.uuid4(), parsed)
            await self._add_partitions(topic, partitions, fresh=True)
            self.topics[name] = topic
            self.by_id[topic.topic_id] = topic
            try:
                await self.persist()
            except BaseException:
                self.topics.pop(name, None)
                self.by_id.pop(topic.topic_id, None)
                raise
        log.info("topic.created", topic=name, topic_id=str(topic.topic_id), partitions=partitions,
                 configs=parsed or None)
        return topic

    async def auto_create(self, name: str) -> Topic | None:
        """Create a topic named by Metadata/Produce when auto-creation is on; None when it is off.
        Concurrent requests for the same name share one creation."""
        topic = self.topics.get(name)
        if topic is not None:
            return topic
        if not self.config.auto_create_topics_enable or name in INTERNAL_TOPICS:
            return None
        # One creation for every asker, carrying on for the others when the first goes away.
        return await shared(self._creating, name, lambda: self._create_topic(name, None, None, None, None))

    async def _add_partitions(self, topic: Topic, total: int, *, fresh: bool = False) -> None:
        """Open the logs of partitions ``len(topic.partitions)`` to ``total``; ``fresh``: they are being
        created now (not loaded or learnt from another broker), so whatever a log of theirs holds is stale."""
        # A lookup per use, so that altered configs (segment.bytes, retention.ms...) apply at once.
        def config(name: str, t: Topic = topic) -> Any:
            return self.config_value(t, name)

        # Added in one step once every log is open, so that nobody sees a partial partition count.
        added = []
        new = range(len(topic.partitions), total)
        if fresh:
            listed = set(self.engine.partitions())
            stale = [(topic.name, index) for index in new if (topic.name, index) in listed]
            if stale:
                # Logs of an earlier topic of this name whose removal failed or was cut short by a crash:
                # a new partition starts empty, never with a deleted topic's records.
                log.warning("storage.leftover_logs_removed", topic=topic.name, partitions=len(stale))
                await self.engine.delete_logs(stale)
        for index in new:
            plog = await self.engine.open_log(topic.name, index, config)
            added.append(Partition(topic, index, plog))
        topic.partitions.extend(added)

    # ------------------------------------------------------------ persistence

    METADATA_VERSION = 1

    async def load(self) -> None:
        """Recreate the topics saved by `persist` (same ids, partitions and overrides), opening their logs
        (which recovers them after an unclean stop)."""
        raw = await self.engine.load_metadata()
        if raw is None:
            return
        data = json.loads(raw)
        if data.get("version") != self.METADATA_VERSION:
            raise ValueError(f"cluster metadata version {data.get('version')!r} is not supported "
                             f"(expected {self.METADATA_VERSION})")
        self.producers.ids.restore(int(data.get("producer_ids_reserved_until", 0)))
        for entry in data["topics"]:
            topic = Topic(entry["name"], uuid.UUID(entry["topic_id"]), dict(entry["configs"]))
            self.topics[topic.name] = topic
            self.by_id[topic.topic_id] = topic
            await self._add_partitions(topic, int(entry["partitions"]))
        log.info("cluster.loaded", topics=len(self.topics))

    async def allocate_producer_id(self) -> int:
        """A producer id never handed out before, even across restarts (a new block is persisted first)."""
        ids = self.producers.ids
        while ids.needs_block():
            async with self.mutation():  # on shared storage: after every other broker's blocks
                if not ids.needs_block():
                    break
                end = ids.next_block_end()
                ids.reserved(end)
                try:
                    await self.persist()
                except BaseException:
                    ids.reserved_until = min(ids.reserved_until, end - ids.block_size)
                    raise
        return ids.allocate()

    async def producer_state(self, partition: Partition) -> Any:
        """The idempotent-producer state of a partition; after a restart it is first rebuilt: up to the
        last 5 batches of each producer from the batch headers at the tail of the log, then the last batch
        of every other producer the log remembers (its producer-state snapshot, Kafka's ``.snapshot``)
        (callers hold the partition's lock)."""
        key = (partition.topic.topic_id, partition.index)
        tp = f"{partition.topic.name}-{partition.index}"
        if self.producers.known(key):
            return self.producers.partition(key, tp)
        plog = partition.log
        await plog.refresh()  # shared storage: what other brokers (or an append whose outcome was lost) wrote
        state = self.producers.partition(key, tp, on_forget=plog.forget_producer)
        start = max(plog.log_start_offset, plog.log_end_offset - PRODUCER_STATE_REBUILD_OFFSETS)
        if plog.log_end_offset > start:
            result = await plog.read(start, PRODUCER_STATE_REBUILD_BYTES)
            rebuilt = state.rebuild_from(result.chunks)
            if rebuilt:
                log.info("producer_state.rebuilt", topic=partition.topic.name, partition=partition.index,
                         producers=rebuilt, from_offset=start)
        seeded = state.seed_from(plog.producer_entries())
        if seeded:
            log.info("producer_state.seeded", topic=partition.topic.name, partition=partition.index,
                     producers=seeded)
        return state

    def forget_producer_state(self, partition: Partition) -> None:
        """Drop a partition's idempotent-producer state; the next produce rebuilds it from the log (a
        partition this broker takes over from another, which may have appended meanwhile)."""
        self.producers.forget((partition.topic.topic_id, partition.index))

    async def sync(self) -> None:
        """Take in what other brokers sharing the storage changed (see `_sync_locked`)."""
        async with self._mutations:
            await self._sync_locked()

    async def _sync_locked(self) -> None:
        """Make the topics here those of the saved metadata: new topics appear (logs opened), topics
        deleted elsewhere go (logs closed here, their data already deleted), partition counts grow,
        overrides and producer-id blocks follow."""
        raw = await self.engine.load_metadata()
        if raw is None:
            return
        data = json.loads(raw)
        reserved = int(data.get("producer_ids_reserved_until", 0))
        if reserved > self.producers.ids.reserved_until:
            # Another broker reserved blocks since this one did: hand out ids only above them.
            self.producers.ids.restore(reserved)
        saved: set[uuid.UUID] = set()
        for entry in data["topics"]:
            topic_id = uuid.UUID(entry["topic_id"])
            saved.add(topic_id)
            topic = self.by_id.get(topic_id)
            if topic is None:
                stale = self.topics.get(entry["name"])  # deleted and created again elsewhere
                if stale is not None:
                    await self._forget_topic(stale)
                topic = Topic(entry["name"], topic_id, dict(entry["configs"]))
                await self._add_partitions(topic, int(entry["partitions"]))
                self.topics[topic.name] = topic
                self.by_id[topic_id] = topic
                log.info("topic.synced", topic=topic.name, topic_id=str(topic_id), partitions=len(topic.partitions))
                continue
            topic.configs = dict(entry["configs"])
            if int(entry["partitions"]) > len(topic.partitions):
                await self._add_partitions(topic, int(entry["partitions"]))
        for topic in [t for t in self.topics.values() if t.topic_id not in saved]:
            await self._forget_topic(topic)

    async def _forget_topic(self, topic: Topic) -> None:
        """A topic another broker deleted: gone from here, its logs closed (the data is already gone)."""
        self.topics.pop(topic.name, None)
        self.by_id.pop(topic.topic_id, None)
        for partition in topic.partitions:
            await self.engine.forget_log(topic.name, partition.index)
            self.producers.forget((topic.topic_id, partition.index))
            self.waiters.wake(topic.name, partition.index)
        log.info("topic.deleted_elsewhere", topic=topic.name, topic_id=str(topic.topic_id))

    async def persist(self) -> None:
        """Save topics, ids, partition counts and config overrides (atomic replace in the engine)."""
        data = {"version": self.METADATA_VERSION,
                "producer_ids_reserved_until": self.producers.ids.reserved_until, "topics": [
            {"name": t.name, "topic_id": str(t.topic_id), "partitions": len(t.partitions), "configs": t.configs}
            for t in (self.topics[name] for name in sorted(self.topics))]}
        await self.engine.save_metadata(json.dumps(data, indent=1, sort_keys=True).encode())

    async def create_partitions(self, name: str, total: int, validate_only: bool = False) -> Topic:
        return await to_completion(self._create_partitions_locked(name, total, validate_only))

    async def _create_partitions_locked(self, name: str, total: int, validate_only: bool) -> Topic:
        async with self.mutation():
            return await self._create_partitions(name, total, validate_only)

    async def _create_partitions(self, name: str, total: int, validate_only: bool) -> Topic:
        topic = self.topics.get(name)
        if topic is None:
            raise KafkaError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"Topic '{name}' does not exist.")
        current = len(topic.partitions)
        if total < current:
            raise KafkaError(ErrorCode.INVALID_PARTITIONS,
                             f"Topic currently has {current} partitions, which is higher than the requested "
                             f"{total}.")
        if total == current:
            raise KafkaError(ErrorCode.INVALID_PARTITIONS, f"Topic already has {current} partitions.")
        self.check_partitions_to_create(total - current)
        if not validate_only:
            await self._add_partitions(topic, total, fresh=True)
            await self.persist()
            log.info("topic.partitions_added", topic=name, partitions=total)
        return topic

    async def delete_topic(self, name: str) -> Topic:
        return await to_completion(self._delete_topic_locked(name))

    async def _delete_topic_locked(self, name: str) -> Topic:
        async with self.mutation():
            return await self._delete_topic(name)

    async def _delete_topic(self, name: str) -> Topic:
        topic = self.topics.get(name)
        if topic is None:
            raise KafkaError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"Topic '{name}' does not exist.")
        if not self.config.delete_topic_enable:
            raise KafkaError(ErrorCode.TOPIC_DELETION_DISABLED, "Topic deletion is disabled "
                             "(delete.topic.enable=false).")
        del self.topics[name]
        self.by_id.pop(topic.topic_id, None)
        # The topic is gone from the saved metadata before its data goes: a crash in between leaves
        # orphan partition directories, never a topic without its data.
        await self.persist()
        try:
            await self.engine.delete_logs([(name, partition.index) for partition in topic.partitions])
        finally:  # the topic is gone whether or not its data could be removed
            for partition in topic.partitions:
                self.producers.forget((topic.topic_id, partition.index))
                self.waiters.wake(name, partition.index)
        log.info("topic.deleted", topic=name, topic_id=str(topic.topic_id))
        return topic

    def set_configs(self, topic: Topic, configs: Mapping[str, Any]) -> None:
        """Replace the topic's overrides with already validated values; the caller then awaits
        `persist` (once for a whole AlterConfigs request) before answering."""
        topic.configs = dict(configs)
        log.info("topic.configs_changed", topic=topic.name, configs=topic.configs or None)

    def names(self) -> Iterable[str]:
        return sorted(self.topics)
