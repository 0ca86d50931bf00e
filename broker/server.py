"""The broker as a library object: ``Broker(config)``, ``await start()``, ``bound_address``, ``await stop()``.

``start()`` resolves the cluster id (from the data directory's meta.properties, or fresh per process for
in-memory storage), sets up security (TLS contexts, SASL, the authorizer; ``broker/security/``), binds
each listener (port 0 picks a free port, shared by every address the host resolves to) and logs one
``ready`` event. ``stop()`` closes the listeners and every connection, waits for them to finish and
releases the ports. Everything runs on the event loop that called ``start()``, so a broker can live
inside a test's loop or on a background thread's loop. ``bound_address``, ``advertised_address`` and
``bootstrap_servers`` are the first listener's; ``listener(name)`` gives any other.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import TYPE_CHECKING, Any, Self

import structlog

from broker import __version__
from broker.config import (
    BrokerConfig,
    ConfigError,
    advertised_host_for,
    format_address,
    generate_cluster_id,
    prepare_data_dir,
)
from broker.connection_limits import ConnectionLimits, RequestMemory
from broker.faults import FaultInjector
from broker.handlers import HandlerRegistry
from broker.listeners import Listener, parse_advertised
from broker.log_throttle import LogThrottle
from storage.interface import redacted_url

if TYPE_CHECKING:
    from broker.connection import Connection
    from broker.groups.coordinator import Clock, GroupCoordinator
    from broker.quotas import ClientQuotas
    from broker.security.authorization import AclService
    from broker.security.scram_credentials import ScramCredentialStore
    from broker.transactions.coordinator import TransactionCoordinator
    from storage.interface import StorageEngine

log = structlog.get_logger()

_STOP_GRACE_S = 2.0
SCRAM_CREDENTIALS_FILE = "scram-credentials.json"
CLIENT_QUOTAS_FILE = "client-quotas.json"


class Broker:
    """One Moldau broker: config, handler registry, listener and connections."""

    def __init__(self, config: BrokerConfig | None = None, *, registry: HandlerRegistry | None = None,
                 engine: StorageEngine | None = None, clock: Clock | None = None) -> None:
        """``engine`` replaces the storage engine ``storage.url`` names (the broker closes it on stop);
        ``clock`` replaces the wall clock of the group and transaction coordinators (tests move time)."""
        self.config = config if config is not None else BrokerConfig()
        if registry is None:
            from broker.version_profiles import registry_for

            registry = registry_for(self.config.kafka_version)
        self.registry = registry
        self.faults = FaultInjector()
        self.clock = clock
        self._given_engine = engine
        self.node_id = self.config.node_id
        self.cluster_id: str = ""
        self._servers: list[asyncio.base_events.Server] = []
        self._connections: set[Connection] = set()
        self.listeners: list[Listener] = []
        self._scram: ScramCredentialStore | None = None
        self.acls: AclService | None = None  # the authorizer, when authorizer.class.name is set
        self._client_quotas: ClientQuotas | None = None
        self._state = "new"
        self.engine: Any = None
        self.cluster: Any = None
        self._retention_task: asyncio.Task[None] | None = None
        self.fetch_sessions: Any = None
        self._groups: GroupCoordinator | None = None
        self._transactions: TransactionCoordinator | None = None
        self.membership: Any = None  # broker.membership: this node alone, or one of a shared cluster
        self._shared_documents: dict[str, Any] = {}  # name -> broker.documents.SharedDocument
        self._log_flush_task: asyncio.Task[None] | None = None
        self.request_memory = RequestMemory(self.config.queued_max_request_bytes)
        self.log_throttle = LogThrottle.from_config(self.config)
        self.connection_limits: ConnectionLimits | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Resolve the cluster id, bind the listener and start accepting. Raises ``DataDirError`` for an
        unusable data directory and ``OSError`` when the address cannot be bound."""
        if self._state != "new":
            raise RuntimeError(f"broker already {self._state}")
        started = time.perf_counter()
        self.connection_limits = ConnectionLimits(self.config, time.monotonic)
        data_dir = self.config.data_dir
        if data_dir is None:
            self.cluster_id = generate_cluster_id()  # or the one a shared database holds (below)
        else:
            self.cluster_id = prepare_data_dir(data_dir, self.node_id).cluster_id

        self.engine = self._given_engine
        if self.engine is None:
            self.engine = _open_storage(self.storage_url, self.config)
        try:
            await self._start_on_storage()
        except BaseException:
            # Whatever failed (port taken, a bad offsets topic, cancellation), release what was taken so
            # the data directory's lock is free for the next broker.
            await self._release()
            self._state = "stopped"
            raise
        self._state = "running"
        self._retention_task = asyncio.create_task(self._retention_loop(), name="moldau-retention")
        if self.log_throttle.window_s > 0:
            self._log_flush_task = asyncio.create_task(self._log_flush_loop(), name="moldau-log-throttle")
        host, port = self.bound_address
        log.info("ready", host=host, port=port, advertised=format_address(*self.advertised_address),
                 listeners=[f"{lis.name}://{format_address(*lis.bound)}" for lis in self.listeners if lis.bound],
                 cluster_id=self.cluster_id, node_id=self.node_id,
                 storage=redacted_url(self.storage_url), data_dir=str(data_dir) if data_dir else None,
                 version=__version__, pid=os.getpid(),
                 start_ms=round((time.perf_counter() - started) * 1000, 1))

    async def _start_on_storage(self) -> None:
        """Everything of start() after storage is open: cluster state, coordinator, security, listeners. On
        failure the caller releases it all (``_release``)."""
        from broker.cluster import ClusterState
        from broker.membership import membership_for

        if self.config.data_dir is None:
            self.cluster_id = await self.engine.claim_cluster_id(self.cluster_id)
        self.cluster = ClusterState(self.engine, self.config)
        self.membership = membership_for(self)
        from broker.fetch_sessions import FetchSessionCache

        self.fetch_sessions = FetchSessionCache(self.config.max_incremental_fetch_session_cache_slots,
                                                self.config.min_incremental_fetch_session_eviction_ms)
        await self.cluster.load()
        # A coordinator with a topic to load starts before the listener opens, so its load begins at once and
        # no request finds it missing; one with nothing to load (always so in memory) is made on first use,
        # which spares every broker that never sees a group or a transaction its import and start-up.
        # In a shared cluster they start once broker.membership knows which partitions they coordinate here.
        if not self.membership.shared:
            self._start_loaded_coordinators()

        if self.membership.shared:
            await self._load_shared_documents()
        document = self._document(CLIENT_QUOTAS_FILE)
        if document is not None and document.read() is not None:
            _ = self.client_quotas  # quotas set before a restart apply from the first request
        if self.membership.shared and self.config.add_scram:
            # --add-scram writes the shared credentials: from a worker thread, as every shared write.
            await asyncio.to_thread(lambda: self.scram_credentials)
        if self.config.authorizer_class_name:
            from broker.security.authorization import ACLS_FILE, AclService

            self.acls = AclService.from_config(self.config, self._document(ACLS_FILE))
        specs = self.config.listener_specs
        if any(spec.uses_tls or spec.uses_sasl for spec in specs):
            from broker.security.setup import secure_listeners

            self.listeners = secure_listeners(self, specs)
        else:
            self.listeners = [Listener(spec) for spec in specs]
        advertised = {}
        if self.config.advertised_listeners is not None:
            advertised = parse_advertised(self.config.advertised_listeners, specs)
        loop = asyncio.get_running_loop()
        from broker.connection import Connection

        bound: list[tuple[Listener, list[socket.socket]]] = []
        try:
            for listener in self.listeners:
                sockets = _bind(listener.spec.host, listener.spec.port)
                bound.append((listener, sockets))
                # Known before the first accept: a connection's Metadata answers with its listener's address.
                listener.bound = sockets[0].getsockname()[:2]
                listener.advertised = advertised.get(
                    listener.name, (advertised_host_for(listener.spec.host), listener.bound[1]))
            # Bound, not yet serving: a broker of a shared cluster registers (and learns its node id and the
            # other brokers) before its first request.
            await self.membership.start()
            while bound:
                listener, sockets = bound[0]
                for sock in sockets:
                    server = await loop.create_server(lambda lis=listener: Connection(self, lis),  # type: ignore[misc]
                                                      sock=sock, backlog=128)
                    self._servers.append(server)
                bound.pop(0)
        except BaseException:
            for _, sockets in bound:
                for sock in sockets:
                    sock.close()
            raise

    async def stop(self) -> None:
        """Stop accepting, close every connection (in-flight requests are dropped), release the port."""
        if self._state != "running":
            self._state = "stopped"
            return
        self._state = "stopping"
        for server in self._servers:
            server.close()
        connections = list(self._connections)
        for conn in connections:
            conn.close("broker stopping")
        for server in self._servers:
            await server.wait_closed()
        waiting = [conn.closed for conn in connections if not conn.closed.done()]
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=_STOP_GRACE_S)
            if late:
                # A peer that stopped reading keeps close() flushing forever; drop its output.
                for conn in connections:
                    if not conn.closed.done():
                        conn.abort()
                await asyncio.wait(late, timeout=_STOP_GRACE_S)
        await self._release()
        self._state = "stopped"
        log.info("stopped", node_id=self.node_id, cluster_id=self.cluster_id)

    async def _release(self) -> None:
        """Close the listener, stop the background tasks and the coordinator, and close storage (releasing
        the data directory's lock). Safe on a partly started broker; called once, by start() on failure or by stop()."""
        for server in self._servers:
            server.close()
        self._servers.clear()
        for task in (self._retention_task, self._log_flush_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._retention_task = self._log_flush_task = None
        self.log_throttle.flush(everything=True)
        if self.membership is not None:
            await self.membership.stop()
        if self._transactions is not None:
            await self._transactions.stop()
        if self._groups is not None:
            await self._groups.stop()
        if self.membership is not None:
            await self.membership.leave()  # out of the shared cluster: its partitions move at once
        if self.engine is not None:
            await self.engine.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _log_flush_loop(self) -> None:
        """Report floods that stopped: their summary line would otherwise wait for the next warning."""
        while True:
            await asyncio.sleep(self.log_throttle.window_s)
            self.log_throttle.flush()

    async def _retention_loop(self) -> None:
        """Every ``log.retention.check.interval.ms``, let each log drop what retention no longer keeps and
        the producers idle past ``producer.id.expiration.ms``, and compact the logs of topics whose
        ``cleanup.policy`` includes ``compact``."""
        from broker.producer_state import PRODUCER_ID_EXPIRATION_MS

        interval = self.config.log_retention_check_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            now_ms = int(time.time() * 1000)
            membership = self.membership
            for topic in list(self.cluster.topics.values()):
                for partition in topic.partitions:
                    if membership.shared and membership.leader(topic.name, partition.index) != self.node_id:
                        continue  # in a shared cluster the leader applies retention (its view of the log)
                    # Producers idle past producer.id.expiration.ms leave the log's producer state
                    # (and its snapshots), as in Kafka; open transactions keep theirs.
                    partition.log.expire_producers(now_ms, PRODUCER_ID_EXPIRATION_MS)
                    try:
                        result = await partition.log.apply_retention()
                    except Exception:
                        log.exception("retention.failed", topic=topic.name, partition=partition.index)
                        continue
                    if result is not None and getattr(result, "deleted", None):
                        self.cluster.waiters.wake(topic.name, partition.index)
                    if "compact" not in str(self.cluster.config_value(topic, "cleanup.policy")):
                        continue
                    try:
                        cleaned = await partition.log.clean()
                    except Exception:
                        log.exception("compaction.failed", topic=topic.name, partition=partition.index)
                        continue
                    if cleaned is not None and cleaned.segments_written:
                        self.cluster.waiters.wake(topic.name, partition.index)

    # ------------------------------------------------------------ coordinators

    async def reset_coordinators(self) -> None:
        """Stop the group and transaction coordinators (this broker stops coordinating, or starts to and
        must load their state afresh); they are made again, loading from their topics, on next use."""
        transactions, groups = self._transactions, self._groups
        self._transactions = self._groups = None
        if transactions is not None:
            await transactions.stop()
        if groups is not None:
            await groups.stop()
        self._start_loaded_coordinators()

    def _start_loaded_coordinators(self) -> None:
        """Start the coordinators whose topics exist, so their load begins at once."""
        from broker.cluster import OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC

        if self.cluster.get(TRANSACTION_STATE_TOPIC) is not None:
            _ = self.transactions
        elif self.cluster.get(OFFSETS_TOPIC) is not None:
            _ = self.groups

    def _owned(self, topic: str) -> frozenset[int] | None:
        """The partitions of an internal topic whose coordinator this broker is (None: all of them)."""
        return None if self.membership is None else self.membership.owned(topic)

    @property
    def groups(self) -> GroupCoordinator:
        """The group coordinator, made and started on first use (see ``_start_on_storage``)."""
        if self._groups is None:
            if self.cluster is None:
                raise RuntimeError("broker not started")
            from broker.cluster import OFFSETS_TOPIC
            from broker.groups.coordinator import GroupCoordinator

            self._groups = GroupCoordinator(self.cluster, self.config, self.clock,
                                            partitions=self._owned(OFFSETS_TOPIC))
            self._groups.start()
        return self._groups

    @property
    def transactions(self) -> TransactionCoordinator:
        """The transaction coordinator, made and started on first use (see ``_start_on_storage``)."""
        if self._transactions is None:
            groups = self.groups
            from broker.cluster import TRANSACTION_STATE_TOPIC
            from broker.transactions.coordinator import TransactionCoordinator

            self._transactions = TransactionCoordinator(self.cluster, self.config, groups, self.clock,
                                                        partitions=self._owned(TRANSACTION_STATE_TOPIC))
            self._transactions.start()
        return self._transactions

    # ------------------------------------------------------------ documents (SCRAM, ACLs, quotas)

    async def _load_shared_documents(self) -> None:
        from broker.documents import SharedDocument
        from broker.security.authorization import ACLS_FILE

        for name in (SCRAM_CREDENTIALS_FILE, CLIENT_QUOTAS_FILE, ACLS_FILE):
            self._shared_documents[name] = SharedDocument(self.engine, name, await self.engine.load_document(name))

    def _document(self, name: str) -> Any:
        """Where a store keeps its document (`broker.documents`): the cluster's shared one, a file in the
        data directory, or None (memory only)."""
        if name in self._shared_documents:
            return self._shared_documents[name]
        data_dir = self.config.data_dir
        if data_dir is None:
            return None
        from broker.documents import FileDocument

        return FileDocument(data_dir / name)

    async def reload_document(self, name: str) -> None:
        """Another broker of the cluster changed a shared document: read it again and let its store know.
        The stores' own locks are taken in a worker thread: one of them may be held by a write of this
        broker, waiting for the event loop to finish it."""
        from broker.security.authorization import ACLS_FILE

        document = self._shared_documents.get(name)
        if document is None:
            return
        data = await self.engine.load_document(name)
        if data == document.data:
            return  # this broker's own write, or no change
        document.data = data
        if name == SCRAM_CREDENTIALS_FILE and self._scram is not None:
            await asyncio.to_thread(self._scram.load)
        elif name == CLIENT_QUOTAS_FILE:
            quotas = self.client_quotas
            await asyncio.to_thread(quotas.load)
        elif name == ACLS_FILE and self.acls is not None:
            await self.acls.reload()
        log.info("cluster.document_reloaded", document=name)

    @property
    def scram_credentials(self) -> ScramCredentialStore:
        """SCRAM users (``broker/security/scram_credentials.py``): a file in the data directory, or memory
        only; loaded on first use, with the config's ``--add-scram`` credentials applied."""
        if self._scram is None:
            from broker.security.scram_credentials import ScramCredentialStore, parse_add_scram

            store = ScramCredentialStore(self._document(SCRAM_CREDENTIALS_FILE))
            try:
                store.load()
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            for text in self.config.add_scram:
                mechanism, user, credential = parse_add_scram(text)
                if store.get(mechanism, user) != credential:
                    store.upsert(user, credential)
            self._scram = store
        return self._scram

    @property
    def client_quotas(self) -> ClientQuotas:
        """Client quotas (``broker/quotas.py``), kept in ``client-quotas.json`` in the data directory (in
        memory with memory storage); made on first use, or at start when that file exists."""
        if self._client_quotas is None:
            from broker.quotas import ClientQuotas

            quotas = ClientQuotas(self._document(CLIENT_QUOTAS_FILE),
                                  window_num=self.config.quota_window_num,
                                  window_size_ms=self.config.quota_window_size_seconds * 1000)
            try:
                quotas.load()
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            self._client_quotas = quotas
        return self._client_quotas

    @property
    def client_quotas_if_any(self) -> ClientQuotas | None:
        """The client quotas if they were ever made: request handling checks this, never makes them."""
        return self._client_quotas

    # ------------------------------------------------------------ state

    @property
    def running(self) -> bool:
        return self._state == "running"

    @property
    def bound_address(self) -> tuple[str, int]:
        """(host, port) the first listener is bound to (its first address if the host resolved to several)."""
        bound = self.listeners[0].bound if self.listeners else None
        if bound is None:
            raise RuntimeError("broker not started")
        return bound

    @property
    def advertised_address(self) -> tuple[str, int]:
        """(host, port) the first listener advertises: what clients of that listener are told."""
        advertised = self.listeners[0].advertised if self.listeners else None
        if advertised is None:
            raise RuntimeError("broker not started")
        return advertised

    @property
    def bootstrap_servers(self) -> str:
        """The first listener's advertised address, as clients' bootstrap.servers takes it."""
        return format_address(*self.advertised_address)

    def listener(self, name: str) -> Listener:
        """The running listener of that name (KeyError if none)."""
        for listener in self.listeners:
            if listener.name == name.upper():
                return listener
        raise KeyError(f"no listener named {name!r}; listeners are {', '.join(lis.name for lis in self.listeners)}")

    @property
    def storage_url(self) -> str:
        return self.config.effective_storage_url

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    @property
    def connections(self) -> tuple[Connection, ...]:
        """The open client connections (a snapshot)."""
        return tuple(self._connections)

    def connection_opened(self, conn: Connection) -> None:
        self._connections.add(conn)

    def connection_closed(self, conn: Connection) -> None:
        self._connections.discard(conn)


def _open_storage(url: str, config: BrokerConfig) -> Any:
    from storage.interface import open_engine

    return open_engine(url, memory_max_bytes=config.memory_max_bytes,
                       max_open_segment_files=config.log_max_open_segment_files)


def _bind(host: str, port: int) -> list[socket.socket]:
    """Bound listening sockets for every address ``host`` resolves to, all on one port.

    asyncio's own multi-address bind would give each address a different port when port is 0; here the
    first socket picks it and the rest follow. Addresses that cannot be bound (IPv6 disabled, say) are
    skipped as long as one works.
    """
    # An ASCII host goes as bytes: a str is encoded with the idna codec, whose import (stringprep,
    # unicodedata) costs the broker half a megabyte for names that are ASCII anyway.
    name = (host.encode("ascii") if host.isascii() else host) if host else None
    infos = socket.getaddrinfo(name, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    # IPv4 first so the reported address is the familiar one; duplicates dropped.
    infos = sorted(dict.fromkeys(infos), key=lambda i: i[0] != socket.AF_INET)
    sockets: list[socket.socket] = []
    errors: list[OSError] = []
    for family, type_, proto, _, addr in infos:
        sock = socket.socket(family, type_, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            chosen = sockets[0].getsockname()[1] if sockets else port
            sock.bind((addr[0], chosen, *addr[2:]))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        sockets.append(sock)
    if not sockets:
        raise errors[0] if errors else OSError(f"{host!r} resolves to no address")
    if errors:
        log.debug("listener.partial_bind", host=host, port=sockets[0].getsockname()[1],
                  skipped=[str(e) for e in errors])
    return sockets
