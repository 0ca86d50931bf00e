"""ListOffsets, DeleteRecords and OffsetForLeaderEpoch against the real broker, through confluent-kafka,
kafka-python and raw requests. Records are produced with raw Produce requests (explicit timestamps) so
offsets and times are known exactly; nothing here consumes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from protocol import messages
from protocol.errors import ErrorCode
from protocol.records import Record, build_batch
from tests.compat.conftest import BrokerProcess, KafkaSocket
from tests.compat.test_produce import Client as ProduceClient

DELETE_RECORDS, OFFSET_FOR_LEADER_EPOCH = 21, 23
TIMEOUT_S = 10.0
BASE_TS = 1_600_000_000_000

RawSocket = Callable[[BrokerProcess], KafkaSocket]
_DR = messages.DeleteRecordsRequest
_OFLE = messages.OffsetForLeaderEpochRequest


def _topic(prefix: str = "offsets") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Client(ProduceClient):
    """The produce tests' raw client, plus timed produces, DeleteRecords and OffsetForLeaderEpoch."""

    def produce_at(self, topic: str, timestamps: list[int], partition: int = 0) -> int:
        """One batch whose records carry ``timestamps``; returns its base offset."""
        records = [Record(i, ts, b"k%d" % i, b"v%d" % i) for i, ts in enumerate(timestamps)]
        result = self.produce(topic, build_batch(records), partition, acks=-1)
        assert result.error_code == 0, result
        return result.base_offset

    def delete_records(self, topic: str, offset: int, partition: int = 0, version: int = 2) -> Any:
        response = self.call(DELETE_RECORDS, version, _DR(timeout_ms=5000, topics=[
            _DR.DeleteRecordsTopic(name=topic, partitions=[
                _DR.DeleteRecordsPartition(partition_index=partition, offset=offset)])]))
        return response.topics[0].partitions[0]

    def epoch_end(self, topic: str, leader_epoch: int, current_leader_epoch: int = -1, version: int = 4,
                  partition: int = 0) -> Any:
        response = self.call(OFFSET_FOR_LEADER_EPOCH, version, _OFLE(replica_id=-1, topics=[
            _OFLE.OffsetForLeaderTopic(topic=topic, partitions=[_OFLE.OffsetForLeaderPartition(
                partition=partition, current_leader_epoch=current_leader_epoch, leader_epoch=leader_epoch)])]))
        return response.topics[0].partitions[0]


@pytest.fixture
def client(broker: BrokerProcess, raw_socket: RawSocket) -> Client:
    return Client(raw_socket(broker))


def _filled_topic(client: Client) -> str:
    """A topic holding offsets 0-5 with timestamps BASE_TS + 0, 10, 20, 50, 40, 30 seconds."""
    topic = _topic()
    client.create(topic)
    client.produce_at(topic, [BASE_TS, BASE_TS + 10_000, BASE_TS + 20_000])
    client.produce_at(topic, [BASE_TS + 50_000, BASE_TS + 40_000, BASE_TS + 30_000])
    return topic


# ------------------------------------------------------------------ ListOffsets


def test_list_offsets_earliest_latest_and_by_timestamp(client: Client) -> None:
    """-2 is the log start offset, -1 the high watermark (timestamp -1, leader epoch 0 in v4+), a timestamp
    the first offset whose record time is at or after it, and no match is offset -1, timestamp -1."""
    topic = _filled_topic(client)
    earliest = client.list_offset(topic, -2, version=4)
    latest = client.list_offset(topic, -1, version=4)
    exact = client.list_offset(topic, BASE_TS + 10_000)
    between = client.list_offset(topic, BASE_TS + 35_000)
    after_all = client.list_offset(topic, BASE_TS + 60_000)
    assert (earliest.error_code, earliest.offset, earliest.timestamp, earliest.leader_epoch) == (0, 0, -1, 0)
    assert (latest.error_code, latest.offset, latest.timestamp, latest.leader_epoch) == (0, 6, -1, 0)
    assert (exact.offset, exact.timestamp, exact.leader_epoch) == (1, BASE_TS + 10_000, 0)
    assert (between.offset, between.timestamp) == (3, BASE_TS + 50_000)
    assert (after_all.error_code, after_all.offset, after_all.timestamp, after_all.leader_epoch) == (0, -1, -1, -1)


@pytest.mark.parametrize("version", range(1, 11))
def test_list_offsets_every_version_answers(client: Client, version: int) -> None:
    """Every served version (v1-10) answers earliest, latest and by-timestamp lookups; the leader epoch
    (a v4+ field) is reported from v4 and left out before."""
    topic = _filled_topic(client)
    for timestamp, offset in ((-2, 0), (-1, 6), (BASE_TS + 10_000, 1)):
        result = client.list_offset(topic, timestamp, version=version)
        assert (result.error_code, result.offset) == (0, offset), (version, timestamp, result)
        assert result.leader_epoch == (0 if version >= 4 else -1)


def test_list_offsets_max_timestamp_earliest_local_and_latest_tiered(client: Client) -> None:
    """-3 (v7+) finds the record with the largest timestamp; -4 (v8+) is the log start offset without
    tiered storage; -5 (v9+) answers offset -1, timestamp -1, leader epoch -1 with tiered storage off."""
    topic = _filled_topic(client)
    newest = client.list_offset(topic, -3, version=7)
    local = client.list_offset(topic, -4, version=8)
    tiered = client.list_offset(topic, -5, version=9)
    assert (newest.offset, newest.timestamp, newest.leader_epoch) == (3, BASE_TS + 50_000, 0)
    assert (local.offset, local.timestamp) == (0, -1)
    assert (tiered.error_code, tiered.offset, tiered.timestamp, tiered.leader_epoch) == (0, -1, -1, -1)


def test_list_offsets_on_an_empty_partition(client: Client) -> None:
    """An empty log: earliest and latest are 0, max timestamp and lookups by time find nothing (-1)."""
    topic = _topic()
    client.create(topic)
    assert client.list_offset(topic, -2).offset == 0
    assert client.list_offset(topic, -1).offset == 0
    assert (client.list_offset(topic, -3).offset, client.list_offset(topic, -3).timestamp) == (-1, -1)
    assert client.list_offset(topic, 0).offset == -1


def test_list_offsets_read_committed_and_follower_see_the_high_watermark(client: Client) -> None:
    """read_committed consumers get the last stable offset (the high watermark without transactions);
    replica ids other than -1 get the log end offset, the same on one node."""
    topic = _filled_topic(client)
    assert client.list_offset(topic, -1, version=5, isolation_level=1).offset == 6
    assert client.list_offset(topic, -1, version=5, replica_id=-2).offset == 6


def test_list_offsets_v0_old_style_offsets(client: Client) -> None:
    """v0 answers old_style_offsets: latest -> [log end, log start], earliest -> [log start], capped by
    max_num_offsets, descending; a time before every record -> []."""
    topic = _filled_topic(client)
    assert client.list_offset(topic, -1, version=0, max_num_offsets=10).old_style_offsets == [6, 0]
    assert client.list_offset(topic, -1, version=0, max_num_offsets=1).old_style_offsets == [6]
    assert client.list_offset(topic, -2, version=0, max_num_offsets=10).old_style_offsets == [0]
    assert client.list_offset(topic, BASE_TS - 1, version=0, max_num_offsets=10).old_style_offsets == []
    assert client.list_offset(topic, int(time.time() * 1000) + 60_000, version=0,
                              max_num_offsets=10).old_style_offsets == [6, 0]


def test_list_offsets_unknown_topic_and_partition(client: Client) -> None:
    """A topic or partition this broker does not host: UNKNOWN_TOPIC_OR_PARTITION, offset -1."""
    topic = _topic()
    client.create(topic)
    missing_topic, missing_partition = client.list_offsets([(_topic("missing"), 0, -1), (topic, 5, -1)])
    for result in (missing_topic, missing_partition):
        assert (result.error_code, result.offset, result.timestamp) == (
            int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION), -1, -1)


def test_list_offsets_duplicate_partitions_are_invalid_request(client: Client) -> None:
    """A partition named twice in one request (v1+) answers INVALID_REQUEST for each mention; other
    partitions are answered normally."""
    topic = _filled_topic(client)
    other = _topic()
    client.create(other)
    results = client.list_offsets([(topic, 0, -1), (topic, 0, -2), (other, 0, -1)])
    assert [r.error_code for r in results] == [int(ErrorCode.INVALID_REQUEST)] * 2 + [0]


@pytest.mark.parametrize(("epoch", "code"), [(0, ErrorCode.NONE), (-1, ErrorCode.NONE),
                                             (1, ErrorCode.UNKNOWN_LEADER_EPOCH),
                                             (-5, ErrorCode.FENCED_LEADER_EPOCH)])
def test_list_offsets_current_leader_epoch_fencing(client: Client, epoch: int, code: ErrorCode) -> None:
    """v4+: a current_leader_epoch newer than the partition's (0) -> UNKNOWN_LEADER_EPOCH, older ->
    FENCED_LEADER_EPOCH; -1 (not given) or equal passes. Only -1 means "not given", so -5 is older."""
    topic = _filled_topic(client)
    result = client.list_offset(topic, -1, version=4, current_leader_epoch=epoch)
    assert result.error_code == int(code)
    assert result.offset == (6 if code is ErrorCode.NONE else -1)


def test_confluent_watermarks_and_offsets_for_times(broker: BrokerProcess, client: Client) -> None:
    """librdkafka's get_watermark_offsets and offsets_for_times read ListOffsets earliest, latest and by
    timestamp."""
    from confluent_kafka import Consumer, TopicPartition

    topic = _filled_topic(client)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": _topic("group"),
                         "enable.auto.commit": False})
    try:
        assert consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=TIMEOUT_S) == (0, 6)
        found = consumer.offsets_for_times(
            [TopicPartition(topic, 0, BASE_TS + 25_000)], timeout=TIMEOUT_S)
        assert [(tp.offset, tp.error) for tp in found] == [(3, None)]
        none = consumer.offsets_for_times([TopicPartition(topic, 0, BASE_TS + 99_000)], timeout=TIMEOUT_S)
        assert none[0].offset == -1
    finally:
        consumer.close()


def test_kafka_python_offsets_for_times_beginning_and_end_offsets(broker: BrokerProcess, client: Client) -> None:
    """kafka-python's KafkaConsumer.beginning_offsets, end_offsets and offsets_for_times use ListOffsets."""
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    topic = _filled_topic(client)
    tp = TopicPartition(topic, 0)
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, request_timeout_ms=int(TIMEOUT_S * 1000))
    try:
        assert consumer.beginning_offsets([tp], timeout_ms=TIMEOUT_S * 1000) == {tp: 0}
        assert consumer.end_offsets([tp], timeout_ms=TIMEOUT_S * 1000) == {tp: 6}
        found = consumer.offsets_for_times({tp: BASE_TS + 15_000}, timeout_ms=TIMEOUT_S * 1000)[tp]
        assert (found.offset, found.timestamp) == (2, BASE_TS + 20_000)
        assert consumer.offsets_for_times({tp: BASE_TS + 99_000}, timeout_ms=TIMEOUT_S * 1000)[tp] is None
    finally:
        consumer.close()


# ------------------------------------------------------------------ DeleteRecords


def test_confluent_delete_records_moves_the_low_watermark(broker: BrokerProcess, client: Client) -> None:
    """AdminClient.delete_records advances the log start offset; watermarks and ListOffsets earliest
    then report it, and later produces continue at the log end."""
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    topic = _filled_topic(client)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    futures = admin.delete_records([TopicPartition(topic, 0, 4)], request_timeout=TIMEOUT_S)
    result = futures[TopicPartition(topic, 0, 4)].result(timeout=TIMEOUT_S)
    assert result.low_watermark == 4
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": _topic("group")})
    try:
        assert consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=TIMEOUT_S) == (4, 6)
    finally:
        consumer.close()
    assert client.list_offset(topic, -2).offset == 4
    # A lookup by time no longer finds deleted records.
    assert client.list_offset(topic, BASE_TS).offset == 4
    assert client.produce_at(topic, [BASE_TS]) == 6


def test_delete_records_high_watermark_sentinel_and_no_op(client: Client) -> None:
    """Offset -1 deletes up to the high watermark; an offset below the log start changes nothing and
    answers the current low watermark."""
    topic = _filled_topic(client)
    assert (client.delete_records(topic, -1).error_code, client.delete_records(topic, -1).low_watermark) == (0, 6)
    again = client.delete_records(topic, 2, version=0)
    assert (again.error_code, again.low_watermark) == (0, 6)
    assert client.list_offset(topic, -2).offset == 6
    assert client.list_offset(topic, -3).offset == -1


@pytest.mark.parametrize("offset", [7, 1000, -2])
def test_delete_records_outside_the_log_is_offset_out_of_range(client: Client, offset: int) -> None:
    """An offset beyond the high watermark, or negative other than -1: OFFSET_OUT_OF_RANGE, low
    watermark -1, and the log is unchanged."""
    topic = _filled_topic(client)
    result = client.delete_records(topic, offset)
    assert (result.error_code, result.low_watermark) == (int(ErrorCode.OFFSET_OUT_OF_RANGE), -1)
    assert client.list_offset(topic, -2).offset == 0


def test_delete_records_unknown_topic(client: Client) -> None:
    """A topic this broker does not host: UNKNOWN_TOPIC_OR_PARTITION, low watermark -1."""
    result = client.delete_records(_topic("missing"), 0)
    assert (result.error_code, result.low_watermark) == (int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION), -1)


def test_delete_records_on_compact_only_topic_is_policy_violation(
        start_broker: Callable[..., BrokerProcess], raw_socket: RawSocket) -> None:
    """Topics whose cleanup.policy lacks delete refuse DeleteRecords with POLICY_VIOLATION."""
    broker = start_broker("--set", "log.cleanup.policy=compact")
    client = Client(raw_socket(broker))
    topic = _filled_topic(client)
    result = client.delete_records(topic, 2)
    assert (result.error_code, result.low_watermark) == (int(ErrorCode.POLICY_VIOLATION), -1)
    assert client.list_offset(topic, -2).offset == 0


# ------------------------------------------------------------------ OffsetForLeaderEpoch


def test_offset_for_leader_epoch_current_epoch_is_log_end(client: Client) -> None:
    """The current leader epoch (0) ends at the log end offset."""
    topic = _filled_topic(client)
    result = client.epoch_end(topic, 0)
    assert (result.error_code, result.leader_epoch, result.end_offset) == (0, 0, 6)
    v0 = client.epoch_end(topic, 0, version=0)
    assert (v0.error_code, v0.end_offset) == (0, 6)


@pytest.mark.parametrize("requested", [-1, 1, 7])
def test_offset_for_leader_epoch_unknown_epochs_are_undefined(client: Client, requested: int) -> None:
    """The undefined epoch (-1) and epochs newer than the partition's answer leader epoch -1, end offset -1,
    without an error (LeaderEpochFileCache.endOffsetFor)."""
    topic = _filled_topic(client)
    result = client.epoch_end(topic, requested)
    assert (result.error_code, result.leader_epoch, result.end_offset) == (0, -1, -1)


def test_offset_for_leader_epoch_after_delete_records(client: Client) -> None:
    """The epoch still ends at the log end after records were deleted from its start; an epoch older than
    every known one answers itself and the start offset of the first known epoch (the log start offset)."""
    topic = _filled_topic(client)
    assert client.delete_records(topic, 3).low_watermark == 3
    result = client.epoch_end(topic, 0)
    assert (result.leader_epoch, result.end_offset) == (0, 6)
    older = client.epoch_end(topic, -3)
    assert (older.error_code, older.leader_epoch, older.end_offset) == (0, -3, 3)


def test_offset_for_leader_epoch_fencing_and_unknown_partition(client: Client) -> None:
    """v2+: a current_leader_epoch newer than the partition's -> UNKNOWN_LEADER_EPOCH; a missing
    partition -> UNKNOWN_TOPIC_OR_PARTITION."""
    topic = _filled_topic(client)
    assert client.epoch_end(topic, 0, current_leader_epoch=3).error_code == int(ErrorCode.UNKNOWN_LEADER_EPOCH)
    assert client.epoch_end(topic, 0, current_leader_epoch=-4).error_code == int(ErrorCode.FENCED_LEADER_EPOCH)
    assert client.epoch_end(topic, 0, current_leader_epoch=0).end_offset == 6
    missing = client.epoch_end(topic, 0, partition=9)
    assert (missing.error_code, missing.end_offset) == (int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION), -1)
