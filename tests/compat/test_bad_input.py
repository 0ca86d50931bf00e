"""Bad input costs the connection, never the broker: Kafka closes a connection that sends an
unacceptable frame size, an undecodable header or body, an unknown API key or an unsupported version.

Each test sends raw bytes to the real broker process, checks the connection is closed within a bound,
that the broker logged an event naming the problem, and that a fresh client is still served.
"""

from __future__ import annotations

import os
import resource
import socket
import struct
from collections.abc import Callable
from typing import Any

import pytest

from protocol import codec, messages
from tests.compat.conftest import BrokerProcess, KafkaSocket

API_VERSIONS = 18
METADATA = 3
CLOSE_TIMEOUT_S = 5.0


def _frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def _header_v1(api_key: int, version: int, correlation_id: int, client_id: bytes = b"bad-input") -> bytes:
    return struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id


def _assert_still_serves(proc: BrokerProcess, raw_socket: Callable[[BrokerProcess], KafkaSocket]) -> None:
    fresh = raw_socket(proc)
    response = fresh.request(API_VERSIONS, 3, 1, messages.ApiVersionsRequest(
        client_software_name="fresh-client", client_software_version="1.0"))
    assert response.error_code == 0
    metadata = fresh.request(METADATA, 12, 2, messages.MetadataRequest(topics=None))
    assert [b.node_id for b in metadata.brokers] == [1]


def _send_and_expect_close(proc: BrokerProcess, raw_socket: Callable[[BrokerProcess], KafkaSocket],
                           data: bytes) -> KafkaSocket:
    sock = raw_socket(proc)
    sock.send(data)
    assert sock.is_closed_by_peer(CLOSE_TIMEOUT_S), f"connection still open {CLOSE_TIMEOUT_S}s after {data[:32]!r}"
    return sock


def _logged(proc: BrokerProcess, event: str, **fields: Any) -> dict[str, Any]:
    return proc.wait_for_log(
        lambda r: r.get("event") == event and all(r.get(k) == v for k, v in fields.items()),
        5.0, f"{event} with {fields}")


def test_negative_frame_size_closes_connection(broker: BrokerProcess, raw_socket) -> None:
    """A negative size prefix can never be a Kafka frame: the connection is closed."""
    _send_and_expect_close(broker, raw_socket, struct.pack(">i", -1))
    record = _logged(broker, "request.frame_size_rejected", size=-1)
    assert record["level"] == "warning" and record["peer"].startswith("127.0.0.1:")
    _assert_still_serves(broker, raw_socket)


def test_frame_above_socket_request_max_bytes_closes_connection(broker: BrokerProcess, raw_socket) -> None:
    """A size prefix above socket.request.max.bytes (default 104857600) closes the connection before the
    broker reads or allocates the body (InvalidReceiveException in Kafka)."""
    _send_and_expect_close(broker, raw_socket, struct.pack(">i", 104857601) + b"\x00" * 16)
    _logged(broker, "request.frame_size_rejected", size=104857601, max_size=104857600)
    _assert_still_serves(broker, raw_socket)


def test_configured_socket_request_max_bytes_is_enforced(start_broker, raw_socket) -> None:
    """socket.request.max.bytes set with --set applies: a real 2 KiB Metadata request over a 1 KiB limit
    closes the connection."""
    proc = start_broker("--set", "socket.request.max.bytes=1024")
    topics = [messages.MetadataRequest.MetadataRequestTopic(name=f"bad-input-limit-{i:04d}") for i in range(100)]
    data = b"".join(bytes(p) for p in codec.encode_request(METADATA, 1, 1, "bad-input",
                                                            messages.MetadataRequest(topics=topics)))
    assert len(data) > 1024
    _send_and_expect_close(proc, raw_socket, data)
    _logged(proc, "request.frame_size_rejected", size=len(data) - 4, max_size=1024)
    _assert_still_serves(proc, raw_socket)


def test_frame_too_short_for_a_header_closes_connection(broker: BrokerProcess, raw_socket) -> None:
    """Three bytes of garbage cannot hold a request header: logged as a malformed header, closed."""
    _send_and_expect_close(broker, raw_socket, _frame(b"\x00\x12\x00"))
    _logged(broker, "request.malformed_header", size=3)
    _assert_still_serves(broker, raw_socket)


def test_garbage_body_closes_connection(broker: BrokerProcess, raw_socket) -> None:
    """A valid Metadata v9 header followed by garbage (an over-long varint) is logged with the api key,
    version and correlation id, and the connection is closed."""
    header = _header_v1(METADATA, 9, 77) + b"\x00"  # header v2: empty tagged fields
    _send_and_expect_close(broker, raw_socket, _frame(header + b"\xff" * 12))
    record = _logged(broker, "request.malformed_body", api_key=METADATA, api_version=9, correlation_id=77)
    assert record["client_id"] == "bad-input"
    _assert_still_serves(broker, raw_socket)


def test_truncated_body_closes_connection(broker: BrokerProcess, raw_socket) -> None:
    """A Metadata v1 body announcing two topics but holding one and a half is malformed."""
    body = struct.pack(">i", 2) + struct.pack(">h", 3) + b"abc" + struct.pack(">h", 10) + b"abc"
    _send_and_expect_close(broker, raw_socket, _frame(_header_v1(METADATA, 1, 78) + body))
    _logged(broker, "request.malformed_body", api_key=METADATA, api_version=1, correlation_id=78)
    _assert_still_serves(broker, raw_socket)


def test_huge_array_count_in_tiny_frame_fails_at_once(broker: BrokerProcess, raw_socket) -> None:
    """A 20-byte Metadata v1 frame whose topics array claims 2^31-1 elements is rejected at once,
    without allocating for the claimed count, and the broker keeps serving."""
    payload = _header_v1(METADATA, 1, 79, b"abcdef") + struct.pack(">i", 0x7FFFFFFF)
    assert len(payload) == 20
    _send_and_expect_close(broker, raw_socket, _frame(payload))
    _logged(broker, "request.malformed_body", api_key=METADATA, api_version=1, correlation_id=79)
    _assert_still_serves(broker, raw_socket)


def test_unknown_api_key_closes_connection_after_earlier_responses(broker: BrokerProcess, raw_socket) -> None:
    """Kafka closes the connection on an API key it does not know (999); a request pipelined before it
    is still answered first."""
    sock = raw_socket(broker)
    first = b"".join(bytes(p) for p in codec.encode_request(API_VERSIONS, 0, 1, "bad-input",
                                                             messages.ApiVersionsRequest()))
    sock.send(first + _frame(_header_v1(999, 0, 80)))
    header, response = codec.decode_response(API_VERSIONS, 0, sock.recv_frame())
    assert (header.correlation_id, response.error_code) == (1, 0)
    assert sock.is_closed_by_peer(CLOSE_TIMEOUT_S), "connection still open after api key 999"
    _logged(broker, "request.unknown_api_key", api_key=999, correlation_id=80)
    _assert_still_serves(broker, raw_socket)


def test_unsupported_metadata_version_closes_connection(broker: BrokerProcess, raw_socket) -> None:
    """An unsupported version of a known API other than ApiVersions (Metadata v99) closes the connection."""
    _send_and_expect_close(broker, raw_socket, _frame(_header_v1(METADATA, 99, 81) + b"\x00\x00"))
    record = _logged(broker, "request.unsupported_version", api_key=METADATA, api_version=99, correlation_id=81)
    assert (record["min_version"], record["max_version"]) == (0, 12)
    _assert_still_serves(broker, raw_socket)


def test_confluent_client_works_after_bad_input(broker: BrokerProcess, raw_socket) -> None:
    """After a burst of bad connections a real client (librdkafka) still bootstraps."""
    from confluent_kafka.admin import AdminClient

    for data in (struct.pack(">i", -5), _frame(b"\x01"), _frame(_header_v1(999, 0, 1))):
        _send_and_expect_close(broker, raw_socket, data)
    metadata = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
    assert list(metadata.brokers) == [1]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts the broker's descriptors in /proc")
def test_running_out_of_descriptors_logs_throttled_errors_and_accepting_resumes(start_broker, raw_socket) -> None:
    """With its descriptors used up, accept() fails; asyncio retries every second and logged each failure
    once per connection waiting (a fuzz campaign saw 400,000 lines). The broker logs it as
    listener.accept_failed through its log throttle, and accepts again once descriptors are free."""
    proc = start_broker("--set", "log.throttle.window.ms=1000")
    pid = proc.proc.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (len(os.listdir(f"/proc/{pid}/fd")), hard))
    waiting = []
    try:
        waiting = [socket.create_connection((proc.host, proc.port), timeout=5) for _ in range(20)]
        record = _logged(proc, "listener.accept_failed")
        assert record["level"] == "error" and "Too many open files" in record["reason"], record
        # The failures went on (one per waiting connection and retry) and were counted, not logged.
        summary = proc.wait_for_log(lambda r: r.get("event") == "log.suppressed"
                                    and r.get("suppressed_event") == "listener.accept_failed", 10.0,
                                    "the throttle's summary of the repeated accept failures")
        assert summary["suppressed"] >= 20, summary
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        for sock in waiting:
            sock.close()
    _assert_still_serves(proc, raw_socket)
    assert not [r for r in proc.records if "out of system resource" in str(r.get("event"))]
    assert sum(r.get("event") == "listener.accept_failed" for r in proc.records) <= 3
