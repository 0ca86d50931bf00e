"""CreateTopics (key 19), versions 0-7: create topics on this single node, or check that they could be.

Kafka behaviours implemented (``KafkaApis.handleCreateTopicsRequest``/``ZkAdminManager.createTopics`` and
the KRaft ``ReplicationControlManager.createTopic``), checked in Kafka's order for each topic:

- a name given more than once: INVALID_REQUEST for that name ("Create topics request from client
  `id` contains multiple entries for the following topics: ..."), one result per name;
- the name: INVALID_TOPIC_EXCEPTION (empty, ``.``/``..``, too long, illegal characters, or colliding
  with an existing topic when ``.`` and ``_`` are folded); TOPIC_ALREADY_EXISTS;
- configs: unknown names, bad values and null values are INVALID_CONFIG naming the config;
- manual ``assignments``: INVALID_REQUEST when num_partitions or replication_factor is not -1 as
  well; INVALID_REPLICA_ASSIGNMENT for a partition listed twice, an empty replica list, a broker id
  other than this node's, a broker listed twice, lists of different lengths, or partition ids that are
  not 0..n-1;
- without assignments: -1 means ``num.partitions`` / ``default.replication.factor``; 0 or below -1 is
  INVALID_PARTITIONS / INVALID_REPLICATION_FACTOR; a replication factor above 1 is
  INVALID_REPLICATION_FACTOR saying that this broker is a single node;
- ``validate_only`` (v1+) runs every check and creates nothing; the answer then has the zero topic id;
- more than ``controller.max.records.per.batch`` (10,000) partitions in the whole request (manual
  assignments count one per entry, -1 counts ``num.partitions``): POLICY_VIOLATION "Excessively large
  number of partitions per request." for every topic, before any other check;
- v5+: a created (or validated) topic's result carries num_partitions, replication_factor and its
  configs with source/read-only/sensitive flags; a failed one -1, -1 and an empty config list
  (Kafka's "reset any configs in the response if Create failed"); v7+: the topic id;
- internal topic names (``__consumer_offsets``, ``__transaction_state``) may be created, as in Kafka.

``timeout_ms`` is not waited on: creation is complete when the answer is sent, so Kafka's
REQUEST_TIMED_OUT for a timeout <= 0 never happens. Left out: authorization (TOPIC_AUTHORIZATION_FAILED,
``topic_config_error_code`` stays 0), controller mutation quotas (throttle_time_ms is 0), create
topic policies.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from broker.cluster import validate_topic_name
from broker.handlers import RequestContext
from broker.handlers.configs import topic_config_entries
from broker.security.acls import CLUSTER_RESOURCE_NAME, AclOperation, ResourceType
from broker.topic_config import validate_overrides
from protocol import messages
from protocol.errors import ErrorCode, KafkaError
from protocol.primitives import ZERO_UUID


def check_replica_list(broker_ids: Sequence[int], node_id: int, replication_factor: int | None) -> None:
    """Kafka's checks of one manual replica list (``validateManualPartitionAssignment``), for this node."""
    if not broker_ids:
        raise KafkaError(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                         "The manual partition assignment includes an empty replica list.")
    previous = None
    # Sorted, as Kafka checks them, so the message names the lowest offending id.
    for broker_id in sorted(broker_ids):
        if broker_id != node_id:
            raise KafkaError(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                             f"The manual partition assignment includes broker {broker_id}, but no such broker "
                             f"is registered (this Moldau broker is a single node with id {node_id}).")
        if broker_id == previous:
            raise KafkaError(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                             f"The manual partition assignment includes the broker {broker_id} more than once.")
        previous = broker_id
    if replication_factor is not None and len(broker_ids) != replication_factor:
        raise KafkaError(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                         f"The manual partition assignment includes a partition with {len(broker_ids)} "
                         f"replica(s), but this is not consistent with previous partitions, which have "
                         f"{replication_factor} replica(s).")


def _manual_assignment(topic: Any, node_id: int) -> tuple[int, int]:
    """(partitions, replication factor) of a valid manual assignment."""
    if topic.replication_factor != -1:
        raise KafkaError(ErrorCode.INVALID_REQUEST, "A manual partition assignment was specified, but "
                                                    "replication factor was not set to -1.")
    if topic.num_partitions != -1:
        raise KafkaError(ErrorCode.INVALID_REQUEST, "A manual partition assignment was specified, but "
                                                    "numPartitions was not set to -1.")
    seen: set[int] = set()
    replication_factor: int | None = None
    for assignment in topic.assignments:
        if assignment.partition_index in seen:
            raise KafkaError(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                             f"Found multiple manual partition assignments for partition "
                             f"{assignment.partition_index}")
        check_replica_list(assignment.broker_ids, node_id, replication_factor)
        replication_factor = len(assignment.broker_ids)
        seen.add(assignment.partition_index)
    if seen != set(range(len(seen))):
        raise KafkaError(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                         "partitions should be a consecutive 0-based integer sequence")
    assert replication_factor is not None
    return len(seen), replication_factor


def _sizes(topic: Any, config: Any) -> tuple[int, int]:
    """(partitions, replication factor) asked for without a manual assignment, -1 resolved."""
    if topic.replication_factor < -1 or topic.replication_factor == 0:
        raise KafkaError(ErrorCode.INVALID_REPLICATION_FACTOR,
                         "Replication factor was set to an invalid non-positive value.")
    if topic.num_partitions < -1 or topic.num_partitions == 0:
        raise KafkaError(ErrorCode.INVALID_PARTITIONS,
                         "Number of partitions was set to an invalid non-positive value.")
    partitions = config.num_partitions if topic.num_partitions == -1 else topic.num_partitions
    rf = config.default_replication_factor if topic.replication_factor == -1 else topic.replication_factor
    return partitions, rf


async def _create(ctx: RequestContext, topic: Any, validate_only: bool) -> Any:
    broker = ctx.broker
    cluster = broker.cluster
    name = topic.name
    validate_topic_name(name)
    if cluster.get(name) is not None:
        raise KafkaError(ErrorCode.TOPIC_ALREADY_EXISTS, f"Topic '{name}' already exists.")
    raw_configs = {c.name: c.value for c in topic.configs}
    overrides = validate_overrides(raw_configs)
    if topic.assignments:
        partitions, rf = _manual_assignment(topic, broker.node_id)
    else:
        partitions, rf = _sizes(topic, broker.config)
    cluster.check_new_topic(name, partitions, rf, raw_configs)
    topic_id = ZERO_UUID
    if not validate_only:
        created = await cluster.create_topic(name, partitions, rf, raw_configs)
        topic_id, overrides = created.topic_id, created.configs
    resp = messages.CreateTopicsResponse
    return resp.CreatableTopicResult(
        name=name, topic_id=topic_id, error_code=0, error_message=None, topic_config_error_code=0,
        num_partitions=partitions, replication_factor=rf,
        configs=[resp.CreatableTopicConfigs(name=e.name, value=e.value, read_only=e.read_only,
                                            config_source=e.source, is_sensitive=False)
                 for e in topic_config_entries(cluster, overrides)])


def _failed(name: str, exc: KafkaError) -> Any:
    return messages.CreateTopicsResponse.CreatableTopicResult(
        name=name, error_code=int(exc.code), error_message=exc.message, num_partitions=-1,
        replication_factor=-1, configs=[])


def once_per_name(topics: Sequence[Any]) -> Iterator[tuple[Any, bool]]:
    """Each topic of a request once by name, and whether the request names it more than once: Kafka
    answers a repeated name once, with INVALID_REQUEST, and acts on none of its entries."""
    counts = Counter(t.name for t in topics)
    answered: set[str] = set()
    for topic in topics:
        if topic.name not in answered:
            answered.add(topic.name)
            yield topic, counts[topic.name] > 1


def _partitions_asked(topic: Any, default_partitions: int) -> int:
    """How many partitions one topic entry would create, counted as Kafka's
    ``validateTotalNumberOfPartitions`` does (before any other check)."""
    if topic.assignments:
        return len(topic.assignments)
    if topic.num_partitions == -1:
        return default_partitions
    return max(topic.num_partitions, 0)


def check_request_size(ctx: RequestContext, partitions: int) -> KafkaError | None:
    """The POLICY_VIOLATION for a request that would create more partitions than one controller batch,
    or None."""
    try:
        ctx.broker.cluster.check_partitions_to_create(partitions)
    except KafkaError as exc:
        return exc
    return None


async def handle_create_topics(header: Any, body: Any, ctx: RequestContext) -> Any:
    validate_only = ctx.api_version >= 1 and body.validate_only
    duplicates = [name for name, n in Counter(t.name for t in body.topics).items() if n > 1]
    default_partitions = ctx.broker.config.num_partitions
    # The whole request is refused when all its topics together would create too many partitions.
    too_many = check_request_size(ctx, sum(_partitions_asked(t, default_partitions)
                                           for t, repeated in once_per_name(body.topics) if not repeated))
    # With an authorizer, CREATE on the cluster allows every topic; else each needs CREATE on itself.
    may_create = ctx.authorized(AclOperation.CREATE, ResourceType.CLUSTER, CLUSTER_RESOURCE_NAME)
    results = []
    for topic, repeated in once_per_name(body.topics):
        name = topic.name
        try:
            if repeated:
                # Java renders a null client id as "null" in this message.
                client = "null" if header.client_id is None else header.client_id
                raise KafkaError(ErrorCode.INVALID_REQUEST,
                                 f"Create topics request from client `{client}` contains multiple "
                                 f"entries for the following topics: {', '.join(duplicates)}")
            if not may_create and not ctx.authorized(AclOperation.CREATE, ResourceType.TOPIC, name):
                raise KafkaError(ErrorCode.TOPIC_AUTHORIZATION_FAILED, "Authorization failed.")
            if too_many is not None:
                raise too_many
            results.append(await _create(ctx, topic, validate_only))
        except KafkaError as exc:
            ctx.log_rejected("create_topics.rejected", topic=name, error=exc.code.name, reason=exc.message,
                     validate_only=validate_only)
            results.append(_failed(name, exc))
    return messages.CreateTopicsResponse(throttle_time_ms=0, topics=results)
