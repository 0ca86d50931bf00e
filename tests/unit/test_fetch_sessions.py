"""The KIP-227 fetch session cache as a state machine: contexts, epochs, session updates, which partitions
an incremental response carries, and eviction. Each test names the Kafka rule (FetchManager.newContext,
FetchSession, FetchContext, FetchSessionCacheShard) it checks; time is passed in, never read."""

from __future__ import annotations

import random
import uuid
from typing import Any

from broker.fetch_sessions import (
    FINAL_EPOCH,
    INITIAL_EPOCH,
    INVALID_SESSION_ID,
    ZERO_UUID,
    ContextKind,
    FetchSessionCache,
    PartitionRequest,
    next_epoch,
)
from protocol import messages
from protocol.errors import ErrorCode

V12 = 12
V13 = 13


def req(topic: str | None, partition: int = 0, offset: int = 0, *, topic_id: uuid.UUID = ZERO_UUID,
        max_bytes: int = 1024) -> PartitionRequest:
    return PartitionRequest(topic, topic_id, partition, offset, max_bytes)


def data(hw: int = 0, log_start: int = 0, records: bytes = b"", error: ErrorCode = ErrorCode.NONE) -> Any:
    return messages.FetchResponse.PartitionData(error_code=int(error), high_watermark=hw, log_start_offset=log_start,
                                                records=records)


def new_cache(**kwargs: Any) -> FetchSessionCache:
    return FetchSessionCache(rng=random.Random(7), **kwargs)


def create_session(cache: FetchSessionCache, requests: list[PartitionRequest], now: int = 0,
                   version: int = V12, hw: int = 0) -> int:
    context = cache.new_context(version, INVALID_SESSION_ID, INITIAL_EPOCH, requests, [], now)
    assert context.kind is ContextKind.FULL
    response = context.finish([(r, data(hw=hw)) for r in context.partitions()], now)
    assert response.session_id != INVALID_SESSION_ID
    return response.session_id


def names(partitions: list[PartitionRequest]) -> list[tuple[str | None, int]]:
    return [(r.topic, r.partition) for r in partitions]


def test_final_epoch_without_session_is_a_sessionless_full_fetch() -> None:
    """Epoch -1 with session id 0: every partition is read and answered, no session is created."""
    cache = new_cache()
    requests = [req("a", 0), req("a", 1)]
    context = cache.new_context(V12, INVALID_SESSION_ID, FINAL_EPOCH, requests, [], now_ms=0)
    assert context.kind is ContextKind.SESSIONLESS
    assert context.partitions() == requests
    results = [(r, data(hw=5)) for r in requests]
    assert context.finish(results, 0) == (ErrorCode.NONE, INVALID_SESSION_ID, results)
    assert len(cache) == 0


def test_initial_epoch_creates_a_session_holding_every_response_partition() -> None:
    """Epoch 0 is a full fetch; the session, created after the read, holds all partitions (errors too)
    and expects epoch 1 next."""
    cache = new_cache()
    requests = [req("a", 0), req("missing", 0)]
    context = cache.new_context(V12, INVALID_SESSION_ID, INITIAL_EPOCH, requests, [], now_ms=0)
    assert context.kind is ContextKind.FULL
    results = [(requests[0], data(hw=3)), (requests[1], data(hw=-1, error=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION))]
    error, session_id, included = context.finish(results, 0)
    assert error is ErrorCode.NONE and session_id > 0
    assert included == results
    session = cache.get(session_id)
    assert session is not None and session.epoch == 1
    assert list(session.partitions) == [("a", 0), ("missing", 0)]


def test_duplicate_partitions_keep_first_position_and_last_parameters() -> None:
    """A request naming a partition twice is one entry (Kafka's LinkedHashMap put)."""
    cache = new_cache()
    context = cache.new_context(V12, 0, FINAL_EPOCH, [req("a", 0, 1), req("a", 1), req("a", 0, 9)], [], 0)
    assert [(r.partition, r.fetch_offset) for r in context.partitions()] == [(0, 9), (1, 0)]


def test_incremental_fetch_reads_the_whole_session_and_advances_the_epoch() -> None:
    """Epoch 1 on a new session: partitions not named in the request still come from the session."""
    cache = new_cache()
    sid = create_session(cache, [req("a", 0, 0), req("a", 1, 0)])
    context = cache.new_context(V12, sid, 1, [req("a", 1, 4)], [], now_ms=10)
    assert context.kind is ContextKind.INCREMENTAL
    assert [(r.partition, r.fetch_offset) for r in context.partitions()] == [(0, 0), (1, 4)]
    assert cache.get(sid).epoch == 2  # type: ignore[union-attr]


def test_incremental_fetch_adds_and_forgets_partitions() -> None:
    """New partitions are appended to the session; forgotten_topics_data removes them."""
    cache = new_cache()
    sid = create_session(cache, [req("a", 0), req("a", 1)])
    context = cache.new_context(V12, sid, 1, [req("b", 0, 7)], [("a", 0)], now_ms=1)
    assert names(context.partitions()) == [("a", 1), ("b", 0)]
    assert context.partitions()[1].fetch_offset == 7


def test_incremental_response_carries_only_partitions_with_news() -> None:
    """Kafka's maybeUpdateResponseData: records, a changed high watermark or log start offset, or an
    error make a partition respond; unchanged ones are left out."""
    cache = new_cache()
    parts = [req("t", i) for i in range(5)]
    sid = create_session(cache, parts, hw=0)
    context = cache.new_context(V12, sid, 1, [], [], 1)
    results = [
        (parts[0], data(hw=0)),                     # nothing new
        (parts[1], data(hw=2, records=b"xx")),      # new records and high watermark
        (parts[2], data(hw=4)),                     # high watermark moved (records elsewhere)
        (parts[3], data(hw=0, log_start=3)),        # log start offset moved
        (parts[4], data(hw=-1, error=ErrorCode.OFFSET_OUT_OF_RANGE)),
    ]
    error, session_id, included = context.finish(results, 1)
    assert (error, session_id) == (ErrorCode.NONE, sid)
    assert [r.partition for r, _ in included] == [1, 2, 3, 4]


def test_partition_is_resent_after_its_error_clears() -> None:
    """An error forgets the cached high watermark, so the same high watermark is sent again later."""
    cache = new_cache()
    part = req("t", 0)
    sid = create_session(cache, [part], hw=5)
    ctx1 = cache.new_context(V12, sid, 1, [], [], 1)
    assert len(ctx1.finish([(part, data(hw=-1, error=ErrorCode.UNKNOWN_LEADER_EPOCH))], 1).partitions) == 1
    ctx2 = cache.new_context(V12, sid, 2, [], [], 2)
    assert len(ctx2.finish([(part, data(hw=5))], 2).partitions) == 1
    ctx3 = cache.new_context(V12, sid, 3, [], [], 3)
    assert ctx3.finish([(part, data(hw=5))], 3).partitions == []


def test_partitions_that_returned_records_move_to_the_end_of_the_session() -> None:
    """Fairness: the next incremental read starts with partitions that got no data last time."""
    cache = new_cache()
    parts = [req("t", i) for i in range(3)]
    sid = create_session(cache, parts)
    context = cache.new_context(V12, sid, 1, [], [], 1)
    context.finish([(parts[0], data(hw=1, records=b"r")), (parts[1], data()), (parts[2], data())], 1)
    nxt = cache.new_context(V12, sid, 2, [], [], 2)
    assert [r.partition for r in nxt.partitions()] == [1, 2, 0]


def test_unknown_session_id_is_fetch_session_id_not_found() -> None:
    cache = new_cache()
    context = cache.new_context(V12, 12345, 1, [req("a")], [], 0)
    assert context.kind is ContextKind.SESSION_ERROR
    assert context.finish([], 0) == (ErrorCode.FETCH_SESSION_ID_NOT_FOUND, INVALID_SESSION_ID, [])


def test_wrong_epoch_is_invalid_fetch_session_epoch_and_leaves_the_session_alone() -> None:
    cache = new_cache()
    sid = create_session(cache, [req("a")])
    context = cache.new_context(V12, sid, 5, [req("b")], [], 0)
    assert context.finish([], 0) == (ErrorCode.INVALID_FETCH_SESSION_EPOCH, INVALID_SESSION_ID, [])
    session = cache.get(sid)
    assert session is not None and session.epoch == 1 and list(session.partitions) == [("a", 0)]


def test_duplicate_incremental_request_is_refused_when_the_epoch_moved_meanwhile() -> None:
    """If a second request on the session was accepted before the first answered, the first gets
    INVALID_FETCH_SESSION_EPOCH with the session id (FetchContext.updateAndGenerateResponseData)."""
    cache = new_cache()
    part = req("a")
    sid = create_session(cache, [part])
    first = cache.new_context(V12, sid, 1, [], [], 1)
    second = cache.new_context(V12, sid, 2, [], [], 2)
    assert second.kind is ContextKind.INCREMENTAL
    assert first.finish([(part, data(hw=1))], 3) == (ErrorCode.INVALID_FETCH_SESSION_EPOCH, sid, [])


def test_session_with_topic_ids_used_below_v13_is_fetch_session_topic_id_error() -> None:
    cache = new_cache()
    tid = uuid.uuid4()
    sid = create_session(cache, [req("a", topic_id=tid)], version=V13)
    assert cache.new_context(V12, sid, 1, [], [], 0).error is ErrorCode.FETCH_SESSION_TOPIC_ID_ERROR
    sid12 = create_session(cache, [req("b")], version=V12)
    assert cache.new_context(V13, sid12, 1, [], [], 0).error is ErrorCode.FETCH_SESSION_TOPIC_ID_ERROR


def test_final_epoch_with_session_id_closes_the_session() -> None:
    cache = new_cache()
    sid = create_session(cache, [req("a")])
    context = cache.new_context(V12, sid, FINAL_EPOCH, [req("a")], [], 0)
    assert context.kind is ContextKind.SESSIONLESS
    assert cache.get(sid) is None


def test_initial_epoch_with_session_id_replaces_the_session() -> None:
    cache = new_cache()
    sid = create_session(cache, [req("a")])
    new_sid = create_session_with_id(cache, sid, [req("b")])
    assert cache.get(sid) is None and new_sid != sid and len(cache) == 1


def create_session_with_id(cache: FetchSessionCache, old: int, requests: list[PartitionRequest]) -> int:
    context = cache.new_context(V12, old, INITIAL_EPOCH, requests, [], 0)
    return context.finish([(r, data()) for r in requests], 0).session_id


def test_forgetting_every_partition_closes_the_session() -> None:
    """A session left empty is removed and the request answered without a session."""
    cache = new_cache()
    sid = create_session(cache, [req("a", 0)])
    context = cache.new_context(V12, sid, 1, [], [("a", 0)], 0)
    assert context.kind is ContextKind.SESSIONLESS
    assert context.finish([], 0).session_id == INVALID_SESSION_ID
    assert cache.get(sid) is None


def test_unknown_topic_id_stays_in_the_session_and_resolves_later() -> None:
    """v13+: a partition whose topic id was unknown is cached by id and gets its name once known."""
    cache = new_cache()
    tid = uuid.uuid4()
    sid = create_session(cache, [req(None, topic_id=tid)], version=V13)
    context = cache.new_context(V13, sid, 1, [], [], 0)
    assert context.partitions()[0].topic is None
    assert context.partitions(lambda t: "late" if t == tid else None)[0].topic == "late"
    forget = cache.new_context(V13, sid, 2, [], [(tid, 0)], 0)
    assert forget.kind is ContextKind.SESSIONLESS


def test_disabled_cache_answers_session_id_zero() -> None:
    """max.incremental.fetch.session.cache.slots=0: an initial-epoch fetch gets no session."""
    cache = new_cache(max_entries=0)
    context = cache.new_context(V12, 0, INITIAL_EPOCH, [req("a")], [], 0)
    assert context.finish([(req("a"), data())], 0).session_id == INVALID_SESSION_ID


def test_full_cache_without_evictable_sessions_creates_none() -> None:
    """Recently created, recently used sessions are not evicted by a new one."""
    cache = new_cache(max_entries=2, eviction_ms=1000)
    create_session(cache, [req("a")], now=0)
    create_session(cache, [req("b")], now=0)
    context = cache.new_context(V12, 0, INITIAL_EPOCH, [req("c", i) for i in range(9)], [], 10)
    assert context.finish([(req("c", i), data()) for i in range(9)], 10).session_id == INVALID_SESSION_ID
    assert len(cache) == 2


def test_stale_session_is_evicted_for_a_new_one() -> None:
    """A session unused for longer than min.incremental.fetch.session.eviction.ms makes room."""
    cache = new_cache(max_entries=2, eviction_ms=1000)
    stale = create_session(cache, [req("a")], now=0)
    kept = create_session(cache, [req("b")], now=0)
    cache.new_context(V12, kept, 1, [], [], 900)  # used: no longer the least recently used
    new = create_session(cache, [req("c")], now=1500)
    assert cache.get(stale) is None and cache.get(kept) is not None and cache.get(new) is not None
    assert cache.evictions == 1


def test_larger_session_evicts_a_smaller_old_one() -> None:
    """A session that was older than the eviction time at its last use may be evicted by a new session
    with more partitions, never by one of the same size."""
    cache = new_cache(max_entries=1, eviction_ms=1000)
    old = create_session(cache, [req("a", 0), req("a", 1)], now=0)
    cache.new_context(V12, old, 1, [], [], 1500)  # touched when older than eviction_ms: evictable
    same = cache.new_context(V12, 0, INITIAL_EPOCH, [req("b", 0), req("b", 1)], [], 1600)
    assert same.finish([(req("b", i), data()) for i in range(2)], 1600).session_id == INVALID_SESSION_ID
    bigger = [req("c", i) for i in range(3)]
    sid = cache.new_context(V12, 0, INITIAL_EPOCH, bigger, [], 1700).finish([(r, data()) for r in bigger], 1700)
    assert sid.session_id != INVALID_SESSION_ID and cache.get(old) is None


def test_next_epoch_wraps_to_one() -> None:
    assert next_epoch(0) == 1 and next_epoch(41) == 42
    assert next_epoch(2**31 - 1) == 1
    assert next_epoch(-1) == FINAL_EPOCH


def test_a_throttled_fetch_answers_nothing_and_leaves_the_session_as_it_was() -> None:
    """Kafka's getThrottledResponse (a client over its consumer_byte_rate): a full fetch gets no partitions
    and creates no session; an incremental one keeps its session id, and the cached high watermarks are
    not updated, so the next answer still reports what this one did not."""
    cache = new_cache()
    full = cache.new_context(V12, INVALID_SESSION_ID, INITIAL_EPOCH, [req("t", 0)], [], 0)
    assert tuple(full.throttled()) == (ErrorCode.NONE, INVALID_SESSION_ID, [])
    assert len(cache) == 0
    part = req("t", 0)
    sid = create_session(cache, [part], hw=0)
    context = cache.new_context(V12, sid, 1, [], [], 1)
    assert tuple(context.throttled()) == (ErrorCode.NONE, sid, [])
    later = cache.new_context(V12, sid, 2, [], [], 2)
    error, session_id, included = later.finish([(part, data(hw=2, records=b"xx"))], 2)
    assert (error, session_id, [r.partition for r, _ in included]) == (ErrorCode.NONE, sid, [0])
