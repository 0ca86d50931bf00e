"""The embedding API (``broker/embedded.py``) used as a program or a test suite would: ``BrokerThread``
from synchronous code with confluent-kafka, ``EmbeddedBroker`` on an asyncio loop with
aiokafka; settings by Kafka name, ``kafka_version``, ``data_dir``, injected ``clock`` and ``engine``,
``reset()``, and a failed start that leaves nothing behind (no thread, no port, no data-directory lock).

Every test starts its own in-process broker on a free port (about 0.1 s each) and uses its own topic and
group names; every client loop is bounded by a deadline.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from broker.embedded import BrokerThread, EmbeddedBroker, ResetResult
from broker.groups.coordinator import ManualClock
from protocol import messages
from protocol.errors import ErrorCode
from storage.file import FaultInjectingFileSystem, FileEngine
from tests.compat.clients import unique
from tests.compat.conftest import KafkaSocket
from tests.compat.group_helpers import MEMBER_ID_REQUIRED, RawMember, subscription
from tests.waiting import wait_until

WAIT_S = 15.0  # bound of every client loop
JOIN_GROUP, HEARTBEAT, SYNC_GROUP, DESCRIBE_GROUPS, API_VERSIONS = 11, 12, 14, 15, 18


def broker_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "moldau-broker"]


@pytest.fixture(autouse=True)
def no_broker_thread_left() -> Any:
    """Every test ends with its brokers' threads gone (they are daemon threads: a leak would go unseen)."""
    yield
    assert broker_threads() == [], "a moldau-broker thread outlived its test"


def produce_confluent(bootstrap: str, topic: str, values: list[bytes], **options: Any) -> list[Any]:
    """Send ``values`` to partition 0 and wait for every delivery report; returns the error per record
    (None when delivered)."""
    from confluent_kafka import Producer

    reports: list[Any] = []
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "message.timeout.ms": 10000,
                         **options})
    for value in values:
        producer.produce(topic, value=value, partition=0, on_delivery=lambda err, _msg: reports.append(err))
    left = producer.flush(WAIT_S)
    assert left == 0, f"{left} of {len(values)} records not acknowledged within {WAIT_S} s"
    return reports


def consume_confluent(bootstrap: str, topic: str, count: int) -> list[bytes]:
    """Read ``count`` values from partition 0 from the beginning (assign, no group), within WAIT_S."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("reader"),
                         "enable.auto.commit": False, "fetch.wait.max.ms": 50})
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        got: list[bytes] = []
        deadline = time.monotonic() + WAIT_S
        while len(got) < count and time.monotonic() < deadline:
            for msg in consumer.consume(count - len(got), 0.2):
                assert msg.error() is None, f"consumer error: {msg.error()}"
                got.append(msg.value())
        assert len(got) == count, f"read {len(got)} of {count} records within {WAIT_S} s: {got}"
        return got
    finally:
        consumer.close()


# ------------------------------------------------------------------ BrokerThread with sync clients


def test_broker_thread_serves_confluent_produce_and_consume() -> None:
    """A broker on a background thread: confluent-kafka produces (the topic is auto-created) and reads
    back exactly what it sent, in order; after the with block the thread and the port are gone."""
    topic = unique("embedded-roundtrip")
    values = [f"value-{i}".encode() for i in range(5)]
    with BrokerThread() as kafka:
        assert kafka.bootstrap_servers == f"127.0.0.1:{kafka.port}" and kafka.host == "127.0.0.1"
        assert produce_confluent(kafka.bootstrap_servers, topic, values) == [None] * 5
        assert consume_confluent(kafka.bootstrap_servers, topic, 5) == values
        port = kafka.port
    assert broker_threads() == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_broker_thread_group_consumer_gets_its_first_record_without_the_initial_rebalance_delay() -> None:
    """The ci profile: group.initial.rebalance.delay.ms=0 and group.min.session.timeout.ms=1000, so a
    confluent group consumer with a 1 s session joins at once (Kafka's default would hold the first join
    3 s) and gets its first record well before that delay would even have ended."""
    from confluent_kafka import Consumer

    topic, group = unique("embedded-group"), unique("embedded-group")
    with BrokerThread() as kafka:
        assert (kafka.config.group_initial_rebalance_delay_ms, kafka.config.group_min_session_timeout_ms) == (0, 1000)
        produce_confluent(kafka.bootstrap_servers, topic, [b"first"])
        consumer = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": group,
                             "session.timeout.ms": 1000, "heartbeat.interval.ms": 200,
                             "auto.offset.reset": "earliest", "fetch.wait.max.ms": 50})
        try:
            started = time.monotonic()
            consumer.subscribe([topic])
            got = None
            while got is None and time.monotonic() - started < WAIT_S:
                msg = consumer.poll(0.1)
                if msg is not None:
                    assert msg.error() is None, f"group consumer error: {msg.error()}"
                    got = msg
            elapsed = time.monotonic() - started
        finally:
            consumer.close()
    assert got is not None and got.value() == b"first", f"no record within {WAIT_S} s"
    # Not a speed check: with Kafka's 3000 ms initial delay the first join alone would take 3 s.
    assert elapsed < 3.0, f"first record after {elapsed:.1f} s: the initial rebalance delay was applied"


def test_settings_by_kafka_name_apply_to_auto_created_topics() -> None:
    """``settings`` take Kafka names and values of any type the setting accepts; num.partitions=3 gives
    an auto-created topic three partitions."""
    topic = unique("embedded-settings")
    with BrokerThread(settings={"num.partitions": 3, "log.retention.ms": 60_000}) as kafka:
        assert (kafka.config.num_partitions, kafka.config.log_retention_ms) == (3, "60000")
        produce_confluent(kafka.bootstrap_servers, topic, [b"x"])
        from confluent_kafka.admin import AdminClient

        described = AdminClient({"bootstrap.servers": kafka.bootstrap_servers}).list_topics(topic, timeout=10)
        assert sorted(described.topics[topic].partitions) == [0, 1, 2]


def api_versions(host: str, port: int) -> list[tuple[int, int, int]]:
    sock = KafkaSocket(host, port)
    try:
        response = sock.request(API_VERSIONS, 3, 1, messages.ApiVersionsRequest(
            client_software_name="moldau-test", client_software_version="1"))
    finally:
        sock.close()
    assert response.error_code == 0
    return [(k.api_key, k.min_version, k.max_version) for k in response.api_keys]


def test_kafka_version_is_passed_to_the_broker_and_its_api_versions() -> None:
    """``kafka_version="2.8"`` becomes the broker's kafka.version: ApiVersions answers with what the
    2.8 version profile serves (``broker.version_profiles``), the same table as ``broker.registry``."""
    from broker.version_profiles import registry_for

    with BrokerThread(kafka_version="2.8") as kafka:
        assert kafka.config.kafka_version == "2.8"
        advertised = api_versions(kafka.host, kafka.port)
        assert advertised == kafka.broker.registry.version_ranges() == registry_for("2.8").version_ranges()
    by_key = {key: (lo, hi) for key, lo, hi in advertised}
    # Kafka 2.8 served Produce up to v9 and had no DescribeTransactions (65, added in 3.0).
    assert by_key[0][1] == 9 and 65 not in by_key, by_key
    with BrokerThread() as kafka:
        assert api_versions(kafka.host, kafka.port) != advertised  # without kafka_version: everything Moldau serves


# ------------------------------------------------------------------ failed starts


def test_a_start_on_a_taken_port_raises_and_leaves_no_thread_and_a_usable_data_dir(tmp_path: Path) -> None:
    """The port is taken: start() raises OSError (EADDRINUSE) after the broker's thread has ended and
    its storage is closed, so the same data directory serves the next broker (no "in use" lock error)."""
    data_dir = tmp_path / "data"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        failed = BrokerThread(port=port, data_dir=data_dir)
        with pytest.raises(OSError) as info:
            failed.start()
        assert info.value.errno == errno.EADDRINUSE, info.value
        assert broker_threads() == []
        failed.stop()  # harmless after a failed start
    with BrokerThread(data_dir=data_dir) as kafka:
        assert kafka.broker.storage_url == data_dir.as_uri()


def test_a_second_broker_on_the_same_fixed_port_fails_and_the_first_keeps_serving() -> None:
    """Two BrokerThreads on one fixed port: the second start raises OSError and its thread ends; the first
    broker's thread is the only one left and it still serves producers."""
    topic = unique("embedded-fixed-port")
    with BrokerThread() as first:
        second = BrokerThread(port=first.port)
        with pytest.raises(OSError):
            second.start()
        assert broker_threads() == ["moldau-broker"]
        assert produce_confluent(first.bootstrap_servers, topic, [b"still here"]) == [None]


def test_embedded_broker_start_on_a_taken_port_raises_and_releases_the_data_dir(tmp_path: Path) -> None:
    """The same on the running loop: ``EmbeddedBroker.start()`` raises OSError and closes its storage, so
    the next EmbeddedBroker opens the same data directory."""

    async def scenario() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            with pytest.raises(OSError):
                await EmbeddedBroker(port=taken.getsockname()[1], data_dir=tmp_path).start()
        async with EmbeddedBroker(data_dir=tmp_path) as kafka:
            assert kafka.broker.storage_url == tmp_path.as_uri()

    asyncio.run(asyncio.wait_for(scenario(), 30))


# ------------------------------------------------------------------ data_dir, clock, engine


def test_data_dir_keeps_records_across_a_stop_and_start(tmp_path: Path) -> None:
    """With ``data_dir`` the ci profile's memory engine gives way to files: records acknowledged before
    the stop are read back by the next broker on the same directory."""
    topic = unique("embedded-durable")
    with BrokerThread(data_dir=tmp_path) as kafka:
        assert kafka.broker.storage_url == tmp_path.as_uri()
        assert produce_confluent(kafka.bootstrap_servers, topic, [b"a", b"b"], acks="all") == [None, None]
    assert any(tmp_path.glob(f"{topic}-0/*.log"))
    with BrokerThread(data_dir=tmp_path) as kafka:
        assert consume_confluent(kafka.bootstrap_servers, topic, 2) == [b"a", b"b"]


def describe_group(sock: KafkaSocket, group: str, corr: int) -> Any:
    return sock.request(DESCRIBE_GROUPS, 5, corr, messages.DescribeGroupsRequest(
        groups=[group], include_authorized_operations=False)).groups[0]


def test_an_injected_manual_clock_drives_join_completion_and_session_expiry() -> None:
    """``clock=ManualClock()`` replaces the coordinators' wall clock: a JoinGroup waits for the (0 ms)
    initial rebalance timer until the clock is advanced, and a member's 1 s session expires when the
    clock passes it, not before (a heartbeat at 999 ms keeps it)."""
    clock = ManualClock()
    group = unique("embedded-clock")
    with BrokerThread(clock=clock) as kafka:
        assert kafka.call(lambda: kafka.broker.groups.clock) is clock
        sock, admin = KafkaSocket(kafka.host, kafka.port), KafkaSocket(kafka.host, kafka.port)
        try:
            req = messages.JoinGroupRequest

            def join(member_id: str, corr: int) -> None:
                sock.send_request(JOIN_GROUP, 5, corr, req(
                    group_id=group, session_timeout_ms=1000, rebalance_timeout_ms=5000, member_id=member_id,
                    group_instance_id=None, protocol_type="consumer",
                    protocols=[req.JoinGroupRequestProtocol(name="range", metadata=subscription(["t"]))]))

            join("", 1)
            first = sock.read_response(JOIN_GROUP, 5, 1)
            assert first.error_code == MEMBER_ID_REQUIRED
            join(first.member_id, 2)
            # The join is parked on the manual clock's 0 ms timer: the group waits in PreparingRebalance.
            wait_until(lambda: describe_group(admin, group, 10).group_state == "PreparingRebalance",
                       WAIT_S, "the group to start its first rebalance")
            kafka.call(clock.advance, 0)
            joined = sock.read_response(JOIN_GROUP, 5, 2)
            assert (joined.error_code, joined.leader) == (0, joined.member_id)
            member, generation = joined.member_id, joined.generation_id
            sync = messages.SyncGroupRequest
            synced = sock.request(SYNC_GROUP, 3, 3, sync(
                group_id=group, generation_id=generation, member_id=member, group_instance_id=None,
                assignments=[sync.SyncGroupRequestAssignment(member_id=member, assignment=b"")]))
            assert synced.error_code == 0

            def heartbeat(corr: int) -> int:
                return sock.request(HEARTBEAT, 3, corr, messages.HeartbeatRequest(
                    group_id=group, generation_id=generation, member_id=member, group_instance_id=None)).error_code

            kafka.call(clock.advance, 999)
            assert heartbeat(4) == ErrorCode.NONE  # within the session: kept, and its deadline moves on
            kafka.call(clock.advance, 999)
            assert heartbeat(5) == ErrorCode.NONE
            assert describe_group(admin, group, 11).group_state == "Stable"
            kafka.call(clock.advance, 1000)  # a whole session without a heartbeat
            assert heartbeat(6) == ErrorCode.UNKNOWN_MEMBER_ID
            assert describe_group(admin, group, 12).group_state == "Empty"
        finally:
            sock.close()
            admin.close()


def test_an_injected_file_engine_with_a_disk_fault_gives_producers_kafka_storage_error(tmp_path: Path) -> None:
    """``engine=FileEngine(..., fs=FaultInjectingFileSystem())``: a failed pwrite of the log reaches a
    producer that does not retry as KAFKA_STORAGE_ERROR; one that retries gets its record in once the
    fault has fired; the data written around the faults reads back whole."""
    from confluent_kafka import KafkaError

    fs = FaultInjectingFileSystem()
    topic = unique("embedded-disk-fault")
    with BrokerThread(engine=FileEngine(tmp_path, fs=fs)) as kafka:
        assert produce_confluent(kafka.bootstrap_servers, topic, [b"before"]) == [None]
        fault = fs.inject("pwrite", errno.EIO, path_contains=f"{topic}-0", times=1)
        [error] = produce_confluent(kafka.bootstrap_servers, topic, [b"refused"], retries=0)
        assert error is not None and error.code() == KafkaError.KAFKA_STORAGE_ERROR, error
        assert fault.fired == 1
        retried = fs.inject("pwrite", errno.EIO, path_contains=f"{topic}-0", times=2)
        assert produce_confluent(kafka.bootstrap_servers, topic, [b"after retries"], retries=5,
                                 **{"retry.backoff.ms": 10}) == [None]
        assert retried.fired == 2
        assert consume_confluent(kafka.bootstrap_servers, topic, 2) == [b"before", b"after retries"]


# ------------------------------------------------------------------ reset


def commit_offset_confluent(bootstrap: str, topic: str, group: str) -> None:
    """A confluent-kafka consumer commits offset 1 of ``topic``[0] for ``group`` without joining it (as
    an admin tool or a manually assigned consumer does): the group exists, Empty, with that offset."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        [committed] = consumer.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
        assert committed.error is None, committed.error
    finally:
        consumer.close()


def test_reset_deletes_every_topic_and_group_from_sync_code() -> None:
    """``BrokerThread.reset()``: the fault rules (set through the thread-safe ``faults``), the topics and
    the empty consumer group are gone, a group with a member still in it is kept (as DeleteGroups keeps
    it), the internal offsets topic stays, and the broker goes on serving (a topic of the same name starts
    again at offset 0)."""
    topic, other = unique("embedded-reset"), unique("embedded-reset-2")
    group, busy = unique("embedded-reset"), unique("embedded-reset-busy")
    with BrokerThread() as kafka:
        produce_confluent(kafka.bootstrap_servers, topic, [b"1", b"2"])
        produce_confluent(kafka.bootstrap_servers, other, [b"1"])
        commit_offset_confluent(kafka.bootstrap_servers, topic, group)
        sock = KafkaSocket(kafka.host, kafka.port)
        try:
            member = RawMember(sock, busy, session_ms=30000)
            assert member.join([topic]).error_code == 0
            rule = kafka.faults.fail_requests("Produce", "NOT_LEADER_OR_FOLLOWER", count=None, topic=topic)
            assert [r["id"] for r in kafka.faults.rules()] == [rule["id"]]  # marshalled to the broker's loop
            result = kafka.reset()
        finally:
            sock.close()
        assert isinstance(result, ResetResult)
        assert (sorted(result.topics), result.groups, result.groups_kept) == (sorted([topic, other]), [group], [busy])
        assert (result.faults, kafka.faults.rules()) == (1, [])
        assert kafka.call(kafka.broker.cluster.names) == ["__consumer_offsets"]
        produce_confluent(kafka.bootstrap_servers, topic, [b"fresh"])
        assert consume_confluent(kafka.bootstrap_servers, topic, 1) == [b"fresh"]


async def aiokafka_roundtrip(bootstrap: str, topic: str, group: str) -> None:
    """aiokafka produces three records, and a group consumer (1 s session) reads them and commits."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(3):
            await producer.send_and_wait(topic, f"aio-{i}".encode(), partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                                enable_auto_commit=False, session_timeout_ms=1000, heartbeat_interval_ms=200)
    await consumer.start()
    try:
        got: list[bytes] = []
        deadline = time.monotonic() + WAIT_S
        while len(got) < 3 and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            got += [r.value for records in batches.values() for r in records]
        assert got == [b"aio-0", b"aio-1", b"aio-2"], f"aiokafka group consumer read {got} within {WAIT_S} s"
        await consumer.commit()
    finally:
        await consumer.stop()


def test_embedded_broker_on_the_running_loop_serves_aiokafka() -> None:
    """``EmbeddedBroker`` on the test's own event loop (no thread), driven by aiokafka's producer and a
    group consumer; the committed offset is there afterwards."""
    topic, group = unique("embedded-aio"), unique("embedded-aio")

    async def scenario() -> None:
        async with EmbeddedBroker() as kafka:
            assert kafka.bootstrap_servers == f"{kafka.host}:{kafka.port}"
            await aiokafka_roundtrip(kafka.bootstrap_servers, topic, group)
            error, offsets = kafka.broker.groups.fetch_offsets(group, None)
            assert (error, [(tp, o.offset if o else None) for tp, o in offsets]) == (ErrorCode.NONE, [((topic, 0), 3)])
        assert broker_threads() == []

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_reset_deletes_every_topic_and_group_from_asyncio() -> None:
    """``await EmbeddedBroker.reset()`` removes the topic and the (empty) group aiokafka made, and the
    fault rules."""
    topic, group = unique("embedded-aio-reset"), unique("embedded-aio-reset")

    async def scenario() -> None:
        async with EmbeddedBroker() as kafka:
            await aiokafka_roundtrip(kafka.bootstrap_servers, topic, group)
            kafka.faults.fail_requests("Metadata", "UNKNOWN_SERVER_ERROR", count=None)
            result = await kafka.reset()
            assert (result.topics, result.groups, result.groups_kept, result.faults) == ([topic], [group], [], 1)
            assert kafka.broker.cluster.names() == ["__consumer_offsets"]

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_reset_right_after_a_start_on_a_data_dir_waits_for_the_groups_to_load(tmp_path: Path) -> None:
    """A group committed before a restart is still loading from __consumer_offsets when ``reset()`` runs
    straight after the start; it is deleted all the same (not skipped as COORDINATOR_LOAD_IN_PROGRESS)."""
    topic, group = unique("embedded-reload"), unique("embedded-reload")
    with BrokerThread(data_dir=tmp_path) as kafka:
        produce_confluent(kafka.bootstrap_servers, topic, [b"x"])
        commit_offset_confluent(kafka.bootstrap_servers, topic, group)

    async def scenario() -> None:
        async with EmbeddedBroker(data_dir=tmp_path) as kafka:
            result = await kafka.reset()  # no await in between: the load has not run yet
            assert (result.topics, result.groups) == ([topic], [group])
            assert kafka.broker.groups.list_groups() == (ErrorCode.NONE, [])

    asyncio.run(asyncio.wait_for(scenario(), 30))


_QUIET_PROGRAM = """
import sys
from confluent_kafka import Producer
from broker.embedded import BrokerThread
{setup}
with BrokerThread() as kafka:
    producer = Producer({{"bootstrap.servers": kafka.bootstrap_servers}})
    producer.produce("quiet-topic", b"x")
    assert producer.flush(15) == 0
    kafka.call(kafka.broker.log_throttle.log, "warning", "test.warning", "here")  # one warning, on purpose
print("done")
"""


def _run_program(setup: str) -> Any:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MOLDAU_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return subprocess.run([sys.executable, "-c", _QUIET_PROGRAM.format(setup=setup)], capture_output=True,
                          text=True, timeout=60, env=env, check=False)


def test_a_program_without_logging_set_up_gets_only_warnings_and_on_stderr() -> None:
    """structlog's defaults would print every event, debug included, to stdout, the program's own output."""
    result = _run_program("")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "done\n"
    assert "test.warning" in result.stderr
    assert "connection.closed" not in result.stderr and "ready" not in result.stderr  # debug and info


def test_a_program_that_configured_structlog_keeps_its_own_set_up() -> None:
    setup = ("import structlog\n"
             "structlog.configure(processors=[lambda logger, name, event: 'APP ' + event['event']],\n"
             "                    logger_factory=structlog.PrintLoggerFactory(sys.stdout))\n")
    result = _run_program(setup)
    assert result.returncode == 0, result.stderr
    assert "APP ready" in result.stdout and "APP test.warning" in result.stdout


def test_embedded_broker_serves_the_listeners_its_settings_name(tmp_path: Path) -> None:
    """settings={"listeners": ...} replaces the default PLAINTEXT listener on host:port: here a SASL one,
    which a SCRAM client logs in to."""
    from confluent_kafka.admin import AdminClient

    from broker.embedded import BrokerThread

    settings = {"listeners": "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
                "listener.name.sasl_plaintext.plain.sasl.jaas.config":
                    'org.apache.kafka.common.security.plain.PlainLoginModule required user_tess="tess-pw";'}
    with BrokerThread(settings=settings) as kafka:
        port = kafka.broker.listener("SASL_PLAINTEXT").bound[1]
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}", "security.protocol": "SASL_PLAINTEXT",
                             "sasl.mechanism": "PLAIN", "sasl.username": "tess", "sasl.password": "tess-pw"})
        brokers = admin.list_topics(timeout=10).brokers
        assert [(b.host, b.port) for b in brokers.values()] == [("127.0.0.1", port)]
        assert kafka.bootstrap_servers == f"127.0.0.1:{kafka.broker.listener('PLAINTEXT').bound[1]}"
