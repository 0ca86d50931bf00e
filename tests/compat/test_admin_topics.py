"""Topic administration with real clients: CreateTopics, DeleteTopics, CreatePartitions, DescribeCluster and
DescribeLogDirs against ``moldau serve``.

confluent-kafka (librdkafka: CreateTopics v4, DeleteTopics v4, CreatePartitions v2, DescribeCluster),
kafka-python 3 (CreateTopics v7, DeleteTopics v6, CreatePartitions v3) and aiokafka (v3/v3/v1) drive
the happy paths and the errors they surface; raw requests check the error paths clients hide. After
each error path a fresh client still lists topics, so a rejection never costs the broker. Each test
names the Kafka behaviour it checks; topic names are unique per test.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from protocol import messages as m
from protocol.errors import ErrorCode
from protocol.primitives import ZERO_UUID
from tests.compat.conftest import BrokerProcess, KafkaSocket, finish

CREATE_TOPICS, DELETE_TOPICS, DESCRIBE_LOG_DIRS, CREATE_PARTITIONS = 19, 20, 35, 37
TIMEOUT_S = 15


def unique(prefix: str) -> str:
    return f"admin-{prefix}-{uuid.uuid4().hex[:8]}"


def confluent_admin(broker: BrokerProcess) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": broker.bootstrap, "socket.timeout.ms": 10000})


def results(futures: dict[Any, Any]) -> dict[Any, Any]:
    """Each future's result, or the KafkaError it failed with."""
    from confluent_kafka import KafkaException

    out = {}
    for key, future in futures.items():
        try:
            out[key] = future.result(timeout=TIMEOUT_S)
        except KafkaException as exc:
            out[key] = exc.args[0]
    return out


def assert_still_serving(broker: BrokerProcess, *expected: str) -> None:
    """A fresh client connects and lists topics normally (the error cost nothing but its answer)."""
    listed = confluent_admin(broker).list_topics(timeout=TIMEOUT_S).topics
    assert all(t in listed for t in expected), (expected, sorted(listed))


# ---------------------------------------------------------------- confluent-kafka

def test_confluent_create_topics_with_configs_shows_in_list_topics_and_describe(broker: BrokerProcess) -> None:
    """CreateTopics creates the partitions asked for (or num.partitions for -1) and stores config overrides."""
    from confluent_kafka.admin import ConfigResource, NewTopic, ResourceType

    admin = confluent_admin(broker)
    plain, tuned = unique("plain"), unique("tuned")
    created = results(admin.create_topics([NewTopic(plain, 3, 1), NewTopic(tuned, -1, -1,
                                           config={"retention.ms": "60000", "cleanup.policy": "compact"})],
                                          request_timeout=TIMEOUT_S))
    assert created == {plain: None, tuned: None}
    topics = admin.list_topics(timeout=TIMEOUT_S).topics
    assert sorted(topics[plain].partitions) == [0, 1, 2]
    assert sorted(topics[tuned].partitions) == [0]
    configs = results(admin.describe_configs([ConfigResource(ResourceType.TOPIC, tuned)]))
    [entries] = configs.values()
    assert (entries["retention.ms"].value, entries["cleanup.policy"].value) == ("60000", "compact")
    assert entries["segment.ms"].is_default


def test_confluent_create_topics_errors_carry_kafkas_codes_and_messages(broker: BrokerProcess) -> None:
    """Replication factor 3 on one node, illegal names, an existing topic and a bad config: Kafka's codes."""
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import NewTopic

    admin = confluent_admin(broker)
    existing, wide, bad_config = unique("existing"), unique("wide"), unique("badcfg")
    assert results(admin.create_topics([NewTopic(existing, 1, 1)])) == {existing: None}
    got = results(admin.create_topics([
        NewTopic(existing, 1, 1), NewTopic(wide, 1, 3), NewTopic("bad name!", 1, 1),
        NewTopic(bad_config, 1, 1, config={"retention.ms": "forever"})], request_timeout=TIMEOUT_S))
    assert got[existing].code() == KafkaError.TOPIC_ALREADY_EXISTS
    assert got[wide].code() == KafkaError.INVALID_REPLICATION_FACTOR
    assert "single node" in got[wide].str()
    assert got["bad name!"].code() == KafkaError.TOPIC_EXCEPTION
    assert got[bad_config].code() == KafkaError.INVALID_CONFIG and "retention.ms" in got[bad_config].str()
    assert_still_serving(broker, existing)
    assert wide not in confluent_admin(broker).list_topics(timeout=TIMEOUT_S).topics


def test_confluent_create_topics_validate_only_creates_nothing(broker: BrokerProcess) -> None:
    """validate_only checks the request (errors included) and creates nothing."""
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import NewTopic

    admin = confluent_admin(broker)
    ok, bad = unique("vo-ok"), unique("vo-bad")
    got = results(admin.create_topics([NewTopic(ok, 2, 1), NewTopic(bad, 2, 2)], validate_only=True))
    assert got[ok] is None and got[bad].code() == KafkaError.INVALID_REPLICATION_FACTOR
    topics = admin.list_topics(timeout=TIMEOUT_S).topics
    assert ok not in topics and bad not in topics


def test_confluent_create_topics_with_a_replica_assignment(broker: BrokerProcess) -> None:
    """A manual replica assignment naming this broker creates one partition per replica list."""
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import NewTopic

    admin = confluent_admin(broker)
    good, foreign = unique("assigned"), unique("foreign")
    got = results(admin.create_topics([NewTopic(good, 2, replica_assignment=[[1], [1]]),
                                       NewTopic(foreign, 1, replica_assignment=[[2]])]))
    assert got[good] is None
    assert got[foreign].code() == KafkaError.INVALID_REPLICA_ASSIGNMENT and "broker 2" in got[foreign].str()
    assert sorted(admin.list_topics(timeout=TIMEOUT_S).topics[good].partitions) == [0, 1]


def test_confluent_delete_topics_removes_them_and_reports_unknown_ones(broker: BrokerProcess) -> None:
    """DeleteTopics removes a topic from Metadata; an unknown name is UNKNOWN_TOPIC_OR_PARTITION."""
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import NewTopic

    admin = confluent_admin(broker)
    doomed, kept, missing = unique("doomed"), unique("kept"), unique("missing")
    assert results(admin.create_topics([NewTopic(doomed, 1, 1), NewTopic(kept, 1, 1)])) == {doomed: None, kept: None}
    got = results(admin.delete_topics([doomed, missing], request_timeout=TIMEOUT_S))
    assert got[doomed] is None and got[missing].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    topics = admin.list_topics(timeout=TIMEOUT_S).topics
    assert doomed not in topics and kept in topics
    # The name is free again.
    assert results(admin.create_topics([NewTopic(doomed, 2, 1)])) == {doomed: None}


def test_confluent_create_partitions_grows_a_topic_and_refuses_to_shrink(broker: BrokerProcess) -> None:
    """CreatePartitions adds partitions; a lower or equal count is INVALID_PARTITIONS; validate_only adds none."""
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import NewPartitions, NewTopic

    admin = confluent_admin(broker)
    grow, shrink = unique("grow"), unique("shrink")
    assert results(admin.create_topics([NewTopic(grow, 1, 1), NewTopic(shrink, 3, 1)])) == {grow: None, shrink: None}
    got = results(admin.create_partitions([NewPartitions(grow, 4), NewPartitions(shrink, 2)]))
    assert got[grow] is None
    assert got[shrink].code() == KafkaError.INVALID_PARTITIONS and "higher than the requested 2" in got[shrink].str()
    assert results(admin.create_partitions([NewPartitions(grow, 9)], validate_only=True)) == {grow: None}
    topics = admin.list_topics(timeout=TIMEOUT_S).topics
    assert (len(topics[grow].partitions), len(topics[shrink].partitions)) == (4, 3)


def test_confluent_describe_cluster_names_this_broker_and_the_cluster_id(broker: BrokerProcess) -> None:
    """DescribeCluster: this node with its address, the cluster id, itself as controller, and the
    authorized operations when asked for."""
    from confluent_kafka.admin import AclOperation

    admin = confluent_admin(broker)
    described = admin.describe_cluster(request_timeout=TIMEOUT_S, include_authorized_operations=True) \
        .result(timeout=TIMEOUT_S)
    assert described.cluster_id == broker.ready["cluster_id"]
    assert [(n.id, n.host, n.port) for n in described.nodes] == [(1, broker.host, broker.port)]
    assert described.controller.id == 1
    assert AclOperation.DESCRIBE in described.authorized_operations
    assert AclOperation.ALTER_CONFIGS in described.authorized_operations


def test_topic_deletion_disabled_answers_topic_deletion_disabled(
        start_broker: Callable[..., BrokerProcess]) -> None:
    """delete.topic.enable=false: DeleteTopics answers TOPIC_DELETION_DISABLED and the topic stays."""
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import NewTopic

    broker = start_broker("--set", "delete.topic.enable=false")
    admin = confluent_admin(broker)
    kept = unique("undeletable")
    assert results(admin.create_topics([NewTopic(kept, 1, 1)])) == {kept: None}
    got = results(admin.delete_topics([kept]))
    assert got[kept].code() == KafkaError.TOPIC_DELETION_DISABLED
    assert_still_serving(broker, kept)


# ---------------------------------------------------------------- kafka-python and aiokafka

def test_kafka_python_topic_lifecycle(broker: BrokerProcess) -> None:
    """kafka-python 3 (CreateTopics v7, CreatePartitions v3, DeleteTopics v6): create with configs, grow,
    delete; its errors are Kafka's (TopicAlreadyExistsError, InvalidReplicationFactorError)."""
    from kafka.admin import KafkaAdminClient, NewPartitions, NewTopic
    from kafka.errors import (
        InvalidReplicationFactorError,
        TopicAlreadyExistsError,
        UnknownTopicOrPartitionError,
    )

    name = unique("kp")
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)
    try:
        created = admin.create_topics([NewTopic(name, 2, 1, topic_configs={"retention.ms": "2000"})])
        [result] = created["topics"]
        assert (result["error_code"], result["num_partitions"], result["replication_factor"]) == (0, 2, 1)
        assert result["configs"]["retention.ms"]["value"] == "2000"
        with pytest.raises(TopicAlreadyExistsError):
            admin.create_topics([NewTopic(name, 2, 1)])
        with pytest.raises(InvalidReplicationFactorError):
            admin.create_topics([NewTopic(unique("kp-wide"), 1, 2)])
        grown = admin.create_partitions({name: NewPartitions(5)})
        assert [r.error_code for r in grown.results] == [0]
        assert len(admin.describe_topics([name])[0]["partitions"]) == 5
        deleted = admin.delete_topics([name])
        assert [(t["name"], t["error_code"]) for t in deleted["topics"]] == [(name, 0)]
        with pytest.raises(UnknownTopicOrPartitionError):
            admin.delete_topics([name])
        assert name not in admin.list_topics()
    finally:
        admin.close()
    assert_still_serving(broker)


def test_aiokafka_create_and_delete_topics(broker: BrokerProcess) -> None:
    """aiokafka (CreateTopics v3, CreatePartitions v1, DeleteTopics v3): per-topic codes and messages."""
    from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic

    name = unique("aio")

    async def run() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)
        await asyncio.wait_for(admin.start(), TIMEOUT_S)
        try:
            first = await admin.create_topics([NewTopic(name, 2, 1, topic_configs={"cleanup.policy": "compact"})])
            assert [(t, code) for t, code, _ in first.topic_errors] == [(name, 0)]
            again = await admin.create_topics([NewTopic(name, 2, 1)])
            [(_, code, message)] = again.topic_errors
            assert code == ErrorCode.TOPIC_ALREADY_EXISTS and name in message
            grown = await admin.create_partitions({name: NewPartitions(3)})
            assert [code for _, code, _ in grown.topic_errors] == [0]
            assert name in await admin.list_topics()
            deleted = await admin.delete_topics([name])
            assert list(deleted.topic_error_codes) == [(name, 0)]
        finally:
            await asyncio.wait_for(admin.close(), TIMEOUT_S)

    asyncio.run(run())
    assert_still_serving(broker)


# ---------------------------------------------------------------- raw requests: what clients hide

def test_raw_create_topics_duplicates_and_assignment_rules(broker: BrokerProcess,
                                                           raw_socket: Callable[[BrokerProcess], KafkaSocket]) -> None:
    """A name given twice is INVALID_REQUEST (Kafka's message names the client); an assignment with sizes
    set is INVALID_REQUEST; v7 answers the topic id, sizes and configs of created topics."""
    req = m.CreateTopicsRequest
    dup, ok, sized = unique("dup"), unique("ok"), unique("sized")
    sock = raw_socket(broker)
    body = req(topics=[
        req.CreatableTopic(name=dup, num_partitions=1, replication_factor=1),
        req.CreatableTopic(name=ok, num_partitions=2, replication_factor=-1),
        req.CreatableTopic(name=dup, num_partitions=1, replication_factor=1),
        req.CreatableTopic(name=sized, num_partitions=1, replication_factor=-1, assignments=[
            req.CreatableReplicaAssignment(partition_index=0, broker_ids=[1])])], timeout_ms=5000)
    response = sock.request(CREATE_TOPICS, 7, 1, body)
    got = {t.name: t for t in response.topics}
    assert list(got) == [dup, ok, sized]
    assert got[dup].error_code == ErrorCode.INVALID_REQUEST
    assert got[dup].error_message == (f"Create topics request from client `moldau-compat` contains multiple "
                                      f"entries for the following topics: {dup}")
    assert (got[dup].num_partitions, got[dup].replication_factor, got[dup].configs) == (-1, -1, [])
    assert (got[ok].error_code, got[ok].num_partitions, got[ok].replication_factor) == (0, 2, 1)
    assert got[ok].topic_id != ZERO_UUID
    assert {c.name: (c.value, c.config_source) for c in got[ok].configs}["retention.ms"] == ("604800000", 5)
    assert got[sized].error_code == ErrorCode.INVALID_REQUEST and "numPartitions" in got[sized].error_message
    assert_still_serving(broker, ok)


def test_raw_delete_topics_by_id(broker: BrokerProcess, raw_socket: Callable[[BrokerProcess], KafkaSocket]) -> None:
    """DeleteTopics v6 deletes by topic id (answering the name) and answers UNKNOWN_TOPIC_ID for an unknown id."""
    name = unique("by-id")
    sock = raw_socket(broker)
    req = m.CreateTopicsRequest
    [created] = sock.request(CREATE_TOPICS, 7, 1, req(topics=[req.CreatableTopic(
        name=name, num_partitions=1, replication_factor=1)])).topics
    unknown = uuid.uuid4()
    dreq = m.DeleteTopicsRequest
    response = sock.request(DELETE_TOPICS, 6, 2, dreq(topics=[
        dreq.DeleteTopicState(topic_id=created.topic_id), dreq.DeleteTopicState(topic_id=unknown)], timeout_ms=5000))
    assert [(r.name, r.topic_id, r.error_code) for r in response.responses] == [
        (name, created.topic_id, 0), (None, unknown, ErrorCode.UNKNOWN_TOPIC_ID)]
    assert name not in confluent_admin(broker).list_topics(timeout=TIMEOUT_S).topics


def test_raw_create_partitions_duplicates_and_assignments(broker: BrokerProcess,
                                                          raw_socket: Callable[[BrokerProcess], KafkaSocket]) -> None:
    """CreatePartitions: a topic named twice is INVALID_REQUEST; an assignment naming another broker is
    INVALID_REPLICA_ASSIGNMENT; neither adds partitions."""
    name = unique("cp")
    sock = raw_socket(broker)
    req = m.CreateTopicsRequest
    sock.request(CREATE_TOPICS, 7, 1, req(topics=[req.CreatableTopic(name=name, num_partitions=1,
                                                                     replication_factor=1)]))
    cp = m.CreatePartitionsRequest
    dup = sock.request(CREATE_PARTITIONS, 3, 2, cp(topics=[cp.CreatePartitionsTopic(name=name, count=2,
                                                                                    assignments=None)] * 2))
    assert [(r.name, r.error_code, r.error_message) for r in dup.results] == [
        (name, ErrorCode.INVALID_REQUEST, "Duplicate topic name.")]
    foreign = sock.request(CREATE_PARTITIONS, 3, 3, cp(topics=[cp.CreatePartitionsTopic(
        name=name, count=2, assignments=[cp.CreatePartitionsAssignment(broker_ids=[7])])]))
    [result] = foreign.results
    assert result.error_code == ErrorCode.INVALID_REPLICA_ASSIGNMENT and "broker 7" in result.error_message
    assert len(confluent_admin(broker).list_topics(timeout=TIMEOUT_S).topics[name].partitions) == 1


def test_raw_describe_log_dirs_v4_in_memory(broker: BrokerProcess,
                                            raw_socket: Callable[[BrokerProcess], KafkaSocket]) -> None:
    """DescribeLogDirs v4 with in-memory storage: one log dir named memory://, every partition of every
    topic (empty: size 0, lag 0), and -1 for total/usable bytes since nothing is on disk."""
    name = unique("logdirs")
    sock = raw_socket(broker)
    req = m.CreateTopicsRequest
    sock.request(CREATE_TOPICS, 7, 1, req(topics=[req.CreatableTopic(name=name, num_partitions=2,
                                                                     replication_factor=1)]))
    response = sock.request(DESCRIBE_LOG_DIRS, 4, 2, m.DescribeLogDirsRequest(topics=None))
    assert response.error_code == 0
    [result] = response.results
    assert (result.error_code, result.log_dir, result.total_bytes, result.usable_bytes) == (0, "memory://", -1, -1)
    [topic] = [t for t in result.topics if t.name == name]
    assert [(p.partition_index, p.partition_size, p.offset_lag, p.is_future_key) for p in topic.partitions] == [
        (0, 0, 0, False), (1, 0, 0, False)]


@pytest.fixture
def data_dir_broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    """A broker with a data directory (the conftest helpers always pass --memory)."""
    proc = BrokerProcess(["--data-dir", str(tmp_path / "data")], tmp_path, memory=False)
    try:
        yield proc
    finally:
        finish(proc)


def test_raw_describe_log_dirs_v4_with_a_data_dir(data_dir_broker: BrokerProcess, tmp_path: Path,
                                                  raw_socket: Callable[[BrokerProcess], KafkaSocket]) -> None:
    """With a data directory the log dir is its absolute path, with the file system's total and usable bytes;
    v0 has the same layout without them."""
    sock = raw_socket(data_dir_broker)
    [result] = sock.request(DESCRIBE_LOG_DIRS, 4, 1, m.DescribeLogDirsRequest(topics=[])).results
    assert result.log_dir == str((tmp_path / "data").absolute())
    assert result.total_bytes > 0 and 0 <= result.usable_bytes <= result.total_bytes
    assert result.topics == []
    [old] = sock.request(DESCRIBE_LOG_DIRS, 0, 2, m.DescribeLogDirsRequest(topics=None)).results
    assert (old.error_code, old.log_dir) == (0, result.log_dir)
