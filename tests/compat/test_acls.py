"""ACLs with Kafka's StandardAuthorizer semantics, driven by real clients over SASL/PLAIN.

One broker (``authorizer.class.name`` = StandardAuthorizer, ``super.users=User:admin``) serves the module;
admin manages ACLs with confluent-kafka's AdminClient (CreateAcls, DescribeAcls, DeleteAcls) and the Java
AdminClient; alice and bob get Kafka's authorization errors where their ACLs do not reach: produce, fetch,
group join, offset commit, transactional id; PREFIXED and DENY bindings; Metadata hides what they may not
describe. Every test uses its own topics, groups and principals' ACLs (names carry a unique suffix).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from tests.compat.conftest import BrokerProcess, finish
from tests.compat.java_client import java_client

USERS = {"admin": "admin-secret", "alice": "alice-secret", "bob": "bob-secret"}
JAAS = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
        + " ".join(f'user_{u}="{p}"' for u, p in USERS.items()) + ";")
DEADLINE_S = 20.0


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    tmp = tmp_path_factory.mktemp("acl-broker")
    proc = BrokerProcess([
        "--set", "listeners=SASL_PLAINTEXT://127.0.0.1:0",
        "--set", "sasl.enabled.mechanisms=PLAIN",
        "--set", f"listener.name.sasl_plaintext.plain.sasl.jaas.config={JAAS}",
        "--set", "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "--set", "super.users=User:admin",
        "--set", "connection.failed.authentication.delay.ms=0"], tmp)
    yield proc
    finish(proc)


def config(broker: BrokerProcess, user: str) -> dict[str, Any]:
    return {"bootstrap.servers": broker.listeners["SASL_PLAINTEXT"], "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN", "sasl.username": user, "sasl.password": USERS[user]}


def unique(what: str) -> str:
    return f"{what}-{uuid.uuid4().hex[:8]}"


def admin(broker: BrokerProcess, user: str = "admin") -> AdminClient:
    return AdminClient(config(broker, user))


def create_topics(broker: BrokerProcess, *names: str) -> None:
    client = admin(broker)  # kept alive until the futures are done: a destroyed client fails them
    futures = client.create_topics([NewTopic(n, num_partitions=1, replication_factor=1) for n in names])
    for future in futures.values():
        future.result(DEADLINE_S)


def allow(broker: BrokerProcess, principal: str, resource: ResourceType, name: str, operation: AclOperation,
          pattern: ResourcePatternType = ResourcePatternType.LITERAL,
          permission: AclPermissionType = AclPermissionType.ALLOW) -> None:
    binding = AclBinding(resource, name, pattern, principal, "*", operation, permission)
    client = admin(broker)
    for future in client.create_acls([binding]).values():
        assert future.result(DEADLINE_S) is None


def produce_error(broker: BrokerProcess, user: str, topic: str, **extra: Any) -> KafkaError | None:
    """The delivery error of one record (None when it was written)."""
    producer = Producer({**config(broker, user), "message.timeout.ms": 10000, **extra})
    outcome: list[KafkaError | None] = []
    producer.produce(topic, b"v", on_delivery=lambda err, msg: outcome.append(err))
    producer.flush(DEADLINE_S)
    assert outcome, "no delivery report"
    return outcome[0]


def first_consumer_error(consumer: Consumer) -> KafkaError | None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is not None and msg.error().code() != KafkaError._PARTITION_EOF:
            return msg.error()
        if msg is not None and msg.error() is None:
            return None
    raise AssertionError("the consumer saw neither a record nor an error")


def test_admin_creates_describes_and_deletes_acls_and_others_may_not(broker: BrokerProcess) -> None:
    topic = unique("acl-admin")
    principal = f"User:{unique('someone')}"
    bindings = [AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, principal, "*",
                           AclOperation.READ, AclPermissionType.ALLOW),
                AclBinding(ResourceType.GROUP, "g-", ResourcePatternType.PREFIXED, principal, "10.0.0.1",
                           AclOperation.ALL, AclPermissionType.DENY)]
    client = admin(broker)
    for future in client.create_acls(bindings).values():
        assert future.result(DEADLINE_S) is None
    mine = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, principal, None, AclOperation.ANY,
                            AclPermissionType.ANY)
    described = client.describe_acls(mine).result(DEADLINE_S)
    assert sorted(described, key=str) == sorted(bindings, key=str)
    # MATCH: the ACLs that apply to one resource, whatever their pattern.
    match = AclBindingFilter(ResourceType.GROUP, "g-orders", ResourcePatternType.MATCH, None, None,
                             AclOperation.ANY, AclPermissionType.ANY)
    assert [b for b in client.describe_acls(match).result(DEADLINE_S) if b.principal == principal] == [bindings[1]]
    # Not a super user, no ALTER on the cluster: CLUSTER_AUTHORIZATION_FAILED.
    bob = admin(broker, "bob")
    refused = next(iter(bob.create_acls([bindings[0]]).values()))
    with pytest.raises(KafkaException) as info:
        refused.result(DEADLINE_S)
    assert info.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    deleted = client.delete_acls([mine])
    assert sorted(next(iter(deleted.values())).result(DEADLINE_S), key=str) == sorted(bindings, key=str)
    assert client.describe_acls(mine).result(DEADLINE_S) == []


def test_produce_needs_write_on_the_topic(broker: BrokerProcess) -> None:
    topic = unique("acl-produce")
    create_topics(broker, topic)
    error = produce_error(broker, "alice", topic)
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    allow(broker, "User:alice", ResourceType.TOPIC, topic, AclOperation.WRITE)
    assert produce_error(broker, "alice", topic) is None


def test_fetch_needs_read_on_the_topic(broker: BrokerProcess) -> None:
    topic = unique("acl-fetch")
    create_topics(broker, topic)
    assert produce_error(broker, "admin", topic) is None
    allow(broker, "User:alice", ResourceType.TOPIC, topic, AclOperation.DESCRIBE)  # sees it, cannot read it
    # A group id librdkafka insists on; alice cannot find its coordinator, an error that may come first.
    consumer = Consumer({**config(broker, "alice"), "group.id": unique("unused"), "enable.auto.commit": False})
    seen = []
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline and KafkaError.TOPIC_AUTHORIZATION_FAILED not in seen:
            error = first_consumer_error(consumer)
            assert error is not None, "alice read a record without READ on the topic"
            seen.append(error.code())
    finally:
        consumer.close()
    assert KafkaError.TOPIC_AUTHORIZATION_FAILED in seen


def test_group_join_needs_read_on_the_group(broker: BrokerProcess) -> None:
    topic, group = unique("acl-join"), unique("acl-join-group")
    create_topics(broker, topic)
    allow(broker, "User:alice", ResourceType.TOPIC, topic, AclOperation.READ)
    consumer = Consumer({**config(broker, "alice"), "group.id": group, "auto.offset.reset": "earliest"})
    try:
        consumer.subscribe([topic])
        error = first_consumer_error(consumer)
    finally:
        consumer.close()
    assert error is not None and error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED


def test_offset_commit_needs_read_on_the_group_and_the_topic(broker: BrokerProcess) -> None:
    readable, other, group = unique("acl-commit"), unique("acl-commit-other"), unique("acl-commit-group")
    create_topics(broker, readable, other)
    allow(broker, "User:alice", ResourceType.TOPIC, readable, AclOperation.READ)
    allow(broker, "User:alice", ResourceType.GROUP, group, AclOperation.READ)
    consumer = Consumer({**config(broker, "alice"), "group.id": group, "enable.auto.commit": False})
    try:
        # librdkafka raises the first partition error of a commit; the other partition is committed.
        with pytest.raises(KafkaException) as info:
            consumer.commit(offsets=[TopicPartition(readable, 0, 3), TopicPartition(other, 0, 3)],
                            asynchronous=False)
        assert info.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        committed = consumer.committed([TopicPartition(readable, 0)], timeout=DEADLINE_S)
    finally:
        consumer.close()
    assert [(tp.topic, tp.offset) for tp in committed] == [(readable, 3)]
    # DESCRIBE on the group finds its coordinator (FindCoordinator needs it); committing needs READ.
    allow(broker, "User:bob", ResourceType.GROUP, group, AclOperation.DESCRIBE)
    outsider = Consumer({**config(broker, "bob"), "group.id": group, "enable.auto.commit": False})
    try:
        with pytest.raises(KafkaException) as info:
            outsider.commit(offsets=[TopicPartition(readable, 0, 4)], asynchronous=False)
    finally:
        outsider.close()
    assert info.value.args[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED


def test_transactional_id_needs_write(broker: BrokerProcess) -> None:
    txn_id = unique("acl-txn")
    producer = Producer({**config(broker, "alice"), "transactional.id": txn_id, "transaction.timeout.ms": 10000})
    with pytest.raises(KafkaException) as info:
        producer.init_transactions(DEADLINE_S)
    assert info.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    allow(broker, "User:alice", ResourceType.TRANSACTIONAL_ID, txn_id, AclOperation.WRITE)
    Producer({**config(broker, "alice"), "transactional.id": txn_id}).init_transactions(DEADLINE_S)


def test_prefixed_bindings_cover_every_topic_with_the_prefix(broker: BrokerProcess) -> None:
    prefix = unique("team") + "-"
    mine, theirs = prefix + "orders", unique("other-team") + "-orders"
    create_topics(broker, mine, theirs)
    allow(broker, "User:bob", ResourceType.TOPIC, prefix, AclOperation.WRITE, ResourcePatternType.PREFIXED)
    assert produce_error(broker, "bob", mine) is None
    error = produce_error(broker, "bob", theirs)
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_deny_wins_over_allow(broker: BrokerProcess) -> None:
    prefix = unique("denied") + "-"
    open_topic, secret = prefix + "open", prefix + "secret"
    create_topics(broker, open_topic, secret)
    allow(broker, "User:*", ResourceType.TOPIC, prefix, AclOperation.WRITE, ResourcePatternType.PREFIXED)
    allow(broker, "User:bob", ResourceType.TOPIC, secret, AclOperation.WRITE, permission=AclPermissionType.DENY)
    assert produce_error(broker, "bob", open_topic) is None
    assert produce_error(broker, "alice", secret) is None
    error = produce_error(broker, "bob", secret)
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_metadata_hides_topics_the_principal_may_not_describe(broker: BrokerProcess) -> None:
    visible, hidden = unique("acl-visible"), unique("acl-hidden")
    create_topics(broker, visible, hidden)
    allow(broker, "User:bob", ResourceType.TOPIC, visible, AclOperation.READ)  # READ implies DESCRIBE
    bob_sees = set(admin(broker, "bob").list_topics(timeout=DEADLINE_S).topics)
    assert visible in bob_sees and hidden not in bob_sees
    assert {visible, hidden} <= set(admin(broker).list_topics(timeout=DEADLINE_S).topics)  # the super user
    named = admin(broker, "bob").list_topics(topic=hidden, timeout=DEADLINE_S).topics[hidden]
    assert named.error is not None and named.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_java_admin_client_manages_acls(broker: BrokerProcess, tmp_path: Path) -> None:
    client_config = tmp_path / "admin.properties"
    client_config.write_text(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n"
        'sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required '
        'username="admin" password="admin-secret";\n')
    topic = unique("acl-java")
    out = java_client("acls", broker.listeners["SASL_PLAINTEXT"], topic, "User:carol", client_config=client_config)
    assert out["created"] == 2 and out["described"] == 2 and out["deleted"] == 2 and out["after"] == 0


def test_acls_survive_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    args = ["--set", "listeners=SASL_PLAINTEXT://127.0.0.1:0", "--set", "sasl.enabled.mechanisms=PLAIN",
            "--set", f"listener.name.sasl_plaintext.plain.sasl.jaas.config={JAAS}",
            "--set", "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "--set", "super.users=User:admin", "--set", f"log.dirs={data}"]
    first = BrokerProcess(args, tmp_path, memory=False)
    try:
        allow(first, "User:alice", ResourceType.TOPIC, "kept", AclOperation.READ)
    finally:
        finish(first)
    second = BrokerProcess(args, tmp_path, memory=False)
    try:
        everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                      AclOperation.ANY, AclPermissionType.ANY)
        client = admin(second)
        found = client.describe_acls(everything).result(DEADLINE_S)
    finally:
        finish(second)
    assert [(b.name, b.principal, b.operation) for b in found] == [("kept", "User:alice", AclOperation.READ)]
