"""The transaction APIs: AddPartitionsToTxn (key 24) v0-5, AddOffsetsToTxn (25) v0-4, EndTxn (26) v0-4,
TxnOffsetCommit (28) v0-4, and the admin APIs DescribeProducers (61) v0, DescribeTransactions (65) v0 and
ListTransactions (66) v0-1. The rules live in `broker.transactions` and `broker.groups`; these handlers
translate versions.

Kafka behaviours implemented (KafkaApis.handleAddPartitionToTxnRequest, handleAddOffsetsToTxnRequest,
handleEndTxnRequest, handleTxnOffsetCommitRequest):
- an empty transactional id answers INVALID_REQUEST; the transaction coordinator answers
  COORDINATOR_LOAD_IN_PROGRESS while it loads, INVALID_PRODUCER_ID_MAPPING, PRODUCER_FENCED,
  CONCURRENT_TRANSACTIONS, INVALID_TXN_STATE as `broker.transactions.state` decides;
- PRODUCER_FENCED exists from v2 of AddPartitionsToTxn, AddOffsetsToTxn and EndTxn; older versions get
  INVALID_PRODUCER_EPOCH, as Kafka maps it;
- AddPartitionsToTxn: a partition this broker does not have answers UNKNOWN_TOPIC_OR_PARTITION and every
  other partition of the request OPERATION_NOT_ATTEMPTED, and nothing is added; otherwise the
  coordinator's answer holds for every partition. v4+ (sent by brokers, KIP-890) carries several
  transactions, each answered on its own; ``verify_only`` adds nothing and answers per partition NONE
  (in the transaction) or INVALID_TXN_STATE;
- AddOffsetsToTxn adds the group's ``__consumer_offsets`` partition (created if missing);
- TxnOffsetCommit: UNKNOWN_TOPIC_OR_PARTITION per unknown partition; the producer must hold an Ongoing
  transaction with the group's partition in it (INVALID_PRODUCER_EPOCH for an older epoch, as a fenced
  producer gets); member and generation are checked when given (v3+, KIP-447); the offsets become
  visible to OffsetFetch when the transaction commits.
- with an authorizer: WRITE on the transactional id (else TRANSACTIONAL_ID_AUTHORIZATION_FAILED), WRITE
  on the topics added (else TOPIC_AUTHORIZATION_FAILED for them, OPERATION_NOT_ATTEMPTED for the rest),
  READ on the group of AddOffsetsToTxn and TxnOffsetCommit (GROUP_AUTHORIZATION_FAILED) and on the topics
  committed; DescribeTransactions and ListTransactions need DESCRIBE on each id (ListTransactions leaves
  the others out), DescribeProducers READ on the topic.

Left out: transaction.version 2 (EndTxn v5, KIP-890 part 2, and TRANSACTION_ABORTABLE); the
CLUSTER_ACTION Kafka requires of brokers sending v4+ verify-only AddPartitionsToTxn (here the client's own
verify-only requests are checked as above).
"""

from __future__ import annotations

from typing import Any

from broker.cluster import OFFSETS_TOPIC
from broker.groups.coordinator import CommitPartition
from broker.handlers import RequestContext
from broker.security.acls import AclOperation, ResourceType
from broker.transactions.records import group_by_topic
from broker.transactions.state import TxnState
from protocol import messages
from protocol.errors import ErrorCode

FIRST_PRODUCER_FENCED_VERSION = 2  # AddPartitionsToTxn, AddOffsetsToTxn, EndTxn
FIRST_BATCHED_VERSION = 4  # AddPartitionsToTxn: several transactions, verify_only (from brokers)
FIRST_MEMBER_CHECK_VERSION = 3  # TxnOffsetCommit
FIRST_LEADER_EPOCH_VERSION = 2  # TxnOffsetCommit
NO_LEADER_EPOCH = -1

_ADD = messages.AddPartitionsToTxnResponse
_OFFSETS = messages.AddOffsetsToTxnResponse
_END = messages.EndTxnResponse
_TXN_COMMIT = messages.TxnOffsetCommitResponse


def _fenced_as(error: ErrorCode, version: int) -> ErrorCode:
    if error is ErrorCode.PRODUCER_FENCED and version < FIRST_PRODUCER_FENCED_VERSION:
        return ErrorCode.INVALID_PRODUCER_EPOCH
    return error


async def handle_add_partitions_to_txn(header: Any, body: Any, ctx: RequestContext) -> Any:
    if ctx.api_version >= FIRST_BATCHED_VERSION:
        results = [await _add_or_verify(ctx, t.transactional_id, t.producer_id, t.producer_epoch,
                                        [(x.name, list(x.partitions)) for x in t.topics], t.verify_only)
                   for t in body.transactions]
        return _ADD(throttle_time_ms=0, error_code=0, results_by_transaction=[
            _ADD.AddPartitionsToTxnResult(transactional_id=t.transactional_id, topic_results=topic_results)
            for t, topic_results in zip(body.transactions, results, strict=True)])
    topics = [(t.name, list(t.partitions)) for t in body.v3_and_below_topics]
    return _ADD(throttle_time_ms=0, results_by_topic_v3_and_below=await _add_or_verify(
        ctx, body.v3_and_below_transactional_id, body.v3_and_below_producer_id, body.v3_and_below_producer_epoch,
        topics, verify_only=False))


async def _add_or_verify(ctx: RequestContext, transactional_id: str, producer_id: int, epoch: int,
                         topics: list[tuple[str, list[int]]], verify_only: bool) -> list[Any]:
    """One transaction's part of AddPartitionsToTxn: per-topic results."""
    cluster = ctx.broker.cluster
    requested = [(name, p) for name, parts in topics for p in parts]
    unknown = {tp for tp in requested if cluster.partition(*tp) is None}
    codes: dict[tuple[str, int], ErrorCode]
    writable = ctx.authorized_names(AclOperation.WRITE, ResourceType.TOPIC, {name for name, _ in topics})
    if not transactional_id:
        codes = dict.fromkeys(requested, ErrorCode.INVALID_REQUEST)
    elif not ctx.authorized(AclOperation.WRITE, ResourceType.TRANSACTIONAL_ID, transactional_id):
        codes = dict.fromkeys(requested, ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    elif len(writable) < len({name for name, _ in topics}):
        codes = {tp: ErrorCode.OPERATION_NOT_ATTEMPTED if tp[0] in writable else ErrorCode.TOPIC_AUTHORIZATION_FAILED
                 for tp in requested}
    elif verify_only:
        codes = ctx.broker.transactions.verify_partitions(transactional_id, producer_id, epoch, requested)
    elif unknown:
        codes = {tp: ErrorCode.UNKNOWN_TOPIC_OR_PARTITION if tp in unknown else ErrorCode.OPERATION_NOT_ATTEMPTED
                 for tp in requested}
    else:
        error = await ctx.broker.transactions.add_partitions(transactional_id, producer_id, epoch, requested)
        codes = dict.fromkeys(requested, _fenced_as(error, ctx.api_version))
    failed = sorted({c.name for c in codes.values() if c is not ErrorCode.NONE})
    if failed:
        ctx.log_rejected("add_partitions_to_txn.rejected", transactional_id=transactional_id, errors=failed,
                         verify_only=verify_only, unknown_partitions=sorted(unknown)[:10])
    return [_ADD.AddPartitionsToTxnTopicResult(name=name, results_by_partition=[
        _ADD.AddPartitionsToTxnPartitionResult(partition_index=p, partition_error_code=int(codes[(name, p)]))
        for p in parts]) for name, parts in topics]


async def handle_add_offsets_to_txn(header: Any, body: Any, ctx: RequestContext) -> Any:
    if not body.transactional_id:
        error = ErrorCode.INVALID_REQUEST
    elif not ctx.authorized(AclOperation.WRITE, ResourceType.TRANSACTIONAL_ID, body.transactional_id):
        error = ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    elif not ctx.authorized(AclOperation.READ, ResourceType.GROUP, body.group_id):
        error = ErrorCode.GROUP_AUTHORIZATION_FAILED
    else:
        error = await ctx.broker.transactions.add_offsets(body.transactional_id, body.producer_id,
                                                          body.producer_epoch, body.group_id)
        error = _fenced_as(error, ctx.api_version)
    if error is not ErrorCode.NONE:
        ctx.log_rejected("add_offsets_to_txn.rejected", transactional_id=body.transactional_id,
                         group=body.group_id, error=error.name)
    return _OFFSETS(throttle_time_ms=0, error_code=int(error))


async def handle_end_txn(header: Any, body: Any, ctx: RequestContext) -> Any:
    if not body.transactional_id:
        error = ErrorCode.INVALID_REQUEST
    elif not ctx.authorized(AclOperation.WRITE, ResourceType.TRANSACTIONAL_ID, body.transactional_id):
        error = ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    else:
        error = await ctx.broker.transactions.end_txn(body.transactional_id, body.producer_id, body.producer_epoch,
                                                      body.committed)
        error = _fenced_as(error, ctx.api_version)
    if error is not ErrorCode.NONE:
        ctx.log_rejected("end_txn.rejected", transactional_id=body.transactional_id, committed=body.committed,
                         error=error.name)
    return _END(throttle_time_ms=0, error_code=int(error))


async def handle_txn_offset_commit(header: Any, body: Any, ctx: RequestContext) -> Any:
    version = ctx.api_version
    partitions = [
        CommitPartition(topic=t.name, partition=p.partition_index, offset=p.committed_offset,
                        leader_epoch=p.committed_leader_epoch if version >= FIRST_LEADER_EPOCH_VERSION
                        else NO_LEADER_EPOCH,
                        metadata=p.committed_metadata)
        for t in body.topics for p in t.partitions]
    transactions = ctx.broker.transactions

    def verify(offsets_partition: int) -> ErrorCode:
        error = transactions.verify(body.transactional_id, body.producer_id, body.producer_epoch, OFFSETS_TOPIC,
                                    offsets_partition)
        return ErrorCode.INVALID_PRODUCER_EPOCH if error is ErrorCode.PRODUCER_FENCED else error

    readable = ctx.authorized_names(AclOperation.READ, ResourceType.TOPIC, {t.name for t in body.topics})
    if not body.transactional_id:
        errors = [ErrorCode.INVALID_REQUEST] * len(partitions)
    elif not ctx.authorized(AclOperation.WRITE, ResourceType.TRANSACTIONAL_ID, body.transactional_id):
        errors = [ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED] * len(partitions)
    elif not ctx.authorized(AclOperation.READ, ResourceType.GROUP, body.group_id):
        errors = [ErrorCode.GROUP_AUTHORIZATION_FAILED] * len(partitions)
    elif any(p.topic not in readable for p in partitions):
        errors = [ErrorCode.TOPIC_AUTHORIZATION_FAILED if p.topic not in readable else ErrorCode.OPERATION_NOT_ATTEMPTED
                  for p in partitions]
    else:
        members = version >= FIRST_MEMBER_CHECK_VERSION
        errors = await ctx.broker.groups.commit_txn_offsets(
            body.group_id, body.producer_id, body.producer_epoch,
            body.generation_id if members else -1, body.member_id if members else "",
            body.group_instance_id if members else None, partitions, verify)
    failed = sorted({e.name for e in errors if e is not ErrorCode.NONE})
    if failed:
        ctx.log_rejected("txn_offset_commit.rejected", transactional_id=body.transactional_id, group=body.group_id,
                         errors=failed)
    codes = iter(errors)
    return _TXN_COMMIT(throttle_time_ms=0, topics=[
        _TXN_COMMIT.TxnOffsetCommitResponseTopic(name=t.name, partitions=[
            _TXN_COMMIT.TxnOffsetCommitResponsePartition(partition_index=p.partition_index,
                                                         error_code=int(next(codes)))
            for p in t.partitions])
        for t in body.topics])


# ---------------------------------------------------------------- admin: describe and list

_DESCRIBE = messages.DescribeTransactionsResponse
_LIST = messages.ListTransactionsResponse
_PRODUCERS = messages.DescribeProducersResponse
FIRST_DURATION_FILTER_VERSION = 1


def handle_describe_transactions(header: Any, body: Any, ctx: RequestContext) -> Any:
    """DescribeTransactions (65) v0: each id's state, timeout, start time, producer and partitions;
    TRANSACTIONAL_ID_NOT_FOUND for an unknown id, COORDINATOR_LOAD_IN_PROGRESS while loading."""
    coordinator = ctx.broker.transactions
    states = []
    for transactional_id in body.transactional_ids:
        if not ctx.authorized(AclOperation.DESCRIBE, ResourceType.TRANSACTIONAL_ID, transactional_id):
            states.append(_DESCRIBE.TransactionState(
                error_code=int(ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED), transactional_id=transactional_id,
                transaction_state="", transaction_timeout_ms=0, transaction_start_time_ms=-1, producer_id=-1,
                producer_epoch=-1, topics=[]))
            continue
        txn = None if coordinator.loading else coordinator.state.get(transactional_id)
        if txn is None:
            error = (ErrorCode.COORDINATOR_LOAD_IN_PROGRESS if coordinator.loading
                     else ErrorCode.TRANSACTIONAL_ID_NOT_FOUND)
            states.append(_DESCRIBE.TransactionState(error_code=int(error), transactional_id=transactional_id,
                                                     transaction_state="", transaction_timeout_ms=0,
                                                     transaction_start_time_ms=-1, producer_id=-1,
                                                     producer_epoch=-1, topics=[]))
            continue
        states.append(_DESCRIBE.TransactionState(
            error_code=0, transactional_id=transactional_id, transaction_state=txn.state.display_name,
            transaction_timeout_ms=txn.timeout_ms, transaction_start_time_ms=txn.start_ms,
            producer_id=txn.producer_id, producer_epoch=txn.producer_epoch,
            topics=[_DESCRIBE.TopicData(topic=topic, partitions=parts)
                    for topic, parts in group_by_topic(txn.partitions)]))
    return _DESCRIBE(throttle_time_ms=0, transaction_states=states)


def handle_list_transactions(header: Any, body: Any, ctx: RequestContext) -> Any:
    """ListTransactions (66) v0-1, Kafka's filters: states by name (unknown names are echoed in
    ``unknown_state_filters`` and match nothing), producer ids, and (v1) transactions running longer than
    ``duration_filter`` ms."""
    coordinator = ctx.broker.transactions
    if coordinator.loading:
        return _LIST(throttle_time_ms=0, error_code=int(ErrorCode.COORDINATOR_LOAD_IN_PROGRESS),
                     unknown_state_filters=[], transaction_states=[])
    known = {TxnState.from_display_name(name) for name in body.state_filters} - {None}
    unknown = [name for name in body.state_filters if TxnState.from_display_name(name) is None]
    producers = set(body.producer_id_filters)
    duration = body.duration_filter if ctx.api_version >= FIRST_DURATION_FILTER_VERSION else -1
    now = coordinator.clock.now_ms()
    listed = []
    for txn in coordinator.transactions():
        if txn.state is TxnState.DEAD:
            continue
        if producers and txn.producer_id not in producers:
            continue
        if body.state_filters and txn.state not in known:
            continue
        if duration >= 0 and now - txn.start_ms <= duration:
            continue
        if not ctx.authorized(AclOperation.DESCRIBE, ResourceType.TRANSACTIONAL_ID, txn.transactional_id):
            continue
        listed.append(_LIST.TransactionState(transactional_id=txn.transactional_id, producer_id=txn.producer_id,
                                             transaction_state=txn.state.display_name))
    return _LIST(throttle_time_ms=0, error_code=0, unknown_state_filters=unknown, transaction_states=listed)


def handle_describe_producers(header: Any, body: Any, ctx: RequestContext) -> Any:
    """DescribeProducers (61) v0: the producers a partition's log remembers (idempotent and
    transactional), with the start offset of each one's open transaction."""
    cluster = ctx.broker.cluster
    topics = []
    for t in body.topics:
        partitions = []
        readable = ctx.authorized(AclOperation.READ, ResourceType.TOPIC, t.name)
        for index in t.partition_indexes:
            partition = cluster.partition(t.name, index)
            if not readable:
                partitions.append(_PRODUCERS.PartitionResponse(
                    partition_index=index, error_code=int(ErrorCode.TOPIC_AUTHORIZATION_FAILED),
                    error_message=None, active_producers=[]))
                continue
            if partition is None:
                partitions.append(_PRODUCERS.PartitionResponse(
                    partition_index=index, error_code=int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
                    error_message=f"This server does not host {t.name}-{index}", active_producers=[]))
                continue
            partitions.append(_PRODUCERS.PartitionResponse(
                partition_index=index, error_code=0, error_message=None, active_producers=[
                    _PRODUCERS.ProducerState(producer_id=e.producer_id, producer_epoch=e.producer_epoch,
                                             last_sequence=e.last_sequence, last_timestamp=e.timestamp,
                                             coordinator_epoch=e.coordinator_epoch,
                                             current_txn_start_offset=e.current_txn_first_offset)
                    for e in partition.log.producer_entries()]))
        topics.append(_PRODUCERS.TopicResponse(name=t.name, partitions=partitions))
    return _PRODUCERS(throttle_time_ms=0, topics=topics)
