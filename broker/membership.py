"""Which brokers make up the cluster, which one leads each partition, and which one coordinates groups and
transactions.

`SingleNode` (file and memory storage): this broker is the whole cluster; it leads every partition and
coordinates everything.

`SharedCluster` (PostgreSQL storage shared by several brokers, `storage.postgres.cluster`):

- The broker registers with a lease (``node.id`` when set, else a free id from the database) and renews
  it every ``broker.heartbeat.interval.ms``, re-reading the live brokers each time; a broker whose lease
  runs out (``broker.session.timeout.ms``) or whose database session ends (``kill -9``) drops out.
- Leadership is computed, not stored: every broker ranks the live node ids for a partition with the same
  hash of (topic, partition, node id) and takes the highest (rendezvous hashing), so brokers agree
  without talking, partitions spread evenly, and a broker leaving moves only its own partitions.
- A partition this broker has just come to lead is taken over before it is served: its log catches up
  with what other brokers appended and its idempotent-producer state is rebuilt from the log; until then
  its data requests answer NOT_LEADER_OR_FOLLOWER (clients refresh metadata and retry).
- Groups and transactions are coordinated by one live broker at a time, the one with the smallest node
  id, holding the coordinator lock in the database; it loads their state from ``__consumer_offsets`` and
  ``__transaction_state`` when it takes over. Elsewhere their APIs answer NOT_COORDINATOR (ListGroups and
  ListTransactions: an empty list), as Kafka's brokers do for coordinators they are not.
- Other brokers' changes arrive as database notifications: cluster metadata (topics, configs: reloaded),
  appends (a log this broker serves catches up, waking the fetches waiting on it), registrations, and
  the shared documents (SCRAM credentials, ACLs, client quotas: `broker.documents`, reloaded).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from protocol.errors import ErrorCode

log = structlog.get_logger()

# The APIs a group or transaction coordinator answers; another broker answers them NOT_COORDINATOR.
GROUP_COORDINATOR_APIS = frozenset({8, 9, 11, 12, 13, 14, 15, 42, 47})  # OffsetCommit ... OffsetDelete
TXN_COORDINATOR_APIS = frozenset({24, 25, 26, 28, 65})  # AddPartitionsToTxn ... DescribeTransactions
INIT_PRODUCER_ID = 22
LIST_GROUPS = 16
LIST_TRANSACTIONS = 66


@dataclass(frozen=True, slots=True)
class Node:
    """A live broker as clients see it through one listener."""

    node_id: int
    host: str
    port: int
    rack: str | None


def rank(topic: str, partition: int, node_id: int) -> bytes:
    """The rendezvous weight of a node for a partition: the partition's leader is the live node with the
    highest."""
    return hashlib.blake2b(f"{topic}\0{partition}\0{node_id}".encode(), digest_size=8).digest()


def choose_leader(topic: str, partition: int, node_ids: Iterable[int]) -> int:
    return max(node_ids, key=lambda node: rank(topic, partition, node))


class SingleNode:
    """The cluster of a broker alone on its storage."""

    shared = False

    def __init__(self, broker: Any) -> None:
        self._broker = broker

    @property
    def node_id(self) -> int:
        return int(self._broker.node_id)

    def nodes(self, listener: str, own: tuple[str, int]) -> list[Node]:
        return [Node(self.node_id, own[0], own[1], self._broker.config.broker_rack)]

    def node(self, node_id: int, listener: str, own: tuple[str, int]) -> Node | None:
        return self.nodes(listener, own)[0] if node_id == self.node_id else None

    def leader(self, topic: str, partition: int) -> int:
        return self.node_id

    def leads(self, topic: str, partition: int) -> bool:
        return True

    @property
    def controller_id(self) -> int:
        return self.node_id

    @property
    def coordinator_id(self) -> int:
        return self.node_id

    coordinating = True

    def refusal(self, api_key: int, body: Any) -> ErrorCode | None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class SharedCluster:
    """One broker among those sharing a PostgreSQL database (see the module docstring)."""

    shared = True

    def __init__(self, broker: Any) -> None:
        self._broker = broker
        self._registry = broker.engine.cluster
        config = broker.config
        self._lease_ms = config.broker_session_timeout_ms
        self._interval_s = config.broker_heartbeat_interval_ms / 1000
        self._live: dict[int, Any] = {}  # node id -> storage.postgres.cluster.RegisteredBroker
        self._leaders: dict[tuple[str, int], int] = {}  # a cache, cleared when the live set changes
        self._taking_over: set[tuple[str, int]] = set()
        # Partitions this broker has come to lead from another broker and not yet caught up with.
        self._stale: set[tuple[str, int]] = set()
        self._coordinating = False
        self._heartbeat: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sync_due = asyncio.Event()
        self._syncer: asyncio.Task[None] | None = None
        self._looking = asyncio.Lock()  # one look at the live brokers (and coordinator change) at a time

    # ------------------------------------------------------------ the view

    @property
    def node_id(self) -> int:
        return int(self._broker.node_id)

    def _endpoint(self, node_id: int, listener: str, own: tuple[str, int]) -> tuple[str, int] | None:
        if node_id == self.node_id:
            return own
        registered = self._live.get(node_id)
        return None if registered is None else registered.endpoints.get(listener)

    def nodes(self, listener: str, own: tuple[str, int]) -> list[Node]:
        """The live brokers reachable through ``listener`` (Kafka leaves out brokers without it)."""
        out = []
        for node_id in sorted(self._live_ids()):
            node = self.node(node_id, listener, own)
            if node is not None:
                out.append(node)
        return out

    def node(self, node_id: int, listener: str, own: tuple[str, int]) -> Node | None:
        address = self._endpoint(node_id, listener, own)
        if address is None:
            return None
        rack = self._broker.config.broker_rack if node_id == self.node_id else self._live[node_id].rack
        return Node(node_id, address[0], address[1], rack)

    def _live_ids(self) -> set[int]:
        return set(self._live) | {self.node_id}

    def leader(self, topic: str, partition: int) -> int:
        key = (topic, partition)
        leader = self._leaders.get(key)
        if leader is None:
            leader = self._leaders[key] = choose_leader(topic, partition, self._live_ids())
        return leader

    def leads(self, topic: str, partition: int) -> bool:
        if self.leader(topic, partition) != self.node_id:
            return False
        key = (topic, partition)
        if key in self._stale:
            self._take_over([key])  # under way already, unless a failed one needs another try
            return False
        return True

    @property
    def controller_id(self) -> int:
        return min(self._live_ids())

    @property
    def coordinator_id(self) -> int:
        return min(self._live_ids())

    def refusal(self, api_key: int, body: Any) -> ErrorCode | None:
        """How this broker answers a request without its handler: NOT_COORDINATOR for a coordinator API
        when it is not the coordinator, NONE (an empty answer) for ListGroups and ListTransactions."""
        if self._coordinating:
            return None
        if api_key in GROUP_COORDINATOR_APIS or api_key in TXN_COORDINATOR_APIS:
            return ErrorCode.NOT_COORDINATOR
        if api_key in (LIST_GROUPS, LIST_TRANSACTIONS):
            return ErrorCode.NONE
        if api_key == INIT_PRODUCER_ID and getattr(body, "transactional_id", None):
            return ErrorCode.NOT_COORDINATOR
        return None

    @property
    def coordinating(self) -> bool:
        return self._coordinating

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Register (the broker's listeners are bound, not yet serving), learn the live brokers, and start
        the heartbeat."""
        from storage.postgres.cluster import (
            APPENDS_CHANNEL,
            BROKERS_CHANNEL,
            DOCUMENTS_CHANNEL,
            METADATA_CHANNEL,
        )

        broker = self._broker
        endpoints = {lis.name: lis.advertised for lis in broker.listeners if lis.advertised is not None}
        wanted = broker.config.node_id if "node.id" in broker.config.sources else None
        broker.node_id = await self._registry.register(wanted, endpoints, broker.config.broker_rack,
                                                       self._lease_ms)
        self._registry.on(METADATA_CHANNEL, lambda _: self._sync_due.set())
        self._registry.on(APPENDS_CHANNEL, self._appended)
        self._registry.on(BROKERS_CHANNEL, lambda _: self._spawn(self._look_quietly()))
        self._registry.on(DOCUMENTS_CHANNEL, lambda name: self._spawn(self._reload_document(name)))
        broker.engine.notify_appends = True
        await self._look()
        # Before serving: catch up with what other brokers appended to this broker's partitions since
        # they were opened (later appends are announced).
        await self._catch_up([(t.name, p.index) for t in broker.cluster.topics.values() for p in t.partitions
                              if self.leader(t.name, p.index) == self.node_id])
        self._heartbeat = asyncio.create_task(self._beat(), name="moldau-heartbeat")
        self._syncer = asyncio.create_task(self._sync_loop(), name="moldau-metadata-sync")

    async def stop(self) -> None:
        for task in (self._heartbeat, self._syncer, *self._tasks):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self._stop_coordinating()
        await self._registry.leave()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                if not await self._registry.ensure_listening():
                    continue
                if not await self._registry.renew(self._lease_ms):
                    log.warning("cluster.lease_lost", node_id=self.node_id)
                    await self._reregister()
                await self._look()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database is away: keep the last view, beat again
                log.warning("cluster.heartbeat_failed", node_id=self.node_id, error=f"{type(exc).__name__}: {exc}")

    async def _reregister(self) -> None:
        broker = self._broker
        endpoints = {lis.name: lis.advertised for lis in broker.listeners if lis.advertised is not None}
        wanted = broker.config.node_id if "node.id" in broker.config.sources else None
        node_id = await self._registry.register(wanted, endpoints, broker.config.broker_rack, self._lease_ms)
        if node_id != broker.node_id:
            log.warning("cluster.node_id_changed", old=broker.node_id, new=node_id)
            before = self._live_ids()
            broker.node_id = node_id
            self._view_changed(before)

    async def _look(self) -> None:
        """Re-read the live brokers; on a change, recompute leadership and the coordinator."""
        async with self._looking:
            await self._look_locked()

    async def _look_locked(self) -> None:
        live = {b.node_id: b for b in await self._registry.live() if b.node_id != self.node_id}
        if set(live) != set(self._live) or any(live[n] != self._live[n] for n in live):
            before = self._live_ids()
            self._live = live
            log.info("cluster.membership_changed", node_id=self.node_id, live=sorted(self._live_ids()),
                     before=sorted(before))
            self._view_changed(before)
        await self._update_coordinator()

    async def _reload_document(self, name: str) -> None:
        try:
            await self._broker.reload_document(name)
        except Exception as exc:  # noqa: BLE001 - the store keeps its last content; logged
            log.warning("cluster.document_reload_failed", document=name, error=f"{type(exc).__name__}: {exc}")

    async def _look_quietly(self) -> None:
        try:
            await self._look()
        except Exception as exc:  # noqa: BLE001 - a failed look is retried by the heartbeat
            log.warning("cluster.look_failed", node_id=self.node_id, error=f"{type(exc).__name__}: {exc}")

    def _view_changed(self, before: set[int]) -> None:
        """The live set changed from ``before``: the partitions this broker now leads and another led
        are served only after a catch-up (that broker may have appended until it saw the change)."""
        self._leaders.clear()
        cluster = self._broker.cluster
        if cluster is None:
            return
        me = self.node_id
        gained = [(t.name, p.index) for t in cluster.topics.values() for p in t.partitions
                  if self.leader(t.name, p.index) == me and choose_leader(t.name, p.index, before) != me]
        self._stale.update(gained)
        self._take_over(gained)

    # ------------------------------------------------------------ taking partitions over

    def _take_over(self, keys: list[tuple[str, int]]) -> None:
        fresh = [k for k in keys if k not in self._taking_over]
        if fresh:
            self._taking_over.update(fresh)
            self._spawn(self._catch_up(fresh))

    async def _catch_up(self, keys: list[tuple[str, int]]) -> None:
        cluster = self._broker.cluster
        for key in keys:
            try:
                partition = cluster.partition(*key)
                if partition is None:
                    continue
                async with partition.lock:
                    await partition.log.refresh()
                    cluster.forget_producer_state(partition)
                self._stale.discard(key)
                cluster.waiters.wake(*key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the partition is taken over on its next request
                log.warning("cluster.takeover_failed", topic=key[0], partition=key[1],
                            error=f"{type(exc).__name__}: {exc}")
            finally:
                self._taking_over.discard(key)

    def _appended(self, payload: str) -> None:
        """Another broker appended to a log: if this broker has it open, catch up and wake its fetches."""
        index_text, end_text, topic = (payload.split(":", 2) + ["", ""])[:3]
        cluster = self._broker.cluster
        if cluster is None:
            return
        try:
            index, end = int(index_text), int(end_text)
        except ValueError:
            return
        partition = cluster.partition(topic, index)
        if partition is None or partition.log.log_end_offset >= end:
            return  # not served here, or this broker's own append

        async def catch_up() -> None:
            try:
                async with partition.lock:
                    await partition.log.refresh()
                    # Its producers' last batches may be among the appends: rebuild their state from the log.
                    cluster.forget_producer_state(partition)
            except Exception as exc:  # noqa: BLE001 - the next append notification catches up again
                log.warning("cluster.catch_up_failed", topic=partition.topic.name, partition=partition.index,
                            error=f"{type(exc).__name__}: {exc}")
                return
            cluster.waiters.wake(partition.topic.name, partition.index)

        self._spawn(catch_up())

    # ------------------------------------------------------------ metadata

    async def _sync_loop(self) -> None:
        while True:
            await self._sync_due.wait()
            self._sync_due.clear()
            try:
                await self._broker.cluster.sync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the sync loop must outlive a failed sync: retried
                log.warning("cluster.metadata_sync_failed", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(self._interval_s)
                self._sync_due.set()
                continue
            self._leaders.clear()  # topics came or went: their leaders are computed afresh

    # ------------------------------------------------------------ coordinators

    async def _update_coordinator(self) -> None:
        should = self.coordinator_id == self.node_id
        if self._coordinating and not self._registry.holds_coordinator_lock:
            log.warning("cluster.coordinator_lock_lost", node_id=self.node_id)
            await self._stop_coordinating()
        if should and not self._coordinating:
            await self._start_coordinating()
        elif not should and self._coordinating:
            await self._stop_coordinating()

    async def _start_coordinating(self) -> None:
        if not await self._registry.try_coordinator_lock():
            return  # the previous coordinator has not let go yet: next beat
        from broker.cluster import INTERNAL_TOPICS

        broker = self._broker
        try:
            await broker.cluster.sync()
            for name in INTERNAL_TOPICS:
                topic = broker.cluster.get(name)
                for partition in topic.partitions if topic is not None else ():
                    await partition.log.refresh()
            await broker.reset_coordinators()
        except Exception:
            await self._registry.release_coordinator_lock()
            raise
        self._coordinating = True
        log.info("cluster.coordinating", node_id=self.node_id)

    async def _stop_coordinating(self) -> None:
        if not self._coordinating:
            return
        self._coordinating = False
        await self._broker.reset_coordinators()
        await self._registry.release_coordinator_lock()
        log.info("cluster.coordinator_moved", node_id=self.node_id, coordinator=self.coordinator_id)


def membership_for(broker: Any) -> SingleNode | SharedCluster:
    return SharedCluster(broker) if broker.config.shared_storage else SingleNode(broker)
