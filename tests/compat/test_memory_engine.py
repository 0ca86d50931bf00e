"""The ``--memory`` broker gives memory back: deleted topics, retention and DeleteRecords free their
batches, and ``memory.max.bytes`` refuses appends with KAFKA_STORAGE_ERROR (retriable in Kafka clients)
rather than growing until the process is killed.

Memory is the broker process's resident set (``VmRSS`` in ``/proc/PID/status``). Requests are raw
(this module's own topics, one connection each), so the figures are the broker's alone.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from protocol import messages
from protocol.errors import ErrorCode
from protocol.records import Record, build_batch
from tests.compat.conftest import BrokerProcess, KafkaSocket
from tests.compat.test_produce import Client
from tests.compat.test_retention import wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status")

OFFSET_COMMIT, CREATE_TOPICS, DELETE_TOPICS, DELETE_RECORDS = 8, 19, 20, 21
EARLIEST, LATEST = -2, -1
MIB = 1 << 20
VALUE_BYTES = 900_000  # one record per batch, under message.max.bytes
ROUND_BYTES = 64 * MIB
ROUNDS = 4
PARTITIONS = 3
SETTLE_S = 10.0  # for the broker to be where a test expects it

RawSocket = Callable[[BrokerProcess], KafkaSocket]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def rss(broker: BrokerProcess) -> int:
    """The broker's resident set size in bytes."""
    with open(f"/proc/{broker.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line in /proc/PID/status")


def big_batch(timestamp: int | None = None) -> bytearray:
    ts = int(time.time() * 1000) if timestamp is None else timestamp
    return build_batch([Record(0, ts, b"k", os.urandom(VALUE_BYTES))])


def create(client: Client, topic: str, partitions: int = 1, **configs: str) -> None:
    req = messages.CreateTopicsRequest
    response = client.call(CREATE_TOPICS, 7, req(timeout_ms=5000, topics=[req.CreatableTopic(
        name=topic, num_partitions=partitions, replication_factor=1,
        configs=[req.CreatableTopicConfig(name=k.replace("_", "."), value=v) for k, v in configs.items()])]))
    assert response.topics[0].error_code == 0, response.topics[0]


def delete(client: Client, topic: str) -> None:
    response = client.call(DELETE_TOPICS, 4, messages.DeleteTopicsRequest(topic_names=[topic], timeout_ms=5000))
    assert response.responses[0].error_code == 0, response.responses[0]


def delete_records(client: Client, topic: str, offset: int) -> Any:
    req = messages.DeleteRecordsRequest
    response = client.call(DELETE_RECORDS, 2, req(timeout_ms=5000, topics=[req.DeleteRecordsTopic(
        name=topic, partitions=[req.DeleteRecordsPartition(partition_index=0, offset=offset)])]))
    return response.topics[0].partitions[0]


def fill(client: Client, topic: str, total: int, partitions: int = 1, **batch: Any) -> None:
    """Produce ~``total`` bytes of big one-record batches, round robin over the partitions."""
    for n in range(-(-total // VALUE_BYTES)):
        result = client.produce(topic, big_batch(**batch), partition=n % partitions)
        assert result.error_code == 0, f"produce {n} to {topic}: {result}"


def offsets(client: Client, topic: str) -> tuple[int, int]:
    return client.list_offset(topic, EARLIEST).offset, client.list_offset(topic, LATEST).offset


def test_deleted_topics_give_their_memory_back(broker: BrokerProcess, raw_socket: RawSocket) -> None:
    """Create a 3-partition topic, produce 64 MiB, delete it, four times: the broker ends every round
    within half a round of where the first ended (it used to keep every deleted topic's batches)."""
    client = Client(raw_socket(broker))
    start = rss(broker)
    after_delete: list[int] = []

    def within_half_a_round() -> tuple[bool, str]:
        now, bound = rss(broker), after_delete[0] + ROUND_BYTES // 2
        return now <= bound, (f"RSS {now // MIB} MiB after round {len(after_delete) + 1}, bound {bound // MIB} "
                              f"MiB; after earlier rounds: {[r // MIB for r in after_delete]} MiB (start "
                              f"{start // MIB} MiB)")

    for n in range(ROUNDS):
        topic = unique("rss")
        create(client, topic, PARTITIONS)
        fill(client, topic, ROUND_BYTES, PARTITIONS)
        if n == 0:
            assert rss(broker) - start >= ROUND_BYTES // 2, "the produced batches did not show in the RSS"
        delete(client, topic)
        if after_delete:
            wait_for(within_half_a_round, SETTLE_S)
        after_delete.append(rss(broker))


def test_an_append_past_memory_max_bytes_is_a_retriable_storage_error(
        start_broker: Callable[..., BrokerProcess], raw_socket: RawSocket) -> None:
    """With memory.max.bytes, an append that would pass it answers KAFKA_STORAGE_ERROR for that partition
    with a message naming the setting; DeleteRecords and topic deletion make room again."""
    limit = 3 * MIB
    broker = start_broker("--set", f"memory.max.bytes={limit}")
    client = Client(raw_socket(broker))
    topic, other = unique("bounded"), unique("bounded-other")
    create(client, topic)
    create(client, other)
    fill(client, topic, 2 * VALUE_BYTES)
    fill(client, other, VALUE_BYTES)  # the bound counts every partition together: 3 batches < 3 MiB
    refused = client.produce(topic, big_batch())
    assert refused.error_code == ErrorCode.KAFKA_STORAGE_ERROR, refused
    assert refused.base_offset == -1
    assert f"memory.max.bytes={limit}" in refused.error_message, refused.error_message
    assert offsets(client, topic) == (0, 2), "the refused batch was appended"

    assert delete_records(client, topic, LATEST).error_code == 0  # frees both batches of the topic
    assert [client.produce(topic, big_batch()).base_offset for _ in range(2)] == [2, 3]
    assert client.produce(topic, big_batch()).error_code == ErrorCode.KAFKA_STORAGE_ERROR
    delete(client, other)
    assert client.produce(topic, big_batch()).base_offset == 4
    broker.wait_for_log(lambda r: r.get("event") == "produce.rejected" and r.get("error") == "KAFKA_STORAGE_ERROR",
                        what="produce.rejected with KAFKA_STORAGE_ERROR")


def test_memory_broker_honours_retention_ms_and_retention_bytes(
        start_broker: Callable[..., BrokerProcess], raw_socket: RawSocket) -> None:
    """The retention check (every log.retention.check.interval.ms) drops batches older than retention.ms
    (by their largest timestamp) and the oldest ones beyond retention.bytes, moving the log start offset
    as Kafka does by whole segments (each batch is one here)."""
    broker = start_broker("--set", "log.retention.check.interval.ms=200")
    client = Client(raw_socket(broker))
    by_time, by_size = unique("retention-ms"), unique("retention-bytes")
    create(client, by_time, retention_ms="60000")
    create(client, by_size, retention_bytes=str(2 * VALUE_BYTES))
    hour_ago = int(time.time() * 1000) - 3_600_000
    fill(client, by_time, 3 * VALUE_BYTES, timestamp=hour_ago)
    fill(client, by_size, 5 * VALUE_BYTES)
    wait_for(lambda: (offsets(client, by_time) == (3, 3) and offsets(client, by_size) == (3, 5),
                      (f"{by_time} (earliest, latest) {offsets(client, by_time)}, expected (3, 3); "
                       f"{by_size} {offsets(client, by_size)}, expected (3, 5)")), SETTLE_S)


def test_confluent_producer_retries_past_a_full_memory_broker_and_delivers_once_room_is_made(
        start_broker: Callable[..., BrokerProcess], raw_socket: RawSocket) -> None:
    """KAFKA_STORAGE_ERROR is retriable for Kafka clients: librdkafka keeps retrying the refused batch and
    delivers it, exactly once, when DeleteRecords frees room."""
    from confluent_kafka import Producer

    from tests.compat.test_durability import CONFLUENT_FAST

    broker = start_broker("--set", f"memory.max.bytes={2 * MIB}")
    client = Client(raw_socket(broker))
    topic = unique("full")
    create(client, topic)
    fill(client, topic, 2 * VALUE_BYTES)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 0,
                         "enable.idempotence": True, "message.timeout.ms": 30_000, **CONFLUENT_FAST})
    reports: list[Any] = []
    producer.produce(topic, os.urandom(VALUE_BYTES), partition=0,
                     on_delivery=lambda err, msg: reports.append((err, msg.offset())))
    deadline = time.monotonic() + SETTLE_S
    while not any(r.get("event") == "produce.rejected" and r.get("error") == "KAFKA_STORAGE_ERROR"
                  for r in broker.records):
        assert time.monotonic() < deadline, "the broker never refused the confluent producer's batch"
        producer.poll(0.05)
    assert reports == [], f"the refused batch was reported before room was made: {reports}"
    assert delete_records(client, topic, LATEST).error_code == 0
    assert producer.flush(SETTLE_S) == 0, "the retried batch was not delivered after DeleteRecords"
    assert reports == [(None, 2)]
    assert offsets(client, topic) == (2, 3)


def test_offset_commits_into_a_full_memory_broker_are_coordinator_not_available(
        start_broker: Callable[..., BrokerProcess], raw_socket: RawSocket) -> None:
    """__consumer_offsets appends go through the same bound: a commit that does not fit answers
    COORDINATOR_NOT_AVAILABLE (retriable; the broker keeps serving) and works again once room is made."""
    broker = start_broker("--set", f"memory.max.bytes={len(big_batch()) + 10}")  # room for one big batch
    client = Client(raw_socket(broker))
    topic, group = unique("offsets-full"), unique("group")
    create(client, topic)
    fill(client, topic, VALUE_BYTES)
    req = messages.OffsetCommitRequest

    def commit(offset: int) -> int:
        response = client.call(OFFSET_COMMIT, 8, req(
            group_id=group, generation_id_or_member_epoch=-1, member_id="", group_instance_id=None,
            topics=[req.OffsetCommitRequestTopic(name=topic, partitions=[req.OffsetCommitRequestPartition(
                partition_index=0, committed_offset=offset, committed_leader_epoch=-1,
                committed_metadata="")])]))
        return response.topics[0].partitions[0].error_code

    assert commit(1) == ErrorCode.COORDINATOR_NOT_AVAILABLE
    assert delete_records(client, topic, LATEST).error_code == 0
    assert commit(1) == ErrorCode.NONE
