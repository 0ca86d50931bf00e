"""Durability of the file engine: group commit, and what each flush setting guarantees.

What each setting guarantees (per topic, Kafka's names; broker-wide defaults are
``log.flush.interval.messages`` and ``log.flush.interval.ms``):

* ``await log.flush()`` (always available; the broker calls it before answering an acks=-1 Produce):
  returns only when every batch appended to that log before the call is on stable storage. It
  fdatasyncs each ``.log`` file holding unflushed batches, fsyncs the partition directory when a
  segment file was created since the last flush, and fsyncs the index files of segments closed
  since then. So acks=all means fsynced, whatever the settings below say. It raises StorageError
  (KAFKA_STORAGE_ERROR) if an fsync fails.
* ``flush.messages = N`` (default Long.MAX: off): an append that leaves N or more offsets of the log
  unflushed waits for a flush before it returns. With N = 1 every append is durable when
  ``append()`` returns, so even acks=1 and acks=0 produces are fsynced before the broker moves on.
* ``flush.ms = T`` (default Long.MAX: off): the first append after a flush arms a timer, and T ms
  later a background flush covers everything appended until that flush starts. Batches appended with
  acks=0/1 are then durable at most T ms (plus one fsync) after they were appended. An error in a
  background flush takes the log offline for writes (see below).
* Neither set (Kafka's defaults): acks=0/1 batches reach the page cache when ``append()`` returns.
  They survive a crash of the broker process (the kernel still writes them back) but not a power
  loss or kernel crash, unless a later flush (an acks=all produce to the same partition, a timer,
  a clean close) covered them first. Kafka makes the same trade and relies on replication.

Around those: a clean close flushes every log; DeleteRecords and retention persist the new log start
offset (atomic checkpoint replace, fsynced) before returning; ``truncate_to`` fsyncs the truncation;
the recovery point (the offset below which a log was fsynced, so restart does not scan it) is
checkpointed every ``log.flush.offset.checkpoint.interval.ms`` (default 60 s) and on close: a stale
one only costs a longer scan. After any crash, recovery keeps each log's longest prefix of intact
batches, which includes everything a flush acknowledged.

A failed fsync takes the log offline for writes (appends and flushes raise KAFKA_STORAGE_ERROR, reads
go on): after a failed fsync the kernel may have dropped the dirty pages, so a retry could report
success for data that is gone.

Group commit: `Flusher.flush(log)` queues a waiter; a single task runs passes, each one snapshotting
the log end offset of every log with waiters, syncing all of them in one job on the engine's fsync
thread, then resolving every waiter queued before the pass began. Callers arriving during a pass
join it when it already covers their log end offset, else wait for the next one, so N concurrent
flushes over M logs cost about M fsyncs per pass instead of N. Appends continue on the write threads
while a pass runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, Protocol

from protocol.errors import KafkaError
from storage.file.fs import StorageError


class Flushable(Protocol):
    """What a log gives the flusher (see `FileLog`)."""

    @property
    def log_end_offset(self) -> int: ...

    def sync_plan(self) -> Any | None: ...

    def sync_blocking(self, plan: Any) -> None: ...

    def sync_done(self, plan: Any, error: StorageError | None) -> KafkaError | None:
        """Record the pass's result; returns what the waiters get."""

    def flush_outcome(self) -> KafkaError | None: ...


def _sync_all(plans: list[tuple[Flushable, Any]]) -> list[StorageError | None]:
    results: list[StorageError | None] = []
    for log, plan in plans:
        try:
            log.sync_blocking(plan)
            results.append(None)
        except StorageError as exc:
            results.append(exc)
    return results


class Flusher:
    """One per engine: runs flush passes on the fsync executor and resolves the waiters."""

    def __init__(self, executor: Executor, after_pass: Callable[[], None] | None = None) -> None:
        self._executor = executor
        self._after_pass = after_pass
        self._next: dict[Flushable, list[asyncio.Future[None]]] = {}
        self._background: dict[Flushable, None] = {}
        self._current: dict[Flushable, tuple[int, list[asyncio.Future[None]]]] = {}
        self._task: asyncio.Task[None] | None = None
        self.passes = 0

    async def flush(self, log: Flushable) -> None:
        """Wait until everything appended to `log` so far is fsynced (raises StorageError)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        current = self._current.get(log)
        if current is not None and current[0] >= log.log_end_offset:
            current[1].append(waiter)
        else:
            self._next.setdefault(log, []).append(waiter)
            self._wake(loop)
        await waiter

    def request(self, log: Flushable) -> None:
        """Flush `log` soon, nobody waiting (flush.ms timers)."""
        self._background[log] = None
        self._wake(asyncio.get_running_loop())

    async def idle(self) -> None:
        """Wait for the running passes to finish (engine close)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    def _wake(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._run(), name="moldau-flusher")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._next or self._background:
            waiting, self._next = self._next, {}
            logs = list(dict.fromkeys([*waiting, *self._background]))
            self._background = {}
            plans: list[tuple[Flushable, Any]] = []
            for log in logs:
                futures = waiting.get(log, [])
                plan = log.sync_plan()
                if plan is None:  # nothing unflushed, or the log is offline or closed
                    _resolve(futures, log.flush_outcome())
                    continue
                self._current[log] = (plan.target, futures)
                plans.append((log, plan))
            if not plans:
                continue
            try:
                results = await loop.run_in_executor(self._executor, _sync_all, plans)
            except BaseException as exc:  # the engine is closing (executor gone) or we were cancelled
                failure = StorageError(f"flush did not run: {exc!r}")
                for log, _ in plans:
                    _resolve(self._current.pop(log, (0, []))[1], failure)
                if isinstance(exc, Exception):
                    continue
                raise
            self.passes += 1
            for (log, plan), error in zip(plans, results):
                outcome = log.sync_done(plan, error)
                _resolve(self._current.pop(log)[1], outcome)
            if self._after_pass is not None:
                self._after_pass()


def _resolve(futures: list[asyncio.Future[None]], error: KafkaError | None) -> None:
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
