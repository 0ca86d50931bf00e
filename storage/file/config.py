"""Per-partition settings of the file engine, read by their Kafka topic config names.

`open_log(topic, partition, config)` takes a mapping (name -> value) or a callable (name -> value, e.g.
`broker.topic_config.TopicConfigs.getter(overrides)`), so a topic config change applies on the next
append or retention check without reopening the log. Missing names (or None) fall back to Kafka's
defaults; values may be given as strings, as a properties file holds them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from protocol.primitives import INT64_MAX

DEFAULTS: dict[str, Any] = {
    "segment.bytes": 1073741824,  # 1 GiB
    "segment.ms": 604800000,  # 7 days
    "segment.jitter.ms": 0,
    "segment.index.bytes": 10485760,  # 10 MiB
    "index.interval.bytes": 4096,
    "retention.ms": 604800000,  # 7 days; -1 keeps everything
    "retention.bytes": -1,  # unlimited
    "cleanup.policy": "delete",
    "flush.messages": INT64_MAX,  # never forced by count
    "flush.ms": INT64_MAX,  # never forced by time
}

TopicConfigSource = Mapping[str, Any] | Callable[[str], Any] | None


class _IntSetting:
    """A numeric setting read through the log's config source on every access."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, config: LogConfig, owner: type | None = None) -> int:
        return config.int(self.name)


class LogConfig:
    """The effective settings of one log, looked up through its source on every read."""

    __slots__ = ("_get",)

    def __init__(self, source: TopicConfigSource = None) -> None:
        if source is None:
            self._get: Callable[[str], Any] = lambda name: None
        elif callable(source):
            self._get = source
        else:
            mapping = source
            self._get = mapping.get

    def value(self, name: str) -> Any:
        try:
            raw = self._get(name)
        except KeyError:
            raw = None
        return DEFAULTS[name] if raw is None else raw

    def int(self, name: str) -> int:
        return int(self.value(name))

    segment_bytes = _IntSetting("segment.bytes")
    segment_ms = _IntSetting("segment.ms")
    segment_jitter_ms = _IntSetting("segment.jitter.ms")
    segment_index_bytes = _IntSetting("segment.index.bytes")
    index_interval_bytes = _IntSetting("index.interval.bytes")
    retention_ms = _IntSetting("retention.ms")
    retention_bytes = _IntSetting("retention.bytes")
    flush_messages = _IntSetting("flush.messages")
    flush_ms = _IntSetting("flush.ms")

    @property
    def delete_enabled(self) -> bool:
        """cleanup.policy includes delete (time and size retention apply)."""
        return "delete" in [p.strip() for p in str(self.value("cleanup.policy")).split(",")]
