"""Committed offsets: OffsetCommit (key 8) v0-9, OffsetFetch (9) v0-9 and OffsetDelete (47) v0.
The rules live in `broker.groups` (state machine and coordinator); these handlers translate versions.

Kafka behaviours implemented here (KafkaApis, OffsetFetchRequest.getErrorResponse):
- OffsetCommit: v0 has no generation or member id (a simple commit, generation -1); v1 commits carry
  their own timestamp; v2-v4 ``retention_time_ms`` sets an explicit expiry; v6+ leader epochs; v7+ static
  members. Each partition answers on its own: UNKNOWN_TOPIC_OR_PARTITION for partitions this broker does
  not have, OFFSET_METADATA_TOO_LARGE past ``offset.metadata.max.bytes``, otherwise the group's verdict
  (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID, REBALANCE_IN_PROGRESS...). Answered once the
  commit is durable. An empty group id is accepted (Kafka only requires it non-null for offsets).
- OffsetFetch: null topics (v2+) mean every partition the group has an offset for; a partition without
  one answers offset -1, leader epoch -1, metadata "" and no error; v8+ answer several groups (KIP-709)
  each with its own error; group-level errors are per partition before v2, top level from v2 (and no
  partitions); with ``require_stable`` (v7+) a partition with a transactional offset commit still pending
  answers UNSTABLE_OFFSET_COMMIT and offset -1 (KIP-447: the client retries until the transaction ends).
- OffsetDelete: a group-level error (INVALID_GROUP_ID, GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP) answers with no
  partitions; otherwise per partition UNKNOWN_TOPIC_OR_PARTITION, GROUP_SUBSCRIBED_TO_TOPIC or NONE.
- while the coordinator loads ``__consumer_offsets`` at start-up: COORDINATOR_LOAD_IN_PROGRESS.
- with an authorizer (Kafka's checks): OffsetCommit needs READ on the group (else every partition
  GROUP_AUTHORIZATION_FAILED) and READ on each topic (else TOPIC_AUTHORIZATION_FAILED for its partitions);
  OffsetFetch DESCRIBE on the group (GROUP_AUTHORIZATION_FAILED where the group error goes) and on each
  topic (TOPIC_AUTHORIZATION_FAILED for topics named; left out of an all-topics answer); OffsetDelete
  DELETE on the group and READ on each topic.
"""

from __future__ import annotations

from typing import Any

from broker.groups.coordinator import CommitPartition
from broker.groups.offsets import INVALID_OFFSET, NO_LEADER_EPOCH, NO_METADATA, OffsetAndMetadata
from broker.handlers import RequestContext
from broker.security.acls import AclOperation, ResourceType
from protocol import messages
from protocol.errors import ErrorCode

_COMMIT = messages.OffsetCommitResponse
_FETCH = messages.OffsetFetchResponse
_DELETE = messages.OffsetDeleteResponse
FIRST_REQUIRE_STABLE_VERSION = 7


async def handle_offset_commit(header: Any, body: Any, ctx: RequestContext) -> Any:
    version = ctx.api_version
    if not ctx.authorized(AclOperation.READ, ResourceType.GROUP, body.group_id):
        return _commit_response(body, {t.name: ErrorCode.GROUP_AUTHORIZATION_FAILED for t in body.topics}, iter(()))
    readable = ctx.authorized_names(AclOperation.READ, ResourceType.TOPIC, (t.name for t in body.topics))
    denied = {t.name: ErrorCode.TOPIC_AUTHORIZATION_FAILED for t in body.topics if t.name not in readable}
    partitions = [
        CommitPartition(topic=t.name, partition=p.partition_index, offset=p.committed_offset,
                        leader_epoch=p.committed_leader_epoch if version >= 6 else NO_LEADER_EPOCH,
                        commit_timestamp=p.commit_timestamp if version == 1 else -1,
                        metadata=p.committed_metadata)
        for t in body.topics if t.name not in denied for p in t.partitions]
    errors = iter(await ctx.broker.groups.commit_offsets(
        body.group_id,
        body.generation_id_or_member_epoch if version >= 1 else -1,
        body.member_id if version >= 1 else "",
        body.group_instance_id if version >= 7 else None,
        body.retention_time_ms if 2 <= version <= 4 else -1,
        partitions) if partitions else ())
    return _commit_response(body, denied, errors)


def _commit_response(body: Any, denied: dict[str, ErrorCode], errors: Any) -> Any:
    """Partitions of ``denied`` topics carry its error; the others the next of ``errors``, in order."""
    return _COMMIT(throttle_time_ms=0, topics=[
        _COMMIT.OffsetCommitResponseTopic(name=t.name, partitions=[
            _COMMIT.OffsetCommitResponsePartition(
                partition_index=p.partition_index,
                error_code=int(denied[t.name] if t.name in denied else next(errors)))
            for p in t.partitions])
        for t in body.topics])


def _by_topic(offsets: list[tuple[tuple[str, int], OffsetAndMetadata | None]]) -> dict[str, list[Any]]:
    topics: dict[str, list[Any]] = {}
    for (topic, partition), om in offsets:
        topics.setdefault(topic, []).append((partition, om))
    return topics


def _partition_fields(partition: int, om: OffsetAndMetadata | None, error: ErrorCode = ErrorCode.NONE
                      ) -> dict[str, Any]:
    if om is None:
        om = OffsetAndMetadata(INVALID_OFFSET, NO_LEADER_EPOCH, NO_METADATA)
    return {"partition_index": partition, "committed_offset": om.offset,
            "committed_leader_epoch": om.leader_epoch, "metadata": om.metadata, "error_code": int(error)}


def _requested(topics: Any) -> list[tuple[str, int]] | None:
    return None if topics is None else [(t.name, p) for t in topics for p in t.partition_indexes]


def _stable_fields(name: str, p: int, om: OffsetAndMetadata | None, unstable: set[tuple[str, int]],
                   error: ErrorCode = ErrorCode.NONE) -> dict[str, Any]:
    if (name, p) in unstable:
        return _partition_fields(p, None, ErrorCode.UNSTABLE_OFFSET_COMMIT)
    return _partition_fields(p, om, error)


def handle_offset_fetch(header: Any, body: Any, ctx: RequestContext) -> Any:
    version = ctx.api_version
    groups = ctx.broker.groups
    require_stable = version >= FIRST_REQUIRE_STABLE_VERSION and body.require_stable

    def unstable(group_id: str) -> set[tuple[str, int]]:
        return groups.unstable_partitions(group_id) if require_stable else set()

    def fetch(group_id: str, requested: list[tuple[str, int]] | None
              ) -> tuple[ErrorCode, list[tuple[tuple[str, int], OffsetAndMetadata | None]], set[tuple[str, int]]]:
        """The group's error, its offsets for what the principal may see, and the denied partitions."""
        if not ctx.authorized(AclOperation.DESCRIBE, ResourceType.GROUP, group_id):
            return ErrorCode.GROUP_AUTHORIZATION_FAILED, [], set()
        if ctx.broker.acls is None:
            error, offsets = groups.fetch_offsets(group_id, requested)
            return error, offsets, set()
        names = {t for t, _ in requested} if requested is not None else None
        allowed = ctx.authorized_names(AclOperation.DESCRIBE, ResourceType.TOPIC, names or ())
        denied = {tp for tp in requested or () if tp[0] not in allowed}
        wanted = None if requested is None else [tp for tp in requested if tp not in denied]
        error, offsets = groups.fetch_offsets(group_id, wanted)
        if requested is None:  # all topics: the ones it may not describe are left out
            visible = ctx.authorized_names(AclOperation.DESCRIBE, ResourceType.TOPIC, {t for (t, _), _ in offsets})
            offsets = [(tp, om) for tp, om in offsets if tp[0] in visible]
        elif error is ErrorCode.NONE:
            offsets = offsets + [(tp, None) for tp in denied]
        return error, offsets, denied

    def fields(name: str, p: int, om: OffsetAndMetadata | None, pending: set[tuple[str, int]],
               denied: set[tuple[str, int]], error: ErrorCode = ErrorCode.NONE) -> dict[str, Any]:
        if (name, p) in denied:
            return _partition_fields(p, None, ErrorCode.TOPIC_AUTHORIZATION_FAILED)
        return _stable_fields(name, p, om, pending, error)

    if version >= 8:
        answers = []
        for g in body.groups:
            error, offsets, denied = fetch(g.group_id, _requested(g.topics))
            pending = unstable(g.group_id)
            answers.append(_FETCH.OffsetFetchResponseGroup(group_id=g.group_id, error_code=int(error), topics=[
                _FETCH.OffsetFetchResponseTopics(name=name, partitions=[
                    _FETCH.OffsetFetchResponsePartitions(**fields(name, p, om, pending, denied)) for p, om in parts])
                for name, parts in _by_topic(offsets).items()]))
        return _FETCH(throttle_time_ms=0, groups=answers)

    requested = _requested(body.topics)
    error, offsets, denied = fetch(body.group_id, requested)
    if error is not ErrorCode.NONE:
        if version >= 2:
            return _FETCH(throttle_time_ms=0, error_code=int(error), topics=[])
        # No top-level error code before v2: every partition asked for carries it.
        offsets = [(tp, None) for tp in requested or []]
    pending = unstable(body.group_id)
    return _FETCH(throttle_time_ms=0, error_code=0, topics=[
        _FETCH.OffsetFetchResponseTopic(name=name, partitions=[
            _FETCH.OffsetFetchResponsePartition(**fields(name, p, om, pending, denied, error)) for p, om in parts])
        for name, parts in _by_topic(offsets).items()])


async def handle_offset_delete(header: Any, body: Any, ctx: RequestContext) -> Any:
    if not ctx.authorized(AclOperation.DELETE, ResourceType.GROUP, body.group_id):
        return _DELETE(error_code=int(ErrorCode.GROUP_AUTHORIZATION_FAILED), throttle_time_ms=0, topics=[])
    readable = ctx.authorized_names(AclOperation.READ, ResourceType.TOPIC, (t.name for t in body.topics))
    topics = [(t.name, [p.partition_index for p in t.partitions]) for t in body.topics if t.name in readable]
    denied = [(t.name, [(p.partition_index, ErrorCode.TOPIC_AUTHORIZATION_FAILED) for p in t.partitions])
              for t in body.topics if t.name not in readable]
    error, results = await ctx.broker.groups.delete_offsets(body.group_id, topics)
    if error is ErrorCode.NONE:
        results = [*results, *denied]
    return _DELETE(error_code=int(error), throttle_time_ms=0, topics=[
        _DELETE.OffsetDeleteResponseTopic(name=name, partitions=[
            _DELETE.OffsetDeleteResponsePartition(partition_index=p, error_code=int(e)) for p, e in parts])
        for name, parts in results])
