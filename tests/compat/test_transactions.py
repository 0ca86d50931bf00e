"""Transactions through real clients (issue 13): transactional producers commit and abort, read_committed
consumers see exactly the committed records once and in order, read_uncommitted ones see every record
and no control record, consume-transform-produce commits its input offsets with the output, and zombies
are fenced.

One broker serves the module (``group.initial.rebalance.delay.ms=0``), each test on its own topics,
groups and transactional ids.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from tests.compat.clients import create_topic, no_new_tracebacks, unique
from tests.compat.conftest import BrokerProcess, finish
from tests.compat.test_durability import restartable  # noqa: F401 - the fixture

WAIT_S = 30.0
TXN_TIMEOUT_MS = 10_000


@pytest.fixture(scope="module")
def txn_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(["--set", "group.initial.rebalance.delay.ms=0"], tmp_path_factory.mktemp("txn-broker"))
    yield proc
    finish(proc)


@pytest.fixture
def broker(txn_broker: BrokerProcess) -> Iterator[BrokerProcess]:
    with no_new_tracebacks(txn_broker):
        yield txn_broker


def txn_producer(bootstrap: str, transactional_id: str | None = None, **extra: Any) -> Producer:
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id or unique("txn"),
                         "transaction.timeout.ms": TXN_TIMEOUT_MS, "linger.ms": 5, **extra})
    producer.init_transactions(WAIT_S)
    return producer


def read_all(bootstrap: str, topic: str, isolation: str, expected: int, partitions: int = 1,
             settle_s: float = 0.0) -> list[tuple[int, int, bytes]]:
    """(partition, offset, value) of the records an ``isolation`` consumer reads from the start; stops when
    ``expected`` arrived and, with ``settle_s``, nothing more came in that long (bounded by WAIT_S)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("g"), "enable.auto.commit": False,
                         "isolation.level": isolation, "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got: list[tuple[int, int, bytes]] = []
    deadline = time.monotonic() + WAIT_S
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                if len(got) >= expected and time.monotonic() - quiet_since >= settle_s:
                    break
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(msg.error())
            got.append((msg.partition(), msg.offset(), msg.value()))
            quiet_since = time.monotonic()
    finally:
        consumer.close()
    return got


def test_committed_and_aborted_transactions_with_both_isolation_levels(broker: BrokerProcess) -> None:
    topic = unique("txn-rc")
    create_topic(broker.bootstrap, topic, 2)
    producer = txn_producer(broker.bootstrap)
    expected_committed: list[bytes] = []
    everything: list[bytes] = []
    for round_ in range(4):
        producer.begin_transaction()
        values = [f"r{round_}-{i}".encode() for i in range(10)]
        for i, value in enumerate(values):
            producer.produce(topic, value, partition=i % 2)
        everything += values
        if round_ % 2 == 0:
            producer.commit_transaction(WAIT_S)
            expected_committed += values
        else:
            producer.flush(WAIT_S)  # on the broker before the abort (abort_transaction purges queued records)
            producer.abort_transaction(WAIT_S)
    committed = read_all(broker.bootstrap, topic, "read_committed", len(expected_committed), 2, settle_s=1.0)
    assert sorted(v for _, _, v in committed) == sorted(expected_committed)
    for p in (0, 1):  # in order within each partition
        mine = [v for part, _, v in committed if part == p]
        assert mine == [v for v in expected_committed if int(v.split(b"-")[1]) % 2 == p]
    uncommitted = read_all(broker.bootstrap, topic, "read_uncommitted", len(everything), 2, settle_s=1.0)
    assert sorted(v for _, _, v in uncommitted) == sorted(everything)  # no control record surfaces


def test_an_open_transaction_holds_back_read_committed_until_it_commits(broker: BrokerProcess) -> None:
    topic = unique("txn-lso")
    create_topic(broker.bootstrap, topic, 1)
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    producer = txn_producer(broker.bootstrap)
    producer.begin_transaction()
    producer.produce(topic, b"in-txn")
    producer.flush(WAIT_S)
    plain.produce(topic, b"after")  # above the open transaction: not readable committed yet
    plain.flush(WAIT_S)
    assert read_all(broker.bootstrap, topic, "read_committed", 0, settle_s=1.0) == []
    assert [v for _, _, v in read_all(broker.bootstrap, topic, "read_uncommitted", 2)] == [b"in-txn", b"after"]
    producer.commit_transaction(WAIT_S)
    assert [v for _, _, v in read_all(broker.bootstrap, topic, "read_committed", 2)] == [b"in-txn", b"after"]


def test_consume_transform_produce_commits_offsets_with_the_output(broker: BrokerProcess) -> None:
    source, sink = unique("ctp-in"), unique("ctp-out")
    create_topic(broker.bootstrap, source, 1)
    create_topic(broker.bootstrap, sink, 1)
    group = unique("ctp-group")
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(20):
        plain.produce(source, f"in-{i}".encode())
    plain.flush(WAIT_S)

    def run(batch: int, commit: bool) -> None:
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False,
                             "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                             "session.timeout.ms": 6000})
        producer = txn_producer(broker.bootstrap)
        consumer.subscribe([source])
        try:
            taken: list[Any] = []
            deadline = time.monotonic() + WAIT_S
            while len(taken) < batch and time.monotonic() < deadline:
                msg = consumer.poll(0.2)
                if msg is not None and not msg.error():
                    taken.append(msg)
            assert len(taken) == batch
            producer.begin_transaction()
            for msg in taken:
                producer.produce(sink, msg.value().replace(b"in", b"out"))
            positions = [TopicPartition(source, 0, taken[-1].offset() + 1)]
            producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), WAIT_S)
            if commit:
                producer.commit_transaction(WAIT_S)
            else:
                producer.abort_transaction(WAIT_S)
        finally:
            consumer.close()

    run(10, commit=True)
    run(5, commit=False)  # aborted: neither its output nor its offsets count
    run(10, commit=True)  # resumes at offset 10, the last committed position
    out = read_all(broker.bootstrap, sink, "read_committed", 20, settle_s=1.0)
    assert [v for _, _, v in out] == [f"out-{i}".encode() for i in range(20)]
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        (position,) = consumer.committed([TopicPartition(source, 0)], WAIT_S)
        assert position.offset == 20
    finally:
        consumer.close()


def test_a_new_producer_fences_the_zombie_and_aborts_its_transaction(broker: BrokerProcess) -> None:
    topic = unique("txn-zombie")
    create_topic(broker.bootstrap, topic, 1)
    transactional_id = unique("zombie")
    zombie = txn_producer(broker.bootstrap, transactional_id)
    zombie.begin_transaction()
    zombie.produce(topic, b"zombie")
    zombie.flush(WAIT_S)
    # Aborts the zombie's open transaction; the broker answers CONCURRENT_TRANSACTIONS meanwhile, which
    # librdkafka retries.
    successor = txn_producer(broker.bootstrap, transactional_id)
    broker.wait_for_log(lambda r: r.get("event") == "init_producer_id.rejected"
                        and r.get("transactional_id") == transactional_id
                        and r.get("error") == "CONCURRENT_TRANSACTIONS", 5, "a CONCURRENT_TRANSACTIONS answer")
    successor.begin_transaction()
    successor.produce(topic, b"successor")
    successor.commit_transaction(WAIT_S)
    with pytest.raises(KafkaException) as raised:
        zombie.commit_transaction(WAIT_S)
    assert raised.value.args[0].fatal() or raised.value.args[0].code() in (
        KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)
    assert [v for _, _, v in read_all(broker.bootstrap, topic, "read_committed", 1, settle_s=1.0)] == [b"successor"]


def test_a_transaction_past_its_timeout_is_aborted_and_unblocks_read_committed(
        start_broker: Any) -> None:
    proc = start_broker("--set", "transaction.abort.timed.out.transaction.cleanup.interval.ms=200")
    topic = unique("txn-timeout")
    create_topic(proc.bootstrap, topic, 1)
    producer = Producer({"bootstrap.servers": proc.bootstrap, "transactional.id": unique("slow"),
                         "transaction.timeout.ms": 1000})
    producer.init_transactions(WAIT_S)
    producer.begin_transaction()
    producer.produce(topic, b"never committed")
    producer.flush(WAIT_S)
    plain = Producer({"bootstrap.servers": proc.bootstrap})
    plain.produce(topic, b"plain")
    plain.flush(WAIT_S)
    # Bounded by WAIT_S: the broker aborts the transaction after about a second.
    got = read_all(proc.bootstrap, topic, "read_committed", 1)
    assert [v for _, _, v in got] == [b"plain"]
    proc.wait_for_log(lambda r: r.get("event") == "transactions.timed_out", 5, "the timeout abort")


def test_a_timeout_above_the_maximum_is_refused(broker: BrokerProcess) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": unique("too-long"),
                         "transaction.timeout.ms": 900_001})
    with pytest.raises(KafkaException) as raised:
        producer.init_transactions(WAIT_S)
    assert raised.value.args[0].code() == KafkaError.INVALID_TRANSACTION_TIMEOUT


# ---------------------------------------------------------------- other clients

INPUT_COUNT = 20


def _ctp_topics(broker: BrokerProcess, prefix: str) -> tuple[str, str, str]:
    source, sink, group = unique(f"{prefix}-in"), unique(f"{prefix}-out"), unique(f"{prefix}-group")
    create_topic(broker.bootstrap, source, 1)
    create_topic(broker.bootstrap, sink, 1)
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(INPUT_COUNT):
        plain.produce(source, f"in-{i}".encode(), partition=0)
    plain.flush(WAIT_S)
    return source, sink, group


def _check_ctp_output(broker: BrokerProcess, source: str, sink: str, group: str) -> None:
    """10 committed, 5 aborted, 10 committed: exactly out-0..19 once and in order for read_committed, 25
    records for read_uncommitted, and the group's input position at 20."""
    out = read_all(broker.bootstrap, sink, "read_committed", INPUT_COUNT, settle_s=1.0)
    assert [v for _, _, v in out] == [f"out-{i}".encode() for i in range(INPUT_COUNT)]
    assert len(read_all(broker.bootstrap, sink, "read_uncommitted", 25, settle_s=1.0)) == 25
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        (position,) = consumer.committed([TopicPartition(source, 0)], WAIT_S)
        assert position.offset == INPUT_COUNT
    finally:
        consumer.close()


def _kafka_python_round(bootstrap: str, source: str, sink: str, group: str, count: int, commit: bool) -> None:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KTopicPartition
    from kafka.structs import OffsetAndMetadata

    tp = KTopicPartition(source, 0)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                             isolation_level="read_committed", auto_offset_reset="earliest")
    producer = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=unique("kp-txn"),
                             transaction_timeout_ms=TXN_TIMEOUT_MS)
    try:
        consumer.assign([tp])
        taken: list[Any] = []
        deadline = time.monotonic() + WAIT_S
        while len(taken) < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200, max_records=count - len(taken)).values():
                taken += records
        assert len(taken) == count
        producer.init_transactions()
        producer.begin_transaction()
        for record in taken:
            producer.send(sink, record.value.replace(b"in", b"out"), partition=0)
        producer.send_offsets_to_transaction({tp: OffsetAndMetadata(taken[-1].offset + 1, "", -1)},
                                             consumer.group_metadata())
        if commit:
            producer.commit_transaction()
        else:
            producer.flush()
            producer.abort_transaction()
    finally:
        producer.close(timeout=WAIT_S)
        consumer.close()


def _kafka_python_read(bootstrap: str, topic: str, isolation: str, expected: int) -> list[bytes]:
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level=isolation,
                             auto_offset_reset="earliest")
    try:
        consumer.assign([KTopicPartition(topic, 0)])
        values: list[bytes] = []
        deadline = time.monotonic() + WAIT_S
        while len(values) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                values += [r.value for r in records]
        return values
    finally:
        consumer.close()


def test_kafka_python_consume_transform_produce(broker: BrokerProcess) -> None:
    source, sink, group = _ctp_topics(broker, "kp")
    for count, commit in ((10, True), (5, False), (10, True)):
        _kafka_python_round(broker.bootstrap, source, sink, group, count, commit)
    _check_ctp_output(broker, source, sink, group)
    # kafka-python's own consumers agree: read_committed skips the aborted records, read_uncommitted not.
    assert _kafka_python_read(broker.bootstrap, sink, "read_committed", INPUT_COUNT) == [
        f"out-{i}".encode() for i in range(INPUT_COUNT)]
    assert len(_kafka_python_read(broker.bootstrap, sink, "read_uncommitted", 25)) == 25


async def _aiokafka_round(bootstrap: str, source: str, sink: str, group: str, count: int, commit: bool) -> None:
    import asyncio

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka import TopicPartition as ATopicPartition

    tp = ATopicPartition(source, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                isolation_level="read_committed", auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=unique("aio-txn"),
                                transaction_timeout_ms=TXN_TIMEOUT_MS)
    await consumer.start()
    await producer.start()
    try:
        consumer.assign([tp])
        taken: list[Any] = []
        async with asyncio.timeout(WAIT_S):
            while len(taken) < count:
                for records in (await consumer.getmany(tp, timeout_ms=200, max_records=count - len(taken))).values():
                    taken += records
        await producer.begin_transaction()
        for record in taken:
            await producer.send_and_wait(sink, record.value.replace(b"in", b"out"), partition=0)
        await producer.send_offsets_to_transaction({tp: taken[-1].offset + 1}, group)
        if commit:
            await producer.commit_transaction()
        else:
            await producer.abort_transaction()
    finally:
        await producer.stop()
        await consumer.stop()


async def _aiokafka_read(bootstrap: str, topic: str, isolation: str, expected: int) -> list[bytes]:
    import asyncio

    from aiokafka import AIOKafkaConsumer
    from aiokafka import TopicPartition as ATopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level=isolation,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = ATopicPartition(topic, 0)
        consumer.assign([tp])
        values: list[bytes] = []
        try:
            async with asyncio.timeout(WAIT_S):
                while len(values) < expected:
                    for records in (await consumer.getmany(tp, timeout_ms=200)).values():
                        values += [r.value for r in records]
        except TimeoutError:
            pass
        return values
    finally:
        await consumer.stop()


def test_aiokafka_consume_transform_produce(broker: BrokerProcess) -> None:
    import asyncio

    source, sink, group = _ctp_topics(broker, "aio")
    for count, commit in ((10, True), (5, False), (10, True)):
        asyncio.run(_aiokafka_round(broker.bootstrap, source, sink, group, count, commit))
    _check_ctp_output(broker, source, sink, group)
    # aiokafka's own consumers agree: read_committed skips the aborted records, read_uncommitted not.
    assert asyncio.run(_aiokafka_read(broker.bootstrap, sink, "read_committed", INPUT_COUNT)) == [
        f"out-{i}".encode() for i in range(INPUT_COUNT)]
    assert len(asyncio.run(_aiokafka_read(broker.bootstrap, sink, "read_uncommitted", 25))) == 25


def test_kafkajs_transactional_producer_commits_aborts_and_sends_offsets(broker: BrokerProcess) -> None:
    from tests.compat.clients import node, require_node

    require_node()
    topic, group = unique("kjs-txn"), unique("kjs-group")
    create_topic(broker.bootstrap, topic, 2)
    result = node("transaction.js", broker.bootstrap, topic, group, unique("kjs-id"))
    assert result["ok"], result
    out = read_all(broker.bootstrap, topic, "read_committed", 20, 2, settle_s=1.0)
    assert sorted(v for _, _, v in out) == sorted(f"commit-{r}-{i}".encode() for r in (0, 2) for i in range(10))
    assert len(read_all(broker.bootstrap, topic, "read_uncommitted", 30, 2, settle_s=1.0)) == 30
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        (position,) = consumer.committed([TopicPartition(topic, 0)], WAIT_S)
        assert position.offset == 42  # the committed transaction's offsets; the aborted one's (99) never
    finally:
        consumer.close()


def test_java_consume_transform_produce(broker: BrokerProcess) -> None:
    from tests.compat.java_client import java_client

    source, sink, group = unique("java-in"), unique("java-out"), unique("java-group")
    create_topic(broker.bootstrap, source, 1)
    create_topic(broker.bootstrap, sink, 1)
    result = java_client("transactions", broker.bootstrap, source, sink, group, timeout=180)
    assert result["read_committed"] == [f"out-{i}" for i in range(INPUT_COUNT)]
    assert len(result["read_uncommitted"]) == 25
    assert result["committed"] == INPUT_COUNT


def test_java_admin_describes_and_lists_transactions_and_producers(broker: BrokerProcess) -> None:
    from tests.compat.java_client import java_client

    topic, transactional_id = unique("java-txn-admin"), unique("java-admin-id")
    create_topic(broker.bootstrap, topic, 1)
    result = java_client("txn-admin", broker.bootstrap, topic, transactional_id)
    assert result["state"] == "Ongoing" and result["partitions"] == [f"{topic}-0"]
    assert result["listed"] == ["Ongoing"] and result["timeout_ms"] == 60000
    (producer,) = result["producers"]
    assert (producer["producer_id"], producer["epoch"], producer["txn_start_offset"]) == (
        result["producer_id"], result["epoch"], 0)


# ---------------------------------------------------------------- durability across kill -9

def test_exactly_once_across_random_commits_aborts_and_kill_9(restartable: Any) -> None:  # noqa: F811
    """Several transactional producers commit or abort at random while the broker (file engine) is
    killed with SIGKILL and restarted between and inside transactions. Afterwards a read_committed
    consumer reads every committed transaction exactly once and in order, no aborted record, and each
    transaction whose outcome the client never learned (the broker died under it) entirely or not at all."""
    import random

    rng = random.Random(1313)
    broker = restartable("--set", "transaction.abort.timed.out.transaction.cleanup.interval.ms=500")
    topic = unique("eos")
    create_topic(broker.bootstrap, topic, 3)
    ids = [unique(f"eos-{i}") for i in range(3)]
    producers: dict[str, Producer] = {}

    def producer_for(transactional_id: str) -> Producer:
        if transactional_id not in producers:
            producers[transactional_id] = txn_producer(broker.bootstrap, transactional_id,
                                                       **{"transaction.timeout.ms": 3000})
        return producers[transactional_id]

    committed: list[list[bytes]] = []
    aborted: list[list[bytes]] = []
    unknown: list[list[bytes]] = []
    for n in range(24):
        transactional_id = rng.choice(ids)
        values = [f"t{n}-{i}".encode() for i in range(rng.randint(1, 12))]
        kill_inside = rng.random() < 0.15
        try:
            producer = producer_for(transactional_id)
            producer.begin_transaction()
            for value in values:
                producer.produce(topic, value, partition=rng.randrange(3))
            producer.flush(WAIT_S)
            if kill_inside:
                broker.kill()
                broker.start()
            if rng.random() < 0.6:
                producer.commit_transaction(WAIT_S)
                committed.append(values)
            else:
                producer.abort_transaction(WAIT_S)
                aborted.append(values)
        except KafkaException as exc:
            # The broker died under this transaction: its outcome is unknown to the client.
            unknown.append(values)
            error = exc.args[0]
            if error.txn_requires_abort():
                try:
                    producers[transactional_id].abort_transaction(WAIT_S)
                except KafkaException:
                    producers.pop(transactional_id, None)
            else:
                producers.pop(transactional_id, None)
        if not kill_inside and rng.random() < 0.1:
            broker.kill()
            broker.start()
    for producer in producers.values():
        producer.flush(WAIT_S)
    total = sum(map(len, committed))
    got = read_all(broker.bootstrap, topic, "read_committed", total, 3, settle_s=2.0)
    seen = [v for _, _, v in got]
    assert len(seen) == len(set(seen)), "a record was read twice"
    seen_set = set(seen)
    for values in committed:
        assert set(values) <= seen_set, f"committed transaction lost records: {sorted(set(values) - seen_set)}"
    for values in aborted:
        assert not set(values) & seen_set, f"aborted records were read: {sorted(set(values) & seen_set)}"
    for values in unknown:
        found = set(values) & seen_set
        assert not found or found == set(values), f"a transaction was read in part: {sorted(found)}"
    by_partition: dict[int, list[bytes]] = {}
    for partition, _, value in got:
        by_partition.setdefault(partition, []).append(value)
    rank = {v: i for values in committed + unknown for i, v in enumerate(values)}
    for values in by_partition.values():
        # Within a partition, one transaction's records come in the order they were produced.
        for txn in committed:
            mine = [rank[v] for v in values if v in set(txn)]
            assert mine == sorted(mine)
    assert committed and aborted, "the workload should both commit and abort"


# ---------------------------------------------------------------- admin APIs over the raw protocol

def test_list_and_describe_transactions_filters_and_errors(broker: BrokerProcess) -> None:
    """ListTransactions filters by state (unknown names echoed), producer id and duration (v1);
    DescribeTransactions answers TRANSACTIONAL_ID_NOT_FOUND for an unknown id; DescribeProducers answers
    UNKNOWN_TOPIC_OR_PARTITION for a partition the broker does not have."""
    from protocol import messages
    from protocol.errors import ErrorCode
    from tests.compat.conftest import KafkaSocket

    topic = unique("txn-list")
    create_topic(broker.bootstrap, topic, 1)
    open_id, done_id = unique("open"), unique("done")
    open_txn = txn_producer(broker.bootstrap, open_id)
    open_txn.begin_transaction()
    open_txn.produce(topic, b"x")
    open_txn.flush(WAIT_S)
    done = txn_producer(broker.bootstrap, done_id)
    done.begin_transaction()
    done.produce(topic, b"y")
    done.commit_transaction(WAIT_S)
    sock = KafkaSocket(broker.host, broker.port)
    try:
        def listed(version: int, **filters: Any) -> tuple[Any, dict[str, str]]:
            response = sock.request(66, version, 1, messages.ListTransactionsRequest(**filters))
            return response, {t.transactional_id: t.transaction_state for t in response.transaction_states}

        _, everything = listed(0)
        assert everything[open_id] == "Ongoing" and everything[done_id] == "CompleteCommit"
        response, ongoing = listed(0, state_filters=["Ongoing", "Bogus"])
        assert open_id in ongoing and done_id not in ongoing and response.unknown_state_filters == ["Bogus"]
        described = sock.request(65, 0, 2, messages.DescribeTransactionsRequest(
            transactional_ids=[open_id, "no-such-id"])).transaction_states
        assert (described[0].error_code, described[0].transaction_state) == (0, "Ongoing")
        assert [t.topic for t in described[0].topics] == [topic]
        assert described[1].error_code == ErrorCode.TRANSACTIONAL_ID_NOT_FOUND
        pid = described[0].producer_id
        _, by_pid = listed(0, producer_id_filters=[pid])
        assert list(by_pid) == [open_id]
        _, long_running = listed(1, duration_filter=3_600_000)  # nothing has run for an hour
        assert open_id not in long_running
        producers = sock.request(61, 0, 3, messages.DescribeProducersRequest(topics=[
            messages.DescribeProducersRequest.TopicRequest(name=topic, partition_indexes=[0, 7])]))
        p0, p7 = producers.topics[0].partitions
        assert p7.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        assert {p.producer_id: p.current_txn_start_offset for p in p0.active_producers}[pid] == 0
    finally:
        sock.close()
        open_txn.abort_transaction(WAIT_S)
