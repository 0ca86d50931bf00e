"""The file system seam: every disk call of the file engine that matters goes through one object.

`FileSystem` is a thin layer over `os` (open, pread, pwrite, fsync/fdatasync, ftruncate, rename,
unlink, mkdir, listdir, stat). The engine never calls `os` for these directly, so a test can pass a
`FaultInjectingFileSystem` that counts calls and bytes, and raises chosen `OSError`s (ENOSPC, EIO,
EROFS...) on chosen operations and paths, optionally after writing part of the data, which is what a
full disk does to a real write.

`StorageError` is the one error the engine raises for I/O failures: a `KafkaError` carrying
KAFKA_STORAGE_ERROR, which is what Kafka answers when a log directory fails.
"""

from __future__ import annotations

import errno as errno_codes
import os
import stat
import threading
import time
from collections import Counter
from dataclasses import dataclass

from protocol.errors import ErrorCode, KafkaError

_FDATASYNC = getattr(os, "fdatasync", os.fsync)
READ_ONLY = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
READ_WRITE = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
READ_WRITE_EXISTING = os.O_RDWR | getattr(os, "O_CLOEXEC", 0)  # reopening a file that must exist


class StorageError(KafkaError):
    """A disk operation failed (KAFKA_STORAGE_ERROR); `path` and `errno` say which and how."""

    def __init__(self, message: str, *, path: str | None = None, errno: int | None = None) -> None:
        super().__init__(ErrorCode.KAFKA_STORAGE_ERROR, message)
        self.path = path
        self.errno = errno


def storage_error(action: str, path: str, exc: OSError) -> StorageError:
    """Wrap an OSError into a StorageError whose message names the action and the file."""
    reason = exc.strerror or str(exc)
    name = errno_codes.errorcode.get(exc.errno or 0, str(exc.errno))
    return StorageError(f"{action} {path}: {reason} ({name})", path=path, errno=exc.errno)


class FileSystem:
    """The real file system. Subclass and override methods to inject faults or count calls."""

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        return os.open(path, flags, mode)

    def close(self, fd: int) -> None:
        os.close(fd)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        return os.pread(fd, size, offset)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def fdatasync(self, fd: int) -> None:
        _FDATASYNC(fd)

    def ftruncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def fstat(self, fd: int) -> os.stat_result:
        return os.fstat(fd)

    def stat(self, path: str) -> os.stat_result:
        return os.stat(path)

    def replace(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def mkdir(self, path: str) -> None:
        os.mkdir(path, 0o755)

    def rmdir(self, path: str) -> None:
        os.rmdir(path)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)


# --- helpers composed from the seam's calls (so injected faults apply to them too) ---------------------


def write_all(fs: FileSystem, fd: int, data: bytes | memoryview, offset: int) -> None:
    """pwrite until every byte is written (a pwrite may write less than asked)."""
    view = memoryview(data).cast("B")
    while view:
        written = fs.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno_codes.EIO, "write made no progress")
        view = view[written:]
        offset += written


def read_at(fs: FileSystem, fd: int, size: int, offset: int) -> bytes:
    """pread up to `size` bytes, looping over short reads; fewer bytes only at the end of the file."""
    data = fs.pread(fd, size, offset)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = fs.pread(fd, size - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def read_file(fs: FileSystem, path: str) -> bytes:
    """The whole content of a small file (checkpoints, indexes)."""
    fd = fs.open(path, READ_ONLY)
    try:
        return read_at(fs, fd, fs.fstat(fd).st_size, 0)
    finally:
        fs.close(fd)


def write_file(fs: FileSystem, path: str, data: bytes, *, sync: bool = False) -> None:
    """Create or replace the content of `path` in place (not atomic: see `replace_file`)."""
    fd = fs.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0))
    try:
        write_all(fs, fd, data, 0)
        if sync:
            fs.fsync(fd)
    finally:
        fs.close(fd)


def fsync_path(fs: FileSystem, path: str) -> None:
    """fsync a file or directory by path (a directory fsync makes its new and renamed entries durable)."""
    fd = fs.open(path, READ_ONLY)
    try:
        fs.fsync(fd)
    finally:
        fs.close(fd)


def replace_file(fs: FileSystem, path: str, data: bytes, *, private: bool = False) -> None:
    """Blocking: replace ``path`` with ``data`` so a crash leaves either the old or the new content;
    ``private``: readable by the owner only. The temporary file is made afresh (a leftover one is removed
    first), so it never keeps an older file's mode."""
    temp = path + ".tmp"
    unlink_if_exists(fs, temp)
    fd = fs.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                 0o600 if private else 0o644)
    try:
        write_all(fs, fd, data, 0)
        fs.fsync(fd)
    finally:
        fs.close(fd)
    fs.replace(temp, path)
    fsync_path(fs, os.path.dirname(path) or ".")


def exists(fs: FileSystem, path: str) -> bool:
    try:
        fs.stat(path)
    except FileNotFoundError:
        return False
    return True


def unlink_if_exists(fs: FileSystem, path: str) -> bool:
    try:
        fs.unlink(path)
    except FileNotFoundError:
        return False
    return True


def makedirs(fs: FileSystem, path: str) -> None:
    """mkdir -p through the seam."""
    missing: list[str] = []
    current = os.path.abspath(path)
    while True:
        try:
            st = fs.stat(current)
        except FileNotFoundError:
            missing.append(current)
            parent = os.path.dirname(current)
            if parent == current:
                break
            current = parent
            continue
        if not _is_dir(st):
            raise NotADirectoryError(errno_codes.ENOTDIR, "Not a directory", current)
        break
    for directory in reversed(missing):
        try:
            fs.mkdir(directory)
        except FileExistsError:
            if not _is_dir(fs.stat(directory)):
                raise


def remove_tree(fs: FileSystem, path: str) -> None:
    """rm -r through the seam."""
    for name in fs.listdir(path):
        child = os.path.join(path, name)
        if _is_dir(fs.stat(child)):
            remove_tree(fs, child)
        else:
            fs.unlink(child)
    fs.rmdir(path)


def _is_dir(st: os.stat_result) -> bool:
    return stat.S_ISDIR(st.st_mode)


def is_directory(fs: FileSystem, path: str) -> bool:
    try:
        return _is_dir(fs.stat(path))
    except FileNotFoundError:
        return False


# --- fault injection ----------------------------------------------------------------------------------


@dataclass
class Fault:
    """One injected failure: `op` fails with `error` on paths containing `path_contains`.

    `times` is how many calls fail (None: every call until removed); `skip` lets that many matching
    calls through first; `partial_bytes` makes a failing pwrite write that many bytes before raising.
    """

    op: str
    error: int = errno_codes.EIO
    path_contains: str | None = None
    times: int | None = 1
    skip: int = 0
    partial_bytes: int = 0
    fired: int = 0


class FaultInjectingFileSystem(FileSystem):
    """A real file system that counts every call and can fail chosen ones.

    Counters: `calls[op]`, `calls_by_suffix[(op, suffix)]`, `bytes_by_suffix[(op, suffix)]` where
    suffix is the file's extension (".log", ".index", ".timeindex", ".tmp", "" for directories), and
    `bytes_by_path[(op, path)]` for reads and writes. Safe to share between the engine's threads.
    """

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.calls_by_suffix: Counter[tuple[str, str]] = Counter()
        self.bytes_by_suffix: Counter[tuple[str, str]] = Counter()
        self.bytes_by_path: Counter[tuple[str, str]] = Counter()
        self.faults: list[Fault] = []
        self.delays: dict[str, float] = {}  # op -> seconds to sleep before the call (slow disks)
        self._paths: dict[int, str] = {}
        self._lock = threading.Lock()  # the engine calls from several threads at once

    def inject(self, op: str, error: int = errno_codes.EIO, *, path_contains: str | None = None,
               times: int | None = 1, skip: int = 0, partial_bytes: int = 0) -> Fault:
        fault = Fault(op, error, path_contains, times, skip, partial_bytes)
        self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self.faults.clear()

    def reset_counts(self) -> None:
        self.calls.clear()
        self.calls_by_suffix.clear()
        self.bytes_by_suffix.clear()
        self.bytes_by_path.clear()

    def path_of(self, fd: int) -> str:
        return self._paths.get(fd, "")

    def count(self, op: str, suffix: str | None = None) -> int:
        return self.calls[op] if suffix is None else self.calls_by_suffix[(op, suffix)]

    def bytes(self, op: str, suffix: str) -> int:
        return self.bytes_by_suffix[(op, suffix)]

    # --- the plumbing ---------------------------------------------------------------------------

    def _enter(self, op: str, path: str, nbytes: int = 0) -> Fault | None:
        suffix = os.path.splitext(path)[1]
        with self._lock:
            self.calls[op] += 1
            self.calls_by_suffix[(op, suffix)] += 1
            self.bytes_by_suffix[(op, suffix)] += nbytes
        delay = self.delays.get(op)
        if delay:
            time.sleep(delay)  # counted first: a test can see the call is under way
        with self._lock:
            return self._take_fault(op, path)

    def _take_fault(self, op: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.op != op or (fault.path_contains is not None and fault.path_contains not in path):
                continue
            if fault.skip > 0:
                fault.skip -= 1
                continue
            fault.fired += 1
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
            return fault
        return None

    @staticmethod
    def _raise(fault: Fault, path: str) -> None:
        raise OSError(fault.error, os.strerror(fault.error), path)

    def _simple(self, op: str, path: str) -> None:
        fault = self._enter(op, path)
        if fault is not None:
            self._raise(fault, path)

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        self._simple("open", path)
        fd = super().open(path, flags, mode)
        self._paths[fd] = path
        return fd

    def close(self, fd: int) -> None:
        path = self._paths.pop(fd, "")
        self._simple("close", path)
        super().close(fd)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        path = self.path_of(fd)
        fault = self._enter("pread", path)
        if fault is not None:
            self._raise(fault, path)
        data = super().pread(fd, size, offset)
        with self._lock:
            self.bytes_by_suffix[("pread", os.path.splitext(path)[1])] += len(data)
            self.bytes_by_path[("pread", path)] += len(data)
        return data

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        path = self.path_of(fd)
        fault = self._enter("pwrite", path, len(data))
        if fault is not None:
            if fault.partial_bytes:
                super().pwrite(fd, memoryview(data)[: fault.partial_bytes], offset)
            self._raise(fault, path)
        written = super().pwrite(fd, data, offset)
        with self._lock:
            self.bytes_by_path[("pwrite", path)] += written
        return written

    def fsync(self, fd: int) -> None:
        self._simple("fsync", self.path_of(fd))
        super().fsync(fd)

    def fdatasync(self, fd: int) -> None:
        self._simple("fdatasync", self.path_of(fd))
        super().fdatasync(fd)

    def ftruncate(self, fd: int, size: int) -> None:
        self._simple("ftruncate", self.path_of(fd))
        super().ftruncate(fd, size)

    def fstat(self, fd: int) -> os.stat_result:
        self._simple("fstat", self.path_of(fd))
        return super().fstat(fd)

    def stat(self, path: str) -> os.stat_result:
        self._simple("stat", path)
        return super().stat(path)

    def replace(self, src: str, dst: str) -> None:
        self._simple("replace", dst)
        super().replace(src, dst)

    def unlink(self, path: str) -> None:
        self._simple("unlink", path)
        super().unlink(path)

    def mkdir(self, path: str) -> None:
        self._simple("mkdir", path)
        super().mkdir(path)

    def rmdir(self, path: str) -> None:
        self._simple("rmdir", path)
        super().rmdir(path)

    def listdir(self, path: str) -> list[str]:
        self._simple("listdir", path)
        return super().listdir(path)
