"""OpenFiles: a cap on the ``.log`` descriptors the file engine keeps open, least recently used first.

Kafka keeps every segment's files open and relies on the operating system's limit (``ulimit -n``);
a broker with many partitions or a long retention then needs a high limit, and running out fails
every request that opens a file, and every partition's next fsync with it. Here each engine keeps at
most ``log.max.open.segment.files`` (a broker setting and a ``file://`` URL option; default
`DEFAULT_MAX_OPEN_SEGMENT_FILES`) ``.log`` descriptors open, active segments included: touching one more
closes the least recently used that no thread is using at that moment, and a closed one is opened again
on its next use (`LogSegment.opened`). Writes are positional (pwrite), so an active segment reopened for
its next append goes on where it was; the partitions being written stay the most recently used, and
only a broker writing to more partitions than the cap at once pays an ``open`` per append for some.

What is not counted, and why:

* A segment the cleaner is rewriting, whose file still has a temporary name, is *held* open until the
  swap gives it its name: it could not be reopened before. There is at most one per log being cleaned.
  Beyond the cap there are for a moment the segments in use by a reader, writer or the fsync thread
  when the cap is reached (one per thread at most: an operation pins one segment at a time), closed as
  soon as their user releases them.
* Index files are read whole when a segment is loaded and written with short-lived descriptors, so
  they hold none between uses.

A segment closed before the flusher synced it is fsynced through a new descriptor: Linux writes back
the file's dirty pages whichever descriptor asks, and (since 4.16) reports a writeback error not yet
seen to the next fsync on any descriptor of the file.

Threads: `touch` runs on whichever thread opened a segment (I/O, fsync or reader threads); everything
is under one lock, taken before a segment's own descriptor lock, never after it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Protocol

DEFAULT_MAX_OPEN_SEGMENT_FILES = 256


class Closable(Protocol):
    """What OpenFiles needs from a segment (`storage.file.segment.LogSegment`)."""

    held_open: bool

    @property
    def is_open(self) -> bool: ...

    def close_if_idle(self) -> bool: ...


class OpenFiles:
    """The segments with an open descriptor, least recently used first, at most `cap` of them."""

    def __init__(self, cap: int = DEFAULT_MAX_OPEN_SEGMENT_FILES) -> None:
        if cap < 1:
            raise ValueError(f"the cap on open segment files must be at least 1, got {cap}")
        self.cap = cap
        self.evictions = 0  # descriptors closed to stay under the cap (tests, diagnostics)
        self._lru: OrderedDict[Closable, None] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Segments whose descriptor is open now and counts against the cap."""
        return len(self._lru)

    def touch(self, segment: Closable) -> None:
        """A segment's descriptor is open and in use: make it the most recently used, and close the
        least recently used idle ones beyond the cap."""
        with self._lock:
            if segment.held_open:
                self._lru.pop(segment, None)
                return
            self._lru[segment] = None
            self._lru.move_to_end(segment)
            if len(self._lru) > self.cap:
                self._evict()

    def released(self) -> None:
        """A thread stopped using a descriptor: close the ones an eviction had to skip while they were
        in use, if the cap is still exceeded (else they would stay open until the next touch)."""
        with self._lock:
            if len(self._lru) > self.cap:
                self._evict()

    def hold(self, segment: Closable, held: bool) -> None:
        """Keep a segment's descriptor open, uncounted (`held`), or let it count and be closed again."""
        with self._lock:
            segment.held_open = held
            if held:
                self._lru.pop(segment, None)
            elif segment.is_open:
                self._lru[segment] = None
                if len(self._lru) > self.cap:
                    self._evict()

    def forget(self, segment: Closable) -> None:
        """The segment closed its descriptor for good (deleted, replaced, or its log closed)."""
        with self._lock:
            self._lru.pop(segment, None)

    def _evict(self) -> None:
        excess = len(self._lru) - self.cap
        closed = []
        for segment in self._lru:  # oldest first; a segment in use now is skipped, not waited for
            if excess <= 0:
                break
            if segment.close_if_idle():
                closed.append(segment)
                excess -= 1
        for segment in closed:
            del self._lru[segment]
        self.evictions += len(closed)
