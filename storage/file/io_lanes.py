"""IoLanes: the file engine's write threads, one per lane; a log's writes all take the same lane.

A log's mutations (appends, rolls, truncations, segment deletions, the cleaner's swaps) must reach its
files in the order they were made, so each log owns one lane: a single thread that runs its work in
submission order. Logs are dealt to the lanes round-robin as they are opened, so one partition's
16 MiB write no longer holds up every other partition's small append behind it, as one engine-wide
I/O thread did. Work that belongs to no log (checkpoints, cluster metadata, the clean-shutdown
marker, leftover removal) takes lane `ENGINE_LANE`, which logs share with the others in turn.

The number of lanes is the ``write.threads`` option of a ``file://`` storage URL (default
`DEFAULT_WRITE_THREADS`); with 1 every write is serialised, as before lanes existed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_WRITE_THREADS = 4
ENGINE_LANE = 0


class IoLanes:
    """`count` single-thread executors; `assign()` deals lanes to logs, `submit(lane, ...)` runs work."""

    def __init__(self, count: int = DEFAULT_WRITE_THREADS, *, thread_name_prefix: str = "moldau-io") -> None:
        if count < 1:
            raise ValueError(f"the number of write threads must be at least 1, got {count}")
        self.executors = tuple(ThreadPoolExecutor(1, thread_name_prefix=f"{thread_name_prefix}-{i}")
                               for i in range(count))
        # The engine's own work starts on lane 0, so the first log opened gets lane 1 (when there is one).
        self._next = itertools.cycle(range(1, count + 1))

    def __len__(self) -> int:
        return len(self.executors)

    def assign(self) -> int:
        """The lane for a log being opened."""
        return next(self._next) % len(self.executors)

    def executor(self, lane: int) -> ThreadPoolExecutor:
        return self.executors[lane % len(self.executors)]

    def submit(self, lane: int, fn: Callable[..., T], *args: Any) -> Future[T]:
        return self.executor(lane).submit(fn, *args)

    def shutdown(self, wait: bool) -> None:
        for executor in self.executors:
            executor.shutdown(wait=wait)
