"""Fault injection: rules that make the broker misbehave on purpose, so tests can watch real clients
handle errors, timeouts, lost connections, offline partitions, coordinator moves and failed disks.

This module owns the rules and their matching (``FaultInjector``, one per broker as ``broker.faults``)
and the client of the control endpoint that edits them over the wire (``FaultClient``, stdlib HTTP;
the endpoint itself is ``broker/control.py``). Both offer the same methods, so a test can be handed
either.

Rule kinds, and where they act:

- ``fail``: the request is not handled; it is answered with ``error`` in its API's own response shape
  (``protocol.error_responses``), as Kafka answers a request it refuses as a whole.
- ``delay``: the request is handled at once, its response held back ``delay_ms`` (a loop timer;
  later responses on that connection wait behind it, as Kafka's strict response order demands).
- ``close``: the connection is closed, without an answer, when a matching request arrives after
  ``after`` matching requests on that same connection were served; earlier responses still go out.
- ``drop``: the request is neither handled nor answered; the client times out and closes the
  connection (which frees the request's slot and bytes).
- ``coordinator``: the group coordinator has moved away: group requests (JoinGroup, SyncGroup,
  Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, OffsetDelete, DescribeGroups, DeleteGroups,
  TxnOffsetCommit) answer NOT_COORDINATOR and FindCoordinator for a group COORDINATOR_NOT_AVAILABLE,
  until the rule expires (``duration_ms``) or is cleared; then service is normal again and clients find
  the coordinator and rejoin by themselves. A request naming several groups is refused whole when any
  of them matches.
- ``offline``: the partition has no leader: Metadata answers LEADER_NOT_AVAILABLE with leader -1 and the
  node among the offline replicas, as Kafka's metadata cache does; Produce, Fetch, ListOffsets,
  OffsetForLeaderEpoch and DeleteRecords answer NOT_LEADER_OR_FOLLOWER (retriable: clients refresh
  metadata and wait). Nothing is appended.
- ``disk``: the partition's log directory failed: the same data APIs answer KAFKA_STORAGE_ERROR and
  nothing is appended; Metadata still names this broker the leader (the moment before Kafka's
  controller would react), so clients keep sending and see the error.

The first four and ``coordinator`` are request rules, consulted by the connection before a request
reaches its handler (``on_request``); the first matching rule, in the order they were added, decides.
``offline`` and ``disk`` are partition rules, consulted by the handlers where they look a partition up
(``partition_error``, ``partition_offline``).

Scope: ``api`` (key or Kafka name), ``topic`` (a request naming it, by name or id), ``client_id`` (the
request header's), ``group`` (a request naming it) for request rules; ``topic`` and ``partition`` (all of
the topic's when not given) for partition rules. ``count`` makes a request rule act that many times
(then it is gone); ``duration_ms`` ends any rule after that long. ``active`` is a plain bool, False
without rules, so the hot path pays one attribute check when no fault is set. Expired rules are removed
when next looked at.

Methods are synchronous and run on the broker's event loop (``broker.embedded`` marshals calls from
other threads); time comes from ``clock`` (monotonic seconds), which tests may replace.
"""

from __future__ import annotations

import json
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog

from protocol.errors import ErrorCode

log = structlog.get_logger()

FAIL, DELAY, CLOSE, DROP = "fail", "delay", "close", "drop"
OFFLINE, DISK, COORDINATOR = "offline", "disk", "coordinator"
KINDS = (FAIL, DELAY, CLOSE, DROP, OFFLINE, DISK, COORDINATOR)
PARTITION_KINDS = frozenset({OFFLINE, DISK})

# The fields a rule of each kind takes (besides ``kind``); anything else is refused, so a misspelt or
# misplaced scope never silently widens a rule.
_REQUEST_SCOPE = ("api", "topic", "client_id", "group", "count", "duration_ms")
FIELDS_BY_KIND: dict[str, tuple[str, ...]] = {
    FAIL: (*_REQUEST_SCOPE, "error"),
    DELAY: (*_REQUEST_SCOPE, "delay_ms"),
    CLOSE: (*_REQUEST_SCOPE, "after"),
    DROP: _REQUEST_SCOPE,
    OFFLINE: ("topic", "partition", "duration_ms"),
    DISK: ("topic", "partition", "duration_ms"),
    COORDINATOR: ("group", "client_id", "duration_ms"),
}
RULE_FIELDS = ("kind", "api", "topic", "partition", "client_id", "group", "error", "count", "delay_ms", "after",
               "duration_ms")
REQUIRED_BY_KIND: dict[str, tuple[str, ...]] = {FAIL: ("error",), DELAY: ("delay_ms",), OFFLINE: ("topic",),
                                                 DISK: ("topic",)}

FIND_COORDINATOR = 10
TXN_OFFSET_COMMIT = 28
GROUP_KEY_TYPE = 0
# APIs the group coordinator answers (KafkaApis routes them to GroupCoordinator), by key.
GROUP_COORDINATOR_APIS = frozenset({8, 9, 11, 12, 13, 14, 15, 42, 47, TXN_OFFSET_COMMIT})
# The longest delay or duration a rule may have: a day, so a typo cannot park a client for years.
MAX_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class RequestFault:
    """What the connection does to one request: answer ``error`` (fail), hold the response ``delay_s``
    (delay), close the connection (close), or never answer (drop)."""

    kind: str
    rule_id: int
    error: int = 0
    delay_s: float = 0.0


@dataclass(eq=False)
class _Rule:
    id: int
    kind: str
    api: int | None = None
    topic: str | None = None
    partition: int | None = None
    client_id: str | None = None
    group: str | None = None
    error: ErrorCode | None = None
    count: int | None = None
    delay_ms: int | None = None
    after: int | None = None
    duration_ms: int | None = None
    expires_at: float | None = None
    remaining: int | None = None
    hits: int = 0
    # close rules: matching requests seen per connection (a connection that goes away drops its entry)
    seen: weakref.WeakKeyDictionary[Any, int] = field(default_factory=weakref.WeakKeyDictionary)

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def as_dict(self, now: float) -> dict[str, Any]:
        from protocol.codec import api_name

        return {
            "id": self.id, "kind": self.kind,
            "api": None if self.api is None else (api_name(self.api) or self.api),
            "topic": self.topic, "partition": self.partition, "client_id": self.client_id, "group": self.group,
            "error": None if self.error is None else self.error.name,
            "count": self.count, "remaining": self.remaining, "delay_ms": self.delay_ms, "after": self.after,
            "duration_ms": self.duration_ms,
            "expires_in_ms": None if self.expires_at is None else max(0, round((self.expires_at - now) * 1000)),
            "hits": self.hits,
        }


class FaultMethods:
    """The convenience methods, written once over ``add`` and ``clear`` for the injector and the client."""

    def add(self, kind: str, **fields: Any) -> dict[str, Any]:
        raise NotImplementedError

    def clear(self, rule_id: int | None = None, *, kind: str | None = None, topic: str | None = None,
              partition: int | None = None) -> int:
        raise NotImplementedError

    def fail_requests(self, api: int | str | None, error: int | str, count: int | None = 1, *,
                      topic: str | None = None, client_id: str | None = None, group: str | None = None,
                      duration_ms: int | None = None) -> dict[str, Any]:
        """Answer the next ``count`` matching requests (None: all, until cleared) with ``error``."""
        return self.add(FAIL, api=api, error=error, count=count, topic=topic, client_id=client_id, group=group,
                        duration_ms=duration_ms)

    def delay_responses(self, api: int | str | None, delay_ms: int, count: int | None = None, *,
                        topic: str | None = None, client_id: str | None = None, group: str | None = None,
                        duration_ms: int | None = None) -> dict[str, Any]:
        """Hold back the responses to matching requests ``delay_ms`` each (the next ``count``, or all)."""
        return self.add(DELAY, api=api, delay_ms=delay_ms, count=count, topic=topic, client_id=client_id,
                        group=group, duration_ms=duration_ms)

    def close_connections(self, after: int = 0, count: int | None = 1, *, api: int | str | None = None,
                          topic: str | None = None, client_id: str | None = None, group: str | None = None,
                          duration_ms: int | None = None) -> dict[str, Any]:
        """Close a connection, unanswered, at its first matching request past the first ``after`` ones;
        ``count`` connections in all (None: every one, until cleared)."""
        return self.add(CLOSE, after=after, count=count, api=api, topic=topic, client_id=client_id, group=group,
                        duration_ms=duration_ms)

    def drop_requests(self, api: int | str | None, count: int | None = 1, *, topic: str | None = None,
                      client_id: str | None = None, group: str | None = None,
                      duration_ms: int | None = None) -> dict[str, Any]:
        """Never answer the next ``count`` matching requests (None: all, until cleared)."""
        return self.add(DROP, api=api, count=count, topic=topic, client_id=client_id, group=group,
                        duration_ms=duration_ms)

    def take_partition_offline(self, topic: str, partition: int | None = None, *,
                               duration_ms: int | None = None) -> dict[str, Any]:
        """The partition (every partition of ``topic`` when None) has no leader until brought back."""
        return self.add(OFFLINE, topic=topic, partition=partition, duration_ms=duration_ms)

    def bring_partition_online(self, topic: str, partition: int | None = None) -> int:
        """Clear the offline rules of ``topic`` (of that partition when given); how many were cleared."""
        return self.clear(kind=OFFLINE, topic=topic, partition=partition)

    def move_coordinator(self, group: str | None = None, duration_ms: int | None = None, *,
                         client_id: str | None = None) -> dict[str, Any]:
        """The group coordinator (for ``group``, or every group) moves away: NOT_COORDINATOR and
        COORDINATOR_NOT_AVAILABLE for ``duration_ms`` (until cleared when None), then normal service."""
        return self.add(COORDINATOR, group=group, duration_ms=duration_ms, client_id=client_id)

    def fail_disk(self, topic: str, partition: int | None = None, *,
                  duration_ms: int | None = None) -> dict[str, Any]:
        """The partition's disk fails: KAFKA_STORAGE_ERROR for its data requests until cleared."""
        return self.add(DISK, topic=topic, partition=partition, duration_ms=duration_ms)


class FaultInjector(FaultMethods):
    """The broker's fault rules (see the module docstring)."""

    def __init__(self) -> None:
        self.active = False
        self.clock: Callable[[], float] = time.monotonic
        self._rules: list[_Rule] = []
        self._next_id = 1

    # ------------------------------------------------------------ editing

    def add(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Add a rule; returns it as a dict with its ``id``. Raises ValueError for anything not valid."""
        rule = _Rule(id=self._next_id, kind=kind, **_validated(kind, fields))
        if rule.duration_ms is not None:
            rule.expires_at = self.clock() + rule.duration_ms / 1000
        rule.remaining = rule.count
        self._next_id += 1
        self._rules.append(rule)
        self.active = True
        described = rule.as_dict(self.clock())
        log.info("fault.added", **{k: v for k, v in described.items() if v is not None})
        return described

    def rules(self) -> list[dict[str, Any]]:
        """The rules in force, oldest first, as dicts."""
        now = self.clock()
        self._expire(now)
        return [rule.as_dict(now) for rule in self._rules]

    def clear(self, rule_id: int | None = None, *, kind: str | None = None, topic: str | None = None,
              partition: int | None = None) -> int:
        """Remove rule ``rule_id``, or every rule matching the filters given (all rules when none is);
        returns how many were removed (0 for an unknown id)."""
        if kind is not None and kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}: use one of {', '.join(KINDS)}")
        if rule_id is not None and (isinstance(rule_id, bool) or not isinstance(rule_id, int)):
            raise ValueError(f"a rule id is an integer, got {rule_id!r}")
        self._expire(self.clock())
        keep, gone = [], []
        for rule in self._rules:
            if ((rule_id is None or rule.id == rule_id) and (kind is None or rule.kind == kind)
                    and (topic is None or rule.topic == topic)
                    and (partition is None or rule.partition == partition)):
                gone.append(rule)
            else:
                keep.append(rule)
        self._rules = keep
        self.active = bool(keep)
        if gone:
            log.info("fault.cleared", ids=[r.id for r in gone])
        return len(gone)

    def _expire(self, now: float) -> None:
        if any(rule.expired(now) for rule in self._rules):
            for rule in self._rules:
                if rule.expired(now):
                    log.info("fault.expired", id=rule.id, kind=rule.kind, hits=rule.hits)
            self._rules = [rule for rule in self._rules if not rule.expired(now)]
            self.active = bool(self._rules)

    def _used(self, rule: _Rule) -> None:
        """Count one action of ``rule``; a counted rule that has acted its last time goes."""
        rule.hits += 1
        if rule.remaining is not None:
            rule.remaining -= 1
            if rule.remaining <= 0:
                self._rules.remove(rule)
                self.active = bool(self._rules)
                log.info("fault.used_up", id=rule.id, kind=rule.kind, hits=rule.hits)

    # ------------------------------------------------------------ matching

    def on_request(self, api_key: int, client_id: str | None, body: Any, connection: object,
                   topic_name: Callable[[Any], str | None] | None = None) -> RequestFault | None:
        """What to do to this request (None: serve it normally). ``connection`` identifies the connection
        (for ``close`` rules' per-connection counts); ``topic_name`` maps a topic id to its name."""
        now = self.clock()
        self._expire(now)
        request = _RequestView(api_key, client_id, body, topic_name)
        for rule in list(self._rules):
            if rule.kind in PARTITION_KINDS or not request.matches(rule):
                continue
            if rule.kind == COORDINATOR:
                if api_key == FIND_COORDINATOR:
                    if getattr(body, "key_type", GROUP_KEY_TYPE) != GROUP_KEY_TYPE:
                        continue  # the transaction coordinator has not moved
                    error = ErrorCode.COORDINATOR_NOT_AVAILABLE
                elif api_key in GROUP_COORDINATOR_APIS:
                    error = ErrorCode.NOT_COORDINATOR
                else:
                    continue
                rule.hits += 1
                return RequestFault(FAIL, rule.id, error=int(error))
            if rule.kind == CLOSE:
                seen = rule.seen.get(connection, 0) + 1
                rule.seen[connection] = seen
                if seen <= (rule.after or 0):
                    continue
            self._used(rule)
            if rule.kind == FAIL:
                assert rule.error is not None
                return RequestFault(FAIL, rule.id, error=int(rule.error))
            if rule.kind == DELAY:
                assert rule.delay_ms is not None
                return RequestFault(DELAY, rule.id, delay_s=rule.delay_ms / 1000)
            return RequestFault(rule.kind, rule.id)
        return None

    def partition_error(self, topic: str, partition: int) -> ErrorCode | None:
        """The error a data request (Produce, Fetch, ListOffsets, ...) for this partition gets from a
        partition rule: NOT_LEADER_OR_FOLLOWER when offline, KAFKA_STORAGE_ERROR for a failed disk."""
        rule = self._partition_rule(topic, partition, PARTITION_KINDS)
        if rule is None:
            return None
        rule.hits += 1
        return ErrorCode.NOT_LEADER_OR_FOLLOWER if rule.kind == OFFLINE else ErrorCode.KAFKA_STORAGE_ERROR

    def partition_offline(self, topic: str, partition: int) -> bool:
        """Whether Metadata shows this partition without a leader."""
        rule = self._partition_rule(topic, partition, (OFFLINE,))
        if rule is None:
            return False
        rule.hits += 1
        return True

    def _partition_rule(self, topic: str, partition: int, kinds: Iterable[str]) -> _Rule | None:
        now = self.clock()
        for rule in self._rules:
            if (rule.kind in kinds and rule.topic == topic and (rule.partition is None or rule.partition == partition)
                    and not rule.expired(now)):
                return rule
        return None


class _RequestView:
    """A request as rules see it: its topics and groups are worked out only if a rule asks."""

    def __init__(self, api_key: int, client_id: str | None, body: Any,
                 topic_name: Callable[[Any], str | None] | None) -> None:
        self.api_key = api_key
        self.client_id = client_id
        self.body = body
        self._topic_name = topic_name
        self._topics: set[str] | None = None
        self._groups: set[str] | None = None

    def matches(self, rule: _Rule) -> bool:
        if rule.api is not None and rule.api != self.api_key:
            return False
        if rule.client_id is not None and rule.client_id != self.client_id:
            return False
        if rule.topic is not None:
            if self._topics is None:
                self._topics = set(request_topics(self.body, self._topic_name))
            if rule.topic not in self._topics:
                return False
        if rule.group is not None:
            if self._groups is None:
                self._groups = set(request_groups(self.api_key, self.body))
            if rule.group not in self._groups:
                return False
        return True


def request_topics(body: Any, topic_name: Callable[[Any], str | None] | None = None) -> Iterator[str]:
    """The topic names a decoded request names: ``topics`` / ``topic_data`` / ``topic_names`` entries (by
    ``name`` or ``topic``, or by ``topic_id`` through ``topic_name``), also inside ``groups`` and
    ``transactions`` entries (OffsetFetch v8+, AddPartitionsToTxn v4+)."""
    for attr in ("topics", "topic_data", "topic_names", "v3_and_below_topics"):
        for entry in getattr(body, attr, None) or ():
            if isinstance(entry, str):
                yield entry
                continue
            name = getattr(entry, "name", None) or getattr(entry, "topic", None)
            if isinstance(name, str) and name:
                yield name
                continue
            topic_id = getattr(entry, "topic_id", None)
            if topic_id is not None and topic_name is not None:
                resolved = topic_name(topic_id)
                if resolved is not None:
                    yield resolved
    for attr in ("groups", "transactions"):
        for entry in getattr(body, attr, None) or ():
            if not isinstance(entry, str):
                yield from request_topics(entry, topic_name)


def request_groups(api_key: int, body: Any) -> Iterator[str]:
    """The group ids a decoded request names (a group FindCoordinator's keys included)."""
    if api_key == FIND_COORDINATOR:
        if getattr(body, "key_type", GROUP_KEY_TYPE) != GROUP_KEY_TYPE:
            return
        key = getattr(body, "key", None)
        if key:
            yield key
        yield from getattr(body, "coordinator_keys", None) or ()
        return
    group_id = getattr(body, "group_id", None)
    if isinstance(group_id, str) and group_id:  # "" is also what a version without the field decodes to
        yield group_id
    for attr in ("groups", "groups_names"):
        for entry in getattr(body, attr, None) or ():
            if isinstance(entry, str):
                yield entry
            elif isinstance(getattr(entry, "group_id", None), str):
                yield entry.group_id


# ---------------------------------------------------------------- validation


def parse_api(value: int | str) -> int:
    """An API key from its number or its Kafka name (``Produce``, ``ListOffsets``; case and underscores
    do not matter). Raises ValueError."""
    from protocol.schema import APIS

    value = _number_or_name("api", value)
    if isinstance(value, int):
        if value not in APIS:
            raise ValueError(f"unknown API key {value}")
        return value
    wanted = value.replace("_", "").lower()
    for key, (name, _) in APIS.items():
        if name.lower() == wanted:
            return key
    raise ValueError(f"unknown API {value!r}: use Kafka's name (Produce, Fetch, Metadata, JoinGroup, ...) "
                     f"or its key")


def parse_error(value: int | str) -> ErrorCode:
    """An error code from its number or Kafka name (``NOT_LEADER_OR_FOLLOWER``, any case); not NONE."""
    value = _number_or_name("error", value)
    try:
        code = ErrorCode(value) if isinstance(value, int) else ErrorCode[value.upper()]
    except (KeyError, ValueError):
        raise ValueError(f"unknown Kafka error {value!r}: use a name such as NOT_LEADER_OR_FOLLOWER or "
                         f"REQUEST_TIMED_OUT, or its code") from None
    if code is ErrorCode.NONE:
        raise ValueError("error NONE is not a fault: name an error such as NOT_LEADER_OR_FOLLOWER")
    return code


def _number_or_name(what: str, value: Any) -> int | str:
    """An int, or a str that does not spell one ("3" is 3); ValueError for anything else (JSON's true
    and false, lists, ...)."""
    if isinstance(value, str):
        text = value.strip()
        return int(text) if text.lstrip("-").isdigit() else text
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    raise ValueError(f"{what} must be a number or a name, got {value!r}")


def _int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if is_int and value >= minimum and (maximum is None or value <= maximum):
        return int(value)
    if not is_int:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    upper = f" and at most {maximum}" if maximum is not None else ""
    raise ValueError(f"{name} must be at least {minimum}{upper}, got {value}")


def _name(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _validated(kind: Any, fields: dict[str, Any]) -> dict[str, Any]:
    """The rule fields of ``kind`` from user input, converted; ValueError names what is wrong."""
    if kind not in KINDS:
        raise ValueError(f"unknown fault kind {kind!r}: use one of {', '.join(KINDS)}")
    allowed = FIELDS_BY_KIND[kind]
    given = {k: v for k, v in fields.items() if v is not None}
    unknown = sorted(set(given) - set(RULE_FIELDS))
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}; rule fields are {', '.join(RULE_FIELDS[1:])}")
    misplaced = sorted(set(given) - set(allowed))
    if misplaced:
        raise ValueError(f"{kind!r} rules do not take {', '.join(misplaced)}; they take {', '.join(allowed)}")
    missing = [k for k in REQUIRED_BY_KIND.get(kind, ()) if k not in given]
    if missing:
        raise ValueError(f"{kind!r} rules need {', '.join(missing)}")
    out: dict[str, Any] = {}
    for key, value in given.items():
        if key == "api":
            out[key] = parse_api(value)
        elif key == "error":
            out[key] = parse_error(value)
        elif key in ("topic", "client_id", "group"):
            out[key] = _name(key, value)
        elif key == "partition":
            out[key] = _int(key, value, 0)
        elif key == "count":
            out[key] = _int(key, value, 1)
        elif key == "after":
            out[key] = _int(key, value, 0)
        else:  # delay_ms, duration_ms
            out[key] = _int(key, value, 1, MAX_MS)
    return out


# ---------------------------------------------------------------- over the wire


class ControlEndpointError(ConnectionError):
    """The control endpoint could not be reached, closed the connection, or failed; ``status`` is the HTTP
    status when there was an answer."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class FaultClient(FaultMethods):
    """The fault rules of a broker reached over its control endpoint (HTTP on its Kafka port; the broker
    needs ``control.endpoint.enable=true``, which the ci profile sets). Same methods as FaultInjector:
    bad rules raise ValueError with the broker's message; an unreachable or disabled endpoint raises
    ``ControlEndpointError`` (a ConnectionError)."""

    def __init__(self, bootstrap_servers: str, timeout: float = 10.0) -> None:
        from broker.config import ConfigError
        from broker.listeners import split_address

        first = bootstrap_servers.split(",")[0].strip().rpartition("://")[2]
        try:
            self.host, self.port = split_address(first, "bootstrap servers")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        self.timeout = timeout

    @property
    def address(self) -> str:
        from broker.config import format_address

        return format_address(self.host, self.port)

    def add(self, kind: str, **fields: Any) -> dict[str, Any]:
        body = {"kind": kind, **{k: v for k, v in fields.items() if v is not None}}
        return self._call("POST", "/faults", body)

    def rules(self) -> list[dict[str, Any]]:
        return self._call("GET", "/faults")["rules"]

    def clear(self, rule_id: int | None = None, *, kind: str | None = None, topic: str | None = None,
              partition: int | None = None) -> int:
        from urllib.parse import quote, urlencode

        if rule_id is not None:
            try:
                return self._call("DELETE", f"/faults/{quote(str(rule_id), safe='')}")["cleared"]
            except ControlEndpointError as exc:
                if exc.status == 404:
                    return 0
                raise
        filters = {k: v for k, v in (("kind", kind), ("topic", topic), ("partition", partition)) if v is not None}
        return self._call("DELETE", "/faults" + (f"?{urlencode(filters)}" if filters else ""))["cleared"]

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        import http.client

        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Connection": "close"} if payload is not None else {}
        try:
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            raise ControlEndpointError(
                f"the broker at {self.address} closed the connection without answering: is its control "
                f"endpoint on (control.endpoint.enable=true, or --profile ci)?") from None
        except http.client.HTTPException as exc:
            raise ControlEndpointError(f"bad answer from the control endpoint at {self.address}: {exc}") from None
        except OSError as exc:
            raise ControlEndpointError(f"cannot reach the broker at {self.address}: {exc.strerror or exc}") from None
        finally:
            conn.close()
        try:
            answer = json.loads(data) if data else {}
        except ValueError:
            raise ControlEndpointError(f"the control endpoint at {self.address} answered {response.status} "
                                       f"with a body that is not JSON", response.status) from None
        if response.status == 400:
            raise ValueError(answer.get("error", "bad request"))
        if response.status >= 300:
            raise ControlEndpointError(f"{method} {path}: {response.status} {answer.get('error', response.reason)}",
                                       response.status)
        return answer
