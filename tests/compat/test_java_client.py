"""Apache Kafka's Java client (kafka-clients 4.1, the reference implementation) against ``moldau serve``.

The scenarios run ``tests/compat/java``'s JavaClient (see ``java_client.py``): an idempotent acks=all
producer with every codec, a consumer-group member that reads and commits, interop with
confluent-kafka both ways, and the admin client's topic life cycle. One broker serves the module,
every test on its own topics and groups.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from tests.compat.clients import CODECS, Msg, consume, create_topic, no_new_tracebacks, produce, unique
from tests.compat.conftest import BrokerProcess
from tests.compat.java_client import java_client, require_java

COUNT = 60


@pytest.fixture
def broker(module_broker: BrokerProcess) -> Iterator[BrokerProcess]:
    require_java()
    with no_new_tracebacks(module_broker):
        yield module_broker


def _values(records: list[dict]) -> list[bytes]:
    return [base64.b64decode(r["value"]) for r in records]


@pytest.mark.parametrize("codec", CODECS)
def test_java_idempotent_producer_and_group_consumer_round_trip(codec: str, broker: BrokerProcess) -> None:
    """The Java producer (idempotent, acks=all, each codec) gets one ack per record at offsets 0..n-1 of
    each partition; a Java group member then reads every record once with its key and header, and its
    commit lands at each partition's end."""
    topic, group = unique(f"java-{codec}"), unique("java-group")
    create_topic(broker.bootstrap, topic, 3)
    acked = java_client("produce", broker.bootstrap, topic, str(COUNT), codec)["acked"]
    assert len(acked) == COUNT
    per_partition: dict[int, list[int]] = {}
    for ack in acked:
        per_partition.setdefault(ack["partition"], []).append(ack["offset"])
    for partition, offsets in per_partition.items():
        assert sorted(offsets) == list(range(len(offsets))), f"partition {partition} acks: {offsets}"

    got = java_client("consume", broker.bootstrap, topic, group, str(COUNT))
    values = _values(got["records"])
    assert sorted(values) == sorted(f"value-{i}".encode() for i in range(COUNT)), values
    for record in got["records"]:
        n = base64.b64decode(record["value"]).decode().removeprefix("value-")
        assert base64.b64decode(record["key"]) == f"key-{n}".encode()
        assert record["headers"] == [["n", base64.b64encode(n.encode()).decode()]]
    ends = {str(p): len(offsets) for p, offsets in per_partition.items()}
    assert {p: o for p, o in got["committed"].items() if o is not None} == ends


def test_java_reads_what_confluent_writes_and_confluent_reads_what_java_writes(broker: BrokerProcess) -> None:
    """Records cross between the reference client and librdkafka unchanged, in order."""
    to_java, to_confluent = unique("java-in"), unique("java-out")
    create_topic(broker.bootstrap, to_java, 1)
    msgs = [Msg(f"key-{i}".encode(), f"value-{i}".encode()) for i in range(COUNT)]
    produce("confluent", broker.bootstrap, to_java, msgs, compression="lz4")
    got = java_client("consume", broker.bootstrap, to_java, unique("java-group"), str(COUNT))
    assert _values(got["records"]) == [m.value for m in msgs]

    create_topic(broker.bootstrap, to_confluent, 1)
    java_client("produce", broker.bootstrap, to_confluent, str(COUNT), "zstd")
    recs = consume("confluent", broker.bootstrap, to_confluent, COUNT)
    assert [r.value for r in recs] == [f"value-{i}".encode() for i in range(COUNT)]
    assert [r.offset for r in recs] == list(range(COUNT))


def test_java_admin_topic_life_cycle(broker: BrokerProcess) -> None:
    """The Java admin client creates a topic with a config, sees it listed and described, reads the
    config back, adds partitions, deletes records below offset 4, and deletes the topic."""
    topic = unique("java-admin")
    out = java_client("admin", broker.bootstrap, topic, "2")
    assert out["nodes"] == 1 and out["cluster_id"]
    assert out["listed"] is True
    assert out["partitions"] == 2
    assert out["retention_ms"] == "123456789"
    assert out["partitions_after_increase"] == 4
    assert out["earliest_after_delete_records"] == 4
    assert out["latest"] == 10
    assert out["listed_after_delete"] is False


def test_java_admin_asking_for_too_many_partitions_gets_policy_violation(broker: BrokerProcess) -> None:
    """Kafka's controller refuses a CreateTopics that would add more partitions than one operation may
    (10,000): the Java client raises PolicyViolationException with Kafka's message, nothing is created,
    and the broker goes on serving (the same client then creates a normal topic)."""
    huge, normal = unique("java-huge"), unique("java-normal")
    out = java_client("create-topic", broker.bootstrap, huge, "8388608")
    assert out["created"] is False
    assert out["exception"] == "PolicyViolationException", out
    assert "Excessively large number of partitions" in out["message"], out
    assert java_client("create-topic", broker.bootstrap, normal, "3")["created"] is True
