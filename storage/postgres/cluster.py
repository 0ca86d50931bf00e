"""What brokers sharing one PostgreSQL database tell each other through it: who is alive, who may change
the cluster metadata, and what changed.

- Registration (``moldau_brokers``): each broker holds a row with its node id, an incarnation id (new at
  every start), its advertised endpoints and rack, and a lease it renews. A broker is live while its lease
  runs and its session holds the broker's advisory lock (taken on the listening connection): a broker
  killed with ``kill -9`` drops its connection, PostgreSQL releases the lock at once, and the others see
  it gone at their next look instead of after the lease.
- A node id is taken when no live broker holds it, or when the live holder advertises exactly the
  endpoints the new broker has just bound (it can only be this broker's previous, dead incarnation). A
  broker without a configured node id gets the smallest free one.
- `metadata_lock`: held while one broker changes the cluster metadata blob, so changes from several
  brokers apply one after another, each on top of the last.
- Coordinator locks, one per partition of ``__consumer_offsets`` and of ``__transaction_state``: held by
  the broker coordinating the groups or transactions of that partition, on the listening connection, so
  that they are released when that broker dies; `held_locks` forgets them when that connection (and so
  every lock on it) was lost.
- Notifications (LISTEN/NOTIFY): ``moldau_metadata`` after a metadata change, ``moldau_appends`` after an
  append (``partition:end_offset:topic``), ``moldau_brokers`` after a registration or a departure,
  ``moldau_documents`` after a shared document (SCRAM credentials, ACLs, quotas) changed (its name).

Lease times are the database's clock, so brokers' clocks need not agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger()

# Advisory lock keys (two int4 keys: class, object). The class is "mold" in ASCII.
LOCK_CLASS = 0x6D6F6C64
METADATA_LOCK = 0  # object key of the metadata lock
BROKER_LOCK_OFFSET = 2  # brokers' own locks: node id plus this (node ids stay below the ranges below)
GROUP_COORDINATOR_LOCKS = 1 << 24  # plus the __consumer_offsets partition: its group coordinator's lock
TXN_COORDINATOR_LOCKS = 2 << 24  # plus the __transaction_state partition: its transaction coordinator's

METADATA_CHANNEL = "moldau_metadata"
APPENDS_CHANNEL = "moldau_appends"
BROKERS_CHANNEL = "moldau_brokers"
DOCUMENTS_CHANNEL = "moldau_documents"

FIRST_AUTO_NODE_ID = 1


@dataclass(frozen=True, slots=True)
class RegisteredBroker:
    node_id: int
    rack: str | None
    endpoints: dict[str, tuple[str, int]]  # listener name -> advertised (host, port)


class NodeIdInUse(Exception):
    """The configured node id is held by another live broker."""


def _broker_lock(node_id: int) -> int:
    return node_id + BROKER_LOCK_OFFSET


class PostgresCluster:
    """One broker's side of the shared registry (see the module docstring). Uses the engine's pool for
    statements, and one connection of its own that listens and holds the broker's advisory lock."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self._listener: Any = None
        self._callbacks: dict[str, list[Callable[[str], None]]] = {}
        self.node_id: int | None = None
        self.incarnation = uuid.uuid4()
        self.sessions = 0  # listening connections opened so far: a new one has none of the old one's locks
        self._locks: set[int] = set()  # coordinator locks taken on the listening connection...
        self._locks_session = 0  # ...of this session
        self._using_listener = asyncio.Lock()  # one statement at a time on the listening connection

    # ------------------------------------------------------------ registration

    async def register(self, node_id: int | None, endpoints: dict[str, tuple[str, int]], rack: str | None,
                       lease_ms: int) -> int:
        """Take ``node_id`` (None: the smallest free one) for this broker; returns it. Raises
        `NodeIdInUse` when a live broker with other endpoints holds the configured id."""
        encoded = json.dumps({name: list(address) for name, address in sorted(endpoints.items())})
        mine = {name: tuple(address) for name, address in endpoints.items()}
        async with self._engine.connection() as conn:
            while True:
                live = {b.node_id: b for b in await self._live(conn)}
                candidate = node_id if node_id is not None else FIRST_AUTO_NODE_ID
                while node_id is None and candidate in live:
                    candidate += 1
                holder = live.get(candidate)
                if holder is not None and holder.endpoints != mine:
                    raise NodeIdInUse(f"node.id {candidate} is registered by a live broker advertising "
                                      f"{holder.endpoints}; give this broker another node.id, or none to "
                                      f"have a free one handed out")
                if await self._claim(conn, candidate, rack, encoded, lease_ms, candidate in live):
                    break
                if node_id is not None:
                    raise NodeIdInUse(f"node.id {candidate} was registered by another broker just now")
        self.node_id = candidate
        await self._listen(wait_s=lease_ms / 1000)
        await self.notify(BROKERS_CHANNEL, str(candidate))
        log.info("cluster.registered", node_id=candidate, incarnation=str(self.incarnation))
        return candidate

    async def _claim(self, conn: Any, node_id: int, rack: str | None, endpoints: str, lease_ms: int,
                     held: bool) -> bool:
        """Write this broker's row for ``node_id`` unless a live broker holds it: its lease has run out,
        its session is gone (``held`` False: nobody holds its lock), or it advertises this broker's own
        endpoints (this broker's previous incarnation)."""
        status = await conn.execute(
            "INSERT INTO moldau_brokers (node_id, incarnation, rack, endpoints, lease_expires_at) "
            "VALUES ($1, $2, $3, $4, now() + $5 * interval '1 millisecond') "
            "ON CONFLICT (node_id) DO UPDATE SET incarnation = EXCLUDED.incarnation, rack = EXCLUDED.rack, "
            "endpoints = EXCLUDED.endpoints, lease_expires_at = EXCLUDED.lease_expires_at "
            "WHERE moldau_brokers.lease_expires_at < now() OR moldau_brokers.endpoints = EXCLUDED.endpoints "
            "OR NOT $6",
            node_id, self.incarnation, rack, endpoints, lease_ms, held)
        return status.endswith(" 1")

    async def renew(self, lease_ms: int) -> bool:
        """Extend this broker's lease; False when its row now belongs to another incarnation."""
        async with self._engine.connection() as conn:
            status = await conn.execute(
                "UPDATE moldau_brokers SET lease_expires_at = now() + $3 * interval '1 millisecond' "
                "WHERE node_id = $1 AND incarnation = $2", self.node_id, self.incarnation, lease_ms)
        return status.endswith(" 1")

    async def live(self) -> list[RegisteredBroker]:
        """The live brokers, by node id."""
        async with self._engine.connection() as conn:
            return await self._live(conn)

    @staticmethod
    async def _live(conn: Any) -> list[RegisteredBroker]:
        rows = await conn.fetch(
            "SELECT node_id, rack, endpoints FROM moldau_brokers b WHERE lease_expires_at > now() AND EXISTS ("
            "SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1 "
            "AND l.objid = b.node_id + $2 AND l.objsubid = 2 "
            # pg_locks lists every database's locks: another cluster's broker with this node id is not this one.
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())) "
            "ORDER BY node_id", LOCK_CLASS, BROKER_LOCK_OFFSET)
        return [RegisteredBroker(r["node_id"], r["rack"],
                                 {name: (a[0], int(a[1])) for name, a in json.loads(r["endpoints"]).items()})
                for r in rows]

    async def leave(self) -> None:
        """Remove this broker's row (a clean stop), so the others move its partitions at once."""
        if self.node_id is None:
            return
        with contextlib.suppress(Exception):
            async with self._engine.connection() as conn:
                await conn.execute("DELETE FROM moldau_brokers WHERE node_id = $1 AND incarnation = $2",
                                   self.node_id, self.incarnation)
                await conn.execute("SELECT pg_notify($1, $2)", BROKERS_CHANNEL, str(self.node_id))
        await self._close_listener()

    # ------------------------------------------------------------ the listening connection

    def on(self, channel: str, callback: Callable[[str], None]) -> None:
        """Call ``callback(payload)`` for every notification on ``channel`` (from any broker, this one too)."""
        self._callbacks.setdefault(channel, []).append(callback)

    async def ensure_listening(self) -> bool:
        """(Re)open the listening connection and retake the broker lock after a lost connection; returns
        whether it is open."""
        if self._listener is not None and not self._listener.is_closed():
            return True
        try:
            async with self._using_listener:
                await self._listen()
        except Exception as exc:  # noqa: BLE001 - the database is away: the heartbeat loop tries again
            log.warning("cluster.listen_failed", error=f"{type(exc).__name__}: {exc}")
            return False
        return True

    async def _listen(self, wait_s: float = 0.0) -> None:
        import asyncpg

        await self._close_listener()
        conn = await asyncpg.connect(self._engine.dsn, timeout=self._engine.command_timeout)
        try:
            if self.node_id is not None:
                # A dead previous incarnation's session may still hold the lock for a moment.
                loop = asyncio.get_running_loop()
                deadline = loop.time() + wait_s
                while not await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", LOCK_CLASS,
                                              _broker_lock(self.node_id)):
                    if loop.time() >= deadline:
                        raise NodeIdInUse(f"node.id {self.node_id}: another session holds its lock")
                    await asyncio.sleep(0.1)
            for channel in (METADATA_CHANNEL, APPENDS_CHANNEL, BROKERS_CHANNEL, DOCUMENTS_CHANNEL):
                await conn.add_listener(channel, self._notified)
        except BaseException:
            await conn.close()
            raise
        self._listener = conn
        self.sessions += 1

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        for callback in self._callbacks.get(channel, ()):
            try:
                callback(payload)
            except Exception:
                log.exception("cluster.notification_failed", channel=channel, payload=payload)

    async def _close_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    async def notify(self, channel: str, payload: str) -> None:
        async with self._engine.connection() as conn:
            await conn.execute("SELECT pg_notify($1, $2)", channel, payload)

    # ------------------------------------------------------------ metadata changes

    @contextlib.asynccontextmanager
    async def metadata_lock(self) -> AsyncIterator[None]:
        """Hold the cluster-wide metadata lock (released if this broker's connection dies)."""
        async with self._engine.connection() as conn:
            await conn.execute("SELECT pg_advisory_lock($1, $2)", LOCK_CLASS, METADATA_LOCK)
            try:
                yield
            finally:
                with contextlib.suppress(Exception):
                    await conn.execute("SELECT pg_advisory_unlock($1, $2)", LOCK_CLASS, METADATA_LOCK)

    # ------------------------------------------------------------ coordinator locks

    @property
    def held_locks(self) -> frozenset[int]:
        """The coordinator locks this broker holds: none once the connection they were taken on is gone."""
        conn = self._listener
        if self._locks_session != self.sessions or conn is None or conn.is_closed():
            self._locks.clear()
        return frozenset(self._locks)

    async def try_lock(self, key: int) -> bool:
        """Take a coordinator lock if nobody holds it; returns whether this broker now does."""
        async with self._using_listener:
            conn = self._listener
            if conn is None or conn.is_closed():
                return False
            if self._locks_session != self.sessions:
                self._locks.clear()
                self._locks_session = self.sessions
            if key in self._locks:
                return True
            if await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", LOCK_CLASS, key):
                self._locks.add(key)
                return True
            return False

    async def release_lock(self, key: int) -> None:
        if key not in self.held_locks:
            return
        self._locks.discard(key)
        async with self._using_listener:
            with contextlib.suppress(Exception):
                await self._listener.execute("SELECT pg_advisory_unlock($1, $2)", LOCK_CLASS, key)

    async def close(self) -> None:
        await self.leave()
        await self._close_listener()

