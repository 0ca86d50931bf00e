"""Retention and DeleteRecords on the file engine, seen through real clients and a real broker process.

Kafka's rules: retention deletes whole closed segments, oldest first, so the log start offset (what
ListOffsets "earliest" and ``get_watermark_offsets`` report as the low watermark) jumps to a segment's
base offset; ``retention.bytes`` deletes while the partition would still hold at least that many bytes
without the segment, ``retention.ms`` deletes segments whose largest record timestamp is older than
that. A consumer at an offset below the log start gets OFFSET_OUT_OF_RANGE and applies
``auto.offset.reset``. DeleteRecords moves the log start offset to any offset, and it is durable.

Topics are created with AdminClient and small ``segment.bytes``; the broker checks retention every
300 ms. Every record goes in its own batch (one produce, one flush) so segments hold several batches.
Segment base offsets are read from the partition directory's file names (Kafka's layout).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.compat.test_durability import (
    CONFLUENT_FAST,
    RestartableBroker,
    create_topic,
    read_partitions,
    unique_topic,
    watermarks,
)
from tests.waiting import Pending, wait_until

CHECK_INTERVAL = ("--set", "log.retention.check.interval.ms=300")
SETTLE_TIMEOUT_S = 15.0  # retention must have done its work this soon after the last produce
SEGMENT_BYTES = 2048
VALUE = 200  # bytes per value: about 8 single-record batches per segment
DAY_MS = 86_400_000


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RestartableBroker]:
    """A broker on a data directory checking retention every 300 ms; stopped and checked at the end."""
    proc = RestartableBroker(tmp_path, *CHECK_INTERVAL)
    yield proc
    proc.close()


def produce_each(bootstrap: str, topic: str, values: list[bytes], *, partition: int = 0,
                 timestamp: int | None = None) -> dict[int, bytes]:
    """Produce each value as its own batch (acks=all, flushed one by one); returns offset -> value."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0, **CONFLUENT_FAST})
    acked: dict[int, bytes] = {}
    errors: list[Any] = []

    def report(err: Any, msg: Any) -> None:
        if err is None:
            acked[msg.offset()] = msg.value()
        else:
            errors.append(err)

    for value in values:
        producer.produce(topic, value, partition=partition, on_delivery=report,
                         **({"timestamp": timestamp} if timestamp is not None else {}))
        assert producer.flush(10) == 0, "a record was not acknowledged within 10 s"
    assert not errors and len(acked) == len(values), f"acknowledged {len(acked)} of {len(values)}: {errors[:3]}"
    return acked


def values(prefix: str, count: int, start: int = 0) -> list[bytes]:
    return [f"{prefix}-{n:06d}-".encode().ljust(VALUE, b"x") for n in range(start, start + count)]


def segment_files(broker: RestartableBroker, topic: str, partition: int = 0) -> list[tuple[int, int]]:
    """(base offset, size) of each ``.log`` file of a partition, oldest first; a file that retention
    deletes between the listing and its stat is left out."""
    directory = broker.data_dir / f"{topic}-{partition}"
    found = []
    for path in directory.glob("*.log"):
        try:
            found.append((int(path.stem), path.stat().st_size))
        except FileNotFoundError:
            continue
    return sorted(found)


def wait_for(check: Callable[[], tuple[bool, str]], what: str) -> None:
    """Poll ``check`` (done, description) until done; fail with the last description after
    ``SETTLE_TIMEOUT_S``."""
    def done() -> bool | Pending:
        finished, state = check()
        return finished or Pending(state)

    wait_until(done, SETTLE_TIMEOUT_S, what, interval=0.1)


def low_watermark(broker: RestartableBroker, topic: str, partitions: int = 1) -> int:
    return watermarks(broker.bootstrap, topic, partitions)[0][0]


def consume_first(bootstrap: str, topic: str, offset: int, reset: str, timeout: float = 10.0) -> Any:
    """The first message or error event a confluent consumer assigned at ``offset`` gets."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("no-group"),
                         "enable.auto.commit": False, "auto.offset.reset": reset, "fetch.wait.max.ms": 100,
                         **CONFLUENT_FAST})
    try:
        consumer.assign([TopicPartition(topic, 0, offset)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None:
                return msg
        raise AssertionError(f"confluent consumer at {topic}[0]@{offset} got nothing within {timeout}s")
    finally:
        consumer.close()


def check_reads_from_new_start(broker: RestartableBroker, topic: str, acked: dict[int, bytes], start: int) -> None:
    """Kafka: reading from 0 below the log start is OFFSET_OUT_OF_RANGE; with auto.offset.reset=error the
    consumer reports it, with earliest it starts at the log start; everything from there is intact."""
    from confluent_kafka import KafkaError

    first = consume_first(broker.bootstrap, topic, 0, "earliest")
    assert first.error() is None and first.offset() == start, (
        f"auto.offset.reset=earliest from offset 0: expected the first record at {start}, "
        f"got offset {first.offset()} error {first.error()}")
    refused = consume_first(broker.bootstrap, topic, 0, "error")
    assert refused.error() is not None and refused.error().code() == KafkaError._AUTO_OFFSET_RESET, (
        f"auto.offset.reset=error from offset 0 below log start {start}: expected an offset-reset error "
        f"(the broker answered OFFSET_OUT_OF_RANGE), got offset {refused.offset()} error {refused.error()}")
    assert "out of range" in refused.error().str().lower(), f"unexpected reason: {refused.error().str()}"
    records = read_partitions(broker.bootstrap, topic, partitions=1)[0]
    assert records and records[0][0] == start, f"read from the low watermark started at {records[:1]}, not {start}"
    stored = dict(records)
    expected = {o: v for o, v in acked.items() if o >= start}
    assert stored == expected, (f"records from {start} differ: {len(stored)} stored, {len(expected)} expected; "
                                f"first offsets stored {sorted(stored)[:3]}, expected {sorted(expected)[:3]}")


def test_retention_bytes_deletes_whole_oldest_segments(broker: RestartableBroker) -> None:
    """Kafka (retention.bytes): the oldest closed segments go while the partition would keep at least
    retention.bytes without them; the log start jumps to the first kept segment's base offset."""
    topic = unique_topic("retention-bytes")
    retention_bytes = 4 * SEGMENT_BYTES
    create_topic(broker.bootstrap, topic, 1, {"segment.bytes": str(SEGMENT_BYTES),
                                              "retention.bytes": str(retention_bytes), "retention.ms": "-1"})
    acked = produce_each(broker.bootstrap, topic, values("bytes", 120))

    def settled() -> tuple[bool, str]:
        segments = segment_files(broker, topic)
        low = low_watermark(broker, topic)
        total = sum(size for _, size in segments)
        # Nothing left to delete: without the oldest closed segment, less than retention.bytes would remain.
        done = len(segments) == 1 or total - segments[0][1] < retention_bytes
        return done and low == segments[0][0], f"low watermark {low}, segments (base, size) {segments}"

    wait_for(settled, "retention.bytes deleting the oldest segments")
    segments = segment_files(broker, topic)
    start = segments[0][0]
    assert start > 0, f"retention deleted nothing: segments {segments}"
    assert sum(size for _, size in segments) >= retention_bytes, (
        f"retention deleted too much: {sum(s for _, s in segments)} bytes left, retention.bytes {retention_bytes}")
    check_reads_from_new_start(broker, topic, acked, start)
    # More data moves it on again, still to a segment boundary.
    acked.update(produce_each(broker.bootstrap, topic, values("bytes", 60, 120)))

    def moved_on() -> tuple[bool, str]:
        done, state = settled()
        return done and segment_files(broker, topic)[0][0] > start, state

    wait_for(moved_on, "retention.bytes deleting segments again after more data")
    assert broker.stop() == 0


def test_retention_ms_deletes_segments_of_old_records_only(broker: RestartableBroker) -> None:
    """Kafka (retention.ms): a closed segment whose largest record timestamp is older than retention.ms
    goes; records produced with create times ten days in the past (accepted: the default
    message.timestamp.before.max.ms allows any past time) fill several segments that go, and the
    segment holding old records and the first recent one stays (its largest timestamp is recent)."""
    topic = unique_topic("retention-ms")
    # segment.ms above the records' age: otherwise the first recent record rolls a segment (Kafka measures
    # segment.ms from the first batch's timestamp), and no segment would mix old and recent records.
    create_topic(broker.bootstrap, topic, 1, {"segment.bytes": str(SEGMENT_BYTES), "retention.ms": str(DAY_MS),
                                              "segment.ms": str(30 * DAY_MS)})
    old = produce_each(broker.bootstrap, topic, values("old", 40), timestamp=int(time.time() * 1000) - 10 * DAY_MS)
    recent = produce_each(broker.bootstrap, topic, values("recent", 30, 40))
    first_recent = min(recent)
    assert first_recent == 40, f"recent records start at {first_recent}"

    def settled() -> tuple[bool, str]:
        segments = segment_files(broker, topic)
        low = low_watermark(broker, topic)
        keeper = max(base for base, _ in segments if base <= first_recent)
        return segments[0][0] == keeper and low == keeper, f"low watermark {low}, segments {segments}"

    wait_for(settled, "retention.ms deleting the segments of old records")
    start = low_watermark(broker, topic)
    assert 0 < start < first_recent, (f"log start {start}: expected the base of the segment that mixes old "
                                      f"records and the first recent one ({first_recent}), in (0, {first_recent})")
    check_reads_from_new_start(broker, topic, {**old, **recent}, start)
    assert broker.stop() == 0


def test_delete_records_moves_low_watermark_and_survives_kill_9(
        broker: RestartableBroker) -> None:
    """Kafka (DeleteRecords): the log start moves to the requested offset, even inside a segment, and
    the answer's low watermark says so; it is persisted before the answer, so a SIGKILL right after
    keeps it. Segments wholly below it are deleted by the next retention check."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    topic = unique_topic("delete-records")
    create_topic(broker.bootstrap, topic, 1, {"segment.bytes": str(SEGMENT_BYTES)})
    acked = produce_each(broker.bootstrap, topic, values("dr", 60))
    segments = segment_files(broker, topic)
    target = next(base for base, _ in segments if base > 30) + 3  # inside a segment, not at its base
    admin = AdminClient({"bootstrap.servers": broker.bootstrap, "log_level": 0})
    result = admin.delete_records([TopicPartition(topic, 0, target)], operation_timeout=10)
    deleted = next(iter(result.values())).result(10)
    assert deleted.low_watermark == target, f"DeleteRecords answered low watermark {deleted.low_watermark}, expected {target}"
    broker.kill()
    broker.start()
    assert low_watermark(broker, topic) == target, f"low watermark after kill -9: expected {target}"
    check_reads_from_new_start(broker, topic, acked, target)

    def below_gone() -> tuple[bool, str]:
        now = segment_files(broker, topic)
        return now[0][0] <= target < (now[1][0] if len(now) > 1 else 1 << 62), f"segments {now}"

    wait_for(below_gone, "retention deleting the segments below the DeleteRecords offset")
    broker.kill()
    broker.start()
    assert low_watermark(broker, topic) == target, f"low watermark after the second kill -9: expected {target}"
    assert broker.stop() == 0



def test_retention_ms_empties_the_active_segment_too(broker: RestartableBroker) -> None:
    """Kafka (UnifiedLog.deleteOldSegments): when the active segment is wholly past retention.ms the log
    rolls a new empty segment at the log end offset and deletes the old one, so a topic with
    retention.ms=1000 empties within a retention check: log start offset = log end offset. The next
    record gets the next offset."""
    topic = unique_topic("retention-active")
    create_topic(broker.bootstrap, topic, 1, {"retention.ms": "1000"})
    acked = produce_each(broker.bootstrap, topic, values("active", 5))
    end = max(acked) + 1
    assert len(segment_files(broker, topic)) == 1, "the records should all sit in the active segment"

    def emptied() -> tuple[bool, str]:
        low, high = watermarks(broker.bootstrap, topic, 1)[0]
        segments = segment_files(broker, topic)
        return (low, high) == (end, end) and segments == [(end, 0)], (
            f"watermarks (low, high) {(low, high)}, expected {(end, end)}; segments (base, size) {segments}")

    wait_for(emptied, "retention.ms rolling and deleting the active segment")
    # (Not read back: it is itself past retention a second later.)
    late = produce_each(broker.bootstrap, topic, values("after", 1))
    assert list(late) == [end], f"the next record got offset {list(late)}, expected {end}"
    assert broker.stop() == 0
