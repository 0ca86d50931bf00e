"""What the broker lets clients take: connection admission and request memory.

``ConnectionLimits`` decides, for each accepted socket, whether it may stay and when it may be served,
with Kafka's settings and behaviour (KIP-402, KIP-612):

- ``max.connections.per.ip`` (with ``max.connections.per.ip.overrides``, ``host:count,host:count``) and
  ``max.connections``: a connection over either limit is closed as soon as it is accepted. (Kafka closes
  per-IP excess the same way; for the broker-wide limit its acceptor stops accepting and leaves new
  connections in the kernel's backlog. asyncio cannot pause an accept loop, so Moldau closes those too:
  the client sees the refusal at once and retries with its reconnect backoff.)
- ``max.connection.creation.rate``: connections beyond the rate are throttled, not refused: each new
  connection gets the next free slot of a schedule spaced 1/rate seconds apart, and is not read from
  until then (Kafka delays the accept instead).

``RequestMemory`` is the broker-wide budget for request bytes, ``queued.max.request.bytes``: every
connection charges it for the frames it has received and not yet answered, and for the frame it is
receiving, by the size that frame's prefix announced (so a client announcing a large frame and trickling
it holds its share from the start, as Kafka's memory pool allocates the whole frame at once). While the
budget is spent, connections stop reading (except one finishing a frame it has already been charged
for, so every charged frame can complete and free its bytes); they resume when answers free bytes.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Protocol

from broker.config import BrokerConfig, ConfigError

# Bookkeeping each queued request costs beyond its frame (slot, decoded header, task): charged with the
# frame so that a flood of tiny requests is bounded by queued.max.request.bytes too.
REQUEST_OVERHEAD_BYTES = 1024
UNBOUNDED = -1


def parse_ip_overrides(text: str, resolve: bool = True) -> dict[str, int]:
    """``max.connections.per.ip.overrides`` (``host:count,host:count``) as {ip: count}. Host names are
    resolved to their addresses (each address gets the count), as Kafka does."""
    result: dict[str, int] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, count = item.rpartition(":")
        host = host.strip().strip("[]")
        if not sep or not host or not count.strip().isdigit():
            raise ConfigError(f"setting 'max.connections.per.ip.overrides' expects host:count[,host:count], "
                              f"got {item!r}")
        for address in _addresses(host) if resolve else [host]:
            result[address] = int(count)
    return result


def _addresses(host: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigError(f"setting 'max.connections.per.ip.overrides' names host {host!r}, which does not "
                          f"resolve: {exc.strerror or exc}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class ConnectionLimits:
    """Counts open connections per IP and in total, and schedules new ones under the creation rate."""

    def __init__(self, config: BrokerConfig, clock: Callable[[], float]) -> None:
        self.max_connections = config.max_connections
        self.max_per_ip = config.max_connections_per_ip
        self.overrides = parse_ip_overrides(config.max_connections_per_ip_overrides)
        rate = config.max_connection_creation_rate
        self._spacing = 1.0 / rate if rate > 0 else 0.0
        self._clock = clock
        self._next_slot = 0.0
        self._per_ip: dict[str, int] = {}
        self._total = 0

    @property
    def total(self) -> int:
        return self._total

    def count(self, ip: str) -> int:
        return self._per_ip.get(ip, 0)

    def limit_for(self, ip: str) -> int:
        return self.overrides.get(ip, self.max_per_ip)

    def admit(self, ip: str) -> str | None:
        """Count a new connection from ``ip``; or, over a limit, the reason it must be closed (it is then
        not counted)."""
        if self._total >= self.max_connections:
            return f"max.connections={self.max_connections} reached"
        limit = self.limit_for(ip)
        if self._per_ip.get(ip, 0) >= limit:
            return f"max.connections.per.ip={limit} reached for {ip}"
        self._total += 1
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        return None

    def release(self, ip: str) -> None:
        """An admitted connection closed."""
        self._total -= 1
        left = self._per_ip.get(ip, 1) - 1
        if left > 0:
            self._per_ip[ip] = left
        else:
            self._per_ip.pop(ip, None)

    def creation_delay(self) -> float:
        """Seconds a connection admitted now must wait before it is served (0 under the rate)."""
        if not self._spacing:
            return 0.0
        now = self._clock()
        start = max(now, self._next_slot)
        self._next_slot = start + self._spacing
        return start - now


class MemoryUser(Protocol):
    """A connection as the request budget sees it: told to re-check whether it may read."""

    def update_reading(self) -> None: ...


class RequestMemory:
    """The broker-wide budget of queued request bytes (``queued.max.request.bytes``)."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self._used = 0
        self._waiting: dict[MemoryUser, None] = {}  # insertion-ordered set: woken first come, first served

    @property
    def used(self) -> int:
        return self._used

    @property
    def exhausted(self) -> bool:
        return self.bound != UNBOUNDED and self._used >= self.bound

    def charge(self, delta: int) -> None:
        """Add (or, negative, give back) bytes; giving back below the bound wakes waiting connections."""
        was_exhausted = self.exhausted
        self._used += delta
        if was_exhausted and not self.exhausted and self._waiting:
            waiting = list(self._waiting)
            self._waiting.clear()
            for user in waiting:
                user.update_reading()

    def wait(self, user: MemoryUser) -> None:
        """``user`` stopped reading for want of budget: re-check it when bytes are given back."""
        self._waiting[user] = None

    def forget(self, user: MemoryUser) -> None:
        self._waiting.pop(user, None)
