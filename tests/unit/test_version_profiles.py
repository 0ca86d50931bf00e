"""Version profiles (``broker.version_profiles``): each profile's registry advertises and accepts, per API key,
the versions both that Kafka release and Moldau serve, and nothing outside what Moldau serves."""

from __future__ import annotations

import pytest

from broker.config import BrokerConfig, ConfigError
from broker.handlers import SERVED, HandlerRegistry, default_registry
from broker.version_profiles import ADVERTISED_MIN, KAFKA_VERSIONS, RELEASES, registry_for

SERVED_RANGES = {key: (lo, hi) for key, lo, hi, _ in SERVED}
PRODUCE, FETCH, LIST_OFFSETS, METADATA, OFFSET_COMMIT, JOIN_GROUP, API_VERSIONS = 0, 1, 2, 3, 8, 11, 18
DESCRIBE_PRODUCERS, DESCRIBE_TRANSACTIONS, LIST_TRANSACTIONS = 61, 65, 66


def accepted(registry: HandlerRegistry) -> dict[int, tuple[int, int]]:
    return {e.api_key: (e.min_version, e.max_version) for e in registry}


def advertised(registry: HandlerRegistry) -> dict[int, tuple[int, int]]:
    return {key: (lo, hi) for key, lo, hi in registry.version_ranges()}


def test_the_profiles_are_the_four_releases_the_setting_names() -> None:
    assert KAFKA_VERSIONS == ("2.8", "3.0", "3.9", "4.0")


@pytest.mark.parametrize("version", KAFKA_VERSIONS)
def test_profile_accepts_the_intersection_of_the_release_and_what_moldau_serves(version: str) -> None:
    release = RELEASES[version]
    expected = {key: (max(lo, release[key][0]), min(hi, release[key][1]))
                for key, (lo, hi) in SERVED_RANGES.items() if key in release}
    expected = {key: r for key, r in expected.items() if r[0] <= r[1]}
    assert accepted(registry_for(version)) == expected


@pytest.mark.parametrize("version", KAFKA_VERSIONS)
def test_profile_advertises_only_versions_moldau_serves(version: str) -> None:
    for key, (lo, hi) in advertised(registry_for(version)).items():
        served_lo, served_hi = SERVED_RANGES[key]
        assert served_lo <= lo <= hi <= served_hi, (
            f"{version}: api {key} advertised {lo}-{hi}, outside the served {served_lo}-{served_hi}")


@pytest.mark.parametrize("version", KAFKA_VERSIONS)
def test_profile_advertises_what_it_accepts_except_kafka_4_produce(version: str) -> None:
    registry = registry_for(version)
    differing = {key for key in advertised(registry) if advertised(registry)[key] != accepted(registry)[key]}
    assert differing == set(ADVERTISED_MIN.get(version, {}))


def test_release_tables_name_only_keys_moldau_serves() -> None:
    for version, release in RELEASES.items():
        assert set(release) <= set(SERVED_RANGES), f"{version}: {set(release) - set(SERVED_RANGES)}"


def test_kafka_2_8_has_describe_producers_but_not_the_3_0_transaction_listing_apis() -> None:
    """KIP-664's DescribeProducers came in 2.8 (KAFKA-12238), DescribeTransactions/ListTransactions in 3.0."""
    ranges = advertised(registry_for("2.8"))
    assert ranges[DESCRIBE_PRODUCERS] == (0, 0)
    assert DESCRIBE_TRANSACTIONS not in ranges and LIST_TRANSACTIONS not in ranges
    assert {DESCRIBE_TRANSACTIONS, LIST_TRANSACTIONS} <= set(advertised(registry_for("3.0")))


def test_api_versions_v4_came_with_3_9() -> None:
    """Clients that start at ApiVersions v4 get KIP-511's fallback from 2.8 and 3.0 profiles."""
    assert [advertised(registry_for(v))[API_VERSIONS] for v in KAFKA_VERSIONS] == [(0, 3), (0, 3), (0, 4), (0, 4)]


def test_kafka_4_0_floors_follow_kip_896() -> None:
    """Kafka 4.0 refuses Fetch v0-3, ListOffsets v0 and OffsetCommit v0-1; keeps Metadata v0-3 (KAFKA-18648)
    and, from 4.0.1, JoinGroup v0-1 (KAFKA-19444); refuses Produce v0-2 but advertises Produce from v0
    (KAFKA-18659)."""
    registry = registry_for("4.0")
    assert accepted(registry)[FETCH] == (4, 17)
    assert accepted(registry)[LIST_OFFSETS] == (1, 10)
    assert accepted(registry)[OFFSET_COMMIT] == (2, 9)
    assert accepted(registry)[METADATA] == (0, 12)
    assert accepted(registry)[JOIN_GROUP] == (0, 9)
    assert accepted(registry)[PRODUCE] == (3, 11)
    assert advertised(registry)[PRODUCE] == (0, 11)
    produce = registry.lookup(PRODUCE)
    assert produce is not None and not produce.supports(2) and produce.supports(3)


def test_before_4_0_old_versions_are_accepted() -> None:
    for version in ("2.8", "3.0", "3.9"):
        ranges = accepted(registry_for(version))
        assert ranges[PRODUCE][0] == 0 and ranges[LIST_OFFSETS][0] == 0 and ranges[OFFSET_COMMIT][0] == 0


def test_no_profile_is_the_default_registry() -> None:
    assert registry_for(None).version_ranges() == default_registry().version_ranges()
    assert accepted(registry_for(None)) == accepted(default_registry())


def test_an_unknown_kafka_version_is_refused_by_config_and_by_registry_for() -> None:
    with pytest.raises(ConfigError, match="kafka.version"):
        BrokerConfig(kafka_version="1.0")
    with pytest.raises(ValueError, match="1.0"):
        registry_for("1.0")
    assert BrokerConfig(kafka_version="4.0").kafka_version == "4.0"


def test_profile_registries_keep_the_served_handlers() -> None:
    default = default_registry()
    for entry in registry_for("2.8"):
        served = default.lookup(entry.api_key)
        assert served is not None and entry.handler is served.handler, f"api {entry.api_key}"


def test_capped_lowers_maxima_and_drops_an_api_capped_below_its_minimum() -> None:
    registry = registry_for("4.0").capped({METADATA: 4, FETCH: 3})
    assert accepted(registry)[METADATA] == (0, 4)
    assert FETCH not in registry
    assert advertised(registry)[PRODUCE] == (0, 11), "capping keeps Kafka 4's advertised Produce minimum"
