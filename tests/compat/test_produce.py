"""Produce and InitProducerId against the real broker: Kafka's error codes for bad batches, idempotent
producers, LogAppendTime, and real clients (confluent-kafka, kafka-python, aiokafka) producing.

Raw-socket tests build batches with ``protocol.records.build_batch``, check the error code and message
of a bad partition, then produce a good batch and read ListOffsets "latest" to show nothing was lost or
appended by the rejected request. Fetch is not used; results are read through ListOffsets and client
delivery reports.
"""

from __future__ import annotations

import asyncio
import struct
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from protocol import codec, messages
from protocol.errors import ErrorCode
from protocol.records import Compression, Record, TimestampType, build_batch, write_crc
from tests.compat.conftest import BrokerProcess, KafkaSocket

PRODUCE, LIST_OFFSETS, METADATA, DELETE_RECORDS, INIT_PRODUCER_ID, ADD_PARTITIONS_TO_TXN = 0, 2, 3, 21, 22, 24
PRODUCE_VERSION = 9
DELIVERY_TIMEOUT_S = 20.0
FIRST_PRODUCER_ID = 1000

RawSocket = Callable[[BrokerProcess], KafkaSocket]
_PRODUCE = messages.ProduceRequest


def _topic(prefix: str = "produce") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _records(n: int = 3, ts: int | None = None, keyed: bool = True) -> list[Record]:
    now = int(time.time() * 1000) if ts is None else ts
    return [Record(i, now + i, (b"key-%d" % i) if keyed else None, b"value-%d" % i, (("h", b"1"),))
            for i in range(n)]


def _batch(n: int = 3, **kwargs: Any) -> bytearray:
    return build_batch(_records(n), **kwargs)


class Client:
    """A raw connection with numbered requests and the few calls these tests need."""

    def __init__(self, sock: KafkaSocket) -> None:
        self.sock = sock
        self.correlation_id = 0

    def call(self, api_key: int, version: int, body: Any) -> Any:
        self.correlation_id += 1
        return self.sock.request(api_key, version, self.correlation_id, body)

    def create(self, topic: str, partitions_expected: int = 1) -> None:
        """Auto-create ``topic`` through Metadata (the way clients get topics created)."""
        response = self.call(METADATA, 9, messages.MetadataRequest(
            topics=[messages.MetadataRequest.MetadataRequestTopic(name=topic)], allow_auto_topic_creation=True))
        assert response.topics[0].error_code == 0, response
        assert len(response.topics[0].partitions) == partitions_expected

    @staticmethod
    def produce_request(topic: str, records: Any, partition: int = 0, acks: int = 1,
                        transactional_id: str | None = None) -> Any:
        return _PRODUCE(transactional_id=transactional_id, acks=acks, timeout_ms=5000, topic_data=[
            _PRODUCE.TopicProduceData(name=topic, partition_data=[
                _PRODUCE.PartitionProduceData(index=partition, records=None if records is None else bytes(records))])])

    def produce(self, topic: str, records: Any, partition: int = 0, version: int = PRODUCE_VERSION,
                acks: int = 1, transactional_id: str | None = None) -> Any:
        response = self.call(PRODUCE, version, self.produce_request(topic, records, partition, acks,
                                                                    transactional_id))
        assert [t.name for t in response.responses] == [topic]
        (result,) = response.responses[0].partition_responses
        assert result.index == partition
        return result

    def latest(self, topic: str, partition: int = 0) -> int:
        (result,) = self.list_offsets([(topic, partition, -1)])
        return result.offset

    def list_offsets(self, partitions: list[tuple[str, int, int]], version: int = 7, isolation_level: int = 0,
                     replica_id: int = -1, current_leader_epoch: int = -1, max_num_offsets: int = 1) -> list[Any]:
        """ListOffsets for (topic, partition, timestamp) triples, answers in request order."""
        lo = messages.ListOffsetsRequest
        by_topic: dict[str, list[Any]] = {}
        for topic, partition, timestamp in partitions:
            by_topic.setdefault(topic, []).append(lo.ListOffsetsPartition(
                partition_index=partition, timestamp=timestamp, current_leader_epoch=current_leader_epoch,
                max_num_offsets=max_num_offsets))
        response = self.call(LIST_OFFSETS, version, lo(
            replica_id=replica_id, isolation_level=isolation_level,
            topics=[lo.ListOffsetsTopic(name=t, partitions=ps) for t, ps in by_topic.items()]))
        return [p for t in response.topics for p in t.partitions]

    def list_offset(self, topic: str, timestamp: int, version: int = 7, **kwargs: Any) -> Any:
        (result,) = self.list_offsets([(topic, 0, timestamp)], version, **kwargs)
        return result


def _client(broker: BrokerProcess, raw_socket: RawSocket) -> Client:
    return Client(raw_socket(broker))


def _assert_error(result: Any, code: ErrorCode, *fragments: str) -> None:
    assert result.error_code == int(code), (
        f"expected {code.name}, got {ErrorCode.from_code(result.error_code).name}: {result.error_message}")
    assert result.base_offset == -1
    for fragment in fragments:
        assert fragment in (result.error_message or ""), f"{fragment!r} not in {result.error_message!r}"


def _assert_nothing_lost(client: Client, topic: str, expected_end: int, partition: int = 0) -> None:
    """A good batch still appends at ``expected_end``, and ListOffsets latest shows exactly its records."""
    assert client.latest(topic, partition) == expected_end
    good = client.produce(topic, _batch(2), partition)
    assert good.error_code == 0, good
    assert good.base_offset == expected_end
    assert client.latest(topic, partition) == expected_end + 2


# ------------------------------------------------------------------ topic and version errors


def test_produce_to_unknown_topic_is_unknown_topic_or_partition_and_does_not_create_it(
        broker: BrokerProcess, raw_socket: RawSocket) -> None:
    """Kafka 4 never auto-creates on Produce: a missing topic answers UNKNOWN_TOPIC_OR_PARTITION."""
    client = _client(broker, raw_socket)
    topic = _topic()
    result = client.produce(topic, _batch())
    _assert_error(result, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "does not host topic", "create it first")
    assert result.log_start_offset == -1
    metadata = client.call(METADATA, 9, messages.MetadataRequest(
        topics=[messages.MetadataRequest.MetadataRequestTopic(name=topic)], allow_auto_topic_creation=False))
    assert metadata.topics[0].error_code == int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)


def test_produce_to_missing_partition_is_unknown_topic_or_partition(
        broker: BrokerProcess, raw_socket: RawSocket) -> None:
    """A partition index the topic does not have answers UNKNOWN_TOPIC_OR_PARTITION."""
    client = _client(broker, raw_socket)
    topic = _topic()
    client.create(topic)
    _assert_error(client.produce(topic, _batch(), partition=3), ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                  "partition 3 does not exist")
    _assert_nothing_lost(client, topic, 0)


def test_legacy_produce_versions_close_the_connection(broker: BrokerProcess, raw_socket: RawSocket) -> None:
    """Produce v0-2 are advertised for old librdkafka (KAFKA-18659) but refused as Kafka 4 refuses them:
    the connection is closed with a log line, and nothing is appended."""
    topic = _topic()
    _client(broker, raw_socket).create(topic)
    legacy = bytes.fromhex("0000000000000000" "00000012" "6b2f8a4d" "01" "00" "0000000000000000" "ffffffff"
                           "00000000")
    for version in (0, 1, 2):
        client = _client(broker, raw_socket)
        client.sock.send(codec.encode_request(PRODUCE, version, 7, "legacy",
                                              client.produce_request(topic, legacy, acks=-1)))
        assert client.sock.is_closed_by_peer(), f"Produce v{version} did not close the connection"
        broker.wait_for_log(lambda r, v=version: r.get("event") == "request.closing_connection"
                            and r.get("api_version") == v, what=f"the closing_connection line for Produce v{version}")
    _assert_nothing_lost(_client(broker, raw_socket), topic, 0)


# ------------------------------------------------------------------ batch validation


def _with_crc(data: bytearray) -> bytearray:
    write_crc(data, 0)
    return data


def _patched(data: bytearray, fmt: str, offset: int, value: int, crc: bool = True) -> bytearray:
    struct.pack_into(fmt, data, offset, value)
    return _with_crc(data) if crc else data


def _flip_last_byte(data: bytearray) -> bytearray:
    data[-1] ^= 0xFF
    return data


def _set_magic(data: bytearray, magic: int) -> bytearray:
    data[16] = magic
    return data


BAD_BATCHES: list[tuple[str, Callable[[], bytes | bytearray], int, ErrorCode, str]] = [
    ("crc-mismatch", lambda: _flip_last_byte(_batch()), PRODUCE_VERSION, ErrorCode.CORRUPT_MESSAGE,
     "Record is corrupt (stored crc ="),
    ("truncated", lambda: _batch()[:-7], PRODUCE_VERSION, ErrorCode.INVALID_RECORD,
     "must have at least one record batch per partition"),
    ("empty", lambda: b"", PRODUCE_VERSION, ErrorCode.INVALID_RECORD,
     "must have at least one record batch per partition"),
    ("legacy-magic", lambda: _set_magic(_batch(), 1), PRODUCE_VERSION, ErrorCode.INVALID_RECORD,
     "magic version 2"),
    ("unknown-magic", lambda: _set_magic(_batch(), 9), PRODUCE_VERSION, ErrorCode.CORRUPT_MESSAGE,
     "Invalid magic found in record: 9"),
    ("two-batches", lambda: _batch() + _batch(), PRODUCE_VERSION, ErrorCode.INVALID_RECORD,
     "exactly one record batch per partition"),
    ("base-offset", lambda: _patched(_batch(), ">q", 0, 42, crc=False), PRODUCE_VERSION,
     ErrorCode.INVALID_RECORD, "should be 0, but it is 42"),
    ("zero-count", lambda: _patched(_batch(), ">i", 57, 0), PRODUCE_VERSION, ErrorCode.INVALID_RECORD,
     "Invalid reported count for record batch: 0"),
    ("count-mismatch", lambda: _patched(_batch(), ">i", 57, 5), PRODUCE_VERSION, ErrorCode.INVALID_RECORD,
     "Inconsistent batch offset range [0, 2] and count of records 5"),
    ("control-batch", lambda: _batch(control=True), PRODUCE_VERSION, ErrorCode.INVALID_RECORD,
     "Clients are not allowed to write control records"),
    ("idempotent-without-sequence", lambda: _batch(producer_id=5, producer_epoch=0), PRODUCE_VERSION,
     ErrorCode.INVALID_RECORD, "Invalid sequence number -1"),
    ("zstd-before-v7", lambda: _batch(compression=Compression.ZSTD), 6, ErrorCode.UNSUPPORTED_COMPRESSION_TYPE,
     ""),
]


@pytest.mark.parametrize(("case", "make", "version", "code", "fragment"), BAD_BATCHES,
                         ids=[c[0] for c in BAD_BATCHES])
def test_bad_batch_is_rejected_with_kafkas_error_and_nothing_is_appended(
        broker: BrokerProcess, raw_socket: RawSocket, case: str, make: Callable[[], bytes | bytearray],
        version: int, code: ErrorCode, fragment: str) -> None:
    """Kafka's framing and batch checks (ProduceRequest.validateRecords, UnifiedLog, LogValidator) reject a
    bad batch with their error code; the partition is left as it was."""
    client = _client(broker, raw_socket)
    topic = _topic(f"bad-{case}")
    client.create(topic)
    assert client.produce(topic, _batch(4)).base_offset == 0
    result = client.produce(topic, make(), version=version)
    assert result.error_code == int(code), (case, result)
    assert result.base_offset == -1
    if version >= 8:
        assert fragment in (result.error_message or ""), result.error_message
    _assert_nothing_lost(client, topic, 4)
    broker.wait_for_log(lambda r: r.get("event") == "produce.rejected" and r.get("topic") == topic
                        and r.get("error") == code.name, 5.0, f"produce.rejected {code.name}")


def test_batch_above_max_message_bytes_is_message_too_large(
        start_broker: Callable[..., BrokerProcess], raw_socket: RawSocket) -> None:
    """A batch larger than max.message.bytes (log overhead included) answers MESSAGE_TOO_LARGE."""
    broker = start_broker("--set", "message.max.bytes=2000")
    client = _client(broker, raw_socket)
    topic = _topic()
    client.create(topic)
    big = build_batch([Record(0, int(time.time() * 1000), b"k", b"x" * 3000)])
    result = client.produce(topic, big)
    _assert_error(result, ErrorCode.MESSAGE_TOO_LARGE, f"is {len(big)} bytes which exceeds", "2000")
    assert result.log_start_offset == 0
    _assert_nothing_lost(client, topic, 0)


def test_future_timestamps_are_invalid_timestamp_with_record_errors(
        broker: BrokerProcess, raw_socket: RawSocket) -> None:
    """CreateTime records more than message.timestamp.after.max.ms (1 hour) ahead: INVALID_TIMESTAMP,
    with v8+ record_errors naming each rejected record."""
    client = _client(broker, raw_socket)
    topic = _topic()
    client.create(topic)
    now = int(time.time() * 1000)
    records = [Record(0, now, b"a", b"1"), Record(1, now + 2 * 3_600_000, b"b", b"2")]
    result = client.produce(topic, build_batch(records))
    _assert_error(result, ErrorCode.INVALID_TIMESTAMP, "rejected due to invalid timestamp")
    assert [(e.batch_index, "is out of range" in e.batch_index_error_message) for e in result.record_errors] \
        == [(1, True)]
    _assert_nothing_lost(client, topic, 0)


def test_compacted_topic_rejects_records_without_key(
        start_broker: Callable[..., BrokerProcess], raw_socket: RawSocket) -> None:
    """On a compacted topic every record needs a key: INVALID_RECORD naming the keyless records."""
    broker = start_broker("--set", "log.cleanup.policy=compact")
    client = _client(broker, raw_socket)
    topic = _topic()
    client.create(topic)
    result = client.produce(topic, build_batch(_records(3, keyed=False), compression=Compression.GZIP))
    _assert_error(result, ErrorCode.INVALID_RECORD, "Compacted topic cannot accept message without key")
    assert [e.batch_index for e in result.record_errors] == [0, 1, 2]
    _assert_nothing_lost(client, topic, 0)


def test_invalid_acks_is_invalid_required_acks(broker: BrokerProcess, raw_socket: RawSocket) -> None:
    """acks other than -1, 0 and 1 answers INVALID_REQUIRED_ACKS and appends nothing."""
    client = _client(broker, raw_socket)
    topic = _topic()
    client.create(topic)
    _assert_error(client.produce(topic, _batch(), acks=2), ErrorCode.INVALID_REQUIRED_ACKS, "acks=2")
    _assert_nothing_lost(client, topic, 0)


def test_transactional_batches_need_their_transaction(broker: BrokerProcess, raw_socket: RawSocket) -> None:
    """A transactional batch is appended only for a partition added to its id's Ongoing transaction, by
    the id's current producer and epoch (KIP-890's verification): no transactional id answers
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED, an unknown one INVALID_PRODUCER_ID_MAPPING, a partition not
    added INVALID_TXN_STATE, an older epoch INVALID_PRODUCER_EPOCH. A transactional id on plain batches
    is ignored, as Kafka ignores it."""
    client = _client(broker, raw_socket)
    topic = _topic()
    client.create(topic)
    txn_id = _topic("txn-id")
    init = _init_producer_id(client, transactional_id=txn_id)
    assert init.error_code == 0
    pid, epoch = init.producer_id, init.producer_epoch

    def txn_batch(seq: int, producer_epoch: int = epoch) -> bytearray:
        return _batch(producer_id=pid, producer_epoch=producer_epoch, base_sequence=seq, transactional=True)

    _assert_error(client.produce(topic, txn_batch(0)), ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                  "transactional_id")
    _assert_error(client.produce(topic, txn_batch(0), transactional_id="someone-else"),
                  ErrorCode.INVALID_PRODUCER_ID_MAPPING, "InitProducerId")
    _assert_error(client.produce(topic, txn_batch(0), transactional_id=txn_id), ErrorCode.INVALID_TXN_STATE,
                  "AddPartitionsToTxn")
    _assert_nothing_lost(client, topic, 0)
    added = client.call(ADD_PARTITIONS_TO_TXN, 3, messages.AddPartitionsToTxnRequest(
        v3_and_below_transactional_id=txn_id, v3_and_below_producer_id=pid, v3_and_below_producer_epoch=epoch,
        v3_and_below_topics=[messages.AddPartitionsToTxnRequest.AddPartitionsToTxnTopic(name=topic,
                                                                                         partitions=[0])]))
    assert added.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code == 0
    accepted = client.produce(topic, txn_batch(0), transactional_id=txn_id)
    assert (accepted.error_code, accepted.base_offset) == (0, 2)
    _assert_error(client.produce(topic, txn_batch(3, epoch - 1), transactional_id=txn_id),
                  ErrorCode.INVALID_PRODUCER_EPOCH, "fenced")
    plain = client.produce(topic, _batch(1), transactional_id=txn_id)
    assert (plain.error_code, plain.base_offset) == (0, 5)


def test_bad_partition_does_not_block_good_ones_in_the_same_request(
        broker: BrokerProcess, raw_socket: RawSocket) -> None:
    """Produce is per partition: a corrupt batch for one partition, a good one for another, and an unknown
    topic in the same request each get their own answer, and the good batch is appended."""
    client = _client(broker, raw_socket)
    topic = _topic()
    client.create(topic)
    client.create(topic + "-b")
    missing = _topic("missing")
    request = _PRODUCE(acks=-1, timeout_ms=5000, topic_data=[
        _PRODUCE.TopicProduceData(name=topic, partition_data=[
            _PRODUCE.PartitionProduceData(index=0, records=bytes(_flip_last_byte(_batch())))]),
        _PRODUCE.TopicProduceData(name=topic + "-b", partition_data=[
            _PRODUCE.PartitionProduceData(index=0, records=bytes(_batch(5)))]),
        _PRODUCE.TopicProduceData(name=missing, partition_data=[
            _PRODUCE.PartitionProduceData(index=0, records=bytes(_batch()))]),
    ])
    response = client.call(PRODUCE, PRODUCE_VERSION, request)
    codes = {t.name: t.partition_responses[0].error_code for t in response.responses}
    assert codes == {topic: int(ErrorCode.CORRUPT_MESSAGE), topic + "-b": 0,
                     missing: int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)}
    assert client.latest(topic) == 0
    assert client.latest(topic + "-b") == 5


# ------------------------------------------------------------------ acks, LogAppendTime, offsets


def test_acks_zero_gets_no_response_and_a_failure_closes_the_connection(
        broker: BrokerProcess, raw_socket: RawSocket) -> None:
    """acks=0 requests are never answered; a failed one closes the connection (Kafka's way of telling the
    producer), while what was appended before stays."""
    client = _client(broker, raw_socket)
    topic = _topic()
    client.create(topic)
    client.sock.send(codec.encode_request(PRODUCE, PRODUCE_VERSION, 900, "acks0",
                                          client.produce_request(topic, _batch(3), acks=0)))
    # The next answer on the connection is the ListOffsets one: no Produce response came before it.
    assert client.latest(topic) == 3
    client.sock.send(codec.encode_request(PRODUCE, PRODUCE_VERSION, 901, "acks0",
                                          client.produce_request(topic, _flip_last_byte(_batch()), acks=0)))
    assert client.sock.is_closed_by_peer(), "a failed acks=0 produce did not close the connection"
    assert _client(broker, raw_socket).latest(topic) == 3


def test_successful_produce_reports_offsets_and_log_start(broker: BrokerProcess, raw_socket: RawSocket) -> None:
    """Success answers the base offset, log_append_time_ms -1 on CreateTime topics and the log start offset."""
    client = _client(broker, raw_socket)
    topic = _topic()
    client.create(topic)
    first = client.produce(topic, _batch(3), acks=-1)
    second = client.produce(topic, _batch(2, compression=Compression.SNAPPY), acks=-1)
    assert (first.error_code, first.base_offset, first.log_append_time_ms, first.log_start_offset) == (0, 0, -1, 0)
    assert (second.error_code, second.base_offset) == (0, 3)
    assert first.error_message is None
    assert client.latest(topic) == 5


def test_log_append_time_topic_stamps_broker_time(start_broker: Callable[..., BrokerProcess],
                                                  raw_socket: RawSocket) -> None:
    """Under LogAppendTime the broker's append time replaces record timestamps and comes back in
    log_append_time_ms; ListOffsets by timestamp then finds records by that time."""
    broker = start_broker("--set", "log.message.timestamp.type=LogAppendTime")
    client = _client(broker, raw_socket)
    topic = _topic()
    client.create(topic)
    before = int(time.time() * 1000)
    result = client.produce(topic, build_batch(_records(3, ts=1_000)))
    after = int(time.time() * 1000)
    assert result.error_code == 0
    assert before <= result.log_append_time_ms <= after
    found = client.list_offset(topic, before)
    assert (found.offset, found.timestamp) == (0, result.log_append_time_ms)
    assert client.list_offset(topic, -3).timestamp == result.log_append_time_ms


def test_internal_topics_reject_client_produce_and_delete_records() -> None:
    """Clients may not append to or delete records of internal topics: INVALID_TOPIC_EXCEPTION (Kafka's
    internalTopicsAllowed is false for client requests)."""
    from broker.config import BrokerConfig
    from broker.server import Broker

    async def scenario() -> tuple[Any, Any]:
        broker = Broker(BrokerConfig.from_settings({"listeners": "127.0.0.1:0", "storage.url": "memory://"}))
        await broker.start()
        try:
            await broker.cluster.create_topic("__consumer_offsets", 1)
            host, port = broker.bound_address
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
            produce = Client.produce_request("__consumer_offsets", _batch())
            delete = messages.DeleteRecordsRequest(timeout_ms=1000, topics=[
                messages.DeleteRecordsRequest.DeleteRecordsTopic(name="__consumer_offsets", partitions=[
                    messages.DeleteRecordsRequest.DeleteRecordsPartition(partition_index=0, offset=-1)])])
            answers = []
            for correlation_id, (api_key, version, body) in enumerate(
                    [(PRODUCE, PRODUCE_VERSION, produce), (DELETE_RECORDS, 2, delete)], start=1):
                writer.write(b"".join(bytes(p) for p in codec.encode_request(api_key, version, correlation_id,
                                                                             "internal", body)))
                size = struct.unpack(">i", await asyncio.wait_for(reader.readexactly(4), 5))[0]
                frame = await asyncio.wait_for(reader.readexactly(size), 5)
                answers.append(codec.decode_response(api_key, version, frame)[1])
            writer.close()
            return answers[0], answers[1]
        finally:
            await broker.stop()

    produced, deleted = asyncio.run(scenario())
    result = produced.responses[0].partition_responses[0]
    assert result.error_code == int(ErrorCode.INVALID_TOPIC_EXCEPTION)
    assert "Cannot append to internal topic __consumer_offsets" in result.error_message
    deletion = deleted.topics[0].partitions[0]
    assert (deletion.error_code, deletion.low_watermark) == (int(ErrorCode.INVALID_TOPIC_EXCEPTION), -1)


# ------------------------------------------------------------------ idempotent producers


def _init_producer_id(client: Client, version: int = 4, **fields: Any) -> Any:
    return client.call(INIT_PRODUCER_ID, version, messages.InitProducerIdRequest(
        transactional_id=fields.pop("transactional_id", None),
        transaction_timeout_ms=fields.pop("transaction_timeout_ms", 60000), **fields))


def test_init_producer_id_allocates_increasing_ids_with_epoch_zero(
        broker: BrokerProcess, raw_socket: RawSocket) -> None:
    """Without a transactional id every InitProducerId gets a new producer id and epoch 0, even when it
    names its current id and epoch (Kafka bumps epochs only for transactional ids)."""
    client = _client(broker, raw_socket)
    first = _init_producer_id(client)
    second = _init_producer_id(client, version=2)
    bumped = _init_producer_id(client, producer_id=first.producer_id, producer_epoch=0)
    assert (first.error_code, first.producer_epoch) == (0, 0)
    assert first.producer_id >= 0
    assert second.producer_id > first.producer_id
    assert (bumped.error_code, bumped.producer_epoch) == (0, 0)
    assert bumped.producer_id > second.producer_id


@pytest.mark.parametrize(("fields", "code"), [
    ({"producer_id": 1234, "producer_epoch": -1}, ErrorCode.INVALID_REQUEST),
    ({"producer_id": -1, "producer_epoch": 3}, ErrorCode.INVALID_REQUEST),
    ({"transactional_id": ""}, ErrorCode.INVALID_REQUEST),
    ({"transactional_id": "my-txn", "transaction_timeout_ms": 900_001}, ErrorCode.INVALID_TRANSACTION_TIMEOUT),
    ({"transactional_id": "my-txn", "transaction_timeout_ms": 0}, ErrorCode.INVALID_TRANSACTION_TIMEOUT),
], ids=["id-without-epoch", "epoch-without-id", "empty-transactional-id", "timeout-too-long", "timeout-zero"])
def test_init_producer_id_refusals(broker: BrokerProcess, raw_socket: RawSocket, fields: dict[str, Any],
                                   code: ErrorCode) -> None:
    """v3+ needs producer id and epoch together (INVALID_REQUEST), an empty transactional id is
    INVALID_REQUEST, and a transaction timeout outside 1..transaction.max.timeout.ms is
    INVALID_TRANSACTION_TIMEOUT."""
    client = _client(broker, raw_socket)
    response = _init_producer_id(client, **fields)
    assert (response.error_code, response.producer_id, response.producer_epoch) == (int(code), -1, -1)


def test_idempotent_retry_returns_original_offset_and_appends_nothing(
        broker: BrokerProcess, raw_socket: RawSocket) -> None:
    """A retried idempotent batch (same producer, epoch and sequences) answers success with its original
    base offset and is not appended again."""
    client = _client(broker, raw_socket)
    topic = _topic()
    client.create(topic)
    pid = _init_producer_id(client).producer_id
    first = _batch(3, producer_id=pid, producer_epoch=0, base_sequence=0)
    second = _batch(2, producer_id=pid, producer_epoch=0, base_sequence=3)
    assert client.produce(topic, first).base_offset == 0
    assert client.produce(topic, second).base_offset == 3
    retried = client.produce(topic, _batch(3, producer_id=pid, producer_epoch=0, base_sequence=0))
    assert (retried.error_code, retried.base_offset, retried.error_message) == (0, 0, None)
    assert client.latest(topic) == 5


def test_idempotent_sequence_gap_is_out_of_order(broker: BrokerProcess, raw_socket: RawSocket) -> None:
    """A batch whose first sequence does not follow the last one: OUT_OF_ORDER_SEQUENCE_NUMBER."""
    client = _client(broker, raw_socket)
    topic = _topic()
    client.create(topic)
    pid = _init_producer_id(client).producer_id
    assert client.produce(topic, _batch(3, producer_id=pid, producer_epoch=0, base_sequence=0)).error_code == 0
    gap = client.produce(topic, _batch(1, producer_id=pid, producer_epoch=0, base_sequence=7))
    _assert_error(gap, ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, "7 (incoming seq. number), 2 (current end")
    assert gap.log_start_offset == 0
    _assert_nothing_lost(client, topic, 3)


def test_idempotent_older_epoch_is_invalid_producer_epoch(broker: BrokerProcess, raw_socket: RawSocket) -> None:
    """Once a partition has seen epoch 1 of a producer, epoch 0 batches answer INVALID_PRODUCER_EPOCH;
    a new epoch must start at sequence 0."""
    client = _client(broker, raw_socket)
    topic = _topic()
    client.create(topic)
    pid = _init_producer_id(client).producer_id
    assert client.produce(topic, _batch(2, producer_id=pid, producer_epoch=0, base_sequence=0)).error_code == 0
    bad_start = client.produce(topic, _batch(1, producer_id=pid, producer_epoch=1, base_sequence=5))
    _assert_error(bad_start, ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, "new epoch")
    assert client.produce(topic, _batch(1, producer_id=pid, producer_epoch=1, base_sequence=0)).base_offset == 2
    stale = client.produce(topic, _batch(1, producer_id=pid, producer_epoch=0, base_sequence=2))
    _assert_error(stale, ErrorCode.INVALID_PRODUCER_EPOCH, "which is smaller than the last seen epoch 1")
    _assert_nothing_lost(client, topic, 3)


# ------------------------------------------------------------------ real clients


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_confluent_producer_keyed_records_with_headers_to_auto_created_topic(
        broker: BrokerProcess, raw_socket: RawSocket, acks: str) -> None:
    """librdkafka produces keyed records with headers to a topic it auto-creates through Metadata; with
    acks 1/all the delivery reports carry consecutive offsets, and ListOffsets shows every record."""
    from confluent_kafka import Producer

    topic = _topic(f"confluent-acks{acks}")
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": acks, "linger.ms": 5,
                         "message.timeout.ms": int(DELIVERY_TIMEOUT_S * 1000)})
    reports: list[tuple[Any, int]] = []
    for i in range(10):
        producer.produce(topic, key=b"k%d" % i, value=b"v%d" % i, headers=[("trace", b"%d" % i)],
                         on_delivery=lambda err, msg: reports.append((err, msg.offset())))
    assert producer.flush(DELIVERY_TIMEOUT_S) == 0, "messages still queued after the flush bound"
    assert [err for err, _ in reports] == [None] * 10
    if acks != "0":
        assert [offset for _, offset in reports] == list(range(10))
    assert _client(broker, raw_socket).latest(topic) == 10


def test_confluent_idempotent_producer(broker: BrokerProcess, raw_socket: RawSocket) -> None:
    """librdkafka's idempotent producer gets a producer id and its batches are accepted in sequence."""
    from confluent_kafka import Producer

    topic = _topic("confluent-idempotent")
    producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "linger.ms": 2,
                         "message.timeout.ms": int(DELIVERY_TIMEOUT_S * 1000)})
    reports: list[tuple[Any, int]] = []
    for i in range(50):
        producer.produce(topic, key=b"%d" % (i % 3), value=b"x" * i,
                         on_delivery=lambda err, msg: reports.append((err, msg.offset())))
        if i % 10 == 9:
            producer.poll(0)
    assert producer.flush(DELIVERY_TIMEOUT_S) == 0
    assert [e for e, _ in reports] == [None] * 50
    assert sorted(o for _, o in reports) == list(range(50))
    assert _client(broker, raw_socket).latest(topic) == 50


def test_confluent_one_megabyte_message_succeeds_and_larger_batch_is_message_too_large(
        broker: BrokerProcess, raw_socket: RawSocket) -> None:
    """A 1 MB message fits the default max.message.bytes (1048588); a batch above it comes back as
    MESSAGE_TOO_LARGE in the delivery report (the client's own limit raised so the broker decides)."""
    from confluent_kafka import KafkaError, Producer

    topic = _topic("confluent-large")
    producer = Producer({"bootstrap.servers": broker.bootstrap, "message.max.bytes": 4_000_000,
                         "message.timeout.ms": int(DELIVERY_TIMEOUT_S * 1000), "compression.type": "none"})
    reports: list[tuple[Any, int]] = []
    producer.produce(topic, value=b"a" * 1_000_000, on_delivery=lambda err, msg: reports.append((err, msg.offset())))
    assert producer.flush(DELIVERY_TIMEOUT_S) == 0
    producer.produce(topic, value=b"b" * 1_100_000, on_delivery=lambda err, msg: reports.append((err, msg.offset())))
    assert producer.flush(DELIVERY_TIMEOUT_S) == 0
    assert reports[0] == (None, 0)
    error = reports[1][0]
    assert error is not None and error.code() == KafkaError.MSG_SIZE_TOO_LARGE, error
    broker.wait_for_log(lambda r: r.get("event") == "produce.rejected" and r.get("error") == "MESSAGE_TOO_LARGE",
                        5.0, "the broker's MESSAGE_TOO_LARGE rejection")
    assert _client(broker, raw_socket).latest(topic) == 1


def test_kafka_python_default_producer_is_idempotent_and_acknowledged(
        broker: BrokerProcess, raw_socket: RawSocket) -> None:
    """kafka-python 3.x with its default config (idempotent, acks=all) produces and gets offsets back."""
    from kafka import KafkaProducer

    topic = _topic("kp-default")
    client = _client(broker, raw_socket)
    client.create(topic)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)
    try:
        futures = [producer.send(topic, key=b"k", value=b"v%d" % i, headers=[("h", b"1")]) for i in range(20)]
        offsets = [f.get(timeout=DELIVERY_TIMEOUT_S).offset for f in futures]
    finally:
        producer.close(timeout=5)
    assert offsets == list(range(20))
    assert client.latest(topic) == 20
    # The producer took the broker's first producer id: the next one handed out is past it.
    assert _init_producer_id(client).producer_id > FIRST_PRODUCER_ID


@pytest.mark.parametrize("compression", [None, "gzip", "snappy", "lz4", "zstd"])
def test_kafka_python_producer_each_compression_type(broker: BrokerProcess, raw_socket: RawSocket,
                                                     compression: str | None) -> None:
    """kafka-python batches with every compression codec are accepted and acknowledged in order."""
    from kafka import KafkaProducer

    topic = _topic(f"kp-{compression or 'none'}")
    client = _client(broker, raw_socket)
    client.create(topic)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, compression_type=compression, linger_ms=20,
                             request_timeout_ms=10000)
    try:
        futures = [producer.send(topic, key=b"%d" % i, value=b"payload " * 50) for i in range(30)]
        offsets = [f.get(timeout=DELIVERY_TIMEOUT_S).offset for f in futures]
    finally:
        producer.close(timeout=5)
    assert offsets == list(range(30))
    assert client.latest(topic) == 30


def test_aiokafka_send_and_wait(broker: BrokerProcess, raw_socket: RawSocket) -> None:
    """aiokafka's send_and_wait returns the record's offset (acks=all, idempotent)."""
    from aiokafka import AIOKafkaProducer

    topic = _topic("aiokafka")
    client = _client(broker, raw_socket)
    client.create(topic)

    async def produce() -> list[int]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=True,
                                    request_timeout_ms=10000)
        await asyncio.wait_for(producer.start(), DELIVERY_TIMEOUT_S)
        try:
            results = []
            for i in range(5):
                meta = await asyncio.wait_for(producer.send_and_wait(topic, b"v%d" % i, key=b"k"),
                                              DELIVERY_TIMEOUT_S)
                results.append(meta.offset)
            return results
        finally:
            await asyncio.wait_for(producer.stop(), DELIVERY_TIMEOUT_S)

    assert asyncio.run(produce()) == list(range(5))
    assert client.latest(topic) == 5


def test_timestamp_type_flag_is_kept_for_create_time(broker: BrokerProcess, raw_socket: RawSocket) -> None:
    """On a CreateTime topic the producer's timestamps are kept: ListOffsets -3 returns the largest one."""
    client = _client(broker, raw_socket)
    topic = _topic()
    client.create(topic)
    records = [Record(0, 1_000, b"a", b"1"), Record(1, 5_000, b"b", b"2"), Record(2, 3_000, b"c", b"3")]
    assert client.produce(topic, build_batch(records, timestamp_type=TimestampType.CREATE_TIME)).error_code == 0
    found = client.list_offset(topic, -3)
    assert (found.offset, found.timestamp) == (1, 5_000)


def test_records_read_back_intact_with_broker_log_append_time(
        start_broker: Callable[..., BrokerProcess], raw_socket: RawSocket) -> None:
    """Keyed, compressed records with headers come back from Fetch as produced; on a LogAppendTime topic
    the delivery report's timestamp (from log_append_time_ms) is what consumers read."""
    from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Consumer, Producer, TopicPartition

    broker = start_broker("--set", "log.message.timestamp.type=LogAppendTime")
    topic = _topic("readback")
    producer = Producer({"bootstrap.servers": broker.bootstrap, "compression.type": "zstd", "linger.ms": 5,
                         "enable.idempotence": True, "message.timeout.ms": int(DELIVERY_TIMEOUT_S * 1000)})
    reports: list[Any] = []
    for i in range(6):
        producer.produce(topic, key=b"k%d" % i, value=b"v%d" % i, headers=[("n", b"%d" % i)], timestamp=1_000,
                         on_delivery=lambda err, msg: reports.append((err, msg.offset(), msg.timestamp())))
    assert producer.flush(DELIVERY_TIMEOUT_S) == 0
    assert [(err, offset) for err, offset, _ in reports] == [(None, i) for i in range(6)]
    stamps = {ts for _, _, ts in reports}
    assert len(stamps) == 1 and next(iter(stamps))[0] == TIMESTAMP_LOG_APPEND_TIME
    append_time = next(iter(stamps))[1]
    assert append_time > 1_000

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": _topic("group"),
                         "enable.auto.commit": False})
    got: list[tuple[int, bytes, bytes, Any, Any, Any]] = []
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        while len(got) < 6 and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            got.append((message.offset(), message.key(), message.value(), message.headers(), message.timestamp(),
                        message.leader_epoch()))
    finally:
        consumer.close()
    # The broker stamps the partition's leader epoch (0) into appended batches, as Kafka does.
    assert got == [(i, b"k%d" % i, b"v%d" % i, [("n", b"%d" % i)], (TIMESTAMP_LOG_APPEND_TIME, append_time), 0)
                   for i in range(6)]
