"""Transactions through the `PartitionLog` interface, the same checks on every engine: last stable
offset, aborted transactions for read_committed fetches, ongoing transactions and producer entries,
and how truncation, DeleteRecords and retention change them (Kafka's UnifiedLog rules)."""

from __future__ import annotations

from typing import Any

import pytest

from storage.interface import AbortedTxn, PartitionLog, StorageEngine, open_engine
from tests.unit.test_storage_contract import ENGINES, ONE_BATCH_PER_SEGMENT, run
from tests.unit.test_txn_tracker import data, marker


@pytest.fixture(params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest, tmp_path: Any) -> StorageEngine:
    return open_engine(ENGINES[request.param](request, tmp_path))


async def state_of(log: PartitionLog) -> tuple[Any, ...]:
    """Everything the interface says about transactions, for comparisons."""
    return (log.last_stable_offset, log.ongoing_transactions(), log.producer_entries(),
            await log.aborted_transactions(log.log_start_offset, log.log_end_offset + 1))


# A workload of interleaved transactions: (what to append, the LSO expected after it).
WORKLOAD = [
    (lambda: data(-1, transactional=False), 2),  # 0-1 plain
    (lambda: data(10), 2),  # 2-3 txn 10 starts
    (lambda: data(11, n=1), 2),  # 4 txn 11 starts
    (lambda: data(12, transactional=False, n=1), 2),  # 5 idempotent, not transactional
    (lambda: marker(10, commit=False), 4),  # 6 abort 10: 11 still ongoing
    (lambda: data(10, seq=2), 4),  # 7-8 txn 10 again
    (lambda: marker(11, commit=True), 7),  # 9 commit 11
    (lambda: marker(13, commit=False), 7),  # 10 a marker for a producer without data here
    (lambda: marker(10, commit=False), 12),  # 11 abort 10: nothing ongoing
    (lambda: data(-1, transactional=False, n=3), 15),  # 12-14
]
ABORTED = [AbortedTxn(10, 2, 6, 4), AbortedTxn(10, 7, 11, 12)]


async def append_workload(log: PartitionLog) -> list[tuple[int, tuple[Any, ...]]]:
    """Append the workload, checking the LSO; returns (log end, state) after each append."""
    seen = [(log.log_end_offset, await state_of(log))]
    for build, lso in WORKLOAD:
        await log.append(build())
        assert log.last_stable_offset == lso, f"LSO after the append ending at {log.log_end_offset}"
        seen.append((log.log_end_offset, await state_of(log)))
    return seen


def test_aborted_transactions_follow_kafkas_range_rule(engine: StorageEngine) -> None:
    async def go() -> None:
        log = await engine.open_log("t", 0, {"segment.bytes": 300})
        await append_workload(log)
        assert await log.aborted_transactions(0, 15) == ABORTED
        assert await log.aborted_transactions(7, 15) == [ABORTED[1]]
        assert await log.aborted_transactions(0, 2) == []  # starts at 2: not below the bound
        assert await log.aborted_transactions(3, 4) == [ABORTED[0]]
        assert await log.aborted_transactions(12, 15) == []
        assert log.ongoing_transactions() == {}
        entries = {e.producer_id: e for e in log.producer_entries()}
        assert sorted(entries) == [10, 11, 12, 13]
        assert (entries[10].last_offset, entries[10].coordinator_epoch, entries[10].current_txn_first_offset) == (8, 7, -1)
        assert entries[12].last_sequence == 0 and entries[12].offset_delta == 0
        await engine.close()
    run(go())


def test_an_ongoing_transaction_holds_the_lso_and_is_listed(engine: StorageEngine) -> None:
    async def go() -> None:
        log = await engine.open_log("t", 0)
        await log.append(data(-1, transactional=False))
        await log.append(data(7, epoch=3))
        await log.append(data(-1, transactional=False))
        assert log.last_stable_offset == 2 and log.high_watermark == 6
        assert log.ongoing_transactions() == {7: (3, 2)}
        (entry,) = log.producer_entries()
        assert (entry.producer_id, entry.producer_epoch, entry.current_txn_first_offset) == (7, 3, 2)
        await engine.close()
    run(go())


def test_truncation_leaves_the_state_as_it_was_after_the_last_batch_kept(engine: StorageEngine) -> None:
    """Every batch boundary, newest first: the state after truncation is the one seen when the log
    last ended there (the aborted entries of later markers go, transactions they ended reopen)."""
    async def go() -> None:
        log = await engine.open_log("t", 0, {"segment.bytes": 300})
        seen = await append_workload(log)
        for end, state in reversed(seen[:-1]):
            await log.truncate_to(end)
            assert await state_of(log) == state, f"after truncating to {end}"
        for build, _ in WORKLOAD:  # and the log goes on as before
            await log.append(build())
        assert await state_of(log) == seen[-1][1]
        await engine.close()
    run(go())


def test_delete_records_drops_aborted_entries_below_the_log_start(engine: StorageEngine) -> None:
    async def go() -> None:
        log = await engine.open_log("t", 0, {"segment.bytes": ONE_BATCH_PER_SEGMENT})
        await append_workload(log)
        await log.delete_records_before(7)
        assert await log.aborted_transactions(0, 15) == [ABORTED[1]]
        await log.delete_records_before(12)
        assert await log.aborted_transactions(0, 15) == []
        assert sorted(e.producer_id for e in log.producer_entries()) == [10, 11, 12, 13], \
            "producer entries stay when the log start moves (Kafka 2.8+)"
        await engine.close()
    run(go())


def test_the_log_start_moved_past_an_ongoing_transaction(engine: StorageEngine) -> None:
    async def go() -> None:
        log = await engine.open_log("t", 0, {"segment.bytes": ONE_BATCH_PER_SEGMENT})
        await log.append(data(4))  # 0-1: ongoing
        for _ in range(3):
            await log.append(data(-1, transactional=False))  # 2-7
        await log.delete_records_before(5)
        assert log.last_stable_offset == 5, "max(log start, first unstable offset)"
        assert log.ongoing_transactions() == {4: (0, 0)}
        await log.delete_records_before(8)
        assert log.last_stable_offset == 8
        await log.append(marker(4, commit=False))  # 8
        assert log.last_stable_offset == log.high_watermark == 9
        assert await log.aborted_transactions(8, 9) == [AbortedTxn(4, 0, 8, 9)]
        await engine.close()
    run(go())


def test_retention_drops_aborted_entries_with_their_batches(engine: StorageEngine) -> None:
    async def go() -> None:
        log = await engine.open_log("t", 0, {"segment.bytes": ONE_BATCH_PER_SEGMENT, "retention.ms": -1,
                                             "retention.bytes": 0})
        await append_workload(log)
        await log.apply_retention(now_ms=10_000)
        assert log.log_start_offset == 15  # retention.bytes=0: everything (the file engine rolls first)
        assert await log.aborted_transactions(0, 15) == []
        await log.append(data(10, seq=4))
        await log.append(marker(10, commit=False))
        assert await log.aborted_transactions(0, 18) == [AbortedTxn(10, 15, 17, 18)]
        await engine.close()
    run(go())


def test_truncation_after_the_head_was_dropped_keeps_what_the_head_started(engine: StorageEngine) -> None:
    """A transaction begun in batches since deleted is still ongoing after a truncation (memory: the
    dropped head's state; file: the producer snapshot at a segment base)."""
    async def go() -> None:
        log = await engine.open_log("t", 0, {"segment.bytes": ONE_BATCH_PER_SEGMENT})
        await log.append(data(4))  # 0-1: ongoing
        await log.append(data(5, transactional=False))  # 2-3
        await log.append(data(-1, transactional=False))  # 4-5
        before = await state_of(log)
        await log.append(marker(4, commit=True))  # 6
        await log.delete_records_before(4)
        await log.truncate_to(6)
        assert log.ongoing_transactions() == {4: (0, 0)}
        assert await state_of(log) == (4,) + before[1:], "the LSO is now the log start"
        await engine.close()
    run(go())
