"""Client quotas against the real broker process: the Java AdminClient sets, describes and removes quotas
(AlterClientQuotas, DescribeClientQuotas), and a confluent-kafka producer over its ``producer_byte_rate``
is held near that rate (measured over a few seconds, within generous bounds) and told so through
``throttle_time_ms`` (KIP-219); a consumer over its ``consumer_byte_rate`` likewise.

The brokers measure rates over 3 one-second samples (``quota.window.num=3``) instead of Kafka's 11, so the
burst a client may make before it is throttled (about two seconds' worth) fits a short test.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from protocol import messages
from tests.compat.conftest import BrokerProcess, KafkaSocket
from tests.compat.java_client import java_client

ALTER_CLIENT_QUOTAS, DESCRIBE_CLIENT_QUOTAS = 49, 48
RATE = 200_000  # bytes per second
RECORD = b"q" * 1000


def set_quota(proc: BrokerProcess, entity: list[tuple[str, str | None]], key: str, value: float) -> None:
    sock = KafkaSocket(proc.host, proc.port)
    request = messages.AlterClientQuotasRequest(validate_only=False, entries=[
        messages.AlterClientQuotasRequest.EntryData(
            entity=[messages.AlterClientQuotasRequest.EntityData(entity_type=t, entity_name=n) for t, n in entity],
            ops=[messages.AlterClientQuotasRequest.OpData(key=key, value=value, remove=False)])])
    response = sock.request(ALTER_CLIENT_QUOTAS, 1, 1, request)
    assert [e.error_code for e in response.entries] == [0], response


def test_java_admin_client_sets_describes_and_removes_quotas(broker: BrokerProcess, tmp_path: Path) -> None:
    user = f"quota-user-{uuid.uuid4().hex[:6]}"
    out = java_client("quotas", broker.bootstrap, user, "quota-client")
    assert out["described"] == {"producer_byte_rate": 1048576.0, "consumer_byte_rate": 2097152.0}
    assert out["defaultUser"] == {"request_percentage": 50.0}
    assert out["after"] == {"consumer_byte_rate": 2097152.0}


QUOTA_BROKER = ("--set", "quota.window.num=3", "--set", "quota.window.size.seconds=1")


def test_a_producer_over_its_byte_rate_is_throttled_to_it(start_broker: Any) -> None:
    broker = start_broker(*QUOTA_BROKER)
    client_id = f"slow-producer-{uuid.uuid4().hex[:6]}"
    set_quota(broker, [("client-id", client_id)], "producer_byte_rate", RATE)
    throttles: list[int] = []
    producer = Producer({"bootstrap.servers": broker.bootstrap, "client.id": client_id, "linger.ms": 5,
                         "batch.size": 65536, "queue.buffering.max.kbytes": 512, "message.timeout.ms": 60000,
                         "throttle_cb": lambda event: throttles.append(event.throttle_time)})
    topic = f"quota-{uuid.uuid4().hex[:8]}"
    producer.produce(topic, RECORD)  # warms up metadata and the connection before the clock starts
    producer.flush(20)
    delivered = 0

    def count(err: Any, msg: Any) -> None:
        nonlocal delivered
        if err is None:
            delivered += 1

    started = time.monotonic()
    while time.monotonic() - started < 4.0:
        try:
            for _ in range(1000):  # as fast as the client's queue takes them
                producer.produce(topic, RECORD, on_delivery=count)
        except BufferError:
            pass
        producer.poll(0.05)
    producer.flush(30)
    elapsed = time.monotonic() - started
    rate = delivered * len(RECORD) / elapsed
    # Unthrottled this client writes tens of MB/s; held to its quota it stays near 200 KB/s.
    assert rate < RATE * 3, f"{rate:.0f} B/s against a quota of {RATE} B/s"
    assert rate > RATE / 4, f"throttled far below the quota: {rate:.0f} B/s"
    assert throttles and max(throttles) > 0, "the producer was never told it was throttled"


def test_a_consumer_over_its_byte_rate_is_throttled_to_it(start_broker: Any) -> None:
    broker = start_broker(*QUOTA_BROKER)
    topic = f"quota-fetch-{uuid.uuid4().hex[:8]}"
    # Small batches: a fetch returns at least one whole batch, and one larger than the quota window can
    # take (2 s x 200 KB/s here) would be throttled every time, in Kafka as here.
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20, "batch.size": 16384})
    total = 3000
    for _ in range(total):
        producer.produce(topic, RECORD)
    assert producer.flush(30) == 0
    client_id = f"slow-consumer-{uuid.uuid4().hex[:6]}"
    set_quota(broker, [("client-id", client_id)], "consumer_byte_rate", RATE)
    throttles: list[int] = []
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": client_id, "client.id": client_id,
                         "enable.auto.commit": False, "fetch.max.bytes": 1048576, "message.max.bytes": 1000000,
                         "max.partition.fetch.bytes": 131072,
                         "throttle_cb": lambda event: throttles.append(event.throttle_time)})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        read = 0
        started = time.monotonic()
        while time.monotonic() - started < 4.0:
            read += sum(1 for m in consumer.consume(100, 0.2) if m.error() is None)
        elapsed = time.monotonic() - started
    finally:
        consumer.close()
    rate = read * len(RECORD) / elapsed
    assert rate < RATE * 3, f"{rate:.0f} B/s against a quota of {RATE} B/s"
    assert read > 0 and throttles and max(throttles) > 0


def test_a_client_over_its_request_percentage_is_throttled(start_broker: Any) -> None:
    """request_percentage: the event-loop time a client's requests take, as a share of one second; Metadata
    requests in a tight loop exceed 1% and the answers start carrying throttle_time_ms."""
    broker = start_broker(*QUOTA_BROKER)
    client_id = f"busy-{uuid.uuid4().hex[:6]}"
    set_quota(broker, [("client-id", client_id)], "request_percentage", 1.0)
    sock = KafkaSocket(broker.host, broker.port, timeout=15)
    throttle_ms = 0
    deadline = time.monotonic() + 20
    corr = 0
    # Until the throttle is long enough that muting shows above the scheduling noise of a loaded machine.
    while throttle_ms < 100 and time.monotonic() < deadline:
        corr += 1
        response = sock.request(3, 12, corr, messages.MetadataRequest(topics=None), client_id=client_id)
        throttle_ms = response.throttle_time_ms
    assert throttle_ms >= 100, f"{corr} Metadata requests and never throttled 100 ms (last {throttle_ms} ms)"
    # Muted meanwhile: the next answer comes only after (most of) the throttle time.
    started = time.monotonic()
    sock.request(3, 12, corr + 1, messages.MetadataRequest(topics=None), client_id=client_id)
    assert time.monotonic() - started >= throttle_ms / 1000 * 0.5
