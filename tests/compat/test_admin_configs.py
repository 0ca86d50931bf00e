"""Config administration with real clients: DescribeConfigs, AlterConfigs and IncrementalAlterConfigs against
``moldau serve``.

confluent-kafka (librdkafka: DescribeConfigs v1 with synonyms, AlterConfigs v2,
IncrementalAlterConfigs v1), kafka-python 3 (DescribeConfigs v4, AlterConfigs) and aiokafka
(DescribeConfigs v2) read sources and synonyms and change topic configs; raw requests check the error
paths clients hide. After each error path a fresh client still lists topics. Each test names the Kafka
behaviour it checks; topic names are unique per test.
"""

from __future__ import annotations

import asyncio
import uuid
import warnings
from collections.abc import Callable
from typing import Any

from protocol import messages as m
from protocol.errors import ErrorCode
from tests.compat.conftest import BrokerProcess, KafkaSocket

CREATE_TOPICS, DESCRIBE_CONFIGS, ALTER_CONFIGS, INCREMENTAL_ALTER_CONFIGS = 19, 32, 33, 44
TOPIC, BROKER, BROKER_LOGGER = 2, 4, 8
TIMEOUT_S = 15
# DescribeConfigs ConfigSource values.
TOPIC_CONFIG, STATIC_BROKER_CONFIG, DEFAULT_CONFIG = 1, 4, 5


def unique(prefix: str) -> str:
    return f"configs-{prefix}-{uuid.uuid4().hex[:8]}"


def confluent_admin(broker: BrokerProcess) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": broker.bootstrap, "socket.timeout.ms": 10000})


def one_result(futures: dict[Any, Any]) -> Any:
    """The single future's result, or the KafkaError it failed with."""
    from confluent_kafka import KafkaException

    [future] = futures.values()
    try:
        return future.result(timeout=TIMEOUT_S)
    except KafkaException as exc:
        return exc.args[0]


def create_topic(broker: BrokerProcess, name: str, configs: dict[str, str] | None = None,
                 partitions: int = 1) -> None:
    from confluent_kafka.admin import NewTopic

    admin = confluent_admin(broker)  # held until the future is done: a collected client fails its futures
    assert one_result(admin.create_topics([NewTopic(name, partitions, 1, config=configs or {})])) is None


def describe_topic(broker: BrokerProcess, name: str) -> dict[str, Any]:
    from confluent_kafka.admin import ConfigResource, ResourceType

    admin = confluent_admin(broker)
    return one_result(admin.describe_configs([ConfigResource(ResourceType.TOPIC, name)]))


def assert_still_serving(broker: BrokerProcess, *expected: str) -> None:
    """A fresh client connects and lists topics normally (the error cost nothing but its answer)."""
    listed = confluent_admin(broker).list_topics(timeout=TIMEOUT_S).topics
    assert all(t in listed for t in expected), (expected, sorted(listed))


def synonyms(entry: Any) -> list[tuple[str, str | None, int]]:
    return [(s.name, s.value, int(s.source)) for s in entry.synonyms.values()]


# ---------------------------------------------------------------- confluent-kafka

def test_confluent_describe_topic_configs_with_sources_and_synonyms(
        start_broker: Callable[..., BrokerProcess]) -> None:
    """A topic's configs show where each value comes from: the topic override (TOPIC_CONFIG), a broker
    setting (STATIC_BROKER_CONFIG, here log.retention.hours) or Kafka's default, with Kafka's synonym order."""
    broker = start_broker("--set", "log.retention.hours=48")
    name = unique("sources")
    create_topic(broker, name, {"segment.ms": "3600000"})
    configs = describe_topic(broker, name)
    segment, retention, policy = configs["segment.ms"], configs["retention.ms"], configs["cleanup.policy"]
    assert (segment.value, int(segment.source), segment.is_default) == ("3600000", TOPIC_CONFIG, False)
    assert synonyms(segment) == [("segment.ms", "3600000", TOPIC_CONFIG), ("log.roll.ms", "604800000", DEFAULT_CONFIG)]
    assert (retention.value, int(retention.source)) == (str(48 * 3_600_000), STATIC_BROKER_CONFIG)
    assert synonyms(retention) == [("log.retention.hours", "48", STATIC_BROKER_CONFIG),
                                   ("log.retention.ms", "604800000", DEFAULT_CONFIG)]
    assert (policy.value, int(policy.source), policy.is_default) == ("delete", DEFAULT_CONFIG, True)
    assert not any(e.is_read_only or e.is_sensitive for e in configs.values())


def test_confluent_describe_broker_configs_are_read_only_with_their_source(
        start_broker: Callable[..., BrokerProcess]) -> None:
    """Broker resource "1" lists the broker settings, read-only, STATIC_BROKER_CONFIG when set; topic
    defaults left unset show Kafka's value."""
    from confluent_kafka.admin import ConfigResource, ResourceType

    broker = start_broker("--set", "num.partitions=3")
    admin = confluent_admin(broker)
    configs = one_result(admin.describe_configs([ConfigResource(ResourceType.BROKER, "1")]))
    parts = configs["num.partitions"]
    assert (parts.value, int(parts.source), parts.is_read_only) == ("3", STATIC_BROKER_CONFIG, True)
    # Kafka names both synonyms (static value, then default) num.partitions; confluent keys them by name.
    assert list(parts.synonyms) == ["num.partitions"]
    assert (configs["delete.topic.enable"].value, int(configs["delete.topic.enable"].source)) == ("true",
                                                                                                  DEFAULT_CONFIG)
    assert configs["log.cleanup.policy"].value == "delete"
    assert all(e.is_read_only for e in configs.values())


def test_confluent_incremental_alter_configs_set_delete_append_subtract(broker: BrokerProcess) -> None:
    """IncrementalAlterConfigs: SET and DELETE one override each; APPEND/SUBTRACT edit cleanup.policy."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

    admin = confluent_admin(broker)
    name = unique("incremental")
    create_topic(broker, name, {"retention.ms": "5000"})

    def alter(*ops: tuple[str, str | None, AlterConfigOpType], validate_only: bool = False) -> Any:
        resource = ConfigResource(ResourceType.TOPIC, name, incremental_configs=[
            ConfigEntry(k, v, incremental_operation=op) for k, v, op in ops])
        return one_result(admin.incremental_alter_configs([resource], validate_only=validate_only))

    assert alter(("retention.ms", None, AlterConfigOpType.DELETE), ("segment.ms", "120000", AlterConfigOpType.SET),
                 ("cleanup.policy", "compact", AlterConfigOpType.APPEND)) is None
    configs = describe_topic(broker, name)
    assert (configs["retention.ms"].value, int(configs["retention.ms"].source)) == ("604800000", DEFAULT_CONFIG)
    assert configs["segment.ms"].value == "120000"
    assert (configs["cleanup.policy"].value, int(configs["cleanup.policy"].source)) == ("delete,compact",
                                                                                        TOPIC_CONFIG)
    assert alter(("cleanup.policy", "delete", AlterConfigOpType.SUBTRACT)) is None
    assert alter(("segment.ms", "1", AlterConfigOpType.SET), validate_only=True) is None
    configs = describe_topic(broker, name)
    assert (configs["cleanup.policy"].value, configs["segment.ms"].value) == ("compact", "120000")


def test_confluent_incremental_alter_configs_errors(broker: BrokerProcess) -> None:
    """APPEND to a non-LIST config and unknown configs are INVALID_CONFIG; SET on the broker is
    INVALID_REQUEST (no dynamic broker configs); none of them changes anything."""
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

    admin = confluent_admin(broker)
    name = unique("incremental-errors")
    create_topic(broker, name)

    def alter(rtype: ResourceType, rname: str, key: str, value: str, op: AlterConfigOpType) -> Any:
        resource = ConfigResource(rtype, rname, incremental_configs=[
            ConfigEntry(key, value, incremental_operation=op)])
        return one_result(admin.incremental_alter_configs([resource]))

    appended = alter(ResourceType.TOPIC, name, "retention.ms", "1", AlterConfigOpType.APPEND)
    assert appended.code() == KafkaError.INVALID_CONFIG and "not LIST" in appended.str()
    unknown = alter(ResourceType.TOPIC, name, "retention.forever", "1", AlterConfigOpType.SET)
    assert unknown.code() == KafkaError.INVALID_CONFIG and "retention.forever" in unknown.str()
    static = alter(ResourceType.BROKER, "1", "log.retention.ms", "1", AlterConfigOpType.SET)
    assert static.code() == KafkaError.INVALID_REQUEST and "dynamically" in static.str()
    assert describe_topic(broker, name)["retention.ms"].value == "604800000"
    assert_still_serving(broker, name)


def test_confluent_alter_configs_replaces_the_override_set(broker: BrokerProcess) -> None:
    """Legacy AlterConfigs replaces every override of the topic: configs not named go back to defaults."""
    from confluent_kafka.admin import ConfigResource, ResourceType

    admin = confluent_admin(broker)
    name = unique("legacy")
    create_topic(broker, name, {"retention.ms": "5000"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        futures = admin.alter_configs([ConfigResource(ResourceType.TOPIC, name, set_config={"segment.ms": "90000"})])
    assert one_result(futures) is None
    configs = describe_topic(broker, name)
    assert (configs["segment.ms"].value, int(configs["segment.ms"].source)) == ("90000", TOPIC_CONFIG)
    assert (configs["retention.ms"].value, int(configs["retention.ms"].source)) == ("604800000", DEFAULT_CONFIG)


def test_confluent_describe_configs_of_an_unknown_topic(broker: BrokerProcess) -> None:
    """DescribeConfigs for a topic that does not exist answers UNKNOWN_TOPIC_OR_PARTITION."""
    from confluent_kafka import KafkaError

    missing = describe_topic(broker, unique("missing"))
    assert missing.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    assert_still_serving(broker)


# ---------------------------------------------------------------- kafka-python and aiokafka

def test_kafka_python_describe_and_alter_configs(broker: BrokerProcess) -> None:
    """kafka-python 3 reads a topic's configs with sources and synonyms (DescribeConfigs v4, with types) and
    changes them with AlterConfigs."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    name = unique("kp")
    create_topic(broker, name, {"retention.ms": "7000"})
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)], include_synonyms=True)
        retention = described["topic"][name]["retention.ms"]
        assert (retention["value"], retention["config_source"], retention["config_type"]) == (
            "7000", "DYNAMIC_TOPIC_CONFIG", "LONG")
        assert [s["name"] for s in retention["synonyms"]] == ["retention.ms", "log.retention.ms"]
        altered = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name,
                                                      configs={"retention.ms": "8000"})])
        assert altered == {"topic": {name: "OK"}}
        again = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name, configs=["retention.ms"])])
        assert list(again["topic"][name]) == ["retention.ms"]
        assert again["topic"][name]["retention.ms"]["value"] == "8000"
    finally:
        admin.close()


def test_aiokafka_describe_configs_of_a_topic_and_the_broker(broker: BrokerProcess) -> None:
    """aiokafka (DescribeConfigs v2) gets the topic's override and the broker's read-only settings."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    name = unique("aio")
    create_topic(broker, name, {"cleanup.policy": "compact"})

    async def run() -> list[Any]:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)
        await asyncio.wait_for(admin.start(), TIMEOUT_S)
        try:
            return await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name),
                                                 ConfigResource(ConfigResourceType.BROKER, "1")],
                                                include_synonyms=True)
        finally:
            await asyncio.wait_for(admin.close(), TIMEOUT_S)

    responses = asyncio.run(run())
    by_type = {res[2]: res for response in responses for res in response.resources}
    topic_error, _, _, _, topic_entries = by_type[TOPIC]
    policy = {e[0]: e for e in topic_entries}["cleanup.policy"]
    assert (topic_error, policy[1], policy[3]) == (0, "compact", TOPIC_CONFIG)
    broker_error, _, _, _, broker_entries = by_type[BROKER]
    node = {e[0]: e for e in broker_entries}["node.id"]
    assert (broker_error, node[1], node[2]) == (0, "1", True)


# ---------------------------------------------------------------- raw requests: what clients hide

def test_raw_describe_configs_versions_and_resource_errors(broker: BrokerProcess,
                                                          raw_socket: Callable[[BrokerProcess], KafkaSocket]) -> None:
    """v0 answers is_default; v3+ answers types and documentation; another broker id, an illegal topic name
    and an unknown resource type are per-resource errors; BROKER_LOGGER answers the root logger."""
    name = unique("raw")
    create_topic(broker, name, {"retention.ms": "5000"})
    sock = raw_socket(broker)
    req = m.DescribeConfigsRequest

    def resource(rtype: int, rname: str, keys: list[str] | None = None) -> Any:
        return req.DescribeConfigsResource(resource_type=rtype, resource_name=rname, configuration_keys=keys)

    [v0] = sock.request(DESCRIBE_CONFIGS, 0, 1, req(resources=[resource(TOPIC, name)])).results
    entries = {c.name: c for c in v0.configs}
    assert not entries["retention.ms"].is_default and entries["segment.ms"].is_default
    [v4] = sock.request(DESCRIBE_CONFIGS, 4, 2, req(resources=[resource(TOPIC, name, ["retention.ms"])],
                                                    include_documentation=True)).results
    [retention] = v4.configs
    assert (retention.value, retention.config_type, bool(retention.documentation)) == ("5000", 5, True)
    errors = sock.request(DESCRIBE_CONFIGS, 4, 3, req(resources=[
        resource(BROKER, "2"), resource(TOPIC, "bad name!"), resource(99, "x"), resource(BROKER_LOGGER, "1"),
        resource(BROKER, "")])).results
    assert [(r.error_code, bool(r.error_message)) for r in errors[:3]] == [
        (ErrorCode.INVALID_REQUEST, True), (ErrorCode.INVALID_TOPIC_EXCEPTION, True), (ErrorCode.INVALID_REQUEST, True)]
    assert "expected 1 or empty string" in errors[0].error_message
    assert (errors[3].error_code, [c.name for c in errors[3].configs]) == (0, ["root"])
    assert (errors[4].error_code, errors[4].configs) == (0, [])
    assert_still_serving(broker, name)


def test_raw_alter_configs_error_paths(broker: BrokerProcess,
                                      raw_socket: Callable[[BrokerProcess], KafkaSocket]) -> None:
    """AlterConfigs and IncrementalAlterConfigs: a resource named twice, a null value, a missing topic, an
    unknown operation and another broker id are INVALID_REQUEST / UNKNOWN_TOPIC_OR_PARTITION with
    messages, each resource answered on its own; the valid resource in the same request is applied."""
    name = unique("raw-alter")
    create_topic(broker, name)
    sock = raw_socket(broker)
    ac = m.AlterConfigsRequest

    def legacy(rtype: int, rname: str, **configs: str | None) -> Any:
        return ac.AlterConfigsResource(resource_type=rtype, resource_name=rname, configs=[
            ac.AlterableConfig(name=k.replace("_", "."), value=v) for k, v in configs.items()])

    missing = unique("missing")
    response = sock.request(ALTER_CONFIGS, 1, 1, ac(resources=[
        legacy(TOPIC, "dup"), legacy(TOPIC, "dup"), legacy(TOPIC, name, retention_ms=None),
        legacy(TOPIC, missing, retention_ms="1"), legacy(BROKER, "2")]))
    assert [(r.resource_name, r.error_code) for r in response.responses] == [
        ("dup", ErrorCode.INVALID_REQUEST), ("dup", ErrorCode.INVALID_REQUEST), (name, ErrorCode.INVALID_REQUEST),
        (missing, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION), ("2", ErrorCode.INVALID_REQUEST)]
    assert all(r.error_message for r in response.responses)

    iac = m.IncrementalAlterConfigsRequest
    response = sock.request(INCREMENTAL_ALTER_CONFIGS, 1, 2, iac(resources=[
        iac.AlterConfigsResource(resource_type=TOPIC, resource_name=name, configs=[
            iac.AlterableConfig(name="retention.ms", config_operation=7, value="1")]),
        iac.AlterConfigsResource(resource_type=TOPIC, resource_name=name + "-x", configs=[]),
        iac.AlterConfigsResource(resource_type=BROKER_LOGGER, resource_name="1", configs=[
            iac.AlterableConfig(name="root", config_operation=0, value="DEBUG")])]))
    assert [(r.error_code, r.error_message) for r in response.responses] == [
        (ErrorCode.INVALID_REQUEST, "Unknown operations type 7"),
        (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"The topic '{name}-x' does not exist."),
        (ErrorCode.INVALID_REQUEST, ("Moldau cannot change log levels at runtime; restart the broker with "
                                     "--log-level"))]
    ok = sock.request(INCREMENTAL_ALTER_CONFIGS, 0, 3, iac(resources=[
        iac.AlterConfigsResource(resource_type=TOPIC, resource_name=name, configs=[
            iac.AlterableConfig(name="retention.ms", config_operation=0, value="4000")])]))
    assert [(r.error_code, r.error_message) for r in ok.responses] == [(0, None)]
    assert describe_topic(broker, name)["retention.ms"].value == "4000"
    assert_still_serving(broker, name)
