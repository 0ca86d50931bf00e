"""The classic group state machine (`broker.groups.state`) driven by a virtual clock.

Every test feeds events to a `GroupMetadataManager`, moves time by hand (timers fire only when the test
advances past them) and checks the decisions: answers to parked requests, timers, group writes. Each
test names the Kafka behaviour it checks (Kafka's ``ClassicGroup`` / ``GroupMetadataManager`` and the
Scala ``GroupCoordinator``).
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from broker.groups.offsets import OffsetAndMetadata
from broker.groups.persistence import GroupMetadataSnapshot, GroupRecord, MemberMetadataSnapshot, OffsetRecord
from broker.groups.state import (
    COMPLETING_REBALANCE,
    DEAD,
    EMPTY,
    PREPARING_REBALANCE,
    STABLE,
    ClassicGroup,
    GroupConfig,
    GroupMetadataManager,
    JoinRequest,
    JoinResult,
    SyncRequest,
    SyncResult,
    parse_subscription_topics,
)
from protocol import codec, messages
from protocol.errors import ErrorCode

E = ErrorCode
GROUP = "g"
SESSION = 10_000
REBALANCE = 60_000


def subscription(*topics: str, version: int = 1) -> bytes:
    return codec.encode_versioned("ConsumerProtocolSubscription", version,
                                  messages.ConsumerProtocolSubscription(topics=list(topics)))


class Harness:
    """A state machine, a virtual clock, and everything it has answered so far."""

    def __init__(self, **config: Any) -> None:
        config.setdefault("initial_rebalance_delay_ms", 0)
        ids = itertools.count(1)
        self.m = GroupMetadataManager(GroupConfig(**config), new_uuid=lambda: f"u{next(ids)}")
        self.now = 1_000_000
        self.answers: dict[str, Any] = {}
        self.writes: list[Any] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._waiters = itertools.count(1)

    def apply(self, d: Any) -> None:
        for waiter, result in d.replies:
            assert waiter not in self.answers, f"{waiter} answered twice: {self.answers[waiter]} then {result}"
            self.answers[waiter] = result
        self.writes.extend(d.writes)
        self.events.extend(d.events)

    def advance(self, ms: int) -> None:
        self.now += ms
        self.apply(self.m.advance(self.now))

    def finish_writes(self, error: ErrorCode | None = None) -> None:
        writes, self.writes = self.writes, []
        for write in writes:
            self.apply(self.m.group_write_done(write, error, self.now))

    @property
    def group(self) -> ClassicGroup:
        return self.m.groups[GROUP]

    # ------------------------------------------------------------ requests

    def join(self, member_id: str = "", *, group: str = GROUP, protocols: Any = None, instance: str | None = None,
             session: int = SESSION, rebalance: int = REBALANCE, protocol_type: str = "consumer",
             v4: bool = False, skip: bool = False, client: str = "client") -> str:
        waiter = f"join{next(self._waiters)}"
        if protocols is None:
            protocols = (("range", subscription("t")),)
        self.apply(self.m.join_group(JoinRequest(
            group, member_id, instance, client, "/127.0.0.1", session, rebalance, protocol_type,
            tuple(protocols), require_known_member_id=v4 and instance is None, supports_skip_assignment=skip,
            waiter=waiter), self.now))
        return waiter

    def sync(self, member_id: str, generation: int, assignments: Any = (), *, instance: str | None = None,
             protocol_type: str | None = None, protocol_name: str | None = None, group: str = GROUP) -> str:
        waiter = f"sync{next(self._waiters)}"
        self.apply(self.m.sync_group(SyncRequest(group, generation, member_id, instance, protocol_type,
                                                 protocol_name, tuple(assignments), waiter), self.now))
        return waiter

    def heartbeat(self, member_id: str, generation: int, instance: str | None = None) -> ErrorCode:
        error, d = self.m.heartbeat(GROUP, member_id, instance, generation, self.now)
        self.apply(d)
        return error

    def leave(self, *members: tuple[str, str | None]) -> tuple[ErrorCode, list[ErrorCode]]:
        error, errors, d = self.m.leave_group(GROUP, list(members), self.now)
        self.apply(d)
        return error, errors

    def result(self, waiter: str) -> Any:
        assert waiter in self.answers, f"{waiter} is still parked"
        return self.answers[waiter]

    def parked(self, waiter: str) -> bool:
        return waiter not in self.answers

    # ------------------------------------------------------------ scenarios

    def stable_group(self, n: int = 2, **join: Any) -> list[str]:
        """n members joined (the first is the leader), synced and Stable; returns their ids."""
        waiters = [self.join(client=f"c{i}", **join) for i in range(n)]
        self.advance(0)
        members = [self.result(w).member_id for w in waiters]
        generation = self.group.generation_id
        leader = self.group.leader_id
        syncs = [self.sync(m, generation, [(x, x.encode()) for x in members] if m == leader else [])
                 for m in members]
        self.finish_writes()
        for s in syncs:
            assert self.result(s).error is E.NONE
        assert self.group.state is STABLE
        return members


# ---------------------------------------------------------------- JoinGroup


def test_join_with_bad_group_id_session_timeout_or_unknown_member_is_refused() -> None:
    """INVALID_GROUP_ID for an empty group id, INVALID_SESSION_TIMEOUT outside
    [group.min.session.timeout.ms, group.max.session.timeout.ms], UNKNOWN_MEMBER_ID for a member id in a
    group that does not exist (which is not created)."""
    h = Harness(min_session_timeout_ms=6000, max_session_timeout_ms=1_800_000)
    assert h.result(h.join(group="")).error is E.INVALID_GROUP_ID
    assert h.result(h.join(session=5999)).error is E.INVALID_SESSION_TIMEOUT
    assert h.result(h.join(session=1_800_001)).error is E.INVALID_SESSION_TIMEOUT
    unknown = h.result(h.join("someone"))
    assert (unknown.error, unknown.member_id) == (E.UNKNOWN_MEMBER_ID, "someone")
    assert h.m.groups == {}


def test_v4_dynamic_member_gets_member_id_required_then_joins_with_it() -> None:
    """KIP-394: a v4+ dynamic member without id gets MEMBER_ID_REQUIRED and a fresh ``client_id-uuid``,
    pending until it rejoins with it; the rejoin is a normal join."""
    h = Harness()
    first = h.result(h.join(v4=True, client="app"))
    assert (first.error, first.member_id) == (E.MEMBER_ID_REQUIRED, "app-u1")
    assert list(h.group.pending_members) == ["app-u1"] and h.group.state is EMPTY
    w = h.join("app-u1", v4=True)
    h.advance(0)
    joined = h.result(w)
    assert (joined.error, joined.member_id, joined.leader, joined.generation_id) == (E.NONE, "app-u1", "app-u1", 1)


def test_pending_member_that_never_rejoins_expires_after_its_session_timeout() -> None:
    """A MEMBER_ID_REQUIRED id is kept for one session timeout; a rebalance waiting for it then completes."""
    h = Harness()
    members = h.stable_group(1)
    h.result(h.join(v4=True, client="late"))
    w = h.join(members[0])  # the leader rejoins: a rebalance that waits for the pending member
    assert h.group.state is PREPARING_REBALANCE and h.parked(w)
    h.advance(SESSION)
    assert h.group.pending_members == {}
    assert h.result(w).error is E.NONE and h.result(w).generation_id == 2


def test_initial_rebalance_waits_the_delay_even_when_everyone_joined() -> None:
    """KIP-134: the first rebalance of an Empty group waits group.initial.rebalance.delay.ms."""
    h = Harness(initial_rebalance_delay_ms=3000)
    w = h.join()
    assert h.group.state is PREPARING_REBALANCE and h.parked(w)
    h.advance(2999)
    assert h.parked(w)
    h.advance(1)
    assert h.result(w).error is E.NONE and h.group.state is COMPLETING_REBALANCE


def test_zero_initial_delay_forms_the_group_on_the_next_timer_tick() -> None:
    """group.initial.rebalance.delay.ms=0: the group forms without waiting."""
    h = Harness(initial_rebalance_delay_ms=0)
    w = h.join()
    assert h.m.timers[("join", GROUP)] == h.now
    h.advance(0)
    assert h.result(w).generation_id == 1


def test_initial_delay_is_extended_while_new_members_arrive_up_to_the_rebalance_timeout() -> None:
    """KIP-134: each delay that saw a new member is followed by another, within the rebalance timeout."""
    h = Harness(initial_rebalance_delay_ms=3000)
    a = h.join(rebalance=7000, client="a")
    h.advance(1000)
    b = h.join(rebalance=7000, client="b")
    h.advance(2000)  # first delay over, a member arrived: wait min(3000, 4000) more
    assert h.parked(a) and h.parked(b)
    h.advance(3000)  # no newcomer this time
    assert h.result(a).error is E.NONE and h.result(b).error is E.NONE
    assert len(h.result(a).members) == 2


def test_leader_alone_gets_member_metadata_and_protocol_is_voted() -> None:
    """The first member leads; only its answer lists the members (with their metadata for the chosen
    protocol). The protocol is the one most members prefer among those all support."""
    h = Harness()
    a = h.join(protocols=[("roundrobin", b"a-rr"), ("range", b"a-r")], client="a")
    b = h.join(protocols=[("range", b"b-r"), ("roundrobin", b"b-rr")], client="b")
    c = h.join(protocols=[("range", b"c-r"), ("sticky", b"c-s")], client="c")
    h.advance(0)
    ra, rb, rc = h.result(a), h.result(b), h.result(c)
    assert ra.protocol_name == rb.protocol_name == "range" and ra.protocol_type == "consumer"
    assert ra.leader == ra.member_id == rb.leader
    assert [(m.member_id, m.metadata) for m in ra.members] == [(ra.member_id, b"a-r"), (rb.member_id, b"b-r"),
                                                               (rc.member_id, b"c-r")]
    assert rb.members == () and rc.members == ()


@pytest.mark.parametrize(("protocol_type", "protocols"), [("", [("range", b"")]), ("consumer", [])])
def test_first_member_needs_a_protocol_type_and_protocols(protocol_type: str, protocols: list[Any]) -> None:
    """An Empty group accepts a member only with a non-empty protocol type and at least one protocol."""
    h = Harness()
    result = h.result(h.join(protocol_type=protocol_type, protocols=protocols))
    assert (result.error, result.member_id) == (E.INCONSISTENT_GROUP_PROTOCOL, "")


def test_joining_with_another_protocol_type_or_no_common_protocol_is_inconsistent() -> None:
    """INCONSISTENT_GROUP_PROTOCOL: a different protocol type, or no protocol every member supports."""
    h = Harness()
    h.stable_group(1)
    assert h.result(h.join(protocol_type="connect")).error is E.INCONSISTENT_GROUP_PROTOCOL
    assert h.result(h.join(protocols=[("sticky", b"")])).error is E.INCONSISTENT_GROUP_PROTOCOL
    assert h.group.state is STABLE


def test_group_max_size_refuses_new_members() -> None:
    """group.max.size: a new member beyond it gets GROUP_MAX_SIZE_REACHED (with no member id)."""
    h = Harness(max_size=2)
    h.stable_group(2)
    refused = h.result(h.join())
    assert (refused.error, refused.member_id) == (E.GROUP_MAX_SIZE_REACHED, "")
    assert len(h.group.members) == 2 and h.group.state is STABLE


def test_group_max_size_counts_members_awaiting_join_while_preparing() -> None:
    """While a rebalance is prepared, members already awaiting join count against group.max.size."""
    h = Harness(max_size=2)
    a, b = h.stable_group(2)
    h.join(a)
    h.join()  # a new member takes the second place while b has not rejoined yet
    refused = h.result(h.join(b))
    assert refused.error is E.GROUP_MAX_SIZE_REACHED
    assert b not in h.group.members


def test_rebalance_completes_as_soon_as_every_member_rejoined() -> None:
    """After the first generation, a rebalance completes when the last known member rejoins, without
    waiting for the rebalance timeout."""
    h = Harness()
    a, b = h.stable_group(2)
    wa = h.join(a)  # the leader rejoins: rebalance
    assert h.group.state is PREPARING_REBALANCE and h.parked(wa)
    assert h.heartbeat(b, 1) is E.REBALANCE_IN_PROGRESS
    wb = h.join(b)
    assert h.result(wa).generation_id == h.result(wb).generation_id == 2
    assert ("join", GROUP) not in h.m.timers


def test_members_that_do_not_rejoin_within_the_rebalance_timeout_are_removed() -> None:
    """At the rebalance timeout the dynamic members that did not rejoin are dropped, even if they keep
    heartbeating (a consumer stuck between polls), and the rest form the next generation."""
    h = Harness()
    a, b = h.stable_group(2)
    wa = h.join(a)
    for _ in range(REBALANCE // 5000 - 1):
        h.advance(5000)
        assert h.heartbeat(b, 1) is E.REBALANCE_IN_PROGRESS
    h.advance(4999)
    assert h.parked(wa)
    h.advance(1)
    result = h.result(wa)
    assert (result.error, result.generation_id, result.leader) == (E.NONE, 2, a)
    assert list(h.group.members) == [a]
    assert h.heartbeat(b, 1) is E.UNKNOWN_MEMBER_ID


def test_rebalance_timeout_is_the_largest_of_the_members() -> None:
    """The group's rebalance timeout is the largest any member asked for."""
    h = Harness()
    a, _ = h.stable_group(2, rebalance=5000)
    h.join(a, rebalance=20_000)
    assert h.m.timers[("join", GROUP)] == h.now + 20_000


def test_follower_rejoining_unchanged_gets_current_generation_leader_rejoin_rebalances() -> None:
    """Stable: a follower rejoining with the same metadata gets the current generation at once; the
    leader rejoining (or any member with new metadata) starts a rebalance."""
    h = Harness()
    a, b = h.stable_group(2)
    same = h.result(h.join(b))
    assert (same.error, same.generation_id, same.members, same.leader) == (E.NONE, 1, (), a)
    assert h.group.state is STABLE
    h.join(b, protocols=[("range", subscription("t", "u"))])
    assert h.group.state is PREPARING_REBALANCE


def test_rejoin_while_completing_gets_the_same_generation_or_restarts_the_rebalance() -> None:
    """CompletingRebalance: the same metadata again (a lost answer) gets the current generation (members
    for the leader); new metadata restarts the rebalance and parked SyncGroups get REBALANCE_IN_PROGRESS."""
    h = Harness()
    wa, wb = h.join(client="a"), h.join(client="b")
    h.advance(0)
    a, b = h.result(wa).member_id, h.result(wb).member_id
    again = h.result(h.join(a))
    assert (again.generation_id, len(again.members)) == (1, 2)
    sb = h.sync(b, 1)
    assert h.parked(sb)
    h.join(a, protocols=[("range", subscription("other"))])
    assert h.result(sb).error is E.REBALANCE_IN_PROGRESS and h.group.state is PREPARING_REBALANCE


def test_new_leader_is_elected_when_the_leader_does_not_rejoin() -> None:
    """The leader is kept if it rejoined, else the first member that did (a leader that only heartbeats
    is dropped at the rebalance timeout)."""
    h = Harness()
    a, b, c = h.stable_group(3)
    wc = h.join(c, protocols=[("range", subscription("t", "u"))])
    wb = h.join(b)
    for _ in range(REBALANCE // 5000):
        h.advance(5000)
        h.heartbeat(a, 1)
    assert h.result(wc).leader == b and h.result(wb).leader == b
    assert [m.member_id for m in h.result(wb).members] == [b, c]
    assert a not in h.group.members


def test_a_retried_join_of_one_member_gets_the_same_answer_twice() -> None:
    """A member that sends JoinGroup again while parked (a retry) gets the result on both requests."""
    h = Harness()
    a, b = h.stable_group(2)
    first, second = h.join(a), h.join(a)
    h.join(b)
    assert h.result(first) == h.result(second) and h.result(first).generation_id == 2


# ---------------------------------------------------------------- SyncGroup


def test_followers_wait_for_the_leader_assignment_and_are_released_together() -> None:
    """SyncGroup: followers park until the leader's assignment is written; everyone then gets its own
    assignment (members the leader left out get an empty one) and the group is Stable."""
    h = Harness()
    ws = [h.join(client=f"c{i}") for i in range(3)]
    h.advance(0)
    a, b, c = (h.result(w).member_id for w in ws)
    sb, sc = h.sync(b, 1), h.sync(c, 1)
    assert h.parked(sb) and h.parked(sc)
    sa = h.sync(a, 1, [(a, b"A"), (b, b"B")])
    assert h.parked(sa) and h.group.state is COMPLETING_REBALANCE
    [write] = h.writes
    assert [(m.member_id, m.assignment) for m in write.value.members] == [(a, b"A"), (b, b"B"), (c, b"")]
    h.finish_writes()
    assert [h.result(s).assignment for s in (sa, sb, sc)] == [b"A", b"B", b""]
    assert h.result(sb) == SyncResult(E.NONE, "consumer", "range", b"B")
    assert h.group.state is STABLE
    assert h.result(h.sync(b, 1)).assignment == b"B"  # Stable: the current assignment at once


def test_sync_errors() -> None:
    """SyncGroup: UNKNOWN_MEMBER_ID (unknown group or member), ILLEGAL_GENERATION, FENCED_INSTANCE_ID,
    INCONSISTENT_GROUP_PROTOCOL (v5 protocol type or name), REBALANCE_IN_PROGRESS while preparing,
    INVALID_GROUP_ID for an empty group id."""
    h = Harness()
    assert h.result(h.sync("x", 1)).error is E.UNKNOWN_MEMBER_ID
    assert h.result(h.sync("x", 1, group="")).error is E.INVALID_GROUP_ID
    a, b = h.stable_group(2, instance=None)
    assert h.result(h.sync("stranger", 1)).error is E.UNKNOWN_MEMBER_ID
    assert h.result(h.sync(a, 7)).error is E.ILLEGAL_GENERATION
    assert h.result(h.sync(a, 1, protocol_type="connect")).error is E.INCONSISTENT_GROUP_PROTOCOL
    assert h.result(h.sync(a, 1, protocol_name="roundrobin")).error is E.INCONSISTENT_GROUP_PROTOCOL
    assert h.result(h.sync(a, 1, protocol_type="consumer", protocol_name="range")).error is E.NONE
    h.join(a)
    assert h.result(h.sync(b, 1)).error is E.REBALANCE_IN_PROGRESS


def test_a_failed_assignment_write_is_reported_and_rebalances() -> None:
    """If the leader's assignment cannot be written, every parked SyncGroup gets the error and a new
    rebalance starts."""
    h = Harness()
    wa, wb = h.join(client="a"), h.join(client="b")
    h.advance(0)
    a, b = h.result(wa).member_id, h.result(wb).member_id
    sb = h.sync(b, 1)
    sa = h.sync(a, 1, [(a, b"A"), (b, b"B")])
    h.finish_writes(E.COORDINATOR_NOT_AVAILABLE)
    assert h.result(sa).error is h.result(sb).error is E.COORDINATOR_NOT_AVAILABLE
    assert h.result(sb).assignment == b"" and h.group.state is PREPARING_REBALANCE


def test_a_stale_assignment_write_is_ignored() -> None:
    """A write that finishes after the group moved to another generation changes nothing."""
    h = Harness()
    wa, wb = h.join(client="a"), h.join(client="b")
    h.advance(0)
    a, b = h.result(wa).member_id, h.result(wb).member_id
    sa = h.sync(a, 1, [(a, b"A")])
    h.join(b, protocols=[("range", subscription("x"))])  # rebalance before the write lands
    assert h.result(sa).error is E.REBALANCE_IN_PROGRESS
    h.finish_writes()
    assert h.group.state is PREPARING_REBALANCE


def test_members_that_never_sync_are_removed_after_the_rebalance_timeout() -> None:
    """Members that do not send SyncGroup within the rebalance timeout are removed (even if they
    heartbeat) and a new rebalance starts for the rest."""
    h = Harness()
    wa, wb = h.join(client="a"), h.join(client="b")
    h.advance(0)
    a, b = h.result(wa).member_id, h.result(wb).member_id
    sa = h.sync(a, 1, [(a, b"A"), (b, b"B")])
    h.finish_writes()
    assert h.result(sa).error is E.NONE and h.group.pending_sync == {b: None}
    for _ in range(REBALANCE // 5000 - 1):
        h.advance(5000)
        assert h.heartbeat(a, 1) is E.NONE and h.heartbeat(b, 1) is E.NONE
    h.advance(4999)
    assert b in h.group.members
    h.advance(1)
    assert list(h.group.members) == [a] and h.group.state is PREPARING_REBALANCE
    assert h.heartbeat(a, 1) is E.REBALANCE_IN_PROGRESS


# ---------------------------------------------------------------- Heartbeat and session expiry


def test_heartbeat_answers_by_state_and_membership() -> None:
    """Heartbeat: NONE when Stable or CompletingRebalance, REBALANCE_IN_PROGRESS while preparing,
    ILLEGAL_GENERATION for another generation, UNKNOWN_MEMBER_ID for unknown groups and members,
    INVALID_GROUP_ID for an empty group id."""
    h = Harness()
    assert h.heartbeat("x", 0) is E.UNKNOWN_MEMBER_ID
    error, _ = h.m.heartbeat("", "x", None, 0, h.now)
    assert error is E.INVALID_GROUP_ID
    wa, wb = h.join(client="a"), h.join(client="b")
    h.advance(0)
    a, b = h.result(wa).member_id, h.result(wb).member_id
    assert h.heartbeat(b, 1) is E.NONE  # CompletingRebalance
    assert h.heartbeat(b, 0) is E.ILLEGAL_GENERATION
    assert h.heartbeat("stranger", 1) is E.UNKNOWN_MEMBER_ID
    h.sync(a, 1, [])
    h.finish_writes()
    assert h.heartbeat(b, 1) is E.NONE  # Stable
    h.join(a)
    assert h.heartbeat(b, 1) is E.REBALANCE_IN_PROGRESS


def test_session_expiry_removes_a_silent_member_and_rebalances() -> None:
    """A member without heartbeat for its session timeout is removed and the group rebalances; a member
    that heartbeats stays."""
    h = Harness()
    a, b = h.stable_group(2)
    h.advance(SESSION // 2)
    assert h.heartbeat(a, 1) is E.NONE
    h.advance(SESSION // 2 - 1)
    assert b in h.group.members and h.group.state is STABLE
    h.advance(1)
    assert list(h.group.members) == [a] and h.group.state is PREPARING_REBALANCE
    assert ("group.member_removed", {"group": GROUP, "member": b, "instance": None,
                                     "reason": "session timeout expired"}) in h.events
    assert h.heartbeat(a, 1) is E.REBALANCE_IN_PROGRESS
    w = h.join(a)
    assert (h.result(w).generation_id, h.result(w).leader) == (2, a)
    assert h.events[-1] == ("group.generation_started", {
        "group": GROUP, "generation": 2, "state": "CompletingRebalance", "protocol": "range", "leader": a,
        "members": 1})


def test_a_member_parked_in_join_group_is_not_expired_by_its_session() -> None:
    """Members awaiting a JoinGroup answer satisfy the session automatically (they cannot heartbeat)."""
    h = Harness()
    a, b = h.stable_group(2, session=SESSION, rebalance=5 * SESSION)
    wa = h.join(a)
    for _ in range(4):
        h.advance(SESSION // 2)
        assert h.heartbeat(b, 1) is E.REBALANCE_IN_PROGRESS
    assert a in h.group.members and h.parked(wa)
    h.join(b)
    assert h.result(wa).error is E.NONE and h.result(wa).generation_id == 2


def test_a_new_member_parked_in_its_first_join_times_out_after_five_minutes() -> None:
    """A new member whose first JoinGroup stays parked is removed after the new-member join timeout
    (5 minutes) and answered UNKNOWN_MEMBER_ID."""
    h = Harness()
    [a] = h.stable_group(1, instance="static-a", session=1_800_000, rebalance=1_000_000)
    w = h.join(rebalance=1_000_000, client="new")  # a rebalance static a does not rejoin for
    h.advance(300_000 - 1)
    assert h.parked(w)
    h.advance(1)
    assert h.result(w) == JoinResult(E.UNKNOWN_MEMBER_ID)
    assert list(h.group.members) == [a]


# ---------------------------------------------------------------- LeaveGroup


def test_leave_group_removes_members_and_rebalances() -> None:
    """LeaveGroup removes the member; the rest rebalance; the last one leaving empties the group (whose
    empty metadata is written)."""
    h = Harness()
    a, b = h.stable_group(2)
    assert h.leave((b, None)) == (E.NONE, [E.NONE])
    assert h.group.state is PREPARING_REBALANCE
    w = h.join(a)
    assert h.result(w).generation_id == 2
    h.sync(a, 2, [(a, b"")])
    h.finish_writes()
    assert h.leave((a, None)) == (E.NONE, [E.NONE])
    assert h.group.state is EMPTY and h.group.generation_id == 3
    [write] = h.writes
    assert write.kind == "empty" and write.value.members == () and write.value.protocol is None


def test_batched_leave_answers_per_member() -> None:
    """LeaveGroup v3+: per-member results; unknown members UNKNOWN_MEMBER_ID, a stale member id for a
    known instance FENCED_INSTANCE_ID, an instance id alone removes that static member; an unknown group
    answers UNKNOWN_MEMBER_ID for each member; an empty group id INVALID_GROUP_ID."""
    h = Harness()
    assert h.leave(("x", None), ("y", "i")) == (E.NONE, [E.UNKNOWN_MEMBER_ID, E.UNKNOWN_MEMBER_ID])
    a, b = h.stable_group(2, instance=None)
    wi = h.join(instance="inst", client="s")
    h.join(a)
    h.join(b)
    s = h.result(wi).member_id
    top, errors = h.leave(("nobody", None), ("old-id", "inst"), ("", "inst"), ("", "nope"), (b, None))
    assert top is E.NONE
    assert errors == [E.UNKNOWN_MEMBER_ID, E.FENCED_INSTANCE_ID, E.NONE, E.UNKNOWN_MEMBER_ID, E.NONE]
    assert list(h.group.members) == [a] and s not in h.group.members
    error, _, _ = h.m.leave_group("", [("x", None)], h.now)
    assert error is E.INVALID_GROUP_ID


def test_a_pending_member_can_leave() -> None:
    """A member still pending after MEMBER_ID_REQUIRED may leave; a rebalance waiting for it completes."""
    h = Harness()
    [a] = h.stable_group(1)
    pending = h.result(h.join(v4=True)).member_id
    w = h.join(a)
    assert h.parked(w)
    assert h.leave((pending, None)) == (E.NONE, [E.NONE])
    assert h.result(w).generation_id == 2


def test_leaving_member_parked_requests_are_answered() -> None:
    """A member removed while its JoinGroup is parked gets UNKNOWN_MEMBER_ID on it (it must rejoin)."""
    h = Harness()
    [a] = h.stable_group(1, instance="i1")
    w = h.join(client="b")  # parked: static a has not rejoined
    b = next(m for m in h.group.members if m != a)
    assert h.parked(w)
    assert h.leave((b, None)) == (E.NONE, [E.NONE])
    assert h.result(w) == JoinResult(E.UNKNOWN_MEMBER_ID)
    assert list(h.group.members) == [a]


# ---------------------------------------------------------------- static membership (KIP-345)


def test_static_member_rejoining_while_stable_keeps_its_assignment_without_rebalance() -> None:
    """A known group.instance.id rejoining without member id replaces the old id, keeps its assignment and
    generation once the group is written, with no rebalance; the old id is fenced."""
    h = Harness()
    a, b = h.stable_group(2, instance=None)
    ws = h.join(instance="inst", client="s")
    h.join(a)
    h.join(b)
    s = h.result(ws).member_id
    assert s.startswith("inst-")
    sync = [h.sync(m, 2, [(a, b"A"), (b, b"B"), (s, b"S")] if m == a else []) for m in (a, b, s)]
    h.finish_writes()
    assert h.result(sync[2]).assignment == b"S"
    rejoin = h.join(instance="inst", client="s")
    assert h.parked(rejoin)  # until the new member id is written
    [write] = h.writes
    assert write.kind == "static"
    h.finish_writes()
    result = h.result(rejoin)
    assert result.error is E.NONE and result.generation_id == 2 and result.member_id != s
    assert h.group.state is STABLE and h.group.generation_id == 2
    assert h.result(h.sync(result.member_id, 2, instance="inst")).assignment == b"S"
    assert h.heartbeat(s, 2, instance="inst") is E.FENCED_INSTANCE_ID
    assert h.heartbeat(result.member_id, 2, instance="inst") is E.NONE


@pytest.mark.parametrize("skip", [False, True])
def test_static_leader_rejoin_skips_assignment_from_v9_and_sees_old_leader_before(skip: bool) -> None:
    """KIP-814: a static leader rejoining while Stable is told skip_assignment (v9+) with the members;
    older versions get the previous leader id so that they do not reassign."""
    h = Harness()
    [old] = h.stable_group(1, instance="lead")
    w = h.join(instance="lead", skip=skip)
    h.finish_writes()
    result = h.result(w)
    assert h.group.leader_id == result.member_id != old
    if skip:
        assert result.skip_assignment and result.leader == result.member_id and len(result.members) == 1
    else:
        assert not result.skip_assignment and result.leader == old and result.members == ()


def test_failed_static_rejoin_write_reverts_to_the_old_member_id() -> None:
    """If the replaced member id cannot be written, the old id is restored and the rejoin gets the error."""
    h = Harness()
    [old] = h.stable_group(1, instance="inst")
    w = h.join(instance="inst")
    h.finish_writes(E.COORDINATOR_NOT_AVAILABLE)
    assert h.result(w).error is E.COORDINATOR_NOT_AVAILABLE
    assert list(h.group.members) == [old] and h.group.static_members == {"inst": old}


def test_static_rejoin_that_changes_the_protocol_choice_rebalances() -> None:
    """A static member rejoining with protocols that change the group's choice triggers a rebalance."""
    h = Harness()
    h.stable_group(1, instance="inst")
    h.join(instance="inst", protocols=[("roundrobin", b""), ("range", subscription("t"))])
    assert h.group.state is not STABLE and h.group.protocol_name == "roundrobin"


def test_static_member_replaced_while_parked_is_fenced() -> None:
    """A JoinGroup parked under the old member id gets FENCED_INSTANCE_ID when the instance joins again
    without member id (a restarted process); the new id takes its place in the rebalance."""
    h = Harness()
    ws, wa, wb = h.join(instance="inst", client="s"), h.join(client="a"), h.join(client="b")
    h.advance(0)
    s_id, a, b = (h.result(w).member_id for w in (ws, wa, wb))
    h.sync(s_id, 1, [])
    h.finish_writes()
    h.join(a, protocols=[("range", subscription("t", "u"))])  # a rebalance
    w_old = h.join(s_id, instance="inst")
    assert h.parked(w_old)  # b has not rejoined yet
    w_new = h.join(instance="inst", client="s")
    assert h.result(w_old) == JoinResult(E.FENCED_INSTANCE_ID, member_id=s_id)
    new_id = h.group.static_members["inst"]
    assert new_id != s_id and h.parked(w_new)
    h.join(b)
    assert (h.result(w_new).member_id, h.result(w_new).generation_id) == (new_id, 2)


def test_static_member_with_a_stale_member_id_is_fenced_everywhere() -> None:
    """FENCED_INSTANCE_ID for a member id that is not the instance's current one: JoinGroup, SyncGroup,
    Heartbeat, OffsetCommit; an unknown instance id is UNKNOWN_MEMBER_ID."""
    h = Harness()
    [s] = h.stable_group(1, instance="inst")
    assert h.result(h.join("stale", instance="inst")).error is E.FENCED_INSTANCE_ID
    assert h.result(h.sync("stale", 1, instance="inst")).error is E.FENCED_INSTANCE_ID
    assert h.heartbeat("stale", 1, instance="inst") is E.FENCED_INSTANCE_ID
    assert h.heartbeat(s, 1, instance="other") is E.UNKNOWN_MEMBER_ID
    error, _ = h.m.validate_offset_commit(GROUP, 1, "stale", "inst", h.now)
    assert error is E.FENCED_INSTANCE_ID


def test_static_members_that_do_not_rejoin_are_kept_through_the_rebalance() -> None:
    """At the rebalance timeout only dynamic members that did not rejoin are removed; a static member stays
    (it may be restarting) and leads no more; it goes if it then fails to sync within the rebalance timeout."""
    h = Harness()
    w_static, w_dyn = h.join(instance="inst", session=100_000, client="s"), h.join(client="d")
    w_gone = h.join(client="x")
    h.advance(0)
    s_id, d, x = (h.result(w).member_id for w in (w_static, w_dyn, w_gone))
    h.sync(s_id, 1, [])
    h.finish_writes()
    w = h.join(d, protocols=[("range", subscription("t", "u"))])
    h.advance(REBALANCE)
    assert list(h.group.members) == [s_id, d]  # dynamic x dropped, static s kept
    result = h.result(w)
    assert (result.generation_id, result.leader) == (2, d)
    assert [m.member_id for m in result.members] == [s_id, d]
    h.sync(d, 2, [(d, b"D")])
    h.finish_writes()
    for _ in range(REBALANCE // 5000):
        h.advance(5000)
        h.heartbeat(d, 2)
    assert list(h.group.members) == [d] and h.group.state is PREPARING_REBALANCE
    assert x not in h.group.members


# ---------------------------------------------------------------- offsets


def test_offset_commit_validation() -> None:
    """Kafka 4 ``validateOffsetCommit``: generation -1 commits to an Empty or new group (created); a commit
    with generation >= 0 to an unknown group ILLEGAL_GENERATION; an anonymous commit to a group with
    members UNKNOWN_MEMBER_ID; member and generation must match; REBALANCE_IN_PROGRESS while
    CompletingRebalance; allowed while preparing a rebalance."""
    h = Harness()
    assert h.m.validate_offset_commit("simple", -1, "", None, h.now)[0] is E.NONE
    assert h.m.groups["simple"].state is EMPTY
    assert h.m.validate_offset_commit("nope", 3, "m", None, h.now)[0] is E.ILLEGAL_GENERATION
    assert "nope" not in h.m.groups
    wa, wb = h.join(client="a"), h.join(client="b")
    h.advance(0)
    a, b = h.result(wa).member_id, h.result(wb).member_id

    def check(generation: int, member: str) -> ErrorCode:
        return h.m.validate_offset_commit(GROUP, generation, member, None, h.now)[0]

    assert check(1, a) is E.REBALANCE_IN_PROGRESS
    h.sync(a, 1, [])
    h.finish_writes()
    assert check(1, a) is E.NONE
    assert check(-1, "") is E.UNKNOWN_MEMBER_ID
    assert check(2, a) is E.ILLEGAL_GENERATION
    assert check(1, "x") is E.UNKNOWN_MEMBER_ID
    h.join(a)
    assert check(1, b) is E.NONE  # PreparingRebalance still takes commits


def test_later_commits_win_by_log_position_and_fetch_lists_all_sorted() -> None:
    """Of two commits of a partition the one later in the log wins; a fetch without topics lists every
    committed partition; unknown partitions come back as None."""
    h = Harness()
    h.m.apply_offset_commits("s", {("t", 1): OffsetAndMetadata(5, position=10)}, h.now)
    h.m.apply_offset_commits("s", {("t", 1): OffsetAndMetadata(4, position=9)}, h.now)
    h.m.apply_offset_commits("s", {("a", 0): OffsetAndMetadata(1, position=11)}, h.now)
    assert [(tp, om.offset) for tp, om in h.m.fetch_offsets("s", None)] == [(("a", 0), 1), (("t", 1), 5)]
    assert h.m.fetch_offsets("s", [("t", 1), ("t", 9)])[1] == (("t", 9), None)
    assert h.m.fetch_offsets("unknown", None) == []


def test_offset_delete_rules() -> None:
    """OffsetDelete: GROUP_ID_NOT_FOUND for unknown groups; GROUP_SUBSCRIBED_TO_TOPIC for topics a consumer
    group's members subscribe to; NON_EMPTY_GROUP for a non-consumer group with members; Empty groups
    delete freely (NONE even without an offset)."""
    h = Harness()
    assert h.m.delete_offsets("nope", [("t", [0])])[0] is E.GROUP_ID_NOT_FOUND
    h.stable_group(1, protocols=[("range", subscription("t"))])
    h.m.apply_offset_commits(GROUP, {("t", 0): OffsetAndMetadata(1), ("u", 0): OffsetAndMetadata(2)}, h.now)
    error, results, removed = h.m.delete_offsets(GROUP, [("t", [0]), ("u", [0, 1])])
    assert error is E.NONE
    assert results == [("t", [(0, E.GROUP_SUBSCRIBED_TO_TOPIC)]), ("u", [(0, E.NONE), (1, E.NONE)])]
    assert removed == [("u", 0)] and ("t", 0) in h.group.offsets
    other = Harness()
    other.stable_group(1, protocol_type="connect")
    assert other.m.delete_offsets(GROUP, [("t", [0])])[0] is E.NON_EMPTY_GROUP


def test_subscriptions_are_parsed_as_version_0() -> None:
    """The consumer protocol subscription is read with its version-0 prefix, whatever its version;
    unparseable bytes mean "unknown" (a consumer group then counts as subscribed to every topic)."""
    assert parse_subscription_topics(subscription("a", "b", version=3)) == ["a", "b"]
    assert parse_subscription_topics(b"\x00") is None
    h = Harness()
    h.stable_group(1, protocols=[("range", b"\x00\x00\xff")])
    assert h.group.subscribed_topics is None and h.group.is_subscribed_to_topic("anything")


def test_delete_group_rules() -> None:
    """DeleteGroups: GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP; an Empty group goes with all its offsets."""
    h = Harness()
    assert h.m.delete_group("nope", h.now) == (E.GROUP_ID_NOT_FOUND, [])
    [a] = h.stable_group(1)
    assert h.m.delete_group(GROUP, h.now) == (E.NON_EMPTY_GROUP, [])
    h.m.apply_offset_commits(GROUP, {("t", 0): OffsetAndMetadata(1)}, h.now)
    h.leave((a, None))
    assert h.group.state is EMPTY
    assert h.m.delete_group(GROUP, h.now) == (E.NONE, [("t", 0)])
    assert GROUP not in h.m.groups


def test_offset_expiry_rules() -> None:
    """offsets.retention.minutes: a simple group's offsets expire from their commit time; an Empty
    group's from when it became Empty; an explicit (v2-v4) expiry time wins; a Stable consumer group only
    loses offsets of topics nobody subscribes to; an Empty group left without offsets is deleted."""
    retention = 1000
    h = Harness()
    h.m.validate_offset_commit("simple", -1, "", None, h.now)
    h.m.apply_offset_commits("simple", {("t", 0): OffsetAndMetadata(1, commit_timestamp=h.now),
                                        ("t", 1): OffsetAndMetadata(1, commit_timestamp=h.now + 500)}, h.now)
    assert h.m.expire_offsets("simple", h.now + 999, retention) == ([], False)
    assert h.m.expire_offsets("simple", h.now + 1000, retention) == ([("t", 0)], False)
    assert h.m.expire_offsets("simple", h.now + 1500, retention) == ([("t", 1)], True)
    assert "simple" not in h.m.groups

    h.m.validate_offset_commit("explicit", -1, "", None, h.now)
    h.m.apply_offset_commits("explicit", {("t", 0): OffsetAndMetadata(1, commit_timestamp=h.now,
                                                                       expire_timestamp=h.now + 10)}, h.now)
    assert h.m.expire_offsets("explicit", h.now + 10, retention) == ([("t", 0)], True)

    [a] = h.stable_group(1, protocols=[("range", subscription("t"))])
    h.m.apply_offset_commits(GROUP, {("t", 0): OffsetAndMetadata(1, commit_timestamp=h.now),
                                     ("old", 0): OffsetAndMetadata(1, commit_timestamp=h.now)}, h.now)
    assert h.m.expire_offsets(GROUP, h.now + retention, retention) == ([("old", 0)], False)
    h.advance(5000)
    h.leave((a, None))  # Empty from now on
    assert h.m.expire_offsets(GROUP, h.now + retention - 1, retention) == ([], False)
    assert h.m.expire_offsets(GROUP, h.now + retention, retention) == ([("t", 0)], True)


def test_list_and_describe_groups() -> None:
    """ListGroups filters by state and type (case-insensitive; every group is "classic"); DescribeGroups
    shows members' metadata and assignments only while Stable, and an unknown group as Dead."""
    h = Harness()
    [a] = h.stable_group(1)
    h.m.validate_offset_commit("simple", -1, "", None, h.now)
    assert [(g.group_id, g.state, g.protocol_type) for g in h.m.list_groups()] == [
        (GROUP, "Stable", "consumer"), ("simple", "Empty", "")]
    assert [g.group_id for g in h.m.list_groups(["stable"])] == [GROUP]
    assert h.m.list_groups(types=["Consumer"]) == [] and len(h.m.list_groups(types=["CLASSIC"])) == 2
    described = h.m.describe_group(GROUP)
    assert (described.state, described.protocol_type, described.protocol_data) == ("Stable", "consumer", "range")
    [member] = described.members
    assert (member.member_id, member.client_host, member.assignment) == (a, "/127.0.0.1", a.encode())
    assert member.metadata == subscription("t")
    h.join(a)
    completing = h.m.describe_group(GROUP)
    assert completing.state == "CompletingRebalance" and completing.protocol_data == ""
    assert completing.members[0].metadata == b"" and completing.members[0].assignment == b""
    assert h.m.describe_group("nope").state == "Dead"


# ---------------------------------------------------------------- loading and transitions


def test_loaded_group_comes_back_stable_and_its_members_expire_without_heartbeats() -> None:
    """A group read back from the log is Stable with its members and offsets; members get a fresh session
    timer; a tombstone removes a group or an offset."""
    h = Harness()
    member = MemberMetadataSnapshot("m1", None, "c", "/h", -1, SESSION, subscription("t"), b"A")
    h.m.replay(OffsetRecord(GROUP, "t", 0, OffsetAndMetadata(7, position=0)), h.now)
    h.m.replay(GroupRecord(GROUP, GroupMetadataSnapshot("consumer", 4, "range", "m1", 123, (member,))), h.now)
    h.m.replay(OffsetRecord("gone", "t", 0, OffsetAndMetadata(1, position=2)), h.now)
    h.m.replay(GroupRecord("gone", None), h.now)
    h.apply(h.m.loaded(h.now))
    assert "gone" not in h.m.groups
    group = h.group
    assert (group.state, group.generation_id, group.leader_id, group.protocol_name) == (STABLE, 4, "m1", "range")
    assert group.members["m1"].rebalance_timeout_ms == SESSION  # -1 (v0 records): the session timeout
    assert group.offsets[("t", 0)].offset == 7 and group.subscribed_topics == {"t"}
    assert h.result(h.sync("m1", 4)).assignment == b"A"
    h.advance(SESSION)
    assert group.members == {} and (group.state, group.generation_id) == (EMPTY, 5)
    assert [w.kind for w in h.writes] == ["empty"]


def test_invalid_transitions_are_refused() -> None:
    """Kafka's valid-previous-state table: e.g. Empty cannot go straight to Stable."""
    group = ClassicGroup("x", EMPTY, 0)
    with pytest.raises(AssertionError):
        group.transition(STABLE, 1)
    group.transition(PREPARING_REBALANCE, 1)
    group.transition(COMPLETING_REBALANCE, 2)
    group.transition(STABLE, 3)
    group.transition(DEAD, 4)
    assert (group.previous_state, group.state_timestamp) == (STABLE, 4)


def test_stale_timer_firings_are_ignored() -> None:
    """A timer that was moved later (a heartbeat) or cancelled does nothing when its old deadline passes."""
    h = Harness()
    [a] = h.stable_group(1)
    key = ("heartbeat", GROUP, a)
    h.advance(SESSION - 1)
    assert h.heartbeat(a, 1) is E.NONE
    d = h.m.on_timer(key, h.now + 1)
    assert d.replies == [] and a in h.group.members


def test_member_ids_from_huge_client_ids_still_fit_a_protocol_string() -> None:
    """A client id (or group instance id) near the 32767-byte string limit would make ``prefix-uuid`` too
    long to encode in the JoinGroup answer; the prefix is cut so the id fits (found by the fuzzer)."""
    from broker.groups.state import make_member_id

    unique = "0" * 36
    assert make_member_id("app", unique) == "app-" + unique
    for prefix in ("x" * 32767, "é" * 16383):
        member_id = make_member_id(prefix, unique)
        assert len(member_id.encode()) <= 32767 and member_id.endswith("-" + unique)
        assert prefix.startswith(member_id[: -len(unique) - 1])
