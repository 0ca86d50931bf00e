"""The transaction coordinator's state machine (`broker.transactions.state`) and its record formats."""

from __future__ import annotations

import pytest

from broker.transactions.records import (
    TxnLogRecord,
    TxnLogValue,
    decode_txn_record,
    partition_for,
    txn_key,
    txn_value,
)
from broker.transactions.state import (
    INT16_MAX,
    TransactionStateManager,
    TxnState,
    TxnTransit,
)
from protocol.errors import ErrorCode

MAX_TIMEOUT = 900_000
T = 60_000
TP = ("orders", 0)


def write(m: TransactionStateManager, transit: TxnTransit | None, ok: bool = True) -> TxnTransit:
    assert transit is not None
    m.begin(transit)
    m.write_done(transit, ok)
    return transit


def init(m: TransactionStateManager, tid: str = "t", now: int = 0, expected: tuple[int, int] | None = None,
         new_id: int = 1000) -> tuple[int, int]:
    decision = m.init_producer_id(tid, T, expected, now, new_id if m.needs_producer_id(tid) else None)
    assert decision.error is ErrorCode.NONE and not decision.fence, decision
    t = write(m, decision.transit)
    return t.producer_id, t.producer_epoch


def begin_txn(m: TransactionStateManager, pid: int, epoch: int, now: int = 0, tid: str = "t") -> None:
    error, transit = m.add_partitions(tid, pid, epoch, [TP], now)
    assert error is ErrorCode.NONE
    write(m, transit)


def test_display_names_are_kafkas() -> None:
    assert [s.display_name for s in TxnState] == [
        "Empty", "Ongoing", "PrepareCommit", "PrepareAbort", "CompleteCommit", "CompleteAbort", "Dead",
        "PrepareEpochFence"]
    assert TxnState.from_display_name("PrepareAbort") is TxnState.PREPARE_ABORT


def test_a_new_id_gets_epoch_zero_and_each_init_bumps_it() -> None:
    m = TransactionStateManager(MAX_TIMEOUT)
    assert init(m) == (1000, 0)
    assert init(m) == (1000, 1)
    assert m.get("t").last_producer_epoch == -1  # a bump without KIP-360 forgets the previous epoch


def test_timeouts_outside_the_range_are_refused() -> None:
    m = TransactionStateManager(MAX_TIMEOUT)
    for timeout in (0, -1, MAX_TIMEOUT + 1):
        assert m.init_producer_id("t", timeout, None, 0, 1000).error is ErrorCode.INVALID_TRANSACTION_TIMEOUT
    assert m.get("t") is None


def test_kip_360_resume_bumps_the_current_epoch_and_answers_a_retry_with_the_same() -> None:
    m = TransactionStateManager(MAX_TIMEOUT)
    pid, epoch = init(m)
    assert init(m, expected=(pid, epoch)) == (pid, 1)
    # The answer was lost: the client retries with its old epoch and gets the epoch it was given.
    assert init(m, expected=(pid, epoch)) == (pid, 1)
    # A third party with a stale epoch is fenced.
    assert m.init_producer_id("t", T, (pid, 5), 0, None).error is ErrorCode.PRODUCER_FENCED
    assert m.init_producer_id("t", T, (pid + 1, 1), 0, None).error is ErrorCode.PRODUCER_FENCED


def test_an_exhausted_epoch_rotates_to_a_new_producer_id() -> None:
    m = TransactionStateManager(MAX_TIMEOUT)
    pid, _ = init(m)
    m.get("t").producer_epoch = INT16_MAX - 1
    assert m.needs_producer_id("t")
    assert init(m, new_id=2000) == (2000, 0)
    assert m.get("t").last_producer_id == pid


def test_add_partitions_checks_identity_and_starts_the_transaction() -> None:
    m = TransactionStateManager(MAX_TIMEOUT)
    assert m.add_partitions("t", 1, 0, [TP], 0)[0] is ErrorCode.INVALID_PRODUCER_ID_MAPPING
    pid, epoch = init(m)
    assert m.add_partitions("t", pid + 1, epoch, [TP], 0)[0] is ErrorCode.INVALID_PRODUCER_ID_MAPPING
    assert m.add_partitions("t", pid, epoch + 1, [TP], 0)[0] is ErrorCode.PRODUCER_FENCED
    begin_txn(m, pid, epoch, now=5)
    txn = m.get("t")
    assert txn.state is TxnState.ONGOING and txn.partitions == {TP} and txn.start_ms == 5
    # Already in: answered without a write.
    assert m.add_partitions("t", pid, epoch, [TP], 9) == (ErrorCode.NONE, None)
    _, transit = m.add_partitions("t", pid, epoch, [("orders", 1)], 9)
    assert transit is not None and transit.start_ms == 5 and transit.partitions == {TP, ("orders", 1)}


def test_a_pending_write_makes_others_wait() -> None:
    m = TransactionStateManager(MAX_TIMEOUT)
    pid, epoch = init(m)
    _, transit = m.add_partitions("t", pid, epoch, [TP], 0)
    m.begin(transit)
    assert m.add_partitions("t", pid, epoch, [("x", 0)], 0)[0] is ErrorCode.CONCURRENT_TRANSACTIONS
    assert m.end_txn("t", pid, epoch, True, 0)[0] is ErrorCode.CONCURRENT_TRANSACTIONS
    assert m.init_producer_id("t", T, None, 0, None).error is ErrorCode.CONCURRENT_TRANSACTIONS
    m.write_done(transit, ok=False)
    assert m.get("t").state is TxnState.EMPTY  # a failed write changes nothing


@pytest.mark.parametrize("commit", [True, False])
def test_end_txn_prepares_then_completes_and_retries_are_answered(commit: bool) -> None:
    m = TransactionStateManager(MAX_TIMEOUT)
    pid, epoch = init(m)
    begin_txn(m, pid, epoch)
    error, transit = m.end_txn("t", pid, epoch, commit, 10)
    assert error is ErrorCode.NONE
    write(m, transit)
    prepared = TxnState.PREPARE_COMMIT if commit else TxnState.PREPARE_ABORT
    assert m.get("t").state is prepared and m.prepared() == ["t"]
    assert m.end_txn("t", pid, epoch, commit, 11) == (ErrorCode.CONCURRENT_TRANSACTIONS, None)
    assert m.end_txn("t", pid, epoch, not commit, 11) == (ErrorCode.INVALID_TXN_STATE, None)
    assert m.add_partitions("t", pid, epoch, [TP], 11)[0] is ErrorCode.CONCURRENT_TRANSACTIONS
    assert m.init_producer_id("t", T, None, 11, None).error is ErrorCode.CONCURRENT_TRANSACTIONS
    write(m, m.complete("t", 12))
    txn = m.get("t")
    assert txn.state is (TxnState.COMPLETE_COMMIT if commit else TxnState.COMPLETE_ABORT)
    assert txn.partitions == set()
    assert m.end_txn("t", pid, epoch, commit, 13) == (ErrorCode.NONE, None)
    assert m.end_txn("t", pid, epoch, not commit, 13) == (ErrorCode.INVALID_TXN_STATE, None)


def test_end_txn_without_a_transaction_is_invalid() -> None:
    m = TransactionStateManager(MAX_TIMEOUT)
    pid, epoch = init(m)
    assert m.end_txn("t", pid, epoch, True, 0) == (ErrorCode.INVALID_TXN_STATE, None)
    assert m.end_txn("t", pid, epoch - 1, True, 0) == (ErrorCode.PRODUCER_FENCED, None)


def test_init_during_an_ongoing_transaction_fences_and_aborts_it() -> None:
    m = TransactionStateManager(MAX_TIMEOUT)
    pid, epoch = init(m)
    begin_txn(m, pid, epoch)
    decision = m.init_producer_id("t", T, None, 20, None)
    assert decision.fence and decision.transit.state is TxnState.PREPARE_ABORT
    assert decision.transit.producer_epoch == epoch + 1
    write(m, decision.transit)
    # The zombie (old epoch) can neither end the transaction nor write to its partitions.
    assert m.end_txn("t", pid, epoch, True, 21)[0] is ErrorCode.PRODUCER_FENCED
    assert m.verify("t", pid, epoch, TP) is ErrorCode.INVALID_PRODUCER_EPOCH
    write(m, m.complete("t", 22))
    # The retry bumps again: the fencing epoch is never handed out.
    assert init(m) == (pid, epoch + 2)


def test_verify_accepts_only_the_ongoing_transactions_partitions() -> None:
    m = TransactionStateManager(MAX_TIMEOUT)
    pid, epoch = init(m)
    assert m.verify("t", pid, epoch, TP) is ErrorCode.INVALID_TXN_STATE
    begin_txn(m, pid, epoch)
    assert m.verify("t", pid, epoch, TP) is ErrorCode.NONE
    assert m.verify("t", pid, epoch, ("orders", 9)) is ErrorCode.INVALID_TXN_STATE
    assert m.verify("other", pid, epoch, TP) is ErrorCode.INVALID_PRODUCER_ID_MAPPING
    assert m.verify(None, pid, epoch, TP) is ErrorCode.INVALID_PRODUCER_ID_MAPPING
    write(m, m.end_txn("t", pid, epoch, True, 0)[1])
    assert m.verify("t", pid, epoch, TP) is ErrorCode.INVALID_TXN_STATE


def test_timed_out_and_expired_ids() -> None:
    m = TransactionStateManager(MAX_TIMEOUT)
    pid, epoch = init(m, now=0)
    begin_txn(m, pid, epoch, now=100)
    assert m.timed_out(100 + T) == []
    assert m.timed_out(101 + T) == ["t"]
    fence = m.fence(m.get("t"), 101 + T)
    assert fence.state is TxnState.PREPARE_ABORT and fence.producer_epoch == epoch + 1
    write(m, fence)
    write(m, m.complete("t", 200 + T))
    assert m.expired(200 + T + 999, 1000) == []
    (tombstone,) = m.expired(200 + T + 1000, 1000)
    write(m, tombstone)
    assert m.get("t") is None


def test_replay_rebuilds_the_metadata() -> None:
    m = TransactionStateManager(MAX_TIMEOUT)
    value = TxnLogValue(1000, 3, T, int(TxnState.PREPARE_COMMIT), frozenset({TP}), 50, 40)
    m.replay(TxnLogRecord("t", value))
    txn = m.get("t")
    assert (txn.producer_id, txn.producer_epoch, txn.state, txn.partitions, txn.start_ms) == (
        1000, 3, TxnState.PREPARE_COMMIT, {TP}, 40)
    assert m.prepared() == ["t"]
    m.replay(TxnLogRecord("t", None))
    assert m.get("t") is None


def test_record_formats_round_trip_and_match_kafkas_layout() -> None:
    value = TxnLogValue(1000, 2, 60000, int(TxnState.ONGOING), frozenset({("b", 3), ("a", 1), ("a", 0)}), 5, 4)
    data = txn_value(value)
    # version 0 | pid | epoch | timeout | status | [topic a: 0, 1], [topic b: 3] | last update | start
    assert data.hex() == (
        "0000" "00000000000003e8" "0002" "0000ea60" "01"
        "00000002" "0001" "61" "00000002" "00000000" "00000001" "0001" "62" "00000001" "00000003"
        "0000000000000005" "0000000000000004")
    assert txn_key("t").hex() == "0000" "0001" "74"
    assert decode_txn_record(txn_key("t"), data) == TxnLogRecord("t", value)
    assert decode_txn_record(txn_key("t"), None) == TxnLogRecord("t", None)
    empty = txn_value(TxnLogValue(1000, 2, 60000, int(TxnState.EMPTY), frozenset(), 5, -1))
    assert empty[2 + 8 + 2 + 4 + 1:][:4] == b"\xff\xff\xff\xff"  # Empty writes null partitions, as Kafka


def test_partition_for_uses_javas_string_hash() -> None:
    # "t".hashCode() == 116; Utils.abs(116) % 50 == 16
    assert partition_for("t", 50) == 16
