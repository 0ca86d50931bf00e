"""Small asyncio helpers shared by the storage engines and the broker: work that must finish whoever waits
for it, and marking an outcome retrieved when nobody may be left to retrieve it."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


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
