"""Hostile clients on TLS and SASL listeners cost nothing that stays: wrong passwords, requests before
authentication, bytes that are not TLS, handshakes dropped half way and bare tokens after a v0 handshake,
many at once, all end with their connections closed and the broker's connection count and request memory
back where they started, while an honest client is served throughout.

The broker runs in this process so its counters can be read; the clients are raw sockets on threads.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from broker.config import BrokerConfig
from broker.server import Broker
from protocol import codec, messages
from tests.compat.certs import make_pki

PLAIN_JAAS = 'org.apache.kafka.common.security.plain.PlainLoginModule required user_alice="alice-secret";'
SASL_HANDSHAKE, SASL_AUTHENTICATE, METADATA = 17, 36, 3
ROUNDS = 40
DEADLINE_S = 20.0


def frame(api_key: int, version: int, body: object, corr: int = 1) -> bytes:
    return b"".join(bytes(p) for p in codec.encode_request(api_key, version, corr, "hostile", body))


def read_until_closed(sock: socket.socket) -> None:
    sock.settimeout(DEADLINE_S)
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass
    finally:
        sock.close()


def wrong_password(address: tuple[str, int]) -> None:
    sock = socket.create_connection(address, timeout=DEADLINE_S)
    sock.sendall(frame(SASL_HANDSHAKE, 1, messages.SaslHandshakeRequest(mechanism="PLAIN")))
    sock.sendall(frame(SASL_AUTHENTICATE, 2, messages.SaslAuthenticateRequest(auth_bytes=b"\0alice\0guess"), 2))
    read_until_closed(sock)


def request_before_authentication(address: tuple[str, int]) -> None:
    sock = socket.create_connection(address, timeout=DEADLINE_S)
    sock.sendall(frame(METADATA, 12, messages.MetadataRequest(topics=None)))
    read_until_closed(sock)


def bare_token_garbage(address: tuple[str, int]) -> None:
    sock = socket.create_connection(address, timeout=DEADLINE_S)
    sock.sendall(frame(SASL_HANDSHAKE, 0, messages.SaslHandshakeRequest(mechanism="PLAIN")))
    sock.sendall(struct.pack(">i", 9) + b"\xff" * 9)
    read_until_closed(sock)


def not_tls(address: tuple[str, int]) -> None:
    sock = socket.create_connection(address, timeout=DEADLINE_S)
    sock.sendall(b"\x16\x03\x01\x02\x00" + b"\x00" * 512)
    read_until_closed(sock)


def half_handshake(address: tuple[str, int]) -> None:
    """A ClientHello, then gone."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    sock = socket.create_connection(address, timeout=DEADLINE_S)
    sock.sendall(outgoing.read())
    sock.close()


def honest_metadata(address: tuple[str, int], ca: Path) -> int:
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(address, timeout=DEADLINE_S) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(frame(SASL_HANDSHAKE, 1, messages.SaslHandshakeRequest(mechanism="PLAIN")))
        sock.sendall(frame(SASL_AUTHENTICATE, 2, messages.SaslAuthenticateRequest(
            auth_bytes=b"\0alice\0alice-secret"), 2))
        sock.sendall(frame(METADATA, 12, messages.MetadataRequest(topics=None), 3))
        answers = []
        buffer = b""
        while len(answers) < 3:
            chunk = sock.recv(65536)
            assert chunk, "the honest client's connection was closed"
            buffer += chunk
            while len(buffer) >= 4 and len(buffer) >= 4 + struct.unpack(">i", buffer[:4])[0]:
                size = struct.unpack(">i", buffer[:4])[0]
                answers.append(buffer[4:4 + size])
                buffer = buffer[4 + size:]
        _, response = codec.decode_response(METADATA, 12, answers[2])
        return len(response.brokers)


def test_hostile_clients_leave_no_connections_or_request_memory_behind(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")

    async def main() -> None:
        broker = Broker(BrokerConfig.from_settings({
            "listeners": "SASL_PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0", "storage.url": "memory://",
            "ssl.keystore.location": str(pki.server_pem), "sasl.enabled.mechanisms": "PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config": PLAIN_JAAS,
            "listener.name.sasl_ssl.plain.sasl.jaas.config": PLAIN_JAAS,
            "connection.failed.authentication.delay.ms": 20}))
        await broker.start()
        try:
            plain = broker.listener("SASL_PLAINTEXT").bound
            secure = broker.listener("SASL_SSL").bound
            memory_before = broker.request_memory.used
            jobs = [(wrong_password, plain), (request_before_authentication, plain), (bare_token_garbage, plain),
                    (not_tls, secure), (half_handshake, secure)] * ROUNDS
            loop = asyncio.get_running_loop()
            with ThreadPoolExecutor(max_workers=16) as pool:
                attacks = [loop.run_in_executor(pool, job, address) for job, address in jobs]
                honest = loop.run_in_executor(pool, honest_metadata, secure, pki.ca)
                assert await asyncio.wait_for(honest, DEADLINE_S) == 1
                await asyncio.wait_for(asyncio.gather(*attacks), DEADLINE_S * 2)
            deadline = time.monotonic() + DEADLINE_S
            while broker.connection_count and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert broker.connection_count == 0, [c.info.peer for c in broker.connections]
            assert broker.request_memory.used == memory_before
        finally:
            await broker.stop()

    asyncio.run(main())
