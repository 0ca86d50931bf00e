"""FileEngine: the durable storage engine behind ``file:///path``.

One data directory holds one sub-directory per partition (``<topic>-<partition>``), the checkpoint
files and the clean-shutdown marker (see `storage.file.checkpoint`), and a ``.lock`` file held with
flock while an engine runs, so that two brokers never share a directory.

Start-up (the constructor, synchronous and small): create the directory if needed and prove it is
writable (a clear `StorageError` naming the path otherwise), take the lock, note and remove the
clean-shutdown marker, read the two checkpoint files and list the partition directories. Logs are
loaded (and recovered if needed) when `open_log` is first called for them.

Threads: a few write threads (`storage.file.io_lanes`), each log's writes in order on its own lane
(appends, rolls, truncations, deletions, log loading) and the engine's (checkpoints, metadata) on
lane 0; one fsync thread runs the group-commit passes (`storage.file.flusher`), so appends go on
while a pass runs; a few reader threads serve reads and lookups with pread. The event loop never
touches the disk.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
import uuid
import weakref
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import structlog

from storage.file.checkpoint import (
    CLEAN_SHUTDOWN_FILE,
    LOCK_FILE,
    LOG_START_OFFSET_CHECKPOINT,
    RECOVERY_POINT_CHECKPOINT,
    PartitionKey,
    format_checkpoint,
    read_checkpoint,
)
from storage.file.cleaner import CLEANER_OFFSET_CHECKPOINT
from storage.file.config import LogConfig, TopicConfigSource
from storage.file.flusher import Flusher
from storage.file.fs import (
    READ_WRITE,
    FileSystem,
    StorageError,
    exists,
    fsync_path,
    is_directory,
    makedirs,
    read_file,
    remove_tree,
    replace_file,
    storage_error,
    unlink_if_exists,
    write_file,
)
from storage.file.io_lanes import DEFAULT_WRITE_THREADS, ENGINE_LANE, IoLanes
from storage.file.log import FileLog, directory_name, parse_directory_name
from storage.file.open_files import DEFAULT_MAX_OPEN_SEGMENT_FILES, OpenFiles
from storage.file.recovery import load_log
from storage.interface import StorageEngine, wall_clock_ms
from storage.tasks import shared

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

T = TypeVar("T")

DEFAULT_CHECKPOINT_INTERVAL_MS = 60_000  # Kafka's log.flush.offset.checkpoint.interval.ms
URL_OPTIONS = {"log.flush.offset.checkpoint.interval.ms": "checkpoint_interval_ms", "read.threads": "read_threads",
               "write.threads": "write_threads",
               "log.max.open.segment.files": "max_open_segment_files"}
PROBE_FILE = ".moldau-probe.tmp"
DELETE_SUFFIX = "-delete"
# The longest file name most file systems take (NAME_MAX): a doomed directory's name is cut to fit, as a
# 249-character topic's "<topic>-<partition>.<id>-delete" would not (Kafka cuts it the same way).
MAX_FILE_NAME_BYTES = 255
# Topics, ids, partition counts and config overrides, as the broker's cluster state saves them.
METADATA_FILE = "cluster-metadata.json"


class _DeletionFailed(Exception):
    """A partition directory could not be renamed for deletion; it and those after it remain."""

    def __init__(self, directory: str, error: OSError, remaining: list[str]) -> None:
        super().__init__(directory)
        self.directory, self.error, self.remaining = directory, error, set(remaining)


class FileEngine(StorageEngine):
    """Partition logs in a data directory, laid out as Kafka lays out a log directory."""

    def __init__(self, path: str | os.PathLike[str], *, fs: FileSystem | None = None,
                 clock: Callable[[], int] | None = None,
                 checkpoint_interval_ms: int = DEFAULT_CHECKPOINT_INTERVAL_MS, read_threads: int = 4,
                 write_threads: int = DEFAULT_WRITE_THREADS,
                 max_open_segment_files: int = DEFAULT_MAX_OPEN_SEGMENT_FILES, url: str | None = None) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.url = url or Path(self.path).as_uri()
        self.fs = fs or FileSystem()
        self.clock = clock or wall_clock_ms
        self.checkpoint_interval_ms = checkpoint_interval_ms
        # Descriptors of segments kept open, least recently used closed first (open_files).
        self.open_files = OpenFiles(max_open_segment_files)
        self._log = structlog.get_logger().bind(data_dir=self.path)
        self._lock_fd = self._prepare_data_dir()
        try:
            self.clean_shutdown = self._consume_marker()
            self._recovery_points = read_checkpoint(self.fs, self._file(RECOVERY_POINT_CHECKPOINT), self._log).entries
            starts = read_checkpoint(self.fs, self._file(LOG_START_OFFSET_CHECKPOINT), self._log)
            self._log_start_offsets = starts.entries
            # A damaged file lost some entries: each log opened without one says so (storage.checkpoint).
            self._log_starts_damaged = bool(starts.problems)
            # Where each compacted log's clean part ends (storage.file.cleaner); Kafka's file and format.
            self._cleaner_offsets = read_checkpoint(self.fs, self._file(CLEANER_OFFSET_CHECKPOINT), self._log).entries
            self._on_disk, leftovers = self._discover()
        except OSError as exc:
            self._release_lock()
            raise storage_error("cannot read data directory", self.path, exc) from None
        except BaseException:
            self._release_lock()
            raise
        self._lanes = IoLanes(write_threads)
        self._syncer = ThreadPoolExecutor(1, thread_name_prefix="moldau-fsync")
        self._readers = ThreadPoolExecutor(read_threads, thread_name_prefix="moldau-read")
        self._finalizer = weakref.finalize(self, _shutdown,
                                           (*self._lanes.executors, self._syncer, self._readers),
                                           self._lock_fd)
        self.flusher = Flusher(self._syncer, after_pass=self._after_flush_pass)
        self._logs: dict[PartitionKey, FileLog] = {}
        self._opened: set[PartitionKey] = set()  # opened (so loaded, and recovered if needed) this run
        self._opening: dict[PartitionKey, asyncio.Task[FileLog]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._last_checkpoint = time.monotonic()
        self._closed = False
        if leftovers:
            self._lanes.submit(ENGINE_LANE, self._remove_leftovers, leftovers)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> FileEngine:
        """``file:///absolute/path[?log.flush.offset.checkpoint.interval.ms=N&read.threads=N&write.threads=N&log.max.open.segment.files=N]``.

        Keyword arguments (the broker's settings) are defaults the URL's options override."""
        parts = urlsplit(url)
        if parts.scheme != "file" or parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError(f"storage URL {url!r}: expected file:///ABSOLUTE/PATH")
        options = dict(kwargs)
        for name, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query)):
            if name not in URL_OPTIONS:
                raise ValueError(f"storage URL {url!r}: unknown option {name!r} "
                                 f"(known: {', '.join(sorted(URL_OPTIONS))})")
            try:
                options[URL_OPTIONS[name]] = int(value)
            except ValueError:
                raise ValueError(f"storage URL {url!r}: option {name!r} expects an integer, got {value!r}") from None
        return cls(unquote(parts.path), url=url, **options)

    @property
    def write_threads(self) -> int:
        """How many write lanes the engine runs (the ``write.threads`` URL option)."""
        return len(self._lanes)

    def __repr__(self) -> str:
        return f"FileEngine({self.path!r}, {len(self._logs)} open logs)"

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    # --- start-up ---------------------------------------------------------------------------------

    def _prepare_data_dir(self) -> int | None:
        fs = self.fs
        try:
            makedirs(fs, self.path)
        except OSError as exc:
            raise StorageError(f"data directory {self.path} cannot be created: {exc.strerror or exc}",
                               path=self.path, errno=exc.errno) from None
        probe = self._file(PROBE_FILE)
        try:
            write_file(fs, probe, b"moldau")  # no fsync: start-up stays fast; EROFS/EACCES/ENOSPC show here
            fs.unlink(probe)
        except OSError as exc:
            raise StorageError(f"data directory {self.path} is not writable: {exc.strerror or exc}",
                               path=self.path, errno=exc.errno) from None
        if fcntl is None:
            return None
        lock_path = self._file(LOCK_FILE)
        try:
            fd = fs.open(lock_path, READ_WRITE)
        except OSError as exc:
            raise storage_error("cannot open the lock file", lock_path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fs.close(fd)
            raise StorageError(f"data directory {self.path} is in use by another engine or process "
                               f"({lock_path} is locked)", path=self.path) from None
        return fd

    def _release_lock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            try:
                self.fs.close(fd)  # closing the descriptor releases the flock
            except OSError:
                pass

    def _consume_marker(self) -> bool:
        """Whether the last engine closed cleanly; the marker goes now, before anything is written."""
        marker = self._file(CLEAN_SHUTDOWN_FILE)
        if not exists(self.fs, marker):
            return False
        self.fs.unlink(marker)
        fsync_path(self.fs, self.path)
        return True

    def _discover(self) -> tuple[set[PartitionKey], list[str]]:
        keys: set[PartitionKey] = set()
        leftovers = []
        for name in self.fs.listdir(self.path):
            full = self._file(name)
            if name.endswith(DELETE_SUFFIX):
                leftovers.append(full)
                continue
            key = parse_directory_name(name)
            if key is not None and is_directory(self.fs, full):
                keys.add(key)
        return keys, leftovers

    def _remove_leftovers(self, paths: list[str]) -> None:
        for path in paths:
            try:
                remove_tree(self.fs, path)
            except OSError as exc:
                self._log.warning("storage.leftover.remove_failed", path=path, error=str(exc))

    # --- executors --------------------------------------------------------------------------------

    def _submit(self, executor: Executor, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        try:
            return loop.run_in_executor(executor, functools.partial(fn, *args))
        except RuntimeError:
            raise StorageError(f"storage engine for {self.path} is closed", path=self.path) from None

    def submit_io(self, fn: Callable[..., T], *args: Any, lane: int = ENGINE_LANE) -> asyncio.Future[T]:
        """Run `fn` on the write thread of `lane` (after the work submitted to it before; see io_lanes).

        A log's work goes to its own lane (`FileLog.submit_io`); the engine's default lane holds the rest."""
        return self._submit(self._lanes.executor(lane), fn, *args)

    async def run_io(self, fn: Callable[..., T], *args: Any, lane: int = ENGINE_LANE) -> T:
        return await self.submit_io(fn, *args, lane=lane)

    async def run_read(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._submit(self._readers, fn, *args)

    # --- logs -------------------------------------------------------------------------------------

    async def open_log(self, topic: str, partition: int, config: TopicConfigSource = None) -> FileLog:
        """Open (creating or recovering if needed) a partition's log; the same object on later calls.

        `config` gives the topic's settings by Kafka name (a mapping, or a callable looked up on each
        use); a later call with a config replaces the one the log uses.
        """
        if self._closed:
            raise StorageError(f"storage engine for {self.path} is closed", path=self.path)
        key = (topic, partition)
        log = self._logs.get(key)
        if log is None:
            # One open for every caller: one that goes away (cancelled) neither cuts it short for the others
            # nor hands them its cancellation. The config of the caller that started it is the one used.
            starting = key not in self._opening
            log = await shared(self._opening, key, lambda: self._load_and_keep(key, LogConfig(config)))
            if starting:
                config = None
        if config is not None:
            log.config = LogConfig(config)
        return log

    async def _load_and_keep(self, key: PartitionKey, config: LogConfig) -> FileLog:
        log = await self._load(key, config)
        self._logs[key] = log
        self._opened.add(key)
        return log

    async def _load(self, key: PartitionKey, config: LogConfig) -> FileLog:
        topic, partition = key
        directory = self._file(directory_name(topic, partition))
        log = self._log.bind(topic=topic, partition=partition)
        if self._log_starts_damaged and key in self._on_disk and key not in self._log_start_offsets:
            log.error("storage.log_start_offset.lost", path=self._file(LOG_START_OFFSET_CHECKPOINT),
                      fix="the damaged checkpoint had no entry for this partition: its log starts at its first "
                          "segment; repeat any DeleteRecords done on it")
        lane = self._lanes.assign()
        try:
            loaded = await self.run_io(
                functools.partial(load_log, self.fs, self.path, directory, clean=self.clean_shutdown,
                                  recovery_point=self._recovery_points.get(key, 0),
                                  log_start_offset=self._log_start_offsets.get(key, 0), config=config,
                                  now_ms=self.clock(), log=log, cleaner_offset=self._cleaner_offsets.get(key),
                                  files=self.open_files), lane=lane)
        except OSError as exc:
            raise storage_error(f"cannot open log {topic}-{partition}:", exc.filename or directory, exc) from None
        flog = FileLog(self, topic, partition, directory, config, loaded.segments, loaded.log_start_offset,
                       loaded.log_end_offset, loaded.recovery_point, loaded.start_position, io_lane=lane,
                       created=loaded.created, producer_state=loaded.producer_state)
        self._recovery_points[key] = loaded.recovery_point
        self._log_start_offsets[key] = loaded.log_start_offset
        self._on_disk.add(key)
        if loaded.recovered_segments:
            self._spawn(self.checkpoint_recovery_points())
        return flog

    async def delete_log(self, topic: str, partition: int) -> None:
        """Delete a partition: its directory is renamed ``<dir>.<id>-delete`` (atomic), then removed."""
        await self.delete_logs([(topic, partition)])

    async def delete_logs(self, partitions: list[tuple[str, int]]) -> None:
        """Delete partitions as `delete_log` does, with one sync of the data directory and one checkpoint
        for all of them: a topic of 10,000 partitions went in minutes when each rewrote the checkpoints."""
        directories: list[tuple[PartitionKey, str]] = []
        for key in partitions:
            pending = self._opening.get(key)
            if pending is not None:
                await asyncio.wait((pending,))  # let the open finish (or fail) before deleting under it
            log = self._logs.pop(key, None)
            if log is not None:
                await log.abandon()
            self._on_disk.discard(key)
            self._recovery_points.pop(key, None)
            self._log_start_offsets.pop(key, None)
            self._cleaner_offsets.pop(key, None)  # a stale entry is harmless: the cleaner validates it
            directories.append((key, self._file(directory_name(*key))))
        try:
            await self.run_io(self._delete_directories, [directory for _, directory in directories])
        except _DeletionFailed as failed:
            # Still there: listed, so that a new topic of the same name removes them first.
            self._on_disk.update(key for key, directory in directories if directory in failed.remaining)
            raise storage_error("cannot delete", failed.directory, failed.error) from None
        except OSError as exc:  # renamed, so gone from the topic's name: start-up removes what is left
            raise storage_error("cannot finish deleting partitions in", self.path, exc) from None
        await self.checkpoint()

    def _delete_directories(self, directories: list[str]) -> None:
        """Rename each directory to a doomed name, make the renames durable with one sync, then remove
        the doomed trees (a crash leaves them for start-up to remove)."""
        doomed: list[str] = []
        try:
            for i, directory in enumerate(directories):
                try:
                    if not exists(self.fs, directory):
                        continue
                    suffix = f".{uuid.uuid4().hex}{DELETE_SUFFIX}"
                    name = os.path.basename(directory)[: MAX_FILE_NAME_BYTES - len(suffix)]  # topic names are ASCII
                    target = self._file(name + suffix)
                    self.fs.replace(directory, target)
                except OSError as exc:
                    raise _DeletionFailed(directory, exc, directories[i:]) from None
                doomed.append(target)
        finally:
            if doomed:
                fsync_path(self.fs, self.path)
        for target in doomed:
            remove_tree(self.fs, target)

    def partitions(self) -> list[tuple[str, int]]:
        """Every partition with a log: open ones and those found in the data directory."""
        return sorted(self._on_disk | set(self._logs))

    def log(self, topic: str, partition: int) -> FileLog | None:
        """The open log of a partition, if any."""
        return self._logs.get((topic, partition))

    # --- checkpoints ------------------------------------------------------------------------------

    def _snapshot(self) -> tuple[dict[PartitionKey, int], dict[PartitionKey, int]]:
        points = dict(self._recovery_points)
        starts = dict(self._log_start_offsets)
        for key, log in self._logs.items():
            points[key] = log.recovery_point
            # A start offset being persisted is already in _log_start_offsets: never write it back.
            starts[key] = max(log.log_start_offset, starts.get(key, 0))
        return points, starts

    async def checkpoint(self) -> None:
        """Write both checkpoint files now (recovery points and log start offsets)."""
        points, starts = self._snapshot()
        self._recovery_points, self._log_start_offsets = dict(points), dict(starts)
        self._last_checkpoint = time.monotonic()
        await self.run_io(self._write_checkpoints, points, starts)

    async def checkpoint_recovery_points(self) -> None:
        points, _ = self._snapshot()
        self._recovery_points = dict(points)
        self._last_checkpoint = time.monotonic()
        await self.run_io(self._write_checkpoints, points, None)

    async def persist_log_start_offset(self, log: FileLog, offset: int) -> None:
        """Persist a log's new start offset before it takes effect (DeleteRecords, retention)."""
        key = (log.topic, log.partition)
        self._log_start_offsets[key] = offset  # later snapshots include it, even while this write runs
        _, starts = self._snapshot()
        try:
            await self.run_io(self._write_checkpoints, None, starts)
        except BaseException:
            self._log_start_offsets[key] = log.log_start_offset
            raise

    def cleaner_offset(self, log: FileLog) -> int | None:
        """Where the log's cleaned part ends (Kafka's cleaner-offset-checkpoint entry), if known."""
        return self._cleaner_offsets.get((log.topic, log.partition))

    def lower_cleaner_offset(self, log: FileLog, offset: int) -> None:
        """Truncation below the cleaned point: remember the lower point (written with the next clean)."""
        key = (log.topic, log.partition)
        if self._cleaner_offsets.get(key, -1) > offset:
            self._cleaner_offsets[key] = offset

    async def persist_cleaner_offset(self, log: FileLog, offset: int) -> None:
        """Record, atomically replacing ``cleaner-offset-checkpoint``, that the log is clean below `offset`."""
        self._cleaner_offsets[(log.topic, log.partition)] = offset
        path = self._file(CLEANER_OFFSET_CHECKPOINT)
        entries = dict(self._cleaner_offsets)

        def write() -> None:
            try:
                replace_file(self.fs, path, format_checkpoint(entries))
            except OSError as exc:
                unlink_if_exists_quietly(self.fs, path + ".tmp")
                raise storage_error("cannot write checkpoint", path, exc) from None
        await self.run_io(write)

    def _write_checkpoints(self, points: dict[PartitionKey, int] | None,
                           starts: dict[PartitionKey, int] | None) -> None:
        for name, entries in ((RECOVERY_POINT_CHECKPOINT, points), (LOG_START_OFFSET_CHECKPOINT, starts)):
            if entries is None:
                continue
            path = self._file(name)
            try:
                replace_file(self.fs, path, format_checkpoint(entries))
            except OSError as exc:
                unlink_if_exists_quietly(self.fs, path + ".tmp")
                raise storage_error("cannot write checkpoint", path, exc) from None

    async def load_metadata(self) -> bytes | None:
        path = self._file(METADATA_FILE)
        try:
            return await self.run_read(read_file, self.fs, path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise storage_error("cannot read cluster metadata", path, exc) from None

    async def save_metadata(self, data: bytes) -> None:
        path = self._file(METADATA_FILE)
        try:
            await self.run_io(replace_file, self.fs, path, bytes(data))
        except OSError as exc:
            unlink_if_exists_quietly(self.fs, path + ".tmp")
            raise storage_error("cannot write cluster metadata", path, exc) from None

    def _after_flush_pass(self) -> None:
        if self._closed or time.monotonic() - self._last_checkpoint < self.checkpoint_interval_ms / 1000:
            return
        self._last_checkpoint = time.monotonic()
        self._spawn(self.checkpoint_recovery_points())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(self._guard(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guard(self, coro: Any) -> None:
        try:
            await coro
        except StorageError as exc:
            self._log.error("storage.checkpoint.failed", error=exc.message)

    # --- shutdown ---------------------------------------------------------------------------------

    async def close(self) -> None:
        """Flush and close every log, write the checkpoints, then the clean-shutdown marker.

        The marker is left out when a log went offline or a checkpoint failed, and after an unclean
        start when some partition directory was never opened (so never recovered) in this run: the
        next start recovers then.
        """
        if self._closed:
            return
        self._closed = True
        clean = True
        logs = list(self._logs.values())
        # One group-commit pass for every log first, instead of one pass per log as each closes.
        await asyncio.gather(*(log.flush() for log in logs if log.offline is None), return_exceptions=True)
        if not self.clean_shutdown and not self._on_disk <= self._opened:
            clean = False
        for log in logs:
            try:
                await log.close()
            except (StorageError, OSError) as exc:
                clean = False
                self._log.error("storage.log.close_failed", topic=log.topic, partition=log.partition, error=str(exc))
            if log.offline is not None:
                clean = False
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.flusher.idle()
        try:
            await self.checkpoint()
            if clean:
                await self.run_io(self._write_marker)
        except StorageError as exc:
            self._log.error("storage.close.failed", error=exc.message)
        self._logs.clear()
        self._shutdown_threads(wait=True)
        self._release_lock()

    def _write_marker(self) -> None:
        marker = self._file(CLEAN_SHUTDOWN_FILE)
        try:
            write_file(self.fs, marker, b"", sync=True)
            fsync_path(self.fs, self.path)
        except OSError as exc:
            raise storage_error("cannot write the clean shutdown marker", marker, exc) from None

    def simulate_crash(self) -> None:
        """Stop as a killed process would: close every file, write nothing (for tests).

        What was written stays in the page cache, as after a real process crash; a test then damages
        the files as a power loss would.
        """
        self._closed = True
        for log in self._logs.values():
            log.release_files()
        self._logs.clear()
        self._shutdown_threads(wait=True)
        self._release_lock()

    def _shutdown_threads(self, wait: bool) -> None:
        self._lanes.shutdown(wait=wait)
        for executor in (self._syncer, self._readers):
            executor.shutdown(wait=wait)
        self._finalizer.detach()


def unlink_if_exists_quietly(fs: FileSystem, path: str) -> None:
    try:
        unlink_if_exists(fs, path)
    except OSError:
        pass


def _shutdown(executors: tuple[ThreadPoolExecutor, ...], lock_fd: int | None) -> None:
    """An engine dropped without close: stop its idle threads and release the directory lock."""
    for executor in executors:
        executor.shutdown(wait=False)
    if lock_fd is not None:
        try:
            os.close(lock_fd)
        except OSError:
            pass
