"""Helpers for the consumer-group tests (``test_groups_clients.py``) and ``scripts/bench_groups.py``.

- ``ConfluentMember``: one confluent-kafka consumer that subscribes and polls on its own thread,
  recording its rebalance callbacks (``Event``), its current assignment, the records it received and
  the errors it was told about. Other threads read that state; calls on the consumer itself (commit,
  committed...) go through ``call`` and run on the polling thread.
- ``ProcessMember``: the same consumer in a child process (``python -m tests.compat.group_helpers``)
  that reports as JSON lines, so a test can ``kill -9`` it.
- ``RawMember``: a group member speaking raw JoinGroup/SyncGroup/Heartbeat/OffsetCommit over one
  socket, for requests no client sends on purpose (a wrong generation, another protocol type).
- Group-level waits: ``wait_cover`` (the members' assignments are a disjoint cover of the partitions),
  ``produce_markers`` + ``wait_markers`` (a record sent to each partition reaches the member owning it).

Every wait is bounded and fails with what it saw.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]

SESSION_MS = 6000  # the broker's group.min.session.timeout.ms, like Kafka's default
HEARTBEAT_MS = 500
WAIT_S = 20.0  # default bound for a group to settle
# kafka-python 3.0.12 loses a rejoin whose JoinGroup/SyncGroup completes after the poll() that started
# it timed out (join_group_async leaves the finished task unawaited once need_rejoin() turns False, so
# the assignment is never applied and heartbeats stay off until the session expires). A longer poll
# makes that window rare; real applications poll with seconds, not milliseconds.
KAFKA_PYTHON_POLL_MS = 1000
CLOSE_S = 15.0

# What every confluent member uses unless a test overrides it: quick heartbeats so rebalances are
# noticed within half a second, explicit commits only, earliest when nothing is committed.
CONFLUENT_GROUP_DEFAULTS: dict[str, Any] = {
    "session.timeout.ms": SESSION_MS,
    "heartbeat.interval.ms": HEARTBEAT_MS,
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
    "fetch.wait.max.ms": 100,
    "topic.metadata.refresh.interval.ms": 2000,
}


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             detail: Callable[[], str] | None = None) -> Any:
    """The first truthy value of ``predicate()``, polled every 20 ms; fails after ``timeout`` seconds
    saying ``what`` was awaited and ``detail()``."""
    return wait_until(predicate, timeout, what, detail, interval=0.02)


@dataclass(frozen=True)
class Event:
    """A rebalance callback: ``assign`` / ``revoke`` / ``lost`` with the partitions it named (for an
    eager protocol the whole assignment, for cooperative-sticky only the change)."""

    kind: str
    partitions: frozenset[int]
    at: float  # time.monotonic() in the process that observed it (the test's, for ProcessMember: arrival)


@dataclass(frozen=True)
class Got:
    """A record a member received."""

    partition: int
    offset: int
    value: bytes | None


class Member:
    """State shared by both kinds of confluent member; updated only through ``_apply``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._cond = threading.Condition()
        self.events: list[Event] = []
        self.records: list[Got] = []
        self.errors: list[tuple[int, str, bool]] = []  # (Kafka error code, text, fatal)
        self.assignment: frozenset[int] = frozenset()
        self.member_id = ""
        self.closed = False

    def _apply(self, obj: dict[str, Any]) -> None:
        kind = obj["e"]
        with self._cond:
            if kind in ("assign", "revoke", "lost"):
                self.events.append(Event(kind, frozenset(obj["partitions"]), time.monotonic()))
            elif kind == "assignment":
                self.assignment = frozenset(obj["partitions"])
            elif kind == "record":
                value = None if obj["value"] is None else base64.b64decode(obj["value"])
                self.records.append(Got(obj["partition"], obj["offset"], value))
            elif kind == "error":
                self.errors.append((obj["code"], obj["text"], obj.get("fatal", False)))
            elif kind == "member_id":
                self.member_id = obj["id"]
            elif kind == "closed":
                self.closed = True
            self._cond.notify_all()

    def snapshot(self) -> tuple[frozenset[int], list[Event], list[Got], list[tuple[int, str, bool]]]:
        with self._cond:
            return self.assignment, list(self.events), list(self.records), list(self.errors)

    def event_count(self) -> int:
        with self._cond:
            return len(self.events)

    def wait(self, predicate: Callable[[Member], Any], timeout: float = WAIT_S, what: str = "") -> Any:
        return wait_for(lambda: predicate(self), timeout, f"{self.name}: {what or 'condition'}", self.describe)

    def wait_error(self, code: int, timeout: float = WAIT_S) -> tuple[int, str, bool]:
        return self.wait(lambda m: next((e for e in m.snapshot()[3] if e[0] == code), None), timeout,
                         f"an error with code {code}")

    def describe(self) -> str:
        assignment, events, records, errors = self.snapshot()
        evs = ", ".join(f"{e.kind}{sorted(e.partitions)}" for e in events[-12:])
        return (f"[{self.name}: assignment {sorted(assignment)}, events {evs or '-'}, "
                f"{len(records)} records, errors {errors[-5:] or '-'}]")

    def close(self) -> None:
        raise NotImplementedError


def rebalance_listener(base: type, emit: Callable[[dict[str, Any]], None]) -> Any:
    """A kafka-python or aiokafka ConsumerRebalanceListener (``base``) that reports revokes and assigns."""

    class Listener(base):  # type: ignore[misc, valid-type]
        def on_partitions_revoked(self, revoked: Any) -> None:
            emit({"e": "revoke", "partitions": _tp_partitions(revoked)})

        def on_partitions_assigned(self, assigned: Any) -> None:
            emit({"e": "assign", "partitions": _tp_partitions(assigned)})

    return Listener()


def _tp_partitions(tps: Iterable[Any]) -> list[int]:
    return sorted(tp.partition for tp in tps)


class ThreadMember(Member):
    """A consumer owned by one thread: ``_open`` builds and subscribes it, ``_poll_once`` polls it once
    (reporting through ``_emit``), ``_close`` closes it. Other threads use ``call``."""

    def __init__(self, name: str, listener: Callable[[dict[str, Any]], None] | None = None) -> None:
        super().__init__(name)
        self._listener = listener
        self._commands: queue.Queue[tuple[Callable[[Any], Any], concurrent.futures.Future[Any]]] = queue.Queue()
        self._stop = threading.Event()
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"member-{name}", daemon=True)
        self._thread.start()
        self._started.wait(15)
        if self._start_error is not None:
            raise self._start_error

    def _emit(self, obj: dict[str, Any]) -> None:
        self._apply(obj)
        if self._listener is not None:
            self._listener(obj)

    def _open(self) -> Any:
        raise NotImplementedError

    def _poll_once(self, consumer: Any) -> None:
        raise NotImplementedError

    def _close(self, consumer: Any) -> None:
        consumer.close()

    def _run(self) -> None:
        try:
            consumer = self._open()
        except BaseException as exc:  # noqa: BLE001 - handed to the constructor's caller
            self._start_error = exc
            self._started.set()
            return
        self._started.set()
        try:
            while not self._stop.is_set():
                self._serve_commands(consumer)
                self._poll_once(consumer)
        finally:
            self._serve_commands(consumer)
            try:
                self._close(consumer)
            finally:
                self._emit({"e": "closed"})

    def _serve_commands(self, consumer: Any) -> None:
        while True:
            try:
                fn, future = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                future.set_result(fn(consumer))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
                future.set_exception(exc)

    def call(self, fn: Callable[[Any], Any], timeout: float = 15.0) -> Any:
        """Run ``fn(consumer)`` on the polling thread and return its result."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._commands.put((fn, future))
        return future.result(timeout)

    def close(self) -> None:
        """Stop polling and close the consumer (which leaves the group, unless static)."""
        self._stop.set()
        self._thread.join(CLOSE_S)
        assert not self._thread.is_alive(), f"{self.name}: close() did not return within {CLOSE_S} s"


class ConfluentMember(ThreadMember):
    """A confluent-kafka consumer subscribed to ``topics`` in ``group``, polled on its own thread."""

    def __init__(self, name: str, bootstrap: str, group: str, topics: Sequence[str],
                 config: dict[str, Any] | None = None,
                 listener: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.config = {"bootstrap.servers": bootstrap, "group.id": group, "client.id": name,
                       **CONFLUENT_GROUP_DEFAULTS, **(config or {})}
        self.topics = list(topics)
        self._current: list[int] = []
        self._member_id = ""
        super().__init__(name, listener)

    def _open(self) -> Any:
        from confluent_kafka import Consumer

        def on_error(err: Any) -> None:
            self._emit({"e": "error", "code": err.code(), "text": err.str(), "fatal": err.fatal()})

        consumer = Consumer({**self.config, "error_cb": on_error})
        consumer.subscribe(
            self.topics,
            on_assign=lambda c, tps: self._emit({"e": "assign", "partitions": _tp_partitions(tps)}),
            on_revoke=lambda c, tps: self._emit({"e": "revoke", "partitions": _tp_partitions(tps)}),
            on_lost=lambda c, tps: self._emit({"e": "lost", "partitions": _tp_partitions(tps)}))
        return consumer

    def _poll_once(self, consumer: Any) -> None:
        from confluent_kafka import KafkaError

        msg = consumer.poll(0.05)
        if msg is not None:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    self._emit({"e": "error", "code": err.code(), "text": err.str(), "fatal": err.fatal()})
            else:
                value = msg.value()
                self._emit({"e": "record", "partition": msg.partition(), "offset": msg.offset(),
                            "value": None if value is None else base64.b64encode(value).decode()})
        mid = consumer.memberid() or ""  # before the assignment: a waiter seeing it must see the id
        if mid != self._member_id:
            self._member_id = mid
            self._emit({"e": "member_id", "id": mid})
        assigned = _tp_partitions(consumer.assignment())
        if assigned != self._current:
            self._current = assigned
            self._emit({"e": "assignment", "partitions": assigned})


class KafkaPythonMember(ThreadMember):
    """A kafka-python KafkaConsumer subscribed to ``topics`` in ``group``, polled on its own thread.
    ``generation`` is the (generation id, member id) kafka-python holds while the group is stable."""

    def __init__(self, name: str, bootstrap: str, group: str, topics: Sequence[str], **options: Any) -> None:
        self.options = {"bootstrap_servers": bootstrap, "group_id": group, "client_id": name,
                        "enable_auto_commit": False, "auto_offset_reset": "earliest",
                        "session_timeout_ms": SESSION_MS, "heartbeat_interval_ms": HEARTBEAT_MS,
                        "fetch_max_wait_ms": 100, **options}
        self.topics = list(topics)
        self._current: list[int] = []
        self.generation: tuple[int, str] | None = None
        super().__init__(name)

    def _open(self) -> Any:
        from kafka import ConsumerRebalanceListener, KafkaConsumer

        listener = rebalance_listener(ConsumerRebalanceListener, self._emit)

        consumer = KafkaConsumer(**self.options)
        consumer.subscribe(self.topics, listener=listener)
        return consumer

    def _poll_once(self, consumer: Any) -> None:
        polled = consumer.poll(timeout_ms=KAFKA_PYTHON_POLL_MS)
        for batch in polled.values():
            for r in batch:
                self._emit({"e": "record", "partition": r.partition, "offset": r.offset,
                            "value": None if r.value is None else base64.b64encode(r.value).decode()})
        gen = consumer._coordinator.generation_if_stable()
        if gen is not None and (gen.generation_id, gen.member_id) != self.generation:
            self.generation = (gen.generation_id, gen.member_id)
            self._emit({"e": "member_id", "id": gen.member_id})
        assigned = _tp_partitions(consumer.assignment())
        if assigned != self._current:
            self._current = assigned
            self._emit({"e": "assignment", "partitions": assigned})

    def _close(self, consumer: Any) -> None:
        consumer.close(autocommit=False)


class ProcessMember(Member):
    """A ``ConfluentMember`` in a child process, so that a test can kill -9 it."""

    def __init__(self, name: str, bootstrap: str, group: str, topics: Sequence[str],
                 config: dict[str, Any] | None = None) -> None:
        super().__init__(name)
        spec = {"name": name, "bootstrap": bootstrap, "group": group, "topics": list(topics),
                "config": config or {}}
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.compat.group_helpers", json.dumps(spec)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     cwd=REPO, env=env, text=True)
        self.stderr_tail: list[str] = []
        self._out = threading.Thread(target=self._read_stdout, daemon=True)
        self._err = threading.Thread(target=self._read_stderr, daemon=True)
        self._out.start()
        self._err.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self._apply(json.loads(line))

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_tail = (self.stderr_tail + [line.rstrip()])[-20:]

    def describe(self) -> str:
        return super().describe()[:-1] + f", exit {self.proc.poll()}, stderr {self.stderr_tail[-3:]}]"

    def kill(self) -> None:
        """SIGKILL: no LeaveGroup, no commit; the broker only learns from the session timeout."""
        self.proc.kill()
        self.proc.wait(10)
        self._out.join(5)

    def close(self) -> None:
        """A clean close in the child (LeaveGroup for a dynamic member), then wait for it to exit."""
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write("close\n")
                self.proc.stdin.flush()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(CLOSE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError(f"{self.name}: the child did not close within {CLOSE_S} s") from None
        self._out.join(5)


def _child_main(spec_json: str) -> None:
    """``python -m tests.compat.group_helpers SPEC``: run one ConfluentMember, print its state changes
    as JSON lines, close it when stdin says ``close`` or ends."""
    spec = json.loads(spec_json)
    lock = threading.Lock()

    def emit(obj: dict[str, Any]) -> None:
        with lock:
            sys.stdout.write(json.dumps(obj) + "\n")
            sys.stdout.flush()

    member = ConfluentMember(spec["name"], spec["bootstrap"], spec["group"], spec["topics"], spec["config"],
                             listener=emit)
    for line in sys.stdin:
        if line.strip() == "close":
            break
    member.close()


# ---------------------------------------------------------------------------------------------------
# Group-level checks


def assignments(members: Iterable[Member]) -> dict[str, frozenset[int]]:
    return {m.name: m.snapshot()[0] for m in members}


def describe_members(members: Iterable[Member]) -> str:
    return "\n".join(m.describe() for m in members)


def is_cover(members: Sequence[Member], partitions: Iterable[int]) -> dict[str, frozenset[int]] | None:
    """The members' assignments if they are disjoint, cover ``partitions`` and leave nobody empty
    (when there are at least as many partitions as members); else None."""
    got = assignments(members)
    wanted = frozenset(partitions)
    union: set[int] = set()
    for parts in got.values():
        if union & parts:
            return None
        union |= parts
    if union != wanted:
        return None
    if len(wanted) >= len(got) and any(not parts for parts in got.values()):
        return None
    return got


def wait_cover(members: Sequence[Member], partitions: Iterable[int], timeout: float = WAIT_S,
               what: str = "a disjoint cover of the partitions") -> dict[str, frozenset[int]]:
    parts = list(partitions)
    return wait_for(lambda: is_cover(members, parts), timeout, what, lambda: "\n" + describe_members(members))


def produce_markers(bootstrap: str, topic: str, partitions: Iterable[int], tag: str) -> dict[int, bytes]:
    """One record per partition, value ``{tag}-p{partition}``; returns partition -> value."""
    from tests.compat.clients import Msg, produce

    values = {p: f"{tag}-p{p}".encode() for p in partitions}
    produce("confluent", bootstrap, topic, [Msg(None, v, partition=p) for p, v in values.items()])
    return values


def _sorted_owner(owner: dict[str, frozenset[int]]) -> dict[str, list[int]]:
    return {k: sorted(v) for k, v in owner.items()}


def wait_markers(members: Sequence[Member], markers: dict[int, bytes], owner: dict[str, frozenset[int]],
                 timeout: float = WAIT_S, *, exclusive: bool = True) -> None:
    """Each marker arrives at the member that owns its partition (``owner``), and (``exclusive``) at no
    other member. Records produced before the group settled may also have been read by an earlier
    owner: pass ``exclusive=False`` for those."""
    def delivered() -> bool:
        have = {m.name: {g.value for g in m.snapshot()[2]} for m in members}
        return all(markers[p] in have[name] for name, parts in owner.items() for p in parts if p in markers)

    wait_for(delivered, timeout, "every marker record at the member owning its partition",
             lambda: f"owners {_sorted_owner(owner)}\n" + describe_members(members))
    for m in members if exclusive else ():
        got = {g.value for g in m.snapshot()[2]}
        strays = sorted(p for p, v in markers.items() if v in got and p not in owner[m.name])
        assert not strays, (f"{m.name} received the markers of partitions {strays}, which it does not own "
                            f"(owners {_sorted_owner(owner)})")


class AiokafkaMember(ThreadMember):
    """An aiokafka AIOKafkaConsumer subscribed to ``topics`` in ``group``, on its own thread and event
    loop (its coordinator tasks run while ``getmany`` waits). ``call`` functions get the consumer and
    run on that thread, outside the loop: use ``member.run(coro)`` inside them for coroutines."""

    def __init__(self, name: str, bootstrap: str, group: str, topics: Sequence[str], **options: Any) -> None:
        import asyncio

        self.options = {"bootstrap_servers": bootstrap, "group_id": group, "client_id": name,
                        "enable_auto_commit": False, "auto_offset_reset": "earliest",
                        "session_timeout_ms": SESSION_MS, "heartbeat_interval_ms": HEARTBEAT_MS,
                        "fetch_max_wait_ms": 100, **options}
        self.topics = list(topics)
        self._current: list[int] = []
        self._member_id = ""
        self.loop = asyncio.new_event_loop()
        super().__init__(name)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def _open(self) -> Any:
        from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

        listener = rebalance_listener(ConsumerRebalanceListener, self._emit)

        async def start() -> Any:
            consumer = AIOKafkaConsumer(**self.options)
            consumer.subscribe(self.topics, listener=listener)
            await consumer.start()
            return consumer

        return self.run(start())

    def _poll_once(self, consumer: Any) -> None:
        polled = self.run(consumer.getmany(timeout_ms=50))
        for batch in polled.values():
            for r in batch:
                self._emit({"e": "record", "partition": r.partition, "offset": r.offset,
                            "value": None if r.value is None else base64.b64encode(r.value).decode()})
        coordinator = consumer._coordinator
        mid = getattr(coordinator, "member_id", "") or ""
        if mid != self._member_id:
            self._member_id = mid
            self._emit({"e": "member_id", "id": mid})
        assigned = _tp_partitions(consumer.assignment())
        if assigned != self._current:
            self._current = assigned
            self._emit({"e": "assignment", "partitions": assigned})

    def _close(self, consumer: Any) -> None:
        try:
            self.run(consumer.stop())
        finally:
            self.loop.close()


# ---------------------------------------------------------------------------------------------------
# One consumer's session in a group, per client: subscribe, read, commit, leave


@dataclass
class GroupRun:
    """What one ``group_consume`` saw: the records (in arrival order) and the group's committed offsets
    for the topic's partitions after its commits (None where nothing is committed)."""

    records: list[tuple[int, int, bytes | None]]
    committed: dict[int, int | None]
    detail: str = ""

    def positions(self) -> list[tuple[int, int]]:
        return sorted((p, o) for p, o, _ in self.records)


def group_consume(client: str, bootstrap: str, topic: str, group: str, count: int, partitions: Sequence[int],
                  commits: Sequence[dict[int, int]] = (), *, linger: float = 0.5,
                  timeout: float = WAIT_S) -> GroupRun:
    """Join ``group`` subscribed to ``topic`` with ``client`` (earliest when nothing is committed, no
    auto-commit), read until ``count`` records arrived and ``linger`` seconds more (so that records
    beyond the count show), commit each of ``commits`` in turn (partition -> offset, as a member of the
    group), read back the committed offsets and close (LeaveGroup)."""
    run = {"confluent": _group_consume_confluent, "kafka-python": _group_consume_kafka_python,
           "aiokafka": _group_consume_aiokafka, "kafkajs": _group_consume_kafkajs}[client]
    return run(bootstrap, topic, group, count, list(partitions), list(commits), linger, timeout)


def _none_if_unset(offset: int | None) -> int | None:
    return None if offset is None or offset < 0 else offset


def _group_consume_confluent(bootstrap: str, topic: str, group: str, count: int, partitions: list[int],
                             commits: list[dict[int, int]], linger: float, timeout: float) -> GroupRun:
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "client.id": "resume-confluent",
                         **CONFLUENT_GROUP_DEFAULTS})
    try:
        consumer.subscribe([topic])
        got: list[tuple[int, int, bytes | None]] = []
        deadline = time.monotonic() + timeout
        linger_until = None
        while time.monotonic() < (linger_until or deadline):
            for msg in consumer.consume(max(1, count - len(got)), 0.1):
                err = msg.error()
                if err is not None and err.code() != KafkaError._PARTITION_EOF:
                    raise AssertionError(f"confluent group consumer error: {err}")
                if err is None:
                    got.append((msg.partition(), msg.offset(), msg.value()))
            if linger_until is None and len(got) >= count:
                linger_until = time.monotonic() + linger
        for offsets in commits:
            consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
        found = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        committed = {tp.partition: _none_if_unset(tp.offset) for tp in found}
    finally:
        consumer.close()
    return GroupRun(got, committed)


def _group_consume_kafka_python(bootstrap: str, topic: str, group: str, count: int, partitions: list[int],
                                commits: list[dict[int, int]], linger: float, timeout: float) -> GroupRun:
    from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, client_id="resume-kafka-python",
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             session_timeout_ms=SESSION_MS, heartbeat_interval_ms=HEARTBEAT_MS,
                             fetch_max_wait_ms=100)
    try:
        got: list[tuple[int, int, bytes | None]] = []
        deadline = time.monotonic() + timeout
        linger_until = None
        while time.monotonic() < (linger_until or deadline):
            for batch in consumer.poll(timeout_ms=KAFKA_PYTHON_POLL_MS).values():
                got += [(r.partition, r.offset, r.value) for r in batch]
            if linger_until is None and len(got) >= count:
                linger_until = time.monotonic() + linger
        for offsets in commits:
            consumer.commit({TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()})
        committed = {p: _none_if_unset(consumer.committed(TopicPartition(topic, p))) for p in partitions}
    finally:
        consumer.close(autocommit=False)
    return GroupRun(got, committed)


def _group_consume_aiokafka(bootstrap: str, topic: str, group: str, count: int, partitions: list[int],
                            commits: list[dict[int, int]], linger: float, timeout: float) -> GroupRun:
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run() -> GroupRun:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                                    client_id="resume-aiokafka", enable_auto_commit=False,
                                    auto_offset_reset="earliest", session_timeout_ms=SESSION_MS,
                                    heartbeat_interval_ms=HEARTBEAT_MS, fetch_max_wait_ms=100)
        await consumer.start()
        try:
            got: list[tuple[int, int, bytes | None]] = []
            deadline = time.monotonic() + timeout
            linger_until = None
            while time.monotonic() < (linger_until or deadline):
                for batch in (await consumer.getmany(timeout_ms=100)).values():
                    got += [(r.partition, r.offset, r.value) for r in batch]
                if linger_until is None and len(got) >= count:
                    linger_until = time.monotonic() + linger
            for offsets in commits:
                await consumer.commit({TopicPartition(topic, p): o for p, o in offsets.items()})
            committed = {p: _none_if_unset(await consumer.committed(TopicPartition(topic, p))) for p in partitions}
        finally:
            await consumer.stop()
        return GroupRun(got, committed)

    return asyncio.run(asyncio.wait_for(run(), timeout + 30))


def _group_consume_kafkajs(bootstrap: str, topic: str, group: str, count: int, partitions: list[int],
                           commits: list[dict[int, int]], linger: float, timeout: float) -> GroupRun:
    from tests.compat.clients import node

    if len(commits) > 1:
        raise ValueError("group_consume.js commits once")
    args = [bootstrap, topic, group, "--count", str(count), "--timeout-ms", str(int(timeout * 1000)),
            "--linger-ms", str(int(linger * 1000))]
    if commits:
        args += ["--commit", ",".join(f"{p}:{o}" for p, o in commits[0].items())]
    result = node("group_consume.js", *args, timeout=timeout + 40)
    records = [(r["partition"], r["offset"], None if r["value"] is None else base64.b64decode(r["value"]))
               for r in result["records"]]
    by_partition = {e["partition"]: _none_if_unset(e["offset"]) for e in result["committed"]}
    return GroupRun(records, {p: by_partition.get(p) for p in partitions},
                    detail=f"kafkajs joins {result['joins']}, crashes {result['crashes']}")


# ---------------------------------------------------------------------------------------------------
# Raw protocol members


def subscription(topics: Sequence[str], version: int = 0) -> bytes:
    """ConsumerProtocolSubscription bytes, as JoinGroup protocol metadata."""
    from protocol import codec, messages

    return codec.encode_versioned("ConsumerProtocolSubscription", version,
                                  messages.ConsumerProtocolSubscription(topics=list(topics)))


def assignment_bytes(topic: str, partitions: Sequence[int]) -> bytes:
    from protocol import codec, messages

    cls = messages.ConsumerProtocolAssignment
    return codec.encode_versioned("ConsumerProtocolAssignment", 0, cls(
        assigned_partitions=[cls.TopicPartition(topic=topic, partitions=list(partitions))]))


def decode_assignment(data: bytes) -> dict[str, list[int]]:
    from protocol import codec

    if not data:
        return {}
    _, obj = codec.decode_versioned("ConsumerProtocolAssignment", data)
    return {tp.topic: list(tp.partitions) for tp in obj.assigned_partitions}


JOIN_GROUP, SYNC_GROUP, HEARTBEAT, LEAVE_GROUP, OFFSET_COMMIT, OFFSET_FETCH, DESCRIBE_GROUPS = 11, 14, 12, 13, 8, 9, 15
MEMBER_ID_REQUIRED = 79


class RawMember:
    """One group member over a raw socket (``KafkaSocket``): JoinGroup v5 (handling MEMBER_ID_REQUIRED),
    SyncGroup v3, Heartbeat v3, LeaveGroup v3, OffsetCommit v7, OffsetFetch v6."""

    def __init__(self, sock: Any, group: str, *, session_ms: int = SESSION_MS, rebalance_ms: int = 10000,
                 instance_id: str | None = None) -> None:
        self.sock = sock
        self.group = group
        self.session_ms = session_ms
        self.rebalance_ms = rebalance_ms
        self.instance_id = instance_id
        self.member_id = ""
        self.generation = -1
        self.leader = ""
        self.protocol = ""
        self._corr = 0

    def _request(self, api_key: int, version: int, body: Any) -> Any:
        self._corr += 1
        return self.sock.request(api_key, version, self._corr, body)

    def join(self, topics: Sequence[str] = (), *, protocol_type: str = "consumer",
             protocols: Sequence[tuple[str, bytes]] | None = None, version: int = 5) -> Any:
        """JoinGroup; on MEMBER_ID_REQUIRED join again with the given id. Returns the last response."""
        from protocol import messages

        req_cls = messages.JoinGroupRequest
        protos = protocols if protocols is not None else [("range", subscription(topics))]
        for _ in range(2):
            resp = self._request(JOIN_GROUP, version, req_cls(
                group_id=self.group, session_timeout_ms=self.session_ms, rebalance_timeout_ms=self.rebalance_ms,
                member_id=self.member_id, group_instance_id=self.instance_id, protocol_type=protocol_type,
                protocols=[req_cls.JoinGroupRequestProtocol(name=n, metadata=md) for n, md in protos]))
            if resp.error_code == MEMBER_ID_REQUIRED:
                self.member_id = resp.member_id
                continue
            break
        if resp.error_code == 0:
            self.member_id, self.generation = resp.member_id, resp.generation_id
            self.leader, self.protocol = resp.leader, resp.protocol_name
        return resp

    def sync(self, plan: dict[str, bytes] | None = None, version: int = 3) -> Any:
        from protocol import messages

        cls = messages.SyncGroupRequest
        return self._request(SYNC_GROUP, version, cls(
            group_id=self.group, generation_id=self.generation, member_id=self.member_id,
            group_instance_id=self.instance_id,
            assignments=[cls.SyncGroupRequestAssignment(member_id=k, assignment=v) for k, v in (plan or {}).items()]))

    def heartbeat(self, *, generation: int | None = None, member_id: str | None = None) -> int:
        from protocol import messages

        resp = self._request(HEARTBEAT, 3, messages.HeartbeatRequest(
            group_id=self.group, generation_id=self.generation if generation is None else generation,
            member_id=self.member_id if member_id is None else member_id, group_instance_id=self.instance_id))
        return resp.error_code

    def leave(self) -> Any:
        from protocol import messages

        cls = messages.LeaveGroupRequest
        return self._request(LEAVE_GROUP, 3, cls(group_id=self.group, members=[
            cls.MemberIdentity(member_id=self.member_id, group_instance_id=self.instance_id)]))

    def commit(self, topic: str, offsets: dict[int, int], *, generation: int | None = None,
               member_id: str | None = None, version: int = 7) -> dict[int, int]:
        """OffsetCommit; returns partition -> error code."""
        return commit_offsets(self.sock, self.group, topic, offsets,
                              generation=self.generation if generation is None else generation,
                              member_id=self.member_id if member_id is None else member_id,
                              instance_id=self.instance_id, version=version, corr=self._next())

    def _next(self) -> int:
        self._corr += 1
        return self._corr


def commit_offsets(sock: Any, group: str, topic: str, offsets: dict[int, int], *, generation: int = -1,
                   member_id: str = "", instance_id: str | None = None, version: int = 7,
                   corr: int = 1) -> dict[int, int]:
    """A raw OffsetCommit of ``offsets`` (partition -> offset); returns partition -> error code."""
    from protocol import messages

    cls = messages.OffsetCommitRequest
    resp = sock.request(OFFSET_COMMIT, version, corr, cls(
        group_id=group, generation_id_or_member_epoch=generation, member_id=member_id,
        group_instance_id=instance_id,
        topics=[cls.OffsetCommitRequestTopic(name=topic, partitions=[
            cls.OffsetCommitRequestPartition(partition_index=p, committed_offset=o) for p, o in offsets.items()])]))
    return {p.partition_index: p.error_code for t in resp.topics for p in t.partitions}


def fetch_offsets(sock: Any, group: str, topic: str, partitions: Sequence[int], corr: int = 1) -> dict[int, int]:
    """A raw OffsetFetch v6; returns partition -> committed offset (-1: none). Fails on an error code."""
    from protocol import messages

    cls = messages.OffsetFetchRequest
    resp = sock.request(OFFSET_FETCH, 6, corr, cls(
        group_id=group, topics=[cls.OffsetFetchRequestTopic(name=topic, partition_indexes=list(partitions))]))
    assert resp.error_code == 0, f"OffsetFetch v6 {group}: error code {resp.error_code}"
    out = {}
    for t in resp.topics:
        for p in t.partitions:
            assert p.error_code == 0, f"OffsetFetch v6 {group} {t.name}[{p.partition_index}]: error {p.error_code}"
            out[p.partition_index] = p.committed_offset
    return out


def describe_group(sock: Any, group: str, corr: int = 1) -> Any:
    """A raw DescribeGroups v5 of one group; returns the DescribedGroup."""
    from protocol import messages

    resp = sock.request(DESCRIBE_GROUPS, 5, corr, messages.DescribeGroupsRequest(groups=[group]))
    (described,) = resp.groups
    return described


if __name__ == "__main__":
    _child_main(sys.argv[1])
