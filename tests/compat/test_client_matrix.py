"""Cross-client compatibility: confluent-kafka, kafka-python, aiokafka and kcat produce to and consume
from one ``moldau serve`` process (kafkajs is in test_kafkajs.py, with the same scenarios).

Each client produces and consumes keys, null keys, tombstones, headers and explicit create times, with
every compression codec, in order per partition, and seeks (earliest, offset, timestamp, latest);
records produced by one client are consumed by another. Readers assign partitions and seek, never
join a group, never commit. Some behaviours are checked once, with the client best suited: 1 MB
records, 100 partitions, 200 topics, long-poll wake-up, admin calls and DeleteRecords.

One broker (conftest's ``module_broker``) serves the whole module, every test on its own topics; a
test during which that broker logs a traceback fails.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from tests.compat.clients import (
    CODECS,
    Msg,
    assert_same_records,
    check_compression,
    check_features,
    check_ordering,
    check_seeks,
    consume,
    describe,
    no_new_tracebacks,
    produce,
    reader,
    unique,
)
from tests.compat.conftest import BrokerProcess

MATRIX = ("confluent", "kafka-python", "aiokafka", "kcat")


@pytest.fixture
def broker(module_broker: BrokerProcess) -> Iterator[BrokerProcess]:
    with no_new_tracebacks(module_broker):
        yield module_broker


# ---------------------------------------------------------------------------------------------------
# Every client


@pytest.mark.parametrize("client", MATRIX)
def test_keys_null_keys_tombstones_headers_and_create_times_round_trip(client: str, broker: BrokerProcess) -> None:
    """A record's key (or null key), value (or null value: a tombstone), headers (in order, repeated
    names kept) and create time come back unchanged, at consecutive offsets from 0."""
    check_features(client, client, broker.bootstrap)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("client", MATRIX)
def test_compressed_batches_are_stored_as_sent_and_read_back(client: str, codec: str,
                                                             broker: BrokerProcess) -> None:
    """With the topic's compression.type=producer (Kafka's default) a batch keeps the producer's codec
    (none, gzip, snappy, lz4, zstd): a raw Fetch shows that codec on every stored batch, and the client
    decompresses the records it reads back."""
    check_compression(client, client, codec, broker.bootstrap, broker.host, broker.port)


CODEC_PAIRS = [("kafka-python", "confluent"), ("confluent", "aiokafka"), ("aiokafka", "kcat"),
               ("kcat", "kafka-python")]


@pytest.mark.parametrize("codec", CODECS[1:])
@pytest.mark.parametrize(("producer", "consumer"), CODEC_PAIRS, ids=[f"{p}-to-{c}" for p, c in CODEC_PAIRS])
def test_compressed_batches_from_one_client_are_read_by_another(producer: str, consumer: str, codec: str,
                                                                broker: BrokerProcess) -> None:
    """A batch compressed by one client's codec library (kafka-python's xerial-framed snappy and its
    lz4 frames, librdkafka's, aiokafka's) is decompressed by another: the broker passes it on as is."""
    check_compression(producer, consumer, codec, broker.bootstrap, broker.host, broker.port)


@pytest.mark.parametrize("client", MATRIX)
def test_records_keep_their_order_within_each_partition(client: str, broker: BrokerProcess) -> None:
    """Records sent to three partitions, interleaved, read back per partition in send order at offsets
    0..n-1."""
    check_ordering(client, broker.bootstrap)


@pytest.mark.parametrize("client", MATRIX)
def test_seek_to_earliest_offset_timestamp_and_latest(client: str, broker: BrokerProcess) -> None:
    """ListOffsets by timestamp finds the first record at or after it (-1 past the last one); reads
    start at earliest, at an offset, at a timestamp; at latest only records produced afterwards come."""
    check_seeks(client, broker.bootstrap)


@pytest.mark.parametrize("client", ["confluent", "kafka-python", "aiokafka"])
def test_seek_back_on_a_reading_consumer_rereads_from_that_offset(client: str, broker: BrokerProcess) -> None:
    """A consumer that has read offsets 0..5 and seeks to 2 receives 2, 3, ... again (a Fetch from an
    older offset returns the same records)."""
    topic = unique(f"rewind-{client}")
    msgs = [Msg(f"k{i}".encode(), f"v{i}".encode(), (), 1_700_000_000_000 + i) for i in range(8)]
    produce(client, broker.bootstrap, topic, msgs)
    with reader(client, broker.bootstrap) as r:
        r.start(topic, [0], "earliest")
        assert_same_records(msgs[:6], r.read(6), what="first read")
        r.seek(0, 2)
        assert_same_records(msgs[2:], r.read(6), first_offset=2, what="after seek to 2")


INTEROP = [
    ("confluent", "kafka-python"),
    ("kafka-python", "aiokafka"),
    ("aiokafka", "kcat"),
    ("kcat", "confluent"),
]


@pytest.mark.parametrize(("producer", "consumer"), INTEROP, ids=[f"{p}-to-{c}" for p, c in INTEROP])
def test_records_produced_by_one_client_are_read_by_another(producer: str, consumer: str,
                                                            broker: BrokerProcess) -> None:
    """What one client writes (keys, null keys, tombstones, headers, create times) another client reads
    back unchanged: the broker stores and serves the producer's batches as they are."""
    check_features(producer, consumer, broker.bootstrap)


# ---------------------------------------------------------------------------------------------------
# Once each


def test_one_megabyte_records_round_trip(broker: BrokerProcess) -> None:
    """Records of 1,000,000 bytes fit under the broker's message.max.bytes (1048588) and come back
    whole, though the reader's max.partition.fetch.bytes is 64 KiB: a Fetch returns the first batch
    even when it is larger than the limits (KIP-74)."""
    topic = unique("one-mb")
    big = [Msg(f"big-{i}".encode(), bytes([i]) + (bytes(range(256)) * 3907)[:999_999]) for i in range(3)]
    assert all(len(m.value or b"") == 1_000_000 for m in big)
    produce("confluent", broker.bootstrap, topic, big, **{"message.max.bytes": 1048588, "batch.size": 1048588})
    got = consume("confluent", broker.bootstrap, topic, 3, **{"max.partition.fetch.bytes": 65536})
    assert [len(r.value or b"") for r in got] == [1_000_000] * 3, f"sizes: {[len(r.value or b'') for r in got]}"
    changed = [r.offset for r, m in zip(got, big, strict=True) if r.value != m.value or r.key != m.key]
    assert not changed, f"1 MB records at offsets {changed} came back with other bytes than were sent"
    assert [r.offset for r in got] == [0, 1, 2]


def test_topic_with_one_hundred_partitions(broker: BrokerProcess) -> None:
    """A topic created with 100 partitions takes records on every partition (explicit ones, and keyed
    ones spread by the client's partitioner) and serves them all back to a reader of all 100."""
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = unique("hundred")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 100, 1)], operation_timeout=10)[topic].result(15)
    metadata = admin.list_topics(topic=topic, timeout=10)
    assert sorted(metadata.topics[topic].partitions) == list(range(100)), (
        f"expected partitions 0..99, Metadata lists {sorted(metadata.topics[topic].partitions)}")

    from confluent_kafka import Producer

    placed: dict[bytes, int] = {}
    errors: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            placed[msg.value()] = msg.partition()

    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20})
    for p in range(100):
        for j in range(2):
            producer.produce(topic, key=None, value=f"explicit-{p}-{j}".encode(), partition=p, on_delivery=delivered)
    for i in range(400):
        producer.produce(topic, key=f"key-{i}".encode(), value=f"keyed-{i}".encode(), on_delivery=delivered)
    assert producer.flush(20) == 0 and not errors, f"delivery failed: {errors[:5]}"
    assert {p for v, p in placed.items() if v.startswith(b"explicit")} == set(range(100))
    keyed_partitions = {p for v, p in placed.items() if v.startswith(b"keyed")}
    assert len(keyed_partitions) > 80, f"400 keyed records landed on only {len(keyed_partitions)} partitions"

    got = consume("confluent", broker.bootstrap, topic, 600, partitions=tuple(range(100)))
    read_back = {r.value: r.partition for r in got}
    assert read_back == placed, (
        f"records read back differ from those acknowledged: missing {sorted(set(placed) - set(read_back))[:5]}, "
        f"on another partition {[v for v in read_back if v in placed and read_back[v] != placed[v]][:5]}")
    for p in range(100):
        offsets = [r.offset for r in got if r.partition == p]
        assert offsets == list(range(len(offsets))), f"partition {p}: offsets {offsets}"


def test_two_hundred_topics_created_used_and_listed(broker: BrokerProcess) -> None:
    """200 topics made by one CreateTopics request each take a record, serve it back, and are all in
    the Metadata topic list."""
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    prefix = unique("many")
    topics = [f"{prefix}-{i:03d}" for i in range(200)]
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    futures = admin.create_topics([NewTopic(t, 1, 1) for t in topics], operation_timeout=30)
    failed = {}
    for t, f in futures.items():
        try:
            f.result(30)
        except KafkaException as exc:  # collect them all for one message
            failed[t] = exc
    assert not failed, f"{len(failed)} of 200 topics not created, e.g. {list(failed.items())[:3]}"

    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20})
    for t in topics:
        producer.produce(t, key=t.encode(), value=b"only-record", partition=0)
    assert producer.flush(20) == 0

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("no-group"),
                         "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    try:
        consumer.assign([TopicPartition(t, 0, 0) for t in topics])
        seen: dict[str, bytes | None] = {}
        deadline = time.monotonic() + 20
        while len(seen) < 200 and time.monotonic() < deadline:
            for msg in consumer.consume(200 - len(seen), 0.5):
                assert msg.error() is None, f"consumer error: {msg.error()}"
                seen[msg.topic()] = msg.value()
    finally:
        consumer.close()
    assert set(seen) == set(topics), f"read back from {len(seen)} of 200 topics; missing e.g. {sorted(set(topics) - set(seen))[:5]}"
    assert set(seen.values()) == {b"only-record"}

    listed = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    assert len(listed) == 200, f"Metadata lists {len(listed)} of the 200 topics"


LONG_POLL_WAIT_MS = 120_000
WAKE_BOUND_S = 20.0


def test_long_poll_fetch_wakes_up_when_a_record_arrives(broker: BrokerProcess) -> None:
    """A Fetch parked on an empty partition (fetch.wait.max.ms=120000, fetch.min.bytes=1) answers as soon
    as a record is appended, not when the wait runs out: the record arrives within a bound far shorter
    than the wait, which only a wake-up can explain."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    topic = unique("long-poll")
    produce("confluent", broker.bootstrap, topic, [Msg(b"first", b"already-there")])
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("no-group"),
                         "enable.auto.commit": False, "fetch.wait.max.ms": LONG_POLL_WAIT_MS,
                         "fetch.min.bytes": 1, "enable.partition.eof": False})
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    producer.list_topics(topic, timeout=10)
    try:
        consumer.assign([TopicPartition(topic, 0, 1)])
        # Give the consumer a chance to send its first Fetch from offset 1 and park it on the empty partition.
        first = consumer.poll(1.5)
        assert first is None, f"nothing should be readable at offset 1 yet, got {first and first.value()}"
        producer.produce(topic, key=b"wake", value=b"wake-up", partition=0)
        assert producer.flush(10) == 0, "the wake-up record was not acknowledged"
        deadline = time.monotonic() + WAKE_BOUND_S
        msg = None
        while msg is None and time.monotonic() < deadline:
            msg = consumer.poll(0.1)
    finally:
        consumer.close()
    assert msg is not None and msg.error() is None and msg.value() == b"wake-up", (
        f"expected the wake-up record within {WAKE_BOUND_S} s (the parked Fetch waits up to "
        f"{LONG_POLL_WAIT_MS / 1000:.0f} s unless an append wakes it), got {msg and (msg.error() or msg.value())}")


def test_confluent_admin_creates_describes_alters_and_deletes_topics(broker: BrokerProcess) -> None:
    """CreateTopics with a config, DescribeConfigs (the override, and defaults marked as defaults),
    AlterConfigs and IncrementalAlterConfigs, CreatePartitions, DeleteTopics, as Kafka answers them."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        NewPartitions,
        NewTopic,
    )

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    topic = unique("admin-confluent")
    admin.create_topics([NewTopic(topic, 2, 1, config={"retention.ms": "3600000"})],
                        operation_timeout=10)[topic].result(15)
    with pytest.raises(KafkaException) as again:
        admin.create_topics([NewTopic(topic, 2, 1)], operation_timeout=10)[topic].result(15)
    assert again.value.args[0].name() == "TOPIC_ALREADY_EXISTS", f"second create: {again.value}"
    assert sorted(admin.list_topics(topic=topic, timeout=10).topics[topic].partitions) == [0, 1]

    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)

    def described() -> dict[str, Any]:
        return admin.describe_configs([resource])[resource].result(15)

    configs = described()
    assert configs["retention.ms"].value == "3600000" and not configs["retention.ms"].is_default, (
        f"retention.ms after create: {configs['retention.ms']!r}")
    assert configs["cleanup.policy"].value == "delete" and configs["cleanup.policy"].is_default, (
        f"cleanup.policy default: {configs['cleanup.policy']!r}")

    altered = ConfigResource(ConfigResource.Type.TOPIC, topic, set_config={"retention.ms": "7200000"})
    with warnings.catch_warnings():  # AlterConfigs (key 33) is what this checks, deprecated or not
        warnings.simplefilter("ignore", DeprecationWarning)
        admin.alter_configs([altered])[altered].result(15)
    assert described()["retention.ms"].value == "7200000"

    incremental = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("max.message.bytes", "2000000", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([incremental])[incremental].result(15)
    configs = described()
    assert configs["max.message.bytes"].value == "2000000", f"after incremental SET: {configs['max.message.bytes']!r}"
    assert configs["retention.ms"].value == "7200000", "incremental alter must keep the other overrides"

    admin.create_partitions([NewPartitions(topic, 4)], operation_timeout=10)[topic].result(15)
    assert sorted(admin.list_topics(topic=topic, timeout=10).topics[topic].partitions) == [0, 1, 2, 3]

    admin.delete_topics([topic], operation_timeout=10)[topic].result(15)
    assert topic not in admin.list_topics(timeout=10).topics, "deleted topic still listed"


def test_confluent_delete_records_moves_the_low_watermark(broker: BrokerProcess) -> None:
    """DeleteRecords up to offset 4 answers low watermark 4; ListOffsets earliest and a read from the
    beginning then start at 4, the high watermark stays."""
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    topic = unique("delete-records-confluent")
    msgs = [Msg(f"k{i}".encode(), f"v{i}".encode()) for i in range(10)]
    produce("confluent", broker.bootstrap, topic, msgs)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    tp = TopicPartition(topic, 0, 4)
    result = admin.delete_records([tp])[tp].result(15)
    assert result.low_watermark == 4, f"DeleteRecords answered low watermark {result.low_watermark}, expected 4"

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("no-group"),
                         "enable.auto.commit": False})
    try:
        marks = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)
    finally:
        consumer.close()
    assert marks == (4, 10), f"watermarks after DeleteRecords: expected (4, 10), got {marks}"
    got = consume("confluent", broker.bootstrap, topic, 6, start="earliest")
    assert [r.offset for r in got] == list(range(4, 10)), f"read from earliest:\n{describe(got)}"
