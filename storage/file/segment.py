"""LogSegment: one ``.log`` file of raw v2 batches plus its sparse ``.index`` and ``.timeindex``, and
the ``.txnindex`` of the aborted transactions whose marker it holds (`storage.file.txn_index`).

Files are named by the segment's base offset, zero-padded to 20 digits, as in Kafka
(``00000000000000000000.log``). The ``.log`` holds the batches exactly as they are served; the base
offset of a segment is the base offset of its first batch.

Threads: the event loop owns the in-memory state of the active segment (`account_batch` after each
append); blocking methods (names say so in their docstrings) run on the engine's I/O threads. File
descriptors are opened lazily and pinned while in use (`opened`), so a segment deleted by retention
or truncation keeps its descriptor until the last reader or fsync using it is done. The engine's
`OpenFiles` closes idle descriptors beyond its cap, active segments' too; they reopen on next use.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from protocol.primitives import INT32_MAX
from protocol.records.batch import HEADER, HEADER_SIZE, LOG_OVERHEAD, MAGIC, MIN_BATCH_LENGTH, compute_crc
from protocol.records.errors import (
    CorruptRecordError,
    RecordBatchError,
    TruncatedBatchError,
    UnsupportedMagicError,
)
from storage.file.fs import (
    READ_WRITE,
    READ_WRITE_EXISTING,
    FileSystem,
    read_at,
    read_file,
    unlink_if_exists,
    write_all,
    write_file,
)
from storage.file.index import CorruptIndexError, OffsetIndex, TimeIndex, needs_entry
from storage.file.open_files import OpenFiles
from storage.file.txn_index import TXN_INDEX_SUFFIX, TxnIndex

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
SEGMENT_SUFFIXES = (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX)
NAME_DIGITS = 20

SCAN_CHUNK = 1 << 20  # recovery and rebuild read the log in chunks of this size
SEEK_CHUNK = 16 << 10  # a lookup scans from an index entry: about index.interval.bytes away


def segment_name(base_offset: int) -> str:
    return f"{base_offset:0{NAME_DIGITS}d}"


def parse_segment_file(name: str) -> tuple[int, str] | None:
    """(base offset, suffix) for a segment file name, None for anything else."""
    stem, dot, ext = name.partition(".")
    if not dot or len(stem) != NAME_DIGITS or not stem.isdigit():
        return None
    return int(stem), "." + ext


class BatchHeader(NamedTuple):
    """The fields of a batch header that the engine needs, with the batch's position in its file."""

    position: int
    base_offset: int
    last_offset: int
    size: int
    max_timestamp: int
    crc: int


class SegmentGone(Exception):
    """The segment was deleted (retention, truncation) while an operation wanted its file."""


def scan_batches(fs: FileSystem, fd: int, start: int, end: int, *, with_body: bool = False,
                 chunk: int = SCAN_CHUNK) -> Iterator[tuple[BatchHeader, bytes, int]]:
    """Blocking: walk the batches of a file between positions `start` and `end`.

    Yields (header, buffer, index in buffer); with `with_body` the buffer holds the whole batch,
    otherwise at least its header. Raises `TruncatedBatchError` (with the file position) when a
    batch runs past `end` (a torn tail) and `CorruptRecordError`/`UnsupportedMagicError` for framing
    that cannot be a v2 batch. CRCs are the caller's business.
    """
    buf = b""
    buf_start = start
    pos = start
    while pos < end:
        at = pos - buf_start
        if at + HEADER_SIZE > len(buf):
            buf = read_at(fs, fd, min(max(chunk, HEADER_SIZE), end - pos), pos)
            buf_start, at = pos, 0
            if len(buf) < HEADER_SIZE:
                raise TruncatedBatchError(pos, HEADER_SIZE, len(buf))
        header = HEADER.unpack_from(buf, at)
        if header[3] != MAGIC:
            if header[3] in (0, 1):
                raise UnsupportedMagicError(header[3], pos)
            raise CorruptRecordError(f"record batch at position {pos} has unknown magic {header[3]}")
        if header[1] < MIN_BATCH_LENGTH:
            raise CorruptRecordError(f"record batch at position {pos} has length {header[1]}")
        size = LOG_OVERHEAD + header[1]
        if size > end - pos:
            raise TruncatedBatchError(pos, size, end - pos)
        if with_body and at + size > len(buf):
            buf = read_at(fs, fd, max(size, min(chunk, end - pos)), pos)
            buf_start, at = pos, 0
            if len(buf) < size:
                raise TruncatedBatchError(pos, size, len(buf))
        yield BatchHeader(pos, header[0], header[0] + header[6], size, header[8], header[4]), buf, at
        pos += size


def batches_in_buffer(data: bytes | memoryview) -> Iterator[tuple[int, int, int]]:
    """(index, base offset, size) of each complete batch at the start of `data` (known-good bytes)."""
    at = 0
    while at + HEADER_SIZE <= len(data):
        header = HEADER.unpack_from(data, at)
        size = LOG_OVERHEAD + header[1]
        if at + size > len(data):
            return
        yield at, header[0], size
        at += size


class LogSegment:
    """One segment: its files, its committed size, its indexes and the batch statistics Kafka keeps."""

    def __init__(self, fs: FileSystem, directory: str, base_offset: int, *, size: int = 0,
                 created_ms: int = 0, roll_jitter_ms: int = 0, modified_ms: int = 0,
                 files: OpenFiles | None = None) -> None:
        self.fs = fs
        self.files = files  # the engine's cap on open descriptors (None: never closed before retire)
        self.held_open = False  # kept open outside the cap (the cleaner's rewrite); see OpenFiles
        self.directory = directory
        self.base_offset = base_offset
        name = segment_name(base_offset)
        self.name = name + LOG_SUFFIX
        self.log_path = os.path.join(directory, name + LOG_SUFFIX)
        self.index_path = os.path.join(directory, name + INDEX_SUFFIX)
        self.time_index_path = os.path.join(directory, name + TIME_INDEX_SUFFIX)
        self.txn_index_path = os.path.join(directory, name + TXN_INDEX_SUFFIX)
        self.txn_index = TxnIndex(fs, self.txn_index_path)
        self.size = size  # bytes of whole, acknowledged batches; never more than the file
        self.created_ms = created_ms
        self.modified_ms = modified_ms  # retention's fallback when no batch has a timestamp
        self.roll_jitter_ms = roll_jitter_ms
        # None until loaded: closed segments load their indexes on first use.
        self.offset_index: OffsetIndex | None = None
        self.time_index: TimeIndex | None = None
        self.next_offset = base_offset
        self.max_timestamp = -1
        self.offset_of_max_timestamp = base_offset
        self.first_batch_timestamp: int | None = None  # None: not known (yet)
        self.last_entry_position = 0
        self.index_dirty = False  # rebuilt in memory: the files need a full rewrite
        self._fd: int | None = None
        self._pins = 0
        self._retired = False
        self._fd_lock = threading.Lock()
        self._load_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LogSegment({self.name}, size={self.size}, next_offset={self.next_offset})"

    @property
    def loaded(self) -> bool:
        return self.offset_index is not None

    # --- descriptors --------------------------------------------------------------------------------

    @contextmanager
    def opened(self) -> Iterator[int]:
        """Blocking: the .log descriptor, opened on first use (or again after `OpenFiles` closed it)
        and kept open while pinned."""
        with self._fd_lock:
            if self._retired:
                raise SegmentGone(self.log_path)
            if self._fd is None:
                # Never O_CREAT: the file exists (create_files made it); a missing one is an error.
                self._fd = self.fs.open(self.log_path, READ_WRITE_EXISTING)
            self._pins += 1
            fd = self._fd
        try:
            if self.files is not None:
                self.files.touch(self)  # pinned: may close other segments' descriptors, never this one
            yield fd
        finally:
            with self._fd_lock:
                self._pins -= 1
                gone = self._retired and self._pins == 0
                if gone:
                    self._close_fd()
            if self.files is not None:
                if gone:
                    self.files.forget(self)
                else:
                    self.files.released()

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def close_if_idle(self) -> bool:
        """Close the descriptor unless a thread is using it (`OpenFiles`); True when it is closed."""
        with self._fd_lock:
            if self._pins:
                return False
            self._close_fd()
            return True

    def hold_open(self, held: bool) -> None:
        """Keep the descriptor open outside the cap (a cleaner's rewrite under its temporary name), or count
        it again."""
        if self.files is None:
            self.held_open = held
        else:
            self.files.hold(self, held)

    def _adopt(self, fd: int) -> None:
        with self._fd_lock:
            assert self._fd is None and not self._retired
            self._fd = fd
        if self.files is not None:
            self.files.touch(self)

    def attach(self, fd: int) -> None:
        """Serve reads through `fd`, already open on this segment's data (a segment rewritten by the
        cleaner is opened under its temporary name; renames leave the descriptor valid). Held open
        until the cleaner's swap gives the file its name (`hold_open(False)`): reopening needs it."""
        self.hold_open(True)
        self._adopt(fd)

    def retire(self) -> None:
        """No new users; the descriptor closes when the last current user is done."""
        with self._fd_lock:
            self._retired = True
            gone = self._pins == 0
            if gone:
                self._close_fd()
        if gone and self.files is not None:
            self.files.forget(self)

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                self.fs.close(fd)
            except OSError:
                pass

    # --- the append path (event loop, active segment) ----------------------------------------------

    def reset_state(self) -> None:
        self.offset_index = OffsetIndex(self.base_offset)
        self.time_index = TimeIndex(self.base_offset)
        self.next_offset = self.base_offset
        self.max_timestamp = -1
        self.offset_of_max_timestamp = self.base_offset
        self.first_batch_timestamp = None
        self.last_entry_position = 0

    def account_batch(self, position: int, size: int, last_offset: int, max_timestamp: int,
                      interval_bytes: int) -> None:
        """Record a batch written at `position`: statistics and (sparse) index entries."""
        if position == 0:
            self.first_batch_timestamp = max_timestamp
        if max_timestamp > self.max_timestamp:
            self.max_timestamp = max_timestamp
            self.offset_of_max_timestamp = last_offset
        if needs_entry(position, self.last_entry_position, interval_bytes):
            assert self.offset_index is not None and self.time_index is not None
            self.offset_index.append(last_offset, position)
            self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp)
            self.last_entry_position = position
        self.next_offset = last_offset + 1

    def seal(self) -> None:
        """Append the final time index entry (the segment's largest timestamp), as Kafka does on roll."""
        if self.time_index is not None and self.max_timestamp >= 0:
            self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp)

    def pending_index_entries(self) -> int:
        if self.offset_index is None or self.time_index is None:
            return 0
        return max(len(self.offset_index) - self.offset_index.written,
                   len(self.time_index) - self.time_index.written)

    # --- blocking operations (I/O threads) ---------------------------------------------------------

    def create_files(self) -> None:
        """Blocking: create empty files for a new segment (replacing leftovers of a failed roll)."""
        created: list[str] = []
        flags = READ_WRITE | os.O_TRUNC
        try:
            fd = self.fs.open(self.log_path, flags)
            created.append(self.log_path)
            self._adopt(fd)
            for path in (self.index_path, self.time_index_path):
                self.fs.close(self.fs.open(path, flags))
                created.append(path)
        except OSError:
            self.retire()
            for path in created:
                try:
                    unlink_if_exists(self.fs, path)
                except OSError:
                    pass
            raise
        self.reset_state()
        self.txn_index.start_empty()

    def write_pending_indexes(self) -> None:
        """Blocking: append the index entries not yet in the files (or rewrite rebuilt indexes)."""
        if self.offset_index is None or self.time_index is None:
            return
        dirty = self.index_dirty
        for index, path in ((self.offset_index, self.index_path), (self.time_index, self.time_index_path)):
            count = len(index)
            if dirty:
                write_file(self.fs, path, index.encode(0, count))
            elif count > index.written:
                fd = self.fs.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0))
                try:
                    write_all(self.fs, fd, index.encode(index.written, count), index.written * index.ENTRY_SIZE)
                finally:
                    self.fs.close(fd)
            else:
                continue
            index.written = count
        self.index_dirty = False

    def load(self, interval_bytes: int, log: Any) -> str | None:
        """Blocking: load and check the indexes, or rebuild them in memory from the log.

        The files are never trusted: sizes, ordering, and the last offset entry are checked against
        the batch it points to, and the log after that entry is walked (a few KiB) to find the next
        offset and the largest timestamp. Returns None when the data is sound, else a description of
        the damage at the end of the log (the active segment then goes through `recover`).
        """
        with self._load_lock:
            if self.offset_index is not None:
                return None
            with self.opened() as fd:
                try:
                    self._load_indexes(fd, interval_bytes)
                    return None
                except CorruptIndexError as exc:
                    reason = str(exc)
                except RecordBatchError as exc:
                    reason = f"the log does not match its index: {exc}"
                except FileNotFoundError as exc:
                    reason = f"missing {os.path.basename(exc.filename or '')}"
                log.info("storage.index.rebuilt", segment=self.name, reason=reason)
                return self._rebuild(fd, interval_bytes, log)

    def _load_indexes(self, fd: int, interval_bytes: int) -> None:
        offsets = OffsetIndex.decode(self.base_offset, read_file(self.fs, self.index_path))
        times = TimeIndex.decode(self.base_offset, read_file(self.fs, self.time_index_path))
        entry_offset, entry_position = offsets.last_entry
        if len(offsets) and entry_position >= self.size:
            raise CorruptIndexError(f"last offset index entry points at {entry_position}, past the log end {self.size}")
        self.offset_index, self.time_index = offsets, times
        self.max_timestamp, self.offset_of_max_timestamp = times.last_entry
        self.last_entry_position = entry_position
        self.next_offset = self.base_offset
        try:
            first = True
            for header, _, _ in scan_batches(self.fs, fd, entry_position, self.size, chunk=SEEK_CHUNK):
                if first and len(offsets) and header.last_offset != entry_offset:
                    raise CorruptIndexError(f"last offset index entry says {entry_offset} at {entry_position}, "
                                            f"the batch there ends at {header.last_offset}")
                if header.last_offset < header.base_offset:
                    raise CorruptRecordError(f"batch at position {header.position} has a negative offset delta")
                first = False
                self.account_batch(header.position, header.size, header.last_offset, header.max_timestamp,
                                   interval_bytes)
            if len(times) and times.last_entry[1] >= self.next_offset:
                raise CorruptIndexError(f"time index points at offset {times.last_entry[1]}, "
                                        f"past the segment end {self.next_offset}")
        except BaseException:
            self.offset_index = self.time_index = None
            raise

    def _rebuild(self, fd: int, interval_bytes: int, log: Any) -> str | None:
        self.reset_state()
        damage = None
        valid = 0
        try:
            for header, _, _ in scan_batches(self.fs, fd, 0, self.size):
                self.account_batch(header.position, header.size, header.last_offset, header.max_timestamp,
                                   interval_bytes)
                valid = header.position + header.size
        except RecordBatchError as exc:
            damage = str(exc)
            self.size = valid  # serve the sound prefix only (the active segment is recovered instead)
        self.seal()
        self.index_dirty = True
        return damage

    def recover(self, interval_bytes: int, log: Any, gap_limit: int | None = None) -> int:
        """Blocking: Kafka's segment recovery. Walk every batch checking its CRC and offsets, rebuild
        the indexes, cut the file after the last good batch and fsync it. Returns the bytes dropped.

        Each batch must start where the previous one ended, or -- compaction removes whole batches --
        later, if it ends before `gap_limit` (the next segment's base offset for a closed segment, the
        cleaner checkpoint for the last one; None: no gaps). The base offset is outside the CRC, so
        this keeps a damaged one from passing wherever no gap can be."""
        with self._load_lock, self.opened() as fd:
            self.reset_state()
            self.size = self.fs.fstat(fd).st_size  # all of the file, whatever was believed before
            expected = self.base_offset
            valid = 0
            problem = None
            try:
                for header, buf, at in scan_batches(self.fs, fd, 0, self.size, with_body=True):
                    gap = header.base_offset > expected and gap_limit is not None and header.last_offset < gap_limit
                    if header.base_offset != expected and not gap:
                        problem = f"batch at position {header.position} has base offset {header.base_offset}, " \
                                  f"expected {expected}"
                        break
                    if header.last_offset < header.base_offset or header.last_offset - self.base_offset > INT32_MAX:
                        problem = f"batch at position {header.position} has an invalid last offset {header.last_offset}"
                        break
                    if compute_crc(buf, at) != header.crc:
                        problem = f"batch at position {header.position} fails its CRC check"
                        break
                    self.account_batch(header.position, header.size, header.last_offset, header.max_timestamp,
                                       interval_bytes)
                    expected = header.last_offset + 1
                    valid = header.position + header.size
            except TruncatedBatchError as exc:
                problem = f"torn batch at position {exc.position}: needs {exc.needed} bytes, {exc.available} left"
            except RecordBatchError as exc:
                problem = str(exc)
            dropped = self.size - valid
            if dropped > 0:
                self.fs.ftruncate(fd, valid)
                log.warning("storage.recovery.truncated", segment=self.name, position=valid, bytes_dropped=dropped,
                            reason=problem)
            self.fs.fdatasync(fd)  # what recovery kept is durable from here on (recovery point = end)
            self.size = valid
            self.seal()
            self.index_dirty = True
            self.write_pending_indexes()
            return dropped

    def load_first_batch_timestamp(self) -> None:
        """Blocking: the first batch's max timestamp, which segment.ms rolling is measured from."""
        if self.first_batch_timestamp is not None or self.size == 0:
            return
        with self.opened() as fd:
            for header, _, _ in scan_batches(self.fs, fd, 0, self.size, chunk=HEADER_SIZE):
                self.first_batch_timestamp = header.max_timestamp
                break

    def find_batch(self, fd: int, offset: int, end: int) -> BatchHeader | None:
        """Blocking: the first batch ending at or after `offset` before position `end` (index, then scan)."""
        assert self.offset_index is not None
        _, position = self.offset_index.lookup(offset)
        for header, _, _ in scan_batches(self.fs, fd, position, end, chunk=SEEK_CHUNK):
            if header.last_offset >= offset:
                return header
        return None

    def truncate_to(self, offset: int, position: int, interval_bytes: int, now_ms: int, log: Any) -> None:
        """Blocking: drop everything from batch boundary `position` (holding `offset`) on, durably,
        aborted transaction entries included (after the log: a crash in between leaves entries past
        the log end, which loading drops, rather than markers without their entries)."""
        assert self.offset_index is not None and self.time_index is not None
        with self.opened() as fd:
            if position < self.size:
                self.fs.ftruncate(fd, position)
                self.fs.fdatasync(fd)
            offsets = self.offset_index.truncated(offset)
            times = self.time_index.truncated(offset)
            # New objects, not arrays cut in place: readers on other threads may hold the old ones.
            self.offset_index, self.time_index = offsets, times
            self.size = position
            self.next_offset = offset
            self.max_timestamp, self.offset_of_max_timestamp = times.last_entry
            self.last_entry_position = offsets.last_entry[1]
            if position == 0:
                self.first_batch_timestamp = None
                self.created_ms = now_ms
            for header, _, _ in scan_batches(self.fs, fd, self.last_entry_position, position, chunk=SEEK_CHUNK):
                self.account_batch(header.position, header.size, header.last_offset, header.max_timestamp,
                                   interval_bytes)
            self.next_offset = offset
        self.index_dirty = True
        self.write_pending_indexes()
        self.txn_index.truncate_blocking(offset, log)

    def delete_files(self) -> None:
        """Blocking: retire the segment and unlink its files."""
        self.retire()
        for path in (self.log_path, self.index_path, self.time_index_path, self.txn_index_path):
            unlink_if_exists(self.fs, path)
