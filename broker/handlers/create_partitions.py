"""CreatePartitions (key 37), versions 0-3: raise a topic's partition count.

Kafka behaviours implemented (``ControllerApis.createPartitions`` and the KRaft
``ReplicationControlManager.createPartitions``):

- a topic named more than once: INVALID_REQUEST "Duplicate topic name." (one result per name);
- an unknown topic: UNKNOWN_TOPIC_OR_PARTITION;
- the count must grow: INVALID_PARTITIONS "Topic already has N partitions." when equal, and
  "Topic currently has N partitions, which is higher than the requested M." when lower;
- ``assignments`` (nullable), one replica list per added partition: INVALID_REPLICA_ASSIGNMENT when
  their number differs from the partitions added, or a list is empty, names a broker other than this
  node, names one twice, or has a length other than the topic's replication factor (1);
- more than ``controller.max.records.per.batch`` (10,000) partitions added by the whole request:
  POLICY_VIOLATION "Excessively large number of partitions per request." for every topic (the limit
  Kafka's controller puts on one operation; KAFKA-19673 gives it this message);
- ``validate_only`` runs every check and adds nothing.

Partitions are added when the answer is sent, so ``timeout_ms`` is not waited on. Left out:
authorization and controller mutation quotas.
"""

from __future__ import annotations

from typing import Any

from broker.handlers import RequestContext
from broker.handlers.create_topics import check_replica_list, check_request_size, once_per_name
from broker.security.acls import AclOperation, ResourceType
from protocol import messages
from protocol.errors import ErrorCode, KafkaError

# Every partition of a Moldau topic has exactly one replica: this node.
_REPLICATION_FACTOR = 1


async def _create(ctx: RequestContext, topic: Any, validate_only: bool) -> None:
    cluster = ctx.broker.cluster
    # Validation first (unknown topic, no increase), so assignments are checked against a real topic.
    existing = await cluster.create_partitions(topic.name, topic.count, validate_only=True)
    if topic.assignments is not None:
        additional = topic.count - len(existing.partitions)
        if len(topic.assignments) != additional:
            raise KafkaError(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                             f"Attempted to add {additional} additional partition(s), but only "
                             f"{len(topic.assignments)} assignment(s) were specified.")
        for assignment in topic.assignments:
            check_replica_list(assignment.broker_ids, ctx.broker.node_id, _REPLICATION_FACTOR)
    if not validate_only:
        await cluster.create_partitions(topic.name, topic.count)


async def handle_create_partitions(header: Any, body: Any, ctx: RequestContext) -> Any:
    response = messages.CreatePartitionsResponse
    cluster = ctx.broker.cluster
    current = {t.name: len(t.partitions) for t in (cluster.get(topic.name) for topic in body.topics) if t}
    too_many = check_request_size(ctx, sum(max(topic.count - current[topic.name], 0)
                                           for topic, repeated in once_per_name(body.topics)
                                           if not repeated and topic.name in current))
    results = []
    for topic, repeated in once_per_name(body.topics):
        name = topic.name
        try:
            if repeated:
                raise KafkaError(ErrorCode.INVALID_REQUEST, "Duplicate topic name.")
            if not ctx.authorized(AclOperation.ALTER, ResourceType.TOPIC, name):
                raise KafkaError(ErrorCode.TOPIC_AUTHORIZATION_FAILED, "Authorization failed.")
            if too_many is not None:
                raise too_many
            await _create(ctx, topic, body.validate_only)
        except KafkaError as exc:
            ctx.log_rejected("create_partitions.rejected", topic=name, count=topic.count, error=exc.code.name,
                     reason=exc.message, validate_only=body.validate_only)
            results.append(response.CreatePartitionsTopicResult(name=name, error_code=int(exc.code),
                                                                error_message=exc.message))
            continue
        results.append(response.CreatePartitionsTopicResult(name=name, error_code=0, error_message=None))
    return response(throttle_time_ms=0, results=results)
