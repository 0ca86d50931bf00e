"""SASL and TLS at the byte level, against the real broker process: Kafka's rules for what a connection
may send before it authenticates, the answers to bad credentials and mechanisms, tokens after a v0
SaslHandshake, re-authentication (KIP-368), TLS handshakes that fail, and files re-read without a restart
(a renewed certificate, a PLAIN users file).
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from protocol import messages
from tests.compat.certs import make_pki, reissue_server
from tests.compat.conftest import BrokerProcess, KafkaSocket, finish

API_VERSIONS, METADATA, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 3, 17, 36
SASL_AUTHENTICATION_FAILED, UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE = 58, 33, 34
PLAIN_JAAS = 'org.apache.kafka.common.security.plain.PlainLoginModule required user_alice="alice-secret";'
DEADLINE_S = 10.0


def plain_token(user: str, password: str) -> bytes:
    return b"\0" + user.encode() + b"\0" + password.encode()


class TlsKafkaSocket(KafkaSocket):
    """KafkaSocket over TLS, trusting ``ca``."""

    def __init__(self, host: str, port: int, ca: Path, timeout: float = 5.0) -> None:
        context = ssl.create_default_context(cafile=str(ca))
        raw = socket.create_connection((host, port), timeout=timeout)
        self.sock = context.wrap_socket(raw, server_hostname=host)
        self.sock.settimeout(timeout)


def connect(address: str) -> KafkaSocket:
    host, _, port = address.rpartition(":")
    return KafkaSocket(host, int(port))


def authenticate(sock: KafkaSocket, token: bytes, *, version: int = 2, corr: int = 2) -> Any:
    handshake = sock.request(SASL_HANDSHAKE, 1, corr, messages.SaslHandshakeRequest(mechanism="PLAIN"))
    assert handshake.error_code == 0 and "PLAIN" in handshake.mechanisms
    return sock.request(SASL_AUTHENTICATE, version, corr + 1, messages.SaslAuthenticateRequest(auth_bytes=token))


def metadata(sock: KafkaSocket, corr: int) -> Any:
    return sock.request(METADATA, 12, corr, messages.MetadataRequest(topics=None))


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    tmp = tmp_path_factory.mktemp("sasl-broker")
    proc = BrokerProcess([
        "--set", "listeners=PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
        "--set", f"listener.name.sasl_plaintext.plain.sasl.jaas.config={PLAIN_JAAS}",
        "--set", "connection.failed.authentication.delay.ms=50"], tmp, listen=False)
    yield proc
    finish(proc)
    assert not any("alice-secret" in line or "wrong-secret" in line for line in proc.lines)


def test_plain_authentication_then_requests_are_served(sasl_broker: BrokerProcess) -> None:
    sock = connect(sasl_broker.listeners["SASL_PLAINTEXT"])
    response = authenticate(sock, plain_token("alice", "alice-secret"))
    assert (response.error_code, response.error_message, response.session_lifetime_ms) == (0, None, 0)
    assert [b.port for b in metadata(sock, 9).brokers] == [int(sasl_broker.listeners["SASL_PLAINTEXT"].split(":")[1])]


def test_a_wrong_password_is_answered_then_the_connection_closes(sasl_broker: BrokerProcess) -> None:
    sock = connect(sasl_broker.listeners["SASL_PLAINTEXT"])
    response = authenticate(sock, plain_token("alice", "wrong-secret"))
    assert response.error_code == SASL_AUTHENTICATION_FAILED
    assert response.error_message == "Authentication failed: Invalid username or password"
    assert sock.is_closed_by_peer(DEADLINE_S)
    sasl_broker.wait_for_log(lambda r: r.get("event") == "sasl.authentication_failed", what="the failure logged")


@pytest.mark.parametrize("api_key,body", [
    (METADATA, messages.MetadataRequest(topics=None)),
    (SASL_AUTHENTICATE, messages.SaslAuthenticateRequest(auth_bytes=b"\0alice\0alice-secret")),
], ids=["Metadata", "SaslAuthenticate-before-handshake"])
def test_a_request_before_authentication_closes_the_connection(sasl_broker: BrokerProcess, api_key: int,
                                                               body: Any) -> None:
    """Only ApiVersions and SaslHandshake may come first on a SASL listener; Kafka closes otherwise."""
    sock = connect(sasl_broker.listeners["SASL_PLAINTEXT"])
    versions = sock.request(API_VERSIONS, 3, 1, messages.ApiVersionsRequest(
        client_software_name="t", client_software_version="1"))
    assert versions.error_code == 0
    sock.send_request(api_key, 12 if api_key == METADATA else 2, 2, body)
    assert sock.is_closed_by_peer(DEADLINE_S)
    sasl_broker.wait_for_log(lambda r: r.get("event") == "request.unauthenticated", what="the refusal logged")


def test_an_unsupported_mechanism_lists_the_enabled_ones_and_closes(sasl_broker: BrokerProcess) -> None:
    sock = connect(sasl_broker.listeners["SASL_PLAINTEXT"])
    response = sock.request(SASL_HANDSHAKE, 1, 1, messages.SaslHandshakeRequest(mechanism="GSSAPI"))
    assert response.error_code == UNSUPPORTED_SASL_MECHANISM
    assert response.mechanisms == ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
    assert sock.is_closed_by_peer(DEADLINE_S)


def test_after_a_v0_handshake_tokens_travel_as_bare_frames(sasl_broker: BrokerProcess) -> None:
    """SaslHandshake v0 (before KIP-152): the token and the answer are size-prefixed, without headers."""
    sock = connect(sasl_broker.listeners["SASL_PLAINTEXT"])
    assert sock.request(SASL_HANDSHAKE, 0, 1, messages.SaslHandshakeRequest(mechanism="PLAIN")).error_code == 0
    token = plain_token("alice", "alice-secret")
    sock.send(len(token).to_bytes(4, "big") + token)
    assert sock.recv_frame() == b""  # PLAIN's empty server token
    assert metadata(sock, 2).brokers

    bad = connect(sasl_broker.listeners["SASL_PLAINTEXT"])
    assert bad.request(SASL_HANDSHAKE, 0, 1, messages.SaslHandshakeRequest(mechanism="PLAIN")).error_code == 0
    token = plain_token("alice", "wrong-secret")
    bad.send(len(token).to_bytes(4, "big") + token)
    assert bad.is_closed_by_peer(DEADLINE_S)


def test_sasl_requests_on_a_plaintext_listener_get_illegal_sasl_state(sasl_broker: BrokerProcess) -> None:
    sock = connect(sasl_broker.listeners["PLAINTEXT"])
    assert sock.request(SASL_HANDSHAKE, 1, 1, messages.SaslHandshakeRequest(mechanism="PLAIN")).error_code == \
        ILLEGAL_SASL_STATE
    answer = sock.request(SASL_AUTHENTICATE, 2, 2, messages.SaslAuthenticateRequest(auth_bytes=b"x"))
    assert answer.error_code == ILLEGAL_SASL_STATE
    assert metadata(sock, 3).brokers  # the connection stays


def test_reauthentication_within_the_session_and_expiry_without_it(start_broker: Any, tmp_path: Path) -> None:
    """KIP-368: SaslAuthenticate v1+ states the session lifetime (connections.max.reauth.ms); the client
    re-authenticates on the same connection as the same user, or is disconnected at its next request."""
    proc = start_broker("--set", "listeners=SASL_PLAINTEXT://127.0.0.1:0",
                        "--set", "listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common."
                                 'security.plain.PlainLoginModule required user_alice="a" user_bob="b";',
                        "--set", "connections.max.reauth.ms=1500")
    address = proc.listeners["SASL_PLAINTEXT"]
    keeper = connect(address)
    assert authenticate(keeper, plain_token("alice", "a")).session_lifetime_ms == 1500
    # Re-authenticating as the same user renews the session; as another user fails.
    assert authenticate(keeper, plain_token("alice", "a"), corr=10).session_lifetime_ms == 1500
    assert metadata(keeper, 20).brokers
    other = connect(address)
    assert authenticate(other, plain_token("alice", "a")).error_code == 0
    changed = authenticate(other, plain_token("bob", "b"), corr=10)
    assert changed.error_code == SASL_AUTHENTICATION_FAILED and "Cannot change principals" in changed.error_message
    assert other.is_closed_by_peer(DEADLINE_S)
    # Without re-authentication the session ends: the next request after it closes the connection.
    lapsed = connect(address)
    assert authenticate(lapsed, plain_token("alice", "a")).error_code == 0
    deadline = time.monotonic() + DEADLINE_S
    corr = 100
    closed = False
    while time.monotonic() < deadline and not closed:
        corr += 1
        try:
            metadata(lapsed, corr)
        except (ConnectionError, OSError):
            closed = True
    assert closed, "the connection outlived its SASL session"
    proc.wait_for_log(lambda r: r.get("event") == "request.unauthenticated" and "expired" in r.get("reason", ""),
                      what="the expired session logged")


def test_confluent_kafka_reauthenticates_before_its_session_ends(start_broker: Any) -> None:
    """librdkafka (KIP-368 support) keeps producing across several session lifetimes."""
    from confluent_kafka import Producer

    proc = start_broker("--set", "listeners=SASL_PLAINTEXT://127.0.0.1:0",
                        "--set", f"listener.name.sasl_plaintext.plain.sasl.jaas.config={PLAIN_JAAS}",
                        "--set", "connections.max.reauth.ms=1000", "--log-level", "debug")
    producer = Producer({"bootstrap.servers": proc.listeners["SASL_PLAINTEXT"], "security.protocol": "SASL_PLAINTEXT",
                         "sasl.mechanism": "PLAIN", "sasl.username": "alice", "sasl.password": "alice-secret",
                         "linger.ms": 0, "message.timeout.ms": 10000})
    failures: list[Any] = []
    delivered: list[Any] = []
    deadline = time.monotonic() + 30
    sent = 0
    # Until the broker has seen two re-authentications, keep one record in flight at a time.
    while time.monotonic() < deadline and sum(
            1 for r in proc.records if r.get("event") == "sasl.authenticated" and r.get("reauthentication")) < 2:
        producer.produce("reauth-topic", b"x", on_delivery=lambda e, m: (failures if e else delivered).append(e or m))
        sent += 1
        producer.flush(10)
    assert not failures, f"deliveries failed across re-authentication: {failures}"
    assert len(delivered) == sent
    assert sum(1 for r in proc.records if r.get("event") == "sasl.authenticated" and r.get("reauthentication")) >= 2
    assert not any(r.get("event") == "request.unauthenticated" for r in proc.records)


def test_failed_tls_handshakes_are_logged_once_each_without_a_traceback(start_broker: Any, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    proc = start_broker("--set", "listeners=SSL://127.0.0.1:0", "--set", f"ssl.keystore.location={pki.server_pem}")
    host, _, port = proc.listeners["SSL"].rpartition(":")
    garbage = KafkaSocket(host, int(port))
    garbage.send(b"\x16\x03\x01\x00\x05hello-not-tls" + b"\x00" * 64)
    assert garbage.is_closed_by_peer(DEADLINE_S)
    plain = KafkaSocket(host, int(port))  # a Kafka frame where a ClientHello belongs
    plain.send(b"\x00\x00\x00\x0a" + b"\x00\x12\x00\x00\x00\x00\x00\x01\x00\x00")
    assert plain.is_closed_by_peer(DEADLINE_S)
    proc.wait_for_log(lambda r: r.get("event") == "tls.handshake_failed", what="the failed handshake")
    # Still serving TLS clients.
    sock = TlsKafkaSocket(host, int(port), pki.ca)
    assert metadata(sock, 1).brokers
    assert not proc.tracebacks()


def test_a_renewed_certificate_is_served_without_a_restart(start_broker: Any, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    proc = start_broker("--set", "listeners=SSL://127.0.0.1:0", "--set", f"ssl.keystore.location={pki.server_pem}")
    host, _, port = proc.listeners["SSL"].rpartition(":")
    assert metadata(TlsKafkaSocket(host, int(port), pki.ca), 1).brokers
    reissue_server(pki, tmp_path, server_cn="renewed")
    deadline = time.monotonic() + DEADLINE_S
    subject = None
    while time.monotonic() < deadline:
        try:
            sock = TlsKafkaSocket(host, int(port), tmp_path / "new-ca.pem")
        except ssl.SSLError:
            continue  # still the old certificate: the broker checks its files about once a second
        subject = dict(item for rdn in sock.sock.getpeercert()["subject"] for item in rdn)
        assert metadata(sock, 1).brokers
        break
    assert subject is not None and subject["commonName"] == "renewed"
    proc.wait_for_log(lambda r: r.get("event") == "tls.reloaded", what="the reload logged")


def test_plain_users_file_is_reread_when_it_changes(start_broker: Any, tmp_path: Path) -> None:
    users = tmp_path / "plain-users.properties"
    users.write_text("alice=alice-secret\n")
    proc = start_broker("--set", "listeners=SASL_PLAINTEXT://127.0.0.1:0",
                        "--set", "sasl.enabled.mechanisms=PLAIN", "--set", f"sasl.plain.users.file={users}")
    address = proc.listeners["SASL_PLAINTEXT"]
    assert authenticate(connect(address), plain_token("alice", "alice-secret")).error_code == 0
    assert authenticate(connect(address), plain_token("dave", "dave-secret")).error_code == SASL_AUTHENTICATION_FAILED
    users.write_text("alice=alice-secret\ndave=dave-secret\n")
    deadline = time.monotonic() + DEADLINE_S
    code = None
    while time.monotonic() < deadline and code != 0:
        code = authenticate(connect(address), plain_token("dave", "dave-secret")).error_code
    assert code == 0
