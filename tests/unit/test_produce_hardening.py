"""Produce against hostile batches, in-process (issue 12): record counts the bytes cannot hold, compressed
payloads that are not what their header says, decompression bombs, stored batches that no longer decode,
the bound on idempotent producer state, and one group commit for an acks=all produce to many partitions.
Each test states the Kafka behaviour (or the Moldau bound) it checks."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard

from broker.cluster import ClusterState
from broker.config import BrokerConfig
from broker.faults import FaultInjector
from broker.handlers import ConnectionInfo, RequestContext
from broker.handlers.produce import handle_produce
from broker.log_throttle import LogThrottle
from broker.membership import SingleNode
from broker.produce_validation import (
    BatchRejected,
    TopicRules,
    frame_batch,
    validate_batch,
)
from broker.producer_state import ProducerRegistry
from protocol import messages
from protocol.errors import ErrorCode
from protocol.records import Compression, Record, TimestampType, build_batch, check_record_framing, write_crc
from protocol.records.batch import ATTRIBUTES_OFFSET, HEADER_SIZE
from protocol.records.record import MIN_RECORD_SIZE
from storage.file.engine import FileEngine
from storage.memory import MemoryEngine

NOW = 1_700_000_000_000
TP = "hostile-0"
CAP = 1 << 20
_PRODUCE = messages.ProduceRequest


def _records(n: int = 3, ts: int = NOW) -> list[Record]:
    return [Record(i, ts + i, b"k%d" % i, b"v%d" % i, ()) for i in range(n)]


def _check(data: bytes | bytearray, rules: TopicRules | None = None, cap: int = CAP) -> None:
    """Every check the produce handler runs on one batch, the record walk included."""
    validate_batch(frame_batch(data, 9), rules or TopicRules(), NOW, TP, cap)


def _reject(data: bytes | bytearray, rules: TopicRules | None = None, cap: int = CAP) -> BatchRejected:
    with pytest.raises(BatchRejected) as info:
        _check(data, rules, cap)
    return info.value


def _with_header(data: bytearray, fmt: str, offset: int, value: int) -> bytearray:
    struct.pack_into(fmt, data, offset, value)
    write_crc(data, 0)
    return data


def _claiming(data: bytearray, count: int) -> bytearray:
    """The batch with a record count (and a matching offset range) its bytes cannot hold."""
    struct.pack_into(">i", data, 23, count - 1)  # last offset delta
    return _with_header(data, ">i", 57, count)


def _with_payload(data: bytearray, payload: bytes) -> bytearray:
    """The batch's header (length and CRC fixed) over a different records payload."""
    out = bytearray(data[:HEADER_SIZE]) + payload
    return _with_header(out, ">i", 8, len(out) - 12)


# ------------------------------------------------------------------ record count bounded by the bytes


def test_seventy_byte_batch_claiming_a_million_records_is_invalid_record() -> None:
    """Issue 12 item 2: a 70-byte batch flagged LogAppendTime with a far-future max timestamp and
    record_count=1,000,000 used to make validation loop a million times. Kafka's record iterator hits the
    end of the bytes first: INVALID_RECORD "Incorrect declared batch size, premature EOF reached"."""
    data = build_batch([Record(0, NOW, None, b"xy", ())], timestamp_type=TimestampType.LOG_APPEND_TIME)
    data = _with_header(data, ">q", 35, NOW + 2 * 3_600_000)  # max timestamp two hours ahead
    data = _claiming(data, 1_000_000)
    assert len(data) == 70
    error = _reject(data)
    assert error.code is ErrorCode.INVALID_RECORD
    assert "Incorrect declared batch size, premature EOF reached" in error.message
    assert error.record_errors == ()


@pytest.mark.parametrize("count", [1000, 2**31 - 1])
def test_uncompressed_count_above_what_the_bytes_hold_is_invalid_record(count: int) -> None:
    """A record is at least MIN_RECORD_SIZE bytes, so a count the payload cannot hold is refused from the
    header alone, whatever the topic's settings."""
    data = _claiming(build_batch(_records(3)), count)
    assert count * MIN_RECORD_SIZE > len(data) - HEADER_SIZE
    for rules in (TopicRules(), TopicRules(compacted=True), TopicRules(log_append_time=True)):
        error = _reject(data, rules)
        assert error.code is ErrorCode.INVALID_RECORD, rules
        assert "premature EOF" in error.message


def test_minimum_record_size_is_seven_bytes() -> None:
    """Kafka's smallest record: length, attributes, timestamp delta, offset delta, null key, null value and
    header count, one byte each."""
    data = build_batch([Record(0, NOW, None, None, ())])
    assert len(data) - HEADER_SIZE == MIN_RECORD_SIZE == 7


def test_client_log_append_time_errors_are_one_per_record_without_a_loop_over_the_header() -> None:
    """A LogAppendTime batch out of range on a CreateTime topic: INVALID_TIMESTAMP naming every record
    (Kafka's validateTimestamp), for the records the bytes really hold."""
    data = build_batch(_records(3), timestamp_type=TimestampType.LOG_APPEND_TIME)
    data = _with_header(data, ">q", 35, NOW + 2 * 3_600_000)
    error = _reject(data)
    assert error.code is ErrorCode.INVALID_TIMESTAMP
    assert [e.batch_index for e in error.record_errors] == [0, 1, 2]


# ------------------------------------------------------------------ compressed batches


@pytest.mark.parametrize("codec", [5, 6, 7])
def test_undefined_codec_is_unsupported_compression_type(codec: int) -> None:
    """Codec ids 5-7 are not defined by Kafka -> UNSUPPORTED_COMPRESSION_TYPE, before anything is read."""
    data = build_batch(_records())
    data = _with_header(data, ">h", ATTRIBUTES_OFFSET, codec)
    with pytest.raises(BatchRejected) as info:
        frame_batch(data, 9)
    assert info.value.code is ErrorCode.UNSUPPORTED_COMPRESSION_TYPE
    assert f"compression type id: {codec}" in info.value.message


@pytest.mark.parametrize("codec", [Compression.GZIP, Compression.SNAPPY, Compression.LZ4, Compression.ZSTD])
def test_payload_that_does_not_decompress_is_corrupt_message(codec: Compression) -> None:
    """A compressed payload its codec cannot read, under a correct CRC -> CORRUPT_MESSAGE (Kafka fails the
    append in its record iterator)."""
    data = build_batch(_records(), compression=codec)
    payload = bytearray(data[HEADER_SIZE:])
    for i in range(len(payload) // 3, len(payload)):
        payload[i] ^= 0x5A
    error = _reject(_with_payload(data, bytes(payload)))
    assert error.code in (ErrorCode.CORRUPT_MESSAGE, ErrorCode.INVALID_RECORD), error
    assert error.code is ErrorCode.CORRUPT_MESSAGE or "record" in error.message.lower()


def test_corrupt_lz4_frame_with_correct_crc_is_corrupt_message() -> None:
    """The issue's case: LZ4 garbage with a correct CRC was stored with error 0."""
    data = build_batch(_records(), compression=Compression.LZ4)
    error = _reject(_with_payload(data, b"\x04\x22\x4d\x18" + b"\xff" * 40))
    assert error.code is ErrorCode.CORRUPT_MESSAGE
    assert "decompress" in error.message


@pytest.mark.parametrize("count", [2, 4])
def test_compressed_record_count_must_match_the_records(count: int) -> None:
    """Kafka iterates a compressed batch's records: fewer than declared -> "premature EOF reached", more ->
    "records still remaining"; both INVALID_RECORD."""
    data = _claiming(build_batch(_records(3), compression=Compression.GZIP), count)
    error = _reject(data)
    assert error.code is ErrorCode.INVALID_RECORD
    expected = "records still remaining" if count < 3 else "premature EOF reached"
    assert expected in error.message


def test_compressed_records_are_checked_like_uncompressed_ones() -> None:
    """Kafka validates every record of a compressed batch: a far-future timestamp -> INVALID_TIMESTAMP."""
    records = _records(2) + [Record(2, NOW + 10 * 3_600_000, b"k", b"v", ())]
    data = build_batch(records, compression=Compression.ZSTD)
    data = _with_header(data, ">q", 35, NOW)  # a header that lies about the max timestamp
    error = _reject(data)
    assert error.code is ErrorCode.INVALID_TIMESTAMP
    assert [e.batch_index for e in error.record_errors] == [2]


def test_compressed_records_whose_lengths_break_the_framing_are_invalid_record() -> None:
    """Without a key or timestamp to check, a compressed batch's records are walked by their length
    prefixes only; a record length running past the payload is still INVALID_RECORD, as Kafka's iterator
    reports a record it cannot read."""
    payload = bytearray(zstandard.ZstdDecompressor().decompress(
        bytes(build_batch(_records(3), compression=Compression.ZSTD)[HEADER_SIZE:])))
    payload[0] = 0x7E  # the first record claims 63 bytes: it swallows the others and runs past the end
    data = build_batch(_records(3), compression=Compression.ZSTD)
    error = _reject(_with_payload(data, zstandard.ZstdCompressor().compress(bytes(payload))))
    assert error.code is ErrorCode.INVALID_RECORD
    assert "record length 63" in error.message


def test_record_framing_walk_reports_the_largest_record_timestamp() -> None:
    """The cheap walk returns the records' true max timestamp, which decides whether the header's can be
    trusted (a header claiming less sends the batch through the full per-record check)."""
    records = _records(3) + [Record(3, NOW + 5_000, b"k", b"v", ()), Record(4, NOW - 5, b"k", b"v", ())]
    for codec in (Compression.NONE, Compression.LZ4, Compression.GZIP):
        batch = frame_batch(build_batch(records, compression=codec), 9)
        assert check_record_framing(batch) == NOW + 5_000, codec


def test_decompression_bomb_is_message_too_large_without_inflating_it() -> None:
    """A small batch that decompresses past the bound is refused as MESSAGE_TOO_LARGE (the Java producer
    splits such a batch); decompression stops at the bound."""
    bomb = zstandard.ZstdCompressor(level=3).compress(b"\x00" * (8 * CAP))
    data = _with_payload(build_batch(_records(1), compression=Compression.ZSTD), bomb)
    assert len(data) < 4096
    error = _reject(data, cap=CAP)
    assert error.code is ErrorCode.MESSAGE_TOO_LARGE
    assert f"{CAP}" in error.message


@pytest.mark.parametrize("codec", list(Compression))
def test_valid_batches_of_every_codec_pass(codec: Compression) -> None:
    _check(build_batch(_records(5), compression=codec))


# ------------------------------------------------------------------ stored batches that do not decode


def _bad_stored_batch(ts: int) -> bytearray:
    """A batch from an older Moldau that accepted it: LZ4 garbage under a correct CRC."""
    data = build_batch(_records(3, ts), compression=Compression.LZ4)
    return _with_payload(data, b"\x04\x22\x4d\x18" + b"\xff" * 40)


@pytest.mark.parametrize("engine_kind", ["memory", "file"])
def test_timestamp_lookups_survive_an_undecodable_stored_batch(engine_kind: str, tmp_path: Path) -> None:
    """ListOffsets by timestamp and max timestamp over a stored batch whose records do not decode: no
    exception; the answer falls back to the batch header (its first offset / last offset)."""
    async def main() -> None:
        engine: Any = MemoryEngine() if engine_kind == "memory" else FileEngine(tmp_path / "data")
        try:
            plog = await engine.open_log("t", 0)
            await plog.append(build_batch(_records(2, NOW)))                  # offsets 0-1
            await plog.append(_bad_stored_batch(NOW + 1000))                  # offsets 2-4, undecodable
            await plog.append(build_batch(_records(2, NOW + 5000)))           # offsets 5-6
            found = await plog.offset_for_timestamp(NOW + 500)
            assert found is not None and found.offset == 2
            newest = await plog.max_timestamp()
            assert newest is not None and newest.offset == 6
            await plog.append(build_batch(_records(1, NOW - 10)))             # offset 7
            bad_newest = _bad_stored_batch(NOW + 99_000)
            await plog.append(bad_newest)                                     # offsets 8-10
            newest = await plog.max_timestamp()
            assert newest is not None and (newest.offset, newest.timestamp) == (10, NOW + 99_002)
        finally:
            await engine.close()
    asyncio.run(main())


# ------------------------------------------------------------------ the produce handler in-process


class FakeBroker:
    """The attributes of `broker.server.Broker` the Produce handler reads; the cluster is the real one."""

    def __init__(self, config: BrokerConfig, engine: Any) -> None:
        self.config = config
        self.cluster = ClusterState(engine, config)
        self.log_throttle = LogThrottle.from_config(config)
        self.faults = FaultInjector()
        self.acls = None  # no authorizer: every request allowed
        self.client_quotas_if_any = None  # no client quotas
        self.membership = SingleNode(self)  # a broker alone: leads every partition


def _produce_request(topic: str, batches: dict[int, bytes], acks: int = -1) -> Any:
    return _PRODUCE(transactional_id=None, acks=acks, timeout_ms=5000, topic_data=[
        _PRODUCE.TopicProduceData(name=topic, partition_data=[
            _PRODUCE.PartitionProduceData(index=i, records=bytearray(b)) for i, b in batches.items()])])


async def _produce(broker: FakeBroker, request: Any, version: int = 9) -> list[Any]:
    ctx = RequestContext(broker, ConnectionInfo(peer="unit"), version)  # type: ignore[arg-type]
    response = await handle_produce(None, request, ctx)
    return [p for t in response.responses for p in t.partition_responses]


def _run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


def test_acks_all_to_ten_partitions_shares_one_group_commit(tmp_path: Path) -> None:
    """Issue 12 item 10: an acks=all produce to 10 partitions flushes them together, so the file engine's
    group commit covers them in one pass (at most two), not one pass per partition."""
    async def main() -> None:
        engine = FileEngine(tmp_path / "data")
        try:
            broker = FakeBroker(BrokerConfig.from_settings(), engine)
            await broker.cluster.create_topic("ten", 10)
            batches = {i: bytes(build_batch(_records(2, int(time.time() * 1000)))) for i in range(10)}
            before = engine.flusher.passes
            results = await _produce(broker, _produce_request("ten", batches))
            assert [r.error_code for r in results] == [0] * 10
            passes = engine.flusher.passes - before
            assert 1 <= passes <= 2, f"{passes} fsync passes for one acks=all produce to 10 partitions"
        finally:
            await engine.close()
    _run(main)


def test_many_client_chosen_producer_ids_keep_the_state_bounded() -> None:
    """Issue 12 item 7: idempotent batches from 300 producer ids never allocated by InitProducerId are
    accepted (as Kafka accepts them), and the state keeps at most producer.state.max.entries producers,
    the least recently used going first."""
    async def main() -> None:
        broker = FakeBroker(BrokerConfig.from_settings(**{"producer.state.max.entries": 50}), MemoryEngine())
        await broker.cluster.create_topic("pids", 2)
        now = int(time.time() * 1000)
        for pid in range(10_000, 10_300):
            batch = bytes(build_batch(_records(1, now), producer_id=pid, producer_epoch=0, base_sequence=0))
            results = await _produce(broker, _produce_request("pids", {pid % 2: batch}, acks=1))
            assert results[0].error_code == 0, results[0]
            assert len(broker.cluster.producers) <= 50
        assert len(broker.cluster.producers) == 50
        # The newest producer is still known: its retry is answered with the original offset.
        last = bytes(build_batch(_records(1, now), producer_id=10_299, producer_epoch=0, base_sequence=0))
        (retry,) = await _produce(broker, _produce_request("pids", {1: last}, acks=1))
        assert retry.error_code == 0 and retry.base_offset == 149
        # The first was evicted: like an expired producer in Kafka, any sequence is accepted again.
        first = bytes(build_batch(_records(1, now), producer_id=10_000, producer_epoch=0, base_sequence=7))
        (again,) = await _produce(broker, _produce_request("pids", {0: first}, acks=1))
        assert again.error_code == 0 and again.base_offset == 150
    _run(main)


def test_registry_evicts_least_recently_used_producer_across_partitions() -> None:
    """The bound is on (partition, producer) entries over the whole broker; using a producer refreshes it."""
    registry = ProducerRegistry(max_entries=3)
    a, b = registry.partition(("t", 0), "t-0"), registry.partition(("t", 1), "t-1")
    a.record(1, 0, 0, 0, 0, 0)
    b.record(1, 0, 0, 0, 0, 0)
    a.record(2, 0, 0, 0, 1, 1)
    a.record(1, 0, 1, 1, 2, 2)        # producer 1 on t-0 is now the most recent
    b.record(3, 0, 0, 0, 1, 1)        # evicts producer 1 on t-1, the least recently used
    assert len(registry) == 3
    assert b.entry(1) is None and a.entry(1) is not None and a.entry(2) is not None
    registry.forget(("t", 0))
    assert len(registry) == 1
    b.record(4, 0, 0, 0, 2, 2)
    b.record(5, 0, 0, 0, 3, 3)
    assert len(registry) == 3 and b.entry(3) is not None

