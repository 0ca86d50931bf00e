"""DescribeConfigs (key 32) v0-4, AlterConfigs (key 33) v0-2 and IncrementalAlterConfigs (key 44) v0-1.

Resources served: TOPIC (2) and BROKER (4); BROKER_LOGGER (8) is described but not changed.

Kafka behaviours implemented (from ``ConfigHelper.scala``, ``ConfigAdminManager.scala``,
``ControllerApis.scala`` and ``ConfigurationControlManager.java``):

- DescribeConfigs: ``configuration_keys`` null *or empty* means every config; unknown keys are dropped.
  A topic lists every topic config with its effective value, ``read_only=false``, the source (v1+:
  TOPIC_CONFIG 1 for an override, STATIC_BROKER_CONFIG 4 when the broker sets the synonym,
  DEFAULT_CONFIG 5 otherwise; v0: ``is_default`` when the source is DEFAULT_CONFIG), synonyms when
  asked (v1+, Kafka's order: the topic override, the broker settings that set it, then the broker
  default under the broker synonym's name), ``config_type`` and ``documentation`` (v3+). Bad topic names
  answer INVALID_TOPIC_EXCEPTION, unknown topics UNKNOWN_TOPIC_OR_PARTITION.
- A BROKER resource named with this node id lists every broker setting (read-only: Moldau has no
  dynamic broker configs) with STATIC_BROKER_CONFIG when set and DEFAULT_CONFIG otherwise; broker
  defaults of topic configs that are not set show the topic config's default value. An empty name is
  the cluster-wide dynamic default resource, which is empty here. Any other name is INVALID_REQUEST.
- BROKER_LOGGER answers the ``root`` logger's level with source DYNAMIC_BROKER_LOGGER_CONFIG (6).
- AlterConfigs replaces a topic's whole override set; IncrementalAlterConfigs applies SET (0),
  DELETE (1), APPEND (2) and SUBTRACT (3), the last two only to LIST configs (``cleanup.policy``),
  else INVALID_CONFIG "Can't APPEND to key ... because its type is not LIST.". A resource is changed
  all or nothing; ``validate_only`` checks without changing. Errors, per resource: a resource named
  twice, duplicate config names, null values (except DELETE) and unknown operations are
  INVALID_REQUEST; unknown or invalid topic configs INVALID_CONFIG; a missing topic
  UNKNOWN_TOPIC_OR_PARTITION "The topic 'x' does not exist."; the empty topic name INVALID_REQUEST.
- Broker resources accept only DELETE (a no-op: nothing dynamic is set) or an empty AlterConfigs;
  setting anything answers INVALID_REQUEST "Cannot update these configs dynamically: Set(...)", as
  Kafka does for its static configs, saying that Moldau settings are fixed at start-up.
- Sensitive settings (passwords, JAAS configs) are described with a null value, type PASSWORD.
- With an authorizer: DESCRIBE_CONFIGS / ALTER_CONFIGS on the topic (TOPIC_AUTHORIZATION_FAILED) or on
  the cluster for broker and broker-logger resources (CLUSTER_AUTHORIZATION_FAILED).

Left out: dynamic broker and broker-default configs, changing log levels at runtime, CLIENT_METRICS
(16) and GROUP (32) resources (INVALID_REQUEST).
APPEND/SUBTRACT start from the topic's effective value (override, else broker default, else Kafka's
default), where Kafka starts from the override or the topic-level default.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from broker.cluster import ClusterState, Topic, validate_topic_name
from broker.config import SOURCE_STATIC as CONFIG_SOURCE_STATIC
from broker.config import BrokerConfig, Setting
from broker.handlers import RequestContext
from broker.security.acls import CLUSTER_RESOURCE_NAME, AclOperation, ResourceType
from broker.topic_config import (
    BY_NAME,
    DEFINITIONS,
    SOURCE_DEFAULT,
    SOURCE_STATIC_BROKER,
    SOURCE_TOPIC,
    TYPE_BOOLEAN,
    TYPE_INT,
    TYPE_LIST,
    TYPE_PASSWORD,
    TYPE_STRING,
    TopicConfigDef,
    format_value,
    validate_overrides,
)
from protocol import messages
from protocol.errors import ErrorCode, KafkaError
from storage.tasks import to_completion

log = structlog.get_logger()

# ConfigResource.Type ids.
RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4
RESOURCE_BROKER_LOGGER = 8
_UNSERVED_RESOURCES = {16: "CLIENT_METRICS", 32: "GROUP"}

SOURCE_DYNAMIC_BROKER_LOGGER = 6  # DYNAMIC_BROKER_LOGGER_CONFIG
TYPE_UNKNOWN = 0
_LOG4J_LEVELS = ((logging.CRITICAL, "FATAL"), (logging.ERROR, "ERROR"), (logging.WARNING, "WARN"),
                 (logging.INFO, "INFO"))

# AlterConfigOp.OpType ids.
OP_SET, OP_DELETE, OP_APPEND, OP_SUBTRACT = 0, 1, 2, 3
_OP_NAMES = {OP_SET: "SET", OP_DELETE: "DELETE", OP_APPEND: "APPEND", OP_SUBTRACT: "SUBTRACT"}

# Kafka lists every broker name that can set a topic default, most specific first
# (log.retention.ms, .minutes, .hours); Moldau knows the ms and hours forms of these two.
_EXTRA_BROKER_NAMES = {"retention.ms": ("log.retention.hours",), "segment.ms": ("log.roll.hours",)}
_TOPIC_DEF_BY_SYNONYM: dict[str, TopicConfigDef] = {d.broker_synonym: d for d in DEFINITIONS if d.broker_synonym}


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    """One described config, independent of the response it goes into (DescribeConfigs, CreateTopics)."""

    name: str
    value: str | None
    source: int
    read_only: bool
    type: int
    doc: str | None
    synonyms: tuple[tuple[str, str | None, int], ...] = ()
    sensitive: bool = False  # a password: described without its value, as Kafka does


def _text(value: Any) -> str | None:
    return None if value is None else format_value(value)


# ---------------------------------------------------------------- topic configs

def _topic_synonyms(cluster: ClusterState, overrides: Mapping[str, Any],
                    d: TopicConfigDef) -> tuple[tuple[str, str | None, int], ...]:
    synonyms: list[tuple[str, str | None, int]] = []
    if d.name in overrides:
        synonyms.append((d.name, _text(overrides[d.name]), SOURCE_TOPIC))
    if d.broker_synonym is None:
        synonyms.append((d.name, _text(d.default), SOURCE_DEFAULT))
        return tuple(synonyms)
    config = cluster.config
    for broker_name in (d.broker_synonym, *_EXTRA_BROKER_NAMES.get(d.name, ())):
        value = config.get(broker_name) if broker_name in config.sources else None
        if value is not None:
            synonyms.append((broker_name, _text(value), SOURCE_STATIC_BROKER))
    synonyms.append((d.broker_synonym, _text(d.default), SOURCE_DEFAULT))
    return tuple(synonyms)


def topic_config_entries(cluster: ClusterState, overrides: Mapping[str, Any]) -> list[ConfigEntry]:
    """Every topic config for a topic with these (parsed) overrides, by name."""
    entries = []
    for d in sorted(DEFINITIONS, key=lambda d: d.name):
        value, source = cluster.topic_configs.resolve(overrides, d.name)
        entries.append(ConfigEntry(d.name, _text(value), source, False, d.type, d.doc,
                                   _topic_synonyms(cluster, overrides, d)))
    return entries


# ---------------------------------------------------------------- broker configs

def _setting_type(setting: Setting) -> int:
    topic_def = _TOPIC_DEF_BY_SYNONYM.get(setting.name)
    if topic_def is not None:
        return topic_def.type
    return {bool: TYPE_BOOLEAN, int: TYPE_INT}.get(setting.type, TYPE_STRING)


def broker_config_entries(config: BrokerConfig) -> list[ConfigEntry]:
    """Every broker setting, read-only, in registry order."""
    entries = []
    for setting, value, source_name in config.describe():
        topic_def = _TOPIC_DEF_BY_SYNONYM.get(setting.name)
        # A broker default of a topic config that the operator did not set is Kafka's topic default.
        default = topic_def.default if topic_def is not None and setting.default is None else setting.default
        synonyms: list[tuple[str, str | None, int]] = []
        if source_name == CONFIG_SOURCE_STATIC and value is not None:
            synonyms.append((setting.name, _text(value), SOURCE_STATIC_BROKER))
        if default is not None:
            synonyms.append((setting.name, _text(default), SOURCE_DEFAULT))
        shown = value if value is not None else default
        source = synonyms[0][2] if synonyms else SOURCE_DEFAULT
        if setting.sensitive:
            entries.append(ConfigEntry(setting.name, None, source, True, TYPE_PASSWORD, setting.doc,
                                       tuple((n, None, s) for n, _, s in synonyms), sensitive=True))
            continue
        entries.append(ConfigEntry(setting.name, _text(shown), source, True, _setting_type(setting),
                                   setting.doc, tuple(synonyms)))
    return entries


def _broker_id(name: str, what: str = "Broker id") -> int:
    try:
        return int(name)
    except ValueError:
        raise KafkaError(ErrorCode.INVALID_REQUEST, f"{what} must be an integer, but it is: {name}") from None


def _logger_entries(ctx: RequestContext, name: str) -> list[ConfigEntry]:
    if not name:
        raise KafkaError(ErrorCode.INVALID_REQUEST, "Broker id must not be empty")
    if _broker_id(name) != ctx.broker.node_id:
        raise KafkaError(ErrorCode.INVALID_REQUEST,
                         f"Unexpected broker id, expected {ctx.broker.node_id} but received {name}")
    level = structlog.get_logger().bind()
    numeric = level.get_effective_level() if hasattr(level, "get_effective_level") else logging.INFO
    # Levels by their log4j names, as Kafka reports them; an unfiltered logger lets DEBUG through.
    text = next((name for floor, name in _LOG4J_LEVELS if numeric >= floor), "DEBUG")
    # read_only: Moldau cannot change log levels at runtime (Kafka reports false and can).
    return [ConfigEntry("root", text, SOURCE_DYNAMIC_BROKER_LOGGER, True, TYPE_UNKNOWN, None)]


def _unserved_type(resource_type: int) -> KafkaError:
    if resource_type in _UNSERVED_RESOURCES:
        return KafkaError(ErrorCode.INVALID_REQUEST,
                          f"Moldau does not serve {_UNSERVED_RESOURCES[resource_type]} config resources")
    return KafkaError(ErrorCode.INVALID_REQUEST, f"Unknown resource type {resource_type}")


def _entries_for(ctx: RequestContext, resource_type: int, name: str) -> list[ConfigEntry]:
    broker = ctx.broker
    if resource_type == RESOURCE_TOPIC:
        validate_topic_name(name)
        topic = broker.cluster.get(name)
        if topic is None:
            raise KafkaError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"Topic '{name}' does not exist.")
        return topic_config_entries(broker.cluster, topic.configs)
    if resource_type == RESOURCE_BROKER:
        if not name:
            return []  # the cluster-wide dynamic defaults: none exist on Moldau
        if _broker_id(name) != broker.node_id:
            raise KafkaError(ErrorCode.INVALID_REQUEST, f"Unexpected broker id, expected {broker.node_id} or "
                                                        f"empty string, but received {name}")
        return broker_config_entries(broker.config)
    if resource_type == RESOURCE_BROKER_LOGGER:
        return _logger_entries(ctx, name)
    raise _unserved_type(resource_type)


# ---------------------------------------------------------------- DescribeConfigs

def _describe_entry(entry: ConfigEntry, version: int, include_synonyms: bool, include_docs: bool) -> Any:
    resp = messages.DescribeConfigsResponse
    return resp.DescribeConfigsResourceResult(
        name=entry.name, value=entry.value, read_only=entry.read_only,
        # v0 only: v1 replaced is_default by the source.
        is_default=version == 0 and entry.source == SOURCE_DEFAULT, config_source=entry.source,
        is_sensitive=entry.sensitive,
        synonyms=[resp.DescribeConfigsSynonym(name=n, value=v, source=s) for n, v, s in entry.synonyms]
        if include_synonyms else [],
        config_type=entry.type, documentation=entry.doc if include_docs else None)


def _check_access(ctx: RequestContext, rtype: int, name: str, operation: AclOperation) -> None:
    """With an authorizer: DESCRIBE_CONFIGS / ALTER_CONFIGS on the topic, or on the cluster for broker and
    broker-logger resources (Kafka's rule)."""
    if rtype == RESOURCE_TOPIC:
        if not ctx.authorized(operation, ResourceType.TOPIC, name):
            raise KafkaError(ErrorCode.TOPIC_AUTHORIZATION_FAILED, "Authorization failed.")
    elif rtype in (RESOURCE_BROKER, RESOURCE_BROKER_LOGGER) and not ctx.authorized(
            operation, ResourceType.CLUSTER, CLUSTER_RESOURCE_NAME):
        raise KafkaError(ErrorCode.CLUSTER_AUTHORIZATION_FAILED, "Authorization failed.")


def handle_describe_configs(header: Any, body: Any, ctx: RequestContext) -> Any:
    version = ctx.api_version
    include_synonyms = version >= 1 and body.include_synonyms
    include_docs = version >= 3 and body.include_documentation
    resp = messages.DescribeConfigsResponse
    results = []
    for resource in body.resources:
        rtype, name = resource.resource_type, resource.resource_name
        try:
            _check_access(ctx, rtype, name, AclOperation.DESCRIBE_CONFIGS)
            entries = _entries_for(ctx, rtype, name)
        except KafkaError as exc:
            log.debug("describe_configs.rejected", resource_type=rtype, resource=name, error=exc.code.name,
                      reason=exc.message)
            results.append(resp.DescribeConfigsResult(error_code=int(exc.code), error_message=exc.message,
                                                      resource_type=rtype, resource_name=name, configs=[]))
            continue
        if resource.configuration_keys:
            wanted = set(resource.configuration_keys)
            entries = [e for e in entries if e.name in wanted]
        results.append(resp.DescribeConfigsResult(
            error_code=0, error_message=None, resource_type=rtype, resource_name=name,
            configs=[_describe_entry(e, version, include_synonyms, include_docs) for e in entries]))
    return resp(throttle_time_ms=0, results=results)


# ---------------------------------------------------------------- AlterConfigs, IncrementalAlterConfigs

def _check_unique_names(configs: Sequence[Any]) -> None:
    if len({c.name for c in configs}) != len(configs):
        raise KafkaError(ErrorCode.INVALID_REQUEST, "Error due to duplicate config keys")


def _check_no_nulls(names: Iterable[str]) -> None:
    nulls = list(names)
    if nulls:
        raise KafkaError(ErrorCode.INVALID_REQUEST, "Null value not supported for : " + ", ".join(nulls))


def _check_broker_resource(ctx: RequestContext, name: str) -> None:
    # An empty name is the cluster-wide default resource; anything else must be this node.
    if name and _broker_id(name, "Node id") != ctx.broker.node_id:
        raise KafkaError(ErrorCode.INVALID_REQUEST,
                         f"Unexpected broker id, expected {ctx.broker.node_id}, but received {name}")


def _not_dynamic(names: Iterable[str]) -> KafkaError:
    return KafkaError(ErrorCode.INVALID_REQUEST,
                      f"Cannot update these configs dynamically: Set({', '.join(names)}): Moldau has no "
                      f"dynamic broker configs; set them when the broker starts (--set NAME=VALUE, a "
                      f"properties file or MOLDAU_* environment variables)")


def _topic_to_alter(cluster: ClusterState, name: str) -> Topic:
    if not name:
        raise KafkaError(ErrorCode.INVALID_REQUEST, "Default topic resources are not allowed.")
    topic = cluster.get(name)
    if topic is None:
        raise KafkaError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"The topic '{name}' does not exist.")
    return topic


def _apply(cluster: ClusterState, topic: Topic, overrides: Mapping[str, Any], validate_only: bool) -> None:
    parsed = validate_overrides(overrides)
    if not validate_only:
        cluster.set_configs(topic, parsed)


def _alter_legacy(ctx: RequestContext, resource: Any, validate_only: bool) -> None:
    configs = resource.configs
    _check_unique_names(configs)
    _check_no_nulls(c.name for c in configs if c.value is None)
    rtype, name = resource.resource_type, resource.resource_name
    if rtype == RESOURCE_TOPIC:
        cluster = ctx.broker.cluster
        topic = _topic_to_alter(cluster, name)
        # AlterConfigs replaces the whole override set: configs not named go back to their defaults.
        _apply(cluster, topic, {c.name: c.value for c in configs}, validate_only)
    elif rtype == RESOURCE_BROKER:
        _check_broker_resource(ctx, name)
        if configs:
            raise _not_dynamic(c.name for c in configs)
    elif rtype == RESOURCE_BROKER_LOGGER:
        # Kafka: legacy AlterConfigs never supported BROKER_LOGGER.
        raise KafkaError(ErrorCode.INVALID_REQUEST, f"Unknown resource type {rtype}")
    else:
        raise _unserved_type(rtype)


def _list_parts(value: Any) -> list[str]:
    return [p for p in (format_value(value) if value is not None else "").split(",") if p]


def _incremental_topic(cluster: ClusterState, topic: Topic, configs: Sequence[Any]) -> dict[str, Any]:
    """The topic's override set after the operations, not yet validated."""
    overrides: dict[str, Any] = dict(topic.configs)
    for c in configs:
        op = c.config_operation
        if op == OP_SET:
            overrides[c.name] = c.value
        elif op == OP_DELETE:
            overrides.pop(c.name, None)
        else:
            d = BY_NAME.get(c.name)
            if d is None or d.type != TYPE_LIST:
                raise KafkaError(ErrorCode.INVALID_CONFIG,
                                 f"Can't {_OP_NAMES[op]} to key {c.name} because its type is not LIST.")
            current = overrides[c.name] if c.name in overrides else cluster.topic_configs.value({}, c.name)
            parts = _list_parts(current)
            for item in c.value.split(","):
                if op == OP_APPEND and item not in parts:
                    parts.append(item)
                elif op == OP_SUBTRACT and item in parts:
                    parts.remove(item)
            overrides[c.name] = ",".join(parts)
    return overrides


def _alter_incremental(ctx: RequestContext, resource: Any, validate_only: bool) -> None:
    configs = resource.configs
    _check_unique_names(configs)
    _check_no_nulls(c.name for c in configs if c.config_operation != OP_DELETE and c.value is None)
    unknown_ops = [c.config_operation for c in configs if c.config_operation not in _OP_NAMES]
    rtype, name = resource.resource_type, resource.resource_name
    if rtype == RESOURCE_TOPIC:
        cluster = ctx.broker.cluster
        topic = _topic_to_alter(cluster, name)
        if unknown_ops:
            raise KafkaError(ErrorCode.INVALID_REQUEST, f"Unknown operations type {unknown_ops[0]}")
        _apply(cluster, topic, _incremental_topic(cluster, topic, configs), validate_only)
    elif rtype == RESOURCE_BROKER:
        _check_broker_resource(ctx, name)
        if unknown_ops:
            raise KafkaError(ErrorCode.INVALID_REQUEST, f"Unknown operations type {unknown_ops[0]}")
        # DELETE of a dynamic config that is not set changes nothing, as in Kafka.
        changed = [c.name for c in configs if c.config_operation != OP_DELETE]
        if changed:
            raise _not_dynamic(changed)
    elif rtype == RESOURCE_BROKER_LOGGER:
        _logger_entries(ctx, name)  # the same name checks as DescribeConfigs
        if unknown_ops:
            raise KafkaError(ErrorCode.INVALID_REQUEST, f"Unknown operations type {unknown_ops[0]}")
        if configs:
            raise KafkaError(ErrorCode.INVALID_REQUEST, "Moldau cannot change log levels at runtime; restart "
                                                        "the broker with --log-level")
    else:
        raise _unserved_type(rtype)


async def _alter_all(ctx: RequestContext, body: Any, response: Any, alter: Any, api: str) -> Any:
    # One metadata change (on shared storage: applied to the latest metadata, under the cluster's lock),
    # saved even if the client goes away meanwhile: its configs are already applied in memory.
    return await to_completion(_alter_locked(ctx, body, response, alter, api))


async def _alter_locked(ctx: RequestContext, body: Any, response: Any, alter: Any, api: str) -> Any:
    async with ctx.broker.cluster.mutation():
        return await _alter_each(ctx, body, response, alter, api)


async def _alter_each(ctx: RequestContext, body: Any, response: Any, alter: Any, api: str) -> Any:
    counts = Counter((r.resource_type, r.resource_name) for r in body.resources)
    results = []
    for resource in body.resources:
        rtype, name = resource.resource_type, resource.resource_name
        try:
            if counts[(rtype, name)] > 1:
                raise KafkaError(ErrorCode.INVALID_REQUEST, "Each resource must appear at most once.")
            _check_access(ctx, rtype, name, AclOperation.ALTER_CONFIGS)
            alter(ctx, resource, body.validate_only)
        except KafkaError as exc:
            ctx.log_rejected(f"{api}.rejected", resource_type=rtype, resource=name, error=exc.code.name, reason=exc.message)
            results.append(response.AlterConfigsResourceResponse(
                error_code=int(exc.code), error_message=exc.message, resource_type=rtype, resource_name=name))
            continue
        results.append(response.AlterConfigsResourceResponse(
            error_code=0, error_message=None, resource_type=rtype, resource_name=name))
    if not body.validate_only and any(r.error_code == 0 and r.resource_type == RESOURCE_TOPIC for r in results):
        # Saved before the answer, so an acknowledged change survives a crash.
        await ctx.broker.cluster.persist()
    return response(throttle_time_ms=0, responses=results)


async def handle_alter_configs(header: Any, body: Any, ctx: RequestContext) -> Any:
    return await _alter_all(ctx, body, messages.AlterConfigsResponse, _alter_legacy, "alter_configs")


async def handle_incremental_alter_configs(header: Any, body: Any, ctx: RequestContext) -> Any:
    return await _alter_all(ctx, body, messages.IncrementalAlterConfigsResponse, _alter_incremental,
                      "incremental_alter_configs")
