"""Rebuilding a file log's transaction state: on open, after recovery, and after a truncation.

The state (`storage.transactions.TransactionTracker`) is the newest sound producer snapshot
(`storage.file.producer_snapshot`) at or below the point needed, then every batch from the snapshot's
offset to the end replayed, headers only except each marker's one record (Kafka's
``truncateAndReload`` and ``rebuildProducerState``). Without a snapshot the replay starts at the
first segment's base offset (batches before the log start still in that segment included, so that a
transaction begun there stays ongoing).

On open:

- snapshots past the recovered log end (their batches were lost), below the first segment (retention
  removed it while the snapshot stayed), or whose CRC fails (a warning names the file) are deleted;
  then Kafka's rule for which snapshots to keep is applied;
- every segment recovery scanned (from the one holding the recovery point, or a damaged active
  segment) gets its ``.txnindex`` rewritten from the replay, so that its entries match the log as
  recovery left it: the replay then starts at or below the first such segment;
- after a clean shutdown with no snapshot at all and nothing recovered, the state is empty and
  nothing is replayed (Kafka's LogLoader rule: a log whose producers never needed a snapshot);
- the active segment's ``.txnindex`` loses a torn trailing entry and any entry past the log end (left
  by a crash between a truncation of the log and of its index).

Everything here is blocking and runs on the log's write thread.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from protocol.records import RecordBatch
from storage.aborted_txns import AbortedTxnList
from storage.file.fs import FileSystem, fsync_path
from storage.file.producer_snapshot import (
    CorruptSnapshotError,
    delete_snapshots,
    list_snapshots,
    read_snapshot,
    snapshot_path,
    stray_snapshots,
)
from storage.file.segment import LogSegment, scan_batches
from storage.transactions import TransactionTracker


@dataclass
class ProducerState:
    """A log's rebuilt transaction state and the snapshot files it keeps (offsets, ascending)."""

    tracker: TransactionTracker
    snapshots: list[int]


def open_state(fs: FileSystem, directory: str, segments: Sequence[LogSegment], *, log_end: int,
               rebuild_from: int | None, clean: bool, log: Any) -> ProducerState:
    """The state of a log just opened (see the module docstring); `rebuild_from` is the base offset of
    the first segment recovery scanned, None when it scanned none."""
    found = list_snapshots(fs, directory)
    bases = [s.base_offset for s in segments]
    doomed = [o for o in found if o > log_end or o < bases[0]]
    for offset in doomed:
        log.warning("storage.snapshot.deleted", path=snapshot_path(directory, offset),
                    reason="past the log end" if offset > log_end else "below the first segment")
    offsets = [o for o in found if o not in doomed]
    if clean and not found and rebuild_from is None:
        tracker = TransactionTracker()
    else:
        limit = log_end if rebuild_from is None else min(log_end, rebuild_from)
        tracker, start, bad = _restore(fs, directory, offsets, limit, bases[0], log)
        doomed += bad
        offsets = [o for o in offsets if o not in bad]
        rebuilt = replay(fs, segments, tracker, start, rebuild_from=rebuild_from, log=log)
        for segment in segments:
            entries = rebuilt.get(segment.base_offset)
            if entries is not None and segment.txn_index.replace_blocking(entries, log):
                log.info("storage.txn_index.rebuilt", segment=segment.name, entries=len(entries))
    active = segments[-1].txn_index
    entries = active.load(log, cut=True)
    if entries.truncated(log_end).encoded() != entries.encoded():
        log.warning("storage.txn_index.truncated", path=active.path, log_end_offset=log_end,
                    reason="entries past the log end")
        active.replace_blocking(entries.truncated(log_end), log)
    stray = stray_snapshots(offsets, bases)
    doomed += stray
    offsets = [o for o in offsets if o not in stray]
    if doomed:
        delete_snapshots(fs, directory, doomed)
        # Durably gone: a snapshot past a later log end must never come back after a power loss.
        fsync_path(fs, directory)
    return ProducerState(tracker, offsets)


def truncated_state(fs: FileSystem, directory: str, segments: Sequence[LogSegment], snapshots: Sequence[int],
                    offset: int, log: Any) -> ProducerState:
    """The state of a log just truncated to `offset`: snapshots past it are deleted, the newest sound
    one at or below it is replayed to the end."""
    doomed = [o for o in snapshots if o > offset]
    offsets = [o for o in snapshots if o <= offset]
    tracker, start, bad = _restore(fs, directory, offsets, offset, segments[0].base_offset, log)
    replay(fs, segments, tracker, start, rebuild_from=None, log=log)
    doomed += bad
    if doomed:
        delete_snapshots(fs, directory, doomed)
        fsync_path(fs, directory)
    return ProducerState(tracker, [o for o in offsets if o not in bad])


def _restore(fs: FileSystem, directory: str, offsets: Sequence[int], limit: int, first_base: int,
             log: Any) -> tuple[TransactionTracker, int, list[int]]:
    """The newest sound snapshot at or below `limit` (and not below the first segment) as a tracker,
    the offset the replay starts at, and the snapshots found unsound."""
    bad = []
    for offset in reversed(offsets):
        if offset > limit or offset < first_base:
            continue
        try:
            entries = read_snapshot(fs, directory, offset)
        except (CorruptSnapshotError, FileNotFoundError) as exc:
            log.warning("storage.snapshot.corrupt", path=snapshot_path(directory, offset), reason=str(exc))
            bad.append(offset)
            continue
        return TransactionTracker.from_entries(entries), offset, bad
    return TransactionTracker(), first_base, bad


def replay(fs: FileSystem, segments: Sequence[LogSegment], tracker: TransactionTracker, start: int, *,
           rebuild_from: int | None, log: Any) -> dict[int, AbortedTxnList]:
    """Feed `tracker` every batch from offset `start` (a batch boundary) to the end; returns, for each
    segment at or after `rebuild_from`, the aborted transactions its markers ended."""
    bases = [s.base_offset for s in segments]
    rebuilt: dict[int, AbortedTxnList] = {}
    for segment in segments[max(bisect.bisect_right(bases, start) - 1, 0):]:
        entries = None
        if rebuild_from is not None and segment.base_offset >= rebuild_from:
            entries = rebuilt[segment.base_offset] = AbortedTxnList()
        if segment.next_offset <= start:
            continue
        position = 0
        if start > segment.base_offset and segment.loaded:
            assert segment.offset_index is not None
            position = segment.offset_index.lookup(start)[1]
        with segment.opened() as fd:
            for header, buf, at in scan_batches(fs, fd, position, segment.size, with_body=True):
                if header.last_offset < start:
                    continue
                ended = tracker.append(RecordBatch(buf, at), header.base_offset, header.max_timestamp)
                if ended is not None and entries is not None:
                    entries.append(ended)
    return rebuilt
