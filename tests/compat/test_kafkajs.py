"""kafkajs 2.2.4 against ``moldau serve``: the scenario scripts in ``tests/compat/node`` (run with
``subprocess.run``, each printing one JSON result line) produce, read, seek and administer topics.

kafkajs has no assign(): its consumer always joins a group, and Moldau has no groups yet. The reader
(``node/consume.js``) runs what that consumer runs underneath, with kafkajs's own classes: ListOffsets
to seek (earliest, latest, by timestamp), then Fetch v11 decoded by kafkajs's record decoder and codecs.
Snappy comes from ``kafkajs-snappy``, LZ4 and ZSTD from small codecs over ``lz4js`` and ``zstd-codec``
(see ``node/lib.js``); GZIP is kafkajs's own.

One broker (conftest's ``module_broker``) serves the module, every test on its own topics. When node
or ``tests/compat/node/node_modules`` is missing these tests fail and say how to install them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.compat.clients import (
    CODECS,
    Msg,
    check_compression,
    check_features,
    check_ordering,
    check_seeks,
    consume,
    create_topic,
    describe,
    no_new_tracebacks,
    node,
    produce,
    require_node,
    unique,
)
from tests.compat.conftest import BrokerProcess


@pytest.fixture
def broker(module_broker: BrokerProcess) -> Iterator[BrokerProcess]:
    require_node()  # fail, saying how to install, when node or node_modules is missing
    with no_new_tracebacks(module_broker):
        yield module_broker


def test_kafkajs_keys_null_keys_tombstones_headers_and_create_times_round_trip(broker: BrokerProcess) -> None:
    """kafkajs writes and reads back keys, a null key, a tombstone, an empty value, binary bytes, headers
    (repeated names kept, in order) and explicit create times unchanged, at offsets 0..n-1."""
    check_features("kafkajs", "kafkajs", broker.bootstrap)


@pytest.mark.parametrize("codec", CODECS)
def test_kafkajs_compressed_batches_are_stored_as_sent_and_read_back(codec: str, broker: BrokerProcess) -> None:
    """A batch kafkajs compresses (none, gzip, snappy, lz4, zstd) is stored with that codec (raw Fetch)
    and kafkajs decompresses what it reads back."""
    check_compression("kafkajs", "kafkajs", codec, broker.bootstrap, broker.host, broker.port)


@pytest.mark.parametrize("codec", CODECS[1:])
def test_kafkajs_reads_batches_compressed_by_kafka_python(codec: str, broker: BrokerProcess) -> None:
    """kafkajs's codecs decompress batches kafka-python compressed (xerial-framed snappy, LZ4 frames,
    zstd frames without a content size, gzip)."""
    check_compression("kafka-python", "kafkajs", codec, broker.bootstrap, broker.host, broker.port)


@pytest.mark.parametrize("codec", CODECS[1:])
def test_batches_compressed_by_kafkajs_are_read_by_aiokafka(codec: str, broker: BrokerProcess) -> None:
    """Batches kafkajs compressed (gzip, snappy, lz4, zstd) are decompressed by aiokafka."""
    check_compression("kafkajs", "aiokafka", codec, broker.bootstrap, broker.host, broker.port)


def test_kafkajs_records_keep_their_order_within_each_partition(broker: BrokerProcess) -> None:
    """Records kafkajs sends to three partitions, interleaved, come back per partition in send order."""
    check_ordering("kafkajs", broker.bootstrap)


def test_kafkajs_seek_to_earliest_offset_timestamp_and_latest(broker: BrokerProcess) -> None:
    """kafkajs's ListOffsets by timestamp finds the first record at or after it; reads start at
    earliest, at an offset, at a timestamp, and at latest only records produced afterwards come."""
    check_seeks("kafkajs", broker.bootstrap)


INTEROP = [("kafkajs", "confluent"), ("kafka-python", "kafkajs"), ("kafkajs", "aiokafka"), ("kcat", "kafkajs")]


@pytest.mark.parametrize(("producer", "consumer"), INTEROP, ids=[f"{p}-to-{c}" for p, c in INTEROP])
def test_records_cross_between_kafkajs_and_other_clients(producer: str, consumer: str,
                                                         broker: BrokerProcess) -> None:
    """Records written by kafkajs are read unchanged by librdkafka and aiokafka, and kafkajs reads
    what kafka-python and kcat wrote."""
    check_features(producer, consumer, broker.bootstrap)


def test_kafkajs_admin_creates_describes_alters_and_deletes_a_topic(broker: BrokerProcess) -> None:
    """kafkajs admin: createTopics (again: TOPIC_ALREADY_EXISTS, which kafkajs reports as false),
    fetchTopicMetadata, describeConfigs (override and default), alterConfigs, createPartitions,
    describeCluster and deleteTopics, as Kafka answers them."""
    topic = unique("admin-kafkajs")
    steps = node("admin.js", broker.bootstrap, topic)["steps"]
    assert steps["created"] is True, f"createTopics: {steps['created']}"
    assert steps["createdAgain"] is False, f"createTopics of an existing topic: {steps['createdAgain']}"
    assert steps["listedAfterCreate"] is True, "listTopics after createTopics does not list the topic"
    assert steps["partitionsAfterCreate"] == [{"partitionId": 0, "leader": 1, "replicas": [1]},
                                              {"partitionId": 1, "leader": 1, "replicas": [1]}], (
        f"fetchTopicMetadata after create: {steps['partitionsAfterCreate']}")
    created = steps["configsAfterCreate"]
    assert created["retention.ms"] == {"value": "3600000", "isDefault": False}, f"retention.ms: {created.get('retention.ms')}"
    assert created["cleanup.policy"] == {"value": "delete", "isDefault": True}, f"cleanup.policy: {created.get('cleanup.policy')}"
    assert steps["alterErrors"] == [0], f"alterConfigs error codes: {steps['alterErrors']}"
    assert steps["configsAfterAlter"] == {"retention.ms": {"value": "7200000", "isDefault": False},
                                          "cleanup.policy": {"value": "delete", "isDefault": True}}, (
        f"describeConfigs of two names after alterConfigs: {steps['configsAfterAlter']}")
    assert steps["partitionIdsAfterCreatePartitions"] == [0, 1, 2, 3], (
        f"partitions after createPartitions to 4: {steps['partitionIdsAfterCreatePartitions']}")
    host, port = broker.bootstrap.rsplit(":", 1)
    assert steps["cluster"]["brokers"] == [{"nodeId": 1, "host": host, "port": int(port)}]
    assert steps["cluster"]["controller"] == 1
    assert steps["cluster"]["clusterId"] == broker.ready["cluster_id"]
    assert steps["listedAfterDelete"] is False, "deleted topic still listed"


def test_kafkajs_delete_topic_records_moves_the_low_watermark(broker: BrokerProcess) -> None:
    """admin.deleteTopicRecords up to offset 4 moves the low watermark (ListOffsets earliest) to 4 and
    keeps the high watermark; a read from the earliest position starts at 4."""
    topic = unique("delete-records-kafkajs")
    produce("kafkajs", broker.bootstrap, topic, [Msg(f"k{i}".encode(), f"v{i}".encode()) for i in range(10)])
    result = node("delete_records.js", broker.bootstrap, topic, "4")
    before = {e["partition"]: (e["low"], e["high"]) for e in result["before"]}
    after = {e["partition"]: (e["low"], e["high"]) for e in result["after"]}
    assert before[0] == (0, 10), f"watermarks before: {before}"
    assert after[0] == (4, 10), f"watermarks after deleteTopicRecords: expected (4, 10), got {after[0]}"
    assert result["earliest"] == 4 and result["firstOffsetAfter"] == 4, (
        f"read from earliest after deleteTopicRecords: earliest {result['earliest']}, "
        f"first record at {result['firstOffsetAfter']}")


def test_kafkajs_offsets_answer_watermarks_and_timestamps(broker: BrokerProcess) -> None:
    """admin.fetchTopicOffsets gives low and high watermarks per partition; fetchTopicOffsetsByTimestamp
    the first offset at or after the timestamp."""
    topic = unique("offsets-kafkajs")
    create_topic(broker.bootstrap, topic, 3)
    msgs = [Msg(f"k{i}".encode(), f"v{i}".encode(), (), 1_600_000_000_000 + 100 * i, partition=i % 2)
            for i in range(8)]
    produce("confluent", broker.bootstrap, topic, msgs)
    result = node("offsets.js", broker.bootstrap, topic, "--timestamp", str(1_600_000_000_000 + 250))
    marks = sorted((e["partition"], e["low"], e["high"]) for e in result["offsets"])
    assert marks == [(0, 0, 4), (1, 0, 4), (2, 0, 0)], f"fetchTopicOffsets: {marks}"
    by_time = sorted((e["partition"], e["offset"]) for e in result["byTimestamp"])
    # Partition 0 holds timestamps +0, +200, +400, +600; partition 1 +100, +300, +500, +700.
    assert by_time == [(0, 2), (1, 1), (2, 0)], f"fetchTopicOffsetsByTimestamp(+250): {by_time}"
    got = consume("kafkajs", broker.bootstrap, topic, 4, partitions=(1,))
    assert [r.value for r in got] == [b"v1", b"v3", b"v5", b"v7"], f"partition 1:\n{describe(got)}"


# Issue 12, item 8: three members, six partitions, 20 records to each once the members cover them.
SHARE_PARTITIONS = 6
SHARE_PER_PARTITION = 20


@pytest.mark.parametrize("initial_delay_ms", [3000, 0])
def test_kafkajs_group_members_receive_every_record_produced_once_they_cover_the_partitions(
        initial_delay_ms: int, module_broker: BrokerProcess, start_broker: Callable[..., BrokerProcess]) -> None:
    """Three kafkajs consumers (fromBeginning, autoCommitThreshold 1, sessionTimeout 10000, heartbeat
    1000, maxWaitTimeInMs 500) in one group on six partitions: once their assignments cover the
    partitions, one acks=-1 send of 20 records per partition reaches the members, every record at
    least once, each partition's records to the member that owns it (with
    ``group.initial.rebalance.delay.ms`` 3000, the default, and 0)."""
    require_node()
    broker = module_broker if initial_delay_ms == 3000 else start_broker(
        "--set", f"group.initial.rebalance.delay.ms={initial_delay_ms}")
    topic, group = unique("group-share-kafkajs"), unique("group-share-kafkajs-g")
    with no_new_tracebacks(broker):
        result = node("group_share.js", broker.bootstrap, topic, group, "--partitions", str(SHARE_PARTITIONS),
                      "--per-partition", str(SHARE_PER_PARTITION), "--timeout-ms", "30000", timeout=60.0)
    members = result["members"]
    summary = "\n".join(
        f"  member {m['member']}: joins {[j['assignment'] for j in m['joins']]}, {len(m['records'])} records, "
        f"crashes {m['crashes']}" for m in members)
    expected = {(p, o) for p in range(SHARE_PARTITIONS) for o in range(SHARE_PER_PARTITION)}
    got = {(p, o) for m in members for p, o, _ in m["records"]}
    missing = sorted(expected - got)
    assert not missing, f"{len(missing)} of {len(expected)} records never reached a member: {missing}\n{summary}"
    assert got == expected, f"records outside what was produced: {sorted(got - expected)}\n{summary}"
    for m in members:
        assert not m["crashes"], f"member {m['member']} crashed: {m['crashes']}\n{summary}"
        for p, o, value in m["records"]:
            assert value == f"p{p}-{o}", f"member {m['member']} got {value!r} at {p}/{o}\n{summary}"
