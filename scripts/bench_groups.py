#!/usr/bin/env python3
"""Consumer-group benchmark: starts `moldau serve --memory --set group.initial.rebalance.delay.ms=0`
itself and prints medians of several runs:

- group formation, end to end: 3 confluent-kafka consumers (threads in this process) subscribe to a
  6-partition topic that already holds records; the time until all three hold a disjoint cover of the
  partitions and each has received a record of its own partitions. Measured with the test suite's
  settings (session.timeout.ms 6000, heartbeat.interval.ms 500) and with heartbeat.interval.ms 100,
  since an eager rebalance is learnt through a heartbeat;
- the broker's share of it: the same 3-member group formed by raw JoinGroup/SyncGroup clients that
  heartbeat every 5 ms (so client timers do not count), and the median round trip of each group
  request for one member;
- rebalance when a 4th member joins a stable 3-member group (confluent end to end, and raw);
- OffsetCommit requests/s from 50 groups, one raw connection and one member per group, each keeping
  a few commits in flight (OffsetCommit v8, one partition per request unless --commit-partitions).

    python scripts/bench_groups.py [--runs 5] [--groups 50] [--commit-seconds 3] [--json]

Target: < 0.5 s end to end for the 3-consumer case.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_broker import BrokerProc  # the same broker process launcher as the broker benchmark

from protocol import codec
from protocol import messages as m
from tests.compat.conftest import KafkaSocket
from tests.compat.group_helpers import (
    ConfluentMember,
    Member,
    RawMember,
    assignment_bytes,
    is_cover,
    subscription,
)

PARTITIONS = 6
REBALANCE_IN_PROGRESS = 27


def start_broker() -> BrokerProc:
    """The broker process of bench_broker.py, in memory, with joins that do not wait for more members."""
    return BrokerProc("memory", ["--set", "group.initial.rebalance.delay.ms=0"])


def unique(what: str) -> str:
    return f"bench-{what}-{uuid.uuid4().hex[:8]}"


def create_topic(bootstrap: str, partitions: int = PARTITIONS) -> str:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = unique("groups")
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the result is in
    admin.create_topics([NewTopic(topic, partitions, 1)], operation_timeout=10)[topic].result(15)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for p in range(partitions):
        for i in range(3):
            producer.produce(topic, f"p{p}-{i}".encode(), partition=p)
    assert producer.flush(15) == 0
    return topic


def wait(predicate: Callable[[], Any], timeout: float, what: str) -> float:
    """Poll ``predicate`` every millisecond; the time.perf_counter() at which it first held."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if predicate():
            return time.perf_counter()
        time.sleep(0.001)
    raise RuntimeError(f"{what}: not within {timeout} s")


def read_own_records(members: list[Member]) -> bool:
    cover = is_cover(members, range(PARTITIONS))
    if cover is None:
        return False
    return all(any(g.partition in cover[mb.name] for g in mb.snapshot()[2]) for mb in members)


# ---------------------------------------------------------------- confluent end to end

def confluent_formation(bootstrap: str, topic: str, heartbeat_ms: int) -> tuple[float, float]:
    """(seconds for 3 members to form and read, seconds for a 4th to be rebalanced in)."""
    group = unique("form")
    config = {"heartbeat.interval.ms": heartbeat_ms, "partition.assignment.strategy": "range"}
    members: list[Member] = []
    try:
        start = time.perf_counter()
        for i in range(3):
            members.append(ConfluentMember(f"b{i}", bootstrap, group, [topic], config))
        formed = wait(lambda: read_own_records(members), 30, "3 members formed") - start
        start = time.perf_counter()
        members.append(ConfluentMember("b3", bootstrap, group, [topic], config))
        rebalanced = wait(lambda: is_cover(members, range(PARTITIONS)) is not None, 30, "4th member in") - start
        return formed, rebalanced
    finally:
        closers = [threading.Thread(target=mb.close) for mb in members]
        for t in closers:
            t.start()
        for t in closers:
            t.join(20)


def confluent_single(bootstrap: str, topic: str) -> float:
    """Seconds for one confluent member to join a new group and receive a record: the client's floor
    (connect, FindCoordinator, two JoinGroups, SyncGroup, OffsetFetch, ListOffsets, Fetch)."""
    member = None
    try:
        start = time.perf_counter()
        member = ConfluentMember("solo", bootstrap, unique("solo"), [topic])
        return wait(lambda: member.snapshot()[2], 30, "a single member reads") - start
    finally:
        if member is not None:
            member.close()


# ---------------------------------------------------------------- raw members (the broker's share)

class RawLoop:
    """A raw member on its own thread: join, sync (as leader: range over the members), heartbeat every
    ``beat`` seconds, rejoin on REBALANCE_IN_PROGRESS. ``synced`` is (generation, partitions)."""

    def __init__(self, host: str, port: int, group: str, topic: str, beat: float = 0.005) -> None:
        self.sock = KafkaSocket(host, port, timeout=30)
        self.member = RawMember(self.sock, group, session_ms=30000, rebalance_ms=30000)
        self.topic = topic
        self.beat = beat
        self.synced: tuple[int, tuple[int, ...]] | None = None
        self.error: str | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _plan(self, resp: Any) -> dict[str, bytes]:
        ids = sorted(x.member_id for x in resp.members)
        q, r = divmod(PARTITIONS, len(ids))
        plan, first = {}, 0
        for i, mid in enumerate(ids):
            size = q + (1 if i < r else 0)
            plan[mid] = assignment_bytes(self.topic, list(range(first, first + size)))
            first += size
        return plan

    def _run(self) -> None:
        from tests.compat.group_helpers import decode_assignment

        try:
            while not self.stop.is_set():
                resp = self.member.join([self.topic])
                if resp.error_code:
                    raise RuntimeError(f"JoinGroup error {resp.error_code}")
                plan = self._plan(resp) if resp.leader == self.member.member_id else None
                sync = self.member.sync(plan)
                if sync.error_code == REBALANCE_IN_PROGRESS:
                    continue
                if sync.error_code:
                    raise RuntimeError(f"SyncGroup error {sync.error_code}")
                parts = tuple(decode_assignment(bytes(sync.assignment)).get(self.topic, []))
                self.synced = (self.member.generation, parts)
                while not self.stop.is_set():
                    time.sleep(self.beat)
                    code = self.member.heartbeat()
                    if code == REBALANCE_IN_PROGRESS:
                        break
                    if code:
                        raise RuntimeError(f"Heartbeat error {code}")
            self.member.leave()
        except Exception as exc:  # noqa: BLE001 - reported by the caller
            self.error = repr(exc)
        finally:
            self.sock.close()


def all_synced(loops: list[RawLoop]) -> bool:
    states = [lp.synced for lp in loops]
    if any(s is None for s in states) or len({s[0] for s in states}) != 1:  # type: ignore[index]
        return False
    parts = [p for s in states for p in s[1]]  # type: ignore[index]
    return sorted(parts) == list(range(PARTITIONS)) and all(s[1] for s in states)  # type: ignore[index]


def raw_formation(host: str, port: int, topic: str) -> tuple[float, float]:
    group = unique("raw-form")
    loops: list[RawLoop] = []
    try:
        start = time.perf_counter()
        loops = [RawLoop(host, port, group, topic) for _ in range(3)]
        formed = wait(lambda: all_synced(loops), 30, "3 raw members synced") - start
        start = time.perf_counter()
        loops.append(RawLoop(host, port, group, topic))
        rebalanced = wait(lambda: all_synced(loops), 30, "4 raw members synced") - start
        errors = [lp.error for lp in loops if lp.error]
        if errors:
            raise RuntimeError(f"raw members failed: {errors}")
        return formed, rebalanced
    finally:
        for lp in loops:
            lp.stop.set()
        for lp in loops:
            lp.thread.join(10)


def request_round_trips(host: str, port: int, topic: str, n: int = 200) -> dict[str, float]:
    """Median seconds per request of one member: JoinGroup (both rounds), SyncGroup, Heartbeat,
    OffsetCommit v8, OffsetFetch v8."""
    from tests.compat.group_helpers import commit_offsets

    out: dict[str, list[float]] = {"JoinGroup (2 round trips)": [], "SyncGroup": [], "Heartbeat": [],
                                   "OffsetCommit": [], "OffsetFetch": []}
    sock = KafkaSocket(host, port, timeout=30)
    try:
        for i in range(n // 10):
            member = RawMember(sock, unique("rtt"), session_ms=30000)
            t = time.perf_counter()
            member.join([topic])
            out["JoinGroup (2 round trips)"].append(time.perf_counter() - t)
            t = time.perf_counter()
            member.sync({member.member_id: assignment_bytes(topic, list(range(PARTITIONS)))})
            out["SyncGroup"].append(time.perf_counter() - t)
            for j in range(10):
                t = time.perf_counter()
                member.heartbeat()
                out["Heartbeat"].append(time.perf_counter() - t)
                t = time.perf_counter()
                commit_offsets(sock, member.group, topic, {0: j}, generation=member.generation,
                               member_id=member.member_id, version=8, corr=1000 + j)
                out["OffsetCommit"].append(time.perf_counter() - t)
                t = time.perf_counter()
                sock.request(9, 8, 2000 + j, m.OffsetFetchRequest(groups=[m.OffsetFetchRequest.OffsetFetchRequestGroup(
                    group_id=member.group, topics=None)]))
                out["OffsetFetch"].append(time.perf_counter() - t)
            member.leave()
    finally:
        sock.close()
    return {k: statistics.median(v) for k, v in out.items()}


# ---------------------------------------------------------------- OffsetCommit throughput

class AsyncConn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.corr = 0

    @classmethod
    async def open(cls, host: str, port: int) -> AsyncConn:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    def send(self, api_key: int, version: int, body: Any) -> int:
        self.corr += 1
        parts = codec.encode_request(api_key, version, self.corr, "bench-groups", body)
        self.writer.write(b"".join(bytes(p) for p in parts))
        return self.corr

    async def recv(self, api_key: int, version: int) -> Any:
        (size,) = struct.unpack(">i", await self.reader.readexactly(4))
        frame = await self.reader.readexactly(size)
        return codec.decode_response(api_key, version, frame)[1]

    async def request(self, api_key: int, version: int, body: Any) -> Any:
        self.send(api_key, version, body)
        await self.writer.drain()
        return await self.recv(api_key, version)


async def _join_alone(conn: AsyncConn, group: str, topic: str) -> tuple[str, int]:
    req = m.JoinGroupRequest
    member_id = ""
    for _ in range(2):
        resp = await conn.request(11, 5, req(
            group_id=group, session_timeout_ms=30000, rebalance_timeout_ms=30000, member_id=member_id,
            protocol_type="consumer", protocols=[req.JoinGroupRequestProtocol(name="range", metadata=subscription([topic]))]))
        member_id = resp.member_id
        if resp.error_code != 79:
            break
    if resp.error_code:
        raise RuntimeError(f"JoinGroup error {resp.error_code}")
    sync = m.SyncGroupRequest
    resp2 = await conn.request(14, 3, sync(group_id=group, generation_id=resp.generation_id, member_id=member_id,
                                           assignments=[sync.SyncGroupRequestAssignment(
                                               member_id=member_id, assignment=assignment_bytes(topic, [0]))]))
    if resp2.error_code:
        raise RuntimeError(f"SyncGroup error {resp2.error_code}")
    return member_id, resp.generation_id


async def offset_commit_rate(host: str, port: int, topic: str, groups: int, seconds: float, depth: int,
                             partitions: int) -> float:
    conns = [await AsyncConn.open(host, port) for _ in range(groups)]
    names = [unique(f"commit{i}") for i in range(groups)]
    ids = [await _join_alone(c, g, topic) for c, g in zip(conns, names, strict=True)]
    req = m.OffsetCommitRequest
    done = 0
    stop_at = 0.0

    async def drive(conn: AsyncConn, group: str, member_id: str, generation: int) -> None:
        nonlocal done
        offset = 0

        def body() -> Any:
            nonlocal offset
            offset += 1
            return req(group_id=group, generation_id_or_member_epoch=generation, member_id=member_id,
                       topics=[req.OffsetCommitRequestTopic(name=topic, partitions=[
                           req.OffsetCommitRequestPartition(partition_index=p, committed_offset=offset)
                           for p in range(partitions)])])

        for _ in range(depth):
            conn.send(8, 8, body())
        await conn.writer.drain()
        while True:
            resp = await conn.recv(8, 8)
            errors = {p.error_code for t in resp.topics for p in t.partitions}
            if errors != {0}:
                raise RuntimeError(f"OffsetCommit errors {errors}")
            if time.perf_counter() >= stop_at:
                break
            done += 1
            conn.send(8, 8, body())
            await conn.writer.drain()
        for _ in range(depth - 1):
            await conn.recv(8, 8)

    start = time.perf_counter()
    stop_at = start + seconds
    await asyncio.gather(*(drive(c, g, mid, gen) for c, g, (mid, gen) in zip(conns, names, ids, strict=True)))
    elapsed = time.perf_counter() - start
    for c in conns:
        c.writer.close()
    return done / elapsed


# ---------------------------------------------------------------- main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--commit-seconds", type=float, default=3.0)
    parser.add_argument("--commit-depth", type=int, default=4, help="commits in flight per connection")
    parser.add_argument("--commit-partitions", type=int, default=1, help="partitions per OffsetCommit")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args()

    broker = start_broker()
    results: dict[str, float] = {}
    spread: dict[str, tuple[float, float]] = {}
    try:
        topic = create_topic(broker.bootstrap)

        def median(name: str, samples: list[float]) -> None:
            results[name] = statistics.median(samples)
            spread[name] = (min(samples), max(samples))

        median("confluent: 1 member joins + first record (client floor) s",
               [confluent_single(broker.bootstrap, topic) for _ in range(args.runs)])
        for heartbeat in (500, 100):
            runs = [confluent_formation(broker.bootstrap, topic, heartbeat) for _ in range(args.runs)]
            median(f"confluent: 3 members formed + first records (heartbeat {heartbeat} ms) s", [r[0] for r in runs])
            median(f"confluent: 4th member rebalanced in (heartbeat {heartbeat} ms) s", [r[1] for r in runs])
        runs = [raw_formation(broker.host, broker.port, topic) for _ in range(args.runs)]
        median("raw: 3 members synced (5 ms heartbeats) s", [r[0] for r in runs])
        median("raw: 4th member rebalanced in (5 ms heartbeats) s", [r[1] for r in runs])
        for name, value in request_round_trips(broker.host, broker.port, topic).items():
            results[f"raw round trip: {name} s"] = value
        rates = [asyncio.run(offset_commit_rate(broker.host, broker.port, topic, args.groups, args.commit_seconds,
                                                args.commit_depth, args.commit_partitions))
                 for _ in range(max(1, min(args.runs, 3)))]
        median(f"OffsetCommit/s, {args.groups} groups, depth {args.commit_depth}, "
               f"{args.commit_partitions} partition(s) each", rates)
    finally:
        broker.stop()

    print(f"median of {args.runs} runs (OffsetCommit: of {max(1, min(args.runs, 3))})")
    for name, value in results.items():
        if name.endswith(" s"):
            lo, hi = spread.get(name, (value, value))
            extra = f"   (min {lo * 1000:.1f}, max {hi * 1000:.1f})" if name in spread else ""
            print(f"{name[:-2]:<72} {value * 1000:>10.1f} ms{extra}")
        else:
            print(f"{name:<72} {value:>10,.0f}")
    target = results["confluent: 3 members formed + first records (heartbeat 500 ms) s"]
    print(f"target < 500 ms end to end for 3 consumers: {'met' if target < 0.5 else 'NOT met'} "
          f"({target * 1000:.0f} ms with the test settings)")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
