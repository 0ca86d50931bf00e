"""Rate limiting of repeated bad-input log lines, so hostile traffic cannot turn the log into the attack.

``LogThrottle`` keys each line by (event, host), optionally refined by a ``similar`` tag (the API and
version a refused request used, say) where lines of one event differ in a way worth seeing once each. The first line of a key is logged in full and opens a
window of ``log.throttle.window.ms``; further lines of that key inside the window are only counted.
When the window is over (noticed on the key's next line, on any later line, or by ``flush``), one
summary line ``log.suppressed`` says how many were dropped:
``request.malformed_body suppressed 4711 similar from 10.1.2.3 in the last 60.0 s``.

Its memory is bounded by ``log.throttle.max.keys``: when full, the oldest key is summarised and dropped
to make room. Time comes from the clock passed in, so tests drive it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import structlog

SUMMARY_EVENT = "log.suppressed"


class _Window:
    __slots__ = ("opened", "suppressed")

    def __init__(self, opened: float) -> None:
        self.opened = opened
        self.suppressed = 0


class LogThrottle:
    """Logs the first line per (event, host) and window in full, counts the rest, summarises them."""

    def __init__(self, window_s: float, max_keys: int, clock: Callable[[], float], logger: Any = None) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, got {max_keys}")
        self.window_s = window_s
        self.max_keys = max_keys
        self._clock = clock
        self._log = logger if logger is not None else structlog.get_logger()
        # Oldest window first: a key's window is re-opened (and moved to the end) only when it expires,
        # so expired windows are always at the front.
        self._windows: OrderedDict[tuple[str, str, str], _Window] = OrderedDict()

    @classmethod
    def from_config(cls, config: Any) -> LogThrottle:
        """The broker's throttle: ``log.throttle.window.ms`` and ``log.throttle.max.keys``, monotonic time."""
        return cls(config.log_throttle_window_ms / 1000, config.log_throttle_max_keys, time.monotonic)

    def __len__(self) -> int:
        return len(self._windows)

    def warning(self, event: str, host: str, *, similar: str = "", **fields: Any) -> bool:
        return self.log("warning", event, host, similar=similar, **fields)

    def error(self, event: str, host: str, *, similar: str = "", **fields: Any) -> bool:
        return self.log("error", event, host, similar=similar, **fields)

    def log(self, level: str, event: str, host: str, *, similar: str = "", **fields: Any) -> bool:
        """Log ``event`` at ``level`` unless it repeats a line of the same host (and ``similar`` tag) in
        the current window; True when it was logged."""
        now = self._clock()
        self._expire(now)
        key = (event, host, similar)
        window = self._windows.get(key)
        if window is not None:
            window.suppressed += 1
            return False
        if len(self._windows) >= self.max_keys:
            self._summarise(*self._windows.popitem(last=False), now)
        self._windows[key] = _Window(now)
        getattr(self._log, level)(event, **fields)
        return True

    def flush(self, *, everything: bool = False) -> None:
        """Summarise and drop every expired window, or every window (at shutdown). Call it now and then,
        so a flood that stopped is still reported."""
        self._expire(self._clock(), everything)

    def _expire(self, now: float, everything: bool = False) -> None:
        windows = self._windows
        while windows:
            key, window = next(iter(windows.items()))
            if not everything and now - window.opened < self.window_s:
                break
            del windows[key]
            self._summarise(key, window, now)

    def _summarise(self, key: tuple[str, str, str], window: _Window, now: float) -> None:
        if not window.suppressed:
            return
        event, host, _ = key
        elapsed = round(now - window.opened, 1)
        self._log.warning(SUMMARY_EVENT, suppressed_event=event, host=host, suppressed=window.suppressed,
                          window_s=elapsed,
                          message=f"{event} suppressed {window.suppressed} similar from {host} "
                                  f"in the last {elapsed} s")
