"""Opening a partition directory: finding its segments, and recovering them after a crash.

Kafka's rules (`LogLoader`), applied on the log's write thread when it is opened:

* Leftovers are removed: ``*.deleted`` / ``*.tmp`` files, and index files without a ``.log``.
* An interrupted compaction is settled by Kafka's rules (see `storage.file.cleaner`): a ``*.cleaned``
  file (a rewritten segment not yet committed) is deleted; a ``<base>.log.swap`` (committed: the
  rewritten segment, fsynced before it got that name) completes its swap: the segment files with a
  base offset in [base, the swap's next offset) are deleted and the ``.swap`` files lose their suffix.
* After a clean shutdown (the marker file was present when the engine started) nothing is scanned:
  the active segment's indexes are loaded and checked, and the few KiB after its last offset index
  entry are read to find the log end offset and the largest timestamp.
* Otherwise every segment from the one holding the recovery point (the checkpointed offset below
  which everything was fsynced) to the end is recovered: each batch's framing, offsets and CRC are
  checked, the file is cut after the last good batch, later segments are deleted if a segment was
  cut, and the indexes of the scanned segments are rebuilt. Segments below the recovery point are
  not read; their indexes are loaded and checked when first used.
* The log start offset is the checkpointed one, or the first segment's base offset if larger. If it
  is past the recovered end (a DeleteRecords was persisted, the data before it lost), the log starts
  over, empty, at the log start offset.
* Last, the transaction state is rebuilt from the producer snapshots and the batches after them, and
  the ``.txnindex`` of every segment recovery scanned is rewritten to match (`storage.file.producer_state`).
"""

from __future__ import annotations

import bisect
import itertools
import os
from dataclasses import dataclass
from typing import Any

from protocol.records import RecordBatchError
from storage.file.cleaner import CLEANED_SUFFIX, SWAP_SUFFIX
from storage.file.config import LogConfig
from storage.file.fs import READ_ONLY, FileSystem, exists, fsync_path, makedirs, unlink_if_exists
from storage.file.open_files import OpenFiles
from storage.file.producer_state import ProducerState, open_state
from storage.file.segment import LOG_SUFFIX, SEGMENT_SUFFIXES, LogSegment, parse_segment_file, scan_batches
from storage.file.txn_index import TXN_INDEX_SUFFIX

LEFTOVER_SUFFIXES = (".deleted", ".tmp", CLEANED_SUFFIX)


@dataclass
class LoadedLog:
    segments: list[LogSegment]
    log_start_offset: int
    log_end_offset: int
    recovery_point: int
    start_position: int = 0  # where the batch holding the log start offset begins in the first segment
    recovered_segments: int = 0
    truncated_bytes: int = 0
    created: bool = False
    producer_state: ProducerState | None = None  # None: a new log (no producers, no snapshots)


def load_log(fs: FileSystem, data_dir: str, directory: str, *, clean: bool, recovery_point: int,
             log_start_offset: int, config: LogConfig, now_ms: int, log: Any,
             cleaner_offset: int | None = None, files: OpenFiles | None = None) -> LoadedLog:
    """Blocking: open (creating if needed) one partition directory and bring it to a consistent state.

    `cleaner_offset` (the cleaner checkpoint) bounds where the last segment may have compaction gaps;
    `files` is the engine's cap on open segment descriptors."""
    interval = config.index_interval_bytes
    if not exists(fs, directory):
        # A new log: checkpoint entries left by a deleted log of the same name do not apply.
        makedirs(fs, directory)
        fsync_path(fs, data_dir)
        segment = _new_segment(fs, directory, 0, now_ms, files)
        return LoadedLog([segment], 0, 0, 0, created=True)

    bases = _scan_directory(fs, directory, log)
    segments = []
    for base in bases:
        st = fs.stat(os.path.join(directory, f"{base:020d}.log"))
        segments.append(LogSegment(fs, directory, base, size=st.st_size, created_ms=now_ms,
                                   modified_ms=int(st.st_mtime * 1000), files=files))
    for segment, following in itertools.pairwise(segments):
        segment.next_offset = following.base_offset
    if not segments:
        start = max(log_start_offset, 0)
        segments = [_new_segment(fs, directory, start, now_ms, files)]
        state = open_state(fs, directory, segments, log_end=start, rebuild_from=None, clean=clean, log=log)
        return LoadedLog(segments, start, start, start, producer_state=state)
    damage = _drop_stale_empty_tail(segments, interval, log)
    bases = [segment.base_offset for segment in segments]

    recovered = truncated = 0
    rebuild_from: int | None = None  # base offset of the first segment recovery scans
    if clean:
        active = segments[-1]
        if not active.loaded:
            damage = active.load(interval, log)
        if damage is not None:
            log.warning("storage.recovery.active_segment_damaged", segment=active.name, reason=damage)
            truncated += active.recover(interval, log, cleaner_offset)
            recovered += 1
            rebuild_from = active.base_offset
    else:
        first = max(bisect.bisect_right(bases, recovery_point) - 1, 0)
        rebuild_from = segments[first].base_offset
        for i in range(first, len(segments)):
            segment = segments[i]
            gap_limit = segments[i + 1].base_offset if i + 1 < len(segments) else cleaner_offset
            dropped = segment.recover(interval, log, gap_limit)
            recovered += 1
            truncated += dropped
            later = segments[i + 1:]
            if later and (dropped or segment.next_offset > later[0].base_offset):
                for stale in later:
                    log.warning("storage.recovery.segment_deleted", segment=stale.name,
                                reason=f"follows {segment.name}, which recovery cut or which overlaps it")
                    stale.delete_files()
                del segments[i + 1:]
                break
    active = segments[-1]
    active.load_first_batch_timestamp()
    end = active.next_offset
    start = max(log_start_offset, segments[0].base_offset)
    if start > end:
        log.warning("storage.recovery.restarted_at_log_start_offset", log_start_offset=start, log_end_offset=end)
        for segment in segments:
            segment.delete_files()
        segments = [_new_segment(fs, directory, start, now_ms, files)]
        end = start
        rebuild_from = None
    start_position = 0
    first = segments[0]
    if start > first.base_offset:
        if not first.loaded:
            first.load(interval, log)
        with first.opened() as fd:
            found = first.find_batch(fd, start, first.size)
        start_position = first.size if found is None else found.position
    if recovered:
        log.info("storage.log.recovered", segments=recovered, bytes_dropped=truncated, log_end_offset=end)
    state = open_state(fs, directory, segments, log_end=end, rebuild_from=rebuild_from, clean=clean, log=log)
    # Clean shutdown flushed everything; recovery fsynced what it kept.
    return LoadedLog(segments, start, end, end, start_position, recovered, truncated, producer_state=state)


def _scan_directory(fs: FileSystem, directory: str, log: Any) -> list[int]:
    names = fs.listdir(directory)
    swaps = [name for name in names if name.endswith(SWAP_SUFFIX)]
    if swaps:
        for name in names:
            if name.endswith(LEFTOVER_SUFFIXES):  # .cleaned files first: never committed
                unlink_if_exists(fs, os.path.join(directory, name))
        _complete_swaps(fs, directory, swaps, names, log)
        names = fs.listdir(directory)
    logs = set()
    others: list[tuple[str, int]] = []
    for name in names:
        path = os.path.join(directory, name)
        if name.endswith(LEFTOVER_SUFFIXES):
            unlink_if_exists(fs, path)
            continue
        parsed = parse_segment_file(name)
        if parsed is None or parsed[1] not in SEGMENT_SUFFIXES:
            continue
        if parsed[1] == ".log":
            logs.add(parsed[0])
        else:
            others.append((name, parsed[0]))
    for name, base in others:
        if base not in logs:  # an index whose log is gone: a deletion interrupted half way
            unlink_if_exists(fs, os.path.join(directory, name))
    return sorted(logs)


def _complete_swaps(fs: FileSystem, directory: str, swaps: list[str], names: list[str], log: Any) -> None:
    """Finish the segment swaps a crash interrupted (Kafka's LogLoader rule for ``.swap`` files)."""
    by_base: dict[int, set[str]] = {}
    for name in swaps:
        parsed = parse_segment_file(name[: -len(SWAP_SUFFIX)])
        if parsed is None or parsed[1] not in SEGMENT_SUFFIXES:
            unlink_if_exists(fs, os.path.join(directory, name))
            continue
        by_base.setdefault(parsed[0], set()).add(parsed[1])
    for base, suffixes in sorted(by_base.items()):
        stem = os.path.join(directory, f"{base:020d}")
        if LOG_SUFFIX not in suffixes:
            # The .log is renamed first, so its indexes are not committed: they are rebuilt from it.
            # The .txnindex cannot be rebuilt from the segment alone, so the cleaner renames it to .swap
            # before it commits the .log: if the .log.cleaned is gone too, the swap was committed
            # and finished as far as renaming the .log, and the .txnindex takes its final name.
            finished = (stem + LOG_SUFFIX + CLEANED_SUFFIX) not in {os.path.join(directory, n) for n in names}
            for suffix in suffixes:
                if suffix == TXN_INDEX_SUFFIX and finished:
                    fs.replace(stem + suffix + SWAP_SUFFIX, stem + suffix)
                else:
                    unlink_if_exists(fs, stem + suffix + SWAP_SUFFIX)
            continue
        end = _swap_next_offset(fs, stem + LOG_SUFFIX + SWAP_SUFFIX, base)
        replaced = []
        for name in names:
            parsed = parse_segment_file(name)
            if parsed is not None and parsed[1] in SEGMENT_SUFFIXES and base <= parsed[0] < end:
                unlink_if_exists(fs, os.path.join(directory, name))
                replaced.append(name)
        for suffix in (LOG_SUFFIX, *sorted(suffixes - {LOG_SUFFIX})):
            fs.replace(stem + suffix + SWAP_SUFFIX, stem + suffix)
        log.warning("storage.recovery.swap_completed", segment=f"{base:020d}{LOG_SUFFIX}", next_offset=end,
                    replaced=sorted(n for n in replaced if n.endswith(LOG_SUFFIX)))
    fsync_path(fs, directory)


def _swap_next_offset(fs: FileSystem, path: str, base: int) -> int:
    """The offset after the last whole batch of a ``.swap`` log (fsynced before it got its name)."""
    fd = fs.open(path, READ_ONLY)
    end = base
    try:
        for header, _, _ in scan_batches(fs, fd, 0, fs.fstat(fd).st_size):
            end = header.last_offset + 1
    except RecordBatchError:
        pass
    finally:
        fs.close(fd)
    return end


def _drop_stale_empty_tail(segments: list[LogSegment], interval: int, log: Any) -> str | None:
    """An empty last segment whose name is below the previous segment's end was left by a roll that
    failed after creating its files: remove it so the previous segment is the active one again.
    Returns the damage `load` found in the previous segment when it became the active one."""
    if len(segments) < 2 or segments[-1].size:
        return None
    previous, empty = segments[-2], segments[-1]
    damage = previous.load(interval, log)
    if previous.next_offset <= empty.base_offset:
        return None
    log.warning("storage.recovery.segment_deleted", segment=empty.name, reason="empty leftover of a failed roll")
    empty.delete_files()
    segments.pop()
    return damage


def _new_segment(fs: FileSystem, directory: str, base: int, now_ms: int, files: OpenFiles | None) -> LogSegment:
    segment = LogSegment(fs, directory, base, created_ms=now_ms, modified_ms=now_ms, files=files)
    segment.create_files()
    return segment
