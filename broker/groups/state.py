"""The classic group protocol as a pure state machine: events in, decisions out.

`GroupMetadataManager` holds every group of this coordinator. Its methods take one event (a JoinGroup,
a SyncGroup, a heartbeat, a timer that fired, a write that finished) and the current time, and return
`Decisions`: answers for parked requests (keyed by an opaque ``waiter`` the caller handed in), timers to
set or cancel (absolute deadlines in ms) and group metadata to write to ``__consumer_offsets`` (each
write comes back through `group_write_done`). Nothing here awaits, sleeps or reads a clock.

Kafka behaviours (Apache Kafka's ``ClassicGroup``, ``GroupMetadataManager`` (classic part) and the Scala
``GroupCoordinator`` before it; Kafka 4 where they differ):
- states Empty, PreparingRebalance, CompletingRebalance, Stable, Dead with Kafka's valid transitions;
- JoinGroup: empty group id INVALID_GROUP_ID; session timeout outside
  [group.min.session.timeout.ms, group.max.session.timeout.ms] INVALID_SESSION_TIMEOUT; a member id for an
  unknown group UNKNOWN_MEMBER_ID; GROUP_MAX_SIZE_REACHED past ``group.max.size`` (counting members
  awaiting join while preparing a rebalance); protocol type and a protocol common to all members
  (INCONSISTENT_GROUP_PROTOCOL); v4+ dynamic members first get MEMBER_ID_REQUIRED with a fresh id
  (``client_id-uuid``) and are pending until they rejoin with it (or their session timeout passes);
  the first rebalance of an Empty group waits ``group.initial.rebalance.delay.ms``, extended while new
  members keep arriving, up to the rebalance timeout (KIP-134); later rebalances complete as soon as
  every member (and pending member) has rejoined, else at the rebalance timeout, removing the dynamic
  members that did not rejoin; the leader is kept if it rejoined, else the first member that did; the
  protocol is chosen by the members' votes among those all support; the leader alone gets the members'
  metadata; a follower rejoining with unchanged metadata while Stable or CompletingRebalance gets the
  current generation at once; the leader rejoining (or changed metadata) starts a rebalance;
- static membership (KIP-345): a known ``group_instance_id`` joining without member id replaces the old
  member id (whose parked requests get FENCED_INSTANCE_ID) and, while Stable with an unchanged protocol
  choice, gets the current assignment without a rebalance once the group is written (v9+: the leader is
  told ``skip_assignment``, KIP-814; older versions are given the previous leader id so they do not
  reassign); a stale member id with a known instance id is FENCED_INSTANCE_ID; static members that do
  not rejoin stay until their session times out;
- SyncGroup: UNKNOWN_MEMBER_ID / FENCED_INSTANCE_ID, ILLEGAL_GENERATION, INCONSISTENT_GROUP_PROTOCOL
  (v5 protocol type/name), REBALANCE_IN_PROGRESS while preparing; followers park until the leader's
  assignment is written and are then released together (members the leader left out get an empty
  assignment); members that do not sync within the rebalance timeout are removed and a new rebalance
  starts; Stable answers the current assignment;
- Heartbeat: UNKNOWN_MEMBER_ID / FENCED_INSTANCE_ID, ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS while
  preparing, NONE while completing or stable; each resets the member's session timer. A member whose
  session passes without a heartbeat is removed (triggering a rebalance) unless it is parked in a
  JoinGroup/SyncGroup; a new member parked in its first JoinGroup is removed after 5 minutes;
- LeaveGroup: by member id, or by instance id alone (admin removal); pending members leave too;
- OffsetCommit validation (Kafka 4 ``ClassicGroup.validateOffsetCommit``): generation < 0 commits to an
  Empty (or new, created here) group; otherwise member and generation must match; a commit without
  member id to a group with members UNKNOWN_MEMBER_ID; REBALANCE_IN_PROGRESS while CompletingRebalance;
  a commit with generation >= 0 to an unknown group ILLEGAL_GENERATION;
- OffsetDelete: GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP (non-consumer groups with members),
  GROUP_SUBSCRIBED_TO_TOPIC (topics the members' ``ConsumerProtocolSubscription`` names, parsed with
  version 0 as Kafka does); DeleteGroups: GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP;
- offset expiry (``offsets.retention.minutes``): Empty groups from the time they became Empty, simple
  groups (no protocol type) from each commit, Stable consumer groups only for topics nobody subscribes
  to; an Empty group left without offsets is deleted;
- groups loaded from the log come back with their members (Stable) and get fresh session timers, so
  live members carry on and dead ones expire, as in Kafka.

Moldau choices: a request parked twice by one member (a retry on another connection) gets the same
answer on both; parked requests of a removed member are answered UNKNOWN_MEMBER_ID rather than left
hanging; protocol vote ties go to the protocol voted first (Kafka's is hash-map order).
"""

from __future__ import annotations

import enum
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from broker.groups.offsets import OffsetAndMetadata, TopicPartition, expired_partitions
from broker.groups.persistence import GroupMetadataSnapshot, GroupRecord, MemberMetadataSnapshot, OffsetRecord
from protocol import codec
from protocol.errors import ErrorCode
from protocol.primitives import INT32_MAX


class GroupState(enum.Enum):
    """Classic group states, valued by the names Kafka reports (DescribeGroups, ListGroups)."""

    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


EMPTY = GroupState.EMPTY
PREPARING_REBALANCE = GroupState.PREPARING_REBALANCE
COMPLETING_REBALANCE = GroupState.COMPLETING_REBALANCE
STABLE = GroupState.STABLE
DEAD = GroupState.DEAD

# Kafka's ClassicGroupState: each state and the states it may be entered from.
_VALID_PREVIOUS: dict[GroupState, frozenset[GroupState]] = {
    EMPTY: frozenset({PREPARING_REBALANCE}),
    PREPARING_REBALANCE: frozenset({STABLE, COMPLETING_REBALANCE, EMPTY}),
    COMPLETING_REBALANCE: frozenset({PREPARING_REBALANCE}),
    STABLE: frozenset({COMPLETING_REBALANCE}),
    DEAD: frozenset({STABLE, PREPARING_REBALANCE, COMPLETING_REBALANCE, EMPTY, DEAD}),
}

CONSUMER_PROTOCOL_TYPE = "consumer"
CLASSIC_GROUP_TYPE = "classic"
UNKNOWN_MEMBER_ID = ""
NO_GENERATION = -1
NEW_MEMBER_JOIN_TIMEOUT_MS = 300_000  # Kafka's classic new-member join timeout (5 minutes)

# Timer keys: ("join", group), ("sync", group), ("heartbeat", group, member).
TimerKey = tuple[str, ...]
JOIN_TIMER, SYNC_TIMER, HEARTBEAT_TIMER = "join", "sync", "heartbeat"

# GroupWrite kinds: what to do once the group record is durable.
WRITE_SYNC, WRITE_EMPTY, WRITE_STATIC = "sync", "empty", "static"


@dataclass(frozen=True)
class GroupConfig:
    """The coordinator settings the state machine needs (Kafka's names in the broker config)."""

    min_session_timeout_ms: int = 6000
    max_session_timeout_ms: int = 1_800_000
    initial_rebalance_delay_ms: int = 3000
    max_size: int = INT32_MAX
    new_member_join_timeout_ms: int = NEW_MEMBER_JOIN_TIMEOUT_MS

    @classmethod
    def from_broker_config(cls, config: Any) -> GroupConfig:
        return cls(min_session_timeout_ms=config.group_min_session_timeout_ms,
                   max_session_timeout_ms=config.group_max_session_timeout_ms,
                   initial_rebalance_delay_ms=config.group_initial_rebalance_delay_ms,
                   max_size=config.group_max_size)


# ---------------------------------------------------------------- events and answers

@dataclass(frozen=True)
class JoinRequest:
    """A JoinGroup as the state machine sees it (the handler fills in version-dependent fields)."""

    group_id: str
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: tuple[tuple[str, bytes], ...]
    require_known_member_id: bool = False   # v4+ dynamic members: MEMBER_ID_REQUIRED first
    supports_skip_assignment: bool = False  # v9+
    waiter: Any = None


@dataclass(frozen=True)
class SyncRequest:
    group_id: str
    generation_id: int
    member_id: str
    group_instance_id: str | None
    protocol_type: str | None
    protocol_name: str | None
    assignments: tuple[tuple[str, bytes], ...]
    waiter: Any = None


@dataclass(frozen=True)
class JoinedMember:
    member_id: str
    group_instance_id: str | None
    metadata: bytes


@dataclass(frozen=True)
class JoinResult:
    error: ErrorCode
    member_id: str = UNKNOWN_MEMBER_ID
    generation_id: int = NO_GENERATION
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str = ""
    skip_assignment: bool = False
    members: tuple[JoinedMember, ...] = ()


@dataclass(frozen=True)
class SyncResult:
    error: ErrorCode
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignment: bytes = b""


@dataclass(frozen=True)
class StaticRejoin:
    """What a static member's no-rebalance rejoin needs once its group write finishes (or fails)."""

    group_instance_id: str
    old_member_id: str
    new_member_id: str
    old_protocols: tuple[tuple[str, bytes], ...]
    old_rebalance_timeout_ms: int
    old_session_timeout_ms: int
    previous_leader: str | None
    supports_skip_assignment: bool


@dataclass(frozen=True)
class GroupWrite:
    """Group metadata to append to ``__consumer_offsets``; report the outcome to `group_write_done`."""

    group_id: str
    value: GroupMetadataSnapshot
    kind: str
    generation: int
    context: Any = None


@dataclass
class Decisions:
    """What an event asks of the shell: answers, timer changes (None cancels) and group writes."""

    replies: list[tuple[Any, Any]] = field(default_factory=list)
    timers: dict[TimerKey, int | None] = field(default_factory=dict)
    writes: list[GroupWrite] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # for the shell to log

    def reply(self, waiter: Any, result: Any) -> None:
        self.replies.append((waiter, result))

    def note(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))


@dataclass(frozen=True)
class DescribedMember:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    metadata: bytes
    assignment: bytes


@dataclass(frozen=True)
class GroupDescription:
    group_id: str
    state: str
    protocol_type: str
    protocol_data: str
    members: tuple[DescribedMember, ...]


@dataclass(frozen=True)
class GroupListing:
    group_id: str
    protocol_type: str
    state: str
    group_type: str = CLASSIC_GROUP_TYPE


# ---------------------------------------------------------------- groups and members

class ClassicGroupMember:
    """One member: its protocols, timeouts, assignment and parked JoinGroup/SyncGroup requests."""

    def __init__(self, member_id: str, group_instance_id: str | None, client_id: str, client_host: str,
                 rebalance_timeout_ms: int, session_timeout_ms: int, protocol_type: str,
                 protocols: Sequence[tuple[str, bytes]], assignment: bytes = b"") -> None:
        self.member_id = member_id
        self.group_instance_id = group_instance_id
        self.client_id = client_id
        self.client_host = client_host
        self.rebalance_timeout_ms = rebalance_timeout_ms
        self.session_timeout_ms = session_timeout_ms
        self.protocol_type = protocol_type
        self.protocols: tuple[tuple[str, bytes], ...] = tuple(protocols)
        self.assignment = assignment
        self.join_waiters: list[Any] = []
        self.sync_waiters: list[Any] = []
        self.is_new = False

    @property
    def awaiting_join(self) -> bool:
        return bool(self.join_waiters)

    @property
    def awaiting_sync(self) -> bool:
        return bool(self.sync_waiters)

    @property
    def is_static(self) -> bool:
        return self.group_instance_id is not None

    @property
    def has_satisfied_heartbeat(self) -> bool:
        """Kafka's rule when the session timer fires: a new member must have finished its first join;
        a member parked in JoinGroup/SyncGroup counts as alive; anyone else has missed a heartbeat."""
        return not self.is_new and (self.awaiting_join or self.awaiting_sync)

    def metadata(self, protocol: str | None) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol:
                return metadata
        return b""

    def matches(self, protocols: Sequence[tuple[str, bytes]]) -> bool:
        return self.protocols == tuple(protocols)

    def vote(self, candidates: set[str]) -> str | None:
        """The member's most preferred protocol among ``candidates``."""
        return next((name for name, _ in self.protocols if name in candidates), None)

    def __repr__(self) -> str:
        return f"ClassicGroupMember({self.member_id!r}, instance={self.group_instance_id!r})"


def _protocol_names(protocols: Iterable[tuple[str, bytes]]) -> set[str]:
    return {name for name, _ in protocols}


class ClassicGroup:
    """One classic group: state, generation, members, the protocol chosen and its committed offsets."""

    def __init__(self, group_id: str, state: GroupState, now_ms: int | None) -> None:
        self.group_id = group_id
        self.state = state
        self.previous_state = state
        self.state_timestamp: int | None = now_ms
        self.generation_id = 0
        self.protocol_type: str | None = None
        self.protocol_name: str | None = None
        self.leader_id: str | None = None
        self.members: dict[str, ClassicGroupMember] = {}
        self.static_members: dict[str, str] = {}
        self.pending_members: dict[str, None] = {}   # MEMBER_ID_REQUIRED ids not yet rejoined (ordered set)
        self.pending_sync: dict[str, None] = {}      # members yet to SyncGroup this generation
        self.supported_protocols: Counter[str] = Counter()
        self.new_member_added = False
        self.join_phase: tuple[Any, ...] | None = None  # ("initial", delay, remaining) | ("rebalance",)
        self.sync_generation: int | None = None
        self.subscribed_topics: frozenset[str] | None = None
        self.offsets: dict[TopicPartition, OffsetAndMetadata] = {}

    def __repr__(self) -> str:
        return (f"ClassicGroup({self.group_id!r}, {self.state.value}, generation={self.generation_id}, "
                f"members={list(self.members)})")

    # ------------------------------------------------------------ state

    def transition(self, state: GroupState, now_ms: int) -> None:
        if self.state not in _VALID_PREVIOUS[state]:
            raise AssertionError(f"group {self.group_id}: invalid transition {self.state.value} -> {state.value}")
        self.previous_state = self.state
        self.state = state
        self.state_timestamp = now_ms

    @property
    def can_rebalance(self) -> bool:
        return self.state in _VALID_PREVIOUS[PREPARING_REBALANCE]

    @property
    def uses_consumer_protocol(self) -> bool:
        return self.protocol_type == CONSUMER_PROTOCOL_TYPE

    # ------------------------------------------------------------ members

    def add(self, member: ClassicGroupMember, waiter: Any = None) -> None:
        if member.group_instance_id is not None:
            self.static_members[member.group_instance_id] = member.member_id
        if not self.members:
            self.protocol_type = member.protocol_type
        self.members[member.member_id] = member
        self.supported_protocols.update(_protocol_names(member.protocols))
        if waiter is not None:
            member.join_waiters.append(waiter)
        if self.leader_id is None:
            self.leader_id = member.member_id
        self.pending_members.pop(member.member_id, None)

    def remove(self, member_id: str) -> ClassicGroupMember | None:
        member = self.members.pop(member_id, None)
        if member is not None:
            self.supported_protocols.subtract(_protocol_names(member.protocols))
            if member.group_instance_id is not None and \
                    self.static_members.get(member.group_instance_id) == member_id:
                del self.static_members[member.group_instance_id]
        if self.leader_id == member_id:
            self.leader_id = next(iter(self.members), None)
        self.pending_members.pop(member_id, None)
        self.pending_sync.pop(member_id, None)
        return member

    def update_member(self, member: ClassicGroupMember, protocols: Sequence[tuple[str, bytes]],
                      rebalance_timeout_ms: int, session_timeout_ms: int, waiter: Any = None) -> None:
        self.supported_protocols.subtract(_protocol_names(member.protocols))
        member.protocols = tuple(protocols)
        self.supported_protocols.update(_protocol_names(member.protocols))
        member.rebalance_timeout_ms = rebalance_timeout_ms
        member.session_timeout_ms = session_timeout_ms
        if waiter is not None:
            member.join_waiters.append(waiter)

    def replace_static_member(self, instance_id: str, old_id: str, new_id: str, d: Decisions) -> ClassicGroupMember:
        """Give a static member a new member id; requests parked under the old id are fenced."""
        member = self.members.pop(old_id)
        for waiter in member.join_waiters:
            d.reply(waiter, JoinResult(ErrorCode.FENCED_INSTANCE_ID, member_id=old_id))
        for waiter in member.sync_waiters:
            d.reply(waiter, SyncResult(ErrorCode.FENCED_INSTANCE_ID))
        member.join_waiters.clear()
        member.sync_waiters.clear()
        member.member_id = new_id
        self.members[new_id] = member
        if self.leader_id == old_id:
            self.leader_id = new_id
        if old_id in self.pending_sync:
            del self.pending_sync[old_id]
            self.pending_sync[new_id] = None
        self.static_members[instance_id] = new_id
        return member

    def validate_member(self, member_id: str, group_instance_id: str | None) -> ErrorCode | None:
        """Kafka's ``validateMember``: a given instance id must map to this member id (else
        FENCED_INSTANCE_ID, or UNKNOWN_MEMBER_ID if unknown), and the member id must exist."""
        if group_instance_id is not None:
            current = self.static_members.get(group_instance_id)
            if current is None:
                return ErrorCode.UNKNOWN_MEMBER_ID
            if current != member_id:
                return ErrorCode.FENCED_INSTANCE_ID
        if member_id not in self.members:
            return ErrorCode.UNKNOWN_MEMBER_ID
        return None

    @property
    def num_awaiting_join(self) -> int:
        return sum(1 for m in self.members.values() if m.awaiting_join)

    def has_all_members_joined(self) -> bool:
        return len(self.members) == self.num_awaiting_join and not self.pending_members

    def rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def supports_protocols(self, protocol_type: str, names: set[str]) -> bool:
        if self.state is EMPTY:
            return bool(protocol_type) and bool(names)
        size = len(self.members)
        return self.protocol_type == protocol_type and any(self.supported_protocols[n] == size for n in names)

    def select_protocol(self) -> str:
        """Each member votes for its preferred protocol among those every member supports; most votes
        win (ties: the protocol voted for first)."""
        size = len(self.members)
        candidates = {name for name, count in self.supported_protocols.items() if count == size}
        votes: dict[str, int] = {}
        for member in self.members.values():
            choice = member.vote(candidates)
            if choice is not None:
                votes[choice] = votes.get(choice, 0) + 1
        if not votes:
            raise AssertionError(f"group {self.group_id}: no protocol common to all members")
        return max(votes, key=votes.__getitem__)

    def maybe_elect_new_joined_leader(self) -> bool:
        """Keep the leader if it rejoined, else promote the first member that did; False if none did."""
        if self.leader_id is None:
            return False
        if self.members[self.leader_id].awaiting_join:
            return True
        for member in self.members.values():
            if member.awaiting_join:
                self.leader_id = member.member_id
                return True
        return False

    def init_next_generation(self, now_ms: int) -> None:
        self.generation_id += 1
        if self.members:
            self.protocol_name = self.select_protocol()
            self.subscribed_topics = self.compute_subscribed_topics()
            self.transition(COMPLETING_REBALANCE, now_ms)
        else:
            self.protocol_name = None
            self.subscribed_topics = self.compute_subscribed_topics()
            self.transition(EMPTY, now_ms)
        self.pending_sync.clear()

    def compute_subscribed_topics(self) -> frozenset[str] | None:
        """The topics the members subscribe to, for consumer groups; None when unknown."""
        if self.protocol_type != CONSUMER_PROTOCOL_TYPE:
            return None
        if not self.members:
            return frozenset()
        if self.protocol_name is None:
            return None
        topics: set[str] = set()
        for member in self.members.values():
            parsed = parse_subscription_topics(member.metadata(self.protocol_name))
            if parsed is None:
                return None
            topics.update(parsed)
        return frozenset(topics)

    def is_subscribed_to_topic(self, topic: str) -> bool:
        """Kafka 4: when the subscriptions are unknown, a consumer group counts as subscribed."""
        if self.subscribed_topics is None:
            return self.uses_consumer_protocol
        return topic in self.subscribed_topics

    def member_list(self) -> tuple[JoinedMember, ...]:
        return tuple(JoinedMember(m.member_id, m.group_instance_id, m.metadata(self.protocol_name))
                     for m in self.members.values())

    def snapshot(self, assignment: Mapping[str, bytes]) -> GroupMetadataSnapshot:
        return GroupMetadataSnapshot(
            protocol_type=self.protocol_type or "", generation=self.generation_id, protocol=self.protocol_name,
            leader=self.leader_id,
            current_state_timestamp=self.state_timestamp if self.state_timestamp is not None else -1,
            members=tuple(MemberMetadataSnapshot(
                member_id=m.member_id, group_instance_id=m.group_instance_id, client_id=m.client_id,
                client_host=m.client_host, rebalance_timeout_ms=m.rebalance_timeout_ms,
                session_timeout_ms=m.session_timeout_ms, subscription=m.metadata(self.protocol_name),
                assignment=assignment.get(m.member_id, b"")) for m in self.members.values()))


_SUBSCRIPTION_V0: Any = None


def parse_subscription_topics(metadata: bytes) -> list[str] | None:
    """The topics of a ``ConsumerProtocolSubscription``, read as version 0 (the prefix every version
    shares), as Kafka does; None if the bytes do not parse."""
    global _SUBSCRIPTION_V0
    if _SUBSCRIPTION_V0 is None:
        _SUBSCRIPTION_V0 = codec.codec_for(codec.internal_table("ConsumerProtocolSubscription"), 0)
    if len(metadata) < 2:
        return None
    try:
        subscription, _ = _SUBSCRIPTION_V0.decode(memoryview(metadata), 2)
    except Exception:  # noqa: BLE001 - any malformation means "unknown", as Kafka's SchemaException does
        return None
    return list(subscription.topics)


# ---------------------------------------------------------------- the state machine

class GroupMetadataManager:
    """Every classic group of this coordinator, driven by events; see the module docstring."""

    def __init__(self, config: GroupConfig | None = None, new_uuid: Callable[[], str] | None = None) -> None:
        self.config = config or GroupConfig()
        self._new_uuid = new_uuid or (lambda: str(uuid.uuid4()))
        self.groups: dict[str, ClassicGroup] = {}
        self.timers: dict[TimerKey, int] = {}
        # Transactional offset commits not yet committed or aborted: producer id -> group -> partition.
        self.pending_txn_offsets: dict[int, dict[str, dict[TopicPartition, OffsetAndMetadata]]] = {}

    # ------------------------------------------------------------ timers

    def _schedule(self, d: Decisions, key: TimerKey, deadline: int) -> None:
        self.timers[key] = deadline
        d.timers[key] = deadline

    def _cancel(self, d: Decisions, key: TimerKey) -> None:
        if self.timers.pop(key, None) is not None:
            d.timers[key] = None

    def _reschedule_heartbeat(self, d: Decisions, group: ClassicGroup, member: ClassicGroupMember, now: int,
                              timeout_ms: int | None = None) -> None:
        timeout = member.session_timeout_ms if timeout_ms is None else timeout_ms
        self._schedule(d, (HEARTBEAT_TIMER, group.group_id, member.member_id), now + timeout)

    def on_timer(self, key: TimerKey, now: int) -> Decisions:
        """A timer fired. Stale firings (cancelled or moved later) are ignored."""
        d = Decisions()
        deadline = self.timers.get(key)
        if deadline is None or deadline > now:
            return d
        del self.timers[key]
        group = self.groups.get(key[1])
        if group is None:
            return d
        if key[0] == JOIN_TIMER:
            self._on_join_timer(group, d, now)
        elif key[0] == SYNC_TIMER:
            self._on_sync_timer(group, d, now)
        elif key[0] == HEARTBEAT_TIMER:
            self._on_heartbeat_timer(group, key[2], d, now)
        return d

    def advance(self, now: int) -> Decisions:
        """Fire every timer due at ``now``, earliest first (for virtual-clock drivers)."""
        out = Decisions()
        while True:
            due = [(deadline, key) for key, deadline in self.timers.items() if deadline <= now]
            if not due:
                return out
            _, key = min(due)
            d = self.on_timer(key, now)
            out.replies.extend(d.replies)
            out.timers.update(d.timers)
            out.writes.extend(d.writes)
            out.events.extend(d.events)

    # ------------------------------------------------------------ JoinGroup

    def join_group(self, req: JoinRequest, now: int) -> Decisions:
        d = Decisions()
        if not req.group_id:
            d.reply(req.waiter, JoinResult(ErrorCode.INVALID_GROUP_ID, member_id=req.member_id))
            return d
        cfg = self.config
        if not cfg.min_session_timeout_ms <= req.session_timeout_ms <= cfg.max_session_timeout_ms:
            d.reply(req.waiter, JoinResult(ErrorCode.INVALID_SESSION_TIMEOUT, member_id=req.member_id))
            return d
        unknown = req.member_id == UNKNOWN_MEMBER_ID
        group = self.groups.get(req.group_id)
        if group is None:
            if not unknown:
                d.reply(req.waiter, JoinResult(ErrorCode.UNKNOWN_MEMBER_ID, member_id=req.member_id))
                return d
            group = self.groups[req.group_id] = ClassicGroup(req.group_id, EMPTY, now)
        if not self._accept_joining_member(group, req.member_id):
            removed = group.members.get(req.member_id)
            if removed is not None:
                self._drop_member(group, removed, d, "group.max.size reached")
            else:
                group.remove(req.member_id)
            d.reply(req.waiter, JoinResult(ErrorCode.GROUP_MAX_SIZE_REACHED))
        elif unknown:
            self._join_new_member(group, req, d, now)
        else:
            self._join_existing_member(group, req, d, now)
        self._maybe_complete_join(group, d, now)
        return d

    def _accept_joining_member(self, group: ClassicGroup, member_id: str) -> bool:
        max_size = self.config.max_size
        if group.state in (EMPTY, DEAD):
            return True
        if group.state is PREPARING_REBALANCE:
            # The number of members awaiting join, not the group size, so that the limit also sheds the
            # last rejoining members of a group that grew past it.
            member = group.members.get(member_id)
            return (member is not None and member.awaiting_join) or group.num_awaiting_join < max_size
        return member_id in group.members or len(group.members) < max_size

    def _join_new_member(self, group: ClassicGroup, req: JoinRequest, d: Decisions, now: int) -> None:
        if group.state is DEAD:
            d.reply(req.waiter, JoinResult(ErrorCode.COORDINATOR_NOT_AVAILABLE))
            return
        if not group.supports_protocols(req.protocol_type, _protocol_names(req.protocols)):
            d.reply(req.waiter, JoinResult(ErrorCode.INCONSISTENT_GROUP_PROTOCOL))
            return
        prefix = req.group_instance_id if req.group_instance_id is not None else req.client_id
        new_id = make_member_id(prefix, self._new_uuid())
        if req.group_instance_id is not None:
            existing = group.static_members.get(req.group_instance_id)
            if existing is not None:
                self._update_static_member_and_rebalance(group, existing, new_id, req, d, now)
            else:
                self._add_member_and_rebalance(group, new_id, req, d, now)
        elif req.require_known_member_id:
            group.pending_members[new_id] = None
            self._schedule(d, (HEARTBEAT_TIMER, group.group_id, new_id), now + req.session_timeout_ms)
            d.reply(req.waiter, JoinResult(ErrorCode.MEMBER_ID_REQUIRED, member_id=new_id))
        else:
            self._add_member_and_rebalance(group, new_id, req, d, now)

    def _join_existing_member(self, group: ClassicGroup, req: JoinRequest, d: Decisions, now: int) -> None:
        member_id = req.member_id
        if group.state is DEAD:
            d.reply(req.waiter, JoinResult(ErrorCode.COORDINATOR_NOT_AVAILABLE, member_id=member_id))
            return
        if not group.supports_protocols(req.protocol_type, _protocol_names(req.protocols)):
            d.reply(req.waiter, JoinResult(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, member_id=member_id))
            return
        if member_id in group.pending_members:
            if req.group_instance_id is not None:
                # Pending ids are only handed to dynamic members; Kafka fails this with an internal error.
                d.reply(req.waiter, JoinResult(ErrorCode.UNKNOWN_MEMBER_ID, member_id=member_id))
                return
            self._add_member_and_rebalance(group, member_id, req, d, now)
            return
        error = group.validate_member(member_id, req.group_instance_id)
        if error is not None:
            d.reply(req.waiter, JoinResult(error, member_id=member_id))
            return
        member = group.members[member_id]
        if group.state is PREPARING_REBALANCE:
            self._update_member_and_rebalance(group, member, req, d, now)
        elif group.state is COMPLETING_REBALANCE:
            if member.matches(req.protocols):
                # It probably missed the JoinGroup answer: give it the current generation again.
                d.reply(req.waiter, self._generation_result(group, member_id, with_members=True))
            else:
                self._update_member_and_rebalance(group, member, req, d, now)
        elif group.state is STABLE:
            if group.leader_id == member_id or not member.matches(req.protocols):
                # The leader rejoining asks for a new assignment (e.g. topic metadata changed).
                self._update_member_and_rebalance(group, member, req, d, now)
            else:
                d.reply(req.waiter, self._generation_result(group, member_id, with_members=False))
        else:
            d.reply(req.waiter, JoinResult(ErrorCode.UNKNOWN_MEMBER_ID, member_id=member_id))

    def _generation_result(self, group: ClassicGroup, member_id: str, with_members: bool) -> JoinResult:
        is_leader = group.leader_id == member_id
        return JoinResult(
            ErrorCode.NONE, member_id=member_id, generation_id=group.generation_id,
            protocol_type=group.protocol_type, protocol_name=group.protocol_name, leader=group.leader_id or "",
            members=group.member_list() if with_members and is_leader else ())

    def _add_member_and_rebalance(self, group: ClassicGroup, member_id: str, req: JoinRequest, d: Decisions,
                                  now: int) -> None:
        member = ClassicGroupMember(member_id, req.group_instance_id, req.client_id, req.client_host,
                                    req.rebalance_timeout_ms, req.session_timeout_ms, req.protocol_type,
                                    req.protocols)
        member.is_new = True
        if group.state is PREPARING_REBALANCE and group.join_phase and group.join_phase[0] == "initial":
            group.new_member_added = True
        group.add(member, req.waiter)
        # A new member cannot heartbeat (it has no id yet) and a dropped connection goes unnoticed while
        # its JoinGroup is parked, so new members time out on their own, longer clock.
        self._reschedule_heartbeat(d, group, member, now, self.config.new_member_join_timeout_ms)
        self._maybe_prepare_rebalance_or_complete_join(group, d, now)

    def _update_member_and_rebalance(self, group: ClassicGroup, member: ClassicGroupMember, req: JoinRequest,
                                     d: Decisions, now: int) -> None:
        group.update_member(member, req.protocols, req.rebalance_timeout_ms, req.session_timeout_ms, req.waiter)
        self._maybe_prepare_rebalance_or_complete_join(group, d, now)

    def _update_static_member_and_rebalance(self, group: ClassicGroup, old_id: str, new_id: str,
                                            req: JoinRequest, d: Decisions, now: int) -> None:
        assert req.group_instance_id is not None
        previous_leader = group.leader_id
        member = group.replace_static_member(req.group_instance_id, old_id, new_id, d)
        d.note("group.static_member_replaced", group=group.group_id, instance=req.group_instance_id,
               old_member=old_id, member=new_id, state=group.state.value)
        self._cancel(d, (HEARTBEAT_TIMER, group.group_id, old_id))
        self._reschedule_heartbeat(d, group, member, now)
        context = StaticRejoin(req.group_instance_id, old_id, new_id, member.protocols,
                               member.rebalance_timeout_ms, member.session_timeout_ms, previous_leader,
                               req.supports_skip_assignment)
        group.update_member(member, req.protocols, req.rebalance_timeout_ms, req.session_timeout_ms, req.waiter)
        if group.state is STABLE:
            if group.protocol_name == group.select_protocol():
                # Same protocol choice: keep the assignment, write the new member id, no rebalance.
                assignment = {m.member_id: m.assignment for m in group.members.values()}
                d.writes.append(GroupWrite(group.group_id, group.snapshot(assignment), WRITE_STATIC,
                                           group.generation_id, context))
            else:
                self._maybe_prepare_rebalance_or_complete_join(group, d, now)
        elif group.state is COMPLETING_REBALANCE:
            # The leader may already be assigning to the old member id: start over.
            self._prepare_rebalance(group, d, now)
        # PreparingRebalance: the member now awaits the join like everyone else.

    def _maybe_prepare_rebalance_or_complete_join(self, group: ClassicGroup, d: Decisions, now: int) -> None:
        if group.can_rebalance:
            self._prepare_rebalance(group, d, now)
        else:
            self._maybe_complete_join(group, d, now)

    def _maybe_complete_join(self, group: ClassicGroup, d: Decisions, now: int) -> None:
        # The initial (delayed) rebalance of an Empty group never completes early.
        if group.state is PREPARING_REBALANCE and group.join_phase == ("rebalance",) \
                and group.has_all_members_joined():
            self._complete_join(group, d, now)

    def _prepare_rebalance(self, group: ClassicGroup, d: Decisions, now: int) -> None:
        if group.state is COMPLETING_REBALANCE:
            self._reset_and_propagate_assignment_error(group, ErrorCode.REBALANCE_IN_PROGRESS, d, now)
        self._cancel(d, (SYNC_TIMER, group.group_id))
        group.sync_generation = None
        initial = group.state is EMPTY
        d.note("group.rebalance_started", group=group.group_id, generation=group.generation_id,
               members=len(group.members), initial=initial)
        group.transition(PREPARING_REBALANCE, now)
        key = (JOIN_TIMER, group.group_id)
        if initial:
            delay = self.config.initial_rebalance_delay_ms
            remaining = max(group.rebalance_timeout_ms() - delay, 0)
            group.join_phase = ("initial", delay, remaining)
            group.new_member_added = False
            self._schedule(d, key, now + delay)
        else:
            group.join_phase = ("rebalance",)
            if group.has_all_members_joined():
                self._complete_join(group, d, now)
            else:
                self._schedule(d, key, now + group.rebalance_timeout_ms())

    def _on_join_timer(self, group: ClassicGroup, d: Decisions, now: int) -> None:
        if group.state is not PREPARING_REBALANCE or group.join_phase is None:
            return
        if group.join_phase[0] == "initial":
            _, delay, remaining = group.join_phase
            if group.new_member_added and remaining != 0:
                # KIP-134: members keep arriving; wait another delay, within the rebalance timeout.
                group.new_member_added = False
                new_delay = min(self.config.initial_rebalance_delay_ms, remaining)
                group.join_phase = ("initial", new_delay, max(remaining - delay, 0))
                self._schedule(d, (JOIN_TIMER, group.group_id), now + new_delay)
                return
        self._complete_join(group, d, now)

    def _complete_join(self, group: ClassicGroup, d: Decisions, now: int) -> None:
        self._cancel(d, (JOIN_TIMER, group.group_id))
        group.join_phase = None
        for member in list(group.members.values()):
            if not member.awaiting_join and not member.is_static:
                self._drop_member(group, member, d, "did not rejoin within the rebalance timeout")
        if group.state is DEAD:
            return
        if not group.maybe_elect_new_joined_leader() and group.members:
            # Only static members that have not rejoined are left: wait for them (or their session timeout).
            group.join_phase = ("rebalance",)
            self._schedule(d, (JOIN_TIMER, group.group_id), now + group.rebalance_timeout_ms())
            return
        group.init_next_generation(now)
        d.note("group.generation_started", group=group.group_id, generation=group.generation_id,
               state=group.state.value, protocol=group.protocol_name, leader=group.leader_id,
               members=len(group.members))
        if group.state is EMPTY:
            d.writes.append(GroupWrite(group.group_id, group.snapshot({}), WRITE_EMPTY, group.generation_id))
            return
        for member in group.members.values():
            result = self._generation_result(group, member.member_id, with_members=True)
            self._complete_join_waiters(member, result, d)
            self._reschedule_heartbeat(d, group, member, now)
            member.is_new = False
            group.pending_sync[member.member_id] = None
        group.sync_generation = group.generation_id
        self._schedule(d, (SYNC_TIMER, group.group_id), now + group.rebalance_timeout_ms())

    # ------------------------------------------------------------ SyncGroup

    def sync_group(self, req: SyncRequest, now: int) -> Decisions:
        d = Decisions()
        if not req.group_id:
            d.reply(req.waiter, SyncResult(ErrorCode.INVALID_GROUP_ID))
            return d
        group = self.groups.get(req.group_id)
        if group is None or group.state is EMPTY:
            d.reply(req.waiter, SyncResult(ErrorCode.UNKNOWN_MEMBER_ID))
            return d
        error = self._validate_sync(group, req)
        if error is not None:
            d.reply(req.waiter, SyncResult(error))
        elif group.state is PREPARING_REBALANCE:
            d.reply(req.waiter, SyncResult(ErrorCode.REBALANCE_IN_PROGRESS))
        elif group.state is COMPLETING_REBALANCE:
            group.members[req.member_id].sync_waiters.append(req.waiter)
            self._remove_pending_sync_member(group, req.member_id, d)
            if group.leader_id == req.member_id:
                assignment = dict(req.assignments)
                for member_id in group.members:
                    assignment.setdefault(member_id, b"")
                d.writes.append(GroupWrite(group.group_id, group.snapshot(assignment), WRITE_SYNC,
                                           group.generation_id, assignment))
        elif group.state is STABLE:
            self._remove_pending_sync_member(group, req.member_id, d)
            member = group.members[req.member_id]
            d.reply(req.waiter, SyncResult(ErrorCode.NONE, group.protocol_type, group.protocol_name,
                                           member.assignment))
            self._reschedule_heartbeat(d, group, member, now)
        return d

    def _validate_sync(self, group: ClassicGroup, req: SyncRequest) -> ErrorCode | None:
        if group.state is DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        error = group.validate_member(req.member_id, req.group_instance_id)
        if error is not None:
            return error
        if req.generation_id != group.generation_id:
            return ErrorCode.ILLEGAL_GENERATION
        if _inconsistent(req.protocol_type, group.protocol_type) or \
                _inconsistent(req.protocol_name, group.protocol_name):
            return ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        return None

    def _remove_pending_sync_member(self, group: ClassicGroup, member_id: str, d: Decisions) -> None:
        group.pending_sync.pop(member_id, None)
        if not group.pending_sync:
            self._cancel(d, (SYNC_TIMER, group.group_id))

    def _on_sync_timer(self, group: ClassicGroup, d: Decisions, now: int) -> None:
        if group.sync_generation != group.generation_id:
            return
        if group.state in (COMPLETING_REBALANCE, STABLE) and group.pending_sync:
            for member_id in list(group.pending_sync):
                member = group.members.get(member_id)
                if member is not None:
                    self._drop_member(group, member, d, "did not sync within the rebalance timeout")
            self._prepare_rebalance(group, d, now)

    def _set_and_propagate_assignment(self, group: ClassicGroup, assignment: Mapping[str, bytes], d: Decisions,
                                      now: int) -> None:
        for member in group.members.values():
            member.assignment = assignment.get(member.member_id, b"")
        self._propagate_assignment(group, ErrorCode.NONE, d, now)

    def _reset_and_propagate_assignment_error(self, group: ClassicGroup, error: ErrorCode, d: Decisions,
                                              now: int) -> None:
        for member in group.members.values():
            member.assignment = b""
        self._propagate_assignment(group, error, d, now)

    def _propagate_assignment(self, group: ClassicGroup, error: ErrorCode, d: Decisions, now: int) -> None:
        ok = error is ErrorCode.NONE
        for member in group.members.values():
            if not member.sync_waiters:
                continue
            result = SyncResult(error, group.protocol_type if ok else None, group.protocol_name if ok else None,
                                member.assignment)
            for waiter in member.sync_waiters:
                d.reply(waiter, result)
            member.sync_waiters.clear()
            # Its session timer was ignored while it was parked; start a fresh one.
            self._reschedule_heartbeat(d, group, member, now)

    # ------------------------------------------------------------ group writes

    def group_write_done(self, write: GroupWrite, error: ErrorCode | None, now: int) -> Decisions:
        """A `GroupWrite` is durable (``error`` None) or failed (the error to tell the members)."""
        d = Decisions()
        group = self.groups.get(write.group_id)
        if group is None or group.generation_id != write.generation:
            return d
        if write.kind == WRITE_SYNC and group.state is COMPLETING_REBALANCE:
            if error is not None:
                self._reset_and_propagate_assignment_error(group, error, d, now)
                self._maybe_prepare_rebalance_or_complete_join(group, d, now)
            else:
                self._set_and_propagate_assignment(group, write.context, d, now)
                group.transition(STABLE, now)
        elif write.kind == WRITE_STATIC and group.state is STABLE:
            self._static_rejoin_written(group, write.context, error, d, now)
        return d

    def _static_rejoin_written(self, group: ClassicGroup, ctx: StaticRejoin, error: ErrorCode | None,
                               d: Decisions, now: int) -> None:
        member = group.members.get(ctx.new_member_id)
        if member is None:
            return
        if error is not None:
            # Not durable: go back to the old member id, as Kafka reverts the replacement.
            waiters, member.join_waiters = member.join_waiters, []
            group.update_member(member, ctx.old_protocols, ctx.old_rebalance_timeout_ms, ctx.old_session_timeout_ms)
            old = group.replace_static_member(ctx.group_instance_id, ctx.new_member_id, ctx.old_member_id, d)
            self._cancel(d, (HEARTBEAT_TIMER, group.group_id, ctx.new_member_id))
            self._reschedule_heartbeat(d, group, old, now)
            result = JoinResult(error, generation_id=group.generation_id, protocol_type=group.protocol_type,
                                protocol_name=group.protocol_name, leader=ctx.previous_leader or "")
            for waiter in waiters:
                d.reply(waiter, result)
            return
        if ctx.supports_skip_assignment:
            is_leader = group.leader_id == member.member_id
            result = JoinResult(ErrorCode.NONE, member.member_id, group.generation_id, group.protocol_type,
                                group.protocol_name, group.leader_id or "", skip_assignment=is_leader,
                                members=group.member_list() if is_leader else ())
        else:
            # Before v9 the old leader id is returned, so that a rejoining leader does not assign.
            result = JoinResult(ErrorCode.NONE, member.member_id, group.generation_id, group.protocol_type,
                                group.protocol_name, ctx.previous_leader or "")
        self._complete_join_waiters(member, result, d)

    # ------------------------------------------------------------ Heartbeat and LeaveGroup

    def heartbeat(self, group_id: str, member_id: str, group_instance_id: str | None, generation_id: int,
                  now: int) -> tuple[ErrorCode, Decisions]:
        d = Decisions()
        if not group_id:
            return ErrorCode.INVALID_GROUP_ID, d
        group = self.groups.get(group_id)
        if group is None:
            return ErrorCode.UNKNOWN_MEMBER_ID, d
        if group.state is DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE, d
        error = group.validate_member(member_id, group_instance_id)
        if error is not None:
            return error, d
        if generation_id != group.generation_id:
            return ErrorCode.ILLEGAL_GENERATION, d
        if group.state is EMPTY:
            return ErrorCode.UNKNOWN_MEMBER_ID, d
        self._reschedule_heartbeat(d, group, group.members[member_id], now)
        if group.state is PREPARING_REBALANCE:
            return ErrorCode.REBALANCE_IN_PROGRESS, d
        return ErrorCode.NONE, d

    def _on_heartbeat_timer(self, group: ClassicGroup, member_id: str, d: Decisions, now: int) -> None:
        if group.state is DEAD:
            return
        if member_id in group.pending_members:
            group.pending_members.pop(member_id)
            self._maybe_complete_join(group, d, now)
            return
        member = group.members.get(member_id)
        if member is not None and not member.has_satisfied_heartbeat:
            reason = "first join timed out" if member.is_new else "session timeout expired"
            self._remove_member_and_update_group(group, member, d, now, reason)

    def leave_group(self, group_id: str, members: Sequence[tuple[str, str | None]],
                    now: int) -> tuple[ErrorCode, list[ErrorCode], Decisions]:
        """``members``: (member id, group instance id) pairs; answers a top-level error and one per member."""
        d = Decisions()
        if not group_id:
            return ErrorCode.INVALID_GROUP_ID, [], d
        group = self.groups.get(group_id)
        if group is None:
            return ErrorCode.NONE, [ErrorCode.UNKNOWN_MEMBER_ID] * len(members), d
        if group.state is DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE, [], d
        errors = []
        for member_id, instance_id in members:
            if member_id == UNKNOWN_MEMBER_ID:
                # Administrative removal by instance id alone.
                current = group.static_members.get(instance_id) if instance_id is not None else None
                if current is None:
                    errors.append(ErrorCode.UNKNOWN_MEMBER_ID)
                else:
                    self._remove_member_and_update_group(group, group.members[current], d, now, "removed by instance id")
                    errors.append(ErrorCode.NONE)
            elif member_id in group.pending_members:
                group.pending_members.pop(member_id)
                self._cancel(d, (HEARTBEAT_TIMER, group_id, member_id))
                self._maybe_complete_join(group, d, now)
                errors.append(ErrorCode.NONE)
            else:
                error = group.validate_member(member_id, instance_id)
                if error is None:
                    self._remove_member_and_update_group(group, group.members[member_id], d, now, "left the group")
                    errors.append(ErrorCode.NONE)
                else:
                    errors.append(error)
        return ErrorCode.NONE, errors, d

    # ------------------------------------------------------------ member removal

    def _complete_join_waiters(self, member: ClassicGroupMember, result: JoinResult, d: Decisions) -> None:
        for waiter in member.join_waiters:
            d.reply(waiter, result)
        member.join_waiters.clear()

    def _answer_removed(self, member: ClassicGroupMember, d: Decisions) -> None:
        # UNKNOWN_MEMBER_ID makes a live client reset its member id and join again.
        self._complete_join_waiters(member, JoinResult(ErrorCode.UNKNOWN_MEMBER_ID), d)
        for waiter in member.sync_waiters:
            d.reply(waiter, SyncResult(ErrorCode.UNKNOWN_MEMBER_ID))
        member.sync_waiters.clear()

    def _drop_member(self, group: ClassicGroup, member: ClassicGroupMember, d: Decisions, reason: str) -> None:
        d.note("group.member_removed", group=group.group_id, member=member.member_id,
               instance=member.group_instance_id, reason=reason)
        self._answer_removed(member, d)
        group.remove(member.member_id)
        self._cancel(d, (HEARTBEAT_TIMER, group.group_id, member.member_id))

    def _remove_member_and_update_group(self, group: ClassicGroup, member: ClassicGroupMember, d: Decisions,
                                        now: int, reason: str) -> None:
        self._drop_member(group, member, d, reason)
        if group.state in (STABLE, COMPLETING_REBALANCE):
            self._maybe_prepare_rebalance_or_complete_join(group, d, now)
        elif group.state is PREPARING_REBALANCE:
            self._maybe_complete_join(group, d, now)

    # ------------------------------------------------------------ offsets

    def validate_offset_commit(self, group_id: str, generation_id: int, member_id: str,
                               group_instance_id: str | None, now: int) -> tuple[ErrorCode, Decisions]:
        """May this commit be stored? A commit with generation < 0 creates an unknown group (Empty)."""
        d = Decisions()
        group = self.groups.get(group_id)
        if group is None:
            if generation_id >= 0:
                return ErrorCode.ILLEGAL_GENERATION, d
            group = self.groups[group_id] = ClassicGroup(group_id, EMPTY, now)
        if group.state is DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE, d
        if generation_id < 0 and group.state is EMPTY:
            return ErrorCode.NONE, d
        if generation_id >= 0 or member_id or group_instance_id is not None:
            error = group.validate_member(member_id, group_instance_id)
            if error is not None:
                return error, d
            if generation_id != group.generation_id:
                return ErrorCode.ILLEGAL_GENERATION, d
        elif group.state is not EMPTY:
            return ErrorCode.UNKNOWN_MEMBER_ID, d
        if group.state is COMPLETING_REBALANCE:
            return ErrorCode.REBALANCE_IN_PROGRESS, d
        member = group.members.get(member_id)
        if member is not None:
            self._reschedule_heartbeat(d, group, member, now)
        return ErrorCode.NONE, d

    def apply_offset_commits(self, group_id: str, commits: Mapping[TopicPartition, OffsetAndMetadata],
                             now: int) -> None:
        """Store committed offsets (already written to the log); of two commits of one partition the one
        later in the log wins."""
        group = self.groups.get(group_id)
        if group is None:
            # Deleted while the commit was being written: the log has the commit after the deletion.
            group = self.groups[group_id] = ClassicGroup(group_id, EMPTY, now)
        for tp, om in commits.items():
            current = group.offsets.get(tp)
            if current is None or om.position > current.position or om.position < 0:
                group.offsets[tp] = om

    def validate_txn_offset_commit(self, group_id: str, generation_id: int, member_id: str,
                                   group_instance_id: str | None, now: int) -> ErrorCode:
        """May a TxnOffsetCommit be stored? Kafka's ``doTxnCommitOffsets``: an unknown group is created
        Empty; members and generations are checked only when given (KIP-447), and a rebalance in
        progress does not refuse it."""
        group = self.groups.get(group_id)
        if group is None:
            group = self.groups[group_id] = ClassicGroup(group_id, EMPTY, now)
        if group.state is DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        if group_instance_id is not None:
            current = group.static_members.get(group_instance_id)
            if current is not None and current != member_id:
                return ErrorCode.FENCED_INSTANCE_ID
        if member_id and member_id not in group.members:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if generation_id >= 0 and generation_id != group.generation_id:
            return ErrorCode.ILLEGAL_GENERATION
        return ErrorCode.NONE

    def add_pending_txn_offsets(self, producer_id: int, group_id: str,
                                commits: Mapping[TopicPartition, OffsetAndMetadata]) -> None:
        """Offsets written in a transaction: invisible to OffsetFetch until its COMMIT marker."""
        self.pending_txn_offsets.setdefault(producer_id, {}).setdefault(group_id, {}).update(commits)

    def complete_txn(self, producer_id: int, commit: bool, in_partition: Callable[[str], bool], now: int) -> int:
        """A COMMIT or ABORT marker of ``producer_id`` reached the ``__consumer_offsets`` partition whose
        groups ``in_partition`` selects: publish or drop their pending offsets. Returns how many."""
        pending = self.pending_txn_offsets.get(producer_id)
        if not pending:
            return 0
        count = 0
        for group_id in [g for g in pending if in_partition(g)]:
            offsets = pending.pop(group_id)
            count += len(offsets)
            if commit:
                self.apply_offset_commits(group_id, offsets, now)
        if not pending:
            del self.pending_txn_offsets[producer_id]
        return count

    def unstable_partitions(self, group_id: str) -> set[TopicPartition]:
        """The group's partitions with a transactional offset commit still pending (OffsetFetch with
        ``require_stable`` answers them UNSTABLE_OFFSET_COMMIT)."""
        out: set[TopicPartition] = set()
        for by_group in self.pending_txn_offsets.values():
            out.update(by_group.get(group_id, ()))
        return out

    def fetch_offsets(self, group_id: str, partitions: Sequence[TopicPartition] | None
                      ) -> list[tuple[TopicPartition, OffsetAndMetadata | None]]:
        """Committed offsets of the partitions asked for (None: every partition with one, sorted)."""
        group = self.groups.get(group_id)
        offsets = group.offsets if group is not None and group.state is not DEAD else {}
        if partitions is None:
            return sorted(offsets.items())
        return [(tp, offsets.get(tp)) for tp in partitions]

    def delete_offsets(self, group_id: str, topics: Sequence[tuple[str, Sequence[int]]]
                       ) -> tuple[ErrorCode, list[tuple[str, list[tuple[int, ErrorCode]]]], list[TopicPartition]]:
        """OffsetDelete: (group error, per-partition errors, offsets removed (to tombstone))."""
        group = self.groups.get(group_id)
        if group is None or group.state is DEAD:
            return ErrorCode.GROUP_ID_NOT_FOUND, [], []
        if group.state is not EMPTY and not group.uses_consumer_protocol:
            return ErrorCode.NON_EMPTY_GROUP, [], []
        results = []
        removed: list[TopicPartition] = []
        for topic, partitions in topics:
            if group.is_subscribed_to_topic(topic):
                results.append((topic, [(p, ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC) for p in partitions]))
                continue
            for p in partitions:
                if group.offsets.pop((topic, p), None) is not None:
                    removed.append((topic, p))
            results.append((topic, [(p, ErrorCode.NONE) for p in partitions]))
        return ErrorCode.NONE, results, removed

    def delete_group(self, group_id: str, now: int) -> tuple[ErrorCode, list[TopicPartition]]:
        """DeleteGroups for one group: (error, offsets removed); on NONE the group is gone too."""
        group = self.groups.get(group_id)
        if group is None or group.state is DEAD:
            return ErrorCode.GROUP_ID_NOT_FOUND, []
        if group.state is not EMPTY:
            return ErrorCode.NON_EMPTY_GROUP, []
        removed = list(group.offsets)
        self._remove_group(group, now)
        return ErrorCode.NONE, removed

    def _remove_group(self, group: ClassicGroup, now: int) -> None:
        group.offsets.clear()
        group.transition(DEAD, now)
        del self.groups[group.group_id]
        for key in [k for k in self.timers if k[1] == group.group_id]:
            del self.timers[key]

    def expire_offsets(self, group_id: str, now: int, retention_ms: int) -> tuple[list[TopicPartition], bool]:
        """Drop the group's expired offsets; an Empty group left without offsets is deleted.
        Returns (offsets removed, whether the group was deleted)."""
        group = self.groups.get(group_id)
        if group is None:
            return [], False
        removed: list[TopicPartition] = []
        if group.protocol_type is None:
            # A simple group (offsets only): retention counts from each commit.
            removed = expired_partitions(group.offsets, now, retention_ms, lambda om: om.commit_timestamp)
        elif group.state is EMPTY:
            # Nobody consumes: retention counts from when the group became Empty (else each commit).
            since = group.state_timestamp
            removed = expired_partitions(group.offsets, now, retention_ms,
                                         lambda om: since if since is not None else om.commit_timestamp)
        elif group.uses_consumer_protocol and group.subscribed_topics is not None and group.state is STABLE:
            removed = expired_partitions(group.offsets, now, retention_ms, lambda om: om.commit_timestamp,
                                         keep_topics=group.subscribed_topics)
        for tp in removed:
            del group.offsets[tp]
        if group.state is EMPTY and not group.offsets and not group.pending_members:
            self._remove_group(group, now)
            return removed, True
        return removed, False

    # ------------------------------------------------------------ ListGroups and DescribeGroups

    def list_groups(self, states: Iterable[str] = (), types: Iterable[str] = ()) -> list[GroupListing]:
        """Every group, optionally only those in ``states`` and of ``types`` (both case-insensitive)."""
        wanted_states = {s.lower() for s in states}
        wanted_types = {t.lower() for t in types}
        if wanted_types and CLASSIC_GROUP_TYPE not in wanted_types:
            return []
        return [GroupListing(g.group_id, g.protocol_type or "", g.state.value)
                for g in self.groups.values()
                if not wanted_states or g.state.value.lower() in wanted_states]

    def describe_group(self, group_id: str) -> GroupDescription:
        """Kafka's group summary: members' metadata and assignments only while Stable; an unknown group
        is described as Dead with no members."""
        group = self.groups.get(group_id)
        if group is None:
            return GroupDescription(group_id, DEAD.value, "", "", ())
        stable = group.state is STABLE
        members = tuple(DescribedMember(
            m.member_id, m.group_instance_id, m.client_id, m.client_host,
            m.metadata(group.protocol_name) if stable else b"", m.assignment if stable else b"")
            for m in group.members.values())
        return GroupDescription(group_id, group.state.value, group.protocol_type or "",
                                (group.protocol_name or "") if stable else "", members)

    # ------------------------------------------------------------ loading

    def replay(self, record: OffsetRecord | GroupRecord, now: int) -> None:
        """Apply one record read back from ``__consumer_offsets`` (in log order)."""
        if isinstance(record, OffsetRecord):
            tp = (record.topic, record.partition)
            if record.value is None:
                group = self.groups.get(record.group)
                if group is not None:
                    group.offsets.pop(tp, None)
            else:
                self.apply_offset_commits(record.group, {tp: record.value}, now)
            return
        if record.value is None:
            self.groups.pop(record.group, None)
            return
        previous = self.groups.get(record.group)
        group = _group_from_snapshot(record.group, record.value)
        if previous is not None:
            group.offsets = previous.offsets
        self.groups[record.group] = group

    def loaded(self, now: int) -> Decisions:
        """The load is over: restored members get session timers; a group over ``group.max.size``
        (the setting may have shrunk) rebalances."""
        d = Decisions()
        for group in list(self.groups.values()):
            for member in group.members.values():
                self._reschedule_heartbeat(d, group, member, now)
            if len(group.members) > self.config.max_size and group.can_rebalance:
                self._prepare_rebalance(group, d, now)
        return d


def _inconsistent(requested: str | None, current: str | None) -> bool:
    return requested is not None and current is not None and requested != current


def _group_from_snapshot(group_id: str, value: GroupMetadataSnapshot) -> ClassicGroup:
    state = STABLE if value.members else EMPTY
    group = ClassicGroup(group_id, state, value.current_state_timestamp if value.current_state_timestamp >= 0
                         else None)
    group.generation_id = value.generation
    group.protocol_type = value.protocol_type or None
    group.protocol_name = value.protocol
    for m in value.members:
        rebalance_timeout = m.rebalance_timeout_ms if m.rebalance_timeout_ms != -1 else m.session_timeout_ms
        group.add(ClassicGroupMember(m.member_id, m.group_instance_id, m.client_id, m.client_host,
                                     rebalance_timeout, m.session_timeout_ms, value.protocol_type,
                                     [(value.protocol or "", m.subscription)], m.assignment))
    group.protocol_type = value.protocol_type or None
    group.leader_id = value.leader if value.leader in group.members else group.leader_id
    group.subscribed_topics = group.compute_subscribed_topics()
    return group


# The longest string the protocol carries (an int16 length): a member id must fit every response it goes in.
_MAX_STRING_BYTES = 32767


def make_member_id(prefix: str, unique: str) -> str:
    """``prefix-uuid`` as Kafka makes member ids; a prefix (a client id or group instance id, each up to
    32767 bytes on the wire) long enough to push the id past what a string can carry is cut, on a character
    boundary, so JoinGroup can still answer."""
    member_id = f"{prefix}-{unique}"
    excess = len(member_id.encode()) - _MAX_STRING_BYTES
    if excess > 0:
        keep = prefix.encode()[:max(0, len(prefix.encode()) - excess)].decode(errors="ignore")
        member_id = f"{keep}-{unique}"
    return member_id
