"""Bootstrap compatibility: real clients negotiate versions and read cluster metadata from ``moldau serve``.

Each test names the Kafka behaviour it checks. The broker is the real process (see conftest.py).
"""

from __future__ import annotations

import asyncio
import struct
import subprocess
import uuid
from collections.abc import Callable

import pytest

from protocol import codec, messages
from protocol.errors import ErrorCode
from tests.compat.clients import kcat_path
from tests.compat.conftest import BrokerProcess, KafkaSocket

API_VERSIONS = 18
METADATA = 3


def _ranges(response: object) -> dict[int, tuple[int, int]]:
    return {k.api_key: (k.min_version, k.max_version) for k in response.api_keys}  # type: ignore[attr-defined]


def test_kcat_lists_cluster_metadata_with_this_broker_as_controller(broker: BrokerProcess) -> None:
    """librdkafka (via kcat) negotiates ApiVersions v3 and lists the single broker as controller."""
    kcat_path()  # fails with how to install it: the README's test command does
    result = subprocess.run(["kcat", "-L", "-b", broker.bootstrap, "-m", "10"],
                            check=False, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"kcat failed ({result.returncode}): {result.stderr}"
    assert " 1 brokers:" in result.stdout, result.stdout
    assert f"broker 1 at {broker.bootstrap} (controller)" in result.stdout, result.stdout
    assert " 0 topics:" in result.stdout, result.stdout


def test_confluent_admin_list_topics_returns_broker_and_cluster_id(broker: BrokerProcess) -> None:
    """confluent-kafka's AdminClient reads the broker list, controller and cluster id from Metadata."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": broker.bootstrap, "socket.timeout.ms": 10000})
    metadata = admin.list_topics(timeout=10)
    assert list(metadata.brokers) == [1]
    assert (metadata.brokers[1].host, metadata.brokers[1].port) == (broker.host, broker.port)
    assert metadata.cluster_id == broker.ready["cluster_id"]
    assert metadata.controller_id == 1
    assert metadata.topics == {}


def test_confluent_admin_unknown_topic_reports_unknown_topic_or_partition(
        start_broker: Callable[..., BrokerProcess]) -> None:
    """With auto.create.topics.enable=false, Metadata for a missing topic answers UNKNOWN_TOPIC_OR_PARTITION."""
    from confluent_kafka.admin import AdminClient

    broker = start_broker("--set", "auto.create.topics.enable=false")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    topic = f"compat-missing-{uuid.uuid4().hex[:8]}"
    metadata = admin.list_topics(topic=topic, timeout=10)
    assert metadata.topics[topic].error is not None
    assert metadata.topics[topic].error.code() == int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)


def test_metadata_auto_creates_a_named_topic(start_broker: Callable[..., BrokerProcess]) -> None:
    """auto.create.topics.enable (default true) creates a named topic with num.partitions partitions."""
    from confluent_kafka.admin import AdminClient

    broker = start_broker("--set", "num.partitions=3")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    topic = f"compat-auto-{uuid.uuid4().hex[:8]}"
    metadata = admin.list_topics(topic=topic, timeout=10)
    assert metadata.topics[topic].error is None
    assert sorted(metadata.topics[topic].partitions) == [0, 1, 2]
    assert all(p.leader == 1 and p.replicas == [1] for p in metadata.topics[topic].partitions.values())
    assert topic in admin.list_topics(timeout=10).topics


def test_metadata_rejects_an_invalid_topic_name(broker: BrokerProcess) -> None:
    """A named topic that breaks Kafka's naming rules gets INVALID_TOPIC_EXCEPTION, not a creation."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    metadata = admin.list_topics(topic="bad name!", timeout=10)
    assert metadata.topics["bad name!"].error.code() == int(ErrorCode.INVALID_TOPIC_EXCEPTION)
    assert admin.list_topics(timeout=10).topics == {}


def test_kafka_python_admin_and_consumer_bootstrap(broker: BrokerProcess) -> None:
    """kafka-python negotiates ApiVersions (v4 first), bootstraps and lists topics through Metadata."""
    from kafka import KafkaAdminClient, KafkaConsumer

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000,
                             client_id="compat-kp-admin")
    try:
        assert admin.list_topics() == []
    finally:
        admin.close()
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000,
                             client_id="compat-kp-consumer", group_id=None)
    try:
        # kafka-python 3 bootstraps lazily; bootstrap() waits for the first cluster metadata.
        consumer.bootstrap(timeout_ms=10000)
        assert consumer.topics() == set()
    finally:
        consumer.close()


def test_aiokafka_consumer_starts_and_stops(broker: BrokerProcess) -> None:
    """aiokafka probes versions with ApiVersions v0 and bootstraps through Metadata."""
    from aiokafka import AIOKafkaConsumer

    async def run() -> set[str]:
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, client_id="compat-aiokafka",
                                    request_timeout_ms=10000)
        await asyncio.wait_for(consumer.start(), 15)
        try:
            return await asyncio.wait_for(consumer.topics(), 10)
        finally:
            await asyncio.wait_for(consumer.stop(), 10)

    assert asyncio.run(run()) == set()


@pytest.mark.parametrize("version", [0, 1, 2, 3, 4])
def test_raw_api_versions_lists_served_ranges(broker: BrokerProcess, raw_socket, version: int) -> None:
    """ApiVersions at every served version lists ApiVersions 0-4 and Metadata 0-12, error NONE."""
    sock: KafkaSocket = raw_socket(broker)
    body = messages.ApiVersionsRequest(client_software_name="moldau-compat", client_software_version="0.1")
    response = sock.request(API_VERSIONS, version, 7, body)
    assert response.error_code == 0
    ranges = _ranges(response)
    assert ranges[API_VERSIONS] == (0, 4)
    assert ranges[METADATA] == (0, 12)
    if version >= 3:
        assert response.finalized_features_epoch == -1
        assert response.supported_features == [] and response.finalized_features == []


def test_api_versions_v3_with_invalid_software_name_gets_invalid_request(broker: BrokerProcess, raw_socket) -> None:
    """Kafka validates ClientSoftwareName/Version (v3+) and answers INVALID_REQUEST when they are not valid."""
    sock: KafkaSocket = raw_socket(broker)
    body = messages.ApiVersionsRequest(client_software_name="bad name!", client_software_version="1")
    response = sock.request(API_VERSIONS, 3, 8, body)
    assert response.error_code == int(ErrorCode.INVALID_REQUEST)


def test_api_versions_unknown_version_gets_v0_unsupported_version_with_ranges(
        broker: BrokerProcess, raw_socket) -> None:
    """KIP-511: ApiVersions v99 gets a v0-format UNSUPPORTED_VERSION response listing the served ranges,
    and the connection stays open so the client can retry at a version it shares with the broker."""
    sock: KafkaSocket = raw_socket(broker)
    client_id = b"future-client"
    # Header v2 as a flexible ApiVersions version would send it: key, version, correlation id,
    # client id (int16 length), empty tagged fields; then a compact-string body the broker must not parse.
    frame = struct.pack(">hhih", API_VERSIONS, 99, 4242, len(client_id)) + client_id + b"\x00" \
        + b"\x03ab\x02c\x00"
    sock.send(struct.pack(">i", len(frame)) + frame)
    raw = sock.recv_frame()
    correlation_id, error_code = struct.unpack_from(">ih", raw, 0)
    assert (correlation_id, error_code) == (4242, int(ErrorCode.UNSUPPORTED_VERSION))
    _, response = codec.decode_response(API_VERSIONS, 0, raw)
    assert _ranges(response)[API_VERSIONS] == (0, 4)
    assert _ranges(response)[METADATA] == (0, 12)

    retry = sock.request(API_VERSIONS, 3, 4243, messages.ApiVersionsRequest(
        client_software_name="future-client", client_software_version="1.0"))
    assert retry.error_code == 0


def test_pipelined_requests_are_answered_in_order(broker: BrokerProcess, raw_socket) -> None:
    """Clients pipeline (kafka-python 2.0.2 sends ApiVersions v0 then Metadata v0 before reading);
    responses come back in request order."""
    sock: KafkaSocket = raw_socket(broker)
    frames = []
    for corr in range(1, 21):
        if corr % 2:
            frames += codec.encode_request(API_VERSIONS, 0, corr, "pipeline", messages.ApiVersionsRequest())
        else:
            frames += codec.encode_request(METADATA, 0, corr, "pipeline", messages.MetadataRequest(topics=[]))
    sock.send(frames)
    for corr in range(1, 21):
        api_key = API_VERSIONS if corr % 2 else METADATA
        header, _ = codec.decode_response(api_key, 0, sock.recv_frame())
        assert header.correlation_id == corr


@pytest.mark.parametrize("version", range(13))
def test_metadata_every_version_describes_this_broker(broker: BrokerProcess, raw_socket, version: int) -> None:
    """Metadata v0-v12: this broker as the only node and controller, the cluster id (v2+); a named topic
    that does not exist is auto-created by v0-3 (which cannot opt out) and, when v4+ sets
    allow_auto_topic_creation=false, answered with UNKNOWN_TOPIC_OR_PARTITION."""
    sock: KafkaSocket = raw_socket(broker)
    topic = f"compat-meta-v{version}"
    request = messages.MetadataRequest(topics=[messages.MetadataRequest.MetadataRequestTopic(name=topic)])
    if version >= 8:
        request.include_topic_authorized_operations = True
    if 8 <= version <= 10:
        request.include_cluster_authorized_operations = True
    if version >= 4:
        request.allow_auto_topic_creation = False
    response = sock.request(METADATA, version, 100 + version, request)
    assert [(b.node_id, b.host, b.port) for b in response.brokers] == [(1, broker.host, broker.port)]
    if version >= 1:
        assert response.controller_id == 1
        assert response.brokers[0].rack is None
    if version >= 2:
        assert response.cluster_id == broker.ready["cluster_id"]
    expected = ErrorCode.NONE if version < 4 else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert [(t.name, t.error_code) for t in response.topics] == [(topic, int(expected))]
    if version < 4:
        assert [p.partition_index for p in response.topics[0].partitions] == [0]
    if version >= 8:
        # Every operation that applies to a topic, as Kafka reports without an authorizer.
        assert response.topics[0].topic_authorized_operations == 3576
    if 8 <= version <= 10:
        assert response.cluster_authorized_operations == 8096


def test_metadata_all_topics_and_no_authorized_operations_unless_asked(broker: BrokerProcess, raw_socket) -> None:
    """v1+ null topics means all topics (none exist yet); authorized operations stay INT32_MIN unless asked."""
    sock: KafkaSocket = raw_socket(broker)
    response = sock.request(METADATA, 10, 1, messages.MetadataRequest(topics=None))
    assert response.topics == []
    assert response.cluster_authorized_operations == -(2**31)
    response = sock.request(METADATA, 1, 2, messages.MetadataRequest(topics=[]))
    assert response.topics == []


def test_metadata_v12_topic_by_id_unknown_gets_unknown_topic_id(broker: BrokerProcess, raw_socket) -> None:
    """Metadata v12 lookup by topic id for an id that does not exist answers UNKNOWN_TOPIC_ID, name null."""
    sock: KafkaSocket = raw_socket(broker)
    topic_id = uuid.uuid4()
    request = messages.MetadataRequest(
        topics=[messages.MetadataRequest.MetadataRequestTopic(topic_id=topic_id, name=None)])
    response = sock.request(METADATA, 12, 3, request)
    assert [(t.name, t.topic_id, t.error_code) for t in response.topics] == [
        (None, topic_id, int(ErrorCode.UNKNOWN_TOPIC_ID))]


def test_idle_connection_is_closed_after_connections_max_idle_ms(start_broker, raw_socket) -> None:
    """Kafka closes connections idle for connections.max.idle.ms."""
    proc = start_broker("--set", "connections.max.idle.ms=300")
    sock: KafkaSocket = raw_socket(proc)
    assert sock.request(API_VERSIONS, 0, 1, messages.ApiVersionsRequest()).error_code == 0
    assert sock.is_closed_by_peer(timeout=5.0), "idle connection still open after 5s"
    proc.wait_for_log(lambda r: r.get("event") == "connection.idle_timeout", 5.0, "connection.idle_timeout")


def test_memory_broker_writes_nothing_and_reports_memory_storage(broker: BrokerProcess, tmp_path) -> None:
    """--memory keeps everything in memory: no data directory is created, storage is memory://."""
    assert broker.ready["storage"] == "memory://"
    assert not (tmp_path / "xdg-data").exists()


def test_registry_advertises_only_versions_the_spec_defines() -> None:
    """ApiVersions is computed from the registry; every advertised range lies inside Kafka's JSON spec,
    so the broker never advertises a version the codec cannot decode."""
    from broker.handlers import default_registry

    for api_key, lo, hi in default_registry().version_ranges():
        spec = codec.spec_versions(api_key)
        assert spec is not None and spec[0] <= lo <= hi <= spec[1], (api_key, (lo, hi), spec)


def test_broker_library_object_in_loop_and_on_background_thread() -> None:
    """The broker is a library object first: start on port 0 inside a running loop (or on a background
    thread's loop), read back the bound address, answer requests, stop and release the port."""
    import socket
    import threading

    from broker.config import BrokerConfig
    from broker.server import Broker

    def api_versions(port: int) -> int:
        sock = KafkaSocket("127.0.0.1", port)
        try:
            return sock.request(API_VERSIONS, 0, 1, messages.ApiVersionsRequest()).error_code
        finally:
            sock.close()

    def assert_port_free(port: int) -> None:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))

    config = BrokerConfig.from_settings({"listeners": "127.0.0.1:0", "storage.url": "memory://"})

    async def in_loop() -> int:
        async with Broker(config) as broker:
            host, port = broker.bound_address
            assert (host, broker.advertised_address) == ("127.0.0.1", ("127.0.0.1", port))
            assert await asyncio.to_thread(api_versions, port) == 0
        return port

    assert_port_free(asyncio.run(in_loop()))

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        broker = Broker(config)
        asyncio.run_coroutine_threadsafe(broker.start(), loop).result(10)
        port = broker.bound_address[1]
        assert api_versions(port) == 0
        asyncio.run_coroutine_threadsafe(broker.stop(), loop).result(10)
        assert_port_free(port)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
