"""Fault injection seen by real clients: ``moldau serve --profile ci`` (control endpoint on) driven over
HTTP by ``FaultClient`` and ``moldau fault``, while confluent-kafka, kafka-python and Apache Kafka's Java
client work against it.

Each fault kind is observed by a client: a failed Produce (NOT_LEADER_OR_FOLLOWER) is retried by an
idempotent producer that delivers every record exactly once; a dropped or over-delayed Produce surfaces
as kafka-python's REQUEST_TIMED_OUT; a connection closed after N requests is reopened and the records
still land once; an offline partition holds deliveries until it is back; a moved group coordinator is
found again and its member keeps consuming; a failed disk answers KAFKA_STORAGE_ERROR and the records
land once it is cleared. Then the control endpoint's answers to bad HTTP, and the command line.

One broker serves the module; every test uses its own topics and groups, and clears the rules after it.
"""

from __future__ import annotations

import argparse
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker import fault_cli
from broker.faults import ControlEndpointError, FaultClient
from tests.compat.clients import create_topic, no_new_tracebacks, unique
from tests.compat.conftest import BrokerProcess, finish
from tests.compat.group_helpers import ConfluentMember, produce_markers, wait_cover, wait_markers
from tests.compat.java_client import java_client, require_java
from tests.waiting import wait_until

CI_ARGS = ("--profile", "ci")
WAIT_S = 15.0
COUNT = 20


@pytest.fixture(scope="module")
def ci_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(list(CI_ARGS), tmp_path_factory.mktemp("fault-broker"))
    yield proc
    finish(proc)


@pytest.fixture
def broker(ci_broker: BrokerProcess) -> Iterator[BrokerProcess]:
    with no_new_tracebacks(ci_broker):
        try:
            yield ci_broker
        finally:
            FaultClient(ci_broker.bootstrap).clear()


@pytest.fixture
def faults(broker: BrokerProcess) -> FaultClient:
    return FaultClient(broker.bootstrap, timeout=5.0)


def new_topic(broker: BrokerProcess, what: str, partitions: int = 1) -> str:
    topic = unique(what)
    create_topic(broker.bootstrap, topic, partitions)
    return topic


def high_watermark(bootstrap: str, topic: str, partition: int = 0) -> int:
    """The partition's high watermark (ListOffsets), i.e. how many records it holds from offset 0."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("watermarks")})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
    finally:
        consumer.close()


class Deliveries:
    """A confluent-kafka producer and the delivery reports it has given: (error code or 0, offset)."""

    def __init__(self, bootstrap: str, config: dict[str, Any] | None = None) -> None:
        from confluent_kafka import Producer

        self.reports: list[tuple[int, int | None]] = []
        self.producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                                  "retry.backoff.ms": 50, "retry.backoff.max.ms": 200,
                                  "message.timeout.ms": 20000, **(config or {})})

    def _report(self, err: Any, msg: Any) -> None:
        self.reports.append((err.code() if err is not None else 0, msg.offset()))

    def send(self, topic: str, values: list[bytes]) -> None:
        for value in values:
            self.producer.produce(topic, value=value, partition=0, on_delivery=self._report)
        self.producer.poll(0)

    def flush(self) -> list[tuple[int, int]]:
        left = self.producer.flush(WAIT_S)
        assert left == 0, f"{left} record(s) not delivered within {WAIT_S} s; reports so far {self.reports}"
        return self.reports

    def poll_until(self, check: Callable[[], Any], what: str) -> Any:
        """Serve the producer's callbacks until ``check()`` holds (bounded)."""
        def polled() -> Any:
            self.producer.poll(0.02)
            return check()

        return wait_until(polled, WAIT_S, what, lambda: f"reports {self.reports}")


def values(n: int, prefix: str = "value") -> list[bytes]:
    return [f"{prefix}-{i}".encode() for i in range(n)]


def rule_hits(faults: FaultClient, rule_id: int) -> int:
    return next((r["hits"] for r in faults.rules() if r["id"] == rule_id), -1)


# ---------------------------------------------------------------- request faults


def test_idempotent_confluent_producer_retries_not_leader_or_follower_and_delivers_each_record_once(
        broker: BrokerProcess, faults: FaultClient) -> None:
    """Three Produce requests answered NOT_LEADER_OR_FOLLOWER (retriable): librdkafka refreshes metadata,
    retries, and every record is acknowledged once, at offsets 0..n-1, with none stored twice."""
    topic = new_topic(broker, "fault-not-leader")
    faults.fail_requests("Produce", "NOT_LEADER_OR_FOLLOWER", count=3, topic=topic)
    producer = Deliveries(broker.bootstrap, {"enable.idempotence": True})
    producer.send(topic, values(COUNT))
    reports = producer.flush()
    assert [code for code, _ in reports] == [0] * COUNT
    assert sorted(offset for _, offset in reports) == list(range(COUNT))
    assert faults.rules() == [], "the rule should be used up: three Produce requests failed"
    assert high_watermark(broker.bootstrap, topic) == COUNT


@pytest.mark.parametrize("fault", ["drop", "delay"])
def test_kafka_python_surfaces_request_timed_out_for_an_unanswered_produce(
        fault: str, broker: BrokerProcess, faults: FaultClient) -> None:
    """A Produce never answered, or answered after request.timeout.ms, fails in kafka-python with
    REQUEST_TIMED_OUT; the client drops the connection, opens a new one, and the next send succeeds.
    The dropped request was never handled; the delayed one was (its record is stored, unacknowledged)."""
    from kafka import KafkaProducer
    from kafka.errors import RequestTimedOutError

    topic = new_topic(broker, f"fault-{fault}")
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, request_timeout_ms=1000, retries=0, acks=1,
                             max_block_ms=10000)
    try:
        assert producer.send(topic, b"warm-up", partition=0).get(WAIT_S).offset == 0
        if fault == "drop":
            faults.drop_requests("Produce", topic=topic)
        else:
            faults.delay_responses("Produce", 3000, count=1, topic=topic)
        with pytest.raises(RequestTimedOutError):
            producer.send(topic, b"unanswered", partition=0).get(WAIT_S)
        after = producer.send(topic, b"after", partition=0).get(WAIT_S)
    finally:
        producer.close(5)
    assert after.offset == (1 if fault == "drop" else 2)


def test_a_connection_closed_after_n_requests_is_reopened_and_every_record_lands_once(
        broker: BrokerProcess, faults: FaultClient) -> None:
    """The third Produce request closes its connection unanswered: librdkafka reconnects and resends, the
    idempotent producer's records are each stored once."""
    topic = new_topic(broker, "fault-close")
    faults.close_connections(after=2, count=1, api="Produce", topic=topic)
    producer = Deliveries(broker.bootstrap, {"enable.idempotence": True, "linger.ms": 0})
    for value in values(6):  # one request each
        producer.send(topic, [value])
        producer.flush()
    assert [code for code, _ in producer.reports] == [0] * 6
    assert sorted(offset for _, offset in producer.reports) == list(range(6))
    assert faults.rules() == [], "the rule should be used up: one connection closed"
    assert high_watermark(broker.bootstrap, topic) == 6


# ---------------------------------------------------------------- partition faults


def test_an_offline_partition_holds_deliveries_until_it_is_back(broker: BrokerProcess, faults: FaultClient) -> None:
    """While the partition is offline (Metadata: LEADER_NOT_AVAILABLE, Produce: NOT_LEADER_OR_FOLLOWER) the
    producer keeps its records; once it is back they are delivered, each once."""
    topic = new_topic(broker, "fault-offline")
    producer = Deliveries(broker.bootstrap, {"enable.idempotence": True})
    producer.send(topic, [b"before"])
    assert producer.flush() == [(0, 0)]
    rule = faults.take_partition_offline(topic, 0)
    producer.send(topic, values(5))
    # The producer has asked about the partition several times (Produce refused, Metadata without leader).
    producer.poll_until(lambda: rule_hits(faults, rule["id"]) >= 3, "the producer to meet the offline partition")
    assert producer.reports == [(0, 0)], "nothing may be delivered while the partition is offline"
    assert faults.bring_partition_online(topic, 0) == 1
    reports = producer.flush()
    assert sorted(offset for code, offset in reports if code == 0) == list(range(6))
    assert high_watermark(broker.bootstrap, topic) == 6


def test_a_failed_disk_answers_kafka_storage_error_and_records_land_once_it_is_cleared(
        broker: BrokerProcess, faults: FaultClient) -> None:
    """A producer without retries gets KAFKA_STORAGE_ERROR for its record, which is not stored; a retrying
    one keeps its records until the rule is cleared and then delivers them."""
    from confluent_kafka import KafkaError

    topic = new_topic(broker, "fault-disk")
    rule = faults.fail_disk(topic, 0)
    no_retries = Deliveries(broker.bootstrap, {"retries": 0})
    no_retries.send(topic, [b"refused"])
    assert no_retries.flush() == [(KafkaError.KAFKA_STORAGE_ERROR, None)]  # no offset: not stored

    retrying = Deliveries(broker.bootstrap, {"enable.idempotence": True})
    retrying.send(topic, values(3))
    before = rule_hits(faults, rule["id"])
    retrying.poll_until(lambda: rule_hits(faults, rule["id"]) >= before + 2, "the producer to retry on the failed disk")
    assert retrying.reports == []
    assert faults.clear(rule["id"]) == 1
    assert sorted(offset for code, offset in retrying.flush() if code == 0) == [0, 1, 2]
    assert high_watermark(broker.bootstrap, topic) == 3


# ---------------------------------------------------------------- the group coordinator


def test_a_group_member_finds_its_moved_coordinator_again_and_keeps_consuming(
        broker: BrokerProcess, faults: FaultClient) -> None:
    """While the coordinator has moved (Heartbeat: NOT_COORDINATOR, FindCoordinator:
    COORDINATOR_NOT_AVAILABLE) librdkafka keeps looking for it; when it is back the member holds both
    partitions, receives new records and commits."""
    topic, group = new_topic(broker, "fault-coordinator", 2), unique("fault-group")
    member = ConfluentMember("m1", broker.bootstrap, group, [topic], {"session.timeout.ms": 3000})
    try:
        owner = wait_cover([member], [0, 1])
        wait_markers([member], produce_markers(broker.bootstrap, topic, [0, 1], "before"), owner)
        rule = faults.move_coordinator(group=group)
        # Its heartbeat was refused and its look for a new coordinator too.
        wait_until(lambda: rule_hits(faults, rule["id"]) >= 2, WAIT_S, "the member to meet the moved coordinator",
                   member.describe)
        assert faults.clear(rule["id"]) == 1
        owner = wait_cover([member], [0, 1])
        wait_markers([member], produce_markers(broker.bootstrap, topic, [0, 1], "after"), owner)
        committed = member.call(lambda c: c.commit(asynchronous=False))
        assert sorted((tp.partition, tp.error) for tp in committed) == [(0, None), (1, None)]
    finally:
        member.close()


# ---------------------------------------------------------------- Apache Kafka's Java client


def test_java_producer_retries_not_leader_or_follower_and_acks_each_record_once(
        broker: BrokerProcess, faults: FaultClient) -> None:
    """The reference client's idempotent producer retries three NOT_LEADER_OR_FOLLOWER answers (its
    record-retry-total shows them) and each record is acknowledged once, in order."""
    require_java()
    topic = new_topic(broker, "fault-java")
    faults.fail_requests("Produce", "NOT_LEADER_OR_FOLLOWER", count=3, topic=topic)
    out = java_client("produce-faults", broker.bootstrap, topic, "10", "10")
    assert out["results"] == list(range(10))
    assert out["record_retry_total"] >= 3
    assert high_watermark(broker.bootstrap, topic) == 10


def test_java_producer_without_retries_gets_kafka_storage_exception(broker: BrokerProcess,
                                                                     faults: FaultClient) -> None:
    """With the partition's disk failed, each send of the reference client (retries=0) fails with
    KafkaStorageException; ListOffsets answers the same error, and after the rule is cleared the
    partition is empty: nothing was appended."""
    from confluent_kafka import KafkaException

    require_java()
    topic = new_topic(broker, "fault-java-disk")
    rule = faults.fail_disk(topic)
    out = java_client("produce-faults", broker.bootstrap, topic, "2", "0")
    assert out["results"] == ["KafkaStorageException", "KafkaStorageException"]
    with pytest.raises(KafkaException, match="KAFKA_STORAGE_ERROR"):
        high_watermark(broker.bootstrap, topic)
    faults.clear(rule["id"])
    assert high_watermark(broker.bootstrap, topic) == 0


# ---------------------------------------------------------------- the control endpoint over HTTP


def http(broker: BrokerProcess, raw: bytes) -> tuple[int, dict[str, str], Any]:
    """Send one raw HTTP request; (status, headers, JSON body) of the answer."""
    with socket.create_connection((broker.host, broker.port), timeout=5) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert int(headers["content-length"]) == len(body), data
    return int(lines[0].split(" ")[1]), headers, json.loads(body)


def post(body: bytes, extra: str = "") -> bytes:
    return (f"POST /faults HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


@pytest.mark.parametrize(("raw", "status", "message"), [
    (post(b"{not json"), 400, "the body is not valid JSON"),
    (post(b"[1, 2]"), 400, "the body must be a JSON object"),
    (post(b'{"kind": "fail", "api": "Produce"}'), 400, "'fail' rules need error"),
    (post(b'{"kind": "fail", "api": "Produce", "error": 6, "colour": 1}'), 400, "unknown field(s) colour"),
    (b"GET /nothing-here HTTP/1.1\r\n\r\n", 404, "no route '/nothing-here'"),
    (b"DELETE /faults/12345 HTTP/1.1\r\n\r\n", 404, "no fault rule 12345"),
    (b"PUT /faults HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405, "method not allowed"),
    (b"POST /faults HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n", 413, "request over 65536 bytes"),
    (b"POST /faults HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501, "Transfer-Encoding is not supported"),
    (b"GET /faults HTTP/1.1\r\nno colon here\r\n\r\n", 400, "bad header line"),
])
def test_the_control_endpoint_answers_bad_requests_with_a_status_and_a_json_error(
        raw: bytes, status: int, message: str, broker: BrokerProcess) -> None:
    got_status, headers, body = http(broker, raw)
    assert (got_status, body["error"][:len(message)]) == (status, message), body
    assert headers["content-type"] == "application/json"
    if status == 405:
        assert headers["allow"] == "GET, POST, DELETE"


def test_the_control_endpoint_adds_lists_and_clears_rules(broker: BrokerProcess) -> None:
    status, _, rule = http(broker, post(b'{"kind": "delay", "api": "fetch", "delay_ms": 250, "client_id": "c"}'))
    assert status == 201 and (rule["kind"], rule["api"], rule["delay_ms"], rule["client_id"]) == (
        "delay", "Fetch", 250, "c")
    status, _, listed = http(broker, b"GET /faults HTTP/1.1\r\n\r\n")
    assert (status, [r["id"] for r in listed["rules"]]) == (200, [rule["id"]])
    status, _, cleared = http(broker, f"DELETE /faults/{rule['id']} HTTP/1.1\r\n\r\n".encode())
    assert (status, cleared) == (200, {"cleared": 1})


def test_with_the_endpoint_off_an_http_request_is_closed_like_any_oversized_frame(
        start_broker: Callable[..., BrokerProcess]) -> None:
    """Without control.endpoint.enable the bytes are a Kafka size prefix of over a gigabyte: the broker
    closes the connection as before, and FaultClient and the CLI say what to turn on."""
    plain = start_broker()
    with socket.create_connection((plain.host, plain.port), timeout=5) as sock:
        sock.sendall(b"GET /faults HTTP/1.1\r\n\r\n")
        assert sock.recv(100) == b""
    with pytest.raises(ControlEndpointError, match="control.endpoint.enable"):
        FaultClient(plain.bootstrap).rules()
    assert fault_cli.run(cli_args("--bootstrap", plain.bootstrap, "list")) == 1
    plain.wait_for_log(lambda r: r.get("event") == "request.frame_size_rejected", what="the frame size refusal")


# ---------------------------------------------------------------- the command line


def cli_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="moldau")
    fault_cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["fault", *argv])


def cli(broker: BrokerProcess, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = fault_cli.run(cli_args("--bootstrap", broker.bootstrap, *argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_adds_lists_and_clears_rules(broker: BrokerProcess, capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path) -> None:
    """``moldau fault`` against the broker process: a shortcut and ``add`` add rules (JSON with --json),
    ``list`` shows them as a table, ``clear`` removes one and then all; a bad rule exits 2 with the
    broker's reason, an unknown id exits 1."""
    topic = unique("fault-cli")
    code, out, _ = cli(broker, capsys, "--json", "fail", "Produce", "NOT_LEADER_OR_FOLLOWER", "--count", "3",
                       "--topic", topic)
    first = json.loads(out)
    assert (code, first["kind"], first["api"], first["error"], first["remaining"], first["topic"]) == (
        0, "fail", "Produce", "NOT_LEADER_OR_FOLLOWER", 3, topic)
    code, out, _ = cli(broker, capsys, "move-coordinator", "--group", "g", "--duration-ms", "60000")
    assert code == 0 and out.startswith("added rule ") and "coordinator [group=g]" in out
    code, out, _ = cli(broker, capsys, "add", "--kind", "offline", "--topic", topic, "--partition", "0")
    assert code == 0, out
    code, out, _ = cli(broker, capsys, "list")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:4] == ["ID", "KIND", "SCOPE", "EFFECT"]
    assert [line.split()[1] for line in lines[1:]] == ["fail", "coordinator", "offline"]
    code, _, err = cli(broker, capsys, "fail", "Produce", "NOT_AN_ERROR")
    assert code == 2 and "unknown Kafka error 'NOT_AN_ERROR'" in err
    code, _, err = cli(broker, capsys, "clear", "99999")
    assert code == 1 and "no fault rule 99999" in err
    code, out, _ = cli(broker, capsys, "online", topic, "0")
    assert (code, out.strip()) == (0, f"cleared 1 offline rule for {topic}")
    code, out, _ = cli(broker, capsys, "clear", str(first["id"]))
    assert (code, out.strip()) == (0, "cleared 1 rule")
    code, out, _ = cli(broker, capsys, "--json", "clear")
    assert (code, json.loads(out)) == (0, {"cleared": 1})
    code, out, _ = cli(broker, capsys, "list", "--json")
    assert (code, json.loads(out)) == (0, {"rules": []})
