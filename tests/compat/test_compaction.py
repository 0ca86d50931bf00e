"""Log compaction observed through real clients, on the file, memory and PostgreSQL engines: a compacted topic read
from the start shows the latest value per key (at its original offset) and keeps tombstones until
``delete.retention.ms`` has passed."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.compat.java_client import java_client
from tests.compat.test_durability import RestartableBroker, create_topic, watermarks
from tests.waiting import Pending, wait_until

SETTLE_TIMEOUT_S = 20.0
FAST = {"socket.connection.setup.timeout.ms": 5000, "reconnect.backoff.max.ms": 200}


@pytest.fixture(params=["file", "memory", "postgresql"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RestartableBroker]:
    storage = {"file": [], "memory": ["--storage", "memory://"],
               "postgresql": ["--storage", request.getfixturevalue("postgres_url")]}[request.param]
    proc = RestartableBroker(tmp_path, *storage, "--set", "log.retention.check.interval.ms=200")
    yield proc
    proc.close()


def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes | None]]) -> dict[int, tuple[bytes, Any]]:
    """Each (key, value) as its own acks=all batch; returns offset -> (key, value)."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0, **FAST})
    acked: dict[int, tuple[bytes, Any]] = {}
    for key, value in records:
        producer.produce(topic, value, key=key,
                         on_delivery=lambda err, msg: acked.__setitem__(msg.offset(), (msg.key(), msg.value()))
                         if err is None else None)
        assert producer.flush(10) == 0
    assert len(acked) == len(records), f"acknowledged {len(acked)} of {len(records)}"
    return acked


def read_all(bootstrap: str, topic: str, timeout: float = 10.0) -> list[tuple[int, bytes, Any]]:
    """(offset, key, value) of every record from the low to the high watermark of partition 0."""
    from confluent_kafka import Consumer, TopicPartition

    low, high = watermarks(bootstrap, topic, 1)[0]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 100, **FAST})
    got: list[tuple[int, bytes, Any]] = []
    try:
        consumer.assign([TopicPartition(topic, 0, low)])
        deadline = time.monotonic() + timeout
        while (not got or got[-1][0] < high - 1) and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.5):
                if msg.error() is None:
                    got.append((msg.offset(), msg.key(), msg.value()))
    finally:
        consumer.close()
    assert got and got[-1][0] == high - 1, f"read {len(got)} records, high watermark {high}"
    return got


def test_compacted_topic_keeps_the_latest_value_per_key_at_its_offset(broker: RestartableBroker) -> None:
    """cleanup.policy=compact: closed segments keep only the latest record per key, offsets unchanged;
    a tombstone (null value) is still readable while delete.retention.ms has not passed."""
    topic = f"compact-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic, partitions=1, config={
        "cleanup.policy": "compact", "segment.bytes": "1024", "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": "86400000"})
    records: list[tuple[bytes, bytes | None]] = []
    for round_ in range(6):
        for k in range(5):
            records.append((b"k%d" % k, b"v%d-%d-" % (k, round_) + b"x" * 60))
    records.append((b"k4", None))  # tombstone for k4
    records += [(b"filler", b"f%d" % i + b"x" * 60) for i in range(20)]  # rolls the tombstone's segment
    acked = produce(broker.bootstrap, topic, records)
    latest: dict[bytes, int] = {}
    for offset in sorted(acked):
        latest[acked[offset][0]] = offset

    def compacted() -> list[tuple[int, bytes, Any]] | Pending:
        got = read_all(broker.bootstrap, topic)
        keys = [key for _, key, _ in got]
        return got if keys.count(b"k0") == 1 and keys.count(b"k4") == 1 else Pending(got)

    got = wait_until(compacted, SETTLE_TIMEOUT_S, "compaction of the closed segments", interval=0.2)
    for offset, key, value in got:
        assert acked[offset] == (key, value), f"offset {offset} holds {(key, value)}, acked {acked[offset]}"
    by_key = {key: offset for offset, key, _ in got if key != b"filler"}
    assert by_key == {k: o for k, o in latest.items() if k != b"filler"}, "latest offsets per key changed"
    tombstone = [(o, v) for o, k, v in got if k == b"k4"]
    assert tombstone == [(latest[b"k4"], None)], f"tombstone for k4 not kept: {tombstone}"
    assert watermarks(broker.bootstrap, topic, 1)[0][1] == max(acked) + 1


def test_tombstones_go_after_delete_retention_ms(broker: RestartableBroker) -> None:
    """With delete.retention.ms=0 a tombstone is removed by a later cleaning round, and the key is gone."""
    topic = f"compact-ts-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic, partitions=1, config={
        "cleanup.policy": "compact", "segment.bytes": "1024", "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": "0"})
    produce(broker.bootstrap, topic, [(b"gone", b"v" * 60), (b"gone", None)]
            + [(b"keep%d" % i, b"x" * 60) for i in range(30)])

    def tombstone_removed() -> bool | Pending:
        # Each round needs new dirty data to run: keep writing a little.
        produce(broker.bootstrap, topic, [(b"keep%d" % (i % 30), b"y" * 60) for i in range(15)])
        got = read_all(broker.bootstrap, topic)
        return not any(key == b"gone" for _, key, _ in got) or Pending([(o, k) for o, k, _ in got][:12])

    wait_until(tombstone_removed, SETTLE_TIMEOUT_S, "removal of the tombstone", interval=0.2)


def test_java_client_reads_a_compacted_topic(broker: RestartableBroker) -> None:
    """Apache Kafka's Java client creates a compacted topic, writes it, and reads it back compacted: each
    key once, at the offset of its last write, the tombstone kept (delete.retention.ms not passed)."""
    topic = f"compact-java-{uuid.uuid4().hex[:8]}"
    out = java_client("compaction", broker.bootstrap, topic, timeout=SETTLE_TIMEOUT_S + 60)
    assert out["compacted"], f"never saw each key once: {[(r['offset'], r['key']) for r in out['records']]}"
    seen = {base64.b64decode(r["key"]).decode(): (r["offset"], r["value"]) for r in out["records"]}
    for k in range(5):
        assert seen[f"k{k}"][0] == out["latest"][f"k{k}"], f"k{k} not at its latest offset: {seen}"
    assert seen["k4"][1] is None, "the tombstone of k4 was not kept"
    keys = [r["key"] for r in out["records"]]
    assert len(keys) - keys.count(base64.b64encode(b"filler").decode()) == 5
