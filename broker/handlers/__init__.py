"""One module per Kafka API family; the registry here is the single source of truth for ApiVersions.

A handler is called as ``handler(header, body, ctx)`` with the decoded request header and body and a
``RequestContext``; it returns a response body object, ``None`` for "send no response" (acks=0
Produce), or an awaitable of either. Handlers never touch sockets.

Handlers are registered by reference (``"broker.handlers.metadata:handle"``) and imported on first
use, so building the registry and answering ApiVersions imports no handler module.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from protocol.errors import ErrorCode

if TYPE_CHECKING:
    from broker.security.acls import AclOperation, ResourceType
    from broker.server import Broker

Handler = Callable[[Any, Any, "RequestContext"], Any | Awaitable[Any] | None]


class CloseConnection(Exception):
    """Raised by a handler when Kafka would answer by closing the connection (e.g. a failed acks=0
    Produce, or a request version that is advertised but refused). Logged at warning, not as a bug."""


class ThenClose:
    """A handler's response after which the connection closes (a failed SASL authentication: Kafka
    answers, then closes)."""

    __slots__ = ("reason", "response")

    def __init__(self, response: Any, reason: str) -> None:
        self.response = response
        self.reason = reason

class RawFrame:
    """A size-prefixed frame without a Kafka response header: the server's SASL token after a v0
    SaslHandshake, when tokens travel unframed."""

    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def frame(self) -> bytes:
        return len(self.payload).to_bytes(4, "big") + self.payload


API_VERSIONS = 18
METADATA = 3
# Fetch's and ListOffsets' isolation_level.
READ_UNCOMMITTED = 0
READ_COMMITTED = 1


@dataclass
class ConnectionInfo:
    """What a handler may know about the connection a request came on."""

    peer: str
    host: str = "?"  # the peer's address without its port: the key repeated log lines are counted by
    client_software_name: str | None = None
    client_software_version: str | None = None
    # Produce requests of one connection append in request order (an idempotent producer pipelines up
    # to 5 and relies on it); their acks=all flushes still overlap, outside this lock.
    produce_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    listener: str = "PLAINTEXT"
    security_protocol: str = "PLAINTEXT"
    advertised: tuple[str, int] = ("localhost", 9092)  # the address of this connection's listener
    principal: str = "User:ANONYMOUS"  # who the client is (broker/security/principal.py)
    sasl: Any = None  # the connection's SaslAuthenticator on SASL listeners
    mute: Callable[[int], None] | None = None  # stop reading for N ms (a client quota's throttle)

    @property
    def user(self) -> str:
        """The principal's name without its type: what client quotas know a user by."""
        return self.principal.partition(":")[2]


@dataclass
class RequestContext:
    """The broker state and connection a request belongs to, handed to every handler."""

    broker: Broker
    connection: ConnectionInfo
    api_version: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def registry(self) -> HandlerRegistry:
        return self.broker.registry

    def log_rejected(self, event: str, **fields: Any) -> None:
        """Log one refused part of a client's request (a partition, a topic, a resource) at info, through
        the broker's log throttle: a request naming a million bad partitions costs one line and a count
        per client host, not a million lines."""
        self.broker.log_throttle.log("info", event, self.connection.host, peer=self.connection.peer, **fields)

    def authorized(self, operation: AclOperation, resource_type: ResourceType, name: str) -> bool:
        """May this connection's principal do ``operation`` on the resource? Always, without an authorizer
        (``authorizer.class.name`` unset): one attribute check."""
        acls = self.broker.acls
        if acls is None:
            return True
        connection = self.connection
        allowed = acls.authorizer.authorize(connection.principal, connection.host, operation, resource_type, name)
        if not allowed:
            self.broker.log_throttle.log("info", "authorization.denied", connection.host,
                                         similar=f"{connection.principal}:{operation.name}:{resource_type.name}",
                                         peer=connection.peer, principal=connection.principal,
                                         operation=operation.name, resource_type=resource_type.name, resource=name)
        return allowed

    def authorized_names(self, operation: AclOperation, resource_type: ResourceType, names: Iterable[str]) -> set[str]:
        """The names among ``names`` this principal may do ``operation`` on."""
        names = list(names)
        if self.broker.acls is None:
            return set(names)
        return {name for name in names if self.authorized(operation, resource_type, name)}

    def log_audit(self, event: str, **fields: Any) -> None:
        """Log a change made by this client (ACLs, credentials) with who made it, at info."""
        import structlog

        structlog.get_logger().info(event, peer=self.connection.peer, principal=self.connection.principal, **fields)

    @property
    def quotas_active(self) -> bool:
        """Some client quota is configured (``broker/quotas.py``): only then is anything accounted."""
        quotas = self.broker.client_quotas_if_any
        return quotas is not None and quotas.active

    def quota_window_max(self, key: str, client_id: str | None) -> float | None:
        """The most this client can be accounted at once under quota ``key`` without being throttled
        (Kafka's maxValueInQuotaWindow), or None when no quota applies."""
        quotas = self.broker.client_quotas_if_any
        if quotas is None or not quotas.active:
            return None
        return quotas.max_value_in_window(key, self.connection.user, client_id or "")

    def quota_throttle_ms(self, key: str, value: float, client_id: str | None, *,
                          unrecord_if_throttled: bool = False) -> int:
        """Account ``value`` (bytes, or ms of handling) to this client's quota ``key`` and return the
        throttle time; the connection is muted for it (KIP-219). 0 without quotas. With
        ``unrecord_if_throttled`` a throttled value is taken back (a throttled Fetch sends no records)."""
        quotas = self.broker.client_quotas_if_any
        if quotas is None or not quotas.active:
            return 0
        user = self.connection.user
        throttle_ms = quotas.record(key, user, client_id or "", value)
        if throttle_ms > 0:
            if unrecord_if_throttled:
                quotas.unrecord(key, user, client_id or "", value)
            if self.connection.mute is not None:
                self.connection.mute(throttle_ms)
        return throttle_ms

    def partition_fault(self, topic: str, partition: int) -> ErrorCode | None:
        """Why this broker does not serve the partition's data requests, or None: another broker of a
        shared cluster leads it (NOT_LEADER_OR_FOLLOWER), or a fault rule (offline: NOT_LEADER_OR_FOLLOWER,
        failed disk: KAFKA_STORAGE_ERROR); two attribute checks for a broker alone without rules."""
        membership = self.broker.membership
        if membership is not None and membership.shared and not membership.leads(topic, partition):
            return ErrorCode.NOT_LEADER_OR_FOLLOWER
        faults = self.broker.faults
        return faults.partition_error(topic, partition) if faults.active else None


class ApiEntry:
    """One served API: its version range and its handler (imported on first call).

    ``advertised_min_version`` is the minimum ApiVersions states; it is ``min_version`` except where a
    Kafka release advertises versions it refuses (Kafka 4's Produce, see ``broker.version_profiles``)."""

    __slots__ = ("_handler", "_ref", "advertised_min_version", "api_key", "max_version", "min_version")

    def __init__(self, api_key: int, min_version: int, max_version: int, handler: Handler | str,
                 advertised_min_version: int | None = None) -> None:
        advertised = min_version if advertised_min_version is None else advertised_min_version
        if not 0 <= advertised <= min_version <= max_version:
            raise ValueError(f"api {api_key}: bad version range {min_version}-{max_version} "
                             f"(advertised from {advertised})")
        self.api_key = api_key
        self.min_version = min_version
        self.max_version = max_version
        self.advertised_min_version = advertised
        self._handler: Handler | None = None if isinstance(handler, str) else handler
        self._ref = handler if isinstance(handler, str) else ""

    def supports(self, version: int) -> bool:
        return self.min_version <= version <= self.max_version

    @property
    def handler(self) -> Handler:
        if self._handler is None:
            module, _, attr = self._ref.partition(":")
            self._handler = getattr(importlib.import_module(module), attr)
        return self._handler

    def __repr__(self) -> str:
        return f"ApiEntry({self.api_key}, {self.min_version}-{self.max_version}, {self._ref or self._handler!r})"


class HandlerRegistry:
    """Served API keys, their version ranges and handlers."""

    def __init__(self) -> None:
        self._entries: dict[int, ApiEntry] = {}

    def register(self, api_key: int, min_version: int, max_version: int, handler: Handler | str) -> None:
        """Serve ``api_key`` at ``min_version..max_version`` with ``handler`` (a callable, or
        ``"module:attr"`` to import on first use). Registering a key again replaces it."""
        self._entries[api_key] = ApiEntry(api_key, min_version, max_version, handler)

    def unregister(self, api_key: int) -> None:
        self._entries.pop(api_key, None)

    def lookup(self, api_key: int) -> ApiEntry | None:
        return self._entries.get(api_key)

    def __contains__(self, api_key: object) -> bool:
        return api_key in self._entries

    def __iter__(self) -> Iterator[ApiEntry]:
        return iter(sorted(self._entries.values(), key=lambda e: e.api_key))

    def __len__(self) -> int:
        return len(self._entries)

    def version_ranges(self) -> list[tuple[int, int, int]]:
        """(api_key, min_version, max_version) for every served API, by api key: what ApiVersions says."""
        return [(e.api_key, e.advertised_min_version, e.max_version) for e in self]

    def restricted(self, ranges: Mapping[int, tuple[int, int]],
                   advertised_min_versions: Mapping[int, int] | None = None) -> HandlerRegistry:
        """A copy serving only the APIs in ``ranges`` (api key -> (min, max)), each at the versions both
        ranges contain (a "behave like Kafka X" profile); an API with no version in common is dropped.
        ``advertised_min_versions`` lowers the minimum ApiVersions states for some keys below the lowest
        version accepted, never below what this registry advertises."""
        lowered = advertised_min_versions or {}
        copy = HandlerRegistry()
        for e in self:
            if e.api_key not in ranges:
                continue
            lo, hi = max(ranges[e.api_key][0], e.min_version), min(ranges[e.api_key][1], e.max_version)
            if lo <= hi:
                # Without a lowered minimum, an unchanged floor keeps what this registry advertises.
                advertised = lowered.get(e.api_key, e.advertised_min_version if lo == e.min_version else lo)
                advertised = min(lo, max(advertised, e.advertised_min_version))
                copy._entries[e.api_key] = ApiEntry(e.api_key, lo, hi, e._handler or e._ref, advertised)
        return copy

    def capped(self, max_versions: Mapping[int, int]) -> HandlerRegistry:
        """A copy with some APIs' maximum versions lowered; an API capped below its minimum is dropped."""
        return self.restricted({e.api_key: (e.min_version, max_versions.get(e.api_key, e.max_version))
                                for e in self})


def default_registry() -> HandlerRegistry:
    """The APIs this broker serves. Version ranges must lie inside the JSON spec (a unit test checks)."""
    registry = HandlerRegistry()
    for api_key, lo, hi, ref in SERVED:
        registry.register(api_key, lo, hi, ref)
    return registry


# (api key, min version, max version, handler). Min versions follow api-matrix.md note 3: old
# librdkafka enables features only when the advertised range contains particular versions.
SERVED: tuple[tuple[int, int, int, str], ...] = (
    (0, 0, 11, "broker.handlers.produce:handle_produce"),
    (1, 4, 17, "broker.handlers.fetch:handle_fetch"),
    (2, 0, 10, "broker.handlers.list_offsets:handle_list_offsets"),
    (METADATA, 0, 12, "broker.handlers.metadata:handle_metadata"),
    (8, 0, 9, "broker.handlers.offsets:handle_offset_commit"),
    (9, 0, 9, "broker.handlers.offsets:handle_offset_fetch"),
    (10, 0, 6, "broker.handlers.find_coordinator:handle_find_coordinator"),
    (11, 0, 9, "broker.handlers.groups:handle_join_group"),
    (12, 0, 4, "broker.handlers.groups:handle_heartbeat"),
    (13, 0, 5, "broker.handlers.groups:handle_leave_group"),
    (14, 0, 5, "broker.handlers.groups:handle_sync_group"),
    (15, 0, 5, "broker.handlers.groups:handle_describe_groups"),
    (16, 0, 5, "broker.handlers.groups:handle_list_groups"),
    (API_VERSIONS, 0, 4, "broker.handlers.api_versions:handle_api_versions"),
    (17, 0, 1, "broker.handlers.sasl:handle_sasl_handshake"),
    (19, 0, 7, "broker.handlers.create_topics:handle_create_topics"),
    (20, 0, 6, "broker.handlers.delete_topics:handle_delete_topics"),
    (21, 0, 2, "broker.handlers.delete_records:handle_delete_records"),
    (22, 0, 5, "broker.handlers.init_producer_id:handle_init_producer_id"),
    (23, 0, 4, "broker.handlers.offset_for_leader_epoch:handle_offset_for_leader_epoch"),
    (24, 0, 5, "broker.handlers.transactions:handle_add_partitions_to_txn"),
    (25, 0, 4, "broker.handlers.transactions:handle_add_offsets_to_txn"),
    (26, 0, 4, "broker.handlers.transactions:handle_end_txn"),
    (28, 0, 4, "broker.handlers.transactions:handle_txn_offset_commit"),
    (29, 0, 3, "broker.handlers.acls:handle_describe_acls"),
    (30, 0, 3, "broker.handlers.acls:handle_create_acls"),
    (31, 0, 3, "broker.handlers.acls:handle_delete_acls"),
    (32, 0, 4, "broker.handlers.configs:handle_describe_configs"),
    (33, 0, 2, "broker.handlers.configs:handle_alter_configs"),
    (35, 0, 4, "broker.handlers.describe_log_dirs:handle_describe_log_dirs"),
    (36, 0, 2, "broker.handlers.sasl:handle_sasl_authenticate"),
    (37, 0, 3, "broker.handlers.create_partitions:handle_create_partitions"),
    (42, 0, 2, "broker.handlers.groups:handle_delete_groups"),
    (44, 0, 1, "broker.handlers.configs:handle_incremental_alter_configs"),
    (47, 0, 0, "broker.handlers.offsets:handle_offset_delete"),
    (48, 0, 1, "broker.handlers.client_quotas:handle_describe_client_quotas"),
    (49, 0, 1, "broker.handlers.client_quotas:handle_alter_client_quotas"),
    (50, 0, 0, "broker.handlers.scram:handle_describe_user_scram_credentials"),
    (51, 0, 0, "broker.handlers.scram:handle_alter_user_scram_credentials"),
    (60, 0, 1, "broker.handlers.describe_cluster:handle_describe_cluster"),
    (61, 0, 0, "broker.handlers.transactions:handle_describe_producers"),
    (65, 0, 0, "broker.handlers.transactions:handle_describe_transactions"),
    (66, 0, 1, "broker.handlers.transactions:handle_list_transactions"),
)
