"""DeleteTopics (key 20), versions 0-6: delete topics by name (v0-5 ``topic_names``, v6 ``topics``) or id (v6).

Kafka behaviours implemented (``KafkaApis.handleDeleteTopicsRequest`` and the KRaft
``ControllerApis.deleteTopics``):

- ``delete.topic.enable=false``: every topic answers TOPIC_DELETION_DISABLED (INVALID_REQUEST below
  v3, which predates that code);
- an unknown name answers UNKNOWN_TOPIC_OR_PARTITION, an unknown id UNKNOWN_TOPIC_ID (with a null
  name);
- v6 entries: neither name nor id, or both, are INVALID_REQUEST; a name or id given twice is
  INVALID_REQUEST ("Duplicate topic name." / "Duplicate topic id."), as are a name and an id that
  name the same topic; none of those entries deletes anything;
- a deleted topic's result carries its name and (v6) its id; ``error_message`` exists from v5;
- internal topics (``__consumer_offsets``, ``__transaction_state``) are deleted like any other: Kafka's
  broker does not refuse them (only the ``kafka-topics`` tool does, on the client side).

Deletion is complete when the answer is sent, so ``timeout_ms`` is not waited on. Left out:
authorization and controller mutation quotas.
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

from broker.cluster import Topic
from broker.handlers import RequestContext
from broker.security.acls import AclOperation, ResourceType
from protocol import messages
from protocol.errors import ErrorCode, KafkaError
from protocol.primitives import ZERO_UUID


def _result(name: str | None, topic_id: uuid.UUID, code: ErrorCode = ErrorCode.NONE,
            message: str | None = None) -> Any:
    return messages.DeleteTopicsResponse.DeletableTopicResult(
        name=name, topic_id=topic_id, error_code=int(code), error_message=message)


def _resolve(ctx: RequestContext, name: str | None, topic_id: uuid.UUID, names: Counter[str],
             ids: Counter[uuid.UUID]) -> Topic:
    """The topic one entry names; KafkaError when the entry is wrong or names nothing."""
    cluster = ctx.broker.cluster
    if name is None and topic_id == ZERO_UUID:
        raise KafkaError(ErrorCode.INVALID_REQUEST, "Neither topic name nor id were specified.")
    if name is not None and topic_id != ZERO_UUID:
        raise KafkaError(ErrorCode.INVALID_REQUEST, "You may not specify both topic name and topic id.")
    if name is not None:
        if names[name] > 1:
            raise KafkaError(ErrorCode.INVALID_REQUEST, "Duplicate topic name.")
        topic = cluster.get(name)
        if topic is None:
            raise KafkaError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"Topic '{name}' does not exist.")
        return topic
    if ids[topic_id] > 1:
        raise KafkaError(ErrorCode.INVALID_REQUEST, "Duplicate topic id.")
    topic = cluster.get_by_id(topic_id)
    if topic is None:
        raise KafkaError(ErrorCode.UNKNOWN_TOPIC_ID, f"No topic has id {topic_id}.")
    return topic


async def handle_delete_topics(header: Any, body: Any, ctx: RequestContext) -> Any:
    version = ctx.api_version
    cluster = ctx.broker.cluster
    if version >= 6:
        entries = [(t.name, t.topic_id) for t in body.topics]
    else:
        entries = [(name, ZERO_UUID) for name in body.topic_names]
    response = messages.DeleteTopicsResponse

    if not ctx.broker.config.delete_topic_enable:
        code = ErrorCode.INVALID_REQUEST if version < 3 else ErrorCode.TOPIC_DELETION_DISABLED
        message = "Topic deletion is disabled (delete.topic.enable=false)."
        ctx.log_rejected("delete_topics.rejected", topics=[n for n, _ in entries], error=code.name, reason=message)
        return response(throttle_time_ms=0, responses=[_result(n, i, code, message) for n, i in entries])

    names = Counter(n for n, i in entries if n is not None and i == ZERO_UUID)
    ids = Counter(i for n, i in entries if n is None and i != ZERO_UUID)
    resolved: list[tuple[str | None, uuid.UUID, Topic | KafkaError]] = []
    for name, topic_id in entries:
        try:
            resolved.append((name, topic_id, _resolve(ctx, name, topic_id, names, ids)))
        except KafkaError as exc:
            resolved.append((name, topic_id, exc))
    # A name and an id that resolve to the same topic: Kafka deletes neither.
    targets = Counter(id(t) for _, _, t in resolved if isinstance(t, Topic))

    results = []
    for name, topic_id, target in resolved:
        if isinstance(target, Topic) and targets[id(target)] > 1:
            target = KafkaError(ErrorCode.INVALID_REQUEST,
                                "The provided topic name maps to an ID that was already supplied.")
        if isinstance(target, Topic) and not ctx.authorized(AclOperation.DELETE, ResourceType.TOPIC, target.name):
            # By id, a topic the principal may not even describe must not reveal its name.
            describable = ctx.authorized(AclOperation.DESCRIBE, ResourceType.TOPIC, target.name)
            target = KafkaError(ErrorCode.TOPIC_AUTHORIZATION_FAILED if name is not None or describable
                                else ErrorCode.UNKNOWN_TOPIC_ID, "Authorization failed.")
        if isinstance(target, Topic):
            try:
                await cluster.delete_topic(target.name)
            except KafkaError as exc:  # deleted meanwhile by another request
                target = exc
            else:
                results.append(_result(target.name, target.topic_id))
                continue
        ctx.log_rejected("delete_topics.rejected", topic=name, topic_id=str(topic_id), error=target.code.name,
                 reason=target.message)
        # An entry by id keeps its null name, as Kafka answers (names exist only from v6).
        results.append(_result(name, topic_id, target.code, target.message))
    return response(throttle_time_ms=0, responses=results)
