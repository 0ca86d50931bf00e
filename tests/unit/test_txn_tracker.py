"""The transaction tracker (Kafka's ProducerStateManager rules, pure) and the aborted-transaction list
(Kafka's TransactionIndex search), without any engine."""

from __future__ import annotations

from protocol.records import Record, RecordBatch, build_batch
from protocol.records.control import build_marker
from storage.aborted_txns import ENTRY_SIZE, AbortedTxnList, encode_entry
from storage.interface import AbortedTxn, ProducerSnapshotEntry
from storage.transactions import TransactionTracker


def data(pid: int, epoch: int = 0, seq: int = 0, n: int = 2, transactional: bool = True, ts: int = 1000) -> bytearray:
    return build_batch([Record(i, ts + i, b"k", b"v") for i in range(n)], producer_id=pid, producer_epoch=epoch,
                       base_sequence=seq, transactional=transactional)


def marker(pid: int, epoch: int = 0, commit: bool = True, coordinator_epoch: int = 7, ts: int = 5000) -> bytearray:
    return build_marker(pid, epoch, commit, coordinator_epoch, ts)


class Feeder:
    """Feeds batches to a tracker at consecutive offsets, as a log would, collecting aborted entries."""

    def __init__(self, tracker: TransactionTracker | None = None, start: int = 0) -> None:
        self.tracker = tracker or TransactionTracker()
        self.next = start
        self.aborted: list[AbortedTxn] = []

    def __call__(self, buf: bytearray) -> int:
        batch = RecordBatch(buf)
        base = self.next
        ended = self.tracker.append(batch, base, batch.max_timestamp)
        if ended is not None:
            self.aborted.append(ended)
        self.next = base + batch.last_offset_delta + 1
        return base


def test_a_committed_transaction_leaves_no_aborted_entry_and_releases_the_lso() -> None:
    feed = Feeder()
    feed(data(-1, transactional=False))  # offsets 0-1: no producer id, ignored
    first = feed(data(10))  # 2-3
    feed(data(10, seq=2))  # 4-5: the same transaction
    assert feed.tracker.first_unstable_offset == first == 2
    assert feed.tracker.ongoing() == {10: (0, 2)}
    assert feed.tracker.last_stable_offset(0, feed.next) == 2
    feed(marker(10, commit=True))  # 6
    assert feed.aborted == []
    assert feed.tracker.first_unstable_offset is None
    assert feed.tracker.last_stable_offset(0, 7) == 7
    (entry,) = feed.tracker.entries()
    assert entry == ProducerSnapshotEntry(10, 0, 3, 5, 1, 5000, 7, -1), "the marker sets timestamp and coordinator epoch"


def test_an_aborted_transaction_records_its_range_and_the_lso_after_it() -> None:
    feed = Feeder()
    feed(data(10))  # 0-1
    feed(data(11, n=1))  # 2
    feed(marker(10, commit=False))  # 3: 11 still ongoing -> LSO 2
    feed(marker(11, commit=False))  # 4: nothing ongoing -> LSO 5
    assert feed.aborted == [AbortedTxn(10, 0, 3, 2), AbortedTxn(11, 2, 4, 5)]


def test_interleaved_producers_keep_their_own_first_offsets() -> None:
    feed = Feeder()
    feed(data(1))  # 0-1
    feed(data(2))  # 2-3
    feed(data(1, seq=2))  # 4-5
    feed(data(3))  # 6-7
    assert feed.tracker.ongoing() == {1: (0, 0), 2: (0, 2), 3: (0, 6)}
    feed(marker(2, commit=True))  # 8
    assert feed.tracker.first_unstable_offset == 0
    feed(marker(1, commit=False))  # 9: the earliest left is 3's at 6
    assert feed.aborted == [AbortedTxn(1, 0, 9, 6)]
    assert feed.tracker.first_unstable_offset == 6
    feed(data(1, seq=4))  # 10-11: a new transaction of 1, after 3's
    assert list(feed.tracker.ongoing()) == [3, 1]
    assert feed.tracker.first_unstable_offset == 6


def test_a_marker_without_data_changes_only_the_producer_entry() -> None:
    feed = Feeder()
    feed(data(5, transactional=False))  # an idempotent producer's batch: 0-1
    feed(marker(9, epoch=3, commit=False))  # 2: no ongoing transaction of 9 here
    feed(marker(5, epoch=0, commit=True, coordinator_epoch=4))  # 3
    assert feed.aborted == [] and feed.tracker.ongoing() == {}
    assert feed.tracker.entries() == [
        ProducerSnapshotEntry(5, 0, 1, 1, 1, 5000, 4, -1),
        ProducerSnapshotEntry(9, 3, -1, -1, 0, 5000, 7, -1),
    ]


def test_a_marker_with_a_new_epoch_sets_it_and_clears_the_last_batch() -> None:
    feed = Feeder()
    feed(data(5, epoch=1, seq=0, n=3))  # 0-2
    feed(marker(5, epoch=2, commit=False))  # 3: the coordinator bumped the epoch (a fenced producer)
    assert feed.aborted == [AbortedTxn(5, 0, 3, 4)]
    assert feed.tracker.entries() == [ProducerSnapshotEntry(5, 2, -1, -1, 0, 5000, 7, -1)]
    feed(data(5, epoch=2, seq=0, n=1))  # 4: the new epoch's first transaction
    assert feed.tracker.ongoing() == {5: (2, 4)}
    assert feed.tracker.entries()[0].last_sequence == 0


def test_the_lso_with_the_log_start_moved_past_an_ongoing_transaction() -> None:
    """Kafka's rule: max(log start, first unstable offset), never past the high watermark."""
    feed = Feeder()
    feed(data(1))  # 0-1, ongoing
    feed(data(-1, transactional=False, n=4))  # 2-5
    assert feed.tracker.last_stable_offset(0, 6) == 0
    assert feed.tracker.last_stable_offset(3, 6) == 3
    assert feed.tracker.last_stable_offset(6, 6) == 6


def test_snapshot_entries_round_trip_with_ongoing_transactions_in_offset_order() -> None:
    feed = Feeder()
    for pid in (30, 10, 20):
        feed(data(pid))
    feed(marker(10, commit=True))
    restored = TransactionTracker.from_entries(reversed(feed.tracker.entries()))
    assert restored == feed.tracker
    assert list(restored.ongoing()) == [30, 20]
    copy = feed.tracker.copy()
    feed(marker(30, commit=False))
    assert copy != feed.tracker and copy == restored


def test_control_batches_that_are_not_markers_are_ignored() -> None:
    feed = Feeder()
    feed(data(1))
    other = build_batch([Record(0, 1, b"\x00\x00\x00\x05", b"")], producer_id=1, producer_epoch=0,
                        transactional=True, control=True)  # control type 5: not a transaction marker
    feed(other)
    assert feed.tracker.ongoing() == {1: (0, 0)}


# --- the aborted-transaction list ---------------------------------------------------------------------


def test_an_entry_is_kafkas_34_byte_txnindex_layout() -> None:
    entry = encode_entry(AbortedTxn(0x0102030405060708, 17, 42, 40))
    assert len(entry) == ENTRY_SIZE == 34
    assert entry.hex() == ("0000" "0102030405060708" "0000000000000011" "000000000000002a" "0000000000000028")


def test_collect_matches_kafkas_range_rule_and_stops_when_complete() -> None:
    txns = AbortedTxnList()
    for t in (AbortedTxn(1, 0, 5, 3), AbortedTxn(2, 3, 9, 10), AbortedTxn(3, 12, 14, 15), AbortedTxn(4, 20, 21, 22)):
        txns.append(t)
    found: list[AbortedTxn] = []
    assert txns.collect(6, 10, found) is True  # entry 2's LSO (10) reaches the bound: 3 and 4 not read
    assert [t.producer_id for t in found] == [2]
    found = []
    assert txns.collect(0, 13, found) is True  # entry 3 matches, and its LSO (15) ends the search
    assert [t.producer_id for t in found] == [1, 2, 3]
    found = []
    assert txns.collect(0, 25, found) is False  # no entry reached 25: a later segment may hold more
    assert [t.producer_id for t in found] == [1, 2, 3, 4]
    found = []
    assert txns.collect(22, 30, found) is False and found == []
    assert [t.producer_id for t in txns.truncated(14)] == [1, 2]
    assert [t.producer_id for t in txns.without_markers_below(9)] == [2, 3, 4]


def test_decoding_keeps_the_sound_prefix() -> None:
    good = encode_entry(AbortedTxn(1, 0, 5, 6)) + encode_entry(AbortedTxn(2, 6, 8, 9))
    txns, problem = AbortedTxnList.decode(good + good[:20])
    assert len(txns) == 2 and "torn" in (problem or "")
    txns, problem = AbortedTxnList.decode(good[:34] + b"\x00\x07" + good[36:])
    assert len(txns) == 1 and "version" in (problem or "")
    txns, problem = AbortedTxnList.decode(good)
    assert problem is None and txns.encoded() == good
