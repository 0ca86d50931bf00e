"""Waiting in tests: poll a condition until it holds, with a deadline, instead of sleeping a guessed time.

- ``wait_until`` (threads, compat tests) and ``wait_until_async`` (coroutines, unit tests): the first
  truthy value of a check, polled every ``interval`` seconds; after ``timeout`` seconds they fail saying
  what was awaited and what the check saw last. A check that has something to report while the
  condition does not hold yet returns ``Pending(state)`` (falsy), and ``state`` is named in the failure.
- ``answered_yet``: whether a response is waiting on a socket right now, without waiting for one (to
  check that a parked request is still parked).

``wait_until_async`` measures its deadline with the running loop's clock, so under a virtual clock
(``tests.unit.virtual_clock``) it costs no real time.
"""

from __future__ import annotations

import asyncio
import select
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")
INTERVAL_S = 0.02


class Pending:
    """A check's answer while its condition does not hold yet: falsy, carrying what the check saw."""

    __slots__ = ("state",)

    def __init__(self, state: Any) -> None:
        self.state = state

    def __bool__(self) -> bool:
        return False


def _timed_out(what: str, timeout: float, last: Any, detail: Callable[[], str] | None) -> AssertionError:
    seen = last.state if isinstance(last, Pending) else last
    extra = f"; {detail()}" if detail is not None else ""
    return AssertionError(f"{what}: not reached within {timeout:g} s; last seen: {seen!r}{extra}")


def wait_until(check: Callable[[], T], timeout: float, what: str, detail: Callable[[], str] | None = None,
               interval: float = INTERVAL_S) -> T:
    """The first truthy value of ``check()``, polled every ``interval`` seconds for at most ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout, value, detail)
        time.sleep(interval)


async def wait_until_async(check: Callable[[], T | Awaitable[T]], timeout: float, what: str,
                           detail: Callable[[], str] | None = None, interval: float = INTERVAL_S) -> T:
    """``wait_until`` for coroutines: ``check`` may be a plain function or return an awaitable; the loop
    runs other tasks between checks."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if loop.time() >= deadline:
            raise _timed_out(what, timeout, value, detail)
        await asyncio.sleep(interval)


def answered_yet(sock: socket.socket) -> bool:
    """True if bytes (a response, or the peer closing) are waiting to be read on ``sock`` now."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)
