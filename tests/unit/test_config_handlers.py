"""In-process tests of the topic and config administration handlers: CreateTopics, DeleteTopics,
CreatePartitions, DescribeConfigs, AlterConfigs, IncrementalAlterConfigs, DescribeLogDirs and
DescribeCluster.

Each request is encoded and decoded at the version under test and so is each answer, so every
version's layout is exercised, against a real in-process ``Broker`` with in-memory storage. Each test
names the Kafka behaviour it checks.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from broker.config import BrokerConfig
from broker.handlers import ConnectionInfo, RequestContext
from broker.server import Broker
from protocol import codec
from protocol import messages as m
from protocol.errors import ErrorCode
from protocol.primitives import ZERO_UUID
from protocol.records.builder import build_batch
from protocol.records.record import Record

CREATE_TOPICS, DELETE_TOPICS, CREATE_PARTITIONS = 19, 20, 37
DESCRIBE_CONFIGS, ALTER_CONFIGS, INCREMENTAL_ALTER_CONFIGS = 32, 33, 44
DESCRIBE_LOG_DIRS, DESCRIBE_CLUSTER = 35, 60
TOPIC, BROKER, BROKER_LOGGER = 2, 4, 8
SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3

CT = m.CreateTopicsRequest
DT = m.DeleteTopicsRequest
CP = m.CreatePartitionsRequest
DC = m.DescribeConfigsRequest
AC = m.AlterConfigsRequest
IAC = m.IncrementalAlterConfigsRequest


def run(test: Callable[[Broker], Awaitable[None]], **settings: Any) -> None:
    async def main() -> None:
        broker = Broker(BrokerConfig.from_settings({"storage.url": "memory://", "listeners": "127.0.0.1:0",
                                                    **settings}))
        await broker.start()
        try:
            await asyncio.wait_for(test(broker), 20)
        finally:
            await broker.stop()

    asyncio.run(main())


async def call(broker: Broker, api_key: int, version: int, body: Any, client_id: str = "unit") -> Any:
    """Encode the request at ``version``, run the registered handler, and decode its answer."""
    frame = b"".join(bytes(p) for p in codec.encode_request(api_key, version, 7, client_id, body))
    header, request = codec.decode_request(frame[4:])
    result = broker.registry.lookup(api_key).handler(header, request, RequestContext(
        broker, ConnectionInfo(peer="unit", advertised=broker.advertised_address), version))
    if inspect.isawaitable(result):
        result = await result
    out = b"".join(bytes(p) for p in codec.encode_response(api_key, version, 7, result))
    return codec.decode_response(api_key, version, out[4:])[1]


def topic(name: str, partitions: int = 1, rf: int = 1, configs: dict[str, str | None] | None = None,
          assignments: list[tuple[int, list[int]]] | None = None) -> Any:
    return CT.CreatableTopic(
        name=name, num_partitions=partitions, replication_factor=rf,
        configs=[CT.CreatableTopicConfig(name=k, value=v) for k, v in (configs or {}).items()],
        assignments=[CT.CreatableReplicaAssignment(partition_index=i, broker_ids=b) for i, b in assignments or []])


async def create(broker: Broker, *topics: Any, version: int = 7, validate_only: bool = False) -> list[Any]:
    body = CT(topics=list(topics), timeout_ms=1000, validate_only=validate_only)
    return (await call(broker, CREATE_TOPICS, version, body)).topics


async def describe_topic(broker: Broker, name: str, version: int = 4, synonyms: bool = True,
                         keys: list[str] | None = None) -> Any:
    body = DC(resources=[DC.DescribeConfigsResource(resource_type=TOPIC, resource_name=name,
                                                    configuration_keys=keys)],
              include_synonyms=synonyms, include_documentation=version >= 3)
    return (await call(broker, DESCRIBE_CONFIGS, version, body)).results[0]


def by_name(result: Any) -> dict[str, Any]:
    return {c.name: c for c in result.configs}


# ---------------------------------------------------------------- CreateTopics

@pytest.mark.parametrize("version", range(8))
def test_create_topics_every_version_creates_and_answers_in_that_versions_layout(version: int) -> None:
    """Each version creates the topic; v5+ reports partitions, replication factor and configs; v7+ the id."""
    async def test(broker: Broker) -> None:
        [result] = await create(broker, topic("t", 3, configs={"retention.ms": "1000"}), version=version)
        assert result.error_code == 0, result
        created = broker.cluster.get("t")
        assert created is not None and len(created.partitions) == 3
        if version >= 5:
            assert (result.num_partitions, result.replication_factor) == (3, 1)
            configs = by_name(result)
            assert (configs["retention.ms"].value, configs["retention.ms"].config_source) == ("1000", 1)
            assert (configs["cleanup.policy"].value, configs["cleanup.policy"].config_source) == ("delete", 5)
            assert not configs["retention.ms"].read_only and not configs["retention.ms"].is_sensitive
        if version >= 7:
            assert result.topic_id == created.topic_id
    run(test)


def test_create_topics_minus_one_takes_the_broker_defaults() -> None:
    """num_partitions/replication_factor -1 mean num.partitions and default.replication.factor."""
    async def test(broker: Broker) -> None:
        [result] = await create(broker, topic("t", -1, -1))
        assert (result.error_code, result.num_partitions, result.replication_factor) == (0, 4, 1)
    run(test, **{"num.partitions": 4})


def test_create_topics_default_replication_factor_above_one_is_invalid_on_a_single_node() -> None:
    """default.replication.factor=3 cannot be met by one broker: INVALID_REPLICATION_FACTOR saying why."""
    async def test(broker: Broker) -> None:
        [result] = await create(broker, topic("t", 1, -1))
        assert result.error_code == ErrorCode.INVALID_REPLICATION_FACTOR
        assert "single node" in result.error_message
        assert (result.num_partitions, result.replication_factor, result.configs) == (-1, -1, [])
    run(test, **{"default.replication.factor": 3})


@pytest.mark.parametrize(("partitions", "rf", "code"), [
    (1, 0, ErrorCode.INVALID_REPLICATION_FACTOR), (1, -2, ErrorCode.INVALID_REPLICATION_FACTOR),
    (1, 3, ErrorCode.INVALID_REPLICATION_FACTOR), (0, 1, ErrorCode.INVALID_PARTITIONS),
    (-5, 1, ErrorCode.INVALID_PARTITIONS)])
def test_create_topics_rejects_bad_sizes(partitions: int, rf: int, code: ErrorCode) -> None:
    """Non-positive sizes (other than -1) and a replication factor above 1 are rejected with Kafka's codes."""
    async def test(broker: Broker) -> None:
        [result] = await create(broker, topic("t", partitions, rf))
        assert result.error_code == code, result
        assert result.error_message
        assert broker.cluster.get("t") is None
    run(test)


def test_create_topics_manual_assignment_creates_one_partition_per_entry() -> None:
    """A manual assignment with -1 sizes creates one partition per replica list."""
    async def test(broker: Broker) -> None:
        [result] = await create(broker, topic("t", -1, -1, assignments=[(1, [1]), (0, [1])]))
        assert (result.error_code, result.num_partitions, result.replication_factor) == (0, 2, 1)
        assert len(broker.cluster.get("t").partitions) == 2
    run(test)


@pytest.mark.parametrize(("partitions", "rf", "assignments", "code", "text"), [
    (-1, 1, [(0, [1])], ErrorCode.INVALID_REQUEST, "replication factor was not set to -1"),
    (2, -1, [(0, [1])], ErrorCode.INVALID_REQUEST, "numPartitions was not set to -1"),
    (-1, -1, [(0, [2])], ErrorCode.INVALID_REPLICA_ASSIGNMENT, "includes broker 2"),
    (-1, -1, [(0, [1, 1])], ErrorCode.INVALID_REPLICA_ASSIGNMENT, "more than once"),
    (-1, -1, [(0, [])], ErrorCode.INVALID_REPLICA_ASSIGNMENT, "empty replica list"),
    (-1, -1, [(0, [1]), (0, [1])], ErrorCode.INVALID_REPLICA_ASSIGNMENT, "multiple manual partition"),
    (-1, -1, [(0, [1]), (2, [1])], ErrorCode.INVALID_REPLICA_ASSIGNMENT, "consecutive 0-based"),
])
def test_create_topics_rejects_bad_manual_assignments(partitions: int, rf: int, assignments: list[Any],
                                                      code: ErrorCode, text: str) -> None:
    """Kafka's manual assignment rules: sizes must be -1, replicas must be registered brokers, once each."""
    async def test(broker: Broker) -> None:
        [result] = await create(broker, topic("t", partitions, rf, assignments=assignments))
        assert (result.error_code, text in (result.error_message or "")) == (code, True), result
        assert broker.cluster.get("t") is None
    run(test)


def test_create_topics_duplicate_names_are_invalid_request_naming_the_client() -> None:
    """Duplicates: INVALID_REQUEST once per name with Kafka's message; the other topics are created."""
    async def test(broker: Broker) -> None:
        results = await create(broker, topic("dup"), topic("other"), topic("dup"))
        assert [(r.name, r.error_code) for r in results] == [("dup", ErrorCode.INVALID_REQUEST), ("other", 0)]
        assert results[0].error_message == ("Create topics request from client `unit` contains multiple "
                                             "entries for the following topics: dup")
        assert broker.cluster.get("dup") is None and broker.cluster.get("other") is not None
    run(test)


def test_create_topics_validate_only_creates_nothing_and_reports_the_result() -> None:
    """validate_only answers as a creation would, with the zero topic id, and creates nothing."""
    async def test(broker: Broker) -> None:
        [result] = await create(broker, topic("t", 2, configs={"cleanup.policy": "compact"}), validate_only=True)
        assert (result.error_code, result.num_partitions, result.topic_id) == (0, 2, ZERO_UUID)
        assert by_name(result)["cleanup.policy"].value == "compact"
        assert broker.cluster.get("t") is None
        [bad] = await create(broker, topic("t", 2, rf=2), validate_only=True)
        assert bad.error_code == ErrorCode.INVALID_REPLICATION_FACTOR
    run(test)


@pytest.mark.parametrize(("configs", "text"), [
    ({"no.such.config": "1"}, "no.such.config"), ({"retention.ms": "soon"}, "retention.ms"),
    ({"cleanup.policy": "shred"}, "cleanup.policy"), ({"segment.bytes": None}, "segment.bytes")])
def test_create_topics_bad_configs_are_invalid_config_naming_the_config(configs: dict[str, Any], text: str) -> None:
    """Unknown names, bad values and null values: INVALID_CONFIG whose message names the config."""
    async def test(broker: Broker) -> None:
        [result] = await create(broker, topic("t", configs=configs))
        assert result.error_code == ErrorCode.INVALID_CONFIG and text in result.error_message, result
    run(test)


def test_create_topics_existing_and_illegal_names() -> None:
    """TOPIC_ALREADY_EXISTS for a second creation, INVALID_TOPIC_EXCEPTION for illegal or colliding names."""
    async def test(broker: Broker) -> None:
        await create(broker, topic("a.b"))
        results = await create(broker, topic("a.b"), topic("bad name"), topic(""), topic("a_b"), topic("x" * 250))
        assert [r.error_code for r in results] == [ErrorCode.TOPIC_ALREADY_EXISTS] + \
            [ErrorCode.INVALID_TOPIC_EXCEPTION] * 4
        assert all(r.error_message for r in results)
    run(test)


def test_create_topics_v0_has_no_message_but_the_code() -> None:
    """v0 has no error message field: the code alone comes back."""
    async def test(broker: Broker) -> None:
        [result] = await create(broker, topic("t", rf=2), version=0)
        assert result.error_code == ErrorCode.INVALID_REPLICATION_FACTOR
    run(test)


# ---------------------------------------------------------------- DeleteTopics

@pytest.mark.parametrize("version", range(7))
def test_delete_topics_by_name_every_version(version: int) -> None:
    """Deleting by name removes the topic; an unknown name answers UNKNOWN_TOPIC_OR_PARTITION."""
    async def test(broker: Broker) -> None:
        await create(broker, topic("gone"))
        if version >= 6:
            body = DT(topics=[DT.DeleteTopicState(name="gone"), DT.DeleteTopicState(name="never")])
        else:
            body = DT(topic_names=["gone", "never"])
        results = (await call(broker, DELETE_TOPICS, version, body)).responses
        assert [(r.name, r.error_code) for r in results] == [
            ("gone", 0), ("never", ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)]
        assert broker.cluster.get("gone") is None
        if version >= 5:
            assert results[0].error_message is None and "never" in results[1].error_message
    run(test)


def test_delete_topics_by_id_and_the_v6_entry_errors() -> None:
    """v6: by id (UNKNOWN_TOPIC_ID when unknown), and INVALID_REQUEST for both/neither/duplicates."""
    async def test(broker: Broker) -> None:
        await create(broker, topic("by-id"), topic("twice"), topic("both-ways"))
        cluster = broker.cluster
        by_id, twice, both = (cluster.get(n).topic_id for n in ("by-id", "twice", "both-ways"))
        unknown = uuid.uuid4()
        body = DT(topics=[
            DT.DeleteTopicState(topic_id=by_id), DT.DeleteTopicState(topic_id=unknown),
            DT.DeleteTopicState(name="x", topic_id=by_id), DT.DeleteTopicState(),
            DT.DeleteTopicState(name="twice"), DT.DeleteTopicState(name="twice"),
            DT.DeleteTopicState(name="both-ways"), DT.DeleteTopicState(topic_id=both)])
        results = (await call(broker, DELETE_TOPICS, 6, body)).responses
        got = [(r.name, r.topic_id, r.error_code) for r in results]
        assert got == [
            ("by-id", by_id, 0), (None, unknown, ErrorCode.UNKNOWN_TOPIC_ID),
            ("x", by_id, ErrorCode.INVALID_REQUEST), (None, ZERO_UUID, ErrorCode.INVALID_REQUEST),
            ("twice", ZERO_UUID, ErrorCode.INVALID_REQUEST), ("twice", ZERO_UUID, ErrorCode.INVALID_REQUEST),
            ("both-ways", ZERO_UUID, ErrorCode.INVALID_REQUEST), (None, both, ErrorCode.INVALID_REQUEST)]
        assert all(r.error_message for r in results[1:])
        assert cluster.get("by-id") is None and cluster.get("twice") and cluster.get("both-ways")
        assert twice
    run(test)


@pytest.mark.parametrize(("version", "code"), [(2, ErrorCode.INVALID_REQUEST), (3, ErrorCode.TOPIC_DELETION_DISABLED),
                                               (6, ErrorCode.TOPIC_DELETION_DISABLED)])
def test_delete_topics_disabled(version: int, code: ErrorCode) -> None:
    """delete.topic.enable=false: TOPIC_DELETION_DISABLED (INVALID_REQUEST before v3); nothing is deleted."""
    async def test(broker: Broker) -> None:
        await create(broker, topic("kept"))
        body = DT(topics=[DT.DeleteTopicState(name="kept")]) if version >= 6 else DT(topic_names=["kept"])
        [result] = (await call(broker, DELETE_TOPICS, version, body)).responses
        assert result.error_code == code
        assert broker.cluster.get("kept") is not None
    run(test, **{"delete.topic.enable": False})


# ---------------------------------------------------------------- CreatePartitions

def test_create_partitions_increases_and_checks_like_kafka() -> None:
    """Increase works; equal or lower counts are INVALID_PARTITIONS; unknown topic, duplicates, validate_only."""
    async def test(broker: Broker) -> None:
        await create(broker, topic("p", 2))
        body = CP(topics=[CP.CreatePartitionsTopic(name="p", count=4, assignments=None),
                          CP.CreatePartitionsTopic(name="nope", count=2, assignments=None),
                          CP.CreatePartitionsTopic(name="d", count=2, assignments=None),
                          CP.CreatePartitionsTopic(name="d", count=3, assignments=None)], timeout_ms=1000)
        results = (await call(broker, CREATE_PARTITIONS, 3, body)).results
        assert [(r.name, r.error_code) for r in results] == [
            ("p", 0), ("nope", ErrorCode.UNKNOWN_TOPIC_OR_PARTITION), ("d", ErrorCode.INVALID_REQUEST)]
        assert len(broker.cluster.get("p").partitions) == 4
        for count, text in ((4, "already has 4"), (3, "higher than the requested 3")):
            body = CP(topics=[CP.CreatePartitionsTopic(name="p", count=count, assignments=None)])
            [r] = (await call(broker, CREATE_PARTITIONS, 0, body)).results
            assert r.error_code == ErrorCode.INVALID_PARTITIONS and text in r.error_message, r
        body = CP(topics=[CP.CreatePartitionsTopic(name="p", count=6, assignments=None)], validate_only=True)
        [r] = (await call(broker, CREATE_PARTITIONS, 1, body)).results
        assert r.error_code == 0 and len(broker.cluster.get("p").partitions) == 4
    run(test)


@pytest.mark.parametrize(("assignments", "code", "text"), [
    ([[1], [1]], 0, None), ([[1]], ErrorCode.INVALID_REPLICA_ASSIGNMENT, "2 additional partition(s)"),
    ([[1], [3]], ErrorCode.INVALID_REPLICA_ASSIGNMENT, "broker 3"),
    ([[1], [1, 1]], ErrorCode.INVALID_REPLICA_ASSIGNMENT, "more than once"),
    ([[1], []], ErrorCode.INVALID_REPLICA_ASSIGNMENT, "empty replica list")])
def test_create_partitions_checks_assignments(assignments: list[list[int]], code: int, text: str | None) -> None:
    """One replica list per added partition, each naming this broker once."""
    async def test(broker: Broker) -> None:
        await create(broker, topic("p", 1))
        body = CP(topics=[CP.CreatePartitionsTopic(name="p", count=3, assignments=[
            CP.CreatePartitionsAssignment(broker_ids=b) for b in assignments])])
        [r] = (await call(broker, CREATE_PARTITIONS, 2, body)).results
        assert r.error_code == code, r
        assert len(broker.cluster.get("p").partitions) == (3 if code == 0 else 1)
        if text:
            assert text in r.error_message
    run(test)


# ---------------------------------------------------------------- DescribeConfigs

def test_describe_topic_configs_sources_and_synonyms_in_kafkas_order() -> None:
    """Override first (TOPIC_CONFIG), then the static broker setting, then the default under the broker name."""
    async def test(broker: Broker) -> None:
        await create(broker, topic("t", configs={"retention.ms": "5000", "cleanup.policy": "compact"}))
        result = await describe_topic(broker, "t")
        assert (result.error_code, result.error_message) == (0, None)
        configs = by_name(result)
        retention = configs["retention.ms"]
        assert (retention.value, retention.config_source, retention.read_only) == ("5000", 1, False)
        assert [(s.name, s.value, s.source) for s in retention.synonyms] == [
            ("retention.ms", "5000", 1), ("log.retention.hours", "24", 4), ("log.retention.ms", "604800000", 5)]
        segment = configs["segment.bytes"]
        assert (segment.value, segment.config_source) == ("2000000", 4)
        assert [(s.name, s.source) for s in segment.synonyms] == [("log.segment.bytes", 4), ("log.segment.bytes", 5)]
        flush = configs["flush.ms"]
        assert (flush.config_source, [(s.name, s.source) for s in flush.synonyms]) == (
            5, [("log.flush.interval.ms", 5)])
        assert configs["cleanup.policy"].config_type == 7 and configs["retention.ms"].config_type == 5
        assert configs["preallocate"].value == "false" and configs["preallocate"].documentation
        assert len(configs) == 23
    run(test, **{"log.retention.hours": 24, "log.segment.bytes": "2000000"})


def test_describe_topic_configs_v0_reports_is_default_and_no_synonyms() -> None:
    """v0: is_default is true exactly for values from Kafka's defaults."""
    async def test(broker: Broker) -> None:
        await create(broker, topic("t", configs={"retention.ms": "5000"}))
        configs = by_name(await describe_topic(broker, "t", version=0, synonyms=False))
        assert not configs["retention.ms"].is_default and configs["cleanup.policy"].is_default
        for version in (1, 2, 3):
            result = await describe_topic(broker, "t", version=version, synonyms=False)
            assert by_name(result)["retention.ms"].synonyms == []
    run(test)


def test_describe_configs_configuration_keys_filter() -> None:
    """Named keys only (unknown ones dropped); an empty list means every config, as null does."""
    async def test(broker: Broker) -> None:
        await create(broker, topic("t"))
        result = await describe_topic(broker, "t", keys=["segment.ms", "nope", "retention.ms"])
        assert sorted(by_name(result)) == ["retention.ms", "segment.ms"]
        assert len((await describe_topic(broker, "t", keys=[])).configs) == 23
    run(test)


def test_describe_configs_resource_errors() -> None:
    """Unknown topic, illegal topic name, foreign or non-numeric broker id, unknown type: per-resource errors."""
    async def test(broker: Broker) -> None:
        resources = [(TOPIC, "missing"), (TOPIC, "bad name"), (BROKER, "2"), (BROKER, "one"), (7, "x"),
                     (BROKER_LOGGER, ""), (BROKER_LOGGER, "2")]
        body = DC(resources=[DC.DescribeConfigsResource(resource_type=t, resource_name=n, configuration_keys=None)
                             for t, n in resources])
        results = (await call(broker, DESCRIBE_CONFIGS, 2, body)).results
        assert [(r.resource_type, r.resource_name, r.error_code) for r in results] == [
            (TOPIC, "missing", ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
            (TOPIC, "bad name", ErrorCode.INVALID_TOPIC_EXCEPTION), (BROKER, "2", ErrorCode.INVALID_REQUEST),
            (BROKER, "one", ErrorCode.INVALID_REQUEST), (7, "x", ErrorCode.INVALID_REQUEST),
            (BROKER_LOGGER, "", ErrorCode.INVALID_REQUEST), (BROKER_LOGGER, "2", ErrorCode.INVALID_REQUEST)]
        assert all(r.error_message and r.configs == [] for r in results)
    run(test)


def test_describe_broker_configs_lists_static_and_default_settings_read_only() -> None:
    """Broker "1": every setting read-only, STATIC_BROKER_CONFIG when set; "" (cluster default) is empty."""
    async def test(broker: Broker) -> None:
        body = DC(resources=[DC.DescribeConfigsResource(resource_type=BROKER, resource_name="1",
                                                        configuration_keys=None),
                             DC.DescribeConfigsResource(resource_type=BROKER, resource_name="",
                                                        configuration_keys=None)],
                  include_synonyms=True, include_documentation=True)
        node, default = (await call(broker, DESCRIBE_CONFIGS, 4, body)).results
        assert (node.error_code, default.error_code, default.configs) == (0, 0, [])
        configs = by_name(node)
        parts = configs["num.partitions"]
        assert (parts.value, parts.config_source, parts.read_only, parts.config_type) == ("3", 4, True, 3)
        assert [(s.name, s.value, s.source) for s in parts.synonyms] == [
            ("num.partitions", "3", 4), ("num.partitions", "1", 5)]
        assert (configs["delete.topic.enable"].value, configs["delete.topic.enable"].config_source) == ("true", 5)
        # A topic default the operator left unset shows the topic config's default.
        assert (configs["log.cleanup.policy"].value, configs["log.cleanup.policy"].config_type) == ("delete", 7)
        assert configs["log.retention.ms"].value == "604800000"
        assert configs["message.max.bytes"].documentation
    run(test, **{"num.partitions": 3})


def test_describe_broker_logger_reports_the_root_level() -> None:
    """BROKER_LOGGER for this node lists the root logger with source DYNAMIC_BROKER_LOGGER_CONFIG."""
    async def test(broker: Broker) -> None:
        body = DC(resources=[DC.DescribeConfigsResource(resource_type=BROKER_LOGGER, resource_name="1",
                                                        configuration_keys=None)])
        [result] = (await call(broker, DESCRIBE_CONFIGS, 1, body)).results
        assert result.error_code == 0
        [root] = result.configs
        assert root.name == "root" and root.config_source == 6
        assert root.value in ("DEBUG", "INFO", "WARN", "ERROR", "FATAL")
    run(test)


# ---------------------------------------------------------------- AlterConfigs

def alter(name: str, configs: dict[str, str | None], rtype: int = TOPIC) -> Any:
    return AC.AlterConfigsResource(resource_type=rtype, resource_name=name, configs=[
        AC.AlterableConfig(name=k, value=v) for k, v in configs.items()])


def test_alter_configs_replaces_the_whole_override_set() -> None:
    """Legacy AlterConfigs: the named configs become the overrides; the others go back to defaults."""
    async def test(broker: Broker) -> None:
        await create(broker, topic("t", configs={"retention.ms": "5000"}))
        body = AC(resources=[alter("t", {"segment.ms": "60000"})])
        [r] = (await call(broker, ALTER_CONFIGS, 2, body)).responses
        assert (r.error_code, r.error_message, r.resource_type, r.resource_name) == (0, None, TOPIC, "t")
        assert broker.cluster.get("t").configs == {"segment.ms": 60000}
        [r] = (await call(broker, ALTER_CONFIGS, 0, AC(resources=[alter("t", {"retention.ms": "1"})],
                                                          validate_only=True))).responses
        assert r.error_code == 0 and broker.cluster.get("t").configs == {"segment.ms": 60000}
    run(test)


def test_alter_configs_errors_per_resource() -> None:
    """INVALID_CONFIG, null values, duplicates, a missing topic and broker resources: each resource alone."""
    async def test(broker: Broker) -> None:
        await create(broker, topic("t", configs={"retention.ms": "5000"}))
        body = AC(resources=[alter("t", {"retention.ms": "x"}), alter("missing", {}), alter("", {}),
                             alter("1", {"num.partitions": "3"}, BROKER), alter("1", {}, BROKER_LOGGER),
                             alter("dup", {}, BROKER), alter("dup", {}, BROKER), alter("2", {}, BROKER)])
        results = (await call(broker, ALTER_CONFIGS, 1, body)).responses
        assert [r.error_code for r in results] == [
            ErrorCode.INVALID_CONFIG, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, ErrorCode.INVALID_REQUEST,
            ErrorCode.INVALID_REQUEST, ErrorCode.INVALID_REQUEST, ErrorCode.INVALID_REQUEST,
            ErrorCode.INVALID_REQUEST, ErrorCode.INVALID_REQUEST]
        assert "retention.ms" in results[0].error_message
        assert "Cannot update these configs dynamically: Set(num.partitions)" in results[3].error_message
        assert results[4].error_message == "Unknown resource type 8"
        assert broker.cluster.get("t").configs == {"retention.ms": 5000}
        [ok] = (await call(broker, ALTER_CONFIGS, 1, AC(resources=[alter("1", {}, BROKER)]))).responses
        assert ok.error_code == 0
        [null] = (await call(broker, ALTER_CONFIGS, 1, AC(resources=[alter("t", {"retention.ms": None})]))).responses
        assert null.error_code == ErrorCode.INVALID_REQUEST and "retention.ms" in null.error_message
    run(test)


# ---------------------------------------------------------------- IncrementalAlterConfigs

def incremental(name: str, *ops: tuple[str, int, str | None], rtype: int = TOPIC) -> Any:
    return IAC.AlterConfigsResource(resource_type=rtype, resource_name=name, configs=[
        IAC.AlterableConfig(name=k, config_operation=op, value=v) for k, op, v in ops])


def test_incremental_alter_configs_set_delete_append_subtract() -> None:
    """SET and DELETE change single overrides; APPEND/SUBTRACT edit a LIST config's effective value."""
    async def test(broker: Broker) -> None:
        await create(broker, topic("t", configs={"retention.ms": "5000", "segment.ms": "60000"}))
        body = IAC(resources=[incremental("t", ("retention.ms", DELETE, None), ("max.message.bytes", SET, "2048"),
                                          ("cleanup.policy", APPEND, "compact"))])
        [r] = (await call(broker, INCREMENTAL_ALTER_CONFIGS, 1, body)).responses
        assert (r.error_code, r.error_message) == (0, None)
        assert broker.cluster.get("t").configs == {"segment.ms": 60000, "max.message.bytes": 2048,
                                                    "cleanup.policy": "delete,compact"}
        body = IAC(resources=[incremental("t", ("cleanup.policy", SUBTRACT, "delete"))])
        [r] = (await call(broker, INCREMENTAL_ALTER_CONFIGS, 0, body)).responses
        assert r.error_code == 0 and broker.cluster.get("t").configs["cleanup.policy"] == "compact"
        body = IAC(resources=[incremental("t", ("segment.ms", DELETE, None))], validate_only=True)
        [r] = (await call(broker, INCREMENTAL_ALTER_CONFIGS, 1, body)).responses
        assert r.error_code == 0 and "segment.ms" in broker.cluster.get("t").configs
    run(test)


def test_incremental_alter_configs_errors() -> None:
    """Non-LIST APPEND, unknown op, unknown config, null SET, broker SET: errors; broker DELETE is a no-op."""
    async def test(broker: Broker) -> None:
        await create(broker, topic("t"))
        body = IAC(resources=[
            incremental("t", ("retention.ms", APPEND, "1")), incremental("missing", ("retention.ms", SET, "1")),
            incremental("1", ("log.retention.ms", DELETE, None), rtype=BROKER),
            incremental("", ("log.retention.ms", SET, "1"), rtype=BROKER),
            incremental("1", ("root", SET, "DEBUG"), rtype=BROKER_LOGGER)])
        results = (await call(broker, INCREMENTAL_ALTER_CONFIGS, 1, body)).responses
        assert [r.error_code for r in results] == [
            ErrorCode.INVALID_CONFIG, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, 0, ErrorCode.INVALID_REQUEST,
            ErrorCode.INVALID_REQUEST]
        assert results[0].error_message == "Can't APPEND to key retention.ms because its type is not LIST."
        assert results[1].error_message == "The topic 'missing' does not exist."
        for ops, code in ((("retention.ms", 9, "1"),), ErrorCode.INVALID_REQUEST), \
                         ((("nope", SET, "1"),), ErrorCode.INVALID_CONFIG), \
                         ((("retention.ms", SET, None),), ErrorCode.INVALID_REQUEST), \
                         ((("retention.ms", SET, "1"), ("retention.ms", DELETE, None)), ErrorCode.INVALID_REQUEST), \
                         ((("cleanup.policy", SUBTRACT, "delete"),), ErrorCode.INVALID_CONFIG):
            [r] = (await call(broker, INCREMENTAL_ALTER_CONFIGS, 1, IAC(resources=[incremental("t", *ops)]))).responses
            assert r.error_code == code and r.error_message, (ops, r)
        assert broker.cluster.get("t").configs == {}
    run(test)


# ---------------------------------------------------------------- DescribeLogDirs and DescribeCluster

@pytest.mark.parametrize("version", range(5))
def test_describe_log_dirs_reports_partition_sizes(version: int) -> None:
    """Every partition with its size in bytes; a topic filter keeps only existing named partitions."""
    async def test(broker: Broker) -> None:
        await create(broker, topic("a", 2), topic("b"))
        batch = build_batch([Record(0, 1000, b"k", b"v" * 100)])
        await broker.cluster.get("a").partitions[1].log.append(bytearray(batch))
        everything = await call(broker, DESCRIBE_LOG_DIRS, version, m.DescribeLogDirsRequest(topics=None))
        [result] = everything.results
        assert (result.error_code, result.log_dir) == (0, "memory://")
        sizes = {(t.name, p.partition_index): (p.partition_size, p.offset_lag, p.is_future_key)
                 for t in result.topics for p in t.partitions}
        assert sizes == {("a", 0): (0, 0, False), ("a", 1): (len(batch), 0, False), ("b", 0): (0, 0, False)}
        if version >= 4:
            assert (result.total_bytes, result.usable_bytes) == (-1, -1)
        req = m.DescribeLogDirsRequest
        some = await call(broker, DESCRIBE_LOG_DIRS, version, req(topics=[
            req.DescribableLogDirTopic(topic="a", partitions=[1, 7]),
            req.DescribableLogDirTopic(topic="zzz", partitions=[0])]))
        [result] = some.results
        assert [(t.name, [p.partition_index for p in t.partitions]) for t in result.topics] == [("a", [1])]
    run(test)


@pytest.mark.parametrize("version", [0, 1])
def test_describe_cluster_lists_this_broker_as_controller(version: int) -> None:
    """This node, the cluster id, itself as controller; authorized operations only when asked for."""
    async def test(broker: Broker) -> None:
        req = m.DescribeClusterRequest
        plain = await call(broker, DESCRIBE_CLUSTER, version, req())
        assert (plain.error_code, plain.cluster_id, plain.controller_id) == (0, broker.cluster_id, 1)
        assert [(b.broker_id, b.host, b.port, b.rack) for b in plain.brokers] == [
            (1, *broker.advertised_address, "r1")]
        assert plain.cluster_authorized_operations == -(2**31)
        asked = await call(broker, DESCRIBE_CLUSTER, version, req(include_cluster_authorized_operations=True))
        assert asked.cluster_authorized_operations > 0
    run(test, **{"broker.rack": "r1"})


@pytest.mark.parametrize(("endpoint", "code"), [(2, ErrorCode.MISMATCHED_ENDPOINT_TYPE),
                                                (5, ErrorCode.UNSUPPORTED_ENDPOINT_TYPE)])
def test_describe_cluster_endpoint_types_other_than_broker(endpoint: int, code: ErrorCode) -> None:
    """v1 endpoint_type 2 (controllers) is the wrong endpoint here; unknown types are unsupported."""
    async def test(broker: Broker) -> None:
        result = await call(broker, DESCRIBE_CLUSTER, 1, m.DescribeClusterRequest(endpoint_type=endpoint))
        assert result.error_code == code and result.error_message and result.brokers == []
    run(test)
