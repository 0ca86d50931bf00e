"""The transaction half of `storage.interface.PartitionLog` for engines that keep a log's producer state in
memory beside the log (the memory and PostgreSQL engines).

`TransactionState` answers the interface's transaction questions from three attributes its log class
sets up: ``_txns`` (the state after the last batch, `storage.transactions.TransactionTracker`),
``_txns_before`` (the state of the batches dropped from the head) and ``_aborted`` (the aborted
transactions whose markers are still in the log), with ``_start``, the log start offset.
"""

from __future__ import annotations

from storage.aborted_txns import AbortedTxnList, in_fetch_order
from storage.interface import AbortedTxn, ProducerSnapshotEntry
from storage.transactions import TransactionTracker


class TransactionState:
    """Mixed into a `PartitionLog` class (see the module docstring)."""

    _txns: TransactionTracker
    _txns_before: TransactionTracker
    _aborted: AbortedTxnList
    _start: int

    @property
    def last_stable_offset(self) -> int:
        return self._txns.last_stable_offset(self._start, self.high_watermark)  # type: ignore[attr-defined]

    async def aborted_transactions(self, start_offset: int, end_offset: int) -> list[AbortedTxn]:
        found: list[AbortedTxn] = []
        self._aborted.collect(max(start_offset, self._start), end_offset, found)
        return in_fetch_order(found)

    def ongoing_transactions(self) -> dict[int, tuple[int, int]]:
        return self._txns.ongoing()

    def producer_entries(self) -> list[ProducerSnapshotEntry]:
        return self._txns.entries()

    def forget_producer(self, producer_id: int) -> bool:
        self._txns_before.forget(producer_id)
        return self._txns.forget(producer_id)

    def expire_producers(self, now_ms: int, expiration_ms: int) -> int:
        self._txns_before.expire(now_ms, expiration_ms)
        return self._txns.expire(now_ms, expiration_ms)

    def _reset_transactions(self) -> None:
        """Forget every producer and aborted transaction (the log was closed)."""
        self._txns = TransactionTracker()
        self._txns_before = TransactionTracker()
        self._aborted = AbortedTxnList()
