"""Produce (key 0), versions 0-11: validate each partition's record batch and append it.

Kafka behaviours implemented (KafkaApis.handleProduceRequest, ReplicaManager.appendRecords /
appendToLocalLog, UnifiedLog.append, LogValidator; see `broker.produce_validation` for the batch checks):
- Per-partition semantics: every partition is checked on its own and a bad one does not keep the good
  ones of the same request from being appended. All checks of a partition run before its append.
- Unknown topic or partition index -> UNKNOWN_TOPIC_OR_PARTITION. Produce never auto-creates topics
  (Kafka 4 creates them only through Metadata; clients ask Metadata first).
- Internal topics (``__consumer_offsets``, ``__transaction_state``) -> INVALID_TOPIC_EXCEPTION: clients
  lack Kafka's ``internalTopicsAllowed``.
- Versions 0-2 (legacy MessageSets) are advertised only because librdkafka < 2.11.1 enables compression
  when the range contains v0 (KAFKA-18659); Kafka 4 then refuses them by closing the connection, and so
  does this handler.
- Transactional batches need the request's ``transactional_id`` (else TRANSACTIONAL_ID_AUTHORIZATION_FAILED
  for the whole request, as Kafka answers) and are verified with the transaction coordinator under the
  partition's lock: the id's current producer and epoch (an older epoch: INVALID_PRODUCER_EPOCH), and the
  partition in its Ongoing transaction (else INVALID_TXN_STATE); while the coordinator loads,
  NOT_ENOUGH_REPLICAS (retriable). A ``transactional_id`` on non-transactional batches is ignored, as
  Kafka ignores it.
- With an authorizer: a ``transactional_id`` needs WRITE on it (else TRANSACTIONAL_ID_AUTHORIZATION_FAILED
  for the whole request) and each topic WRITE (else TOPIC_AUTHORIZATION_FAILED, before any other check).
- acks must be -1, 0 or 1, else INVALID_REQUIRED_ACKS for every partition that passed the checks above.
  acks=0 gets no response at all; when any partition failed, the connection is closed afterwards (as
  Kafka does) so the producer notices.
- Idempotent producers (producer id >= 0): duplicates of one of the last 5 batches answer NONE with the
  original offsets, older epochs INVALID_PRODUCER_EPOCH, gaps OUT_OF_ORDER_SEQUENCE_NUMBER
  (`broker.producer_state`).
- LogAppendTime topics: the engine stamps the broker's time into the batch and the response carries it
  in ``log_append_time_ms`` (else -1). ``log_start_offset`` (v5+) is the partition's after the append, or
  -1 where Kafka has none (unknown partition, request-level errors).
- Client quotas (``producer_byte_rate``): the request's record bytes are accounted to the client (user and
  client id); one over its quota gets ``throttle_time_ms`` and its connection is muted that long (KIP-219).
- Errors carry a v8+ ``error_message`` saying what was wrong (Kafka fills it only for per-record
  validation errors, together with ``record_errors``).
- A partition made offline or given a failed disk by a fault rule (``broker/faults.py``) answers
  NOT_LEADER_OR_FOLLOWER or KAFKA_STORAGE_ERROR and nothing is appended.
- Appended batches get the partition's leader epoch stamped into their header, as Kafka's LogValidator
  does. The requests of one connection append in request order (the connection's produce lock), each
  partition under its own lock and wake long-poll Fetches. acks=-1 then awaits every appended
  partition's ``flush()`` outside the lock, all at once, so the file engine's group commit syncs them
  in one pass (a no-op for the memory engine). A failed append or flush (OSError) answers
  KAFKA_STORAGE_ERROR.
- Record walks (every compressed batch, and uncompressed ones where a topic rule needs the records; see
  `broker.produce_validation`) run on the event loop when small, else on a small worker pool, so a
  large or hostile batch does not stall other clients; decompression is capped by
  ``message.max.decompressed.bytes``.

Left out: quotas and throttling;
``compression.type`` recompression; produce v12+ (topic ids); the ``current_leader`` / node endpoint
hints of v10+ (this node is always the leader).
"""

from __future__ import annotations

import asyncio
import functools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import structlog

from broker.handlers import CloseConnection, RequestContext
from broker.produce_validation import (
    BatchRejected,
    RecordError,
    TopicRules,
    frame_batch,
    needs_record_walk,
    validate_batch,
    validate_header,
    validate_records,
)
from broker.security.acls import AclOperation, ResourceType
from protocol import messages
from protocol.errors import ErrorCode, KafkaError
from protocol.records import RecordBatch, set_partition_leader_epoch
from protocol.records.batch import ATTRIBUTES_OFFSET, MAGIC, MAGIC_OFFSET, TRANSACTIONAL_FLAG

log = structlog.get_logger()

VALID_ACKS = (-1, 0, 1)
FIRST_RECORD_BATCH_VERSION = 3
# A record walk this small runs on the event loop (well under a millisecond); larger ones, and any
# compressed batch that inflates past INLINE_WALK_MAX_DECOMPRESSED_BYTES, run on a worker thread so
# other clients are served meanwhile.
INLINE_WALK_MAX_RECORDS = 256
INLINE_WALK_MAX_BYTES = 64 * 1024
INLINE_WALK_MAX_DECOMPRESSED_BYTES = 1024 * 1024
# Worker threads for record walks: also bounds the memory of decompressed batches held at once
# (threads x message.max.decompressed.bytes).
RECORD_WALK_THREADS = 2
# Batches larger than this are validated on the worker threads from the start (CRC included: the CRC-32C
# library releases the GIL for large buffers, so the event loop runs meanwhile).
OFF_LOOP_HEADER_BYTES = 1024 * 1024

_RESP = messages.ProduceResponse
_PARTITION = _RESP.PartitionProduceResponse


@dataclass(slots=True)
class _Outcome:
    """One partition's answer; ``partition`` is set when its batch was appended (for acks=-1 flushes)."""

    response: Any
    partition: Any = None


def topic_rules(cluster: Any, topic: Any) -> TopicRules:
    """The topic configs the batch checks need, resolved through topic overrides and broker defaults."""
    value = cluster.config_value
    return TopicRules(
        max_message_bytes=value(topic, "max.message.bytes"),
        segment_bytes=value(topic, "segment.bytes"),
        log_append_time=value(topic, "message.timestamp.type") == "LogAppendTime",
        timestamp_before_max_ms=value(topic, "message.timestamp.before.max.ms"),
        timestamp_after_max_ms=value(topic, "message.timestamp.after.max.ms"),
        compacted="compact" in str(value(topic, "cleanup.policy")).split(","),
    )


def _error(index: int, code: ErrorCode, message: str, log_start_offset: int = -1,
           record_errors: tuple[RecordError, ...] = ()) -> Any:
    return _PARTITION(
        index=index, error_code=int(code), base_offset=-1, log_append_time_ms=-1,
        log_start_offset=log_start_offset, error_message=message,
        record_errors=[_RESP.BatchIndexAndErrorMessage(batch_index=e.batch_index,
                                                       batch_index_error_message=e.message)
                       for e in record_errors])


def _success(index: int, base_offset: int, log_append_time: int, log_start_offset: int) -> Any:
    return _PARTITION(index=index, error_code=0, base_offset=base_offset, log_append_time_ms=log_append_time,
                      log_start_offset=log_start_offset, error_message=None)


def _is_transactional(records: Any) -> bool:
    """Whether a partition's first batch is transactional, peeked from its header as Kafka does."""
    if records is None or len(records) <= ATTRIBUTES_OFFSET + 1 or records[MAGIC_OFFSET] != MAGIC:
        return False
    return bool(records[ATTRIBUTES_OFFSET + 1] & TRANSACTIONAL_FLAG)


async def handle_produce(header: Any, body: Any, ctx: RequestContext) -> Any:
    version = ctx.api_version
    acks = body.acks
    if version < FIRST_RECORD_BATCH_VERSION:
        # Kafka 4 advertises v0-2 only for old librdkafka's feature checks and closes the connection
        # when one arrives.
        raise CloseConnection(f"Produce v{version} (message format v0/v1) is not supported; Kafka 4 and "
                              f"this broker accept Produce v3 and later with v2 record batches")
    now_ms = int(time.time() * 1000)
    transactional = version >= FIRST_RECORD_BATCH_VERSION and any(
        _is_transactional(p.records) for t in body.topic_data for p in t.partition_data)

    async with ctx.connection.produce_lock:
        topics, appended = await _append_all(ctx, body, acks, version, now_ms, transactional)

    if acks == -1 and len(appended) == 1:
        await _flush(appended[0])
    elif acks == -1 and appended:
        # Concurrently, so the file engine's group commit syncs every partition in one pass.
        await asyncio.gather(*(_flush(outcome) for outcome in appended))
    throttle_ms = 0
    if ctx.quotas_active:
        from broker.quotas import PRODUCER_BYTE_RATE

        size = sum(len(p.records or b"") for t in body.topic_data for p in t.partition_data)
        throttle_ms = ctx.quota_throttle_ms(PRODUCER_BYTE_RATE, size, header.client_id)
    if acks == 0:
        failed = [(t.name, p.index, p.error_code) for t in topics for p in t.partition_responses if p.error_code]
        if failed:
            # acks=0 has no response to carry errors, so Kafka closes the connection to make the
            # producer notice (and refresh its metadata).
            raise CloseConnection(f"acks=0 produce failed for {failed}")
        return None
    return _RESP(responses=topics, throttle_time_ms=throttle_ms)


async def _append_all(ctx: RequestContext, body: Any, acks: int, version: int, now_ms: int,
                      transactional: bool) -> tuple[list[Any], list[_Outcome]]:
    topics = []
    appended: list[_Outcome] = []
    # Kafka refuses the whole request when it has transactional batches but no transactional id, or an id
    # the principal may not WRITE.
    refusal = None
    if transactional and not body.transactional_id:
        refusal = "Transactional record batches need the producer's transactional_id in the Produce request"
    elif body.transactional_id and not ctx.authorized(AclOperation.WRITE, ResourceType.TRANSACTIONAL_ID,
                                                      body.transactional_id):
        refusal = f"Not authorized to write with transactional id {body.transactional_id!r}"
    for topic_data in body.topic_data:
        partitions = []
        topic_denied = refusal is None and not ctx.authorized(AclOperation.WRITE, ResourceType.TOPIC, topic_data.name)
        for pdata in topic_data.partition_data:
            if refusal is not None:
                outcome = _Outcome(_error(pdata.index, ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, refusal))
            elif topic_denied:
                outcome = _Outcome(_error(pdata.index, ErrorCode.TOPIC_AUTHORIZATION_FAILED,
                                          f"Not authorized to write to topic {topic_data.name!r}"))
            else:
                outcome = await _produce_partition(ctx, topic_data.name, pdata, acks, version, now_ms,
                                                   body.transactional_id)
            if outcome.partition is not None:
                appended.append(outcome)
            partitions.append(outcome.response)
        topics.append(_RESP.TopicProduceResponse(name=topic_data.name, partition_responses=partitions))
    return topics, appended


async def _flush(outcome: _Outcome) -> None:
    # Durability hook for acks=all: the file engine makes this an fsync shared by concurrent appends.
    partition = outcome.partition
    try:
        await partition.log.flush()
    except (OSError, KafkaError) as exc:  # the file engine raises StorageError (a KafkaError)
        if isinstance(exc, KafkaError) and exc.code is ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
            # Deleted (a DeleteTopics) while the records were being made durable: the client's doing.
            outcome.response = _error(partition.index, exc.code, exc.message, -1)
            return
        log.error("produce.flush_failed", topic=partition.topic.name, partition=partition.index, error=str(exc))
        outcome.response = _error(
            partition.index, ErrorCode.KAFKA_STORAGE_ERROR,
            f"The records were written but could not be made durable: {exc}",
            partition.log.log_start_offset)


async def _produce_partition(ctx: RequestContext, name: str, pdata: Any, acks: int, version: int,
                             now_ms: int, transactional_id: str | None = None) -> _Outcome:
    cluster = ctx.broker.cluster
    index = pdata.index
    topic = cluster.get(name)
    partition = cluster.partition(name, index)
    if partition is None:
        message = (f"This server does not host topic {name!r}; create it first (Produce does not "
                   f"auto-create topics)" if topic is None else
                   f"Topic {name!r} has {len(topic.partitions)} partition(s); partition {index} does not exist")
        return _rejected(ctx, name, index, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, message)
    fault = ctx.partition_fault(name, index)
    if fault is not None:
        return _rejected(ctx, name, index, fault, f"{name}-{index}: {fault.message} (fault injection)")
    try:
        batch = frame_batch(pdata.records, version)
    except BatchRejected as exc:
        return _rejected(ctx, name, index, exc.code, exc.message)
    if acks not in VALID_ACKS:
        return _rejected(ctx, name, index, ErrorCode.INVALID_REQUIRED_ACKS,
                         f"acks={acks} is not valid: use -1 (all), 0 or 1")
    if topic.is_internal:
        return _rejected(ctx, name, index, ErrorCode.INVALID_TOPIC_EXCEPTION,
                         f"Cannot append to internal topic {name}")

    tp = f"{name}-{index}"
    rules = topic_rules(cluster, topic)
    max_decompressed = ctx.broker.config.message_max_decompressed_bytes
    try:
        if batch.total_size > OFF_LOOP_HEADER_BYTES:
            # Its CRC alone would hold the event loop for a millisecond per 16 MiB: all of it off the loop.
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(_walker_pool(), validate_batch, batch, rules, now_ms, tp, max_decompressed)
        else:
            validate_header(batch, rules, now_ms, tp)
            if needs_record_walk(batch, rules, now_ms):
                await _walk_records(batch, rules, now_ms, tp, max_decompressed)
    except BatchRejected as exc:
        return _rejected(ctx, name, index, exc.code, exc.message, partition.log.log_start_offset, exc.record_errors)
    try:
        return await _append(ctx, partition, batch, pdata.records, rules, now_ms, tp, transactional_id)
    except KafkaError as exc:
        return _rejected(ctx, name, index, exc.code, exc.message, partition.log.log_start_offset)


@functools.cache
def _walker_pool() -> ThreadPoolExecutor:
    # Made on first use: most brokers never see a batch that needs it.
    return ThreadPoolExecutor(RECORD_WALK_THREADS, thread_name_prefix="moldau-produce-walk")


async def _walk_records(batch: RecordBatch, rules: TopicRules, now_ms: int, tp: str, max_decompressed: int) -> None:
    """`validate_records` on the event loop when it is small, else on a worker thread."""
    if batch.record_count <= INLINE_WALK_MAX_RECORDS and batch.total_size <= INLINE_WALK_MAX_BYTES:
        inline_cap = min(max_decompressed, INLINE_WALK_MAX_DECOMPRESSED_BYTES)
        try:
            validate_records(batch, rules, now_ms, tp, inline_cap)
            return
        except BatchRejected as exc:
            # Only a decompression past the inline cap answers MESSAGE_TOO_LARGE here: retry off the loop.
            if exc.code is not ErrorCode.MESSAGE_TOO_LARGE or inline_cap == max_decompressed:
                raise
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(_walker_pool(), validate_records, batch, rules, now_ms, tp, max_decompressed)


async def _append(ctx: RequestContext, partition: Any, batch: RecordBatch, records: Any, rules: TopicRules,
                  now_ms: int, tp: str, transactional_id: str | None = None) -> _Outcome:
    plog = partition.log
    index = partition.index
    producer_id = batch.producer_id
    append_time = now_ms if rules.log_append_time else None
    async with partition.lock:
        if batch.is_transactional:
            # Under the partition's lock: no marker of this transaction can land between check and append.
            _verify_transaction(ctx, batch, partition, transactional_id, tp)
        state = None
        if producer_id >= 0:
            state = await ctx.broker.cluster.producer_state(partition)
            duplicate = state.check(producer_id, batch.producer_epoch, batch.base_sequence, batch.last_sequence,
                                    plog.log_end_offset, now_ms)
            if duplicate is not None:
                log.debug("produce.duplicate", topic=partition.topic.name, partition=index,
                          producer_id=producer_id, base_sequence=batch.base_sequence,
                          base_offset=duplicate.first_offset)
                return _Outcome(_success(index, duplicate.first_offset, duplicate.timestamp,
                                         plog.log_start_offset))
        # Kafka stamps the leader epoch into every batch it appends (outside the CRC); consumers use it
        # to detect log truncation (KIP-320).
        set_partition_leader_epoch(records, 0, partition.leader_epoch)
        try:
            result = await plog.append(records, log_append_time=append_time)
        except OSError as exc:
            log.error("produce.append_failed", topic=partition.topic.name, partition=index, error=str(exc))
            raise KafkaError(ErrorCode.KAFKA_STORAGE_ERROR, f"Could not append to {tp}: {exc}") from None
        except KafkaError:
            # A failed statement may still have committed (a database gone mid-commit): the producer
            # state is rebuilt from the log before the next batch, so its retry is found a duplicate.
            ctx.broker.cluster.forget_producer_state(partition)
            raise
        if state is not None:
            max_timestamp = append_time if append_time is not None else batch.max_timestamp
            state.record(producer_id, batch.producer_epoch, batch.base_sequence, batch.last_sequence,
                         result.base_offset, result.last_offset, max_timestamp, now_ms)
    ctx.broker.cluster.waiters.wake(partition.topic.name, index)
    response = _success(index, result.base_offset, result.log_append_time, plog.log_start_offset)
    return _Outcome(response, partition)


def _verify_transaction(ctx: RequestContext, batch: RecordBatch, partition: Any, transactional_id: str | None,
                        tp: str) -> None:
    """A transactional batch must belong to its transactional id's current producer and epoch and to a
    partition added to its Ongoing transaction (KIP-890's verification, made locally). In a shared cluster
    a leader that is not the id's transaction coordinator has nobody local to ask and does not verify, as
    Kafka before 3.6 (transaction.partition.verification.enable=false)."""
    if transactional_id is not None and not ctx.broker.membership.owns_transactional_id(transactional_id):
        return
    error = ctx.broker.transactions.verify(transactional_id, batch.producer_id, batch.producer_epoch,
                                           partition.topic.name, partition.index)
    if error is ErrorCode.NONE:
        return
    if error is ErrorCode.COORDINATOR_LOAD_IN_PROGRESS:
        # Retriable for every client, as Kafka answers while the coordinator cannot verify yet.
        raise KafkaError(ErrorCode.NOT_ENOUGH_REPLICAS,
                         f"The transaction coordinator is loading; retry the batch for {tp}")
    where = (f"producer {batch.producer_id} epoch {batch.producer_epoch} of transactional id "
             f"{transactional_id!r} in {tp}")
    messages_by_error = {
        ErrorCode.INVALID_PRODUCER_EPOCH: f"The epoch of {where} is older than the transactional id's: fenced",
        ErrorCode.INVALID_PRODUCER_ID_MAPPING: f"Unknown {where}: call InitProducerId for the transactional id",
    }
    code = error if error in messages_by_error else ErrorCode.INVALID_TXN_STATE
    raise KafkaError(code, messages_by_error.get(
        code, f"The partition is not in an ongoing transaction of {where}: add it with AddPartitionsToTxn first"))


def _rejected(ctx: RequestContext, topic: str, index: int, code: ErrorCode, message: str, log_start_offset: int = -1,
              record_errors: tuple[RecordError, ...] = ()) -> _Outcome:
    ctx.log_rejected("produce.rejected", topic=topic, partition=index, error=code.name, reason=message)
    return _Outcome(_error(index, code, message, log_start_offset, record_errors))
