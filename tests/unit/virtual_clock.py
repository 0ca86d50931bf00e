"""An asyncio event loop on a virtual clock, for unit tests of code that times out with the loop's timers
(``loop.time()``, ``asyncio.wait_for``, ``asyncio.sleep``, ``call_later``).

The clock starts at 0 and moves only when the loop has nothing ready to run: it then jumps straight to
the next timer instead of sleeping. So a 5 s timeout costs no real time, a test can say "still waiting
at 299 ms, answered at 300 ms" exactly, and "answered at once" is ``loop.time()`` not having moved.

Work handed to threads with ``loop.run_in_executor`` takes no virtual time: while any is in flight the
loop waits for it for real instead of jumping. Other threads or sockets the loop does not know about
would see the clock jump past them: use it for in-process tests only.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
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
        if self._loop.threads_busy():
            return super().select(None)  # woken when the thread's result arrives
        events = super().select(0)
        if not events:
            self._loop.advance(timeout)
        return events


class VirtualClockLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._now = 0.0
        self._in_executor = 0
        super().__init__(_JumpingSelector(self))

    def run_in_executor(self, executor: Any, func: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        future = super().run_in_executor(executor, func, *args)
        self._in_executor += 1
        future.add_done_callback(self._executor_done)
        return future

    def _executor_done(self, _: asyncio.Future[Any]) -> None:
        self._in_executor -= 1

    def threads_busy(self) -> bool:
        return self._in_executor > 0

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


def run_virtual(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on a `VirtualClockLoop`."""
    with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
        return runner.run(main)


async def idle() -> None:
    """Return once every other task has run as far as it can: the loop had nothing ready to run and no
    executor work in flight. Only on a `VirtualClockLoop`, where reaching that moment costs no real time
    (it is the loop's jump to this call's tiny timer)."""
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualClockLoop), "idle() needs run_virtual()"
    await asyncio.sleep(1e-6)
