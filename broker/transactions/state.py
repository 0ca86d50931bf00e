"""The transaction coordinator's state machine: every transactional id's metadata and the rules that move
it. Pure: no I/O, no clock (callers pass ``now`` in ms), no asyncio; `broker.transactions.coordinator`
writes what it decides to ``__transaction_state`` and the partitions' logs.

Kafka behaviours (``TransactionCoordinator``, ``TransactionMetadata``, transaction.version 0/1, where
the epoch is bumped by InitProducerId and by fencing, not by every transaction):

- A change is decided as a `TxnTransit` (the metadata it will leave behind) and marked pending on the
  transactional id; it is applied by `write_done` once the transit is durable in ``__transaction_state``.
  While a change is pending, any other request on that id answers CONCURRENT_TRANSACTIONS (retriable).
- InitProducerId: a new id gets a producer id and epoch 0. Empty / CompleteCommit / CompleteAbort bump the
  epoch (and rotate to a new producer id once the epoch is exhausted). KIP-360: a request carrying its
  producer id and epoch resumes after an error: a matching current epoch is bumped, the previous epoch
  is a retry answered with the current one, anything else is PRODUCER_FENCED. PrepareCommit /
  PrepareAbort answer CONCURRENT_TRANSACTIONS. Ongoing is fenced: the epoch is bumped, the transaction
  aborted with that epoch, and the caller answered CONCURRENT_TRANSACTIONS so that its retry bumps the
  epoch again (the fencing epoch is never handed out).
- AddPartitionsToTxn: unknown id or another producer id -> INVALID_PRODUCER_ID_MAPPING; another epoch ->
  PRODUCER_FENCED; PrepareCommit / PrepareAbort -> CONCURRENT_TRANSACTIONS; partitions already in an
  Ongoing transaction answer at once without a write; else the transaction becomes (or stays) Ongoing,
  with its start time set when it begins.
- EndTxn: the same identity checks, then Ongoing -> PrepareCommit / PrepareAbort; a retry after
  completion answers NONE for the same outcome; a retry during the markers answers
  CONCURRENT_TRANSACTIONS; the opposite outcome, or an Empty transaction, answers INVALID_TXN_STATE.
- After PrepareCommit / PrepareAbort are durable, markers go to every partition, then the transaction is
  CompleteCommit / CompleteAbort with no partitions (`complete`).
- Transactions Ongoing past their timeout are aborted with a bumped epoch (`timed_out`, `fence`); ids
  with nothing in progress unused for ``transactional.id.expiration.ms`` are removed (`expired`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from broker.transactions.records import TopicPartition, TxnLogRecord, TxnLogValue
from protocol.errors import ErrorCode

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
NO_START = -1
INT16_MAX = 32767


class TxnState(enum.IntEnum):
    """Kafka's transaction states, with the ids ``__transaction_state`` stores."""

    EMPTY = 0
    ONGOING = 1
    PREPARE_COMMIT = 2
    PREPARE_ABORT = 3
    COMPLETE_COMMIT = 4
    COMPLETE_ABORT = 5
    DEAD = 6
    PREPARE_EPOCH_FENCE = 7

    @property
    def display_name(self) -> str:
        """The name DescribeTransactions and ListTransactions use (``Ongoing``, ``PrepareCommit``...)."""
        return "".join(word.capitalize() for word in self.name.split("_"))

    @classmethod
    def from_display_name(cls, name: str) -> TxnState | None:
        for state in cls:
            if state.display_name == name:
                return state
        return None


PREPARED = (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT)
COMPLETED = (TxnState.COMPLETE_COMMIT, TxnState.COMPLETE_ABORT)
IDLE = (TxnState.EMPTY, *COMPLETED)


def epoch_exhausted(epoch: int) -> bool:
    """Kafka keeps the last epoch for fencing: a producer never gets more than INT16_MAX - 1."""
    return epoch >= INT16_MAX - 1


@dataclass(frozen=True, slots=True)
class TxnTransit:
    """What a transactional id's metadata becomes once this change is written."""

    transactional_id: str
    producer_id: int
    last_producer_id: int
    producer_epoch: int
    last_producer_epoch: int
    timeout_ms: int
    state: TxnState
    partitions: frozenset[TopicPartition]
    start_ms: int
    last_update_ms: int

    def log_value(self) -> TxnLogValue:
        return TxnLogValue(self.producer_id, self.producer_epoch, self.timeout_ms, int(self.state), self.partitions,
                           self.last_update_ms, self.start_ms, self.last_producer_id)


@dataclass(slots=True)
class TxnMetadata:
    """One transactional id as the coordinator holds it."""

    transactional_id: str
    producer_id: int
    last_producer_id: int = NO_PRODUCER_ID
    producer_epoch: int = NO_PRODUCER_EPOCH
    last_producer_epoch: int = NO_PRODUCER_EPOCH
    timeout_ms: int = 0
    state: TxnState = TxnState.EMPTY
    partitions: set[TopicPartition] = field(default_factory=set)
    start_ms: int = NO_START
    last_update_ms: int = 0
    pending: TxnState | None = None  # the state of a transit being written

    def transit(self, **changes: object) -> TxnTransit:
        base = TxnTransit(self.transactional_id, self.producer_id, self.last_producer_id, self.producer_epoch,
                          self.last_producer_epoch, self.timeout_ms, self.state, frozenset(self.partitions),
                          self.start_ms, self.last_update_ms)
        return replace(base, **changes)  # type: ignore[arg-type]

    def apply(self, t: TxnTransit) -> None:
        self.producer_id = t.producer_id
        self.last_producer_id = t.last_producer_id
        self.producer_epoch = t.producer_epoch
        self.last_producer_epoch = t.last_producer_epoch
        self.timeout_ms = t.timeout_ms
        self.state = t.state
        self.partitions = set(t.partitions)
        self.start_ms = t.start_ms
        self.last_update_ms = t.last_update_ms


@dataclass(frozen=True, slots=True)
class InitDecision:
    """InitProducerId's outcome: an error, or a transit to write. ``fence`` means the transit aborts an
    Ongoing transaction (markers follow) and the client is answered CONCURRENT_TRANSACTIONS."""

    error: ErrorCode = ErrorCode.NONE
    transit: TxnTransit | None = None
    fence: bool = False


class TransactionStateManager:
    """Every transactional id's metadata, and the decisions of the transaction APIs."""

    def __init__(self, max_timeout_ms: int) -> None:
        self.max_timeout_ms = max_timeout_ms
        self.txns: dict[str, TxnMetadata] = {}

    def get(self, transactional_id: str) -> TxnMetadata | None:
        return self.txns.get(transactional_id)

    def valid_timeout(self, timeout_ms: int) -> bool:
        return 0 < timeout_ms <= self.max_timeout_ms

    def needs_producer_id(self, transactional_id: str) -> bool:
        """Whether InitProducerId for this id may hand out a new producer id (the caller allocates one
        first, as allocation is durable and asynchronous)."""
        txn = self.txns.get(transactional_id)
        return txn is None or epoch_exhausted(txn.producer_epoch)

    # ------------------------------------------------------------ InitProducerId

    def init_producer_id(self, transactional_id: str, timeout_ms: int, expected: tuple[int, int] | None,
                         now: int, new_producer_id: int | None) -> InitDecision:
        if not self.valid_timeout(timeout_ms):
            return InitDecision(ErrorCode.INVALID_TRANSACTION_TIMEOUT)
        txn = self.txns.get(transactional_id)
        if txn is None:
            if new_producer_id is None:
                raise ValueError("a new transactional id needs a producer id")
            txn = self.txns[transactional_id] = TxnMetadata(transactional_id, new_producer_id, last_update_ms=now,
                                                            timeout_ms=timeout_ms)
        if txn.pending is not None:
            return InitDecision(ErrorCode.CONCURRENT_TRANSACTIONS)
        if expected is not None and not self._resumable(txn, expected):
            return InitDecision(ErrorCode.PRODUCER_FENCED)
        if txn.state in PREPARED:
            return InitDecision(ErrorCode.CONCURRENT_TRANSACTIONS)
        if txn.state is TxnState.ONGOING:
            return InitDecision(transit=self.fence(txn, now), fence=True)
        if txn.state not in IDLE:
            return InitDecision(ErrorCode.CONCURRENT_TRANSACTIONS)
        if epoch_exhausted(txn.producer_epoch) and (expected is None or expected[1] == txn.producer_epoch):
            if new_producer_id is None:
                raise ValueError("an exhausted epoch needs a new producer id")
            return InitDecision(transit=txn.transit(
                producer_id=new_producer_id, last_producer_id=txn.producer_id, producer_epoch=0,
                last_producer_epoch=txn.producer_epoch if expected is not None else NO_PRODUCER_EPOCH,
                timeout_ms=timeout_ms, state=TxnState.EMPTY, partitions=frozenset(), start_ms=NO_START,
                last_update_ms=now))
        bumped = txn.producer_epoch + 1
        if expected is None:
            epoch, last_epoch = bumped, NO_PRODUCER_EPOCH
        elif txn.producer_epoch == NO_PRODUCER_EPOCH or expected[1] == txn.producer_epoch:
            epoch, last_epoch = bumped, txn.producer_epoch
        elif expected[1] == txn.last_producer_epoch:
            # A retry of an InitProducerId whose answer was lost: the epoch it was given stands.
            epoch, last_epoch = txn.producer_epoch, txn.last_producer_epoch
        else:
            return InitDecision(ErrorCode.PRODUCER_FENCED)
        return InitDecision(transit=txn.transit(
            producer_epoch=epoch, last_producer_epoch=last_epoch, timeout_ms=timeout_ms, state=TxnState.EMPTY,
            partitions=frozenset(), start_ms=NO_START, last_update_ms=now))

    @staticmethod
    def _resumable(txn: TxnMetadata, expected: tuple[int, int]) -> bool:
        producer_id, epoch = expected
        return (txn.producer_epoch == NO_PRODUCER_EPOCH or producer_id == txn.producer_id
                or (producer_id == txn.last_producer_id and epoch_exhausted(epoch)))

    # ------------------------------------------------------------ AddPartitionsToTxn / AddOffsetsToTxn

    def _identify(self, transactional_id: str, producer_id: int, epoch: int) -> tuple[ErrorCode, TxnMetadata | None]:
        txn = self.txns.get(transactional_id)
        if txn is None or txn.state is TxnState.DEAD or txn.producer_id != producer_id:
            return ErrorCode.INVALID_PRODUCER_ID_MAPPING, None
        if txn.producer_epoch != epoch:
            return ErrorCode.PRODUCER_FENCED, None
        if txn.pending is not None or txn.state in PREPARED:
            return ErrorCode.CONCURRENT_TRANSACTIONS, None
        return ErrorCode.NONE, txn

    def add_partitions(self, transactional_id: str, producer_id: int, epoch: int,
                       partitions: Iterable[TopicPartition], now: int) -> tuple[ErrorCode, TxnTransit | None]:
        """(NONE, None) when nothing needs writing; (NONE, transit) to write; (error, None)."""
        error, txn = self._identify(transactional_id, producer_id, epoch)
        if txn is None:
            return error, None
        added = set(partitions)
        if txn.state is TxnState.ONGOING and added <= txn.partitions:
            return ErrorCode.NONE, None
        start = now if txn.state in IDLE else txn.start_ms
        return ErrorCode.NONE, txn.transit(state=TxnState.ONGOING, partitions=frozenset(txn.partitions | added),
                                           start_ms=start, last_update_ms=now)

    def verify_partitions(self, transactional_id: str, producer_id: int, epoch: int,
                          partitions: Iterable[TopicPartition]) -> dict[TopicPartition, ErrorCode]:
        """AddPartitionsToTxn v4+ ``verify_only``: the identity checks of AddPartitionsToTxn for every
        partition, then NONE for the partitions in the transaction and INVALID_TXN_STATE for the others
        (Kafka's ``handleVerifyPartitionsInTransaction``)."""
        error, txn = self._identify(transactional_id, producer_id, epoch)
        if txn is None:
            return {tp: error for tp in partitions}
        return {tp: ErrorCode.NONE if tp in txn.partitions else ErrorCode.INVALID_TXN_STATE for tp in partitions}

    def verify(self, transactional_id: str | None, producer_id: int, epoch: int,
               partition: TopicPartition) -> ErrorCode:
        """May a transactional batch of this producer be appended to ``partition``? It must belong to the
        transactional id's current producer and epoch and to its Ongoing transaction (KIP-890's check,
        which a single node makes locally)."""
        txn = self.txns.get(transactional_id) if transactional_id else None
        if txn is None or txn.producer_id != producer_id:
            return ErrorCode.INVALID_PRODUCER_ID_MAPPING
        if epoch != txn.producer_epoch:
            return ErrorCode.INVALID_PRODUCER_EPOCH if epoch < txn.producer_epoch else ErrorCode.INVALID_TXN_STATE
        if txn.state is not TxnState.ONGOING or partition not in txn.partitions:
            return ErrorCode.INVALID_TXN_STATE
        return ErrorCode.NONE

    # ------------------------------------------------------------ EndTxn

    def end_txn(self, transactional_id: str, producer_id: int, epoch: int, commit: bool,
                now: int) -> tuple[ErrorCode, TxnTransit | None]:
        """(NONE, transit): write it, then the markers; (NONE, None): already done; (error, None)."""
        txn = self.txns.get(transactional_id)
        if txn is None or txn.state is TxnState.DEAD or txn.producer_id != producer_id:
            return ErrorCode.INVALID_PRODUCER_ID_MAPPING, None
        if txn.producer_epoch != epoch:
            return ErrorCode.PRODUCER_FENCED, None
        if txn.pending is not None:
            return ErrorCode.CONCURRENT_TRANSACTIONS, None
        state = txn.state
        if state is TxnState.ONGOING:
            target = TxnState.PREPARE_COMMIT if commit else TxnState.PREPARE_ABORT
            return ErrorCode.NONE, txn.transit(state=target, last_update_ms=now)
        if state is (TxnState.COMPLETE_COMMIT if commit else TxnState.COMPLETE_ABORT):
            return ErrorCode.NONE, None
        if state is (TxnState.PREPARE_COMMIT if commit else TxnState.PREPARE_ABORT):
            return ErrorCode.CONCURRENT_TRANSACTIONS, None
        return ErrorCode.INVALID_TXN_STATE, None

    def fence(self, txn: TxnMetadata, now: int) -> TxnTransit:
        """Abort an Ongoing transaction with a bumped epoch, so that its producer can write no more."""
        epoch = txn.producer_epoch if txn.producer_epoch >= INT16_MAX else txn.producer_epoch + 1
        return txn.transit(producer_epoch=epoch, last_producer_epoch=NO_PRODUCER_EPOCH,
                           state=TxnState.PREPARE_ABORT, last_update_ms=now)

    def complete(self, transactional_id: str, now: int) -> TxnTransit | None:
        """The CompleteCommit / CompleteAbort transit of a prepared transaction whose markers are written."""
        txn = self.txns.get(transactional_id)
        if txn is None or txn.state not in PREPARED or txn.pending is not None:
            return None
        target = TxnState.COMPLETE_COMMIT if txn.state is TxnState.PREPARE_COMMIT else TxnState.COMPLETE_ABORT
        return txn.transit(state=target, partitions=frozenset(), last_update_ms=now)

    # ------------------------------------------------------------ writes

    def begin(self, transit: TxnTransit) -> None:
        """A transit is being written: the id refuses other changes until `write_done`."""
        txn = self.txns[transit.transactional_id]
        txn.pending = transit.state

    def write_done(self, transit: TxnTransit, ok: bool) -> None:
        txn = self.txns.get(transit.transactional_id)
        if txn is None:
            return
        txn.pending = None
        if ok:
            txn.apply(transit)
            if transit.state is TxnState.DEAD:
                del self.txns[transit.transactional_id]
        elif txn.producer_epoch == NO_PRODUCER_EPOCH and txn.state is TxnState.EMPTY:
            # A new id whose first write failed was never given out: forget it.
            del self.txns[transit.transactional_id]

    # ------------------------------------------------------------ timers

    def timed_out(self, now: int) -> list[str]:
        """Ongoing transactions open longer than their timeout, with nothing pending."""
        return [tid for tid, txn in self.txns.items()
                if txn.state is TxnState.ONGOING and txn.pending is None and txn.start_ms + txn.timeout_ms < now]

    def prepared(self) -> list[str]:
        """Transactions whose markers are still to be written (after a restart)."""
        return [tid for tid, txn in self.txns.items() if txn.state in PREPARED and txn.pending is None]

    def expired(self, now: int, expiration_ms: int) -> list[TxnTransit]:
        """Tombstone transits for ids with nothing in progress, unused for ``expiration_ms``."""
        return [txn.transit(state=TxnState.DEAD, partitions=frozenset(), last_update_ms=now)
                for txn in self.txns.values()
                if txn.state in IDLE and txn.pending is None and txn.last_update_ms + expiration_ms <= now]

    # ------------------------------------------------------------ loading

    def replay(self, record: TxnLogRecord) -> None:
        """Apply one record read back from ``__transaction_state`` (in log order)."""
        if record.value is None:
            self.txns.pop(record.transactional_id, None)
            return
        v = record.value
        try:
            state = TxnState(v.status)
        except ValueError:
            state = TxnState.EMPTY
        if state in (TxnState.DEAD, TxnState.PREPARE_EPOCH_FENCE):
            return
        txn = self.txns.get(record.transactional_id)
        if txn is None:
            txn = self.txns[record.transactional_id] = TxnMetadata(record.transactional_id, v.producer_id)
        txn.apply(TxnTransit(record.transactional_id, v.producer_id, v.last_producer_id, v.producer_epoch,
                             NO_PRODUCER_EPOCH, v.timeout_ms, state, v.partitions, v.start_ms, v.last_update_ms))
