"""Idempotent producer state: the rules of Kafka's ProducerStateManager / ProducerAppendInfo, without sockets."""

from __future__ import annotations

import pytest

from broker.producer_state import (
    INT32_MAX,
    NUM_BATCHES_TO_RETAIN,
    PRODUCER_ID_EXPIRATION_MS,
    PartitionProducerState,
    ProducerIdAllocator,
    ProducerRegistry,
    in_sequence,
    next_sequence,
)
from protocol.errors import ErrorCode, KafkaError

PID = 4242


def _append(state: PartitionProducerState, epoch: int, first: int, last: int, offset: int) -> None:
    """Check then record a batch the way the produce handler does; it must not be a duplicate."""
    assert state.check(PID, epoch, first, last, offset) is None
    count = (last - first) % (INT32_MAX + 1) + 1
    state.record(PID, epoch, first, last, offset, offset + count - 1)


def test_unknown_producer_is_accepted_at_any_sequence() -> None:
    """Kafka 4 accepts a producer id it has no state for at any sequence (no UNKNOWN_PRODUCER_ID)."""
    state = PartitionProducerState("t-0")
    assert state.check(PID, 0, 17, 20, 0) is None


def test_in_sequence_batches_are_accepted_and_a_gap_is_out_of_order() -> None:
    """The next batch must start right after the last sequence, else OUT_OF_ORDER_SEQUENCE_NUMBER."""
    state = PartitionProducerState("t-0")
    _append(state, 0, 0, 4, 0)
    _append(state, 0, 5, 9, 5)
    with pytest.raises(KafkaError) as info:
        state.check(PID, 0, 11, 12, 10)
    assert info.value.code is ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert "11 (incoming seq. number), 9 (current end sequence number)" in info.value.message


def test_retried_batch_returns_original_offsets() -> None:
    """A duplicate of one of the last five batches is not appended; Kafka answers its original offsets."""
    state = PartitionProducerState("t-0")
    _append(state, 0, 0, 2, 100)
    _append(state, 0, 3, 3, 103)
    duplicate = state.check(PID, 0, 0, 2, 104)
    assert duplicate is not None
    assert (duplicate.first_offset, duplicate.last_offset) == (100, 102)


def test_only_the_last_five_batches_are_remembered() -> None:
    """Kafka keeps NUM_BATCHES_TO_RETAIN (5) batches per producer; an older retry is out of order."""
    state = PartitionProducerState("t-0")
    for i in range(NUM_BATCHES_TO_RETAIN + 1):
        _append(state, 0, i, i, i)
    assert state.check(PID, 0, NUM_BATCHES_TO_RETAIN, NUM_BATCHES_TO_RETAIN, 9) is not None
    assert state.check(PID, 0, 1, 1, 9) is not None
    with pytest.raises(KafkaError) as info:
        state.check(PID, 0, 0, 0, 9)
    assert info.value.code is ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER


def test_duplicate_needs_the_same_sequence_range() -> None:
    """A batch overlapping a stored one without the same first and last sequence is not a duplicate."""
    state = PartitionProducerState("t-0")
    _append(state, 0, 0, 4, 0)
    with pytest.raises(KafkaError) as info:
        state.check(PID, 0, 0, 3, 5)
    assert info.value.code is ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER


def test_older_epoch_is_invalid_producer_epoch() -> None:
    """A batch from an epoch older than the partition has seen -> INVALID_PRODUCER_EPOCH (Kafka 2.7+)."""
    state = PartitionProducerState("t-0")
    _append(state, 3, 0, 0, 0)
    with pytest.raises(KafkaError) as info:
        state.check(PID, 2, 1, 1, 1)
    assert info.value.code is ErrorCode.INVALID_PRODUCER_EPOCH
    assert "is 2, which is smaller than the last seen epoch 3" in info.value.message


def test_new_epoch_must_start_at_sequence_zero() -> None:
    """A bumped epoch starting at a non-zero sequence -> OUT_OF_ORDER_SEQUENCE_NUMBER; at 0 it is accepted."""
    state = PartitionProducerState("t-0")
    _append(state, 0, 0, 9, 0)
    with pytest.raises(KafkaError) as info:
        state.check(PID, 1, 10, 10, 10)
    assert info.value.code is ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert "new epoch" in info.value.message
    _append(state, 1, 0, 0, 10)
    entry = state.entry(PID)
    assert entry is not None and entry.epoch == 1 and len(entry.batches) == 1


def test_old_epoch_batches_are_not_duplicates_after_a_bump() -> None:
    """Duplicates match only within the current epoch (ProducerStateEntry.findDuplicateBatch)."""
    state = PartitionProducerState("t-0")
    _append(state, 0, 0, 0, 0)
    _append(state, 1, 0, 0, 1)
    with pytest.raises(KafkaError) as info:
        state.check(PID, 0, 0, 0, 2)
    assert info.value.code is ErrorCode.INVALID_PRODUCER_EPOCH


def test_sequences_wrap_at_int32_max() -> None:
    """After sequence INT32_MAX the next batch starts at 0 (Kafka's inSequence)."""
    assert next_sequence(INT32_MAX) == 0
    assert next_sequence(INT32_MAX - 1, 3) == 1
    assert in_sequence(INT32_MAX, 0)
    assert not in_sequence(INT32_MAX, 1)
    state = PartitionProducerState("t-0")
    state.record(PID, 0, INT32_MAX - 1, INT32_MAX, 0, 1)
    assert state.check(PID, 0, 0, 4, 2) is None
    state.record(PID, 0, 0, 4, 2, 6)
    with pytest.raises(KafkaError):
        state.check(PID, 0, 6, 6, 7)


def test_a_batch_spanning_the_wrap_is_in_sequence() -> None:
    """A batch whose sequences wrap (first near INT32_MAX, last small) is followed by last + 1."""
    state = PartitionProducerState("t-0")
    state.record(PID, 0, INT32_MAX - 1, 2, 0, 4)
    assert state.check(PID, 0, 3, 3, 5) is None
    assert state.check(PID, 0, INT32_MAX - 1, 2, 5) is not None


def test_idle_producers_expire() -> None:
    """State unused for producer.id.expiration.ms is dropped; the producer is then unknown again."""
    state = PartitionProducerState("t-0")
    state.record(PID, 0, 0, 0, 0, 0, now_ms=1_000)
    state.record(PID + 1, 0, 0, 0, 1, 1, now_ms=PRODUCER_ID_EXPIRATION_MS)
    assert state.maybe_expire(PRODUCER_ID_EXPIRATION_MS + 1_000) == 1
    assert state.entry(PID) is None and state.entry(PID + 1) is not None
    # An unknown producer is accepted at any sequence again.
    assert state.check(PID, 0, 50, 50, 2, now_ms=PRODUCER_ID_EXPIRATION_MS + 2_000) is None


def test_expiry_runs_at_most_once_per_check_interval() -> None:
    """Expiry scans happen every producer.id.expiration.check.interval.ms, not on every append."""
    state = PartitionProducerState("t-0")
    assert state.maybe_expire(10_000_000, expiration_ms=1) == 0  # first scan: nothing yet
    state.record(PID, 0, 0, 0, 0, 0, now_ms=10_000_000)
    assert state.maybe_expire(10_000_010, expiration_ms=1) == 0  # within the interval: no scan
    assert state.maybe_expire(10_000_000 + 600_000, expiration_ms=1) == 1


def test_producer_ids_are_monotonic_from_1000_within_reserved_blocks() -> None:
    """Ids start at 1000 and come only from a block whose end was reserved (persisted) first."""
    ids = ProducerIdAllocator(block_size=2)
    assert ids.needs_block()
    with pytest.raises(RuntimeError):
        ids.allocate()
    ids.reserved(ids.next_block_end())
    assert [ids.allocate() for _ in range(2)] == [1000, 1001]
    assert ids.needs_block() and ids.next_block_end() == 1004


def test_a_restarted_allocator_continues_after_every_reserved_id() -> None:
    """After a restart, ids continue past the reserved block end, so no id is ever handed out twice."""
    ids = ProducerIdAllocator()
    ids.restore(2000)
    ids.reserved(ids.next_block_end())
    assert ids.allocate() == 2000


def test_state_is_rebuilt_from_stored_batch_headers() -> None:
    """Replaying stored batches restores the last batches per producer, so a retry after a restart is
    recognised as a duplicate with its original offsets."""
    from protocol.records import Record, build_batch, set_base_offset

    first = build_batch([Record(0, 1, b"k", b"v"), Record(1, 1, b"k", b"v")], producer_id=PID, producer_epoch=0,
                        base_sequence=0)
    set_base_offset(first, 0, 10)
    state = PartitionProducerState("t-0")
    assert state.rebuild_from([bytes(first)], now_ms=5) == 1
    duplicate = state.check(PID, 0, 0, 1, 12, 6)
    assert duplicate is not None and duplicate.first_offset == 10
    assert state.check(PID, 0, 2, 2, 12, 6) is None


def test_registry_keeps_one_state_per_partition() -> None:
    """The cluster state's registry keeps partitions apart by key and forgets deleted ones."""
    registry = ProducerRegistry()
    a = registry.partition(("topic-id", 0), "t-0")
    assert registry.partition(("topic-id", 0)) is a
    assert registry.partition(("topic-id", 1)) is not a
    registry.forget(("topic-id", 0))
    assert registry.partition(("topic-id", 0)) is not a
    assert isinstance(registry, ProducerRegistry)
