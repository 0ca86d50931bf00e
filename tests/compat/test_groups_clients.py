"""Consumer groups through real clients (issue 6): confluent-kafka, kafka-python, aiokafka, kafkajs and
kcat join groups on ``moldau serve``, share partitions, rebalance, commit and resume; the confluent
AdminClient (and kafka-python's, for OffsetDelete) administers groups; committed offsets survive a
kill -9 of the broker; and bad group requests get Kafka's error codes without disturbing the members.

One broker (``group.initial.rebalance.delay.ms=0``) serves the module, every test on its own topic and
group names; tests that restart a broker start their own. Members use session.timeout.ms 6000 (the
broker's minimum, like Kafka's group.min.session.timeout.ms) and heartbeat.interval.ms 500, so a
rebalance is noticed within half a second. See ``group_helpers.py`` for the members and waits.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from protocol.errors import ErrorCode
from tests.compat.clients import Msg, create_topic, kcat_path, no_new_tracebacks, produce, unique
from tests.compat.conftest import BrokerProcess, KafkaSocket, finish
from tests.compat.group_helpers import (
    HEARTBEAT_MS,
    SESSION_MS,
    WAIT_S,
    AiokafkaMember,
    ConfluentMember,
    KafkaPythonMember,
    Member,
    ProcessMember,
    RawMember,
    commit_offsets,
    describe_group,
    describe_members,
    fetch_offsets,
    group_consume,
    produce_markers,
    subscription,
    wait_cover,
    wait_for,
    wait_markers,
)

DELAY_0 = ("--set", "group.initial.rebalance.delay.ms=0")


@pytest.fixture(scope="module")
def group_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(list(DELAY_0), tmp_path_factory.mktemp("groups-broker"))
    yield proc
    finish(proc)


@pytest.fixture
def broker(group_broker: BrokerProcess) -> Iterator[BrokerProcess]:
    with no_new_tracebacks(group_broker):
        yield group_broker


@pytest.fixture
def members() -> Iterator[list[Member]]:
    """Members a test starts; any still running at the end are closed (killed, for processes)."""
    started: list[Member] = []
    yield started
    for m in started:
        try:
            if isinstance(m, ProcessMember):
                m.kill()
            elif not m.closed:
                m.close()
        except AssertionError:
            pass


def topic_with(bootstrap: str, what: str, partitions: int) -> str:
    topic = unique(what)
    create_topic(bootstrap, topic, partitions)
    return topic


def sizes(owner: dict[str, frozenset[int]]) -> list[int]:
    return sorted(len(p) for p in owner.values())


def since(member: Member, index: int) -> list[Any]:
    return member.snapshot()[1][index:]


# ---------------------------------------------------------------------------------------------------
# confluent-kafka: sharing partitions and rebalancing


def expected_assignment(strategy: str, member_ids: dict[str, str], partitions: int) -> dict[str, frozenset[int]]:
    """Kafka's range / roundrobin assignors for one topic: members sorted by member id; range gives each
    a contiguous block (the first ``partitions % n`` one more), roundrobin deals partition k to the
    (k mod n)-th member."""
    order = sorted(member_ids, key=lambda name: member_ids[name])
    n = len(order)
    out: dict[str, set[int]] = {name: set() for name in order}
    if strategy == "roundrobin":
        for k in range(partitions):
            out[order[k % n]].add(k)
    else:
        q, r = divmod(partitions, n)
        start = 0
        for i, name in enumerate(order):
            size = q + (1 if i < r else 0)
            out[name] = set(range(start, start + size))
            start += size
    return {k: frozenset(v) for k, v in out.items()}


def check_assignor(strategy: str, group_members: list[Member], owner: dict[str, frozenset[int]]) -> None:
    ids = {m.name: m.member_id for m in group_members}
    assert all(ids.values()) and len(set(ids.values())) == len(ids), f"member ids not distinct: {ids}"
    expected = expected_assignment(strategy, ids, 6)
    assert owner == expected, (f"{strategy}: the leader's assignment {owner} is not the {strategy} assignment "
                               f"{expected} of members {ids}")


@pytest.mark.parametrize("strategy", ["range", "roundrobin"])
def test_confluent_members_share_partitions_and_rebalance_when_one_joins_and_one_closes(
        broker: BrokerProcess, members: list[Member], strategy: str) -> None:
    """Three confluent consumers subscribed to a 6-partition topic receive a disjoint cover of its
    partitions, as the ``range`` / ``roundrobin`` assignor computes it over all members (so the leader
    was given every member's subscription) and each reads the records of its partitions. A fourth
    member joining rebalances the group to 2+2+1+1 partitions; closing one (LeaveGroup) moves its
    partitions to the others at once. After each rebalance new records reach the new owners."""
    bs = broker.bootstrap
    topic = topic_with(bs, f"share-{strategy}", 6)
    group = unique(f"share-{strategy}")
    early = produce_markers(bs, topic, range(6), "before-join")
    config = {"partition.assignment.strategy": strategy}
    for i in range(3):
        members.append(ConfluentMember(f"m{i}", bs, group, [topic], config))
    owner = wait_cover(members, range(6), what="3 members: a disjoint cover of 6 partitions")
    assert sizes(owner) == [2, 2, 2], f"3 members: expected 2 partitions each, got {owner}"
    check_assignor(strategy, members, owner)
    # Read before the group settled too (a first member may hold every partition for a moment): only
    # "the owner got it" is certain for records produced before the members joined.
    wait_markers(members, early, owner, exclusive=False)

    members.append(ConfluentMember("m3", bs, group, [topic], config))
    owner = wait_cover(members, range(6), what="after a 4th member joined: a disjoint cover")
    assert sizes(owner) == [1, 1, 2, 2], f"4 members: expected 2+2+1+1 partitions, got {owner}"
    check_assignor(strategy, members, owner)
    wait_markers(members, produce_markers(bs, topic, range(6), "after-join"), owner)

    leaving = members[1]
    leaving_parts = owner[leaving.name]
    leaving_id = leaving.member_id
    leaving.close()
    staying = [m for m in members if m is not leaving]
    owner = wait_cover(staying, range(6), what="after a member closed: the others cover its partitions")
    assert sizes(owner) == [2, 2, 2], f"3 members after a close: expected 2 each, got {owner}"
    check_assignor(strategy, staying, owner)
    # Its partitions moved because the LeaveGroup removed it, not a session timeout.
    removed = broker.wait_for_log(lambda r: r.get("event") == "group.member_removed"
                                  and r.get("member") == leaving_id, 1.0, f"member {leaving_id} removed")
    assert removed.get("reason") == "left the group", (
        f"the closed member's partitions {sorted(leaving_parts)} moved after its removal for "
        f"{removed.get('reason')!r}; expected its LeaveGroup ('left the group'), not a session timeout")
    wait_markers(staying, produce_markers(bs, topic, range(6), "after-close"), owner)


def test_confluent_killed_member_partitions_move_after_the_session_timeout(
        broker: BrokerProcess, members: list[Member]) -> None:
    """A member killed with SIGKILL (no LeaveGroup) keeps its partitions until its session times out
    (session.timeout.ms 6000, no heartbeats), then the coordinator removes it and the other members
    get its partitions and read the records sent to them."""
    bs = broker.bootstrap
    topic = topic_with(bs, "killed", 6)
    group = unique("killed")
    survivors: list[Member] = [ConfluentMember("a", bs, group, [topic]), ConfluentMember("b", bs, group, [topic])]
    victim = ProcessMember("victim", bs, group, [topic])
    members.extend([*survivors, victim])
    owner = wait_cover(members, range(6), what="3 members (one a child process): a disjoint cover")
    marks = {m.name: m.event_count() for m in survivors}
    killed_at = time.monotonic()
    victim.kill()
    owner = wait_cover(survivors, range(6), timeout=SESSION_MS / 1000 + WAIT_S,
                       what="after kill -9 of a member: the 2 others cover all partitions")
    first_revoke = min(e.at for m in survivors for e in since(m, marks[m.name]))
    noticed = first_revoke - killed_at
    assert noticed >= (SESSION_MS - HEARTBEAT_MS - 1000) / 1000, (
        f"the group rebalanced {noticed:.1f} s after the kill, before the member's {SESSION_MS} ms session "
        f"could have expired")
    assert sizes(owner) == [3, 3], f"2 members: expected 3 partitions each, got {owner}"
    wait_markers(survivors, produce_markers(bs, topic, range(6), "after-kill"), owner)


def test_confluent_cooperative_sticky_rebalances_incrementally(broker: BrokerProcess, members: list[Member]) -> None:
    """With ``cooperative-sticky`` (KIP-429) a joining member takes partitions without the others giving
    up the rest: each survivor's revoke callback names only the partition it loses, it keeps the
    others throughout, and no partition is ever "lost". When that member closes, its partitions are
    added to the others without any revocation."""
    bs = broker.bootstrap
    topic = topic_with(bs, "coop", 6)
    group = unique("coop")
    config = {"partition.assignment.strategy": "cooperative-sticky"}
    survivors: list[Member] = [ConfluentMember("a", bs, group, [topic], config),
                               ConfluentMember("b", bs, group, [topic], config)]
    members.extend(survivors)
    before = wait_cover(survivors, range(6), what="2 cooperative members: a disjoint cover")
    assert sizes(before) == [3, 3], f"2 members: expected 3 partitions each, got {before}"
    marks = {m.name: m.event_count() for m in survivors}

    joiner = ConfluentMember("c", bs, group, [topic], config)
    members.append(joiner)
    owner = wait_cover([*survivors, joiner], range(6), what="after a 3rd cooperative member joined")
    assert sizes(owner) == [2, 2, 2], f"3 members: expected 2 partitions each, got {owner}"
    for m in survivors:
        events = since(m, marks[m.name])
        revoked = frozenset().union(*(e.partitions for e in events if e.kind == "revoke"))
        assert not [e for e in events if e.kind == "lost"], f"{m.name} lost partitions: {m.describe()}"
        assert owner[m.name] <= before[m.name], (
            f"{m.name}: sticky assignment should keep it on its own partitions: had {sorted(before[m.name])}, "
            f"now {sorted(owner[m.name])}")
        assert revoked == before[m.name] - owner[m.name] and len(revoked) == 1, (
            f"{m.name}: an incremental rebalance revokes only the partition that moves "
            f"({sorted(before[m.name] - owner[m.name])}), its callbacks revoked {sorted(revoked)}: {m.describe()}")
    wait_markers([*survivors, joiner], produce_markers(bs, topic, range(6), "after-join"), owner)

    marks = {m.name: m.event_count() for m in survivors}
    handed = owner[joiner.name]
    joiner.close()
    final = wait_cover(survivors, range(6), what="after the 3rd cooperative member closed")
    for m in survivors:
        events = since(m, marks[m.name])
        assert not [e for e in events if e.kind in ("revoke", "lost")], (
            f"{m.name}: taking over {sorted(handed)} should revoke nothing: {m.describe()}")
        assert final[m.name] >= owner[m.name], f"{m.name} gave up partitions: {owner[m.name]} -> {final[m.name]}"
    wait_markers(survivors, produce_markers(bs, topic, range(6), "after-close"), final)


@pytest.mark.parametrize("restarted", ["leader", "follower"])
def test_confluent_static_member_restarts_without_rebalancing_the_others(
        broker: BrokerProcess, members: list[Member], restarted: str) -> None:
    """KIP-345 static membership: a member with ``group.instance.id`` that is killed and restarted
    within the session timeout rejoins under its instance id, gets the same partitions back, and the
    other member's rebalance callbacks never fire, not even after the old session would have expired.
    Checked for the member that joined first (the group leader) and for the other one."""
    bs = broker.bootstrap
    topic = topic_with(bs, "static", 4)
    group = unique("static")
    ids = {"first": f"first-{group}", "second": f"second-{group}"}

    def start(name: str, in_process: bool) -> Member:
        config = {"group.instance.id": ids[name]}
        member = ProcessMember(name, bs, group, [topic], config) if in_process else ConfluentMember(
            name, bs, group, [topic], config)
        members.append(member)
        return member

    first = start("first", restarted == "leader")
    first.wait(lambda m: m.snapshot()[0] == frozenset(range(4)), what="the first member owns all 4 partitions")
    second = start("second", restarted == "follower")
    owner = wait_cover([first, second], range(4), what="2 static members: a disjoint cover")
    victim, other = (first, second) if restarted == "leader" else (second, first)
    assert isinstance(victim, ProcessMember)
    mark = other.event_count()

    killed_at = time.monotonic()
    victim.kill()
    back = start(victim.name, True)
    back.wait(lambda m: m.snapshot()[0] == owner[victim.name], timeout=SESSION_MS / 1000 - 1,
              what=f"the restarted static member gets its partitions {sorted(owner[victim.name])} back")
    # Past the point where the killed member's session would have expired, plus two heartbeats.
    time.sleep(max(0.0, killed_at + SESSION_MS / 1000 + 2 * HEARTBEAT_MS / 1000 - time.monotonic()))
    assert not since(other, mark), (
        f"the other static member was rebalanced while {victim.name} restarted: {other.describe()}")
    assert back.snapshot()[0] == owner[victim.name] and other.snapshot()[0] == owner[other.name], (
        f"assignments changed after the restart: {describe_members([back, other])}")
    assert [e.kind for e in back.snapshot()[1]] == ["assign"], f"restarted member: {back.describe()}"
    owner = {back.name: owner[victim.name], other.name: owner[other.name]}
    wait_markers([back, other], produce_markers(bs, topic, range(4), "after-restart"), owner)


def test_members_of_three_clients_share_one_group_on_their_common_assignor(
        broker: BrokerProcess, members: list[Member], raw_socket: Callable[[BrokerProcess], KafkaSocket]) -> None:
    """One group, three clients: confluent-kafka offering ``roundrobin`` only, kafka-python offering
    ``range`` then ``roundrobin`` (its default) and aiokafka offering ``roundrobin`` (its default). The
    coordinator picks the one protocol every member supports (``roundrobin``, DescribeGroups says so),
    whichever client leads computes the roundrobin assignment over all three members from the
    subscriptions the coordinator handed it, and every member reads its own partitions."""
    bs = broker.bootstrap
    topic = topic_with(bs, "mixed", 6)
    group = unique("mixed")
    members.append(ConfluentMember("confluent", bs, group, [topic], {"partition.assignment.strategy": "roundrobin"}))
    members.append(KafkaPythonMember("kafka-python", bs, group, [topic]))
    members.append(AiokafkaMember("aiokafka", bs, group, [topic]))
    owner = wait_cover(members, range(6), what="confluent + kafka-python + aiokafka: a disjoint cover")
    check_assignor("roundrobin", members, owner)
    described = describe_group(raw_socket(broker), group)
    assert (described.group_state, described.protocol_type, described.protocol_data) == (
        "Stable", "consumer", "roundrobin"), f"DescribeGroups of the mixed group: {described}"
    assert sorted(m.client_id for m in described.members) == ["aiokafka", "confluent", "kafka-python"]
    wait_markers(members, produce_markers(bs, topic, range(6), "mixed"), owner)


def test_a_second_live_member_with_the_same_instance_id_fences_the_first(
        broker: BrokerProcess, members: list[Member]) -> None:
    """KIP-345: when a second consumer joins with a ``group.instance.id`` a live member already uses,
    the coordinator hands the instance to the newcomer (same partitions, no rebalance of the others)
    and the older one is fenced: its next heartbeat gets FENCED_INSTANCE_ID, which librdkafka raises as
    a fatal error."""
    from confluent_kafka import KafkaError

    bs = broker.bootstrap
    topic = topic_with(bs, "fenced", 4)
    group = unique("fenced")
    other = ConfluentMember("other", bs, group, [topic], {"group.instance.id": f"other-{group}"})
    old = ConfluentMember("old", bs, group, [topic], {"group.instance.id": f"twin-{group}"})
    members.extend([other, old])
    owner = wait_cover([other, old], range(4))
    mark = other.event_count()
    new = ConfluentMember("new", bs, group, [topic], {"group.instance.id": f"twin-{group}"})
    members.append(new)
    new.wait(lambda m: m.snapshot()[0] == owner["old"], what=f"the newcomer gets {sorted(owner['old'])}")
    # librdkafka reports it through error_cb as _FATAL whose text names the broker's error.
    fatal_codes = (KafkaError._FATAL, KafkaError.FENCED_INSTANCE_ID)
    code, text, _ = old.wait(lambda m: next((e for e in m.snapshot()[3] if e[0] in fatal_codes), None),
                             what="a fatal error on the fenced member")
    assert "fenced" in text.lower(), f"the older member's fatal error should be FENCED_INSTANCE_ID, got {code}: {text}"
    assert not since(other, mark), f"the other member was rebalanced: {other.describe()}"
    old.close()
    wait_markers([other, new], produce_markers(bs, topic, range(4), "after-fence"),
                 {"other": owner["other"], "new": owner["old"]})


# ---------------------------------------------------------------------------------------------------
# Every client: commit, leave, and a new member resumes from the committed offsets


@pytest.mark.parametrize("client", ["confluent", "kafka-python", "aiokafka", "kafkajs"])
def test_new_member_resumes_from_the_offsets_the_previous_one_committed(broker: BrokerProcess, client: str) -> None:
    """A consumer subscribes, reads every record of a 2-partition topic from the earliest offset (no
    offsets committed yet), commits offsets 2 and 5 (OffsetCommit as a member of the generation), sees
    them through its client's committed() (OffsetFetch), and leaves. A new consumer of the same group
    then starts exactly at the committed offsets: it gets offsets 2-5 of partition 0 and 5 of
    partition 1, nothing earlier."""
    bs = broker.bootstrap
    topic = topic_with(bs, f"resume-{client}", 2)
    group = unique(f"resume-{client}")
    produce("confluent", bs, topic, [Msg(None, f"p{p}-{i}".encode(), partition=p) for p in (0, 1) for i in range(6)])

    first = group_consume(client, bs, topic, group, 12, [0, 1], [{0: 2, 1: 5}])
    assert first.positions() == [(p, o) for p in (0, 1) for o in range(6)], (
        f"{client}: the first member should read offsets 0-5 of both partitions once, got "
        f"{first.positions()} {first.detail}")
    assert first.committed == {0: 2, 1: 5}, f"{client}: committed offsets read back {first.committed} {first.detail}"

    second = group_consume(client, bs, topic, group, 5, [0, 1])
    assert second.positions() == [(0, 2), (0, 3), (0, 4), (0, 5), (1, 5)], (
        f"{client}: a new member should resume at the committed offsets (0: 2, 1: 5), got "
        f"{second.positions()} {second.detail}")
    assert [v for p, o, v in sorted(second.records)] == [b"p0-2", b"p0-3", b"p0-4", b"p0-5", b"p1-5"]
    assert second.committed == {0: 2, 1: 5}, f"{client}: a member that commits nothing changed {second.committed}"


# ---------------------------------------------------------------------------------------------------
# kcat -G: the balanced consumer


class KcatMember:
    """``kcat -G GROUP TOPIC -J``: records on stdout, rebalances (``assigned: topic [p], ...``) on stderr."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self.assignment: frozenset[int] = frozenset()
        self.records: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [kcat_path(), "-b", bootstrap, "-G", group, topic, "-J", "-u",
             "-X", "auto.offset.reset=earliest", "-X", f"session.timeout.ms={SESSION_MS}",
             "-X", f"heartbeat.interval.ms={HEARTBEAT_MS}", "-X", "fetch.wait.max.ms=100"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._threads = [threading.Thread(target=self._out, daemon=True), threading.Thread(target=self._err, daemon=True)]
        for t in self._threads:
            t.start()

    def _out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                with self._lock:
                    self.records.append(json.loads(line))

    def _err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._lock:
                self.stderr.append(line.rstrip())
                if "rebalanced" in line and "assigned:" in line:
                    self.assignment = frozenset(int(p) for p in re.findall(r"\[(\d+)\]", line.split("assigned:")[1]))
                elif "rebalanced" in line and "revoked:" in line:
                    self.assignment = frozenset()

    def values(self) -> set[bytes]:
        with self._lock:
            return {r["payload"].encode() for r in self.records if r.get("payload") is not None}

    def describe(self) -> str:
        with self._lock:
            return (f"[kcat pid {self.proc.pid}: assignment {sorted(self.assignment)}, {len(self.records)} records, "
                    f"exit {self.proc.poll()}, stderr {self.stderr[-6:]}]")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # kcat closes the consumer (LeaveGroup) on SIGTERM
            try:
                self.proc.wait(CLOSE_KCAT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for t in self._threads:
            t.join(5)


CLOSE_KCAT_S = 15


def test_kcat_balanced_consumers_split_the_partitions_and_read_their_records(broker: BrokerProcess) -> None:
    """Two ``kcat -G`` balanced consumers in one group split a 4-partition topic disjointly and each
    prints the records of its own partitions (the ones produced before they joined, read from the
    earliest offset, and the ones produced after)."""
    bs = broker.bootstrap
    topic = topic_with(bs, "kcat-group", 4)
    group = unique("kcat-group")
    early = produce_markers(bs, topic, range(4), "before")
    kcats = [KcatMember(bs, group, topic)]
    try:
        wait_for(lambda: kcats[0].assignment == frozenset(range(4)), WAIT_S, "one kcat -G owns all 4 partitions",
                 kcats[0].describe)
        kcats.append(KcatMember(bs, group, topic))

        def cover() -> bool:
            a, b = kcats[0].assignment, kcats[1].assignment
            return bool(a) and bool(b) and not a & b and a | b == frozenset(range(4))

        wait_for(cover, WAIT_S, "two kcat -G members split the partitions",
                 lambda: " ".join(k.describe() for k in kcats))
        late = produce_markers(bs, topic, range(4), "after")
        for k in kcats:
            mine = {late[p] for p in k.assignment}
            wait_for(lambda k=k, mine=mine: mine <= k.values(), WAIT_S,
                     f"kcat owning {sorted(k.assignment)} prints their new records", k.describe)
            strays = {v for p, v in late.items() if p not in k.assignment} & k.values()
            assert not strays, f"kcat owning {sorted(k.assignment)} printed records of other partitions: {strays}"
        everything = kcats[0].values() | kcats[1].values()
        assert set(early.values()) <= everything, (
            f"records produced before the group formed were not all read: missing "
            f"{set(early.values()) - everything}")
    finally:
        for k in kcats:
            k.stop()


# ---------------------------------------------------------------------------------------------------
# AdminClient


def _admin(bootstrap: str) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap})


def _error_code(fn: Callable[[], Any]) -> int:
    from confluent_kafka import KafkaException

    try:
        fn()
    except KafkaException as exc:
        return exc.args[0].code()
    return 0


def _listed(admin: Any, states: set[Any] | None = None) -> dict[str, Any]:
    kwargs = {"states": states} if states is not None else {}
    result = admin.list_consumer_groups(request_timeout=10, **kwargs).result(15)
    assert not result.errors, f"list_consumer_groups errors: {result.errors}"
    return {g.group_id: g for g in result.valid}


def _committed(admin: Any, group: str) -> dict[int, int]:
    from confluent_kafka import ConsumerGroupTopicPartitions

    futures = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=10)
    result = futures[group].result(15)
    for tp in result.topic_partitions:
        assert tp.error is None, f"list_consumer_group_offsets {group} {tp}: {tp.error}"
    return {tp.partition: tp.offset for tp in result.topic_partitions if tp.offset >= 0}


def test_admin_client_lists_describes_alters_and_deletes_groups_and_offsets(
        broker: BrokerProcess, members: list[Member]) -> None:
    """The confluent AdminClient against an active group of two members: ListGroups shows it Stable
    (and not under the Empty filter); DescribeGroups names both members with their client ids, hosts
    and the partitions each holds, the protocol (``range``) and the state; DeleteGroups answers
    NON_EMPTY_GROUP; OffsetFetch lists what the members committed; an admin OffsetCommit (generation
    -1) is refused with UNKNOWN_MEMBER_ID and OffsetDelete with GROUP_SUBSCRIBED_TO_TOPIC while members
    are subscribed. After both members leave, the group is Empty: altering and deleting offsets
    succeeds, DeleteGroups succeeds, the group disappears from ListGroups, and deleting it again
    answers GROUP_ID_NOT_FOUND."""
    from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaError, TopicPartition
    from kafka import KafkaAdminClient
    from kafka import TopicPartition as KpTopicPartition

    bs = broker.bootstrap
    topic = topic_with(bs, "admin-groups", 4)
    group = unique("admin-groups")
    produce("confluent", bs, topic, [Msg(None, f"p{p}-{i}".encode(), partition=p) for p in range(4) for i in range(5)])
    admin = _admin(bs)
    kp_admin = KafkaAdminClient(bootstrap_servers=bs, request_timeout_ms=10000)
    try:
        group_members: list[Member] = [ConfluentMember(f"admin-m{i}", bs, group, [topic],
                                                       {"partition.assignment.strategy": "range"})
                                       for i in range(2)]
        members.extend(group_members)
        owner = wait_cover(group_members, range(4))
        for m in group_members:
            mine = sorted(owner[m.name])
            offsets = [TopicPartition(topic, p, 1 + p) for p in mine]
            m.call(lambda c, offsets=offsets: c.commit(offsets=offsets, asynchronous=False))

        listed = _listed(admin)
        assert group in listed, f"list_consumer_groups does not show the active group {group}: {sorted(listed)}"
        assert listed[group].state == ConsumerGroupState.STABLE and not listed[group].is_simple_consumer_group, (
            f"listed as {listed[group].state}, simple={listed[group].is_simple_consumer_group}")
        assert group in _listed(admin, {ConsumerGroupState.STABLE}), "the Stable filter leaves out a stable group"
        assert group not in _listed(admin, {ConsumerGroupState.EMPTY}), "the Empty filter shows a stable group"

        desc = admin.describe_consumer_groups([group], request_timeout=10)[group].result(15)
        assert desc.state == ConsumerGroupState.STABLE and desc.partition_assignor == "range", (
            f"describe: state {desc.state}, assignor {desc.partition_assignor!r}")
        assert not desc.is_simple_consumer_group
        described = {md.client_id: (md.member_id, md.host,
                                    frozenset(tp.partition for tp in md.assignment.topic_partitions
                                              if tp.topic == topic))
                     for md in desc.members}
        assert {k: v[2] for k, v in described.items()} == owner, (
            f"describe_consumer_groups assignments {described} differ from the members' own {owner}")
        for m in group_members:
            member_id, host, _ = described[m.name]
            assert member_id == m.member_id and host, f"{m.name}: described as id {member_id!r} host {host!r}"

        code = _error_code(lambda: admin.delete_consumer_groups([group], request_timeout=10)[group].result(15))
        assert code == KafkaError.NON_EMPTY_GROUP, f"delete_consumer_groups of an active group: error {code}"
        assert _committed(admin, group) == {p: 1 + p for p in range(4)}

        def alter(offsets: dict[int, int]) -> list[Any]:
            request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p, o) for p, o in offsets.items()])]
            try:
                result = admin.alter_consumer_group_offsets(request, request_timeout=10)[group].result(15)
            except Exception as exc:  # noqa: BLE001 - the error code is what is checked
                return [exc.args[0].code() if exc.args and hasattr(exc.args[0], "code") else repr(exc)]
            return [tp.error.code() if tp.error is not None else 0 for tp in result.topic_partitions]

        assert alter({0: 3}) == [KafkaError.UNKNOWN_MEMBER_ID], "an admin commit to an active group must be refused"
        refused = kp_admin.delete_group_offsets(group, [KpTopicPartition(topic, 0)])
        assert [e.errno for e in refused.values()] == [int(ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC)], (
            f"OffsetDelete for a topic the members subscribe to: {refused}")
        assert _committed(admin, group) == {p: 1 + p for p in range(4)}, "refused requests changed the offsets"

        for m in group_members:
            m.close()
        wait_for(lambda: group in _listed(admin, {ConsumerGroupState.EMPTY}), WAIT_S,
                 "the group is listed as Empty after its members left")
        desc = admin.describe_consumer_groups([group], request_timeout=10)[group].result(15)
        assert desc.state == ConsumerGroupState.EMPTY and not desc.members, (
            f"describe after leaving: state {desc.state}, members {desc.members}")

        assert alter({0: 4, 3: 0}) == [0, 0]
        deleted = kp_admin.delete_group_offsets(group, [KpTopicPartition(topic, 1)])
        assert [e.errno for e in deleted.values()] == [0], f"OffsetDelete on an empty group: {deleted}"
        assert _committed(admin, group) == {0: 4, 2: 3, 3: 0}, "offsets after alter (0, 3) and delete (1)"

        assert _error_code(lambda: admin.delete_consumer_groups([group], request_timeout=10)[group].result(15)) == 0
        assert group not in _listed(admin), "a deleted group is still listed"
        assert _committed(admin, group) == {}, "a deleted group still has committed offsets"
        code = _error_code(lambda: admin.delete_consumer_groups([group], request_timeout=10)[group].result(15))
        assert code == KafkaError.GROUP_ID_NOT_FOUND, f"deleting a deleted group: error {code}"
    finally:
        kp_admin.close()


# ---------------------------------------------------------------------------------------------------
# Durability


def test_committed_offsets_survive_a_broker_kill_9(tmp_path: Path) -> None:
    """Offsets acknowledged by OffsetCommit are durable: after the broker is killed with SIGKILL right
    after the commits and restarted on the same data directory, the group's offsets are the last ones
    committed (a later commit wins over an earlier one), a new member resumes from them, and a group
    deleted before the kill stays deleted (its offsets do not come back)."""
    from confluent_kafka import ConsumerGroupState

    data = tmp_path / "data"
    args = ["--data-dir", str(data), *DELAY_0]
    first = BrokerProcess(args, tmp_path, memory=False)
    try:
        topic = topic_with(first.bootstrap, "durable-offsets", 2)
        group, gone = unique("durable"), unique("durable-deleted")
        produce("confluent", first.bootstrap, topic,
                [Msg(None, f"p{p}-{i}".encode(), partition=p) for p in (0, 1) for i in range(6)])
        run = group_consume("confluent", first.bootstrap, topic, group, 12, [0, 1], [{0: 2, 1: 1}, {0: 4}])
        assert run.committed == {0: 4, 1: 1}, f"before the kill: committed {run.committed}"
        group_consume("confluent", first.bootstrap, topic, gone, 12, [0, 1], [{0: 3}])
        admin = _admin(first.bootstrap)
        admin.delete_consumer_groups([gone], request_timeout=10)[gone].result(15)
    finally:
        first.proc.kill()
        first.stop()
    assert not first.tracebacks(), "broker logged a traceback before the kill:\n" + "\n".join(first.lines[-30:])

    second = BrokerProcess(args, tmp_path, memory=False)
    try:
        admin = _admin(second.bootstrap)
        assert _committed(admin, group) == {0: 4, 1: 1}, "offsets after the kill -9 and restart"
        assert _committed(admin, gone) == {}, "a group deleted before the kill has offsets again"
        listed = _listed(admin)
        assert group in listed and listed[group].state == ConsumerGroupState.EMPTY, (
            f"after the restart the group should be listed Empty: {listed.get(group)}")
        assert gone not in listed, "a group deleted before the kill is listed again"
        resumed = group_consume("confluent", second.bootstrap, topic, group, 7, [0, 1])
        assert resumed.positions() == [(0, 4), (0, 5)] + [(1, o) for o in range(1, 6)], (
            f"a new member after the restart should resume at 0: 4 and 1: 1, got {resumed.positions()}")
    finally:
        finish(second)


# ---------------------------------------------------------------------------------------------------
# Bad input, through clients and raw requests


@pytest.mark.parametrize("session_ms", [1000, 1800001])
def test_session_timeout_outside_the_broker_bounds_is_refused_without_disturbing_the_group(
        broker: BrokerProcess, members: list[Member], session_ms: int) -> None:
    """A confluent consumer asking for session.timeout.ms below group.min.session.timeout.ms (6000) or
    above group.max.session.timeout.ms (1800000) is refused by JoinGroup with INVALID_SESSION_TIMEOUT,
    which the client reports; it never gets partitions, and the member already in the group keeps its
    assignment without a rebalance and keeps reading."""
    from confluent_kafka import KafkaError

    bs = broker.bootstrap
    topic = topic_with(bs, "bad-session", 2)
    group = unique("bad-session")
    good = ConfluentMember("good", bs, group, [topic])
    members.append(good)
    owner = wait_cover([good], range(2))
    mark = good.event_count()
    bad = ConfluentMember("bad", bs, group, [topic], {"session.timeout.ms": session_ms, "heartbeat.interval.ms": 300,
                                                      "max.poll.interval.ms": max(300000, session_ms)})
    members.append(bad)
    bad.wait_error(KafkaError.INVALID_SESSION_TIMEOUT)
    time.sleep(2 * HEARTBEAT_MS / 1000)
    assert not bad.snapshot()[0], f"the refused member got partitions: {bad.describe()}"
    assert not since(good, mark), f"the group member was rebalanced by a refused join: {good.describe()}"
    wait_markers([good], produce_markers(bs, topic, range(2), "still-reading"), owner)


def test_join_with_another_protocol_type_or_no_common_protocol_is_inconsistent_group_protocol(
        broker: BrokerProcess, members: list[Member], raw_socket: Callable[[BrokerProcess], KafkaSocket]) -> None:
    """A JoinGroup into a group of "consumer" members with protocol type "other", or with type
    "consumer" but no assignor in common with them, gets INCONSISTENT_GROUP_PROTOCOL at once (before
    MEMBER_ID_REQUIRED), and so does a JoinGroup with an empty protocol type or no protocols into an
    empty group. The kafka-python member keeps its generation and partitions and keeps reading."""
    bs = broker.bootstrap
    topic = topic_with(bs, "bad-protocol", 2)
    group = unique("bad-protocol")
    member = KafkaPythonMember("kp", bs, group, [topic])
    members.append(member)
    owner = wait_cover([member], range(2))
    member.wait(lambda m: m.generation, what="a stable generation")
    generation, mark = member.generation, member.event_count()

    sub = subscription([topic])
    attempts = {"type other": ("other", [("range", sub)]), "no common assignor": ("consumer", [("nonexistent", sub)])}
    for what, (ptype, protocols) in attempts.items():
        raw = RawMember(raw_socket(broker), group)
        resp = raw.join(protocol_type=ptype, protocols=protocols)
        assert resp.error_code == int(ErrorCode.INCONSISTENT_GROUP_PROTOCOL), (
            f"JoinGroup v5 with {what}: expected INCONSISTENT_GROUP_PROTOCOL (23), got {resp.error_code}")
    empty = unique("bad-protocol-empty")
    for what, (ptype, protocols) in {"empty protocol type": ("", [("range", sub)]),
                                     "no protocols": ("consumer", [])}.items():
        resp = RawMember(raw_socket(broker), empty).join(protocol_type=ptype, protocols=protocols)
        assert resp.error_code == int(ErrorCode.INCONSISTENT_GROUP_PROTOCOL), (
            f"JoinGroup v5 into an empty group with {what}: expected 23, got {resp.error_code}")

    time.sleep(2 * HEARTBEAT_MS / 1000)
    assert not since(member, mark) and member.generation == generation, (
        f"the kafka-python member was disturbed (generation {generation} -> {member.generation}): {member.describe()}")
    described = describe_group(raw_socket(broker), group)
    assert (described.group_state, described.protocol_type, len(described.members)) == ("Stable", "consumer", 1), (
        f"DescribeGroups after the refused joins: {described}")
    wait_markers([member], produce_markers(bs, topic, range(2), "still-reading"), owner)


def test_offset_commit_with_a_wrong_generation_or_member_is_refused_and_changes_nothing(
        broker: BrokerProcess, members: list[Member], raw_socket: Callable[[BrokerProcess], KafkaSocket]) -> None:
    """OffsetCommit for an active group with the member's id and a generation that is not the current one
    gets ILLEGAL_GENERATION; an unknown member id gets UNKNOWN_MEMBER_ID, and so does an "admin" commit
    (generation -1, no member id) while the group has members; a Heartbeat with a wrong generation gets
    ILLEGAL_GENERATION. None of them changes the committed offsets or the group: the kafka-python
    member keeps its generation and partitions, then commits itself and keeps reading."""
    from kafka import OffsetAndMetadata
    from kafka import TopicPartition as KpTopicPartition

    bs = broker.bootstrap
    topic = topic_with(bs, "bad-generation", 2)
    group = unique("bad-generation")
    member = KafkaPythonMember("kp", bs, group, [topic])
    members.append(member)
    owner = wait_cover([member], range(2))
    (gen, member_id) = member.wait(lambda m: m.generation, what="a stable generation")
    mark = member.event_count()

    sock = raw_socket(broker)
    cases = {
        "next generation": (gen + 1, member_id, ErrorCode.ILLEGAL_GENERATION),
        "previous generation": (gen - 1, member_id, ErrorCode.ILLEGAL_GENERATION),
        "unknown member": (gen, "no-such-member", ErrorCode.UNKNOWN_MEMBER_ID),
        "admin commit to an active group": (-1, "", ErrorCode.UNKNOWN_MEMBER_ID),
    }
    for i, (what, (generation, mid, expected)) in enumerate(cases.items()):
        errors = commit_offsets(sock, group, topic, {0: 1, 1: 1}, generation=generation, member_id=mid, corr=10 + i)
        assert errors == {0: int(expected), 1: int(expected)}, (
            f"OffsetCommit v7 with {what} (generation {generation}, member {mid!r}): expected {expected.name} "
            f"({int(expected)}) per partition, got {errors}")
    raw = RawMember(sock, group)
    raw.member_id, raw.generation = member_id, gen
    code = raw.heartbeat(generation=gen + 1)
    assert code == int(ErrorCode.ILLEGAL_GENERATION), f"Heartbeat v3 with generation {gen + 1}: error {code}"
    assert fetch_offsets(sock, group, topic, [0, 1], corr=30) == {0: -1, 1: -1}, "a refused commit was stored"

    time.sleep(2 * HEARTBEAT_MS / 1000)
    assert not since(member, mark) and member.generation == (gen, member_id), (
        f"the member was disturbed by the refused requests: {member.describe()}")
    member.call(lambda c: c.commit({KpTopicPartition(topic, p): OffsetAndMetadata(1, "", -1) for p in (0, 1)}))
    assert fetch_offsets(sock, group, topic, [0, 1], corr=31) == {0: 1, 1: 1}, "the member's own commit"
    wait_markers([member], produce_markers(bs, topic, range(2), "still-reading"), owner)
