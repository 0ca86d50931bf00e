"""An asyncio event loop on a virtual clock, for unit tests of code that times out with the loop's timers
(``loop.time()``, ``asyncio.wait_for``, ``asyncio.sleep``, ``call_later``).

The clock starts at 0 and moves only when the loop has nothing ready to run: it then jumps straight to
the next timer instead of sleeping. So a 5 s timeout costs no real time, a test can say "still waiting
at 299 ms, answered at 300 ms" exactly, and "answered at once" is ``loop.time()`` not having moved.

Only for in-process tests without threads or sockets: the clock would jump past work a thread is doing.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class _JumpingSelector(selectors.DefaultSelector):  # type: ignore[misc, valid-type]
    """Never blocks for a timer: with nothing ready it moves the loop's clock by the time it would sleep."""

    def __init__(self, loop: VirtualClockLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None or timeout <= 0:
            return super().select(timeout)  # no timer pending (or work ready): real behaviour
        events = super().select(0)
        if not events:
            self._loop.advance(timeout)
        return events


class VirtualClockLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._now = 0.0
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


def run_virtual(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on a `VirtualClockLoop`."""
    with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
        return runner.run(main)
