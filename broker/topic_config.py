"""Topic-level configs: Kafka's names, types, validation, and their broker-level defaults.

Each topic config has a broker synonym (``retention.ms`` <- ``log.retention.ms``) whose value, when the
broker sets it, is the default for every topic without an override. `TopicConfigs` resolves a topic's
effective value and where it came from (DescribeConfigs' sources: dynamic topic config, static broker
config, default).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from broker.config import MESSAGE_MAX_BYTES
from protocol.errors import ErrorCode, KafkaError
from protocol.primitives import INT32_MAX, INT64_MAX
from storage.compaction import CLEANER_DEFAULTS
from storage.file.config import DEFAULTS as LOG_DEFAULTS

# DescribeConfigs ConfigSource values (Kafka's numbering).
SOURCE_TOPIC = 1  # TOPIC_CONFIG
SOURCE_STATIC_BROKER = 4  # STATIC_BROKER_CONFIG
SOURCE_DEFAULT = 5  # DEFAULT_CONFIG

# DescribeConfigs ConfigType values.
TYPE_BOOLEAN, TYPE_STRING, TYPE_INT, TYPE_SHORT, TYPE_LONG, TYPE_DOUBLE, TYPE_LIST = 1, 2, 3, 4, 5, 6, 7
TYPE_PASSWORD = 9

CLEANUP_POLICIES = ("delete", "compact")
TIMESTAMP_TYPES = ("CreateTime", "LogAppendTime")
COMPRESSION_TYPES = ("uncompressed", "zstd", "lz4", "snappy", "gzip", "producer")


@dataclass(frozen=True)
class TopicConfigDef:
    name: str
    type: int
    default: Any
    doc: str
    broker_synonym: str | None = None
    minimum: float | None = None
    choices: tuple[str, ...] | None = None


def _d(name: str, type_: int, default: Any, doc: str, synonym: str | None = None, *,
       minimum: float | None = None, choices: tuple[str, ...] | None = None) -> TopicConfigDef:
    return TopicConfigDef(name, type_, default, doc, synonym, minimum, choices)


DEFINITIONS: tuple[TopicConfigDef, ...] = (
    _d("cleanup.policy", TYPE_LIST, LOG_DEFAULTS["cleanup.policy"],
       "delete removes old segments by time or size; compact keeps the latest record per key.",
       "log.cleanup.policy", choices=CLEANUP_POLICIES),
    _d("compression.type", TYPE_STRING, "producer",
       "Final compression of the topic's data; producer keeps what the producer sent.",
       "compression.type", choices=COMPRESSION_TYPES),
    _d("delete.retention.ms", TYPE_LONG, CLEANER_DEFAULTS["delete.retention.ms"],
       "How long tombstones stay readable in a compacted topic.", "log.cleaner.delete.retention.ms", minimum=0),
    _d("file.delete.delay.ms", TYPE_LONG, 60000, "Delay before deleting a file from the file system.",
       "log.segment.delete.delay.ms", minimum=0),
    _d("flush.messages", TYPE_LONG, LOG_DEFAULTS["flush.messages"],
       "Force an fsync after this many messages.", "log.flush.interval.messages", minimum=1),
    _d("flush.ms", TYPE_LONG, LOG_DEFAULTS["flush.ms"],
       "Force an fsync after this much time.", "log.flush.interval.ms", minimum=0),
    _d("index.interval.bytes", TYPE_INT, LOG_DEFAULTS["index.interval.bytes"],
       "Bytes between offset index entries.", "log.index.interval.bytes", minimum=0),
    _d("max.compaction.lag.ms", TYPE_LONG, CLEANER_DEFAULTS["max.compaction.lag.ms"],
       "Longest time a record stays uncompacted.", "log.cleaner.max.compaction.lag.ms", minimum=1),
    _d("max.message.bytes", TYPE_INT, MESSAGE_MAX_BYTES, "Largest record batch size allowed in this topic.",
       "message.max.bytes", minimum=0),
    _d("message.timestamp.after.max.ms", TYPE_LONG, 3600000,
       "How far in the future a CreateTime timestamp may be.", "log.message.timestamp.after.max.ms", minimum=0),
    _d("message.timestamp.before.max.ms", TYPE_LONG, INT64_MAX,
       "How far in the past a CreateTime timestamp may be.", "log.message.timestamp.before.max.ms", minimum=0),
    _d("message.timestamp.type", TYPE_STRING, "CreateTime",
       "CreateTime keeps the producer's timestamps; LogAppendTime stamps the broker's time.",
       "log.message.timestamp.type", choices=TIMESTAMP_TYPES),
    _d("min.cleanable.dirty.ratio", TYPE_DOUBLE, CLEANER_DEFAULTS["min.cleanable.dirty.ratio"],
       "Dirty share of the log that triggers compaction.", "log.cleaner.min.cleanable.ratio", minimum=0),
    _d("min.compaction.lag.ms", TYPE_LONG, CLEANER_DEFAULTS["min.compaction.lag.ms"],
       "Shortest time a record stays uncompacted.", "log.cleaner.min.compaction.lag.ms", minimum=0),
    _d("min.insync.replicas", TYPE_INT, 1, "Replicas that must acknowledge an acks=all write.",
       "min.insync.replicas", minimum=1),
    _d("preallocate", TYPE_BOOLEAN, False, "Preallocate segment files.", "log.preallocate"),
    _d("retention.bytes", TYPE_LONG, LOG_DEFAULTS["retention.bytes"],
       "Largest size of a partition before old segments go; -1 unlimited.", "log.retention.bytes"),
    _d("retention.ms", TYPE_LONG, LOG_DEFAULTS["retention.ms"],
       "How long records are kept; -1 forever.", "log.retention.ms", minimum=-1),
    _d("segment.bytes", TYPE_INT, LOG_DEFAULTS["segment.bytes"],
       "Size of a log segment file.", "log.segment.bytes", minimum=14),
    _d("segment.index.bytes", TYPE_INT, LOG_DEFAULTS["segment.index.bytes"],
       "Size of an offset index file.", "log.index.size.max.bytes", minimum=4),
    _d("segment.jitter.ms", TYPE_LONG, LOG_DEFAULTS["segment.jitter.ms"],
       "Random jitter subtracted from segment.ms.", "log.roll.jitter.ms", minimum=0),
    _d("segment.ms", TYPE_LONG, LOG_DEFAULTS["segment.ms"],
       "Roll a segment after this long.", "log.roll.ms", minimum=1),
    _d("unclean.leader.election.enable", TYPE_BOOLEAN, False, "Unused on a single node.",
       "unclean.leader.election.enable"),
)
BY_NAME: dict[str, TopicConfigDef] = {d.name: d for d in DEFINITIONS}


def invalid(message: str) -> KafkaError:
    return KafkaError(ErrorCode.INVALID_CONFIG, message)


def parse_value(d: TopicConfigDef, raw: Any) -> Any:
    """Parse and validate one value; raises KafkaError(INVALID_CONFIG) naming the config."""
    text = str(raw).strip() if not isinstance(raw, (bool, int, float)) else raw
    try:
        if d.type == TYPE_BOOLEAN:
            if isinstance(text, bool):
                value: Any = text
            elif str(text).lower() in ("true", "false"):
                value = str(text).lower() == "true"
            else:
                raise ValueError("expected true or false")
        elif d.type in (TYPE_INT, TYPE_LONG, TYPE_SHORT):
            value = int(text)
            limit = INT32_MAX if d.type == TYPE_INT else INT64_MAX
            if not -limit - 1 <= value <= limit:
                raise ValueError("out of range")
        elif d.type == TYPE_DOUBLE:
            value = float(text)
        elif d.type == TYPE_LIST:
            value = ",".join(part.strip() for part in str(text).split(",") if part.strip())
        else:
            value = str(text)
    except ValueError as exc:
        raise invalid(f"Invalid value {raw!r} for configuration {d.name}: {exc}") from None
    if d.minimum is not None and isinstance(value, (int, float)) and value < d.minimum:
        raise invalid(f"Invalid value {raw!r} for configuration {d.name}: value must be at least {d.minimum:g}")
    if d.choices is not None:
        parts = value.split(",") if d.type == TYPE_LIST else [value]
        bad = [p for p in parts if p not in d.choices]
        if bad or not parts:
            raise invalid(f"Invalid value {raw!r} for configuration {d.name}: "
                          f"String must be one of: {', '.join(d.choices)}")
    return value


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def validate_overrides(configs: Mapping[str, Any]) -> dict[str, Any]:
    """Parse a set of topic config overrides (CreateTopics, AlterConfigs); unknown names are INVALID_CONFIG."""
    parsed = {}
    for name, raw in configs.items():
        d = BY_NAME.get(name)
        if d is None:
            raise invalid(f"Unknown topic config name: {name}")
        if raw is None:
            raise invalid(f"Null value not supported for topic configs: {name}")
        parsed[name] = parse_value(d, raw)
    return parsed


class TopicConfigs:
    """Effective topic configs: topic override, else the broker's synonym setting, else Kafka's default."""

    def __init__(self, broker_values: Mapping[str, Any] | None = None) -> None:
        # broker_values: broker-level settings by Kafka name (only those the operator set).
        self.broker_defaults: dict[str, Any] = {}
        for d in DEFINITIONS:
            if broker_values and d.broker_synonym in broker_values:
                self.broker_defaults[d.name] = parse_value(d, broker_values[d.broker_synonym])

    @classmethod
    def from_broker_config(cls, config: Any) -> TopicConfigs:
        """Topic defaults from the broker settings the operator set (``log.retention.ms`` etc.)."""
        values: dict[str, Any] = {}
        for d in DEFINITIONS:
            if d.broker_synonym and d.broker_synonym in config.sources:
                value = config.get(d.broker_synonym)
                if value is not None:
                    values[d.broker_synonym] = value
        for ms_name, hours_name in (("log.retention.ms", "log.retention.hours"), ("log.roll.ms", "log.roll.hours")):
            hours = config.get(hours_name)
            if ms_name not in values and hours is not None:
                values[ms_name] = hours * 3_600_000
        return cls(values)

    def default(self, name: str) -> tuple[Any, int]:
        if name in self.broker_defaults:
            return self.broker_defaults[name], SOURCE_STATIC_BROKER
        return BY_NAME[name].default, SOURCE_DEFAULT

    def value(self, overrides: Mapping[str, Any], name: str) -> Any:
        if name in overrides:
            return overrides[name]
        return self.default(name)[0]

    def resolve(self, overrides: Mapping[str, Any], name: str) -> tuple[Any, int]:
        """(value, source) of one config for a topic with these overrides."""
        if name in overrides:
            return overrides[name], SOURCE_TOPIC
        return self.default(name)

    def getter(self, overrides: Mapping[str, Any]) -> Callable[[str], Any]:
        return lambda name: self.value(overrides, name)
