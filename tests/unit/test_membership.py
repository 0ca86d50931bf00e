"""Leadership in a shared cluster (`broker.membership`): every broker computes the same leader for a
partition from the live node ids alone, partitions spread over the brokers, and a broker leaving moves
only the partitions it led; and the settings that go with a PostgreSQL cluster."""

from __future__ import annotations

from collections import Counter

import pytest

from broker.config import BrokerConfig, ConfigError
from broker.membership import choose_leader

PARTITIONS = [(f"topic-{t}", p) for t in range(10) for p in range(30)]


def test_every_broker_computes_the_same_leader_whatever_the_order_of_the_live_set() -> None:
    for topic, p in PARTITIONS[:50]:
        assert choose_leader(topic, p, [1, 2, 3]) == choose_leader(topic, p, [3, 1, 2]) == \
            choose_leader(topic, p, {2, 3, 1})


def test_leadership_spreads_over_the_brokers() -> None:
    counts = Counter(choose_leader(topic, p, [1, 2, 3]) for topic, p in PARTITIONS)
    assert set(counts) == {1, 2, 3}
    assert min(counts.values()) >= len(PARTITIONS) // 3 * 0.8, counts


def test_a_broker_leaving_moves_only_its_own_partitions_and_one_joining_takes_only_its_share() -> None:
    before = {key: choose_leader(*key, [1, 2, 3]) for key in PARTITIONS}
    after = {key: choose_leader(*key, [1, 3]) for key in PARTITIONS}
    moved = {key for key in PARTITIONS if before[key] != after[key]}
    assert moved == {key for key in PARTITIONS if before[key] == 2}
    joined = {key: choose_leader(*key, [1, 2, 3, 4]) for key in PARTITIONS}
    assert all(joined[key] in (before[key], 4) for key in PARTITIONS)


def test_a_postgresql_broker_keeps_no_data_directory() -> None:
    config = BrokerConfig.from_settings({"storage.url": "postgresql://u:p@db/moldau"})
    assert config.shared_storage and config.data_dir is None and not config.in_memory
    with pytest.raises(ConfigError, match="drop log.dirs"):
        BrokerConfig.from_settings({"storage.url": "postgresql://u:p@db/moldau", "log.dirs": "/tmp/x"})
    assert BrokerConfig.from_settings({}).broker_session_timeout_ms == 9000
