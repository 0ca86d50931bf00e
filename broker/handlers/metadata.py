"""Metadata (key 3), versions 0-12: the live brokers, the controller and the topics asked for, each
partition led by the broker `broker.membership` names (this one, unless brokers share PostgreSQL storage).

Kafka behaviours implemented:
- v0: an empty topic list means "all topics"; v1+: null means all, empty means none;
- topics named but not present: UNKNOWN_TOPIC_OR_PARTITION with a zero topic id (v10+);
- topic ids (v12): when any entry has one, the request is answered by id and names are ignored; an
  unknown id gets UNKNOWN_TOPIC_ID with a null name. Before v12 an id or a null name makes the whole
  answer INVALID_REQUEST (``KafkaApis.handleTopicMetadataRequest``), names "" where null;
- each topic is answered once, however often the request names it (Kafka treats them as a set);
- authorized operations: INT32_MIN ("not requested") unless asked for; when asked for, the operations
  the principal may do on the resource (every one that applies to it when no authorizer is configured);
- with an authorizer (Kafka's checks): topics the principal may not DESCRIBE are left out of an
  all-topics answer and answered TOPIC_AUTHORIZATION_FAILED when named (or asked for by id); creating a
  missing topic needs CREATE on the cluster or on the topic, else TOPIC_AUTHORIZATION_FAILED;
- auto-creation of named topics when ``auto.create.topics.enable`` is on and (v4+) the request allows
  it; invalid names get INVALID_TOPIC_EXCEPTION. Creation takes milliseconds here, so the request waits
  for it and returns the new topic at once instead of Kafka's transient LEADER_NOT_AVAILABLE; when it
  queues behind a long topic mutation (thousands of partitions created or deleted) the request waits
  at most ``AUTO_CREATE_WAIT_S`` and then answers LEADER_NOT_AVAILABLE, as Kafka does, while the
  creation carries on and the client retries.
- a partition a fault rule took offline (``broker/faults.py``) answers as Kafka does for a partition
  whose leader is gone: LEADER_NOT_AVAILABLE, leader -1, this node among the offline replicas.
"""

from __future__ import annotations

import asyncio
from typing import Any

from broker.cluster import validate_topic_name
from broker.handlers import RequestContext
from broker.security.acls import (
    CLUSTER_RESOURCE_NAME,
    SUPPORTED_OPERATIONS,
    AclOperation,
    ResourceType,
    bit_field,
)
from protocol import messages
from protocol.errors import ErrorCode, KafkaError
from protocol.primitives import INT32_MIN, ZERO_UUID

AUTO_CREATE_WAIT_S = 1.0  # longest a Metadata request waits for a topic it auto-creates
AUTHORIZED_OPERATIONS_OMITTED = INT32_MIN  # Kafka's "not requested" sentinel
NO_LEADER = -1

# The operations each resource supports (AclEntry.supportedOperations): what Kafka reports when there is
# no authorizer.
TOPIC_OPERATIONS = bit_field(SUPPORTED_OPERATIONS[ResourceType.TOPIC])
CLUSTER_OPERATIONS = bit_field(SUPPORTED_OPERATIONS[ResourceType.CLUSTER])


def authorized_operations(ctx: RequestContext, resource_type: ResourceType, name: str, everything: int) -> int:
    """The authorized-operations bit field for a resource: ``everything`` (what applies to it) without an
    authorizer, else the operations this connection's principal is allowed."""
    acls = ctx.broker.acls
    if acls is None:
        return everything
    conn = ctx.connection
    return bit_field(acls.authorizer.authorized_operations(conn.principal, conn.host, resource_type, name))


def _topic_ops(ctx: RequestContext, name: str, include: bool) -> int:
    return authorized_operations(ctx, ResourceType.TOPIC, name, TOPIC_OPERATIONS) if include \
        else AUTHORIZED_OPERATIONS_OMITTED


def _unauthorized(name: str | None, topic_id: Any = ZERO_UUID) -> Any:
    return messages.MetadataResponse.MetadataResponseTopic(
        error_code=int(ErrorCode.TOPIC_AUTHORIZATION_FAILED), name=name, topic_id=topic_id, is_internal=False,
        partitions=[], topic_authorized_operations=AUTHORIZED_OPERATIONS_OMITTED)


def topic_entry(ctx: RequestContext, topic: Any, topic_ops: int) -> Any:
    resp = messages.MetadataResponse
    leader = ctx.broker.membership.leader
    partitions = []
    for p in topic.partitions:
        node = leader(topic.name, p.index)
        partitions.append(resp.MetadataResponsePartition(
            error_code=0, partition_index=p.index, leader_id=node, leader_epoch=p.leader_epoch,
            replica_nodes=[node], isr_nodes=[node], offline_replicas=[]))
    entry = resp.MetadataResponseTopic(
        error_code=0, name=topic.name, topic_id=topic.topic_id, is_internal=topic.is_internal,
        topic_authorized_operations=topic_ops, partitions=partitions)
    faults = ctx.broker.faults
    if faults.active:
        for p in entry.partitions:
            if faults.partition_offline(topic.name, p.partition_index):
                # Kafka's answer for a partition whose leader is gone (KRaftMetadataCache): no leader,
                # LEADER_NOT_AVAILABLE, the replica listed as offline.
                p.error_code = int(ErrorCode.LEADER_NOT_AVAILABLE)
                p.offline_replicas = [p.leader_id]
                p.leader_id = NO_LEADER
    return entry


async def _named_topic(ctx: RequestContext, name: str, auto_create: bool, include_ops: bool) -> Any:
    cluster = ctx.broker.cluster
    resp = messages.MetadataResponse
    if not ctx.authorized(AclOperation.DESCRIBE, ResourceType.TOPIC, name):
        return _unauthorized(name)
    topic_ops = _topic_ops(ctx, name, include_ops)
    topic = cluster.get(name)
    if topic is None and ctx.broker.membership.shared:
        await cluster.sync()  # created through another broker a moment ago: known here at once
        topic = cluster.get(name)
    if topic is None:
        try:
            validate_topic_name(name)
            if auto_create and ctx.broker.config.auto_create_topics_enable:
                if not (ctx.authorized(AclOperation.CREATE, ResourceType.CLUSTER, CLUSTER_RESOURCE_NAME)
                        or ctx.authorized(AclOperation.CREATE, ResourceType.TOPIC, name)):
                    return _unauthorized(name)
                # The creation is a task of its own (ClusterState.auto_create): a wait that gives up leaves it be.
                topic = await asyncio.wait_for(cluster.auto_create(name), AUTO_CREATE_WAIT_S)
        except TimeoutError:
            return resp.MetadataResponseTopic(error_code=int(ErrorCode.LEADER_NOT_AVAILABLE), name=name,
                                              topic_authorized_operations=topic_ops)
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
                            include_ops: bool) -> list[Any]:
    """The answer for each distinct topic asked for. As Kafka does, a request with any topic id is
    answered by id only (names are then ignored); otherwise by name. Each topic is answered once however
    often it is named, so a request repeating one name costs one lookup (and at most one creation)."""
    cluster = ctx.broker.cluster
    ids = dict.fromkeys(t.topic_id for t in requested if t.topic_id != ZERO_UUID)
    if not ids:
        names = dict.fromkeys(t.name for t in requested)
        return [await _named_topic(ctx, name, auto_create, include_ops) for name in names]
    resp = messages.MetadataResponse
    topics = []
    if ctx.broker.membership.shared and any(cluster.get_by_id(topic_id) is None for topic_id in ids):
        await cluster.sync()
    for topic_id in ids:
        topic = cluster.get_by_id(topic_id)
        if topic is None:
            topics.append(resp.MetadataResponseTopic(
                error_code=int(ErrorCode.UNKNOWN_TOPIC_ID), name=None, topic_id=topic_id,
                topic_authorized_operations=_topic_ops(ctx, "", False)))
        elif not ctx.authorized(AclOperation.DESCRIBE, ResourceType.TOPIC, topic.name):
            topics.append(_unauthorized(None, topic_id))
        else:
            topics.append(topic_entry(ctx, topic, _topic_ops(ctx, topic.name, include_ops)))
    return topics


async def handle_metadata(header: Any, body: Any, ctx: RequestContext) -> Any:
    broker = ctx.broker
    cluster = broker.cluster
    version = ctx.api_version
    resp = messages.MetadataResponse
    host, port = ctx.connection.advertised

    include_topic_ops = version >= 8 and body.include_topic_authorized_operations
    # v0-3 always auto-create; v4+ only when the client allows it (and the broker does).
    auto_create = version < 4 or body.allow_auto_topic_creation
    wants_all = body.topics is None or (version == 0 and not body.topics)
    if wants_all:
        # Topics the principal may not describe are left out, as if they did not exist.
        names = cluster.names()
        if broker.acls is not None:
            describable = ctx.authorized_names(AclOperation.DESCRIBE, ResourceType.TOPIC, names)
            names = [name for name in names if name in describable]
        topics = [topic_entry(ctx, cluster.get(name), _topic_ops(ctx, name, include_topic_ops)) for name in names]
    else:
        refused = _refused_before_v12(version, body.topics)
        if refused is not None:
            return refused
        topics = await _requested_topics(ctx, body.topics, auto_create, include_topic_ops)

    include_cluster_ops = 8 <= version <= 10 and body.include_cluster_authorized_operations
    membership = broker.membership
    return resp(
        throttle_time_ms=0,
        brokers=[resp.MetadataResponseBroker(node_id=n.node_id, host=n.host, port=n.port, rack=n.rack)
                 for n in membership.nodes(ctx.connection.listener, (host, port))],
        cluster_id=broker.cluster_id,
        controller_id=membership.controller_id,
        topics=topics,
        cluster_authorized_operations=authorized_operations(
            ctx, ResourceType.CLUSTER, CLUSTER_RESOURCE_NAME, CLUSTER_OPERATIONS) if include_cluster_ops
        else AUTHORIZED_OPERATIONS_OMITTED,
    )
