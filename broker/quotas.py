"""Client quotas: the configured quotas (DescribeClientQuotas/AlterClientQuotas, KIP-546), their resolution
for a request's user and client id (KIP-55), and the rate accounting that turns usage into a throttle time
(KIP-13 byte rates, KIP-124 request percentage, KIP-219 throttle-then-mute).

`ClientQuotas` is pure: no asyncio, no sockets, no timers. Time comes from an injected clock (seconds, like
`time.monotonic`) or as ``now_ms`` on each call. The broker asks `record` how long to throttle a response;
muting the connection for that long is the caller's business.

What carries over from Kafka (ClientQuotaControlManager, ClientQuotasImage.describe, ClientQuotaManager,
ClientRequestQuotaManager, QuotaUtils, Rate/SampledStat):

- Entities are maps of entity type to name, a None name being the ``<default>`` entity. Alter takes
  ``user`` and ``client-id`` (alone or together) with ``producer_byte_rate`` and ``consumer_byte_rate``
  (Kafka types them LONG: a fractional value is INVALID_REQUEST), ``request_percentage`` and
  ``controller_mutation_rate`` (DOUBLE); every value must be greater than 0. Errors carry Kafka's messages.
  ``ip`` entities (``connection_creation_rate``, KIP-612) are validated as Kafka does and then refused
  with INVALID_REQUEST, Kafka's answer for an entity type a broker does not handle: Moldau's per-IP
  limits are the static ``max.connections.per.ip`` settings. Describe accepts an ``ip`` filter (it is a
  type Kafka knows) and finds nothing; any other type is UNSUPPORTED_VERSION, as in Kafka.
- Resolution, most specific first, separately for each quota key: /users/<u>/clients/<c>,
  /users/<u>/clients/<default>, /users/<u>, /users/<default>/clients/<c>,
  /users/<default>/clients/<default>, /users/<default>, /clients/<c>, /clients/<default>. The level found
  decides the metric the usage is charged to, keyed by Kafka's (user, client-id) tags: a level naming a
  user (or the default user) tags the user, one naming a client id (or the default one) tags the client
  id. So /users/<default> gives every user a quota of their own, and the client ids of a user under
  /users/alice share alice's.
- Accounting is Kafka's Rate over a SampledStat: ``window_num`` samples of ``window_size_ms``
  (``quota.window.num``, default 11, and ``quota.window.size.seconds``, default 1). A sample with no
  event for ``window_num`` windows no longer counts. The rate is the samples' total over the time since
  the oldest live sample began, counted as at least ``window_num - 1`` whole windows so that a first burst
  is not measured over a few milliseconds. The value is recorded first and then checked, as Kafka's
  Sensor does: a request over quota is served and the *next* one waits. Over the bound, the throttle is
  ``(rate - bound) / bound * window`` ms, rounded half up: the delay that brings the rate back to the
  bound if nothing more is recorded.
- Kafka caps the request-percentage throttle at one window (ClientRequestQuotaManager) and leaves the
  byte-rate throttle uncapped; Moldau does the same, clamping only to the int32 the response field holds.
- ``request_percentage`` is the share of one request-handling thread, 100 being one whole thread. Kafka
  records handler nanoseconds as a percentage of a second; here the caller records the *milliseconds* it
  spent serving the request and the bound is ``request_percentage / 100 * 1000`` ms of handling per
  second. Both scale the same way, so the throttle times are Kafka's.
- `unrecord` and `max_value_in_window` are what Kafka's Fetch path uses: a throttled fetch answers empty
  and takes its bytes back; a fetch never asks for more than ``bound * (window_num - 1)`` windows' worth.

Where Moldau differs, on purpose: Kafka keeps a sensor for every (user, client id) seen, for an hour, even
without a quota. Moldau keeps a metric only while a quota applies and drops it once all its samples are
obsolete (nothing recorded for ``window_num`` windows, when Kafka would no longer count them either), and
holds at most ``max_metrics`` of them, evicting the least recently used: a client minting random client
ids cannot grow the broker's memory. Kafka's quota lookup treats an empty client id as "no client id" and
so lets it escape client-id quotas; Moldau resolves the names it is given.

The quotas persist as one JSON file (tmp, fsync, rename, fsync of the directory; mode 0600) through the
storage file-system seam, so tests can fail any step. A file that cannot be read or holds anything alter
would refuse raises ValueError naming it: starting without the quotas would silently lift them.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import structlog

from broker.documents import Document, as_document
from protocol.errors import ErrorCode, KafkaError
from protocol.primitives import INT32_MAX
from storage.file.fs import FileSystem

log = structlog.get_logger()

PRODUCER_BYTE_RATE = "producer_byte_rate"
CONSUMER_BYTE_RATE = "consumer_byte_rate"
REQUEST_PERCENTAGE = "request_percentage"
CONTROLLER_MUTATION_RATE = "controller_mutation_rate"
CONNECTION_CREATION_RATE = "connection_creation_rate"

USER = "user"
CLIENT_ID = "client-id"
IP = "ip"

# DescribeClientQuotas match types (DescribeClientQuotasRequest.MATCH_TYPE_*).
MATCH_EXACT = 0
MATCH_DEFAULT = 1
MATCH_ANY = 2

DEFAULT_WINDOW_NUM = 11
DEFAULT_WINDOW_SIZE_MS = 1000
DEFAULT_MAX_METRICS = 100_000
DEFAULT_MAX_CACHED_RESOLUTIONS = 100_000

# Kafka's value types for each key (QuotaConfig): LONG and INT keys refuse fractions and values too big.
_LONG, _INT, _DOUBLE = "LONG", "INT", "DOUBLE"
_USER_CLIENT_KEYS = {PRODUCER_BYTE_RATE: _LONG, CONSUMER_BYTE_RATE: _LONG, REQUEST_PERCENTAGE: _DOUBLE,
                     CONTROLLER_MUTATION_RATE: _DOUBLE}
_IP_KEYS = {CONNECTION_CREATION_RATE: _INT}
# Java compares the double against Long.MAX_VALUE / Integer.MAX_VALUE converted to double.
_INTEGRAL_LIMITS = {_LONG: ("a LONG", float(2**63)), _INT: ("an INT", float(INT32_MAX))}
_FRACTION_TOLERANCE = 1e-6

# Keys `record` accounts, with the factor from the configured value to a per-second bound in the unit
# recorded: bytes for the byte rates, handler milliseconds for request_percentage (100% = 1000 ms/s).
_RATE_SCALE = {PRODUCER_BYTE_RATE: 1.0, CONSUMER_BYTE_RATE: 1.0, REQUEST_PERCENTAGE: 10.0}
_MAX_THROTTLE_MS = INT32_MAX  # throttle_time_ms is an int32 on the wire
# Idle metrics dropped per record call: bounded work per request, still faster than one new key per call.
_EXPIRE_PER_CALL = 8
_STORE_VERSION = 1

Entity = tuple[tuple[str, str | None], ...]  # (type, name) pairs sorted by type; name None = <default>
Resolution = tuple[float, tuple[str, str]]


class QuotaError(KafkaError):
    """A request the quota manager refuses: `code` (INVALID_REQUEST, UNSUPPORTED_VERSION) and Kafka's
    `message`, for the response's error fields."""


class ClientQuotas:
    """The configured client quotas and the per-metric rates they are enforced with."""

    def __init__(self, path: Path | Document | None, *, window_num: int = DEFAULT_WINDOW_NUM,
                 window_size_ms: int = DEFAULT_WINDOW_SIZE_MS, clock: Callable[[], float] = time.monotonic,
                 max_metrics: int = DEFAULT_MAX_METRICS, fs: FileSystem | None = None) -> None:
        if window_num < 1 or window_size_ms < 1:
            raise ValueError(f"quota windows need window_num >= 1 and window_size_ms >= 1, "
                             f"got {window_num} and {window_size_ms}")
        if max_metrics < 1:
            raise ValueError(f"max_metrics must be at least 1, got {max_metrics}")
        self._fs = fs if fs is not None else FileSystem()
        self.path = as_document(path, self._fs)
        self._window_num = window_num
        self._window_ms = float(window_size_ms)
        self._clock = clock
        self._max_metrics = max_metrics
        # The quotas and the resolutions made from them are swapped together as one tuple, so a lookup
        # racing an alter (which may run in a worker thread for its fsync) never caches a stale answer.
        self._state: tuple[dict[Entity, dict[str, float]], dict[tuple[str, str, str], Resolution | None]] = ({}, {})
        self._alter_lock = threading.Lock()
        # (key, user tag, client-id tag) -> rate, least recently recorded first.
        self._metrics: OrderedDict[tuple[str, str, str], _SampledRate] = OrderedDict()

    def __repr__(self) -> str:
        return f"ClientQuotas(path={self.path!r}, entities={len(self._state[0])}, metrics={len(self._metrics)})"

    # --- configuration ---------------------------------------------------------------------------------

    def load(self) -> None:
        """Read the quota document if there is one (none: no quotas)."""
        if self.path is None:
            return
        try:
            data = self.path.read()
        except OSError as e:
            raise ValueError(f"client quota file {self.path} cannot be read: {e.__class__.__name__}") from None
        if data is None:
            return
        try:
            quotas = _parse_store(data.decode("utf-8"))
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise ValueError(f"client quota file {self.path} is corrupt: {e}") from None
        with self._alter_lock:
            self._state = (quotas, {})

    @property
    def active(self) -> bool:
        """Whether any quota is configured; when not, the broker can skip all accounting."""
        return bool(self._state[0])

    def describe(self, components: list[tuple[str, int, str | None]],
                 strict: bool) -> list[tuple[dict[str, str | None], dict[str, float]]]:
        """DescribeClientQuotas: the entities matching every component, with their values.

        A component is (entity type, match type, match): MATCH_EXACT matches that name, MATCH_DEFAULT the
        <default> entity, MATCH_ANY any entity of the type, the default included. ``strict`` keeps only
        entities with no other types; otherwise they may have more. No components: everything, or nothing
        when strict (Kafka's ClientQuotasImage.describe). Raises QuotaError for a bad filter.
        """
        exact: dict[str, str | None] = {}
        any_types: set[str] = set()
        # Each valid component names a distinct one of three types, so this loop stops by the fourth.
        for entity_type, match_type, match in components:
            if not entity_type:
                raise QuotaError(ErrorCode.INVALID_REQUEST, "Invalid empty entity type.")
            if entity_type in exact or entity_type in any_types:
                raise QuotaError(ErrorCode.INVALID_REQUEST,
                                 f"Entity type {entity_type} cannot appear more than once in the filter.")
            if entity_type not in (USER, CLIENT_ID, IP):
                raise QuotaError(ErrorCode.UNSUPPORTED_VERSION, f"Unsupported entity type {entity_type}")
            if match_type == MATCH_EXACT:
                if match is None:
                    raise QuotaError(ErrorCode.INVALID_REQUEST,
                                     "Request specified MATCH_TYPE_EXACT, but set match string to null.")
                exact[entity_type] = match
            elif match_type == MATCH_DEFAULT:
                if match is not None:
                    raise QuotaError(ErrorCode.INVALID_REQUEST,
                                     "Request specified MATCH_TYPE_DEFAULT, but also specified a match string.")
                exact[entity_type] = None
            elif match_type == MATCH_ANY:
                if match is not None:
                    raise QuotaError(ErrorCode.INVALID_REQUEST,
                                     "Request specified MATCH_TYPE_SPECIFIED, but also specified a match string.")
                any_types.add(entity_type)
            else:
                raise QuotaError(ErrorCode.INVALID_REQUEST, f"Unknown match type {match_type}")
        named = exact.keys() | any_types
        if IP in named and (USER in named or CLIENT_ID in named):
            raise QuotaError(ErrorCode.INVALID_REQUEST, "Invalid entity filter component combination. IP filter "
                                                        "component should not be used with user or clientId "
                                                        "filter component.")
        results = []
        for entity, values in self._state[0].items():
            names = dict(entity)
            if strict and len(names) != len(named):
                continue
            if (all(t in names and names[t] == name for t, name in exact.items())
                    and all(t in names for t in any_types)):
                results.append((names, dict(values)))
        return results

    def alter(self, entries: list[tuple[list[tuple[str, str | None]], list[tuple[str, float, bool]]]],
              validate_only: bool) -> list[tuple[ErrorCode, str | None]]:
        """AlterClientQuotas: one (error code, message) per entry, in order.

        An entry is (entity [(type, name or None for <default>)], ops [(key, value, remove)]). Valid entries
        are applied (a removal of a key the entity lacks is a no-op; an entity left without keys is gone),
        invalid ones change nothing, and the file is written once at the end. With ``validate_only`` the
        results are the same and nothing changes. If the file cannot be written the OSError propagates and
        nothing is applied: memory and file stay equal.
        """
        with self._alter_lock:
            current = self._state[0]
            staged: dict[Entity, dict[str, float]] = {}
            results: list[tuple[ErrorCode, str | None]] = []
            seen: set[Entity] = set()
            for entity_parts, ops in entries:
                try:
                    entity = _validated_entity(entity_parts)
                    if entity in seen:
                        # Kafka keys its results by entity: a second entry for one cannot be told apart.
                        raise QuotaError(ErrorCode.INVALID_REQUEST, f"Ignoring duplicate entity {_show(entity)}")
                    seen.add(entity)
                    changes = _validated_ops(entity, ops)
                except QuotaError as e:
                    results.append((e.code, e.message))
                    continue
                values = dict(current.get(entity, {}))
                for key, value in changes.items():
                    if value is None:
                        values.pop(key, None)
                    else:
                        values[key] = value
                staged[entity] = values
                results.append((ErrorCode.NONE, None))
            changed = {e: v for e, v in staged.items() if v != current.get(e, {})}
            if validate_only or not changed:
                return results
            quotas = dict(current)
            for entity, values in changed.items():
                if values:
                    quotas[entity] = values
                else:
                    quotas.pop(entity, None)
            self._persist(quotas)
            self._state = (quotas, {})
        log.info("quotas.altered", entities=len(changed), configured=len(quotas))
        return results

    # --- enforcement -----------------------------------------------------------------------------------

    def quota(self, user: str, client_id: str, key: str) -> Resolution | None:
        """The quota that applies to ``key`` for this user and client id, as (configured value, (user tag,
        client-id tag)): the tags name the metric the usage is charged to. None when no quota applies."""
        quotas, cache = self._state
        memo = (key, user, client_id)
        try:
            return cache[memo]
        except KeyError:
            pass
        result = _resolve(quotas, user, client_id, key)
        if len(cache) >= DEFAULT_MAX_CACHED_RESOLUTIONS:
            cache.clear()  # random client ids must not grow it; the next lookups refill what is live
        cache[memo] = result
        return result

    def record(self, key: str, user: str, client_id: str, value: float, now_ms: float | None = None) -> int:
        """Charge ``value`` (bytes for the byte rates; milliseconds spent serving the request for
        request_percentage) to the quota that applies and return the throttle time in ms, 0 within quota."""
        scale = _recorded_scale(key)
        resolved = self.quota(user, client_id, key)
        if resolved is None:
            return 0
        configured, tags = resolved
        now = self._now(now_ms)
        rate = self._metric((key, *tags), now)
        rate.add(value, now, self._window_ms, self._window_num)
        self._expire_idle(now)
        total, window_ms = rate.measure(now, self._window_ms, self._window_num)
        bound = configured * scale
        observed = total * 1000.0 / window_ms
        if observed <= bound:
            return 0
        throttle = math.floor((observed - bound) / bound * window_ms + 0.5)  # Java's Math.round
        cap = self._window_ms if key == REQUEST_PERCENTAGE else _MAX_THROTTLE_MS
        return int(min(throttle, cap))

    def unrecord(self, key: str, user: str, client_id: str, value: float, now_ms: float | None = None) -> None:
        """Take back ``value`` recorded earlier, without a quota check (Kafka's unrecordQuotaSensor: a
        throttled fetch returns no data, so its bytes must not count)."""
        _recorded_scale(key)
        resolved = self.quota(user, client_id, key)
        if resolved is None:
            return
        now = self._now(now_ms)
        self._metric((key, *resolved[1]), now).add(-value, now, self._window_ms, self._window_num)

    def max_value_in_window(self, key: str, user: str, client_id: str) -> float | None:
        """The most that can be recorded at once without certain throttling: the bound over
        ``window_num - 1`` windows (Kafka's maxValueInQuotaWindow, which caps a fetch's size). None
        without a quota."""
        scale = _recorded_scale(key)
        resolved = self.quota(user, client_id, key)
        if resolved is None:
            return None
        return resolved[0] * scale * (self._window_num - 1) * self._window_ms / 1000.0

    @property
    def tracked_metrics(self) -> int:
        """How many metrics hold samples now (bounded by ``max_metrics``)."""
        return len(self._metrics)

    # --- internals -------------------------------------------------------------------------------------

    def _now(self, now_ms: float | None) -> float:
        # Whole milliseconds from the clock, as Kafka's time.milliseconds(): sample boundaries then do not
        # drift with the float error of seconds * 1000.
        return float(round(self._clock() * 1000.0)) if now_ms is None else float(now_ms)

    def _metric(self, metric_key: tuple[str, str, str], now: float) -> _SampledRate:
        rate = self._metrics.get(metric_key)
        if rate is None:
            rate = self._metrics[metric_key] = _SampledRate()
            if len(self._metrics) > self._max_metrics:
                self._metrics.popitem(last=False)  # the least recently recorded, never the new one
        else:
            self._metrics.move_to_end(metric_key)
        return rate

    def _expire_idle(self, now: float) -> None:
        # Metrics are ordered by last record, so the idle ones are at the front.
        expire_ms = self._window_ms * self._window_num
        for _ in range(_EXPIRE_PER_CALL):
            if not self._metrics:
                return
            oldest = next(iter(self._metrics.values()))
            if now - oldest.last_event_ms < expire_ms:
                return
            self._metrics.popitem(last=False)

    def _persist(self, quotas: dict[Entity, dict[str, float]]) -> None:
        if self.path is None:
            return
        document = {"version": _STORE_VERSION,
                    "quotas": [{"entity": dict(entity), "values": values} for entity, values in quotas.items()]}
        data = json.dumps(document, indent=2, allow_nan=False).encode("utf-8")
        self.path.write(data)


class _SampledRate:
    """One metric's samples: Kafka's Rate over a WindowedSum, kept to ``window_num + 1`` samples."""

    __slots__ = ("_samples",)

    def __init__(self) -> None:
        self._samples: deque[list[float]] = deque()  # [start ms, last event ms, total], oldest first

    @property
    def last_event_ms(self) -> float:
        return self._samples[-1][1] if self._samples else -math.inf

    def add(self, value: float, now: float, window_ms: float, window_num: int) -> None:
        samples = self._samples
        self._purge(now, window_ms * window_num)
        if not samples or now - samples[-1][0] >= window_ms:
            samples.append([now, now, 0.0])
            # Kafka's ring of window_num + 1. Purging already keeps ordered times within it; this is the
            # bound when they are not.
            if len(samples) > window_num + 1:
                samples.popleft()
        current = samples[-1]
        current[2] += value
        current[1] = now

    def measure(self, now: float, window_ms: float, window_num: int) -> tuple[float, float]:
        """(total, window in ms) as Kafka's Rate.measure divides them."""
        samples = self._samples
        self._purge(now, window_ms * window_num)
        total = sum(sample[2] for sample in samples)
        elapsed = now - samples[0][0] if samples else 0.0
        # Fewer than window_num - 1 whole windows seen: count the missing ones as empty, so a client's
        # first requests are measured over the full window rather than over a few milliseconds.
        missing = (window_num - 1) - int(elapsed // window_ms)
        if missing > 0:
            elapsed += missing * window_ms
        return total, max(elapsed, 1.0)

    def _purge(self, now: float, expire_ms: float) -> None:
        # Samples are in time order, so the obsolete ones (no event for window_num windows) are a prefix.
        samples = self._samples
        while samples and now - samples[0][1] >= expire_ms:
            samples.popleft()


# --- resolution --------------------------------------------------------------------------------------


def _resolve(quotas: dict[Entity, dict[str, float]], user: str, client_id: str, key: str) -> Resolution | None:
    if not quotas:
        return None
    u, du = (USER, user), (USER, None)
    c, dc = (CLIENT_ID, client_id), (CLIENT_ID, None)
    # Kafka's precedence; entities are sorted by type, and "client-id" sorts before "user".
    for entity in ((c, u), (dc, u), (u,), (c, du), (dc, du), (du,), (c,), (dc,)):
        values = quotas.get(entity)
        if values is not None and key in values:
            types = {entity_type for entity_type, _ in entity}
            return values[key], (user if USER in types else "", client_id if CLIENT_ID in types else "")
    return None


def _recorded_scale(key: str) -> float:
    try:
        return _RATE_SCALE[key]
    except KeyError:
        raise ValueError(f"{key!r} is not a quota that is recorded per request "
                         f"(expected one of {', '.join(_RATE_SCALE)})") from None


# --- validation (Kafka's ClientQuotaControlManager rules and messages) ----------------------------------


def _validated_entity(parts: Iterable[tuple[str, str | None]]) -> Entity:
    names: dict[str, str | None] = {}
    # A valid entity has at most two of three types, so a long list fails by its fourth element.
    for entity_type, name in parts:
        if entity_type in names:
            raise QuotaError(ErrorCode.INVALID_REQUEST,
                             f"Invalid client quota entity, duplicate entity entry {entity_type}")
        if entity_type not in (USER, CLIENT_ID, IP):
            raise QuotaError(ErrorCode.INVALID_REQUEST, f"Unhandled client quota entity type: {entity_type}")
        if name is not None and not name:
            raise QuotaError(ErrorCode.INVALID_REQUEST, f"Empty {entity_type} not supported")
        names[entity_type] = name
    if not names:
        raise QuotaError(ErrorCode.INVALID_REQUEST, "Invalid empty client quota entity")
    if IP in names and len(names) > 1:
        raise QuotaError(ErrorCode.INVALID_REQUEST,
                         "Invalid quota entity combination, IP entity should not be combined with User or ClientId")
    return tuple(sorted(names.items()))


def _validated_ops(entity: Entity, ops: Iterable[tuple[str, float, bool]]) -> dict[str, float | None]:
    """{key: new value, or None to remove}; raises QuotaError for the first problem."""
    changes: dict[str, float | None] = {}
    for key, value, remove in ops:
        if key in changes:
            raise QuotaError(ErrorCode.INVALID_REQUEST,
                             f"Duplicate quota key {key} not updating quota for this entity {_show(entity)}")
        changes[key] = None if remove else float(value)
    is_ip = entity[0][0] == IP
    allowed = _IP_KEYS if is_ip else _USER_CLIENT_KEYS
    for key, value in changes.items():
        if value is not None:  # Kafka checks neither key nor value of a removal
            _check_value(allowed, key, value)
    if is_ip:
        raise QuotaError(ErrorCode.INVALID_REQUEST,
                         f"Unhandled client quota entity type: {IP} (Moldau does not enforce "
                         f"{CONNECTION_CREATION_RATE} quotas; see max.connections.per.ip)")
    return changes


def _check_value(allowed: dict[str, str], key: str, value: float) -> None:
    value_type = allowed.get(key)
    if value_type is None:
        raise QuotaError(ErrorCode.INVALID_REQUEST, f"Invalid configuration key {key}")
    # Kafka would store NaN or infinity; neither is a rate, and JSON cannot hold them.
    if not math.isfinite(value):
        raise QuotaError(ErrorCode.INVALID_REQUEST, f"Quota {key} must be a finite number")
    if value <= 0.0:
        raise QuotaError(ErrorCode.INVALID_REQUEST, f"Quota {key} must be greater than 0")
    if value_type in _INTEGRAL_LIMITS:
        article, limit = _INTEGRAL_LIMITS[value_type]
        if value > limit:
            raise QuotaError(ErrorCode.INVALID_REQUEST, f"Proposed value for {key} is too large for {article}.")
        if abs(value % 1.0) > _FRACTION_TOLERANCE:
            raise QuotaError(ErrorCode.INVALID_REQUEST, f"{key} cannot be a fractional value.")


def _show(entity: Entity) -> str:
    # Shaped like Kafka's ClientQuotaEntity.toString, which operators will recognise from Kafka's logs.
    inner = ", ".join(f"{t}={'null' if name is None else name}" for t, name in entity)
    return f"ClientQuotaEntity(entries={{{inner}}})"


# --- persistence -------------------------------------------------------------------------------------


def _parse_store(text: str) -> dict[Entity, dict[str, float]]:
    document = json.loads(text)
    if (not isinstance(document, dict) or document.get("version") != _STORE_VERSION
            or not isinstance(document.get("quotas"), list)):
        raise ValueError(f"expected a JSON object with version {_STORE_VERSION} and a 'quotas' list")
    quotas: dict[Entity, dict[str, float]] = {}
    for index, raw in enumerate(document["quotas"]):
        entity, values = _entry_from_json(index, raw)
        if entity in quotas:
            raise ValueError(f"quota #{index} repeats the entity {_show(entity)}")
        quotas[entity] = values
    return quotas


def _entry_from_json(index: int, raw: Any) -> tuple[Entity, dict[str, float]]:
    if (not isinstance(raw, dict) or set(raw) != {"entity", "values"} or not isinstance(raw["entity"], dict)
            or not isinstance(raw["values"], dict) or not raw["values"]):
        raise ValueError(f"quota #{index} must be an object with an 'entity' object and a non-empty 'values' object")
    parts = list(raw["entity"].items())
    values = raw["values"]
    if not all(isinstance(name, str | None) for _, name in parts) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in values.values()):
        raise ValueError(f"quota #{index} needs string or null entity names and numeric values")
    # The file must hold only what alter would have accepted: the same checks, the same messages.
    try:
        entity = _validated_entity(parts)
        changes = _validated_ops(entity, [(key, float(value), False) for key, value in values.items()])
    except QuotaError as e:
        raise ValueError(f"quota #{index} is not valid: {e.message}") from None
    return entity, {key: value for key, value in changes.items() if value is not None}
