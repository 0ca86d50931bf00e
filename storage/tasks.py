"""Small asyncio helpers shared by the storage engines and the broker: work that must finish whoever waits
for it, one piece of work shared by everyone asking for the same thing, and marking an outcome retrieved
when nobody may be left to retrieve it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


def retrieve_outcome(future: asyncio.Future[Any]) -> None:
    """Mark a finished future's exception retrieved: asyncio logs one never retrieved as an error."""
    if not future.cancelled():
        future.exception()


async def to_completion(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` run as a task that carries on if this caller is cancelled (its client went away):
    a metadata change cut short halfway would leave logs open for a topic that was never made, or a
    deleted topic's data behind. Its outcome is marked retrieved for when nobody waits any more."""
    task = asyncio.ensure_future(coro)
    task.add_done_callback(retrieve_outcome)
    return await asyncio.shield(task)


async def shared(running: dict[K, asyncio.Task[T]], key: K, start: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Await the task `running` holds for `key`, first starting ``start()`` as one when there is none. Every
    caller for that key awaits the same task, which carries on when any of them is cancelled (its client
    went away) and leaves `running` when done; its outcome is marked retrieved for when nobody waits."""
    task = running.get(key)
    if task is None:
        task = running[key] = asyncio.ensure_future(start())
        task.add_done_callback(lambda _: running.pop(key, None) if running.get(key) is task else None)
        task.add_done_callback(retrieve_outcome)
    return await asyncio.shield(task)
