"""KIP-227 incremental fetch sessions: the broker's session cache and the per-request fetch context.

Pure logic, no asyncio and no clock of its own: every method that needs the time takes ``now_ms``.
The Fetch handler asks `FetchSessionCache.new_context` how to treat a request, reads the partitions
the context lists, and hands the read results to `FetchContext.finish`, which creates or updates the
session and says which partitions go into the response and with which top-level error and session id.

Kafka's rules (``FetchManager.newContext``, ``FetchContext``, ``FetchSession``, ``FetchSessionCacheShard``):

- epoch -1 (FINAL) or 0 (INITIAL) is a *full* request. A non-zero session id in it closes that
  session. Epoch -1 then fetches without a session (response session id 0); epoch 0 creates a new
  session after the read, holding every partition of the response, if the cache has room or can
  evict an entry; otherwise the response carries session id 0.
- epoch > 0 is *incremental*: unknown id -> FETCH_SESSION_ID_NOT_FOUND; epoch other than the
  session's -> INVALID_FETCH_SESSION_EPOCH; a session created with topic ids (v13+) used below v13 or
  the other way round -> FETCH_SESSION_TOPIC_ID_ERROR. Otherwise the request's partitions are added
  or updated, ``forgotten_topics_data`` removed, the session's epoch advances, and the whole session
  is read. A session left empty is closed and the request answered without one.
- an incremental response holds only partitions that must be sent: new records, a changed high
  watermark or log start offset, an error (which also forgets the cached high watermark so the
  partition is resent once the error clears), a preferred read replica or a diverging epoch.
  Partitions that returned records move to the end of the session's order, so the next reads start
  with the others (fairness under ``max_bytes``). If the session's epoch moved on while the request
  was being served (a duplicate request), the answer is INVALID_FETCH_SESSION_EPOCH.
- the cache holds at most ``max.incremental.fetch.session.cache.slots`` sessions (Kafka's default
  1000; 0 disables sessions). When full, a new session may evict the least recently used one if it
  is stale (unused for ``min.incremental.fetch.session.eviction.ms``, default 120 s); else the
  smallest session that was older than that at its last use, if the new one has more partitions.
  Followers' sessions are privileged as in Kafka (a single node has none, but the rule is kept).

Kafka shards the cache to reduce lock contention; one event loop needs no sharding.
"""

from __future__ import annotations

import enum
import random
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from protocol.errors import ErrorCode
from protocol.primitives import INT32_MAX

INVALID_SESSION_ID = 0
INITIAL_EPOCH = 0
FINAL_EPOCH = -1
ZERO_UUID = uuid.UUID(int=0)
DEFAULT_MAX_ENTRIES = 1000
DEFAULT_EVICTION_MS = 120_000
TOPIC_IDS_VERSION = 13

PartitionKey = tuple[Any, int]


def next_epoch(epoch: int) -> int:
    """Kafka's FetchMetadata.nextEpoch: wraps from INT32_MAX to 1 (0 means "new session")."""
    if epoch < 0:
        return FINAL_EPOCH
    if epoch == INT32_MAX:
        return 1
    return epoch + 1


@dataclass(frozen=True, slots=True)
class PartitionRequest:
    """What a fetcher asked of one partition. ``topic`` is None for a topic id this broker does not know."""

    topic: str | None
    topic_id: uuid.UUID
    partition: int
    fetch_offset: int
    max_bytes: int
    current_leader_epoch: int = -1
    last_fetched_epoch: int = -1
    log_start_offset: int = -1

    @property
    def key(self) -> PartitionKey:
        """Sessions with topic ids (v13+) identify partitions by id, older ones by name, as Kafka does."""
        return (self.topic_id if self.topic_id != ZERO_UUID else self.topic, self.partition)


class CachedPartition:
    """One partition of a session: the last request parameters and what the fetcher was last told."""

    __slots__ = ("high_watermark", "log_start_offset", "request")

    def __init__(self, request: PartitionRequest, high_watermark: int = -1, log_start_offset: int = -1) -> None:
        self.request = request
        self.high_watermark = high_watermark
        self.log_start_offset = log_start_offset

    def must_respond(self, data: Any, update: bool) -> bool:
        """Kafka's CachedPartition.maybeUpdateResponseData. ``data`` is a FetchResponse PartitionData."""
        respond = bool(data.records)
        if self.high_watermark != data.high_watermark:
            respond = True
            if update:
                self.high_watermark = data.high_watermark
        if self.log_start_offset != data.log_start_offset:
            respond = True
            if update:
                self.log_start_offset = data.log_start_offset
        if data.preferred_read_replica != -1:
            respond = True
        if data.error_code != ErrorCode.NONE:
            if update:
                self.high_watermark = -1
            respond = True
        if data.diverging_epoch.epoch != -1 or data.diverging_epoch.end_offset != -1:
            respond = True
        return respond


class FetchSession:
    """An incremental fetch session: its id, epoch and partitions, in fetch order."""

    __slots__ = ("cached_size", "creation_ms", "epoch", "evictable_by_all", "evictable_by_privileged", "id",
                 "last_used_ms", "partitions", "privileged", "uses_topic_ids")

    def __init__(self, session_id: int, privileged: bool, partitions: dict[PartitionKey, CachedPartition],
                 uses_topic_ids: bool, now_ms: int, epoch: int) -> None:
        self.id = session_id
        self.privileged = privileged
        self.partitions = partitions
        self.uses_topic_ids = uses_topic_ids
        self.creation_ms = now_ms
        self.last_used_ms = now_ms
        self.epoch = epoch
        # Set by FetchSessionCache.touch, as Kafka's evictable trees are: eligibility is decided at use.
        self.cached_size = -1
        self.evictable_by_all = False
        self.evictable_by_privileged = False

    def update(self, requests: Iterable[PartitionRequest],
               to_forget: Iterable[PartitionKey]) -> tuple[list[PartitionKey], list[PartitionKey], list[PartitionKey]]:
        """Apply an incremental request: (added, updated, removed) partition keys."""
        added, updated, removed = [], [], []
        for request in requests:
            cached = self.partitions.get(request.key)
            if cached is None:
                self.partitions[request.key] = CachedPartition(request)
                added.append(request.key)
            else:
                # The cached name stays: an id resolved once keeps its name, as in Kafka.
                cached.request = replace(request, topic=cached.request.topic or request.topic)
                updated.append(request.key)
        for key in to_forget:
            if self.partitions.pop(key, None) is not None:
                removed.append(key)
        return added, updated, removed

    def __repr__(self) -> str:
        return (f"FetchSession(id={self.id}, epoch={self.epoch}, partitions={len(self.partitions)}, "
                f"uses_topic_ids={self.uses_topic_ids}, privileged={self.privileged})")


class ContextKind(enum.Enum):
    SESSION_ERROR = "session_error"
    SESSIONLESS = "sessionless"
    FULL = "full"
    INCREMENTAL = "incremental"


class SessionResponse(NamedTuple):
    """Top-level error, session id and the (request, partition data) pairs to put in the response."""

    error: ErrorCode
    session_id: int
    partitions: list[tuple[PartitionRequest, Any]]


class FetchContext:
    """How one Fetch request relates to the session cache; made by `FetchSessionCache.new_context`."""

    __slots__ = ("_cache", "_requests", "error", "kind", "privileged", "request_epoch", "session",
                 "uses_topic_ids")

    def __init__(self, kind: ContextKind, cache: FetchSessionCache, *, requests: Iterable[PartitionRequest] = (),
                 error: ErrorCode = ErrorCode.NONE, session: FetchSession | None = None, request_epoch: int = 0,
                 uses_topic_ids: bool = False, privileged: bool = False) -> None:
        self.kind = kind
        self._cache = cache
        self._requests = list(requests)
        self.error = error
        self.session = session
        self.request_epoch = request_epoch
        self.uses_topic_ids = uses_topic_ids
        self.privileged = privileged

    def partitions(self, resolve_name: Callable[[uuid.UUID], str | None] | None = None) -> list[PartitionRequest]:
        """The partitions to read, in order. For an incremental context that is the whole session; a
        session partition whose topic id was unknown gets its name once ``resolve_name`` knows it."""
        if self.kind is not ContextKind.INCREMENTAL:
            return list(self._requests)
        assert self.session is not None
        if resolve_name is not None and self.session.uses_topic_ids:
            for cached in self.session.partitions.values():
                if cached.request.topic is None:
                    name = resolve_name(cached.request.topic_id)
                    if name is not None:
                        cached.request = replace(cached.request, topic=name)
        return [cached.request for cached in self.session.partitions.values()]

    def throttled(self) -> SessionResponse:
        """The answer to a fetch held back by a client quota (Kafka's getThrottledResponse): no partitions,
        and nothing about the session changes except that an incremental one keeps its id; a full fetch
        creates no session."""
        if self.kind is ContextKind.SESSION_ERROR:
            return SessionResponse(self.error, INVALID_SESSION_ID, [])
        if self.kind is not ContextKind.INCREMENTAL:
            return SessionResponse(ErrorCode.NONE, INVALID_SESSION_ID, [])
        session = self.session
        assert session is not None
        if session.epoch != next_epoch(self.request_epoch):
            return SessionResponse(ErrorCode.INVALID_FETCH_SESSION_EPOCH, session.id, [])
        return SessionResponse(ErrorCode.NONE, session.id, [])

    def finish(self, results: list[tuple[PartitionRequest, Any]], now_ms: int) -> SessionResponse:
        """Create or update the session from the read ``results`` (PartitionData objects, in read order)
        and return what the response carries."""
        if self.kind is ContextKind.SESSION_ERROR:
            return SessionResponse(self.error, INVALID_SESSION_ID, [])
        if self.kind is ContextKind.SESSIONLESS:
            return SessionResponse(ErrorCode.NONE, INVALID_SESSION_ID, results)
        if self.kind is ContextKind.FULL:
            session_id = self._cache.maybe_create_session(
                now_ms, self.privileged, len(results), self.uses_topic_ids,
                lambda: [CachedPartition(req, data.high_watermark, data.log_start_offset) for req, data in results])
            return SessionResponse(ErrorCode.NONE, session_id, results)
        session = self.session
        assert session is not None
        if session.epoch != next_epoch(self.request_epoch):
            # Another request on this session was served meanwhile (a duplicate): Kafka refuses this one.
            return SessionResponse(ErrorCode.INVALID_FETCH_SESSION_EPOCH, session.id, [])
        included = []
        moved = []
        for req, data in results:
            cached = session.partitions.get(req.key)
            if cached is None or not cached.must_respond(data, update=True):
                continue
            included.append((req, data))
            if data.records:
                moved.append(req.key)
        for key in moved:
            session.partitions[key] = session.partitions.pop(key)
        return SessionResponse(ErrorCode.NONE, session.id, included)


class FetchSessionCache:
    """The broker's fetch sessions, bounded, with Kafka's eviction rules."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES, eviction_ms: int = DEFAULT_EVICTION_MS,
                 rng: random.Random | None = None) -> None:
        self.max_entries = max_entries
        self.eviction_ms = eviction_ms
        self._rng = rng or random.Random()
        self._sessions: dict[int, FetchSession] = {}
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session_id: int) -> FetchSession | None:
        return self._sessions.get(session_id)

    @property
    def total_partitions(self) -> int:
        return sum(len(s.partitions) for s in self._sessions.values())

    def new_context(self, version: int, session_id: int, epoch: int, requests: Iterable[PartitionRequest],
                    to_forget: Iterable[PartitionKey], now_ms: int, *, privileged: bool = False) -> FetchContext:
        """Decide how to serve a request (Kafka's FetchManager.newContext). Duplicate partitions in
        ``requests`` keep their first position and their last parameters."""
        deduped: dict[PartitionKey, PartitionRequest] = {}
        for request in requests:
            deduped[request.key] = request
        uses_topic_ids = version >= TOPIC_IDS_VERSION
        if epoch in (INITIAL_EPOCH, FINAL_EPOCH):
            if session_id != INVALID_SESSION_ID:
                self.remove(session_id)
            kind = ContextKind.SESSIONLESS if epoch == FINAL_EPOCH else ContextKind.FULL
            return FetchContext(kind, self, requests=list(deduped.values()), uses_topic_ids=uses_topic_ids,
                                privileged=privileged)
        session = self._sessions.get(session_id)
        if session is None:
            return FetchContext(ContextKind.SESSION_ERROR, self, error=ErrorCode.FETCH_SESSION_ID_NOT_FOUND)
        if session.epoch != epoch:
            return FetchContext(ContextKind.SESSION_ERROR, self, error=ErrorCode.INVALID_FETCH_SESSION_EPOCH)
        if session.uses_topic_ids != uses_topic_ids:
            return FetchContext(ContextKind.SESSION_ERROR, self, error=ErrorCode.FETCH_SESSION_TOPIC_ID_ERROR)
        session.update(deduped.values(), to_forget)
        if not session.partitions:
            self.remove(session_id)
            return FetchContext(ContextKind.SESSIONLESS, self, requests=list(deduped.values()))
        self.touch(session, now_ms)
        session.epoch = next_epoch(session.epoch)
        return FetchContext(ContextKind.INCREMENTAL, self, session=session, request_epoch=epoch,
                            uses_topic_ids=uses_topic_ids, privileged=privileged)

    def maybe_create_session(self, now_ms: int, privileged: bool, size: int, uses_topic_ids: bool,
                             make_partitions: Callable[[], list[CachedPartition]]) -> int:
        """A new session's id, or INVALID_SESSION_ID when the cache is full and nothing may be evicted."""
        if len(self._sessions) >= self.max_entries and not self._try_evict(privileged, size, now_ms):
            return INVALID_SESSION_ID
        partitions = {cached.request.key: cached for cached in make_partitions()}
        session = FetchSession(self._new_session_id(), privileged, partitions, uses_topic_ids, now_ms,
                               next_epoch(INITIAL_EPOCH))
        self._sessions[session.id] = session
        self.touch(session, now_ms)
        return session.id

    def touch(self, session: FetchSession, now_ms: int) -> None:
        """Record a use of ``session`` (Kafka's FetchSessionCacheShard.touch)."""
        session.last_used_ms = now_ms
        session.cached_size = len(session.partitions)
        old_enough = now_ms - session.creation_ms > self.eviction_ms
        session.evictable_by_privileged = not session.privileged or old_enough
        session.evictable_by_all = old_enough

    def remove(self, session_id: int) -> FetchSession | None:
        return self._sessions.pop(session_id, None)

    def _new_session_id(self) -> int:
        while True:
            session_id = self._rng.randint(1, INT32_MAX)
            if session_id not in self._sessions:
                return session_id

    def _try_evict(self, privileged: bool, size: int, now_ms: int) -> bool:
        if not self._sessions:
            return False
        oldest = min(self._sessions.values(), key=lambda s: (s.last_used_ms, s.id))
        if now_ms - oldest.last_used_ms > self.eviction_ms:
            self._evict(oldest)
            return True
        candidates = [s for s in self._sessions.values()
                      if (s.evictable_by_privileged if privileged else s.evictable_by_all)]
        if not candidates:
            return False
        victim = min(candidates, key=lambda s: (s.privileged, s.cached_size, s.id))
        # The newcomer's key has id 0, so on equal size and privilege it ranks below the victim.
        if (privileged, size, 0) < (victim.privileged, victim.cached_size, victim.id):
            return False
        self._evict(victim)
        return True

    def _evict(self, session: FetchSession) -> None:
        self._sessions.pop(session.id, None)
        self.evictions += 1
