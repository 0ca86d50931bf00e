"""Metadata (key 3), versions 0-12: this broker as the only node and controller, and the topics asked for.

Kafka behaviours implemented:
- v0: an empty topic list means "all topics"; v1+: null means all, empty means none;
- topics named but not present: UNKNOWN_TOPIC_OR_PARTITION with a zero topic id (v10+);
- topic ids (v12): when any entry has one, the request is answered by id and names are ignored; an
  unknown id gets UNKNOWN_TOPIC_ID with a null name. Before v12 an id or a null name makes the whole
  answer INVALID_REQUEST (``KafkaApis.handleTopicMetadataRequest``), names "" where null;
- each topic is answered once, however often the request names it (Kafka treats them as a set);
- authorized operations: INT32_MIN ("not requested") unless asked for; when asked for, every operation
  that applies to the resource, as Kafka answers when no authorizer is configured.
- auto-creation of named topics when ``auto.create.topics.enable`` is on and (v4+) the request allows
  it; invalid names get INVALID_TOPIC_EXCEPTION. Creation is immediate here, so the new topic is
  returned at once instead of Kafka's transient LEADER_NOT_AVAILABLE.
- a partition a fault rule took offline (``broker/faults.py``) answers as Kafka does for a partition
  whose leader is gone: LEADER_NOT_AVAILABLE, leader -1, this node among the offline replicas.
"""

from __future__ import annotations

from typing import Any

from broker.cluster import validate_topic_name
from broker.handlers import RequestContext
from protocol import messages
from protocol.errors import ErrorCode, KafkaError
from protocol.primitives import ZERO_UUID

AUTHORIZED_OPERATIONS_OMITTED = -(2**31)
NO_LEADER = -1

# AclOperation codes (org.apache.kafka.common.acl.AclOperation) and the ones each resource supports
# (AclEntry.supportedOperations); Kafka reports exactly these when there is no authorizer.
_READ, _WRITE, _CREATE, _DELETE, _ALTER, _DESCRIBE = 3, 4, 5, 6, 7, 8
_CLUSTER_ACTION, _DESCRIBE_CONFIGS, _ALTER_CONFIGS, _IDEMPOTENT_WRITE = 9, 10, 11, 12


def _bitfield(*operations: int) -> int:
    return sum(1 << op for op in set(operations))


TOPIC_OPERATIONS = _bitfield(_READ, _WRITE, _CREATE, _DESCRIBE, _DELETE, _ALTER, _DESCRIBE_CONFIGS,
                             _ALTER_CONFIGS)
CLUSTER_OPERATIONS = _bitfield(_CREATE, _CLUSTER_ACTION, _DESCRIBE_CONFIGS, _ALTER_CONFIGS, _IDEMPOTENT_WRITE,
                               _ALTER, _DESCRIBE)


def topic_entry(ctx: RequestContext, topic: Any, topic_ops: int) -> Any:
    resp = messages.MetadataResponse
    node = ctx.broker.node_id
    entry = resp.MetadataResponseTopic(
        error_code=0, name=topic.name, topic_id=topic.topic_id, is_internal=topic.is_internal,
        topic_authorized_operations=topic_ops,
        partitions=[resp.MetadataResponsePartition(
            error_code=0, partition_index=p.index, leader_id=node, leader_epoch=p.leader_epoch,
            replica_nodes=[node], isr_nodes=[node], offline_replicas=[]) for p in topic.partitions])
    faults = ctx.broker.faults
    if faults.active:
        for p in entry.partitions:
            if faults.partition_offline(topic.name, p.partition_index):
                # Kafka's answer for a partition whose leader is gone (KRaftMetadataCache): no leader,
                # LEADER_NOT_AVAILABLE, the replica listed as offline.
                p.error_code = int(ErrorCode.LEADER_NOT_AVAILABLE)
                p.leader_id = NO_LEADER
                p.offline_replicas = [node]
    return entry


async def _named_topic(ctx: RequestContext, name: str, auto_create: bool, topic_ops: int) -> Any:
    cluster = ctx.broker.cluster
    resp = messages.MetadataResponse
    topic = cluster.get(name)
    if topic is None:
        try:
            validate_topic_name(name)
            if auto_create:
                topic = await cluster.auto_create(name)
        except KafkaError as exc:
            return resp.MetadataResponseTopic(error_code=int(exc.code), name=name, topic_authorized_operations=topic_ops)
    if topic is None:
        return resp.MetadataResponseTopic(error_code=int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION), name=name,
                                          topic_authorized_operations=topic_ops)
    return topic_entry(ctx, topic, topic_ops)


def _refused_before_v12(version: int, requested: list[Any]) -> Any:
    """Kafka refuses topic ids, and null names, before v12 ("Topic IDs are not supported in requests for
    version N" / "Topic name can not be null for version N"): the whole answer is INVALID_REQUEST, each
    entry with its name ("" for null, as the response name is not nullable before v12) and id."""
    if version >= 12 or all(t.name is not None and t.topic_id == ZERO_UUID for t in requested):
        return None
    resp = messages.MetadataResponse
    entries = dict.fromkeys(("" if t.name is None else t.name, t.topic_id) for t in requested)
    return resp(throttle_time_ms=0, topics=[
        resp.MetadataResponseTopic(error_code=int(ErrorCode.INVALID_REQUEST), name=name, topic_id=topic_id,
                                   is_internal=False, partitions=[])
        for name, topic_id in entries])


async def _requested_topics(ctx: RequestContext, requested: list[Any], auto_create: bool,
                            topic_ops: int) -> list[Any]:
    """The answer for each distinct topic asked for. As Kafka does, a request with any topic id is
    answered by id only (names are then ignored); otherwise by name. Each topic is answered once however
    often it is named, so a request repeating one name costs one lookup (and at most one creation)."""
    cluster = ctx.broker.cluster
    ids = dict.fromkeys(t.topic_id for t in requested if t.topic_id != ZERO_UUID)
    if not ids:
        names = dict.fromkeys(t.name for t in requested)
        return [await _named_topic(ctx, name, auto_create, topic_ops) for name in names]
    resp = messages.MetadataResponse
    topics = []
    for topic_id in ids:
        topic = cluster.get_by_id(topic_id)
        if topic is None:
            topics.append(resp.MetadataResponseTopic(
                error_code=int(ErrorCode.UNKNOWN_TOPIC_ID), name=None, topic_id=topic_id,
                topic_authorized_operations=topic_ops))
        else:
            topics.append(topic_entry(ctx, topic, topic_ops))
    return topics


async def handle_metadata(header: Any, body: Any, ctx: RequestContext) -> Any:
    broker = ctx.broker
    cluster = broker.cluster
    version = ctx.api_version
    resp = messages.MetadataResponse
    host, port = ctx.connection.advertised

    include_topic_ops = version >= 8 and body.include_topic_authorized_operations
    topic_ops = TOPIC_OPERATIONS if include_topic_ops else AUTHORIZED_OPERATIONS_OMITTED
    # v0-3 always auto-create; v4+ only when the client allows it (and the broker does).
    auto_create = version < 4 or body.allow_auto_topic_creation
    wants_all = body.topics is None or (version == 0 and not body.topics)
    if wants_all:
        topics = [topic_entry(ctx, cluster.get(name), topic_ops) for name in cluster.names()]
    else:
        refused = _refused_before_v12(version, body.topics)
        if refused is not None:
            return refused
        topics = await _requested_topics(ctx, body.topics, auto_create, topic_ops)

    include_cluster_ops = 8 <= version <= 10 and body.include_cluster_authorized_operations
    return resp(
        throttle_time_ms=0,
        brokers=[resp.MetadataResponseBroker(node_id=broker.node_id, host=host, port=port,
                                             rack=broker.config.broker_rack)],
        cluster_id=broker.cluster_id,
        controller_id=broker.node_id,
        topics=topics,
        cluster_authorized_operations=CLUSTER_OPERATIONS if include_cluster_ops
        else AUTHORIZED_OPERATIONS_OMITTED,
    )
