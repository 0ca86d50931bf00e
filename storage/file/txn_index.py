"""A segment's ``.txnindex``: the aborted transactions whose ABORT marker is in that segment.

Kafka's ``TransactionIndex`` file, named by the segment's base offset like its ``.log``, holding
34-byte entries in marker order (layout in `storage.aborted_txns`). As in Kafka the file exists only
once the segment got an entry. It is appended to when an ABORT marker is appended to the segment,
truncated with it, deleted with it, and carried over by the cleaner to the segment that replaces it.
A torn trailing entry (a crash during an append) is ignored when read; loading the active segment
cuts it, and recovery rewrites the index of every segment it scans (`storage.file.producer_state`).

Threads: entries are held in memory once loaded (closed segments load on first use, on a reader or
write thread, under a lock); the event loop adds entries after an append, the log's write thread
writes them and truncates; the flusher fsyncs what was written (`sync_blocking`).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from storage.aborted_txns import AbortedTxnList, encode_entry
from storage.file.fs import FileSystem, fsync_path, read_file, unlink_if_exists, write_all, write_file
from storage.interface import AbortedTxn

TXN_INDEX_SUFFIX = ".txnindex"
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


class TxnIndex:
    """The aborted transactions of one segment, in memory and in its ``.txnindex`` file."""

    def __init__(self, fs: FileSystem, path: str) -> None:
        self.fs = fs
        self.path = path
        self._entries: AbortedTxnList | None = None  # None until loaded
        self._file_size = 0  # bytes of whole entries in the file (appends go there)
        self._synced_size = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TxnIndex({os.path.basename(self.path)}, entries={'?' if self._entries is None else len(self._entries)})"

    @property
    def loaded(self) -> bool:
        return self._entries is not None

    @property
    def exists(self) -> bool:
        """Whether the file holds entries (known only once loaded)."""
        return self._file_size > 0

    def start_empty(self) -> None:
        """A new segment: no entries and no file."""
        with self._lock:
            self._entries = AbortedTxnList()
            self._file_size = self._synced_size = 0

    def adopt(self, entries: AbortedTxnList, written: bool) -> None:
        """Take `entries` as the index (the cleaner's or recovery's rebuild); `written`: the file holds them."""
        with self._lock:
            self._entries = entries
            self._file_size = self._synced_size = len(entries.encoded()) if written else 0

    def load(self, log: Any, *, cut: bool = False) -> AbortedTxnList:
        """Blocking: the entries, read from the file on first use (a missing file: none). A damaged
        tail is ignored, with a warning; with `cut` it is also cut off the file (the active segment)."""
        entries = self._entries
        if entries is not None:
            return entries
        with self._lock:
            if self._entries is not None:
                return self._entries
            try:
                data = read_file(self.fs, self.path)
            except FileNotFoundError:
                data = b""
            entries, problem = AbortedTxnList.decode(data)
            size = len(entries.encoded())
            if problem is not None:
                log.warning("storage.txn_index.damaged", path=self.path, reason=problem, entries_kept=len(entries))
                if cut:
                    self._cut(size)
            self._entries = entries
            self._file_size = self._synced_size = size
            return entries

    def _cut(self, size: int) -> None:
        fd = self.fs.open(self.path, _WRITE_FLAGS)
        try:
            self.fs.ftruncate(fd, size)
            self.fs.fsync(fd)
        finally:
            self.fs.close(fd)

    @property
    def entries(self) -> AbortedTxnList:
        """The loaded entries (load first)."""
        assert self._entries is not None, f"{self.path} is not loaded"
        return self._entries

    def collect(self, start_offset: int, end_offset: int, into: list[AbortedTxn], log: Any) -> bool:
        """Blocking when not loaded yet: `AbortedTxnList.collect` over this segment's entries."""
        return self.load(log).collect(start_offset, end_offset, into)

    # --- changes -------------------------------------------------------------------------------------

    def add(self, txns: list[AbortedTxn]) -> bytes:
        """Event loop: add entries (for markers just appended to the segment); returns their bytes,
        for `write_blocking`."""
        entries = self.entries
        for txn in txns:
            entries.append(txn)
        return b"".join(encode_entry(txn) for txn in txns)

    def write_blocking(self, data: bytes) -> bool:
        """Blocking: append entries' bytes to the file; True when this created the file (the
        directory then needs an fsync)."""
        created = self._file_size == 0
        fd = self.fs.open(self.path, _WRITE_FLAGS)
        try:
            write_all(self.fs, fd, data, self._file_size)
        finally:
            self.fs.close(fd)
        self._file_size += len(data)
        return created

    def sync_blocking(self) -> None:
        """Blocking: fsync the file if entries were written since the last sync."""
        size = self._file_size
        if size > self._synced_size:
            try:
                fsync_path(self.fs, self.path)
            except FileNotFoundError:  # deleted meanwhile with its segment
                return
            self._synced_size = max(self._synced_size, size)

    def truncate_blocking(self, offset: int, log: Any) -> None:
        """Blocking: drop the entries whose marker is at or after `offset` (the segment was truncated)."""
        kept = self.load(log).truncated(offset)
        data = kept.encoded()
        if len(data) == self._file_size:
            self._entries = kept
            return
        if data:
            write_file(self.fs, self.path, data, sync=True)
        else:
            unlink_if_exists(self.fs, self.path)
        self.adopt(kept, written=True)

    def replace_blocking(self, entries: AbortedTxnList, log: Any) -> bool:
        """Blocking: make the file hold exactly `entries` (recovery's rebuild); True if it changed."""
        data = entries.encoded()
        current = self.load(log)
        if current.encoded() == data and self._file_size == len(data):
            return False
        if data:
            write_file(self.fs, self.path, data, sync=True)
        else:
            unlink_if_exists(self.fs, self.path)
        self.adopt(entries, written=True)
        return True

    def write_copy_blocking(self, path: str) -> None:
        """Blocking: write the entries, fsynced, to `path` (the cleaner's ``.cleaned`` file)."""
        write_file(self.fs, path, self.entries.encoded(), sync=True)
