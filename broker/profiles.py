"""Setting profiles: ``dev`` (what ``moldau serve`` starts from), ``ci`` for test brokers, and ``kafka``
(Kafka's code defaults, unchanged).

A profile is a layer of settings by their Kafka names, applied just above the registry's defaults, so a
config file, the environment, ``--set`` and the dedicated flags all still override it. The README lists
what each one changes; keep it in step with the tables here.
"""

from __future__ import annotations

from collections.abc import Mapping

from broker.config import MEMORY_STORAGE_URL, ConfigError

# What Kafka's own shipped config/server.properties sets for development, where it differs from the
# code defaults Moldau's registry holds: consumer groups form at once instead of after 3 s.
DEV_PROFILE: Mapping[str, str] = {
    "group.initial.rebalance.delay.ms": "0",
}

# Test brokers: nothing on disk, small segments (retention and compaction tests see rolls), short session
# timeouts allowed (client libraries' own suites use 1 s), topics created on first use, and the control
# endpoint (fault injection) on.
CI_PROFILE: Mapping[str, str] = {
    **DEV_PROFILE,
    "storage.url": MEMORY_STORAGE_URL,
    "log.segment.bytes": "1048576",
    "group.min.session.timeout.ms": "1000",
    "auto.create.topics.enable": "true",
    "control.endpoint.enable": "true",
}

PROFILES: Mapping[str, Mapping[str, str]] = {"dev": DEV_PROFILE, "ci": CI_PROFILE, "kafka": {}}
DEFAULT_PROFILE = "dev"
# Profiles whose `moldau serve` prints the bootstrap address on stdout once it listens, for scripts.
PRINTS_BOOTSTRAP = frozenset({"ci"})


def profile_settings(name: str, *, data_dir_given: bool = False) -> dict[str, str]:
    """The settings profile ``name`` applies. With a data directory given, a profile that would keep
    data in memory keeps it in that directory instead (the user asked for it by name)."""
    try:
        settings = dict(PROFILES[name])
    except KeyError:
        raise ConfigError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}") from None
    if data_dir_given and settings.get("storage.url") == MEMORY_STORAGE_URL:
        del settings["storage.url"]
    return settings
