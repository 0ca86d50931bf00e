"""Fetch (key 1), versions 4-17: whole record batches from partition logs, with long polling and KIP-227
fetch sessions.

Kafka behaviours implemented (``KafkaApis.handleFetchRequest``, ``ReplicaManager.fetchMessages`` /
``readFromLog``, ``Partition.fetchRecords``, ``DelayedFetch``):

- with an authorizer, a consumer needs READ on each topic and a follower CLUSTER_ACTION on the cluster,
  else TOPIC_AUTHORIZATION_FAILED for those partitions;
- topics by name (v4-12) or by topic id (v13+). An unknown id answers UNKNOWN_TOPIC_ID for its
  partitions, an unknown name or partition UNKNOWN_TOPIC_OR_PARTITION; v13+ responses carry the topic
  id and no name. Partitions are answered in request (or session) order, those that could be read
  first and the unknown ones after them, grouped into one topic entry per run of the same topic.
- per partition, in Kafka's order: a topic id that no longer matches the log's (a session that
  outlived a topic re-created under the same name) -> INCONSISTENT_TOPIC_ID; ``current_leader_epoch``
  (v9+, negative = not given) older than ours -> FENCED_LEADER_EPOCH, newer -> UNKNOWN_LEADER_EPOCH (v16+
  also fill ``current_leader`` and ``node_endpoints``); ``last_fetched_epoch`` (v12+) newer than ours
  -> OFFSET_OUT_OF_RANGE, equal with a fetch offset past the log end -> ``diverging_epoch``;
  ``fetch_offset`` outside [log start, log end] -> OFFSET_OUT_OF_RANGE. Errors found while reading
  carry high watermark, last stable offset and log start offset -1, as Kafka's do.
- records are whole batches up to the last stable offset (read_committed: below the first open
  transaction) or the high watermark (read_uncommitted, the log end on a single node). The first
  partition that has data returns at least one whole batch even past ``partition_max_bytes`` and
  ``max_bytes``; after it both limits hold, ``max_bytes`` across the response (capped by the broker's
  ``fetch.max.bytes``, 55 MiB by default). ``aborted_transactions`` is null for read_uncommitted; for
  read_committed it lists the aborted transactions (producer id, first offset) that overlap the
  readable range, from the log's aborted-transaction index. ``preferred_read_replica`` -1.
- client quotas (``consumer_byte_rate``): the record bytes read are accounted to the client; a fetch that
  puts it over its quota is answered, as in Kafka, with no partitions (the bytes taken back, the session
  unchanged, a full fetch creating none), ``throttle_time_ms``, and its connection muted that long (KIP-219).
- long poll: with fewer than ``min_bytes`` (capped at the fetch's max bytes) and ``max_wait_ms`` > 0,
  the request registers one waiter on all its partitions; an append, truncation, deletion or log
  start move wakes it and every partition is read again, until ``min_bytes`` are there, a read
  fails, or ``max_wait_ms`` passes. Requests with nothing readable (all partitions unknown) answer
  at once, as Kafka does. The waiter is always unregistered, also when the connection closes
  (cancellation).
- fetch sessions (v7+): see `broker.fetch_sessions`. Top-level errors FETCH_SESSION_ID_NOT_FOUND,
  INVALID_FETCH_SESSION_EPOCH and FETCH_SESSION_TOPIC_ID_ERROR come with no partitions and session id
  0 (the session's own id when a duplicate request moved the epoch meanwhile). Sessions belong to the
  broker, not to a connection; the session is created or updated after the long poll, as in Kafka.
- ``replica_id`` (v4-14) / ``replica_state.replica_id`` (v15+) >= 0 is a follower: this single node
  has none, so every known partition answers UNKNOWN_LEADER_EPOCH when the request gives a leader
  epoch and NOT_LEADER_OR_FOLLOWER otherwise (``Partition.followerReplicaOrThrow``).
- ``cluster_id`` (v12+): a value other than ours answers INCONSISTENT_CLUSTER_ID (top level, no
  partitions). Kafka checks it only on its KRaft listener; a client that sends it gets the same rule.
- a partition made offline or given a failed disk by a fault rule (``broker/faults.py``) answers
  NOT_LEADER_OR_FOLLOWER or KAFKA_STORAGE_ERROR, at once (an error ends a long poll).
- an ``isolation_level`` other than 0 or 1 answers INVALID_REQUEST at the top level and in every
  partition (Kafka fails the request from an IllegalArgumentException, i.e. UNKNOWN_SERVER_ERROR).

Left out: ``rack_id`` (v11+) and preferred read replicas (one node); quotas and throttling; divergence detection for
a ``last_fetched_epoch`` older than the partition's leader epoch (needs a leader epoch cache); the
zstd/v<10 UNSUPPORTED_COMPRESSION_TYPE check Kafka 3.x had (Kafka 4 dropped it with down-conversion).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from broker.fetch_sessions import (
    ZERO_UUID,
    ContextKind,
    FetchSessionCache,
    PartitionKey,
    PartitionRequest,
)
from broker.handlers import READ_COMMITTED, READ_UNCOMMITTED, RequestContext
from broker.security.acls import CLUSTER_RESOURCE_NAME, AclOperation, ResourceType
from protocol import messages
from protocol.errors import ErrorCode, KafkaError
from storage.interface import OffsetOutOfRange

log = structlog.get_logger()

_EMPTY = b""

_Response = messages.FetchResponse
_PartitionData = _Response.PartitionData
_ABORTED = _Response.AbortedTransaction

def session_cache(broker: Any) -> FetchSessionCache:
    """The broker's fetch session cache (sessions are per broker, not per connection)."""
    return broker.fetch_sessions


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


def _error_data(req: PartitionRequest, error: ErrorCode, aborted: list[Any] | None) -> Any:
    """A partition answered with an error. Kafka sends an empty aborted list for errors found before
    the read (unknown topics) and null for errors found while reading; both have -1 offsets."""
    return _PartitionData(partition_index=req.partition, error_code=int(error), high_watermark=-1,
                          last_stable_offset=-1, log_start_offset=-1, aborted_transactions=aborted,
                          preferred_read_replica=-1, records=_EMPTY)


class _ReadOutcome:
    """One pass over the partitions: their response data and what the long poll decides on."""

    __slots__ = ("bytes", "failed", "observed", "results")

    def __init__(self) -> None:
        self.results: list[tuple[PartitionRequest, Any]] = []
        self.bytes = 0
        self.failed = False  # an error or a diverging epoch: Kafka answers at once
        self.observed: list[tuple[Any, int, int]] = []

    def complete(self, min_bytes: int) -> bool:
        return self.failed or self.bytes >= min_bytes


class _Reader:
    """Reads the partitions of one request, applying Kafka's per-partition checks and size limits."""

    def __init__(self, ctx: RequestContext, body: Any, is_follower: bool, fetch_max_bytes: int) -> None:
        self.cluster = ctx.broker.cluster
        self.version = ctx.api_version
        self.node_id = ctx.broker.node_id
        self.read_committed = body.isolation_level == READ_COMMITTED
        self.is_follower = is_follower
        self.fetch_max_bytes = fetch_max_bytes
        self.ctx = ctx

    async def read(self, requests: list[PartitionRequest]) -> _ReadOutcome:
        outcome = _ReadOutcome()
        limit = self.fetch_max_bytes
        min_one = True
        for req in requests:
            partition = self.cluster.partition(req.topic, req.partition)
            data = await self._read_partition(req, partition, limit, min_one)
            records = data.records
            size = sum(len(c) for c in records) if type(records) is list else len(records)
            if size:
                # Only the first partition with data may exceed the limits (so a consumer always progresses).
                min_one = False
                limit = max(0, limit - size)
            outcome.results.append((req, data))
            outcome.bytes += size
            if data.error_code or data.diverging_epoch.epoch != -1:
                outcome.failed = True
            plog = partition.log if partition is not None else None
            outcome.observed.append((plog, data.high_watermark, data.log_start_offset))
        return outcome

    def unchanged_since(self, outcome: _ReadOutcome, requests: list[PartitionRequest]) -> bool:
        """False when a log moved after ``outcome`` was read (an engine that awaits lets appends in)."""
        for req, (plog, hw, start) in zip(requests, outcome.observed, strict=True):
            partition = self.cluster.partition(req.topic, req.partition)
            current = partition.log if partition is not None else None
            if current is not plog:
                return False
            if current is not None and hw >= 0 and (current.high_watermark != hw or current.log_start_offset != start):
                return False
        return True

    async def _read_partition(self, req: PartitionRequest, partition: Any, limit: int, min_one: bool) -> Any:
        if partition is None:
            # Deleted while the request waited (or between the checks and the read).
            return _error_data(req, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, None)
        if req.topic_id != ZERO_UUID and partition.topic.topic_id != req.topic_id:
            return _error_data(req, ErrorCode.INCONSISTENT_TOPIC_ID, None)
        fault = self.ctx.partition_fault(partition.topic.name, req.partition)
        if fault is not None:
            return _error_data(req, fault, None)
        leader_epoch = partition.leader_epoch
        # Any negative epoch means "not given" in Fetch (FetchRequest.optionalEpoch); ListOffsets only -1.
        if req.current_leader_epoch >= 0 and req.current_leader_epoch != leader_epoch:
            error = (ErrorCode.FENCED_LEADER_EPOCH if req.current_leader_epoch < leader_epoch
                     else ErrorCode.UNKNOWN_LEADER_EPOCH)
            return self._with_leader(_error_data(req, error, None), partition)
        if self.is_follower:
            # A single node has no followers: Kafka's answer to a replica id it does not know.
            error = (ErrorCode.UNKNOWN_LEADER_EPOCH if req.current_leader_epoch >= 0
                     else ErrorCode.NOT_LEADER_OR_FOLLOWER)
            return self._with_leader(_error_data(req, error, None), partition)

        plog = partition.log
        high_watermark = plog.high_watermark
        last_stable = plog.last_stable_offset
        log_start = plog.log_start_offset
        log_end = plog.log_end_offset
        aborted: list[Any] | None = [] if self.read_committed else None
        if req.last_fetched_epoch >= 0:
            # Partition.readRecords: the end offset of the fetcher's last epoch. This log has one
            # epoch, the current one, ending at the log end; a newer epoch has no known end offset.
            if req.last_fetched_epoch > leader_epoch or req.fetch_offset < log_start:
                return _error_data(req, ErrorCode.OFFSET_OUT_OF_RANGE, None)
            if req.last_fetched_epoch == leader_epoch and req.fetch_offset > log_end:
                data = _PartitionData(partition_index=req.partition, high_watermark=high_watermark,
                                      last_stable_offset=last_stable, log_start_offset=log_start,
                                      aborted_transactions=aborted, records=_EMPTY)
                data.diverging_epoch.epoch = leader_epoch
                data.diverging_epoch.end_offset = log_end
                return data
        if self.is_follower:
            max_offset = log_end
        else:
            max_offset = last_stable if self.read_committed else high_watermark
        max_bytes = max(0, min(req.max_bytes, limit))
        try:
            result = await plog.read(req.fetch_offset, max_bytes, min_one_batch=min_one, max_offset=max_offset)
        except OffsetOutOfRange:
            return _error_data(req, ErrorCode.OFFSET_OUT_OF_RANGE, None)
        except KafkaError as exc:  # deleted meanwhile (UNKNOWN_TOPIC_OR_PARTITION), or a disk error
            return _error_data(req, exc.code, None)
        chunks = result.chunks
        if not chunks:
            records: Any = _EMPTY
        elif len(chunks) == 1:
            records = chunks[0]
        else:
            # The codec writes a list of buffers as one records field, without joining them.
            records = chunks
        if self.read_committed and chunks:
            # Every aborted transaction overlapping what can be returned (up to the last stable offset;
            # entries past the returned batches are harmless, clients match them by offset), so the
            # client can drop the aborted batches.
            try:
                found = await plog.aborted_transactions(req.fetch_offset, max_offset)
            except KafkaError as exc:
                return _error_data(req, exc.code, None)
            aborted = [_ABORTED(producer_id=t.producer_id, first_offset=t.first_offset) for t in found]
        return _PartitionData(partition_index=req.partition, error_code=0, high_watermark=result.high_watermark,
                              last_stable_offset=plog.last_stable_offset, log_start_offset=result.log_start_offset,
                              aborted_transactions=aborted, preferred_read_replica=-1, records=records)

    def _with_leader(self, data: Any, partition: Any) -> Any:
        if self.version >= 16:
            data.current_leader.leader_id = self.node_id
            data.current_leader.leader_epoch = partition.leader_epoch
        return data


async def _read_until_ready(reader: _Reader, requests: list[PartitionRequest], max_wait_ms: int,
                            min_bytes: int) -> list[tuple[PartitionRequest, Any]]:
    """Read, and while fewer than ``min_bytes`` are there, wait for appends up to ``max_wait_ms``."""
    outcome = await reader.read(requests)
    if not requests or max_wait_ms <= 0 or outcome.complete(min_bytes):
        return outcome.results
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_wait_ms / 1000
    waiters = reader.cluster.waiters
    waiter = waiters.register({(req.topic, req.partition) for req in requests})
    try:
        # The waiter exists only from now on: a log that moved during the first read is read again at once.
        stale = not reader.unchanged_since(outcome, requests)
        while True:
            if not stale:
                remaining = deadline - loop.time()
                if remaining <= 0 or not await waiter.wait(remaining):
                    break
            stale = False
            waiter.event.clear()
            outcome = await reader.read(requests)
            if outcome.complete(min_bytes):
                break
    finally:
        waiters.unregister(waiter)
    return outcome.results


def _requests(body: Any, version: int, cluster: Any) -> tuple[list[PartitionRequest], list[PartitionKey]]:
    """The request's partitions and forgotten partitions, with topic ids resolved to names (v13+)."""
    requests = []
    for topic in body.topics:
        if version >= 13:
            known = cluster.get_by_id(topic.topic_id)
            name, topic_id = (known.name if known is not None else None), topic.topic_id
        else:
            name, topic_id = topic.topic, ZERO_UUID
        for p in topic.partitions:
            # Fields a version lacks decode as their spec defaults (-1), which mean "not given".
            requests.append(PartitionRequest(name, topic_id, p.partition, p.fetch_offset, p.partition_max_bytes,
                                             p.current_leader_epoch, p.last_fetched_epoch, p.log_start_offset))
    forgotten: list[PartitionKey] = []
    for topic in body.forgotten_topics_data:
        ident = topic.topic_id if version >= 13 else topic.topic
        forgotten.extend((ident, index) for index in topic.partitions)
    return requests, forgotten


def _response(version: int, error: ErrorCode, session_id: int, partitions: list[tuple[PartitionRequest, Any]],
              node_endpoints: list[Any] | None = None) -> Any:
    topics: list[Any] = []
    last: Any = object()
    for req, data in partitions:
        ident = req.topic_id if version >= 13 else req.topic
        if ident != last:
            topics.append(_Response.FetchableTopicResponse(topic=req.topic or "", topic_id=req.topic_id,
                                                           partitions=[]))
            last = ident
        topics[-1].partitions.append(data)
    return _Response(throttle_time_ms=0, error_code=int(error), session_id=session_id, responses=topics,
                     node_endpoints=node_endpoints or [])


def _node_endpoints(ctx: RequestContext, partitions: list[tuple[PartitionRequest, Any]]) -> list[Any]:
    """v16+: the leader's address when some partition was told about a leader (KIP-951)."""
    if ctx.api_version < 16 or not any(data.current_leader.leader_id >= 0 for _, data in partitions):
        return []
    broker = ctx.broker
    host, port = ctx.connection.advertised
    return [_Response.NodeEndpoint(node_id=broker.node_id, host=host, port=port, rack=broker.config.broker_rack)]


async def handle_fetch(header: Any, body: Any, ctx: RequestContext) -> Any:
    version = ctx.api_version
    broker = ctx.broker
    cluster = broker.cluster

    if version >= 12 and body.cluster_id is not None and body.cluster_id != broker.cluster_id:
        ctx.log_rejected("fetch.rejected", reason="inconsistent cluster id", cluster_id=body.cluster_id,
                         expected=broker.cluster_id)
        return _response(version, ErrorCode.INCONSISTENT_CLUSTER_ID, 0, [])
    requests, forgotten = _requests(body, version, cluster)
    if body.isolation_level not in (READ_UNCOMMITTED, READ_COMMITTED):
        ctx.log_rejected("fetch.rejected", reason="unknown isolation level", isolation_level=body.isolation_level)
        error = ErrorCode.INVALID_REQUEST
        return _response(version, error, 0, [(req, _error_data(req, error, None)) for req in requests])

    replica_id = body.replica_state.replica_id if version >= 15 else body.replica_id
    is_follower = replica_id >= 0
    cache = session_cache(broker)
    context = cache.new_context(version, body.session_id, body.session_epoch, requests, forgotten, _now_ms(),
                                privileged=is_follower)
    if context.kind is ContextKind.SESSION_ERROR:
        log.debug("fetch.session_error", error=context.error.name, session_id=body.session_id,
                  session_epoch=body.session_epoch, peer=ctx.connection.peer)
        error, session_id, _ = context.finish([], _now_ms())
        return _response(version, error, session_id, [])

    def resolve(topic_id: Any) -> str | None:
        topic = cluster.get_by_id(topic_id)
        return topic.name if topic is not None else None

    readable: list[PartitionRequest] = []
    unknown: list[tuple[PartitionRequest, Any]] = []
    # With an authorizer: consumers need READ on each topic, followers CLUSTER_ACTION (Kafka's rules).
    wanted = context.partitions(resolve)
    denied = _denied_topics(ctx, wanted, is_follower) if broker.acls is not None else ()
    for req in wanted:
        if req.topic is None:
            unknown.append((req, _error_data(req, ErrorCode.UNKNOWN_TOPIC_ID, [])))
        elif req.topic in denied:
            unknown.append((req, _error_data(req, ErrorCode.TOPIC_AUTHORIZATION_FAILED, [])))
        elif cluster.partition(req.topic, req.partition) is None:
            unknown.append((req, _error_data(req, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, [])))
        else:
            readable.append(req)

    fetch_max_bytes = min(body.max_bytes, broker.config.fetch_max_bytes)
    if ctx.quotas_active and not is_follower:
        from broker.quotas import CONSUMER_BYTE_RATE

        # Kafka caps a quota'd consumer's fetch at what its quota window can take, so a fetch it may
        # receive exists.
        window_max = ctx.quota_window_max(CONSUMER_BYTE_RATE, header.client_id)
        if window_max is not None:
            fetch_max_bytes = max(1, min(fetch_max_bytes, int(window_max)))
    min_bytes = min(body.min_bytes, fetch_max_bytes)
    reader = _Reader(ctx, body, is_follower, fetch_max_bytes)
    results = await _read_until_ready(reader, readable, body.max_wait_ms, min_bytes)
    results.extend(unknown)

    throttle_ms = 0
    if ctx.quotas_active and not is_follower:
        from broker.quotas import CONSUMER_BYTE_RATE

        # As Kafka: the bytes count against the client's quota; when that puts it over, the records are
        # not sent (nor counted), the answer is empty with the throttle time and the connection is muted.
        size = _records_bytes(results)
        throttle_ms = ctx.quota_throttle_ms(CONSUMER_BYTE_RATE, size, header.client_id, unrecord_if_throttled=True)
    if throttle_ms:
        error, session_id, included = context.throttled()
    else:
        error, session_id, included = context.finish(results, _now_ms())
    if context.kind is ContextKind.FULL and body.session_epoch == 0:
        log.debug("fetch.session_created" if session_id else "fetch.session_not_created", session_id=session_id,
                  partitions=len(results), peer=ctx.connection.peer)
    response = _response(version, error, session_id, included, _node_endpoints(ctx, included))
    response.throttle_time_ms = throttle_ms
    return response


def _denied_topics(ctx: RequestContext, requests: Any, is_follower: bool) -> set[str]:
    """The topics of ``requests`` this client may not fetch from."""
    names = {req.topic for req in requests if req.topic is not None}
    if is_follower:
        allowed = ctx.authorized(AclOperation.CLUSTER_ACTION, ResourceType.CLUSTER, CLUSTER_RESOURCE_NAME)
        return set() if allowed else names
    return names - ctx.authorized_names(AclOperation.READ, ResourceType.TOPIC, names)


def _records_bytes(partitions: list[tuple[PartitionRequest, Any]]) -> int:
    """The record bytes a response carries (its chunks are bytes-like, or lists of them)."""
    total = 0
    for _, data in partitions:
        records = data.records
        if isinstance(records, list):
            total += sum(len(chunk) for chunk in records)
        elif records is not None:
            total += len(records)
    return total
