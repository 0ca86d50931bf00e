"""Durability of the file and PostgreSQL engines against process crashes, through real clients and a real
broker process.

Kafka's promise for ``acks=all``: once a produce is acknowledged, the record stays at the offset it was
acknowledged with, whatever happens to the broker process afterwards. Here a producer (confluent-kafka,
not idempotent; kafka-python, idempotent by default) sends numbered records to a 3-partition topic
while the broker is killed with SIGKILL at random moments and restarted on the same port and data
directory. After every restart the high watermark must cover every acknowledged offset and be no
lower than just before the kill (a SIGKILL loses no completed write); at the end every partition is
read from offset 0 with ``assign()`` and every acknowledged record must be at its acknowledged
offset, with contiguous offsets.

Without idempotence Kafka only promises at-least-once: a batch retried after a kill whose first
attempt was written appears twice, so duplicates are counted and printed, not failed. With idempotence
Kafka removes retried duplicates, across restarts too, and so must Moldau: any duplicate fails.

Also: a clean SIGTERM stop keeps everything (acks=1 records included) and the restart recovers
nothing; and a torn tail appended to the active segment is cut on start-up with a
``storage.recovery.truncated`` log line naming the partition and the bytes dropped.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from protocol.errors import ErrorCode
from protocol.records import Record, build_batch
from tests.compat.conftest import BrokerProcess, KafkaSocket
from tests.compat.test_produce import Client as ProduceClient
from tests.compat.test_produce import _init_producer_id

PARTITIONS = 3
KILLS = 20
PROGRESS_TIMEOUT_S = 15.0  # a producer must get a new acknowledgement this soon after a restart
RESTART_TIMEOUT_S = 10.0  # retrying a restart while the old port is still held
READ_TIMEOUT_S = 30.0
FLUSH_TIMEOUT_S = 30.0
MAX_OUTSTANDING = 2000  # records a producer may have unacknowledged at once
# Fast reconnects: the broker is back within a second, and librdkafka's default backoff grows to 10 s.
CONFLUENT_FAST = {"reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 250, "retry.backoff.ms": 20,
                  "retry.backoff.max.ms": 250, "topic.metadata.refresh.interval.ms": 1000,
                  "log_level": 0}  # connection-refused noise while the broker is down


def unique_topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class RestartableBroker:
    """A ``moldau serve`` process on one data directory that can be killed and restarted on its port."""

    def __init__(self, tmp_path: Path, *extra_args: str) -> None:
        self.tmp_path = tmp_path
        self.data_dir = tmp_path / "data"
        self.extra_args = list(extra_args)
        self.history: list[BrokerProcess] = []
        self.proc = self._start([])
        self.port = self.proc.port
        self.bootstrap = self.proc.bootstrap

    def _start(self, listen: list[str]) -> BrokerProcess:
        # A broker on a database (--storage postgresql://...) keeps no data directory.
        where = [] if "--storage" in self.extra_args else ["--data-dir", str(self.data_dir)]
        proc = BrokerProcess([*where, *self.extra_args, *listen], self.tmp_path, memory=False)
        self.history.append(proc)
        return proc

    def kill(self) -> None:
        """SIGKILL: nothing is flushed, closed or checkpointed."""
        self.proc.proc.kill()
        self.proc.stop()  # reaps the process and joins its log reader

    def stop(self) -> int:
        """SIGTERM (a clean stop); returns the exit code."""
        return self.proc.stop()

    def start(self) -> BrokerProcess:
        """Start again on the same port, retrying while the port is still in use."""
        deadline = time.monotonic() + RESTART_TIMEOUT_S
        while True:
            try:
                self.proc = self._start(["--listen", f"127.0.0.1:{self.port}"])
                return self.proc
            except AssertionError as exc:
                if "in use" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                self.history.pop()
                time.sleep(0.1)

    @property
    def on_postgres(self) -> bool:
        return "--storage" in self.extra_args

    def records(self, event: str) -> list[dict[str, Any]]:
        """Log records named ``event`` from every process this object started, oldest first."""
        return [r for proc in self.history for r in proc.records if r.get("event") == event]

    def close(self) -> None:
        """Stop the running process; fail if any process this object started logged a traceback."""
        for proc in self.history:
            if proc.proc.poll() is None:
                proc.stop()
        for proc in self.history:
            tracebacks = proc.tracebacks()
            assert not tracebacks, "broker logged a traceback:\n" + "\n".join(tracebacks[:5])


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[Callable[..., RestartableBroker]]:
    """Make `RestartableBroker`s; at the end every process is stopped and none may have logged a traceback."""
    made: list[RestartableBroker] = []

    def make(*extra_args: str) -> RestartableBroker:
        broker = RestartableBroker(tmp_path, *extra_args)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.close()


def create_topic(bootstrap: str, topic: str, partitions: int = PARTITIONS, config: dict[str, str] | None = None) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, partitions, 1, config=config or {})], operation_timeout=10)
    futures[topic].result(10)


def watermarks(bootstrap: str, topic: str, partitions: int = PARTITIONS) -> dict[int, tuple[int, int]]:
    """(low, high) watermark of each partition, asked of the broker (ListOffsets earliest and latest)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("no-group"),
                         "enable.auto.commit": False, **CONFLUENT_FAST})
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
                for p in range(partitions)}
    finally:
        consumer.close()


def read_partitions(bootstrap: str, topic: str, partitions: int = PARTITIONS,
                    timeout: float = READ_TIMEOUT_S) -> dict[int, list[tuple[int, bytes]]]:
    """Every record of every partition, as (offset, value), read with ``assign()`` from the low watermark
    (0 unless retention or DeleteRecords moved it) up to the high watermark; fails when ``timeout`` passes
    without a new record (a deadline on the whole read would fail a crash loop's millions of records)."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    marks = watermarks(bootstrap, topic, partitions)
    ends = {p: high for p, (_, high) in marks.items()}
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("no-group"),
                         "enable.auto.commit": False, "enable.partition.eof": True,
                         "fetch.wait.max.ms": 100, **CONFLUENT_FAST})
    got: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(partitions)}
    try:
        consumer.assign([TopicPartition(topic, p, marks[p][0]) for p in range(partitions)])
        deadline = time.monotonic() + timeout
        done = {p for p in range(partitions) if ends[p] == marks[p][0]}
        while len(done) < partitions and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                err = msg.error()
                if err is not None:
                    assert err.code() == KafkaError._PARTITION_EOF, f"consumer error: {err}"
                    continue
                deadline = time.monotonic() + timeout
                got[msg.partition()].append((msg.offset(), msg.value()))
                if msg.offset() >= ends[msg.partition()] - 1:
                    done.add(msg.partition())
    finally:
        consumer.close()
    missing = {p: (len(got[p]), ends[p]) for p in range(partitions) if p not in done}
    assert not missing, (f"read did not reach the high watermark (no new record for {timeout}s): "
                         f"partition: (read, hw) {missing}")
    return got


@dataclass
class Acks:
    """Records a producer got an acknowledgement for, filled from its delivery callbacks."""

    offsets: dict[int, dict[int, bytes]] = field(default_factory=lambda: {p: {} for p in range(PARTITIONS)})
    failed: Counter[str] = field(default_factory=Counter)
    conflicts: list[tuple[int, int, bytes, bytes]] = field(default_factory=list)  # one offset acked twice
    count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    def acked(self, partition: int, offset: int, value: bytes) -> None:
        # No assert here: kafka-python swallows exceptions raised in callbacks. verify_log checks conflicts.
        with self.lock:
            previous = self.offsets[partition].setdefault(offset, value)
            if previous != value:
                self.conflicts.append((partition, offset, previous, value))
            self.count += 1
            self.changed.notify_all()

    def failure(self, reason: str) -> None:
        with self.lock:
            self.failed[reason] += 1

    def highest(self) -> dict[int, int]:
        """The highest acknowledged offset of each partition (-1 for none)."""
        with self.lock:
            return {p: max(offsets, default=-1) for p, offsets in self.offsets.items()}

    def wait_beyond(self, count: int, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.count > count, timeout)


class ContinuousProducer:
    """A thread sending numbered values (``<prefix>-<n>`` to partition n % 3) until stopped."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.acks = Acks()
        self.sent = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._guarded, name=f"producer-{prefix}", daemon=True)

    def value(self, n: int) -> bytes:
        return f"{self.prefix}-{n}".encode()

    def start(self) -> None:
        self._thread.start()

    def _guarded(self) -> None:
        try:
            self.run()
        except Exception as exc:  # noqa: BLE001 - the main thread re-raises it in stop()
            self.errors.append(exc)

    def run(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop sending, wait until every record sent is acknowledged or failed, close the client."""
        self._stop.set()
        self._thread.join(FLUSH_TIMEOUT_S + 10)
        assert not self._thread.is_alive(), f"{self.prefix} producer did not finish within the bound"
        if self.errors:
            raise self.errors[0]


class ConfluentProducer(ContinuousProducer):
    """confluent-kafka with acks=all and retries, not idempotent (at-least-once) unless ``idempotent``."""

    def __init__(self, bootstrap: str, topic: str, *, idempotent: bool = False) -> None:
        super().__init__("confluent")
        self.bootstrap, self.topic, self.idempotent = bootstrap, topic, idempotent

    def run(self) -> None:
        from confluent_kafka import KafkaException, Producer

        producer = Producer({"bootstrap.servers": self.bootstrap, "acks": "all", "enable.idempotence": self.idempotent,
                             "linger.ms": 5, "message.timeout.ms": 20000, "request.timeout.ms": 5000,
                             **CONFLUENT_FAST})

        def report(err: Any, msg: Any) -> None:
            if err is None:
                self.acks.acked(msg.partition(), msg.offset(), msg.value())
            else:
                self.acks.failure(err.name())

        n = 0
        while not self._stop.is_set():
            if len(producer) >= MAX_OUTSTANDING:
                producer.poll(0.01)
                continue
            try:
                producer.produce(self.topic, self.value(n), partition=n % PARTITIONS, on_delivery=report)
            except BufferError:
                producer.poll(0.01)
                continue
            except KafkaException as exc:
                self.acks.failure(str(exc.args[0].name()))
                continue
            n += 1
            self.sent = n
            producer.poll(0)
        left = producer.flush(FLUSH_TIMEOUT_S)
        assert left == 0, f"confluent producer: {left} records neither acknowledged nor failed after flush"



class KafkaPythonProducer(ContinuousProducer):
    """kafka-python 3 with its defaults: idempotent, acks=all."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__("kafka-python")
        self.bootstrap, self.topic = bootstrap, topic
        self.producer_ids: set[int] = set()

    def run(self) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaTimeoutError

        producer = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, request_timeout_ms=5000,
                                 delivery_timeout_ms=20000, max_block_ms=2000, retry_backoff_ms=20,
                                 reconnect_backoff_ms=20, reconnect_backoff_max_ms=250,
                                 metadata_max_age_ms=1000)
        assert producer.config["enable_idempotence"], "kafka-python's default producer should be idempotent"
        outstanding = threading.Semaphore(MAX_OUTSTANDING)

        def on_success(value: bytes, metadata: Any) -> None:
            outstanding.release()
            self.acks.acked(metadata.partition, metadata.offset, value)

        def on_error(exc: BaseException) -> None:
            outstanding.release()
            self.acks.failure(type(exc).__name__)

        n = 0
        try:
            while not self._stop.is_set():
                if not outstanding.acquire(timeout=0.05):
                    continue
                value = self.value(n)
                try:
                    future = producer.send(self.topic, value, partition=n % PARTITIONS)
                except KafkaTimeoutError:
                    outstanding.release()
                    continue
                future.add_callback(on_success, value)
                future.add_errback(on_error)
                n += 1
                self.sent = n
                manager = getattr(producer, "_transaction_manager", None)
                if manager is not None and manager.producer_id_and_epoch.producer_id >= 0:
                    self.producer_ids.add(manager.producer_id_and_epoch.producer_id)
            producer.flush(FLUSH_TIMEOUT_S)
        finally:
            producer.close(timeout=5)


def kill_and_restart_loop(broker: RestartableBroker, producer: ContinuousProducer, topic: str,
                          rng: random.Random) -> list[dict[int, tuple[int, int]]]:
    """Kill the broker KILLS times at random moments while ``producer`` sends, restarting it each time.
    After each restart the high watermark must cover every offset acknowledged so far and be at least
    what it was just before the kill (a SIGKILL loses no completed write). Returns the watermarks seen
    after each restart."""
    seen = []
    for kill in range(KILLS):
        before = producer.acks.count
        assert producer.acks.wait_beyond(before, PROGRESS_TIMEOUT_S), (
            f"no acknowledgement within {PROGRESS_TIMEOUT_S}s after restart {kill} "
            f"(sent {producer.sent}, acked {producer.acks.count}, failed {dict(producer.acks.failed)}; "
            f"producer errors {producer.errors})")
        # The kill moment itself, not a wait for something: a random point of steady producing (acks come
        # in bursts, so a number of acks would always kill just after one).
        time.sleep(rng.uniform(0.0, 0.4))
        last_seen = watermarks(broker.bootstrap, topic)
        broker.kill()
        broker.start()
        highest = producer.acks.highest()  # every ack counted here was answered before this query
        marks = watermarks(broker.bootstrap, topic)
        behind = {p: (marks[p][1], highest[p]) for p in highest if marks[p][1] < highest[p] + 1}
        assert not behind, (f"after restart {kill + 1} the high watermark is below an acknowledged offset: "
                            f"partition: (high watermark, highest acked offset) {behind}")
        backwards = {p: (last_seen[p][1], marks[p][1]) for p in marks if marks[p][1] < last_seen[p][1]}
        assert not backwards, (f"restart {kill + 1} moved the high watermark backwards: "
                               f"partition: (before the kill, after the restart) {backwards}")
        seen.append(marks)
    return seen


@dataclass
class Verdict:
    """What the final read found, against what was acknowledged."""

    acked: int
    stored: int
    duplicated_acked: list[tuple[int, bytes, list[int]]]  # (partition, value, offsets) for acked values
    unacked_stored: int

    def summary(self, producer: ContinuousProducer) -> str:
        return (f"{producer.prefix}: {KILLS} kills, sent {producer.sent}, acked {self.acked}, "
                f"failed {dict(producer.acks.failed)}, stored {self.stored} "
                f"({self.unacked_stored} never acknowledged), acked values stored more than once: "
                f"{len(self.duplicated_acked)}")


def verify_log(bootstrap: str, topic: str, producer: ContinuousProducer) -> Verdict:
    """Read everything back and check Kafka's acks=all promise (see the module docstring)."""
    assert not producer.acks.conflicts, (f"{len(producer.acks.conflicts)} offsets were acknowledged for two "
                                         f"different records (partition, offset, first, second): "
                                         f"{producer.acks.conflicts[:5]}")
    stored = read_partitions(bootstrap, topic)
    acked = producer.acks.offsets
    duplicated: list[tuple[int, bytes, list[int]]] = []
    unacked = 0
    for p in range(PARTITIONS):
        offsets = [o for o, _ in stored[p]]
        assert offsets == list(range(len(offsets))), (
            f"partition {p}: offsets are not contiguous from 0: first gap after "
            f"{next((a for a, b in itertools.pairwise(offsets) if b != a + 1), offsets[:1])}")
        by_offset = dict(stored[p])
        wrong = [(o, v, by_offset.get(o)) for o, v in sorted(acked[p].items()) if by_offset.get(o) != v]
        assert not wrong, (f"partition {p}: {len(wrong)} acknowledged records are missing or different; "
                           f"first (offset, acked value, stored value): {wrong[:5]}")
        foreign = [(o, v) for o, v in stored[p] if not v.startswith(producer.prefix.encode() + b"-")
                   or int(v.rsplit(b"-", 1)[1]) % PARTITIONS != p]
        assert not foreign, f"partition {p} holds records this producer never sent there: {foreign[:5]}"
        where: dict[bytes, list[int]] = {}
        for o, v in stored[p]:
            where.setdefault(v, []).append(o)
        acked_values = set(acked[p].values())
        duplicated += [(p, v, os_) for v, os_ in where.items() if len(os_) > 1 and v in acked_values]
        unacked += sum(1 for v in where if v not in acked_values)
    return Verdict(sum(len(a) for a in acked.values()), sum(len(s) for s in stored.values()), duplicated, unacked)


def produce_through_kills(broker: RestartableBroker, make: Callable[[str, str], ContinuousProducer],
                          rng: random.Random) -> tuple[str, ContinuousProducer, Verdict]:
    """A new topic, a producer sending to it through `kill_and_restart_loop`, and the final check."""
    topic = unique_topic("durable")
    create_topic(broker.bootstrap, topic)
    producer = make(broker.bootstrap, topic)
    producer.start()
    try:
        kill_and_restart_loop(broker, producer, topic, rng)
    finally:
        producer.stop()
    verdict = verify_log(broker.bootstrap, topic, producer)
    assert verdict.acked > KILLS, f"too few acknowledgements to mean anything: {verdict.summary(producer)}"
    return topic, producer, verdict


def session_boundaries(broker: RestartableBroker, topic: str) -> dict[int, list[int]]:
    """Per partition, the log end offsets recovery found at each restart: where one broker lifetime's
    appends end and the next one's begin."""
    bounds: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
    for record in broker.records("storage.log.recovered"):
        if record.get("topic") == topic:
            bounds[record["partition"]].append(record["log_end_offset"])
    return bounds


@pytest.mark.timeout(180)
def test_confluent_acks_all_records_survive_repeated_kill_9(
        restartable: Callable[..., RestartableBroker]) -> None:
    """Kafka: an acknowledged acks=all record is never lost. confluent-kafka (not idempotent, retries on)
    produces while the broker is SIGKILLed 20 times; every acknowledged record is at its offset at the
    end, offsets are contiguous, and the high watermark never falls below an acknowledged offset."""
    broker = restartable()
    _, producer, verdict = produce_through_kills(broker, ConfluentProducer, random.Random(0xC0FFEE))
    print(verdict.summary(producer))  # duplicates are allowed without idempotence: reported, not failed
    assert broker.stop() == 0


@pytest.fixture(params=["file", "postgresql"])
def storage_args(request: pytest.FixtureRequest) -> list[str]:
    """The storage engines whose durability the kill tests check: the data directory, and a PostgreSQL
    database (a new one per test on the throwaway server)."""
    if request.param == "file":
        return []
    return ["--storage", request.getfixturevalue("postgres_url")]


@pytest.mark.timeout(180)
def test_kafka_python_idempotent_records_survive_repeated_kill_9(
        restartable: Callable[..., RestartableBroker], storage_args: list[str]) -> None:
    """Kafka: an acknowledged record from the default (idempotent, acks=all) kafka-python producer is
    never lost and never written twice, even when its retry straddles a restart (the broker rebuilds
    producer state from the batch headers at the tail of each log), whether the log is in files or in
    PostgreSQL."""
    broker = restartable(*storage_args)
    topic, producer, verdict = produce_through_kills(broker, KafkaPythonProducer, random.Random(0xFEED))
    bounds = session_boundaries(broker, topic)
    assert broker.on_postgres or all(len(b) == KILLS for b in bounds.values()), (
        f"expected one storage.log.recovered line per partition per restart ({KILLS}), got "
        f"{ {p: len(b) for p, b in bounds.items()} }")
    print(verdict.summary(producer), f"producer ids used: {sorted(producer.producer_ids)}")
    assert not verdict.duplicated_acked, (
        f"idempotent producer: {len(verdict.duplicated_acked)} acknowledged values stored twice (partition, "
        f"value, offsets): {verdict.duplicated_acked[:5]}; restart boundaries {bounds}")
    assert broker.stop() == 0


def test_clean_sigterm_restart_keeps_acks_1_and_acks_all_records_without_recovery(
        restartable: Callable[..., RestartableBroker]) -> None:
    """Kafka: a clean shutdown flushes every log, so records acknowledged with acks=1 (not yet fsynced
    when answered) survive too, and the next start finds the clean-shutdown marker and recovers
    nothing (no storage.log.recovered, no storage.recovery.truncated)."""
    from confluent_kafka import Producer

    broker = restartable()
    topic = unique_topic("durable-clean")
    create_topic(broker.bootstrap, topic)
    acks = Acks()
    for mode in ("1", "all"):
        producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": mode, "linger.ms": 5})
        for n in range(300):
            value = f"acks{mode}-{n}".encode()
            producer.produce(topic, value, partition=n % PARTITIONS,
                             on_delivery=lambda err, msg: acks.acked(msg.partition(), msg.offset(), msg.value())
                             if err is None else acks.failure(err.name()))
        assert producer.flush(10) == 0, "records still unacknowledged after 10 s"
    assert acks.count == 600 and not acks.failed, f"acked {acks.count} of 600, failures {dict(acks.failed)}"
    assert broker.stop() == 0, "SIGTERM stop did not exit 0"
    restarted = broker.start()
    recovery = [r for r in restarted.records if r.get("event", "").startswith(("storage.recovery", "storage.log.recovered"))]
    assert not recovery, f"recovery ran after a clean stop: {recovery}"
    stored = read_partitions(broker.bootstrap, topic)
    for p in range(PARTITIONS):
        assert dict(stored[p]) == acks.offsets[p], (
            f"partition {p}: stored {len(stored[p])} records, acknowledged {len(acks.offsets[p])}; first "
            f"differences: {sorted(set(dict(stored[p]).items()) ^ set(acks.offsets[p].items()))[:5]}")
    assert broker.stop() == 0


def torn_batch(next_offset: int) -> bytes:
    """The first part of a valid batch that would have been at ``next_offset``: a write cut short."""
    batch = build_batch([Record(next_offset + i, int(time.time() * 1000), None, b"torn-%d" % i) for i in range(5)],
                        base_offset=next_offset)
    return bytes(batch[: len(batch) - 17])


@pytest.mark.parametrize(("stop", "tail"), [("kill", "torn-batch"), ("kill", "random-bytes"),
                                            ("sigterm", "random-bytes")])
def test_torn_tail_of_active_segment_is_truncated_and_logged(
        restartable: Callable[..., RestartableBroker], stop: str, tail: str) -> None:
    """Kafka (LogLoader recovery): bytes after the last whole, valid batch of the active segment are cut
    on start-up; Moldau logs storage.recovery.truncated with the topic, partition, position and bytes
    dropped, keeps every acknowledged record and appends the next record right after them. After a
    clean stop the damaged active segment is still detected (the marker only skips the full scan)."""
    from confluent_kafka import Producer

    broker = restartable()
    topic = unique_topic("durable-torn")
    create_topic(broker.bootstrap, topic, partitions=2)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5})
    acked: dict[int, bytes] = {}
    for n in range(50):
        producer.produce(topic, b"v-%d" % n, partition=1,
                         on_delivery=lambda err, msg: acked.__setitem__(msg.offset(), msg.value()) if err is None else None)
        if n % 10 == 9:
            producer.flush(10)
    assert producer.flush(10) == 0 and len(acked) == 50, f"acknowledged {len(acked)} of 50"
    if stop == "kill":
        broker.kill()
    else:
        assert broker.stop() == 0
    segment = broker.data_dir / f"{topic}-1" / f"{0:020d}.log"
    size = segment.stat().st_size
    garbage = torn_batch(50) if tail == "torn-batch" else random.Random(7).randbytes(333)
    with open(segment, "ab") as f:
        f.write(garbage)
    restarted = broker.start()
    cut = [r for r in restarted.records if r.get("event") == "storage.recovery.truncated"]
    assert len(cut) == 1, f"expected one storage.recovery.truncated record, got {cut}"
    assert (cut[0].get("topic"), cut[0].get("partition")) == (topic, 1), f"wrong partition named: {cut[0]}"
    assert (cut[0].get("position"), cut[0].get("bytes_dropped")) == (size, len(garbage)), (
        f"expected position {size} and bytes_dropped {len(garbage)}, got {cut[0]}")
    assert cut[0].get("segment", "").startswith(f"{0:020d}"), f"segment not named: {cut[0]}"
    assert segment.stat().st_size == size, f"segment is {segment.stat().st_size} bytes after recovery, expected {size}"
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    after: list[int] = []
    producer.produce(topic, b"after", partition=1, on_delivery=lambda err, msg: after.append(msg.offset()))
    assert producer.flush(10) == 0 and after == [50], f"next record got offset {after}, expected [50]"
    stored = read_partitions(broker.bootstrap, topic, partitions=2)
    assert dict(stored[1]) == {**acked, 50: b"after"}, f"partition 1 holds {stored[1][:3]}... ({len(stored[1])})"
    assert stored[0] == []
    assert broker.stop() == 0



def test_producer_id_from_before_a_restart_is_never_handed_out_again(
        restartable: Callable[..., RestartableBroker], raw_socket: Callable[[BrokerProcess], KafkaSocket],
        storage_args: list[str]) -> None:
    """Kafka: producer ids are unique for the cluster's lifetime (the controller persists the allocated
    blocks), so two idempotent producers never share one. Producer A gets its id, writes, the broker is
    SIGKILLed and restarted; producer B asks for an id; A and B then write alternately. Every batch
    acknowledged to either must be in the log."""
    broker = restartable(*storage_args)
    topic = unique_topic("durable-pid")
    create_topic(broker.bootstrap, topic, partitions=1)
    now = int(time.time() * 1000)

    def batch(pid: int, sequence: int, who: str) -> bytearray:
        return build_batch([Record(i, now, None, f"{who}-{sequence + i}".encode()) for i in range(5)],
                           producer_id=pid, producer_epoch=0, base_sequence=sequence)

    a = ProduceClient(raw_socket(broker.proc))
    pid_a = _init_producer_id(a).producer_id
    acked: dict[int, bytes] = {}

    def produce(client: ProduceClient, pid: int, sequence: int, who: str) -> None:
        result = client.produce(topic, batch(pid, sequence, who), acks=-1)
        assert result.error_code == 0, f"{who} seq {sequence}: {ErrorCode.from_code(result.error_code).name}"
        acked.update({result.base_offset + i: f"{who}-{sequence + i}".encode() for i in range(5)})

    produce(a, pid_a, 0, "a")
    broker.kill()
    broker.start()
    a = ProduceClient(raw_socket(broker.proc))  # A reconnects with its id and sequences, as clients do
    b = ProduceClient(raw_socket(broker.proc))
    pid_b = _init_producer_id(b).producer_id
    produce(b, pid_b, 0, "b")
    produce(a, pid_a, 5, "a")
    produce(b, pid_b, 5, "b")
    stored = dict(read_partitions(broker.bootstrap, topic, partitions=1)[0])
    lost = {o: v for o, v in acked.items() if stored.get(o) != v}
    values = sorted(v.decode() for v in stored.values())
    assert not lost and pid_a != pid_b, (
        f"producer A got id {pid_a} before the restart, B got {pid_b} after it; acknowledged but not stored "
        f"as acknowledged: {sorted(v.decode() for v in set(acked.values()) - set(stored.values()))}; "
        f"log holds {values}")
    assert broker.stop() == 0


def test_idempotent_retry_after_a_restart_is_not_written_twice(
        restartable: Callable[..., RestartableBroker], raw_socket: Callable[[BrokerProcess], KafkaSocket],
        storage_args: list[str]) -> None:
    """Kafka: recovery rebuilds each partition's producer state (from its snapshot and the batch headers
    after it), so an idempotent batch retried after a broker restart, because its acknowledgement was
    lost, is answered with its original offset and not appended again. This is what the kafka-python
    kill -9 test counts as duplicates across a restart."""
    broker = restartable(*storage_args)
    topic = unique_topic("durable-retry")
    create_topic(broker.bootstrap, topic, partitions=1)
    client = ProduceClient(raw_socket(broker.proc))
    pid = _init_producer_id(client).producer_id
    records = [Record(i, int(time.time() * 1000), None, b"r-%d" % i) for i in range(5)]
    first = client.produce(topic, build_batch(records, producer_id=pid, producer_epoch=0, base_sequence=0), acks=-1)
    assert (first.error_code, first.base_offset) == (0, 0), first
    broker.kill()
    broker.start()
    client = ProduceClient(raw_socket(broker.proc))
    retried = client.produce(topic, build_batch(records, producer_id=pid, producer_epoch=0, base_sequence=0), acks=-1)
    stored = read_partitions(broker.bootstrap, topic, partitions=1)[0]
    assert (retried.error_code, retried.base_offset, len(stored)) == (0, 0, 5), (
        f"retry after the restart answered {ErrorCode.from_code(retried.error_code).name} at offset "
        f"{retried.base_offset}; the log holds {len(stored)} records (expected the original offset 0 and 5 records)")
    assert broker.stop() == 0
