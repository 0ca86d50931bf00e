"""The Fetch handler in-process, against the memory engine and a real ClusterState: per-partition errors,
size limits, isolation levels, long polling woken by appends, and sessions. Each test states the Kafka
behaviour it checks. Appends go straight to the partition log and wake waiters as Produce does.

Every test runs on a virtual clock (`tests.unit.virtual_clock`): max_wait_ms passes without real
waiting, "answered at once" means the loop's clock did not move, and a long poll is checked to be
parked by its waiter being registered (`FetchWaiters.waiting_on`), never by sleeping."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from broker.cluster import ClusterState
from broker.config import BrokerConfig
from broker.faults import FaultInjector
from broker.fetch_sessions import FetchSessionCache
from broker.handlers import ConnectionInfo, RequestContext
from broker.handlers.fetch import handle_fetch
from broker.log_throttle import LogThrottle
from broker.membership import SingleNode
from protocol import codec, messages
from protocol.errors import ErrorCode
from protocol.records import Record, build_batch, iter_batches, iter_records
from storage.memory import MemoryEngine
from tests.unit.virtual_clock import run_virtual
from tests.waiting import wait_until_async

Req = messages.FetchRequest
CLUSTER_ID = "moldau-unit-cluster"


class FakeBroker:
    """The attributes of `broker.server.Broker` the Fetch handler reads; the cluster is the real one."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.node_id = config.node_id
        self.cluster_id = CLUSTER_ID
        self.advertised_address = ("127.0.0.1", 9092)
        self.cluster = ClusterState(MemoryEngine(), config)
        self.log_throttle = LogThrottle.from_config(config)
        self.fetch_sessions = FetchSessionCache(config.max_incremental_fetch_session_cache_slots,
                                                config.min_incremental_fetch_session_eviction_ms)
        self.faults = FaultInjector()
        self.acls = None  # no authorizer: every request allowed
        self.client_quotas_if_any = None  # no client quotas
        self.membership = SingleNode(self)  # a broker alone: leads every partition


class Env:
    def __init__(self, **settings: Any) -> None:
        self.broker = FakeBroker(BrokerConfig.from_settings(**settings))
        self.cluster = self.broker.cluster

    async def fetch(self, version: int, body: Any) -> Any:
        ctx = RequestContext(self.broker, ConnectionInfo(peer="unit", advertised=self.broker.advertised_address),
                             version)  # type: ignore[arg-type]
        response = await handle_fetch(None, body, ctx)
        # Every response must encode at the version asked for (and decode back the same).
        frame = b"".join(bytes(p) for p in codec.encode_response(1, version, 1, response))
        _, decoded = codec.decode_response(1, version, frame[4:])
        assert decoded.error_code == response.error_code or version < 7
        # The handler may pass several chunks for one partition (written without joining); the tests
        # look at the bytes a client receives.
        for p in partitions(response):
            if isinstance(p.records, list):
                p.records = b"".join(bytes(c) for c in p.records)
        return response

    async def append(self, topic: str, partition: int, n: int = 1, *, size: int = 10, start: int = 0) -> None:
        p = self.cluster.partition(topic, partition)
        records = [Record(i, 1000 + i, b"k%d" % i, bytes([65 + (start + i) % 26]) * size, ()) for i in range(n)]
        await p.log.append(bytearray(build_batch(records)))
        self.cluster.waiters.wake(topic, partition)


    async def parked(self, task: asyncio.Future[Any], topic: str, partition: int) -> None:
        """Wait until the long-poll ``task`` has registered its waiter on ``topic``/``partition``."""
        await wait_until_async(lambda: task.done() or self.cluster.waiters.waiting_on(topic, partition) == 1,
                               1, f"a Fetch waiter on {topic}-{partition}")
        assert not task.done(), f"the long poll answered instead of waiting: {task.result()}"


def run(test: Callable[[Env], Awaitable[None]], **settings: Any) -> None:
    async def main() -> None:
        await test(Env(**settings))
    run_virtual(main())


def now() -> float:
    """The virtual clock, in seconds since the test started."""
    return asyncio.get_running_loop().time()


def request(topics: list[tuple[Any, list[int]]], *, offset: int = 0, partition_max_bytes: int = 1 << 20,
            version: int = 12, **fields: Any) -> Any:
    """A Fetch request; topics are names (v<13) or topic ids (v13+)."""
    key = "topic_id" if version >= 13 else "topic"
    return Req(topics=[Req.FetchTopic(**{key: t}, partitions=[
        Req.FetchPartition(partition=p, fetch_offset=offset, partition_max_bytes=partition_max_bytes) for p in ps])
        for t, ps in topics], **fields)


def partitions(response: Any) -> list[Any]:
    return [p for t in response.responses for p in t.partitions]


def offsets(records: Any) -> list[int]:
    out = []
    for _, batch in iter_batches(memoryview(bytes(records))):
        out += [r.offset for r in iter_records(batch)]
    return out


def test_fetch_by_name_returns_whole_batches_and_offsets() -> None:
    """v4-12 name topics: records are whole batches from fetch_offset; hw/lso/log start filled; read
    uncommitted gets a null aborted list, read committed an empty one."""
    async def go(env: Env) -> None:
        await env.cluster.create_topic("t", 1)
        await env.append("t", 0, 3)
        await env.append("t", 0, 2)
        for version in (4, 11, 12):
            resp = await env.fetch(version, request([("t", [0])], version=version))
            (p,) = partitions(resp)
            assert resp.responses[0].topic == "t"
            assert (p.error_code, p.high_watermark, p.last_stable_offset, p.log_start_offset) == (0, 5, 5, 0)
            assert p.aborted_transactions is None and p.preferred_read_replica == -1
            assert offsets(p.records) == [0, 1, 2, 3, 4]
        resp = await env.fetch(12, request([("t", [0])], offset=3, isolation_level=1))
        (p,) = partitions(resp)
        assert p.aborted_transactions == [] and offsets(p.records) == [3, 4]
    run(go)


def test_fetch_by_topic_id_v13_and_unknown_id() -> None:
    """v13+: topics by id; the response carries the id. An unknown id -> UNKNOWN_TOPIC_ID, hw -1."""
    async def go(env: Env) -> None:
        topic = await env.cluster.create_topic("by-id", 1)
        await env.append("by-id", 0, 2)
        missing = uuid.uuid4()
        for version in (13, 16, 17):
            resp = await env.fetch(version, request([(topic.topic_id, [0]), (missing, [0])], version=version))
            assert [t.topic_id for t in resp.responses] == [topic.topic_id, missing]
            known, unknown = partitions(resp)
            assert known.error_code == 0 and offsets(known.records) == [0, 1]
            assert (unknown.error_code, unknown.high_watermark) == (ErrorCode.UNKNOWN_TOPIC_ID, -1)
    run(go)


def test_unknown_topic_or_partition() -> None:
    """A name that does not exist, or a partition index past the topic's, -> UNKNOWN_TOPIC_OR_PARTITION."""
    async def go(env: Env) -> None:
        await env.cluster.create_topic("two", 2)
        resp = await env.fetch(12, request([("nope", [0]), ("two", [0, 5])], max_wait_ms=3000, min_bytes=1))
        by = {(t.topic, p.partition_index): p.error_code for t in resp.responses for p in t.partitions}
        assert by == {("two", 0): 0, ("nope", 0): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                      ("two", 5): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION}
    run(go, auto_create_topics_enable=False)


def test_offset_out_of_range_below_start_and_past_end() -> None:
    """fetch_offset outside [log start, log end] -> OFFSET_OUT_OF_RANGE with hw/log start -1 (Kafka's
    LogReadResult for an error); the log end offset itself is a valid, empty fetch."""
    async def go(env: Env) -> None:
        await env.cluster.create_topic("oor", 1)
        await env.append("oor", 0, 4)
        await env.cluster.partition("oor", 0).log.delete_records_before(2)
        for offset in (1, 5):
            (p,) = partitions(await env.fetch(12, request([("oor", [0])], offset=offset)))
            assert (p.error_code, p.high_watermark, p.log_start_offset, p.last_stable_offset) == (
                ErrorCode.OFFSET_OUT_OF_RANGE, -1, -1, -1)
            assert p.records == b""
        (p,) = partitions(await env.fetch(12, request([("oor", [0])], offset=4)))
        assert (p.error_code, p.high_watermark, p.log_start_offset, p.records) == (0, 4, 2, b"")
    run(go)


def test_leader_epoch_checks() -> None:
    """current_leader_epoch newer than ours -> UNKNOWN_LEADER_EPOCH, older -> FENCED_LEADER_EPOCH, -1 or
    equal -> read. v16+ errors of this kind name the current leader and its endpoint."""
    async def go(env: Env) -> None:
        await env.cluster.create_topic("ep", 1)
        env.cluster.partition("ep", 0).leader_epoch = 3
        for asked, expected in ((4, ErrorCode.UNKNOWN_LEADER_EPOCH), (2, ErrorCode.FENCED_LEADER_EPOCH),
                                (3, ErrorCode.NONE), (-1, ErrorCode.NONE)):
            body = request([("ep", [0])])
            body.topics[0].partitions[0].current_leader_epoch = asked
            (p,) = partitions(await env.fetch(12, body))
            assert p.error_code == expected, asked
        topic = env.cluster.get("ep")
        body = request([(topic.topic_id, [0])], version=16)
        body.topics[0].partitions[0].current_leader_epoch = 1
        resp = await env.fetch(16, body)
        (p,) = partitions(resp)
        assert p.error_code == ErrorCode.FENCED_LEADER_EPOCH
        assert (p.current_leader.leader_id, p.current_leader.leader_epoch) == (1, 3)
        assert [(n.node_id, n.host, n.port) for n in resp.node_endpoints] == [(1, "127.0.0.1", 9092)]
    run(go)


def test_last_fetched_epoch_newer_than_ours_is_out_of_range_and_past_end_diverges() -> None:
    """v12+ last_fetched_epoch: no end offset for a newer epoch -> OFFSET_OUT_OF_RANGE; our epoch with a
    fetch offset past the log end -> diverging_epoch (epoch, log end) and no error."""
    async def go(env: Env) -> None:
        await env.cluster.create_topic("lfe", 1)
        await env.append("lfe", 0, 2)
        body = request([("lfe", [0])])
        body.topics[0].partitions[0].last_fetched_epoch = 1
        (p,) = partitions(await env.fetch(12, body))
        assert p.error_code == ErrorCode.OFFSET_OUT_OF_RANGE
        body = request([("lfe", [0])], offset=9, max_wait_ms=5000, min_bytes=1)
        body.topics[0].partitions[0].last_fetched_epoch = 0
        started = now()
        (p,) = partitions(await env.fetch(12, body))
        assert now() == started, "a diverging epoch answers at once, without waiting for max_wait_ms"
        assert (p.error_code, p.diverging_epoch.epoch, p.diverging_epoch.end_offset) == (0, 0, 2)
    run(go)


def test_first_batch_is_returned_even_if_larger_than_partition_max_bytes() -> None:
    """minOneMessage: the first partition with data returns one whole batch past partition_max_bytes;
    a later partition whose first batch exceeds its limit returns nothing."""
    async def go(env: Env) -> None:
        await env.cluster.create_topic("big", 2)
        for p in (0, 1):
            await env.append("big", p, 1, size=500)
            await env.append("big", p, 1, size=500)
        resp = await env.fetch(12, request([("big", [0, 1])], partition_max_bytes=100))
        first, second = partitions(resp)
        assert len(offsets(first.records)) == 1 and len(first.records) > 500
        assert second.error_code == 0 and second.records == b"" and second.high_watermark == 2
    run(go)


def test_max_bytes_limits_the_whole_response() -> None:
    """max_bytes (v3+) caps the sum over partitions; whole batches only; partitions after the limit
    answer with empty records but their offsets."""
    async def go(env: Env) -> None:
        await env.cluster.create_topic("mb", 3)
        for p in range(3):
            for _ in range(3):
                await env.append("mb", p, 1, size=200)
        (one,) = partitions(await env.fetch(12, request([("mb", [0])])))
        batch_size = len(one.records) // 3
        resp = await env.fetch(12, request([("mb", [0, 1, 2])], max_bytes=4 * batch_size + 10))
        sizes = [len(p.records) // batch_size for p in partitions(resp)]
        assert sizes == [3, 1, 0]
        assert [p.high_watermark for p in partitions(resp)] == [3, 3, 3]
    run(go)


def test_long_poll_is_woken_by_an_append() -> None:
    """max_wait_ms with min_bytes=1 on an empty partition waits, and an append wakes it at once."""
    async def go(env: Env) -> None:
        await env.cluster.create_topic("lp", 2)
        task = asyncio.ensure_future(env.fetch(12, request([("lp", [0, 1])], max_wait_ms=5000, min_bytes=1)))
        await env.parked(task, "lp", 1)
        assert env.cluster.waiters.waiting_on("lp", 0) == 1
        await asyncio.sleep(4.9)  # most of max_wait_ms: still parked
        assert not task.done()
        appended = now()
        await env.append("lp", 1, 2)
        resp = await task
        assert now() == appended, "the append must wake the long poll at once, not its max_wait_ms"
        p0, p1 = partitions(resp)
        assert p0.records == b"" and offsets(p1.records) == [0, 1]
        assert env.cluster.waiters.waiting_on("lp", 1) == 0
    run(go)


def test_long_poll_keeps_waiting_until_min_bytes() -> None:
    """An append that brings fewer than min_bytes does not end the wait; a later one that reaches it does."""
    async def go(env: Env) -> None:
        await env.cluster.create_topic("mbw", 1)
        task = asyncio.ensure_future(env.fetch(12, request([("mbw", [0])], max_wait_ms=5000, min_bytes=400)))
        await env.parked(task, "mbw", 0)
        await env.append("mbw", 0, 1, size=50)
        await asyncio.sleep(1)  # the woken fetch has read again (virtual time: instant)
        assert not task.done(), "fewer than min_bytes must not answer"
        assert env.cluster.waiters.waiting_on("mbw", 0) == 1, "the fetch must wait again after a short read"
        appended = now()
        await env.append("mbw", 0, 1, size=400)
        (p,) = partitions(await task)
        assert now() == appended, "reaching min_bytes answers at once"
        assert offsets(p.records) == [0, 1]
    run(go)


def test_long_poll_times_out_empty_after_max_wait() -> None:
    """Nothing arrives: the answer comes exactly when max_wait_ms has passed (still parked just before),
    empty, and the waiter is gone."""
    async def go(env: Env) -> None:
        await env.cluster.create_topic("to", 1)
        started = now()
        task = asyncio.ensure_future(env.fetch(12, request([("to", [0])], max_wait_ms=300, min_bytes=1)))
        await env.parked(task, "to", 0)
        await asyncio.sleep(started + 0.299 - now())
        assert not task.done(), "answered before max_wait_ms"
        (p,) = partitions(await task)
        assert now() - started == pytest.approx(0.3), "answered at max_wait_ms, on the request's own timer"
        assert (p.error_code, p.records, p.high_watermark) == (0, b"", 0)
        assert env.cluster.waiters.waiting_on("to", 0) == 0
    run(go)


def test_immediate_answers_without_waiting() -> None:
    """max_wait_ms 0, a request with no known partition, or a partition error answer at once, whatever
    min_bytes says (ReplicaManager.fetchMessages)."""
    async def go(env: Env) -> None:
        await env.cluster.create_topic("im", 2)
        await env.append("im", 1, 1)
        cases = [request([("im", [0])], max_wait_ms=0, min_bytes=1),
                 request([("absent", [0])], max_wait_ms=5000, min_bytes=1),
                 request([("im", [0])], max_wait_ms=5000, min_bytes=1, offset=7)]
        for body in cases:
            started = now()
            await env.fetch(12, body)
            assert now() == started, f"waited for {body}"
    run(go, auto_create_topics_enable=False)


def test_cancelled_long_poll_unregisters_its_waiter() -> None:
    """A connection closing cancels the handler: the waiter must not stay registered."""
    async def go(env: Env) -> None:
        await env.cluster.create_topic("cx", 1)
        task = asyncio.ensure_future(env.fetch(12, request([("cx", [0])], max_wait_ms=5000, min_bytes=1)))
        await env.parked(task, "cx", 0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert env.cluster.waiters.waiting_on("cx", 0) == 0
    run(go)


def test_topic_deleted_during_long_poll_answers_unknown_topic() -> None:
    async def go(env: Env) -> None:
        await env.cluster.create_topic("gone", 1)
        task = asyncio.ensure_future(env.fetch(12, request([("gone", [0])], max_wait_ms=5000, min_bytes=1)))
        await env.parked(task, "gone", 0)
        deleted = now()
        await env.cluster.delete_topic("gone")
        (p,) = partitions(await task)
        assert now() == deleted, "the deletion wakes the long poll"
        assert p.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    run(go)


def test_session_created_and_used_incrementally() -> None:
    """v12: epoch 0 creates a session; epoch 1 with no news answers no partitions; after an append
    only the partition with data is in the response; wrong ids/epochs are top-level errors."""
    async def go(env: Env) -> None:
        await env.cluster.create_topic("s", 2)
        await env.append("s", 0, 1)
        first = await env.fetch(12, request([("s", [0, 1])], session_id=0, session_epoch=0))
        sid = first.session_id
        assert sid != 0 and len(partitions(first)) == 2
        body = request([("s", [0])], offset=1, session_id=sid, session_epoch=1)
        quiet = await env.fetch(12, body)
        assert (quiet.error_code, quiet.session_id, quiet.responses) == (0, sid, [])
        await env.append("s", 1, 2)
        news = await env.fetch(12, request([], session_id=sid, session_epoch=2))
        (p,) = partitions(news)
        assert p.partition_index == 1 and offsets(p.records) == [0, 1]
        stale = await env.fetch(12, request([], session_id=sid, session_epoch=2))
        assert (stale.error_code, stale.session_id) == (ErrorCode.INVALID_FETCH_SESSION_EPOCH, 0)
        unknown = await env.fetch(12, request([], session_id=sid + 1, session_epoch=1))
        assert unknown.error_code == ErrorCode.FETCH_SESSION_ID_NOT_FOUND
        closed = await env.fetch(12, request([("s", [0])], session_id=sid, session_epoch=-1))
        assert closed.session_id == 0 and len(partitions(closed)) == 1
        after = await env.fetch(12, request([], session_id=sid, session_epoch=3))
        assert after.error_code == ErrorCode.FETCH_SESSION_ID_NOT_FOUND
    run(go)


def test_incremental_session_long_polls_on_all_session_partitions() -> None:
    """An incremental request naming no partition still waits on the session's partitions."""
    async def go(env: Env) -> None:
        await env.cluster.create_topic("sl", 2)
        sid = (await env.fetch(12, request([("sl", [0, 1])], session_epoch=0))).session_id
        task = asyncio.ensure_future(env.fetch(12, request([], session_id=sid, session_epoch=1,
                                                           max_wait_ms=5000, min_bytes=1)))
        await env.parked(task, "sl", 0)
        assert env.cluster.waiters.waiting_on("sl", 1) == 1
        appended = now()
        await env.append("sl", 1, 1)
        (p,) = partitions(await task)
        assert now() == appended, "the append to a session partition wakes the long poll"
        assert p.partition_index == 1
    run(go)


def test_session_topic_ids_and_inconsistent_topic_id() -> None:
    """A v13 session keeps the name it resolved; if the topic is re-created under that name the ids
    differ -> INCONSISTENT_TOPIC_ID. Using the session at v12 -> FETCH_SESSION_TOPIC_ID_ERROR."""
    async def go(env: Env) -> None:
        topic = await env.cluster.create_topic("re", 1)
        sid = (await env.fetch(13, request([(topic.topic_id, [0])], version=13, session_epoch=0))).session_id
        assert (await env.fetch(12, request([], session_id=sid, session_epoch=1))).error_code == \
            ErrorCode.FETCH_SESSION_TOPIC_ID_ERROR
        await env.cluster.delete_topic("re")
        await env.cluster.create_topic("re", 1)
        resp = await env.fetch(13, request([], version=13, session_id=sid, session_epoch=1))
        (p,) = partitions(resp)
        assert resp.responses[0].topic_id == topic.topic_id
        assert p.error_code == ErrorCode.INCONSISTENT_TOPIC_ID
    run(go)


def test_follower_replica_id_is_refused() -> None:
    """replica_id >= 0 (v4-14) or replica_state.replica_id >= 0 (v15+): this node has no followers."""
    async def go(env: Env) -> None:
        topic = await env.cluster.create_topic("f", 1)
        (p,) = partitions(await env.fetch(12, request([("f", [0])], replica_id=2)))
        assert p.error_code == ErrorCode.NOT_LEADER_OR_FOLLOWER
        body = request([(topic.topic_id, [0])], version=15, replica_state=Req.ReplicaState(replica_id=2))
        body.topics[0].partitions[0].current_leader_epoch = 0
        (p,) = partitions(await env.fetch(15, body))
        assert p.error_code == ErrorCode.UNKNOWN_LEADER_EPOCH
    run(go)


def test_cluster_id_and_isolation_level_checks() -> None:
    """cluster_id (v12+) other than ours -> INCONSISTENT_CLUSTER_ID; ours or null is fine. An unknown
    isolation level -> INVALID_REQUEST at the top level and per partition."""
    async def go(env: Env) -> None:
        await env.cluster.create_topic("c", 1)
        bad = await env.fetch(12, request([("c", [0])], cluster_id="other"))
        assert (bad.error_code, bad.responses) == (ErrorCode.INCONSISTENT_CLUSTER_ID, [])
        good = await env.fetch(12, request([("c", [0])], cluster_id=CLUSTER_ID))
        assert good.error_code == 0 and partitions(good)[0].error_code == 0
        iso = await env.fetch(12, request([("c", [0])], isolation_level=2))
        assert iso.error_code == ErrorCode.INVALID_REQUEST
        assert partitions(iso)[0].error_code == ErrorCode.INVALID_REQUEST
    run(go)


def test_topics_are_grouped_by_consecutive_runs() -> None:
    """Kafka groups response partitions into one topic entry per run of the same topic, in order."""
    async def go(env: Env) -> None:
        await env.cluster.create_topic("a", 2)
        await env.cluster.create_topic("b", 1)
        body = Req(topics=[Req.FetchTopic(topic="a", partitions=[Req.FetchPartition(partition=0)]),
                           Req.FetchTopic(topic="b", partitions=[Req.FetchPartition(partition=0)]),
                           Req.FetchTopic(topic="a", partitions=[Req.FetchPartition(partition=1)])])
        resp = await env.fetch(12, body)
        assert [(t.topic, [p.partition_index for p in t.partitions]) for t in resp.responses] == [
            ("a", [0]), ("b", [0]), ("a", [1])]
    run(go)


def test_disabled_session_cache_answers_session_id_zero() -> None:
    """With no cache slots an epoch-0 fetch is answered in full with session id 0."""
    async def go(env: Env) -> None:
        from broker.handlers.fetch import session_cache

        session_cache(env.broker).max_entries = 0
        await env.cluster.create_topic("ns", 1)
        resp = await env.fetch(12, request([("ns", [0])], session_epoch=0))
        assert resp.session_id == 0 and len(partitions(resp)) == 1
    run(go)
