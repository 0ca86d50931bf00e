"""TransactionCoordinator: the asyncio shell around the transaction state machine (`broker.transactions.state`).

It owns what the pure state machine cannot: the clock and its timers, writes to ``__transaction_state``,
the COMMIT/ABORT markers, producer id allocation and the start-up load.

- ``__transaction_state`` is created on the first write (``transaction.state.log.num.partitions``
  partitions, ``cleanup.policy=compact``), as Kafka does; an existing one is read in the background at
  start-up, and until that is done every transaction API answers COORDINATOR_LOAD_IN_PROGRESS.
- Each change is appended to the id's partition under that partition's lock and flushed (fsync in the
  file engine) before anything is answered or acted on (the Complete states excepted, see `_write`). A failed write answers COORDINATOR_NOT_AVAILABLE
  (retriable) and leaves the metadata as it was.
- EndTxn is answered once PrepareCommit / PrepareAbort is durable, as in Kafka. A request that finds
  the previous transaction still completing waits for it (up to a second) rather than answering
  CONCURRENT_TRANSACTIONS at once: same outcome, without the client's retry backoff. The markers are then
  appended to every partition of the transaction (a deleted partition is skipped), under each
  partition's lock and flushed together; markers in ``__consumer_offsets`` partitions also make the
  group coordinator publish or drop the transaction's pending offsets. Then CompleteCommit /
  CompleteAbort is written. A failed marker or write is retried until it succeeds or the broker stops.
  After a restart, transactions found prepared get their markers again (a repeated marker is harmless).
- Every ``transaction.abort.timed.out.transaction.cleanup.interval.ms`` transactions open past their
  timeout are aborted with a bumped epoch; every
  ``transaction.remove.expired.transaction.cleanup.interval.ms`` ids idle past
  ``transactional.id.expiration.ms`` are removed (a tombstone).
- The coordinator epoch written into markers is the leader epoch of the id's ``__transaction_state``
  partition.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Iterable
from typing import Any

import structlog

from broker.cluster import OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC
from broker.groups.coordinator import Clock, SystemClock
from broker.groups.persistence import build_records_batch
from broker.internal_topic import STOP_GRACE_S, BackgroundTasks, InternalTopic, replay_partition
from broker.transactions.records import (
    TopicPartition,
    TxnRecordFormatError,
    decode_txn_record,
    partition_for,
    txn_key,
    txn_value,
)
from broker.transactions.state import (
    COMPLETED,
    TransactionStateManager,
    TxnMetadata,
    TxnState,
    TxnTransit,
)
from protocol.errors import ErrorCode, KafkaError
from protocol.records.control import build_marker

log = structlog.get_logger()

RETRY_BACKOFF_S = 0.1  # between attempts at markers or a completion write that failed
# How long a request that finds the previous transaction still completing waits for it before answering
# CONCURRENT_TRANSACTIONS (which makes the client retry after its own backoff, 100 ms in librdkafka).
COMPLETION_WAIT_S = 1.0
RETRY_BACKOFF_MAX_S = 5.0
_STORAGE_ERRORS = (OSError, KafkaError)


class TransactionCoordinator:
    """The transaction coordinator of this broker: of every transactional id, or in a shared cluster of
    those of the ``__transaction_state`` partitions it owns (`broker.membership` routes requests)."""

    def __init__(self, cluster: Any, config: Any, groups: Any, clock: Clock | None = None,
                 partitions: Collection[int] | None = None) -> None:
        """``partitions``: in a shared cluster, the ``__transaction_state`` partitions this broker owns."""
        self.cluster = cluster
        self.partitions = None if partitions is None else frozenset(partitions)
        self.config = config
        self.groups = groups
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.state = TransactionStateManager(config.transaction_max_timeout_ms)
        self.loading = False
        self._tasks = BackgroundTasks("transactions.task_failed")
        self._completing: dict[str, asyncio.Task[None]] = {}
        self._load_task: asyncio.Task[None] | None = None
        self.topic = InternalTopic(
            cluster, TRANSACTION_STATE_TOPIC, lambda: config.transaction_state_log_num_partitions,
            lambda: {"cleanup.policy": "compact", "segment.bytes": config.transaction_state_log_segment_bytes,
                     "compression.type": "uncompressed"})
        self._timers: dict[str, Any] = {}
        self._stopped = False

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Begin loading an existing ``__transaction_state`` (in the background) and the cleanup timers."""
        topic = self.topic.get()
        if topic is not None:
            self.loading = True
            self._load_task = asyncio.create_task(self._load(topic), name="moldau-transactions-load")
        self._schedule("abort", self.config.transaction_abort_timed_out_transaction_cleanup_interval_ms,
                       self.abort_timed_out)
        self._schedule("expire", self.config.transaction_remove_expired_transaction_cleanup_interval_ms,
                       self.remove_expired)

    async def wait_loaded(self) -> None:
        """Return once the start-up load of ``__transaction_state`` is over (at once if there was none)."""
        if self._load_task is not None:
            await asyncio.shield(self._load_task)

    async def wait_completed(self, transactional_id: str) -> None:
        """Return once the id's prepared transaction has its markers and its Complete state written."""
        task = self._completing.get(transactional_id)
        if task is not None:
            await asyncio.shield(task)

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Cancel timers and the load; let in-flight writes finish (for at most ``grace_s``)."""
        self._stopped = True
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self._load_task is not None:
            self._load_task.cancel()
            await asyncio.gather(self._load_task, return_exceptions=True)
        await self._tasks.stop(grace_s)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        return self._tasks.spawn(coro)

    def _schedule(self, name: str, interval_ms: int, job: Any) -> None:
        """Run ``job`` every ``interval_ms``, one run at a time."""
        if self._stopped:
            return

        def due() -> None:
            if self._stopped:
                return
            task = self._spawn(job())
            task.add_done_callback(lambda _: self._schedule(name, interval_ms, job))

        self._timers[name] = self.clock.call_later(interval_ms, due)

    # ------------------------------------------------------------ APIs

    async def init_producer_id(self, transactional_id: str, timeout_ms: int,
                               expected: tuple[int, int] | None) -> tuple[ErrorCode, int, int]:
        """(error, producer id, epoch) for a transactional producer."""
        if self.loading:
            return ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, -1, -1
        if not self.state.valid_timeout(timeout_ms):
            return ErrorCode.INVALID_TRANSACTION_TIMEOUT, -1, -1
        new_id = None
        if self.state.needs_producer_id(transactional_id):
            new_id = await self.cluster.allocate_producer_id()
        await self._await_completion(transactional_id)
        decision = self.state.init_producer_id(transactional_id, timeout_ms, expected, self.clock.now_ms(), new_id)
        if decision.error is not ErrorCode.NONE or decision.transit is None:
            return decision.error, -1, -1
        transit = decision.transit
        if not await self._write(transit):
            return ErrorCode.COORDINATOR_NOT_AVAILABLE, -1, -1
        if decision.fence:
            # The Ongoing transaction is aborted with the fencing epoch; the client retries and then gets
            # an epoch of its own.
            log.info("transactions.fenced", transactional_id=transactional_id, producer_id=transit.producer_id,
                     producer_epoch=transit.producer_epoch, reason="a new producer initialised the id")
            self._start_completion(transactional_id)
            return ErrorCode.CONCURRENT_TRANSACTIONS, -1, -1
        log.debug("transactions.producer_initialised", transactional_id=transactional_id,
                 producer_id=transit.producer_id, producer_epoch=transit.producer_epoch)
        return ErrorCode.NONE, transit.producer_id, transit.producer_epoch

    async def add_partitions(self, transactional_id: str, producer_id: int, epoch: int,
                             partitions: Iterable[TopicPartition]) -> ErrorCode:
        if self.loading:
            return ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
        partitions = list(partitions)
        await self._await_completion(transactional_id)
        error, transit = self.state.add_partitions(transactional_id, producer_id, epoch, partitions,
                                                   self.clock.now_ms())
        if transit is None:
            return error
        return ErrorCode.NONE if await self._write(transit) else ErrorCode.COORDINATOR_NOT_AVAILABLE

    async def add_offsets(self, transactional_id: str, producer_id: int, epoch: int, group_id: str) -> ErrorCode:
        """AddOffsetsToTxn: the group's ``__consumer_offsets`` partition joins the transaction."""
        if self.loading:
            return ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
        try:
            index = await self.groups.offsets_partition_index(group_id)
        except _STORAGE_ERRORS as exc:
            log.warning("transactions.offsets_topic_unavailable", group=group_id, error=str(exc))
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        return await self.add_partitions(transactional_id, producer_id, epoch, [(OFFSETS_TOPIC, index)])

    async def end_txn(self, transactional_id: str, producer_id: int, epoch: int, commit: bool) -> ErrorCode:
        if self.loading:
            return ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
        error, transit = self.state.end_txn(transactional_id, producer_id, epoch, commit, self.clock.now_ms())
        if transit is None:
            return error
        if not await self._write(transit):
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        log.debug("transactions.prepared", transactional_id=transactional_id, state=transit.state.display_name,
                  partitions=len(transit.partitions))
        self._start_completion(transactional_id)
        return ErrorCode.NONE

    def verify_partitions(self, transactional_id: str, producer_id: int, epoch: int,
                          partitions: Iterable[TopicPartition]) -> dict[TopicPartition, ErrorCode]:
        """AddPartitionsToTxn v4+ ``verify_only`` (see `TransactionStateManager.verify_partitions`)."""
        if self.loading:
            return {tp: ErrorCode.COORDINATOR_LOAD_IN_PROGRESS for tp in partitions}
        return self.state.verify_partitions(transactional_id, producer_id, epoch, partitions)

    def verify(self, transactional_id: str | None, producer_id: int, epoch: int, topic: str, index: int) -> ErrorCode:
        """May a transactional batch go to this partition (see `TransactionStateManager.verify`)?"""
        if self.loading:
            return ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
        return self.state.verify(transactional_id, producer_id, epoch, (topic, index))

    def transactions(self) -> list[TxnMetadata]:
        """Every transactional id's metadata (DescribeTransactions, ListTransactions)."""
        return list(self.state.txns.values())

    # ------------------------------------------------------------ completion: markers, then Complete*

    async def _await_completion(self, transactional_id: str) -> None:
        """Give the id's previous transaction a moment to finish its markers: the next one usually
        starts right after a commit, and answering CONCURRENT_TRANSACTIONS would cost the client a
        retry backoff (the outcome is the same, only sooner)."""
        task = self._completing.get(transactional_id)
        if task is not None:
            await asyncio.wait({task}, timeout=COMPLETION_WAIT_S)

    def _start_completion(self, transactional_id: str) -> None:
        if transactional_id in self._completing or self._stopped:
            return
        self._completing[transactional_id] = self._spawn(self._complete(transactional_id))

    async def _complete(self, transactional_id: str) -> None:
        backoff = RETRY_BACKOFF_S
        try:
            while not self._stopped:
                txn = self.state.get(transactional_id)
                if txn is None or txn.state not in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT):
                    return
                commit = txn.state is TxnState.PREPARE_COMMIT
                if await self.write_markers(txn, commit):
                    transit = self.state.complete(transactional_id, self.clock.now_ms())
                    if transit is not None and await self._write(transit):
                        log.debug("transactions.completed", transactional_id=transactional_id,
                                  state=transit.state.display_name)
                        return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_BACKOFF_MAX_S)
        finally:
            self._completing.pop(transactional_id, None)

    async def write_markers(self, txn: TxnMetadata, commit: bool) -> bool:
        """Append the COMMIT or ABORT marker to every partition of ``txn`` and flush them; False when one
        could not be written (the caller retries)."""
        coordinator_epoch = self._coordinator_epoch(txn.transactional_id)
        written = []
        for topic, index in sorted(txn.partitions):
            partition = self.cluster.partition(topic, index)
            if partition is None:
                continue  # deleted since it joined the transaction: nothing to mark
            marker = build_marker(txn.producer_id, txn.producer_epoch, commit, coordinator_epoch,
                                  self.clock.now_ms(), partition.leader_epoch)
            try:
                async with partition.lock:
                    await partition.log.append(marker)
                    if topic == OFFSETS_TOPIC:
                        self.groups.complete_transaction(index, txn.producer_id, commit)
            except _STORAGE_ERRORS as exc:
                if isinstance(exc, KafkaError) and exc.code is ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
                    continue
                log.error("transactions.marker_failed", transactional_id=txn.transactional_id, topic=topic,
                          partition=index, error=str(exc))
                return False
            self.cluster.waiters.wake(topic, index)
            written.append(partition)
        results = await asyncio.gather(*(p.log.flush() for p in written), return_exceptions=True)
        for partition, result in zip(written, results, strict=True):
            if isinstance(result, BaseException) and not (
                    isinstance(result, KafkaError) and result.code is ErrorCode.UNKNOWN_TOPIC_OR_PARTITION):
                log.error("transactions.marker_flush_failed", transactional_id=txn.transactional_id,
                          topic=partition.topic.name, partition=partition.index, error=str(result))
                return False
        return True

    def _coordinator_epoch(self, transactional_id: str) -> int:
        topic = self.topic.get()
        if topic is None or not topic.partitions:
            return 0
        return topic.partitions[partition_for(transactional_id, len(topic.partitions))].leader_epoch

    # ------------------------------------------------------------ timers

    async def abort_timed_out(self) -> None:
        """Abort the transactions open past their timeout (the timer does it every cleanup interval)."""
        if self.loading:
            return
        now = self.clock.now_ms()
        for transactional_id in self.state.timed_out(now):
            txn = self.state.get(transactional_id)
            if txn is None or txn.pending is not None or txn.state is not TxnState.ONGOING:
                continue
            transit = self.state.fence(txn, now)
            log.info("transactions.timed_out", transactional_id=transactional_id, producer_id=txn.producer_id,
                     producer_epoch=txn.producer_epoch, timeout_ms=txn.timeout_ms,
                     reason="open longer than its transaction.timeout.ms: aborted and the producer fenced")
            if await self._write(transit):
                self._start_completion(transactional_id)

    async def remove_expired(self) -> None:
        """Remove the ids idle past ``transactional.id.expiration.ms`` (the timer does it every cleanup
        interval)."""
        if self.loading:
            return
        for transit in self.state.expired(self.clock.now_ms(), self.config.transactional_id_expiration_ms):
            txn = self.state.get(transit.transactional_id)
            if txn is None or txn.pending is not None or txn.state not in (TxnState.EMPTY, *COMPLETED):
                continue
            if await self._write(transit):
                log.info("transactions.id_expired", transactional_id=transit.transactional_id)

    # ------------------------------------------------------------ __transaction_state

    async def _write(self, transit: TxnTransit) -> bool:
        """Append the transit (a tombstone for Dead) to the id's partition and flush; apply it on success.

        CompleteCommit / CompleteAbort are not flushed on their own: losing one in a crash leaves the
        Prepare state, whose markers are written again on restart (a repeated marker changes nothing), and
        the next flush of the partition covers it anyway. Everything else is durable before it is acted on."""
        self.state.begin(transit)
        ok = False
        try:
            partition = await self._partition(transit.transactional_id)
            value = None if transit.state is TxnState.DEAD else txn_value(transit.log_value())
            batch = build_records_batch([(txn_key(transit.transactional_id), value)], self.clock.now_ms(),
                                        partition.leader_epoch)
            async with partition.lock:
                await partition.log.append(batch)
            self.cluster.waiters.wake(TRANSACTION_STATE_TOPIC, partition.index)
            if transit.state not in COMPLETED:
                await partition.log.flush()
            ok = True
        except _STORAGE_ERRORS as exc:
            gone = isinstance(exc, KafkaError) and exc.code is ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            (log.warning if gone else log.error)("transactions.write_failed",
                                                 transactional_id=transit.transactional_id,
                                                 state=transit.state.display_name, error=str(exc))
        finally:
            self.state.write_done(transit, ok)
        return ok

    async def _partition(self, transactional_id: str) -> Any:
        return await self.topic.partition(transactional_id)

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
        except Exception:  # serve what was read rather than refusing every transaction forever
            log.exception("transactions.load_failed")
        self.loading = False
        prepared = self.state.prepared()
        log.info("transactions.loaded", transactional_ids=len(self.state.txns), records=records,
                 prepared=len(prepared), ms=round((time.perf_counter() - started) * 1000, 1))
        for transactional_id in prepared:
            self._start_completion(transactional_id)

    async def _load_partition(self, partition: Any) -> int:
        def on_record(batch: Any, record: Any) -> None:
            try:
                self.state.replay(decode_txn_record(record.key, record.value))
            except TxnRecordFormatError as exc:
                log.warning("transactions.record_skipped", partition=partition.index, offset=record.offset,
                            reason=str(exc))

        return await replay_partition(partition, on_record, lambda batch: None)
