"""The group coordinator in-process: the asyncio shell (`broker.groups.coordinator`) with a manual clock
over a real in-memory cluster, and the group/offset handlers at every version they serve through an
in-process ``Broker`` (requests and answers encoded and decoded at the version under test).

Each test names the Kafka behaviour it checks.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from broker.cluster import OFFSETS_TOPIC, ClusterState
from broker.config import BrokerConfig
from broker.groups.coordinator import CommitPartition, GroupCoordinator, ManualClock
from broker.groups.persistence import OffsetRecord, decode_record, partition_for
from broker.groups.state import STABLE, JoinRequest, SyncRequest
from broker.server import Broker
from protocol import codec
from protocol import messages as m
from protocol.errors import ErrorCode
from protocol.records import iter_batches, iter_records
from storage.interface import open_engine
from tests.unit.test_config_handlers import call, run
from tests.unit.virtual_clock import idle, run_virtual

E = ErrorCode
OFFSET_COMMIT, OFFSET_FETCH, JOIN_GROUP, HEARTBEAT, LEAVE_GROUP, SYNC_GROUP = 8, 9, 11, 12, 13, 14
DESCRIBE_GROUPS, LIST_GROUPS, DELETE_GROUPS, OFFSET_DELETE = 15, 16, 42, 47
SUBSCRIPTION = codec.encode_versioned("ConsumerProtocolSubscription", 1,
                                      m.ConsumerProtocolSubscription(topics=["t"]))


def settings(**extra: Any) -> BrokerConfig:
    values = {"storage.url": "memory://", "listeners": "127.0.0.1:0", "group.initial.rebalance.delay.ms": 0,
              "offsets.topic.num.partitions": 5}
    values.update({k.replace("_", "."): v for k, v in extra.items()})
    return BrokerConfig.from_settings(values)


class Env:
    """A cluster (memory storage) with topic ``t`` and a manual clock; coordinators come and go on it."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.cluster = ClusterState(open_engine("memory://"), config)
        self.clock = ManualClock()
        self._ids = itertools.count(1)

    @asynccontextmanager
    async def coordinator(self, load: bool = True) -> AsyncIterator[GroupCoordinator]:
        coord = GroupCoordinator(self.cluster, self.config, self.clock, new_uuid=lambda: f"u{next(self._ids)}")
        coord.start()
        if load and coord._load_task is not None:
            await coord._load_task
        try:
            yield coord
        finally:
            await coord.stop()

    async def settle(self, ms: int = 0) -> None:
        """Let every task run as far as it can, move the clock, and again."""
        await idle()
        self.clock.advance(ms)
        await idle()


def scenario(test: Any, **extra: Any) -> None:
    async def main() -> None:
        env = Env(settings(**extra))
        await env.cluster.create_topic("t", 2)
        await asyncio.wait_for(test(env), 20)
    run_virtual(main())


def join_request(member_id: str = "", client: str = "c", instance: str | None = None, **kw: Any) -> JoinRequest:
    return JoinRequest("g", member_id, instance, client, "/127.0.0.1", kw.pop("session", 10_000),
                       kw.pop("rebalance", 60_000), "consumer", (("range", SUBSCRIPTION),), **kw)


async def form_group(env: Env, coord: GroupCoordinator, n: int = 2) -> list[str]:
    """n members joined and synced (Stable); returns their member ids, leader first."""
    joins = [asyncio.ensure_future(coord.join_group(join_request(client=f"c{i}"))) for i in range(n)]
    await env.settle()
    results = [j.result() for j in joins]
    members = [r.member_id for r in results]
    syncs = [asyncio.ensure_future(coord.sync_group(SyncRequest(
        "g", 1, member, None, None, None, tuple((x, x.encode()) for x in members) if i == 0 else ())))
        for i, member in enumerate(members)]
    await env.settle()
    assert [s.result().assignment for s in syncs] == [x.encode() for x in members]
    return members


async def offsets_records(env: Env, group: str) -> list[Any]:
    """Every record of the group's ``__consumer_offsets`` partition, decoded."""
    topic = env.cluster.get(OFFSETS_TOPIC)
    plog = topic.partitions[partition_for(group, len(topic.partitions))].log
    read = await plog.read(plog.log_start_offset, 1 << 20)
    return [decode_record(r.key, r.value) for chunk in read.chunks for _, b in iter_batches(chunk)
            for r in iter_records(b)]


# ---------------------------------------------------------------- the shell


def test_join_and_sync_park_until_the_group_forms_and_the_assignment_is_written() -> None:
    """JoinGroup answers wait for the rebalance timer; followers' SyncGroup waits for the leader's
    assignment to be appended and flushed; the group record lands in the group's partition."""
    async def test(env: Env) -> None:
        async with env.coordinator() as coord:
            a, b = await form_group(env, coord)
            assert coord.state.groups["g"].state is STABLE
            records = await offsets_records(env, "g")
            [group_record] = records
            assert group_record.group == "g" and [x.member_id for x in group_record.value.members] == [a, b]
            assert [x.assignment for x in group_record.value.members] == [a.encode(), b.encode()]
            assert coord.heartbeat("g", b, None, 1) is E.NONE
    scenario(test)


def test_offsets_topic_is_created_on_the_first_write_compacted() -> None:
    """__consumer_offsets appears on the first write, with offsets.topic.num.partitions partitions and
    cleanup.policy=compact; the commit goes to partition abs(hashCode) % partitions."""
    async def test(env: Env) -> None:
        async with env.coordinator() as coord:
            assert env.cluster.get(OFFSETS_TOPIC) is None
            errors = await coord.commit_offsets("simple", -1, "", None, -1, [CommitPartition("t", 1, 42, 3, -1, "m")])
            assert errors == [E.NONE]
            topic = env.cluster.get(OFFSETS_TOPIC)
            assert len(topic.partitions) == 5 and topic.is_internal
            assert env.cluster.config_value(topic, "cleanup.policy") == "compact"
            [record] = await offsets_records(env, "simple")
            assert record == OffsetRecord("simple", "t", 1, record.value)
            assert (record.value.offset, record.value.leader_epoch, record.value.metadata) == (42, 3, "m")
            assert record.value.commit_timestamp == env.clock.now_ms()
            error, fetched = coord.fetch_offsets("simple", None)
            assert error is E.NONE and [(tp, om.offset) for tp, om in fetched] == [(("t", 1), 42)]
    scenario(test)


def test_an_existing_offsets_topic_keeps_its_partition_count() -> None:
    """A __consumer_offsets created elsewhere (here with one partition) is used as it is."""
    async def test(env: Env) -> None:
        await env.cluster.create_topic(OFFSETS_TOPIC, 1)
        async with env.coordinator() as coord:
            assert await coord.commit_offsets("grp", -1, "", None, -1, [CommitPartition("t", 0, 1)]) == [E.NONE]
            assert env.cluster.get(OFFSETS_TOPIC).partitions[0].log.log_end_offset == 1
    scenario(test)


def test_commit_errors_are_per_partition() -> None:
    """UNKNOWN_TOPIC_OR_PARTITION for partitions the broker lacks, OFFSET_METADATA_TOO_LARGE past
    offset.metadata.max.bytes; the other partitions are committed."""
    async def test(env: Env) -> None:
        async with env.coordinator() as coord:
            errors = await coord.commit_offsets("grp", -1, "", None, -1, [
                CommitPartition("t", 0, 5), CommitPartition("t", 9, 5), CommitPartition("nope", 0, 5),
                CommitPartition("t", 1, 5, metadata="x" * 11)])
            assert errors == [E.NONE, E.UNKNOWN_TOPIC_OR_PARTITION, E.UNKNOWN_TOPIC_OR_PARTITION,
                              E.OFFSET_METADATA_TOO_LARGE]
            assert [tp for tp, _ in coord.fetch_offsets("grp", None)[1]] == [("t", 0)]
            only_unknown = await coord.commit_offsets("g2", 5, "m", None, -1, [CommitPartition("x", 0, 1)])
            assert only_unknown == [E.UNKNOWN_TOPIC_OR_PARTITION] and "g2" not in coord.state.groups
    scenario(test, offset_metadata_max_bytes=10)


def test_group_commit_checks_generation_and_member() -> None:
    """Commits of a managed group need the member id and generation: ILLEGAL_GENERATION,
    UNKNOWN_MEMBER_ID, and ILLEGAL_GENERATION for a group that does not exist."""
    async def test(env: Env) -> None:
        async with env.coordinator() as coord:
            a, _ = await form_group(env, coord)
            commit = [CommitPartition("t", 0, 3)]
            assert await coord.commit_offsets("g", 1, a, None, -1, commit) == [E.NONE]
            assert await coord.commit_offsets("g", 2, a, None, -1, commit) == [E.ILLEGAL_GENERATION]
            assert await coord.commit_offsets("g", -1, "", None, -1, commit) == [E.UNKNOWN_MEMBER_ID]
            assert await coord.commit_offsets("other", 1, a, None, -1, commit) == [E.ILLEGAL_GENERATION]
    scenario(test)


def test_state_is_reloaded_from_the_log_and_requests_wait_for_the_load() -> None:
    """A new coordinator reads __consumer_offsets back: offsets and the Stable group with its members;
    until the load is over every group API answers COORDINATOR_LOAD_IN_PROGRESS."""
    async def test(env: Env) -> None:
        async with env.coordinator() as coord:
            a, b = await form_group(env, coord)
            assert await coord.commit_offsets("g", 1, a, None, -1, [CommitPartition("t", 0, 9, 0, -1, "md")]) == [E.NONE]
        async with env.coordinator(load=False) as coord:
            load_error = E.COORDINATOR_LOAD_IN_PROGRESS
            assert coord.loading
            assert (await coord.join_group(join_request())).error is load_error
            assert (await coord.sync_group(SyncRequest("g", 1, a, None, None, None, ()))).error is load_error
            assert coord.heartbeat("g", a, None, 1) is load_error
            assert coord.leave_group("g", [(a, None)]) == (load_error, [])
            assert await coord.commit_offsets("g", 1, a, None, -1, [CommitPartition("t", 0, 1)]) == [load_error]
            assert coord.fetch_offsets("g", None) == (load_error, [])
            assert coord.list_groups() == (load_error, [])
            assert coord.describe_group("g") == (load_error, None)
            assert await coord.delete_groups(["g"]) == [("g", load_error)]
            assert await coord.delete_offsets("g", [("t", [0])]) == (load_error, [])
            await coord._load_task
            assert not coord.loading
            [(tp, om)] = coord.fetch_offsets("g", None)[1]
            assert (tp, om.offset, om.metadata) == (("t", 0), 9, "md")
            group = coord.state.groups["g"]
            assert group.state is STABLE and list(group.members) == [a, b] and group.generation_id == 1
            await env.settle(5_000)
            assert coord.heartbeat("g", b, None, 1) is E.NONE  # live members carry on
            await env.settle(5_000)  # a never heartbeats again: its session expires
            assert list(group.members) == [b]
    scenario(test)


def test_deletions_write_tombstones_that_survive_a_reload() -> None:
    """OffsetDelete and DeleteGroups remove state at once and append tombstones, so a reload does not
    bring the offsets or the group back."""
    async def test(env: Env) -> None:
        async with env.coordinator() as coord:
            await coord.commit_offsets("g1", -1, "", None, -1, [CommitPartition("t", 0, 1), CommitPartition("t", 1, 2)])
            await coord.commit_offsets("g2", -1, "", None, -1, [CommitPartition("t", 0, 3)])
            assert await coord.delete_offsets("g1", [("t", [0]), ("x", [0])]) == (
                E.NONE, [("t", [(0, E.NONE)]), ("x", [(0, E.UNKNOWN_TOPIC_OR_PARTITION)])])
            assert await coord.delete_groups(["g2", "g2", "missing"]) == [
                ("g2", E.NONE), ("missing", E.GROUP_ID_NOT_FOUND)]
            assert await coord.delete_offsets("missing", [("t", [0])]) == (E.GROUP_ID_NOT_FOUND, [])
            assert await coord.delete_offsets("", [("t", [0])]) == (E.INVALID_GROUP_ID, [])
        async with env.coordinator() as coord:
            assert [tp for tp, _ in coord.fetch_offsets("g1", None)[1]] == [("t", 1)]
            assert "g2" not in coord.state.groups
    scenario(test)


def test_offsets_expire_on_the_retention_timer() -> None:
    """Every offsets.retention.check.interval.ms, offsets past offsets.retention.minutes go (tombstoned),
    and an Empty group left without offsets with them."""
    async def test(env: Env) -> None:
        async with env.coordinator() as coord:
            await coord.commit_offsets("old", -1, "", None, -1, [CommitPartition("t", 0, 1)])
            await env.settle(30_000)
            await coord.commit_offsets("new", -1, "", None, -1, [CommitPartition("t", 0, 1)])
            await env.settle(30_000)  # "old" is a minute old at this check
            assert "old" not in coord.state.groups and "new" in coord.state.groups
            assert (await offsets_records(env, "old"))[-1] == decode_record(*_group_tombstone("old"))
        async with env.coordinator() as coord:
            assert "old" not in coord.state.groups and coord.fetch_offsets("new", None)[1]
    scenario(test, offsets_retention_minutes=1, offsets_retention_check_interval_ms=1000)


def _group_tombstone(group: str) -> tuple[bytes, None]:
    from broker.groups.persistence import group_key
    return group_key(group), None


def test_a_failed_flush_answers_coordinator_not_available() -> None:
    """A commit that cannot be made durable answers COORDINATOR_NOT_AVAILABLE (retriable); so does a
    SyncGroup whose assignment cannot be written."""
    async def test(env: Env) -> None:
        async with env.coordinator() as coord:
            await coord.commit_offsets("g", -1, "", None, -1, [CommitPartition("t", 0, 1)])  # creates the topic
            plog = env.cluster.get(OFFSETS_TOPIC).partitions[partition_for("g", 5)].log

            async def broken() -> None:
                raise OSError("disk on fire")
            plog.flush = broken
            assert await coord.commit_offsets("g", -1, "", None, -1, [CommitPartition("t", 0, 2)]) == [
                E.COORDINATOR_NOT_AVAILABLE]
            join = asyncio.ensure_future(coord.join_group(join_request()))
            await env.settle()
            member = join.result().member_id
            sync = await coord.sync_group(SyncRequest("g", 1, member, None, None, None, ((member, b"A"),)))
            assert sync.error is E.COORDINATOR_NOT_AVAILABLE
    scenario(test)


def test_a_disconnected_join_does_not_stall_the_group() -> None:
    """A JoinGroup whose connection went away (its task cancelled) still counts as joined, as in Kafka; the
    group forms and the others get their answers."""
    async def test(env: Env) -> None:
        async with env.coordinator() as coord:
            a, b = await form_group(env, coord)
            gone = asyncio.ensure_future(coord.join_group(join_request(a)))
            await env.settle()
            gone.cancel()
            other = asyncio.ensure_future(coord.join_group(join_request(b)))
            await env.settle()
            assert other.result().generation_id == 2 and gone.cancelled()
    scenario(test)


def test_stop_leaves_no_timer_or_task_behind() -> None:
    """stop() cancels timers and waits for in-flight writes; a parked JoinGroup stays parked (its
    connection is closed by the broker, which cancels it)."""
    async def test(env: Env) -> None:
        async with env.coordinator() as coord:
            parked = asyncio.ensure_future(coord.join_group(join_request(session=10_000)))
            await idle()
            assert coord.state.groups["g"].members, "the JoinGroup is parked in the group"
        assert coord._timers == {} and len(coord._tasks) == 0
        assert not parked.done()
        parked.cancel()
    scenario(test, group_initial_rebalance_delay_ms=3000)


# ---------------------------------------------------------------- handlers at every version

API_MAX = {JOIN_GROUP: 9, SYNC_GROUP: 5, HEARTBEAT: 4, LEAVE_GROUP: 5, OFFSET_COMMIT: 9, OFFSET_FETCH: 9}


@pytest.mark.parametrize("step", range(10))
def test_membership_and_offsets_lifecycle_at_every_version(step: int) -> None:
    """JoinGroup (v4+: MEMBER_ID_REQUIRED first), SyncGroup, Heartbeat, OffsetCommit, OffsetFetch and
    LeaveGroup end to end through the handlers; step n uses version min(n, max) of each API."""
    v = {api: min(step, top) for api, top in API_MAX.items()}

    async def test(broker: Broker) -> None:
        await broker.cluster.create_topic("t", 1)
        group = f"g{step}"
        join = m.JoinGroupRequest(group_id=group, session_timeout_ms=10_000, rebalance_timeout_ms=30_000,
                                  member_id="", protocol_type="consumer",
                                  protocols=[m.JoinGroupRequest.JoinGroupRequestProtocol(name="range",
                                                                                         metadata=SUBSCRIPTION)])
        answer = await call(broker, JOIN_GROUP, v[JOIN_GROUP], join, client_id="app")
        if v[JOIN_GROUP] >= 4:
            assert answer.error_code == E.MEMBER_ID_REQUIRED and answer.member_id.startswith("app-")
            join.member_id = answer.member_id
            answer = await call(broker, JOIN_GROUP, v[JOIN_GROUP], join, client_id="app")
        assert (answer.error_code, answer.generation_id, answer.leader) == (0, 1, answer.member_id)
        assert answer.protocol_name == "range"
        assert answer.protocol_type == ("consumer" if v[JOIN_GROUP] >= 7 else None)
        assert [(x.member_id, bytes(x.metadata)) for x in answer.members] == [(answer.member_id, SUBSCRIPTION)]
        member = answer.member_id

        sync = m.SyncGroupRequest(group_id=group, generation_id=1, member_id=member, assignments=[
            m.SyncGroupRequest.SyncGroupRequestAssignment(member_id=member, assignment=b"ASSIGNED")])
        if v[SYNC_GROUP] >= 5:
            sync.protocol_type, sync.protocol_name = "consumer", "range"
        synced = await call(broker, SYNC_GROUP, v[SYNC_GROUP], sync)
        assert (synced.error_code, bytes(synced.assignment)) == (0, b"ASSIGNED")
        assert synced.protocol_name == ("range" if v[SYNC_GROUP] >= 5 else None)

        beat = await call(broker, HEARTBEAT, v[HEARTBEAT], m.HeartbeatRequest(
            group_id=group, generation_id=1, member_id=member))
        assert beat.error_code == 0

        req = m.OffsetCommitRequest
        commit = req(group_id=group, generation_id_or_member_epoch=1 if v[OFFSET_COMMIT] >= 1 else -1,
                     member_id=member if v[OFFSET_COMMIT] >= 1 else "", topics=[req.OffsetCommitRequestTopic(
                         name="t", partitions=[req.OffsetCommitRequestPartition(
                             partition_index=0, committed_offset=17, committed_metadata="meta",
                             committed_leader_epoch=4 if v[OFFSET_COMMIT] >= 6 else -1)])])
        committed = await call(broker, OFFSET_COMMIT, v[OFFSET_COMMIT], commit)
        expected = 0 if v[OFFSET_COMMIT] >= 1 else E.UNKNOWN_MEMBER_ID  # v0 is anonymous: not for a live group
        assert committed.topics[0].partitions[0].error_code == expected

        fetch_version = v[OFFSET_FETCH]
        freq = m.OffsetFetchRequest
        if fetch_version >= 8:
            fetch = freq(groups=[freq.OffsetFetchRequestGroup(group_id=group, topics=[
                freq.OffsetFetchRequestTopics(name="t", partition_indexes=[0, 5])])])
            [answer_group] = (await call(broker, OFFSET_FETCH, fetch_version, fetch)).groups
            partitions = answer_group.topics[0].partitions
        else:
            fetch = freq(group_id=group, topics=[freq.OffsetFetchRequestTopic(name="t", partition_indexes=[0, 5])])
            partitions = (await call(broker, OFFSET_FETCH, fetch_version, fetch)).topics[0].partitions
        got = [(p.partition_index, p.committed_offset, p.metadata, p.error_code) for p in partitions]
        if expected == 0:
            assert got == [(0, 17, "meta", 0), (5, -1, "", 0)]
            epoch = partitions[0].committed_leader_epoch
            assert epoch == (4 if v[OFFSET_COMMIT] >= 6 and fetch_version >= 5 else -1)
        else:
            assert got == [(0, -1, "", 0), (5, -1, "", 0)]

        lreq = m.LeaveGroupRequest
        leave = (lreq(group_id=group, member_id=member) if v[LEAVE_GROUP] < 3 else
                 lreq(group_id=group, members=[lreq.MemberIdentity(member_id=member)]))
        left = await call(broker, LEAVE_GROUP, v[LEAVE_GROUP], leave)
        assert left.error_code == 0
        if v[LEAVE_GROUP] >= 3:
            assert [(x.member_id, x.error_code) for x in left.members] == [(member, 0)]
        state = broker.groups.state.groups[group]
        assert state.state.value == "Empty" and state.members == {}
    run(test, **{"group.initial.rebalance.delay.ms": 0})


@pytest.mark.parametrize("version", range(6))
def test_list_and_describe_groups_at_every_version(version: int) -> None:
    """ListGroups (v4+ state filter, v5+ type filter) and DescribeGroups (v3+ authorized operations, v4+
    instance ids; unknown groups Dead)."""
    async def test(broker: Broker) -> None:
        await broker.cluster.create_topic("t", 1)
        coord = broker.groups
        await coord.commit_offsets("simple", -1, "", None, -1, [CommitPartition("t", 0, 1)])
        joined = await coord.join_group(JoinRequest("busy", "", "inst", "cid", "/1.2.3.4", 10_000, 10_000,
                                                    "consumer", (("range", SUBSCRIPTION),)))
        await coord.sync_group(SyncRequest("busy", 1, joined.member_id, "inst", None, None,
                                           ((joined.member_id, b"A"),)))
        listed = await call(broker, LIST_GROUPS, version, m.ListGroupsRequest(
            states_filter=["stable"] if version >= 4 else [], types_filter=["classic"] if version >= 5 else []))
        names = sorted((g.group_id, g.protocol_type) for g in listed.groups)
        assert names == ([("busy", "consumer")] if version >= 4 else [("busy", "consumer"), ("simple", "")])
        if version >= 4:
            assert [g.group_state for g in listed.groups] == ["Stable"]
        if version >= 5:
            assert [g.group_type for g in listed.groups] == ["classic"]
            assert (await call(broker, LIST_GROUPS, version, m.ListGroupsRequest(types_filter=["consumer"]))).groups == []

        described = await call(broker, DESCRIBE_GROUPS, version, m.DescribeGroupsRequest(
            groups=["busy", "simple", "nope"], include_authorized_operations=version >= 3))
        busy, simple, nope = described.groups
        assert (busy.error_code, busy.group_state, busy.protocol_type, busy.protocol_data) == (0, "Stable", "consumer",
                                                                                            "range")
        [member] = busy.members
        assert (member.member_id, member.client_id, member.client_host) == (joined.member_id, "cid", "/1.2.3.4")
        assert (bytes(member.member_metadata), bytes(member.member_assignment)) == (SUBSCRIPTION, b"A")
        assert member.group_instance_id == ("inst" if version >= 4 else None)
        assert (simple.group_state, simple.protocol_type, simple.members) == ("Empty", "", [])
        assert (nope.error_code, nope.group_state, nope.members) == (0, "Dead", [])
        assert busy.authorized_operations == ((1 << 3) | (1 << 6) | (1 << 8) if version >= 3 else -(2**31))
    run(test, **{"group.initial.rebalance.delay.ms": 0})


@pytest.mark.parametrize("version", range(3))
def test_delete_groups_at_every_version(version: int) -> None:
    """DeleteGroups: NONE for an Empty group, NON_EMPTY_GROUP with members, GROUP_ID_NOT_FOUND otherwise."""
    async def test(broker: Broker) -> None:
        await broker.cluster.create_topic("t", 1)
        coord = broker.groups
        await coord.commit_offsets("idle", -1, "", None, -1, [CommitPartition("t", 0, 1)])
        await coord.join_group(JoinRequest("busy", "", None, "c", "/h", 10_000, 10_000, "consumer",
                                           (("range", SUBSCRIPTION),)))
        deleted = await call(broker, DELETE_GROUPS, version, m.DeleteGroupsRequest(groups_names=["idle", "busy", "x"]))
        assert [(r.group_id, r.error_code) for r in deleted.results] == [
            ("idle", 0), ("busy", E.NON_EMPTY_GROUP), ("x", E.GROUP_ID_NOT_FOUND)]
    run(test, **{"group.initial.rebalance.delay.ms": 0})


def test_offset_fetch_many_groups_and_all_partitions() -> None:
    """OffsetFetch v8+ answers several groups at once (KIP-709); null topics (v2+) list every committed
    partition; a group-level error before v2 lands on each partition, from v2 at top level."""
    async def test(broker: Broker) -> None:
        await broker.cluster.create_topic("t", 3)
        coord = broker.groups
        await coord.commit_offsets("a", -1, "", None, -1, [CommitPartition("t", 2, 20), CommitPartition("t", 0, 10)])
        await coord.commit_offsets("b", -1, "", None, -1, [CommitPartition("t", 1, 11)])
        freq = m.OffsetFetchRequest
        answer = await call(broker, OFFSET_FETCH, 8, freq(groups=[
            freq.OffsetFetchRequestGroup(group_id="a", topics=None),
            freq.OffsetFetchRequestGroup(group_id="b", topics=[freq.OffsetFetchRequestTopics(name="t", partition_indexes=[1])]),
            freq.OffsetFetchRequestGroup(group_id="none", topics=None)], require_stable=True))
        got = {g.group_id: [(p.partition_index, p.committed_offset) for t in g.topics for p in t.partitions]
               for g in answer.groups}
        assert got == {"a": [(0, 10), (2, 20)], "b": [(1, 11)], "none": []}
        all_v2 = await call(broker, OFFSET_FETCH, 2, freq(group_id="a", topics=None))
        assert [(p.partition_index, p.committed_offset) for p in all_v2.topics[0].partitions] == [(0, 10), (2, 20)]
        coord.loading = True  # as while loading at start-up
        try:
            v1 = await call(broker, OFFSET_FETCH, 1, freq(group_id="a", topics=[
                freq.OffsetFetchRequestTopic(name="t", partition_indexes=[0])]))
            assert [(p.committed_offset, p.error_code) for p in v1.topics[0].partitions] == [
                (-1, E.COORDINATOR_LOAD_IN_PROGRESS)]
            v3 = await call(broker, OFFSET_FETCH, 3, freq(group_id="a", topics=None))
            assert (v3.error_code, v3.topics) == (E.COORDINATOR_LOAD_IN_PROGRESS, [])
        finally:
            coord.loading = False
    run(test)


def test_offset_delete_handler() -> None:
    """OffsetDelete v0: per-partition results, or a group-level error with no partitions."""
    async def test(broker: Broker) -> None:
        await broker.cluster.create_topic("t", 1)
        await broker.groups.commit_offsets("a", -1, "", None, -1, [CommitPartition("t", 0, 1)])
        dreq = m.OffsetDeleteRequest
        body = dreq(group_id="a", topics=[dreq.OffsetDeleteRequestTopic(
            name="t", partitions=[dreq.OffsetDeleteRequestPartition(partition_index=0)])])
        answer = await call(broker, OFFSET_DELETE, 0, body)
        assert (answer.error_code, [(t.name, [(p.partition_index, p.error_code) for p in t.partitions])
                                    for t in answer.topics]) == (0, [("t", [(0, 0)])])
        body.group_id = "missing"
        missing = await call(broker, OFFSET_DELETE, 0, body)
        assert (missing.error_code, missing.topics) == (E.GROUP_ID_NOT_FOUND, [])
    run(test)
