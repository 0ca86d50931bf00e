"""Produce with hostile batches against the real broker process (issue 12), over a raw socket because a
client library would never send them: record counts the bytes cannot hold, undefined codecs, compressed
payloads that do not decompress, decompression bombs, and many client-chosen producer ids. Each test
checks Kafka's error code, that nothing was appended, that ListOffsets by timestamp still answers, and
(through the fixture) that the broker logged no traceback.
"""

from __future__ import annotations

import struct
import time
import uuid
from collections.abc import Callable

import zstandard

from protocol import messages
from protocol.errors import ErrorCode
from protocol.records import Compression, Record, TimestampType, build_batch, write_crc
from protocol.records.batch import ATTRIBUTES_OFFSET, HEADER_SIZE
from tests.compat.conftest import BrokerProcess, KafkaSocket
from tests.compat.test_produce import Client

RawSocket = Callable[[BrokerProcess], KafkaSocket]
API_VERSIONS = 18


def _topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _now() -> int:
    return int(time.time() * 1000)


def _records(n: int, ts: int | None = None) -> list[Record]:
    now = _now() if ts is None else ts
    return [Record(i, now + i, b"key-%d" % i, b"value-%d" % i, ()) for i in range(n)]


def _patched(data: bytearray, fmt: str, offset: int, value: int) -> bytearray:
    struct.pack_into(fmt, data, offset, value)
    write_crc(data, 0)
    return data


def _with_payload(data: bytearray, payload: bytes) -> bytearray:
    out = bytearray(data[:HEADER_SIZE]) + payload
    return _patched(out, ">i", 8, len(out) - 12)


def _ready(broker: BrokerProcess, raw_socket: RawSocket, prefix: str) -> tuple[Client, str]:
    client = Client(raw_socket(broker))
    topic = _topic(prefix)
    client.create(topic)
    assert client.produce(topic, build_batch(_records(2))).error_code == 0
    return client, topic


def _assert_refused_and_still_sane(broker: BrokerProcess, client: Client, topic: str, result: object,
                                   code: ErrorCode, fragment: str) -> None:
    """The partition answered ``code``, nothing was appended, and timestamp lookups still work."""
    assert result.error_code == int(code), (  # type: ignore[attr-defined]
        f"expected {code.name}, got {ErrorCode.from_code(result.error_code).name}: "  # type: ignore[attr-defined]
        f"{result.error_message}")  # type: ignore[attr-defined]
    assert fragment in (result.error_message or ""), result.error_message  # type: ignore[attr-defined]
    assert client.latest(topic) == 2
    assert client.list_offset(topic, 0).offset == 0
    assert client.list_offset(topic, -3).offset == 1
    broker.wait_for_log(lambda r: r.get("event") == "produce.rejected" and r.get("topic") == topic
                        and r.get("error") == code.name, 5.0, f"produce.rejected {code.name}")


def test_seventy_byte_batch_claiming_a_million_records_is_refused_at_once(
        broker: BrokerProcess, raw_socket: RawSocket) -> None:
    """The issue's stall: LogAppendTime attribute, max timestamp two hours ahead, record_count 1,000,000 in
    70 bytes. Kafka's record iterator runs out of bytes: INVALID_RECORD "premature EOF reached"."""
    client, topic = _ready(broker, raw_socket, "count")
    data = build_batch([Record(0, _now(), None, b"xy", ())], timestamp_type=TimestampType.LOG_APPEND_TIME)
    struct.pack_into(">q", data, 35, _now() + 2 * 3_600_000)
    struct.pack_into(">i", data, 23, 999_999)
    data = _patched(data, ">i", 57, 1_000_000)
    assert len(data) == 70
    result = client.produce(topic, data)
    _assert_refused_and_still_sane(broker, client, topic, result, ErrorCode.INVALID_RECORD,
                                   "Incorrect declared batch size, premature EOF reached")
    assert result.record_errors == []


def test_undefined_codec_is_unsupported_compression_type(broker: BrokerProcess, raw_socket: RawSocket) -> None:
    """Compression id 5 is not a Kafka codec: UNSUPPORTED_COMPRESSION_TYPE, nothing stored."""
    client, topic = _ready(broker, raw_socket, "codec5")
    data = _patched(build_batch(_records(3)), ">h", ATTRIBUTES_OFFSET, 5)
    result = client.produce(topic, data)
    _assert_refused_and_still_sane(broker, client, topic, result, ErrorCode.UNSUPPORTED_COMPRESSION_TYPE,
                                   "compression type id: 5")


def test_corrupt_lz4_with_correct_crc_is_corrupt_message(broker: BrokerProcess, raw_socket: RawSocket) -> None:
    """LZ4 garbage under a correct CRC used to be stored with error 0 and break ListOffsets by timestamp
    later; it is refused with CORRUPT_MESSAGE."""
    client, topic = _ready(broker, raw_socket, "lz4")
    data = _with_payload(build_batch(_records(3), compression=Compression.LZ4),
                         b"\x04\x22\x4d\x18" + b"\xff" * 40)
    result = client.produce(topic, data)
    _assert_refused_and_still_sane(broker, client, topic, result, ErrorCode.CORRUPT_MESSAGE, "decompress")


def test_compressed_record_count_mismatch_is_invalid_record(broker: BrokerProcess, raw_socket: RawSocket) -> None:
    """A gzip batch declaring 5 records that holds 3: Kafka's iterator reaches the end early."""
    client, topic = _ready(broker, raw_socket, "gzcount")
    data = build_batch(_records(3), compression=Compression.GZIP)
    struct.pack_into(">i", data, 23, 4)
    data = _patched(data, ">i", 57, 5)
    result = client.produce(topic, data)
    _assert_refused_and_still_sane(broker, client, topic, result, ErrorCode.INVALID_RECORD, "premature EOF")


def test_decompression_bomb_is_refused_and_others_are_served(
        start_broker: Callable[..., BrokerProcess], raw_socket: RawSocket) -> None:
    """A 1 KiB zstd batch that inflates to 64 MiB, above message.max.decompressed.bytes (8 MiB here):
    MESSAGE_TOO_LARGE; a second connection is answered meanwhile and afterwards."""
    broker = start_broker("--set", "message.max.decompressed.bytes=8388608")
    client, topic = _ready(broker, raw_socket, "bomb")
    bomb = zstandard.ZstdCompressor(level=3).compress(b"\x00" * (64 << 20))
    data = _with_payload(build_batch(_records(1), compression=Compression.ZSTD), bomb)
    assert len(data) < 8192
    other = Client(raw_socket(broker))
    result = client.produce(topic, data, acks=-1)
    _assert_refused_and_still_sane(broker, client, topic, result, ErrorCode.MESSAGE_TOO_LARGE, "8388608")
    versions = other.call(API_VERSIONS, 3, messages.ApiVersionsRequest(client_software_name="t",
                                                                      client_software_version="1"))
    assert versions.error_code == 0


def test_many_client_chosen_producer_ids_keep_state_bounded(
        start_broker: Callable[..., BrokerProcess], raw_socket: RawSocket) -> None:
    """Idempotent batches from 40 producer ids InitProducerId never handed out are accepted (Kafka accepts
    them); with producer.state.max.entries=10 only the 10 most recent producers are remembered: the
    newest one's retry is deduplicated, the oldest one's is appended again (as after Kafka's expiry)."""
    broker = start_broker("--set", "producer.state.max.entries=10")
    client = Client(raw_socket(broker))
    topic = _topic("pids")
    client.create(topic)
    now = _now()

    def batch(pid: int) -> bytearray:
        return build_batch(_records(1, now), producer_id=pid, producer_epoch=0, base_sequence=0)

    for i, pid in enumerate(range(5_000_000, 5_000_040)):
        result = client.produce(topic, batch(pid))
        assert (result.error_code, result.base_offset) == (0, i), result
    newest = client.produce(topic, batch(5_000_039))
    assert (newest.error_code, newest.base_offset) == (0, 39)
    oldest = client.produce(topic, batch(5_000_000))
    assert (oldest.error_code, oldest.base_offset) == (0, 40)
    assert client.latest(topic) == 41
    broker.wait_for_log(lambda r: r.get("event") == "producer_state.evicted", 5.0, "producer_state.evicted")


def test_a_produce_naming_many_missing_partitions_logs_one_line_and_a_count(
        broker: BrokerProcess, raw_socket: RawSocket) -> None:
    """Each refused partition of a request is answered with its own error, but the log gets the first
    refusal in full and then a count per client host (log.suppressed), not one line per partition: a
    request naming 2,000 missing partitions must not write 2,000 lines."""
    client, topic = _ready(broker, raw_socket, "many-missing")
    batch = bytes(build_batch(_records(1)))
    request = messages.ProduceRequest(transactional_id=None, acks=1, timeout_ms=5000, topic_data=[
        messages.ProduceRequest.TopicProduceData(name=topic, partition_data=[
            messages.ProduceRequest.PartitionProduceData(index=i, records=bytearray(batch))
            for i in range(1, 2001)])])
    response = client.call(0, 9, request)
    codes = {p.error_code for p in response.responses[0].partition_responses}
    assert codes == {int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)}, codes
    assert len(response.responses[0].partition_responses) == 2000
    # A later request's log line marks where this request's lines end (the log is written in order).
    marker = _topic("marker")
    client.create(marker)
    broker.wait_for_log(lambda r: r.get("event") == "topic.created" and r.get("topic") == marker, 5.0,
                        "the marker topic's creation")
    rejected = [r for r in broker.records if r.get("event") == "produce.rejected" and r.get("topic") == topic]
    assert len(rejected) == 1, f"expected one produce.rejected line, got {len(rejected)}"
    assert rejected[0].get("peer"), f"the line names no peer: {rejected[0]}"
    assert client.latest(topic) == 2, "a valid partition's data is untouched"
