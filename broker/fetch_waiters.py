"""Long-poll Fetch: requests waiting for data on some partitions, woken by appends (no timer polling).

A Fetch that has less than ``min_bytes`` registers one `Waiter` on every partition it reads, then waits
on it up to ``max_wait_ms``. An append (or a truncation, deletion or log start move) calls
``wake(topic, partition)``, which sets every waiter registered there; the Fetch then reads again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


class Waiter:
    """One waiting Fetch request, registered on several partitions."""

    __slots__ = ("event", "keys")

    def __init__(self, keys: Iterable[tuple[str, int]]) -> None:
        self.event = asyncio.Event()
        self.keys = tuple(keys)

    async def wait(self, timeout: float) -> bool:
        """True when woken before ``timeout`` seconds passed."""
        if timeout <= 0:
            return self.event.is_set()
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
            return True
        except TimeoutError:
            return False


class FetchWaiters:
    def __init__(self) -> None:
        self._by_partition: dict[tuple[str, int], set[Waiter]] = {}

    def register(self, keys: Iterable[tuple[str, int]]) -> Waiter:
        waiter = Waiter(keys)
        for key in waiter.keys:
            self._by_partition.setdefault(key, set()).add(waiter)
        return waiter

    def unregister(self, waiter: Waiter) -> None:
        for key in waiter.keys:
            waiting = self._by_partition.get(key)
            if waiting is not None:
                waiting.discard(waiter)
                if not waiting:
                    del self._by_partition[key]

    def wake(self, topic: str, partition: int) -> None:
        waiting = self._by_partition.get((topic, partition))
        if waiting:
            for waiter in waiting:
                waiter.event.set()

    def waiting_on(self, topic: str, partition: int) -> int:
        return len(self._by_partition.get((topic, partition), ()))
