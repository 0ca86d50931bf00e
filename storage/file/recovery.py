"""Opening a partition directory: finding its segments, and recovering them after a crash.

Kafka's rules (`LogLoader`), applied on the engine's I/O thread when a log is opened:

* Leftovers are removed: ``*.deleted`` / ``*.tmp`` files, and index files without a ``.log``.
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
"""

from __future__ import annotations

import bisect
import itertools
import os
from dataclasses import dataclass
from typing import Any

from storage.file.config import LogConfig
from storage.file.fs import FileSystem, exists, fsync_path, makedirs, unlink_if_exists
from storage.file.segment import SEGMENT_SUFFIXES, LogSegment, parse_segment_file

LEFTOVER_SUFFIXES = (".deleted", ".tmp", ".cleaned", ".swap")


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


def load_log(fs: FileSystem, data_dir: str, directory: str, *, clean: bool, recovery_point: int,
             log_start_offset: int, config: LogConfig, now_ms: int, log: Any) -> LoadedLog:
    """Blocking: open (creating if needed) one partition directory and bring it to a consistent state."""
    interval = config.index_interval_bytes
    if not exists(fs, directory):
        # A new log: checkpoint entries left by a deleted log of the same name do not apply.
        makedirs(fs, directory)
        fsync_path(fs, data_dir)
        segment = _new_segment(fs, directory, 0, now_ms)
        return LoadedLog([segment], 0, 0, 0, created=True)

    bases = _scan_directory(fs, directory)
    segments = []
    for base in bases:
        st = fs.stat(os.path.join(directory, f"{base:020d}.log"))
        segments.append(LogSegment(fs, directory, base, size=st.st_size, created_ms=now_ms,
                                   modified_ms=int(st.st_mtime * 1000)))
    for segment, following in itertools.pairwise(segments):
        segment.next_offset = following.base_offset
    if not segments:
        start = max(log_start_offset, 0)
        return LoadedLog([_new_segment(fs, directory, start, now_ms)], start, start, start)
    damage = _drop_stale_empty_tail(segments, interval, log)
    bases = [segment.base_offset for segment in segments]

    recovered = truncated = 0
    if clean:
        active = segments[-1]
        if not active.loaded:
            damage = active.load(interval, log)
        if damage is not None:
            log.warning("storage.recovery.active_segment_damaged", segment=active.name, reason=damage)
            truncated += active.recover(interval, log)
            recovered += 1
    else:
        first = max(bisect.bisect_right(bases, recovery_point) - 1, 0)
        for i in range(first, len(segments)):
            segment = segments[i]
            dropped = segment.recover(interval, log)
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
        segments = [_new_segment(fs, directory, start, now_ms)]
        end = start
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
    # Clean shutdown flushed everything; recovery fsynced what it kept.
    return LoadedLog(segments, start, end, end, start_position, recovered, truncated)


def _scan_directory(fs: FileSystem, directory: str) -> list[int]:
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


def _new_segment(fs: FileSystem, directory: str, base: int, now_ms: int) -> LogSegment:
    segment = LogSegment(fs, directory, base, created_ms=now_ms, modified_ms=now_ms)
    segment.create_files()
    return segment
