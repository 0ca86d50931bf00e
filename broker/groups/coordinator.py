"""GroupCoordinator: the asyncio shell around the group state machine (`broker.groups.state`).

It owns what the pure state machine cannot: the clock, the timers it asks for, the futures of parked
JoinGroup/SyncGroup requests, appends to ``__consumer_offsets`` and the start-up load.

- Time comes from an injected `Clock` (wall-clock milliseconds, as Kafka's ``time.milliseconds()``);
  `ManualClock` lets tests move time by hand.
- ``__consumer_offsets`` is created on the first write (``offsets.topic.num.partitions`` partitions,
  ``cleanup.policy=compact``), not at start-up: Kafka also creates it on first use, and a broker that
  never sees a group keeps an empty topic list. An existing topic keeps its partition count.
- Writes go to the group's partition under that partition's lock (as Produce appends), then ``flush()``
  (acks=all: the file engine's fsync) before anything is answered. Offset commits, offset deletions and
  group deletions change the in-memory state under the same lock, so memory and log agree on order; a
  commit becomes visible to OffsetFetch once appended, its committer is answered once it is durable
  (Kafka hides it until replicated). A failed write answers COORDINATOR_NOT_AVAILABLE (Kafka maps storage
  errors to NOT_COORDINATOR, which a single node never is; both make clients retry).
- At start-up an existing ``__consumer_offsets`` is read in the background; until it is done every group
  API answers COORDINATOR_LOAD_IN_PROGRESS (retriable). Members come back as they were (Kafka restores
  them too) and expire unless they heartbeat.
- Expired offsets are removed every ``offsets.retention.check.interval.ms``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from broker.cluster import OFFSETS_TOPIC
from broker.groups.offsets import OffsetAndMetadata, TopicPartition, metadata_too_large
from broker.groups.persistence import (
    OffsetRecord,
    RecordFormatError,
    build_records_batch,
    decode_record,
    group_key,
    group_value,
    offset_key,
    offset_value,
)
from broker.groups.state import (
    Decisions,
    GroupConfig,
    GroupDescription,
    GroupListing,
    GroupMetadataManager,
    GroupWrite,
    JoinRequest,
    JoinResult,
    SyncRequest,
    SyncResult,
    TimerKey,
)
from broker.internal_topic import BackgroundTasks, InternalTopic, replay_partition
from protocol.errors import ErrorCode, KafkaError
from protocol.primitives import INT64_MAX, INT64_MIN
from protocol.records.control import ControlType, control_type

log = structlog.get_logger()

_STORAGE_ERRORS = (OSError, KafkaError)


def _log_storage_failure(event: str, exc: BaseException, **fields: Any) -> None:
    """A failed disk is an error; a partition of the offsets topic deleted under a write (a client's
    DeleteTopics on __consumer_offsets) is a client's doing, and its clients retry: a warning."""
    gone = isinstance(exc, KafkaError) and exc.code is ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    (log.warning if gone else log.error)(event, error=str(exc), **fields)


class RecordTooLarge(Exception):
    """A group or offset record batch larger than ``__consumer_offsets``' max.message.bytes."""


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Wall-clock milliseconds and delayed callbacks."""

    def now_ms(self) -> int: ...

    def call_later(self, delay_ms: int, callback: Callable[[], None]) -> TimerHandle: ...


class SystemClock:
    """The real clock: ``time.time()`` and the running event loop's timers."""

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def call_later(self, delay_ms: int, callback: Callable[[], None]) -> TimerHandle:
        return asyncio.get_running_loop().call_later(max(delay_ms, 0) / 1000, callback)


class _ManualHandle:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock that moves only when told to: `advance` runs every callback that falls due, in order."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now = start_ms
        self._heap: list[tuple[int, int, Callable[[], None], _ManualHandle]] = []
        self._seq = itertools.count()

    def now_ms(self) -> int:
        return self._now

    def call_later(self, delay_ms: int, callback: Callable[[], None]) -> TimerHandle:
        handle = _ManualHandle()
        heapq.heappush(self._heap, (self._now + max(delay_ms, 0), next(self._seq), callback, handle))
        return handle

    def advance(self, ms: int = 0) -> None:
        target = self._now + ms
        while self._heap and self._heap[0][0] <= target:
            due, _, callback, handle = heapq.heappop(self._heap)
            self._now = max(self._now, due)
            if not handle.cancelled:
                callback()
        self._now = target


@dataclass(frozen=True)
class CommitPartition:
    """One partition of an OffsetCommit request."""

    topic: str
    partition: int
    offset: int
    leader_epoch: int = -1
    commit_timestamp: int = -1  # v1 only; -1: the broker's time
    metadata: str | None = ""


class GroupCoordinator:
    """The group coordinator of this broker: of every group, or in a shared cluster of the groups of the
    ``__consumer_offsets`` partitions it owns (``partitions``; `broker.membership` routes requests)."""

    def __init__(self, cluster: Any, config: Any, clock: Clock | None = None,
                 new_uuid: Callable[[], str] | None = None, partitions: Collection[int] | None = None) -> None:
        self.cluster = cluster
        self.partitions = None if partitions is None else frozenset(partitions)
        self.config = config
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.state = GroupMetadataManager(GroupConfig.from_broker_config(config), new_uuid)
        self.loading = False
        self._timers: dict[TimerKey, TimerHandle] = {}
        self._tasks = BackgroundTasks("groups.task_failed")
        self._load_task: asyncio.Task[None] | None = None
        self.topic = InternalTopic(cluster, OFFSETS_TOPIC, lambda: config.offsets_topic_num_partitions, lambda: {
            "cleanup.policy": "compact", "segment.bytes": config.offsets_topic_segment_bytes,
            "compression.type": "producer"})
        self._expiry_handle: TimerHandle | None = None
        self._stopped = False

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Begin loading an existing ``__consumer_offsets`` (in the background) and the expiry timer."""
        topic = self.topic.get()
        if topic is not None:
            self.loading = True
            self._load_task = asyncio.create_task(self._load(topic), name="moldau-groups-load")
        self._schedule_expiry()

    async def wait_loaded(self) -> None:
        """Return once the start-up load of ``__consumer_offsets`` is over (at once if there was none)."""
        if self._load_task is not None:
            await asyncio.shield(self._load_task)

    async def stop(self) -> None:
        """Cancel timers and the load; let in-flight writes finish (bounded) so storage can close."""
        self._stopped = True
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self._expiry_handle is not None:
            self._expiry_handle.cancel()
        if self._load_task is not None:
            self._load_task.cancel()
            await asyncio.gather(self._load_task, return_exceptions=True)
        await self._tasks.stop()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        return self._tasks.spawn(coro)

    # ------------------------------------------------------------ decisions

    def _apply(self, d: Decisions) -> None:
        for event, fields in d.events:
            log.info(event, **fields)
        for waiter, result in d.replies:
            if isinstance(waiter, asyncio.Future) and not waiter.done():
                waiter.set_result(result)
        if d.timers:
            now = self.clock.now_ms()
            for key, deadline in d.timers.items():
                old = self._timers.pop(key, None)
                if old is not None:
                    old.cancel()
                if deadline is not None and not self._stopped:
                    self._timers[key] = self.clock.call_later(deadline - now, lambda k=key: self._fire(k))
        for write in d.writes:
            self._spawn(self._write_group(write))

    def _fire(self, key: TimerKey) -> None:
        self._timers.pop(key, None)
        if self._stopped:
            return
        now = self.clock.now_ms()
        deadline = self.state.timers.get(key)
        if deadline is not None and deadline > now:
            # The event loop's clock ran ahead of the wall clock: wait for the rest.
            self._timers[key] = self.clock.call_later(deadline - now, lambda: self._fire(key))
            return
        self._apply(self.state.on_timer(key, now))

    # ------------------------------------------------------------ membership APIs

    async def join_group(self, req: JoinRequest) -> JoinResult:
        if self.loading:
            return JoinResult(ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, member_id=req.member_id)
        waiter = asyncio.get_running_loop().create_future()
        self._apply(self.state.join_group(dataclasses.replace(req, waiter=waiter), self.clock.now_ms()))
        return await waiter

    async def sync_group(self, req: SyncRequest) -> SyncResult:
        if self.loading:
            return SyncResult(ErrorCode.COORDINATOR_LOAD_IN_PROGRESS)
        waiter = asyncio.get_running_loop().create_future()
        self._apply(self.state.sync_group(dataclasses.replace(req, waiter=waiter), self.clock.now_ms()))
        return await waiter

    def heartbeat(self, group_id: str, member_id: str, group_instance_id: str | None,
                  generation_id: int) -> ErrorCode:
        if self.loading:
            return ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
        error, d = self.state.heartbeat(group_id, member_id, group_instance_id, generation_id, self.clock.now_ms())
        self._apply(d)
        return error

    def leave_group(self, group_id: str, members: Sequence[tuple[str, str | None]]
                    ) -> tuple[ErrorCode, list[ErrorCode]]:
        if self.loading:
            return ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, []
        error, errors, d = self.state.leave_group(group_id, members, self.clock.now_ms())
        self._apply(d)
        return error, errors

    def list_groups(self, states: Sequence[str] = (), types: Sequence[str] = ()
                    ) -> tuple[ErrorCode, list[GroupListing]]:
        if self.loading:
            return ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, []
        return ErrorCode.NONE, self.state.list_groups(states, types)

    def describe_group(self, group_id: str) -> tuple[ErrorCode, GroupDescription | None]:
        if self.loading:
            return ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, None
        return ErrorCode.NONE, self.state.describe_group(group_id)

    # ------------------------------------------------------------ offsets APIs

    async def commit_offsets(self, group_id: str, generation_id: int, member_id: str,
                             group_instance_id: str | None, retention_time_ms: int,
                             partitions: Sequence[CommitPartition]) -> list[ErrorCode]:
        """Per-partition errors, in request order."""
        if self.loading:
            return [ErrorCode.COORDINATOR_LOAD_IN_PROGRESS] * len(partitions)
        errors, known = self._known_partitions(partitions)
        if known:
            # Shielded: a client that disconnects must not cut a write (and its state change) in half.
            await asyncio.shield(self._spawn(self._commit(
                group_id, generation_id, member_id, group_instance_id, retention_time_ms, partitions, known,
                errors)))
        return errors

    def _within_metadata_limit(self, partitions: Sequence[CommitPartition], known: list[int],
                               errors: list[ErrorCode]) -> list[int]:
        """The indexes in ``known`` whose metadata fits ``offset.metadata.max.bytes``; the others get
        OFFSET_METADATA_TOO_LARGE."""
        limit = self.config.offset_metadata_max_bytes
        writes = []
        for i in known:
            if metadata_too_large(partitions[i].metadata, limit):
                errors[i] = ErrorCode.OFFSET_METADATA_TOO_LARGE
            else:
                writes.append(i)
        return writes

    def _known_partitions(self, partitions: Sequence[CommitPartition]) -> tuple[list[ErrorCode], list[int]]:
        """Per-partition errors, UNKNOWN_TOPIC_OR_PARTITION where this broker has no such partition, and the
        indexes of the others."""
        errors = [ErrorCode.NONE] * len(partitions)
        known = []
        for i, p in enumerate(partitions):
            if self.cluster.partition(p.topic, p.partition) is None:
                errors[i] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            else:
                known.append(i)
        return errors, known

    async def _commit(self, group_id: str, generation_id: int, member_id: str, group_instance_id: str | None,
                      retention_time_ms: int, partitions: Sequence[CommitPartition], known: list[int],
                      errors: list[ErrorCode]) -> None:
        try:
            partition = await self._partition(group_id)
        except _STORAGE_ERRORS as exc:
            _log_storage_failure("groups.offsets_topic_unavailable", exc, group=group_id)
            for i in known:
                errors[i] = ErrorCode.COORDINATOR_NOT_AVAILABLE
            return
        async with partition.lock:
            now = self.clock.now_ms()
            error, d = self.state.validate_offset_commit(group_id, generation_id, member_id, group_instance_id,
                                                         now)
            self._apply(d)
            if error is not ErrorCode.NONE:
                for i in known:
                    errors[i] = error
                return
            writes = self._within_metadata_limit(partitions, known, errors)
            if not writes:
                return
            # Kept within int64, the record's field: a client may ask for any retention (fuzzing sent
            # 2^63-1, which failed the commit with a traceback). Past the end of time means never.
            expire = min(max(now + retention_time_ms, INT64_MIN), INT64_MAX) if retention_time_ms != -1 else None
            commits: list[tuple[TopicPartition, OffsetAndMetadata]] = []
            for i in writes:
                p = partitions[i]
                commits.append(((p.topic, p.partition), OffsetAndMetadata(
                    offset=p.offset, leader_epoch=p.leader_epoch, metadata=p.metadata or "",
                    commit_timestamp=p.commit_timestamp if p.commit_timestamp != -1 else now,
                    expire_timestamp=expire)))
            records = [(offset_key(group_id, tp[0], tp[1]), offset_value(om)) for tp, om in commits]
            try:
                result = await self._append_locked(partition, records, now)
            except RecordTooLarge as exc:
                # Kafka answers a commit whose records are too large with INVALID_COMMIT_OFFSET_SIZE.
                log.warning("groups.commit_too_large", group=group_id, reason=str(exc))
                for i in writes:
                    errors[i] = ErrorCode.INVALID_COMMIT_OFFSET_SIZE
                return
            except _STORAGE_ERRORS as exc:
                _log_storage_failure("groups.commit_failed", exc, group=group_id)
                for i in writes:
                    errors[i] = ErrorCode.COORDINATOR_NOT_AVAILABLE
                return
            self.state.apply_offset_commits(group_id, {
                tp: dataclasses.replace(om, position=result.base_offset + k)
                for k, (tp, om) in enumerate(commits)}, now)
        if not await self._flush(partition, group_id):
            for i in writes:
                errors[i] = ErrorCode.COORDINATOR_NOT_AVAILABLE

    async def commit_txn_offsets(self, group_id: str, producer_id: int, producer_epoch: int, generation_id: int,
                                 member_id: str, group_instance_id: str | None,
                                 partitions: Sequence[CommitPartition],
                                 verify: Callable[[int], ErrorCode]) -> list[ErrorCode]:
        """TxnOffsetCommit: per-partition errors, in request order. The offsets are written as a
        transactional batch of the producer and published by its COMMIT marker (`complete_transaction`).
        ``verify(partition_index)`` asks the transaction coordinator whether the producer's transaction
        holds the group's ``__consumer_offsets`` partition; it runs under that partition's lock, so no
        marker can slip in between."""
        if self.loading:
            return [ErrorCode.COORDINATOR_LOAD_IN_PROGRESS] * len(partitions)
        errors, known = self._known_partitions(partitions)
        if known:
            await asyncio.shield(self._spawn(self._commit_txn(
                group_id, producer_id, producer_epoch, generation_id, member_id, group_instance_id, partitions,
                known, errors, verify)))
        return errors

    async def _commit_txn(self, group_id: str, producer_id: int, producer_epoch: int, generation_id: int,
                          member_id: str, group_instance_id: str | None, partitions: Sequence[CommitPartition],
                          known: list[int], errors: list[ErrorCode], verify: Callable[[int], ErrorCode]) -> None:
        def fail(indexes: Sequence[int], error: ErrorCode) -> None:
            for i in indexes:
                errors[i] = error

        try:
            partition = await self._partition(group_id)
        except _STORAGE_ERRORS as exc:
            _log_storage_failure("groups.offsets_topic_unavailable", exc, group=group_id)
            fail(known, ErrorCode.COORDINATOR_NOT_AVAILABLE)
            return
        async with partition.lock:
            now = self.clock.now_ms()
            error = verify(partition.index)
            if error is ErrorCode.NONE:
                error = self.state.validate_txn_offset_commit(group_id, generation_id, member_id,
                                                              group_instance_id, now)
            if error is not ErrorCode.NONE:
                fail(known, error)
                return
            writes = self._within_metadata_limit(partitions, known, errors)
            if not writes:
                return
            commits = [((partitions[i].topic, partitions[i].partition), OffsetAndMetadata(
                offset=partitions[i].offset, leader_epoch=partitions[i].leader_epoch,
                metadata=partitions[i].metadata or "", commit_timestamp=now)) for i in writes]
            records = [(offset_key(group_id, tp[0], tp[1]), offset_value(om)) for tp, om in commits]
            try:
                result = await self._append_locked(partition, records, now, producer_id, producer_epoch)
            except RecordTooLarge as exc:
                log.warning("groups.commit_too_large", group=group_id, reason=str(exc))
                fail(writes, ErrorCode.INVALID_COMMIT_OFFSET_SIZE)
                return
            except _STORAGE_ERRORS as exc:
                _log_storage_failure("groups.txn_commit_failed", exc, group=group_id)
                fail(writes, ErrorCode.COORDINATOR_NOT_AVAILABLE)
                return
            self.state.add_pending_txn_offsets(producer_id, group_id, {
                tp: dataclasses.replace(om, position=result.base_offset + k) for k, (tp, om) in enumerate(commits)})
        if not await self._flush(partition, group_id):
            fail(writes, ErrorCode.COORDINATOR_NOT_AVAILABLE)

    def complete_transaction(self, partition_index: int, producer_id: int, commit: bool) -> None:
        """A transaction marker was appended to ``__consumer_offsets`` partition ``partition_index``
        (the caller holds its lock): publish (COMMIT) or drop (ABORT) the producer's pending offsets of the
        groups in that partition."""
        self.state.complete_txn(producer_id, commit, lambda g: self.topic.holds(g, partition_index),
                                self.clock.now_ms())

    async def offsets_partition_index(self, group_id: str) -> int:
        """The ``__consumer_offsets`` partition of a group (the topic is created if it is missing)."""
        return (await self._partition(group_id)).index

    def unstable_partitions(self, group_id: str) -> set[TopicPartition]:
        return self.state.unstable_partitions(group_id)

    def fetch_offsets(self, group_id: str, partitions: Sequence[TopicPartition] | None
                      ) -> tuple[ErrorCode, list[tuple[TopicPartition, OffsetAndMetadata | None]]]:
        if self.loading:
            return ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, []
        return ErrorCode.NONE, self.state.fetch_offsets(group_id, partitions)

    async def delete_offsets(self, group_id: str, topics: Sequence[tuple[str, Sequence[int]]]
                             ) -> tuple[ErrorCode, list[tuple[str, list[tuple[int, ErrorCode]]]]]:
        """OffsetDelete: a group error (then no partitions), else per-topic, per-partition errors."""
        if self.loading:
            return ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, []
        if not group_id:
            return ErrorCode.INVALID_GROUP_ID, []
        known = [(name, [p for p in parts if self.cluster.partition(name, p) is not None]) for name, parts in topics]
        return await asyncio.shield(self._spawn(self._delete_offsets(group_id, topics, known)))

    async def _delete_offsets(self, group_id: str, topics: Sequence[tuple[str, Sequence[int]]],
                              known: list[tuple[str, list[int]]]
                              ) -> tuple[ErrorCode, list[tuple[str, list[tuple[int, ErrorCode]]]]]:
        async def delete() -> tuple[ErrorCode, Any, list[tuple[bytes, bytes | None]]]:
            error, results, removed = self.state.delete_offsets(group_id, [k for k in known if k[1]])
            return error, results, [(offset_key(group_id, t, p), None) for t, p in removed]

        try:
            error, results = await self._remove(group_id, delete)
        except _STORAGE_ERRORS:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE, []
        if error is not ErrorCode.NONE:
            return error, []
        by_partition = {(t, p): e for t, parts in results for p, e in parts}
        out = []
        for name, parts in topics:
            out.append((name, [(p, by_partition.get((name, p), ErrorCode.UNKNOWN_TOPIC_OR_PARTITION))
                               for p in parts]))
        return ErrorCode.NONE, out

    async def delete_groups(self, group_ids: Sequence[str]) -> list[tuple[str, ErrorCode]]:
        """DeleteGroups: one result per distinct group id, in request order."""
        unique = list(dict.fromkeys(group_ids))
        if self.loading:
            return [(g, ErrorCode.COORDINATOR_LOAD_IN_PROGRESS) for g in unique]
        return await asyncio.shield(self._spawn(self._delete_groups(unique)))

    async def _delete_groups(self, group_ids: list[str]) -> list[tuple[str, ErrorCode]]:
        results = []
        for group_id in group_ids:
            async def delete(gid: str = group_id) -> tuple[ErrorCode, None, list[tuple[bytes, bytes | None]]]:
                error, removed = self.state.delete_group(gid, self.clock.now_ms())
                records: list[tuple[bytes, bytes | None]] = [(offset_key(gid, t, p), None) for t, p in removed]
                if error is ErrorCode.NONE:
                    records.append((group_key(gid), None))
                return error, None, records

            try:
                error, _ = await self._remove(group_id, delete)
            except _STORAGE_ERRORS:
                error = ErrorCode.COORDINATOR_NOT_AVAILABLE
            results.append((group_id, error))
        return results

    async def _remove(self, group_id: str, change: Callable[[], Any]) -> tuple[ErrorCode, Any]:
        """Run a state change that yields tombstones under the group's partition lock, append them and
        flush. Without ``__consumer_offsets`` there is nothing on disk to delete."""
        if self.topic.get() is None:
            error, results, _ = await change()
            return error, results
        partition = await self.topic.partition(group_id)
        async with partition.lock:
            error, results, records = await change()
            if records:
                await self._append_locked(partition, records, self.clock.now_ms())
        if records and not await self._flush(partition, group_id):
            raise OSError(f"could not flush {OFFSETS_TOPIC}-{partition.index}")
        return error, results

    # ------------------------------------------------------------ offset expiry

    def _schedule_expiry(self) -> None:
        if not self._stopped:
            self._expiry_handle = self.clock.call_later(self.config.offsets_retention_check_interval_ms,
                                                        self._expiry_due)

    def _expiry_due(self) -> None:
        if self._stopped:
            return
        task = self._spawn(self.expire_offsets())
        task.add_done_callback(lambda _: self._schedule_expiry())

    async def expire_offsets(self) -> int:
        """Remove expired offsets (and Empty groups left without any); returns how many offsets went."""
        if self.loading:
            return 0
        retention_ms = self.config.offsets_retention_minutes * 60_000
        total = 0
        for group_id in list(self.state.groups):
            async def expire(gid: str = group_id) -> tuple[ErrorCode, int, list[tuple[bytes, bytes | None]]]:
                removed, deleted = self.state.expire_offsets(gid, self.clock.now_ms(), retention_ms)
                records: list[tuple[bytes, bytes | None]] = [(offset_key(gid, t, p), None) for t, p in removed]
                if deleted:
                    records.append((group_key(gid), None))
                return ErrorCode.NONE, len(removed), records

            try:
                _, count = await self._remove(group_id, expire)
            except _STORAGE_ERRORS as exc:
                _log_storage_failure("groups.expiry_failed", exc, group=group_id)
                continue
            total += count
        if total:
            log.info("groups.offsets_expired", offsets=total)
        return total

    # ------------------------------------------------------------ __consumer_offsets

    async def _partition(self, group_id: str) -> Any:
        return await self.topic.partition(group_id)

    async def _append_locked(self, partition: Any, records: list[tuple[bytes, bytes | None]], now: int,
                             producer_id: int = -1, producer_epoch: int = -1) -> Any:
        """Append one batch; the caller holds ``partition.lock``. A batch above the topic's
        max.message.bytes raises `RecordTooLarge`, as Kafka's coordinator write would fail."""
        batch = build_records_batch(records, now, partition.leader_epoch, producer_id=producer_id,
                                    producer_epoch=producer_epoch)
        limit = self.cluster.config_value(partition.topic, "max.message.bytes")
        if len(batch) > limit:
            raise RecordTooLarge(f"{len(batch)}-byte record batch for {OFFSETS_TOPIC}-{partition.index} exceeds "
                                 f"max.message.bytes={limit}")
        result = await partition.log.append(batch)
        self.cluster.waiters.wake(OFFSETS_TOPIC, partition.index)
        return result

    async def _flush(self, partition: Any, group_id: str) -> bool:
        try:
            await partition.log.flush()
        except _STORAGE_ERRORS as exc:
            _log_storage_failure("groups.flush_failed", exc, group=group_id, partition=partition.index)
            return False
        return True

    async def _write_group(self, write: GroupWrite) -> None:
        error: ErrorCode | None = None
        try:
            partition = await self._partition(write.group_id)
            async with partition.lock:
                await self._append_locked(partition, [(group_key(write.group_id), group_value(write.value))],
                                          self.clock.now_ms())
            if not await self._flush(partition, write.group_id):
                error = ErrorCode.COORDINATOR_NOT_AVAILABLE
        except RecordTooLarge as exc:
            # Kafka maps a group record too large for the log to UNKNOWN_SERVER_ERROR for the members
            # (the rebalance fails and they rejoin); the message says why in the broker log.
            log.warning("groups.metadata_too_large", group=write.group_id, kind=write.kind, reason=str(exc))
            error = ErrorCode.UNKNOWN_SERVER_ERROR
        except _STORAGE_ERRORS as exc:
            _log_storage_failure("groups.write_failed", exc, group=write.group_id, kind=write.kind)
            error = ErrorCode.COORDINATOR_NOT_AVAILABLE
        if not self._stopped:
            self._apply(self.state.group_write_done(write, error, self.clock.now_ms()))

    # ------------------------------------------------------------ loading

    async def _load(self, topic: Any) -> None:
        started = time.perf_counter()
        records = 0
        try:
            for partition in list(topic.partitions):
                if self.partitions is None or partition.index in self.partitions:
                    records += await self._load_partition(partition)
        except asyncio.CancelledError:
            raise
        except Exception:  # serve what was read rather than refusing every group forever
            log.exception("groups.load_failed")
        self._apply(self.state.loaded(self.clock.now_ms()))
        self.loading = False
        log.info("groups.loaded", groups=len(self.state.groups), records=records,
                 ms=round((time.perf_counter() - started) * 1000, 1))

    async def follow(self, partition: Any, start: int) -> int:
        """Take in what another broker appended to an owned partition from ``start`` on (in a shared
        cluster: a transaction coordinator's COMMIT or ABORT markers); the caller holds its lock."""
        return await self._load_partition(partition, start)

    async def _load_partition(self, partition: Any, start: int | None = None) -> int:
        index = partition.index

        def on_record(batch: Any, record: Any) -> None:
            self._replay(index, record, batch.producer_id if batch.is_transactional else None)

        def on_control(batch: Any) -> None:
            kind = control_type(batch)
            if kind in (ControlType.COMMIT, ControlType.ABORT):
                self.complete_transaction(index, batch.producer_id, kind == ControlType.COMMIT)

        return await replay_partition(partition, on_record, on_control, start)

    def _replay(self, index: int, record: Any, txn_producer: int | None = None) -> None:
        try:
            decoded = decode_record(record.key, record.value, record.offset)
        except RecordFormatError as exc:
            log.warning("groups.record_skipped", partition=index, offset=record.offset, reason=str(exc))
            return
        if decoded is None:
            return
        if txn_producer is not None and isinstance(decoded, OffsetRecord) and decoded.value is not None:
            # A TxnOffsetCommit: pending until its producer's marker, later in this partition.
            self.state.add_pending_txn_offsets(txn_producer, decoded.group,
                                               {(decoded.topic, decoded.partition): decoded.value})
            return
        self.state.replay(decoded, self.clock.now_ms())
