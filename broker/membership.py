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
- Coordinators, as in Kafka: the groups of a ``__consumer_offsets`` partition are coordinated by that
  partition's leader, the transactional ids of a ``__transaction_state`` partition by its leader. A
  broker coordinates a partition once it holds the partition's coordinator lock in the database (so
  exactly one live broker does, even while views differ) and has loaded its state from the log; a group
  or transaction request for a partition it does not coordinate answers NOT_COORDINATOR, and each
  broker's ListGroups and ListTransactions list its own. COMMIT and ABORT markers that another broker's
  transaction coordinator writes to an owned ``__consumer_offsets`` partition are taken in as they are
  announced.
- Other brokers' changes arrive as database notifications: cluster metadata (topics, configs: reloaded),
  appends (a log this broker serves catches up, waking the fetches waiting on it), registrations, and
  the shared documents (SCRAM credentials, ACLs, client quotas: `broker.documents`, reloaded).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from protocol.errors import ErrorCode

log = structlog.get_logger()

# The APIs a group or transaction coordinator answers, by API key; another broker answers them
# NOT_COORDINATOR. TxnOffsetCommit goes to the group's coordinator, as in Kafka.
GROUP_COORDINATOR_APIS = frozenset({8, 9, 11, 12, 13, 14, 15, 28, 42, 47})
TXN_COORDINATOR_APIS = frozenset({22, 24, 25, 26, 65})  # InitProducerId: only with a transactional id
DESCRIBE_GROUPS, DELETE_GROUPS, OFFSET_FETCH = 15, 42, 9
ADD_PARTITIONS_TO_TXN, DESCRIBE_TRANSACTIONS = 24, 65


def group_ids(api_key: int, body: Any) -> list[str]:
    """The group ids a group coordinator request names."""
    if api_key == DESCRIBE_GROUPS:
        return list(body.groups or ())
    if api_key == DELETE_GROUPS:
        return list(body.groups_names or ())
    if api_key == OFFSET_FETCH and getattr(body, "groups", None):
        return [g.group_id for g in body.groups]
    return [body.group_id]


def transactional_ids(api_key: int, body: Any) -> list[str]:
    """The transactional ids a transaction coordinator request names (none: not a coordinator request)."""
    if api_key == DESCRIBE_TRANSACTIONS:
        return list(body.transactional_ids or ())
    if api_key == ADD_PARTITIONS_TO_TXN and getattr(body, "transactions", None):
        return [t.transactional_id for t in body.transactions]
    if api_key == ADD_PARTITIONS_TO_TXN:
        return [body.v3_and_below_transactional_id]
    found = getattr(body, "transactional_id", None)
    return [] if found is None else [found]


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
    import hashlib  # here: it loads OpenSSL, which a single broker without TLS never needs

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

    def coordinator_of(self, key_type: int, key: str) -> int:
        return self.node_id

    def owned(self, topic: str) -> frozenset[int] | None:
        return None  # every coordinator partition

    def owns_transactional_id(self, transactional_id: str) -> bool:
        return True

    def refusal(self, api_key: int, body: Any) -> ErrorCode | None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def leave(self) -> None:
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
        self._owned: dict[str, frozenset[int]] = {}  # internal topic -> partitions coordinated here
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

    # ------------------------------------------------------------ coordinators

    def _coordinator_partitions(self, topic: str) -> int:
        """How many partitions an internal topic has, or will have when its coordinator creates it."""
        from broker.cluster import OFFSETS_TOPIC

        existing = self._broker.cluster.get(topic)
        if existing is not None and existing.partitions:
            return len(existing.partitions)
        config = self._broker.config
        return config.offsets_topic_num_partitions if topic == OFFSETS_TOPIC \
            else config.transaction_state_log_num_partitions

    def _partition_of(self, topic: str, key: str) -> int:
        from broker.groups.persistence import partition_for

        return partition_for(key, self._coordinator_partitions(topic))

    def coordinator_of(self, key_type: int, key: str) -> int:
        """FindCoordinator: the broker leading the key's internal partition (0 group, 1 transaction)."""
        from broker.cluster import OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC

        topic = OFFSETS_TOPIC if key_type == 0 else TRANSACTION_STATE_TOPIC
        return self.leader(topic, self._partition_of(topic, key))

    def owned(self, topic: str) -> frozenset[int]:
        """The partitions of an internal topic this broker coordinates."""
        return self._owned.get(topic, frozenset())

    def owns_transactional_id(self, transactional_id: str) -> bool:
        from broker.cluster import TRANSACTION_STATE_TOPIC

        return self._partition_of(TRANSACTION_STATE_TOPIC, transactional_id) in self.owned(TRANSACTION_STATE_TOPIC)

    def refusal(self, api_key: int, body: Any) -> ErrorCode | None:
        """NOT_COORDINATOR for a group or transaction request naming a group or transactional id whose
        partition this broker does not coordinate."""
        from broker.cluster import OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC

        if api_key in GROUP_COORDINATOR_APIS:
            topic, keys = OFFSETS_TOPIC, group_ids(api_key, body)
        elif api_key in TXN_COORDINATOR_APIS:
            topic, keys = TRANSACTION_STATE_TOPIC, transactional_ids(api_key, body)
        else:
            return None
        owned = self.owned(topic)
        if any(self._partition_of(topic, key) not in owned for key in keys if key is not None):
            return ErrorCode.NOT_COORDINATOR
        return None

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
        self._owned = {}  # the broker stops its coordinators next, then leaves (`leave`)

    async def leave(self) -> None:
        """Deregister, releasing the coordinator locks: after the coordinators stopped, so the next owners
        load everything they wrote."""
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
            from broker.cluster import OFFSETS_TOPIC

            try:
                async with partition.lock:
                    before = partition.log.log_end_offset
                    await partition.log.refresh()
                    # Its producers' last batches may be among the appends: rebuild their state from the log.
                    cluster.forget_producer_state(partition)
                    if topic == OFFSETS_TOPIC and index in self.owned(OFFSETS_TOPIC):
                        await self._broker.groups.follow(partition, before)  # markers for its groups
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

    # ------------------------------------------------------------ coordinator ownership

    async def _update_coordinator(self) -> None:
        """Coordinate the internal partitions this broker leads and no others: take their locks (one
        held elsewhere is tried again next beat), let go of the rest, and when the set changes load the
        coordinators afresh from the logs (caught up first)."""
        from broker.cluster import OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC
        from storage.postgres.cluster import GROUP_COORDINATOR_LOCKS, TXN_COORDINATOR_LOCKS

        registry = self._registry
        owned: dict[str, frozenset[int]] = {}
        for topic, base in ((OFFSETS_TOPIC, GROUP_COORDINATOR_LOCKS), (TRANSACTION_STATE_TOPIC, TXN_COORDINATOR_LOCKS)):
            count = self._coordinator_partitions(topic)
            wanted = {p for p in range(count) if self.leader(topic, p) == self.node_id}
            held = {key - base for key in registry.held_locks if base <= key < base + count}
            for p in held - wanted:
                await registry.release_lock(base + p)
            got = set()
            for p in sorted(wanted):
                if await registry.try_lock(base + p):
                    got.add(p)
            owned[topic] = frozenset(got)
        if owned == self._owned:
            return
        gained = {topic: owned[topic] - self._owned.get(topic, frozenset()) for topic in owned}
        self._owned = {}  # nothing is coordinated while the coordinators reload
        cluster = self._broker.cluster
        await cluster.sync()
        for topic, partitions in gained.items():
            existing = cluster.get(topic)
            for p in sorted(partitions):
                if existing is not None and p < len(existing.partitions):
                    async with existing.partitions[p].lock:
                        await existing.partitions[p].log.refresh()
        self._owned = owned
        await self._broker.reset_coordinators()
        log.info("cluster.coordinating", node_id=self.node_id, group_partitions=sorted(owned[OFFSETS_TOPIC]),
                 transaction_partitions=sorted(owned[TRANSACTION_STATE_TOPIC]))


def membership_for(broker: Any) -> SingleNode | SharedCluster:
    return SharedCluster(broker) if broker.config.shared_storage else SingleNode(broker)
