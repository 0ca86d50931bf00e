"""The group coordinator over the wire: raw JoinGroup/SyncGroup/Heartbeat/LeaveGroup, OffsetCommit/
OffsetFetch/OffsetDelete and ListGroups/DescribeGroups/DeleteGroups requests against the real broker
process, their error paths and bad input, and the durability of an acknowledged OffsetCommit across
``kill -9``.

One broker (``group.initial.rebalance.delay.ms=0``, ``group.min.session.timeout.ms=1000``) serves the
module; every test uses its own group and topic names. After each test a fresh confluent-kafka consumer
must still join a new group, consume and commit: whatever a test threw at the coordinator must not have
broken it. Real-client coverage lives in ``test_groups_clients.py``.
"""

from __future__ import annotations

import struct
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from protocol import codec, messages
from protocol.errors import ErrorCode
from protocol.primitives import INT64_MAX, INT64_MIN
from protocol.records import Record, build_batch
from tests.compat.conftest import BrokerProcess, KafkaSocket, finish
from tests.compat.test_produce import Client as ProduceClient
from tests.waiting import Pending, answered_yet, wait_until

E = ErrorCode
OFFSET_COMMIT, OFFSET_FETCH, JOIN_GROUP, HEARTBEAT, LEAVE_GROUP, SYNC_GROUP = 8, 9, 11, 12, 13, 14
DESCRIBE_GROUPS, LIST_GROUPS, CREATE_TOPICS, DELETE_GROUPS, OFFSET_DELETE = 15, 16, 19, 42, 47
TIMEOUT_S = 15.0
SESSION_MS = 6000

_JOIN = messages.JoinGroupRequest
_SYNC = messages.SyncGroupRequest
_LEAVE = messages.LeaveGroupRequest
_COMMIT = messages.OffsetCommitRequest
_FETCH = messages.OffsetFetchRequest
_DEL = messages.OffsetDeleteRequest

RawSocket = Callable[[BrokerProcess], KafkaSocket]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def subscription(*topics: str) -> bytes:
    return codec.encode_versioned("ConsumerProtocolSubscription", 1,
                                  messages.ConsumerProtocolSubscription(topics=list(topics)))


class Client(ProduceClient):
    """A raw connection with group calls; ``begin``/``finish`` split a request that parks (JoinGroup,
    SyncGroup) so that another connection can act meanwhile."""

    def begin(self, api_key: int, version: int, body: Any, client_id: str = "moldau-compat") -> tuple[int, int, int]:
        self.correlation_id += 1
        self.sock.send_request(api_key, version, self.correlation_id, body, client_id)
        return api_key, version, self.correlation_id

    def finish(self, pending: tuple[int, int, int]) -> Any:
        return self.sock.read_response(*pending)

    def create_topic(self, name: str, partitions: int = 1) -> None:
        req = messages.CreateTopicsRequest
        answer = self.call(CREATE_TOPICS, 5, req(timeout_ms=5000, topics=[
            req.CreatableTopic(name=name, num_partitions=partitions, replication_factor=1)]))
        assert answer.topics[0].error_code == 0, answer

    @staticmethod
    def join_request(group: str, member_id: str = "", topics: tuple[str, ...] = ("t",), *,
                     instance: str | None = None, session: int = SESSION_MS, rebalance: int = 10_000,
                     protocol_type: str = "consumer", protocols: list[tuple[str, bytes]] | None = None) -> Any:
        if protocols is None:
            protocols = [("range", subscription(*topics))]
        return _JOIN(group_id=group, session_timeout_ms=session, rebalance_timeout_ms=rebalance, member_id=member_id,
                     group_instance_id=instance, protocol_type=protocol_type,
                     protocols=[_JOIN.JoinGroupRequestProtocol(name=n, metadata=md) for n, md in protocols])

    def join(self, group: str, member_id: str = "", version: int = 5, **kw: Any) -> Any:
        """JoinGroup that returns once answered (v4+ MEMBER_ID_REQUIRED is answered at once)."""
        return self.call(JOIN_GROUP, version, self.join_request(group, member_id, **kw))

    def join_new(self, group: str, version: int = 5, **kw: Any) -> Any:
        """A new dynamic member's full join: MEMBER_ID_REQUIRED, then the join with the id given."""
        first = self.join(group, version=version, **kw)
        assert first.error_code == E.MEMBER_ID_REQUIRED, first
        return self.join(group, first.member_id, version=version, **kw)

    def sync(self, group: str, generation: int, member_id: str, assignments: dict[str, bytes] | None = None,
             version: int = 3, instance: str | None = None, **kw: Any) -> Any:
        return self.call(SYNC_GROUP, version, _SYNC(
            group_id=group, generation_id=generation, member_id=member_id, group_instance_id=instance,
            assignments=[_SYNC.SyncGroupRequestAssignment(member_id=m, assignment=a)
                         for m, a in (assignments or {}).items()], **kw))

    def heartbeat(self, group: str, generation: int, member_id: str, version: int = 3,
                  instance: str | None = None) -> int:
        return self.call(HEARTBEAT, version, messages.HeartbeatRequest(
            group_id=group, generation_id=generation, member_id=member_id, group_instance_id=instance)).error_code

    def commit(self, group: str, offsets: dict[tuple[str, int], int], generation: int = -1, member_id: str = "",
               version: int = 8, metadata: str = "", instance: str | None = None,
               retention_time_ms: int = -1) -> dict[tuple[str, int], int]:
        by_topic: dict[str, list[Any]] = {}
        for (topic, partition), offset in offsets.items():
            by_topic.setdefault(topic, []).append(_COMMIT.OffsetCommitRequestPartition(
                partition_index=partition, committed_offset=offset, committed_metadata=metadata))
        answer = self.call(OFFSET_COMMIT, version, _COMMIT(
            group_id=group, generation_id_or_member_epoch=generation, member_id=member_id,
            group_instance_id=instance, retention_time_ms=retention_time_ms,
            topics=[_COMMIT.OffsetCommitRequestTopic(name=t, partitions=ps) for t, ps in by_topic.items()]))
        return {(t.name, p.partition_index): p.error_code for t in answer.topics for p in t.partitions}

    def fetch(self, group: str, partitions: list[tuple[str, int]] | None, version: int = 7) -> Any:
        topics = None
        if partitions is not None:
            by_topic: dict[str, list[int]] = {}
            for topic, partition in partitions:
                by_topic.setdefault(topic, []).append(partition)
            topics = [_FETCH.OffsetFetchRequestTopic(name=t, partition_indexes=ps) for t, ps in by_topic.items()]
        return self.call(OFFSET_FETCH, version, _FETCH(group_id=group, topics=topics))

    def committed(self, group: str, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        answer = self.fetch(group, partitions)
        assert answer.error_code == 0, answer
        return {(t.name, p.partition_index): p.committed_offset for t in answer.topics for p in t.partitions}

    def describe(self, *groups: str, version: int = 5) -> list[Any]:
        return self.call(DESCRIBE_GROUPS, version, messages.DescribeGroupsRequest(groups=list(groups))).groups


def stable_member(client: Client, group: str, **kw: Any) -> tuple[str, int]:
    """A one-member group, joined and synced; returns (member id, generation)."""
    joined = client.join_new(group, **kw) if kw.get("instance") is None else client.join(group, **kw)
    assert joined.error_code == 0, joined
    synced = client.sync(group, joined.generation_id, joined.member_id, {joined.member_id: b"ASSIGNED"},
                         instance=kw.get("instance"))
    assert synced.error_code == 0 and bytes(synced.assignment) == b"ASSIGNED"
    return joined.member_id, joined.generation_id


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def group_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(["--set", "group.initial.rebalance.delay.ms=0", "--set", "group.min.session.timeout.ms=1000"],
                         tmp_path_factory.mktemp("group-broker"))
    yield proc
    finish(proc)


@pytest.fixture(scope="module")
def check_topic(group_broker: BrokerProcess) -> str:
    """A topic with one record that the fresh-consumer check reads."""
    sock = KafkaSocket(group_broker.host, group_broker.port)
    try:
        client = Client(sock)
        name = unique("fresh-check")
        client.create_topic(name)
        assert client.produce(name, build_batch([Record(0, int(time.time() * 1000), b"k", b"v")])).error_code == 0
    finally:
        sock.close()
    return name


@pytest.fixture
def client(group_broker: BrokerProcess, raw_socket: RawSocket, check_topic: str) -> Iterator[Client]:
    yield Client(raw_socket(group_broker))
    assert_fresh_consumer_works(group_broker, check_topic)


@pytest.fixture
def other(group_broker: BrokerProcess, raw_socket: RawSocket) -> Client:
    return Client(raw_socket(group_broker))


def assert_fresh_consumer_works(broker: BrokerProcess, topic: str) -> None:
    """A new confluent-kafka consumer joins a new group, reads the record and commits it."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("fresh"),
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + TIMEOUT_S
        message = None
        while message is None and time.monotonic() < deadline:
            polled = consumer.poll(0.5)
            if polled is not None and polled.error() is None:
                message = polled
        assert message is not None, "a fresh consumer got no record: the coordinator looks broken"
        consumer.commit(message=message, asynchronous=False)
        [committed] = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        assert committed.offset == 1
    finally:
        consumer.close()


# ---------------------------------------------------------------- membership


@pytest.mark.parametrize(("join_v", "sync_v", "beat_v", "leave_v", "commit_v", "fetch_v"), [
    (0, 0, 0, 0, 2, 1), (3, 2, 2, 2, 5, 4), (5, 3, 3, 3, 7, 7), (9, 5, 4, 5, 9, 9)])
def test_one_member_lifecycle_on_the_wire(client: Client, join_v: int, sync_v: int, beat_v: int, leave_v: int,
                                          commit_v: int, fetch_v: int) -> None:
    """Join, sync, heartbeat, commit, fetch and leave across old and new versions of each API."""
    group, topic = unique("life"), unique("life-t")
    client.create_topic(topic)
    joined = client.join_new(group, version=join_v, topics=(topic,)) if join_v >= 4 else \
        client.join(group, version=join_v, topics=(topic,))
    assert (joined.error_code, joined.generation_id, joined.leader) == (0, 1, joined.member_id)
    member = joined.member_id
    sync_kw = {"protocol_type": "consumer", "protocol_name": "range"} if sync_v >= 5 else {}
    synced = client.sync(group, 1, member, {member: b"A"}, version=sync_v, **sync_kw)
    assert (synced.error_code, bytes(synced.assignment)) == (0, b"A")
    assert client.heartbeat(group, 1, member, version=beat_v) == 0
    assert client.commit(group, {(topic, 0): 5}, 1, member, version=commit_v) == {(topic, 0): 0}
    if fetch_v >= 8:
        answer = client.call(OFFSET_FETCH, fetch_v, _FETCH(groups=[_FETCH.OffsetFetchRequestGroup(
            group_id=group, topics=[_FETCH.OffsetFetchRequestTopics(name=topic, partition_indexes=[0])])]))
        assert answer.groups[0].topics[0].partitions[0].committed_offset == 5
    else:
        assert client.fetch(group, [(topic, 0)], version=fetch_v).topics[0].partitions[0].committed_offset == 5
    leave = _LEAVE(group_id=group, member_id=member) if leave_v < 3 else \
        _LEAVE(group_id=group, members=[_LEAVE.MemberIdentity(member_id=member)])
    assert client.call(LEAVE_GROUP, leave_v, leave).error_code == 0
    [described] = client.describe(group)
    assert (described.group_state, described.members) == ("Empty", [])


def test_second_member_triggers_a_rebalance_and_followers_wait_for_the_leader(client: Client, other: Client) -> None:
    """A new member starts a rebalance: the existing member hears REBALANCE_IN_PROGRESS, rejoins, and both
    get generation 2 (the leader with the member list); the follower's SyncGroup parks until the leader
    sends the assignment."""
    group = unique("rebalance")
    a, _ = stable_member(client, group)
    first = other.join(group)
    assert first.error_code == E.MEMBER_ID_REQUIRED
    pending_b = other.begin(JOIN_GROUP, 5, other.join_request(group, first.member_id))
    # The join travels on another connection.
    wait_until(lambda: client.heartbeat(group, 1, a) == E.REBALANCE_IN_PROGRESS, TIMEOUT_S,
               "the second member's JoinGroup starting a rebalance")
    rejoined = client.join(group, a)
    joined_b = other.finish(pending_b)
    assert rejoined.generation_id == joined_b.generation_id == 2
    assert rejoined.leader == joined_b.leader == a
    assert sorted(m.member_id for m in rejoined.members) == sorted([a, joined_b.member_id]) and joined_b.members == []
    pending_sync = other.begin(SYNC_GROUP, 3, _SYNC(group_id=group, generation_id=2, member_id=joined_b.member_id))
    # A request sent after the follower's SyncGroup is answered, and the SyncGroup is not: it is parked
    # until the leader syncs.
    [described] = client.describe(group)
    assert described.group_state == "CompletingRebalance"
    assert not answered_yet(other.sock.sock), "the follower's SyncGroup answered before the leader's"
    leader_sync = client.sync(group, 2, a, {a: b"for-a", joined_b.member_id: b"for-b"})
    assert bytes(leader_sync.assignment) == b"for-a"
    follower = other.finish(pending_sync)
    assert (follower.error_code, bytes(follower.assignment)) == (0, b"for-b")


def test_join_group_errors(client: Client, other: Client) -> None:
    """JoinGroup: INVALID_GROUP_ID, INVALID_SESSION_TIMEOUT (below group.min.session.timeout.ms, above
    group.max.session.timeout.ms), UNKNOWN_MEMBER_ID (a member id for an unknown group),
    INCONSISTENT_GROUP_PROTOCOL (no protocol type, another type, no common protocol), MEMBER_ID_REQUIRED."""
    group = unique("join-err")
    assert client.join("").error_code == E.INVALID_GROUP_ID
    assert client.join(group, session=999).error_code == E.INVALID_SESSION_TIMEOUT
    assert client.join(group, session=1_800_001).error_code == E.INVALID_SESSION_TIMEOUT
    unknown = client.join(unique("nogroup"), "made-up-member")
    assert (unknown.error_code, unknown.member_id) == (E.UNKNOWN_MEMBER_ID, "made-up-member")
    assert client.join(group, protocol_type="").error_code == E.INCONSISTENT_GROUP_PROTOCOL
    required = client.join(group, version=4)
    assert required.error_code == E.MEMBER_ID_REQUIRED and required.member_id.startswith("moldau-compat-")
    stable_member(client, group)
    assert other.join(group, protocol_type="connect", version=3).error_code == E.INCONSISTENT_GROUP_PROTOCOL
    assert other.join(group, protocols=[("sticky", b"")], version=3).error_code == E.INCONSISTENT_GROUP_PROTOCOL


def test_sync_group_errors(client: Client, other: Client) -> None:
    """SyncGroup: INVALID_GROUP_ID, UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION, INCONSISTENT_GROUP_PROTOCOL
    (v5 protocol type or name), REBALANCE_IN_PROGRESS."""
    group = unique("sync-err")
    assert client.sync("", 1, "m").error_code == E.INVALID_GROUP_ID
    assert client.sync(group, 1, "m").error_code == E.UNKNOWN_MEMBER_ID
    member, generation = stable_member(client, group)
    assert client.sync(group, generation, "stranger").error_code == E.UNKNOWN_MEMBER_ID
    assert client.sync(group, generation + 1, member).error_code == E.ILLEGAL_GENERATION
    assert client.sync(group, generation, member, version=5, protocol_type="other",
                       protocol_name="range").error_code == E.INCONSISTENT_GROUP_PROTOCOL
    assert client.sync(group, generation, member, version=5, protocol_type="consumer",
                       protocol_name="roundrobin").error_code == E.INCONSISTENT_GROUP_PROTOCOL
    newcomer = other.join(group)
    pending = other.begin(JOIN_GROUP, 5, other.join_request(group, newcomer.member_id))  # starts a rebalance

    def sync_error() -> int | Pending:
        error = client.sync(group, generation, member).error_code
        return error if error != 0 else Pending(error)

    error = wait_until(sync_error, TIMEOUT_S, "the newcomer's JoinGroup starting a rebalance")
    assert error == E.REBALANCE_IN_PROGRESS
    assert client.join(group, member).generation_id == other.finish(pending).generation_id == generation + 1


def test_heartbeat_errors_and_session_expiry(client: Client) -> None:
    """Heartbeat: INVALID_GROUP_ID, UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION; a member that stops
    heartbeating is gone after its session timeout (FENCED_INSTANCE_ID: see the static member test)."""
    group = unique("beat-err")
    assert client.heartbeat("", 1, "m") == E.INVALID_GROUP_ID
    assert client.heartbeat(group, 1, "m") == E.UNKNOWN_MEMBER_ID
    member, generation = stable_member(client, group, session=1000)
    assert client.heartbeat(group, generation, member) == 0
    assert client.heartbeat(group, generation + 1, member) == E.ILLEGAL_GENERATION
    assert client.heartbeat(group, generation, "stranger") == E.UNKNOWN_MEMBER_ID
    # The session (1 s) expires on the broker's timer: wait for its effect.
    wait_until(lambda: not client.describe(group)[0].members, TIMEOUT_S, "the member's session expiring",
               lambda: f"group {client.describe(group)[0]}")
    [described] = client.describe(group)
    assert (described.group_state, described.members) == ("Empty", [])
    assert client.heartbeat(group, generation, member) == E.UNKNOWN_MEMBER_ID


def test_fenced_instance_id_everywhere(client: Client, other: Client) -> None:
    """KIP-345: a static member that rejoins (new process, same group.instance.id) while Stable keeps its
    assignment and generation without a rebalance; the old member id is fenced: FENCED_INSTANCE_ID on
    Heartbeat, SyncGroup, JoinGroup, OffsetCommit and LeaveGroup."""
    group, topic = unique("static"), unique("static-t")
    client.create_topic(topic)
    old, generation = stable_member(client, group, instance="inst", topics=(topic,))
    rejoined = other.join(group, instance="inst", topics=(topic,))
    assert rejoined.error_code == 0 and rejoined.member_id != old
    assert rejoined.generation_id == generation  # no rebalance
    synced = other.sync(group, generation, rejoined.member_id, instance="inst")
    assert bytes(synced.assignment) == b"ASSIGNED"
    assert client.heartbeat(group, generation, old, instance="inst") == E.FENCED_INSTANCE_ID
    assert client.sync(group, generation, old, instance="inst").error_code == E.FENCED_INSTANCE_ID
    assert client.join(group, old, instance="inst", topics=(topic,)).error_code == E.FENCED_INSTANCE_ID
    assert client.commit(group, {(topic, 0): 1}, generation, old, instance="inst") == {(topic, 0): E.FENCED_INSTANCE_ID}
    left = client.call(LEAVE_GROUP, 4, _LEAVE(group_id=group, members=[
        _LEAVE.MemberIdentity(member_id=old, group_instance_id="inst")]))
    assert [(m.member_id, m.error_code) for m in left.members] == [(old, E.FENCED_INSTANCE_ID)]
    assert other.heartbeat(group, generation, rejoined.member_id, instance="inst") == 0


def test_leave_group_single_and_batched(client: Client, other: Client) -> None:
    """LeaveGroup v0-2: one member, its error at top level; v3+: per-member results, removal by instance
    id alone; an unknown group answers UNKNOWN_MEMBER_ID per member; INVALID_GROUP_ID for an empty id."""
    group = unique("leave")
    assert client.call(LEAVE_GROUP, 1, _LEAVE(group_id=group, member_id="x")).error_code == E.UNKNOWN_MEMBER_ID
    unknown = client.call(LEAVE_GROUP, 3, _LEAVE(group_id=group, members=[_LEAVE.MemberIdentity(member_id="x")]))
    assert (unknown.error_code, [m.error_code for m in unknown.members]) == (0, [E.UNKNOWN_MEMBER_ID])
    empty = client.call(LEAVE_GROUP, 5, _LEAVE(group_id="", members=[_LEAVE.MemberIdentity(member_id="x")]))
    assert (empty.error_code, empty.members) == (E.INVALID_GROUP_ID, [])
    stable_member(client, group, instance="i1", version=5)
    answer = client.call(LEAVE_GROUP, 5, _LEAVE(group_id=group, members=[
        _LEAVE.MemberIdentity(member_id="", group_instance_id="i1", reason="admin"),
        _LEAVE.MemberIdentity(member_id="", group_instance_id="nope")]))
    assert [(m.group_instance_id, m.error_code) for m in answer.members] == [("i1", 0), ("nope", E.UNKNOWN_MEMBER_ID)]
    assert client.describe(group)[0].members == []


def test_group_max_size(start_broker: Callable[..., BrokerProcess], raw_socket: RawSocket) -> None:
    """group.max.size: a member beyond it gets GROUP_MAX_SIZE_REACHED; the members in the group carry on."""
    broker = start_broker("--set", "group.max.size=1", "--set", "group.initial.rebalance.delay.ms=0")
    first, second = Client(raw_socket(broker)), Client(raw_socket(broker))
    group = unique("max")
    member, generation = stable_member(first, group)
    refused = second.join(group, version=3)
    assert (refused.error_code, refused.member_id) == (E.GROUP_MAX_SIZE_REACHED, "")
    assert first.heartbeat(group, generation, member) == 0


# ---------------------------------------------------------------- offsets


def test_offset_commit_errors(client: Client, other: Client) -> None:
    """OffsetCommit per partition: UNKNOWN_TOPIC_OR_PARTITION, OFFSET_METADATA_TOO_LARGE (4096 is the
    limit), ILLEGAL_GENERATION (unknown group or wrong generation), UNKNOWN_MEMBER_ID,
    REBALANCE_IN_PROGRESS between JoinGroup and SyncGroup; simple commits (generation -1) to a group
    without members work."""
    group, topic = unique("commit-err"), unique("commit-t")
    client.create_topic(topic, 2)
    assert client.commit(group, {(topic, 0): 3, (topic, 7): 3, ("no-such-topic", 0): 3}) == {
        (topic, 0): 0, (topic, 7): E.UNKNOWN_TOPIC_OR_PARTITION, ("no-such-topic", 0): E.UNKNOWN_TOPIC_OR_PARTITION}
    assert client.commit(group, {(topic, 1): 3}, metadata="m" * 4096) == {(topic, 1): 0}
    assert client.commit(group, {(topic, 1): 4}, metadata="m" * 4097) == {(topic, 1): E.OFFSET_METADATA_TOO_LARGE}
    assert client.committed(group, [(topic, 0), (topic, 1)]) == {(topic, 0): 3, (topic, 1): 3}
    assert client.commit(unique("nogroup"), {(topic, 0): 1}, 3, "m") == {(topic, 0): E.ILLEGAL_GENERATION}
    managed = unique("commit-managed")
    joined = other.join_new(managed)
    assert other.commit(managed, {(topic, 0): 1}, 1, joined.member_id) == {(topic, 0): E.REBALANCE_IN_PROGRESS}
    other.sync(managed, 1, joined.member_id, {joined.member_id: b""})
    assert other.commit(managed, {(topic, 0): 1}, 2, joined.member_id) == {(topic, 0): E.ILLEGAL_GENERATION}
    assert other.commit(managed, {(topic, 0): 1}, 1, "stranger") == {(topic, 0): E.UNKNOWN_MEMBER_ID}
    assert other.commit(managed, {(topic, 0): 1}) == {(topic, 0): E.UNKNOWN_MEMBER_ID}
    assert other.commit(managed, {(topic, 0): 1}, 1, joined.member_id) == {(topic, 0): 0}


def test_oversized_member_metadata_fails_the_rebalance_only(client: Client) -> None:
    """Member metadata too large for a __consumer_offsets record (over max.message.bytes, 1048588): Kafka's
    group write fails and SyncGroup answers UNKNOWN_SERVER_ERROR; nothing else is disturbed and the same
    member can rejoin with normal metadata."""
    group = unique("big-meta")
    joined = client.join_new(group, protocols=[("range", b"\x00" * 1_200_000)])
    assert joined.error_code == 0, joined
    synced = client.sync(group, joined.generation_id, joined.member_id, {joined.member_id: b"A"})
    assert synced.error_code == E.UNKNOWN_SERVER_ERROR, synced
    again = client.join(group, joined.member_id)
    assert again.error_code == 0, again
    synced = client.sync(group, again.generation_id, again.member_id, {again.member_id: b"B"})
    assert synced.error_code == 0 and bytes(synced.assignment) == b"B"


def test_offset_commit_too_large_for_one_record_batch(client: Client) -> None:
    """A commit whose records exceed max.message.bytes of __consumer_offsets gets INVALID_COMMIT_OFFSET_SIZE
    for every partition (as Kafka answers), and commits nothing."""
    group, topic = unique("commit-big"), unique("commit-big-t")
    client.create_topic(topic, 300)
    offsets = {(topic, p): 1 for p in range(300)}
    assert set(client.commit(group, offsets, metadata="m" * 4000).values()) == {E.INVALID_COMMIT_OFFSET_SIZE}
    assert client.committed(group, [(topic, 0)]) == {(topic, 0): -1}
    assert client.commit(group, {(topic, 0): 5}) == {(topic, 0): 0}


@pytest.mark.parametrize("retention_time_ms", [INT64_MAX, INT64_MIN, 60_000])
def test_offset_commit_with_any_retention_time_is_stored(client: Client, retention_time_ms: int) -> None:
    """OffsetCommit v2-v4 carry retention_time_ms, an int64 the client chooses: the expiry (now plus it)
    is kept within int64, so a boundary value is committed like any other (fuzzing found 2^63-1 failing the
    commit with a traceback). 2^63-1 never expires; -2^63 is an expiry in the past, which the next
    expiration pass removes."""
    group, topic = unique("commit-retention"), unique("commit-retention-t")
    client.create_topic(topic, 1)
    assert client.commit(group, {(topic, 0): 7}, version=3, retention_time_ms=retention_time_ms) == {(topic, 0): 0}
    assert client.committed(group, [(topic, 0)]) == {(topic, 0): 7}


def test_offset_fetch_versions_and_unknown_partitions(client: Client) -> None:
    """OffsetFetch: -1 / "" for partitions without a commit (no error); null topics list every committed
    partition; v8 answers several groups."""
    group, topic = unique("fetch"), unique("fetch-t")
    client.create_topic(topic, 3)
    client.commit(group, {(topic, 2): 20, (topic, 0): 10}, metadata="md")
    v1 = client.fetch(group, [(topic, 1)], version=1).topics[0].partitions[0]
    assert (v1.committed_offset, v1.metadata, v1.error_code) == (-1, "", 0)
    everything = client.fetch(group, None, version=6)
    assert [(p.partition_index, p.committed_offset, p.metadata) for p in everything.topics[0].partitions] == [
        (0, 10, "md"), (2, 20, "md")]
    answer = client.call(OFFSET_FETCH, 8, _FETCH(groups=[
        _FETCH.OffsetFetchRequestGroup(group_id=group, topics=None),
        _FETCH.OffsetFetchRequestGroup(group_id=unique("empty"), topics=[
            _FETCH.OffsetFetchRequestTopics(name=topic, partition_indexes=[0])])], require_stable=True))
    first, second = answer.groups
    assert [p.committed_offset for p in first.topics[0].partitions] == [10, 20]
    assert [(p.committed_offset, p.committed_leader_epoch) for p in second.topics[0].partitions] == [(-1, -1)]


def test_offset_delete_errors(client: Client, other: Client) -> None:
    """OffsetDelete: INVALID_GROUP_ID, GROUP_ID_NOT_FOUND (group errors carry no partitions),
    UNKNOWN_TOPIC_OR_PARTITION, GROUP_SUBSCRIBED_TO_TOPIC for a topic the live consumer group subscribes to,
    NONE otherwise (the offset is gone)."""
    topic, loose = unique("del-t"), unique("del-loose")
    client.create_topic(topic)
    client.create_topic(loose)

    def delete(group: str, *pairs: tuple[str, int]) -> Any:
        return client.call(OFFSET_DELETE, 0, _DEL(group_id=group, topics=[
            _DEL.OffsetDeleteRequestTopic(name=t, partitions=[_DEL.OffsetDeleteRequestPartition(partition_index=p)])
            for t, p in pairs]))

    assert (delete("", (topic, 0)).error_code, delete("", (topic, 0)).topics) == (E.INVALID_GROUP_ID, [])
    missing = delete(unique("missing"), (topic, 0))
    assert (missing.error_code, missing.topics) == (E.GROUP_ID_NOT_FOUND, [])
    group = unique("del")
    member, generation = stable_member(other, group, topics=(topic,))
    other.commit(group, {(topic, 0): 5, (loose, 0): 6}, generation, member)
    answer = delete(group, (topic, 0), (loose, 0), ("nope", 0))
    assert answer.error_code == 0
    assert {(t.name, p.error_code) for t in answer.topics for p in t.partitions} == {
        (topic, E.GROUP_SUBSCRIBED_TO_TOPIC), (loose, 0), ("nope", E.UNKNOWN_TOPIC_OR_PARTITION)}
    assert client.committed(group, [(topic, 0), (loose, 0)]) == {(topic, 0): 5, (loose, 0): -1}


# ---------------------------------------------------------------- administration


def test_list_describe_and_delete_groups(client: Client, other: Client) -> None:
    """ListGroups with state (v4) and type (v5) filters; DescribeGroups (unknown groups are Dead, members
    with metadata and assignment when Stable); DeleteGroups: NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND, and an
    Empty group goes with its offsets."""
    topic = unique("admin-t")
    client.create_topic(topic)
    busy, idle = unique("busy"), unique("idle")
    member, _ = stable_member(other, busy, topics=(topic,))
    client.commit(idle, {(topic, 0): 4})
    listed = client.call(LIST_GROUPS, 5, messages.ListGroupsRequest(states_filter=["Stable", "empty"],
                                                                    types_filter=["Classic"])).groups
    mine = {g.group_id: (g.protocol_type, g.group_state, g.group_type) for g in listed if g.group_id in (busy, idle)}
    assert mine == {busy: ("consumer", "Stable", "classic"), idle: ("", "Empty", "classic")}
    only_stable = client.call(LIST_GROUPS, 4, messages.ListGroupsRequest(states_filter=["Stable"])).groups
    assert busy in {g.group_id for g in only_stable} and idle not in {g.group_id for g in only_stable}
    dead, described = client.describe(unique("nobody"), busy)
    assert (dead.error_code, dead.group_state, dead.members) == (0, "Dead", [])
    [m] = described.members
    assert (m.member_id, m.client_id, m.client_host) == (member, "moldau-compat", "/127.0.0.1")
    assert (bytes(m.member_metadata), bytes(m.member_assignment)) == (subscription(topic), b"ASSIGNED")
    results = client.call(DELETE_GROUPS, 2, messages.DeleteGroupsRequest(groups_names=[busy, idle, unique("x")])).results
    assert [r.error_code for r in results] == [E.NON_EMPTY_GROUP, 0, E.GROUP_ID_NOT_FOUND]
    assert client.committed(idle, [(topic, 0)]) == {(topic, 0): -1}


# ---------------------------------------------------------------- bad input


def test_unparseable_subscription_metadata_is_tolerated(client: Client) -> None:
    """Member metadata that is not a ConsumerProtocolSubscription does not break the group; the coordinator
    then counts the consumer group as subscribed to every topic (OffsetDelete refuses)."""
    group, topic = unique("garbage"), unique("garbage-t")
    client.create_topic(topic)
    member, generation = stable_member(client, group, protocols=[("range", b"\xff\xfe\x00")])
    client.commit(group, {(topic, 0): 1}, generation, member)
    answer = client.call(OFFSET_DELETE, 0, _DEL(group_id=group, topics=[_DEL.OffsetDeleteRequestTopic(
        name=topic, partitions=[_DEL.OffsetDeleteRequestPartition(partition_index=0)])]))
    assert answer.topics[0].partitions[0].error_code == E.GROUP_SUBSCRIBED_TO_TOPIC


def test_a_truncated_join_group_closes_only_its_connection(client: Client, other: Client) -> None:
    """A JoinGroup body cut short is a malformed request: the broker closes that connection, and the
    coordinator keeps serving others."""
    frame = b"".join(bytes(p) for p in codec.encode_request(
        JOIN_GROUP, 5, 1, "moldau-compat", Client.join_request(unique("cut"))))
    body = frame[4:-7]
    other.sock.send(struct.pack(">i", len(body)) + body)
    assert other.sock.is_closed_by_peer()
    group = unique("after-cut")
    assert stable_member(client, group)[1] == 1


# ---------------------------------------------------------------- durability


def test_acknowledged_offset_commit_survives_kill_9(tmp_path: Path) -> None:
    """An OffsetCommit that was answered is on disk (acks=all: flushed before the answer): after
    ``kill -9`` and a restart on the same data directory the offset and the group come back (while
    __consumer_offsets loads the coordinator may answer COORDINATOR_LOAD_IN_PROGRESS)."""
    data = tmp_path / "data"
    args = ["--data-dir", str(data), "--set", "group.initial.rebalance.delay.ms=0"]
    first = BrokerProcess(args, tmp_path, memory=False)
    topic, group = unique("durable-t"), unique("durable")
    try:
        client = Client(KafkaSocket(first.host, first.port))
        client.create_topic(topic, 2)
        member, generation = stable_member(client, group, topics=(topic,))
        assert client.commit(group, {(topic, 0): 41, (topic, 1): 7}, generation, member, metadata="ok") == {
            (topic, 0): 0, (topic, 1): 0}
        assert client.commit("simple-" + group, {(topic, 0): 99}) == {(topic, 0): 0}
    finally:
        first.proc.kill()
        first.proc.wait(10)
        first._reader.join(5)
    second = BrokerProcess(args, tmp_path, memory=False)
    try:
        client = Client(KafkaSocket(second.host, second.port))

        def loaded() -> Any:
            answer = client.fetch(group, [(topic, 0), (topic, 1)])
            return answer if answer.error_code != E.COORDINATOR_LOAD_IN_PROGRESS else Pending(answer)

        answer = wait_until(loaded, TIMEOUT_S, "the coordinator loading its groups after the restart")
        assert answer.error_code == 0
        got = {(t.name, p.partition_index): (p.committed_offset, p.metadata) for t in answer.topics
               for p in t.partitions}
        assert got == {(topic, 0): (41, "ok"), (topic, 1): (7, "ok")}
        assert client.committed("simple-" + group, [(topic, 0)]) == {(topic, 0): 99}
        [described] = client.describe(group)
        assert (described.group_state, [m.member_id for m in described.members]) == ("Stable", [member])
        assert client.heartbeat(group, generation, member) == 0  # the restored member carries on
    finally:
        finish(second)
