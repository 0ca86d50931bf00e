#!/usr/bin/env python3
"""What security costs in Moldau: SASL_SSL (SCRAM-SHA-512) against PLAINTEXT, in one run, on one broker.

    python scripts/bench_security.py [--runs 5] [--records 200000] [--connections 200]

One ``moldau serve --memory`` process with three listeners (PLAINTEXT, SASL_PLAINTEXT, SASL_SSL), one
SCRAM-SHA-512 user, and a CA and server certificate made for the run with ``cryptography``. Prints the
median of ``--runs`` runs of:
- produce throughput of 1 KiB records with confluent-kafka (acks=all, linger.ms=5, batch.size 1 MiB, no
  compression), each run to its own topic, from the first produce() to the end of flush();
- consume throughput of those records with confluent-kafka, assigned from offset 0 (no group
  membership, no commits), from assign() until all ``--records`` are read;
  both with their connections set up before the clock starts (a warm-up record through a second topic),
  PLAINTEXT and SASL_SSL runs alternating so drift affects both; the ratio SASL_SSL / PLAINTEXT
  (issue 15's target: at least 70 %);
- connection set-up, median and p90 of ``--connections`` connections per listener, with a raw
  standard-library client driving the project's codec: from opening the TCP connection to the answer
  of one Metadata request on an authenticated connection (TCP connect, TLS handshake, ApiVersions v3,
  SaslHandshake v1, two SaslAuthenticate v2 rounds of RFC 5802 SCRAM-SHA-512, Metadata v12), over
  SASL_SSL and SASL_PLAINTEXT, with a PLAINTEXT connection (ApiVersions and Metadata only) as the
  reference. Each phase is reported apart, and the client's own PBKDF2 (the salted password, 4096
  iterations) is measured inside the exchange and on its own, so the broker's share is visible.
"""

from __future__ import annotations

import argparse
import base64
import collections
import hashlib
import hmac
import json
import os
import queue
import secrets
import signal
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protocol import codec, messages

MIB = 1024 * 1024
RECORD_SIZE = 1024
DEADLINE_S = 30.0
USER = "bench"
PASSWORD = "bench-secret"
MECHANISM = "SCRAM-SHA-512"
PROTOCOLS = ("PLAINTEXT", "SASL_SSL")


# ---------------------------------------------------------------- the broker

class SecureBroker:
    """``moldau serve --memory`` with PLAINTEXT, SASL_PLAINTEXT and SASL_SSL listeners on free ports."""

    def __init__(self, server_pem: Path) -> None:
        listeners = "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0"
        # --log-level info, not warning: the "ready" line (with the bound ports) is logged at info. Nothing
        # is logged per connection or per request at info; each run adds one topic.created line.
        self.args = [sys.executable, "-m", "broker", "serve", "--memory", "--log-level", "info",
                     "--log-format", "json", "--set", f"listeners={listeners}",
                     "--set", f"ssl.keystore.location={server_pem}",
                     "--set", "message.max.bytes=10485760",
                     "--add-scram", f"{MECHANISM}=[name={USER},password={PASSWORD}]"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MOLDAU_")}
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     env=env, cwd=ROOT)
        self.tail: collections.deque[str] = collections.deque(maxlen=20)
        self._lines: queue.Queue[str | None] = queue.Queue()
        # Drains the log for the broker's whole life, so it never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()
        try:
            self.listeners = self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.tail.append(line.rstrip())
            self._lines.put(line)
        self._lines.put(None)

    def _wait_ready(self) -> dict[str, tuple[str, int]]:
        deadline = time.monotonic() + DEADLINE_S
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise RuntimeError("the broker exited before it was ready:\n" + "\n".join(self.tail))
            record = json.loads(line) if line.startswith("{") else {}
            if record.get("event") == "ready":
                found = {}
                for entry in record["listeners"]:
                    name, _, address = entry.partition("://")
                    host, _, port = address.rpartition(":")
                    found[name] = (host.strip("[]"), int(port))
                return found
        raise RuntimeError(f"the broker logged no ready line within {DEADLINE_S:.0f} s:\n" + "\n".join(self.tail))

    def bootstrap(self, name: str) -> str:
        host, port = self.listeners[name]
        return f"{host}:{port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: the broker's own clean shutdown
            try:
                self.proc.wait(DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(DEADLINE_S)


def make_certificates(directory: Path) -> Any:
    from tests.compat.certs import make_pki

    return make_pki(directory)


# ---------------------------------------------------------------- throughput (confluent-kafka)

def client_config(broker: SecureBroker, protocol: str, ca: Path) -> dict[str, Any]:
    config: dict[str, Any] = {"bootstrap.servers": broker.bootstrap(protocol), "security.protocol": protocol}
    if protocol == "SASL_SSL":
        config.update({"sasl.mechanism": MECHANISM, "sasl.username": USER, "sasl.password": PASSWORD,
                       "ssl.ca.location": str(ca)})
    return config


def produce_run(broker: SecureBroker, protocol: str, ca: Path, count: int) -> tuple[str, float, str]:
    """Produce ``count`` 1 KiB records to a new topic: (topic, seconds, warm-up topic)."""
    from confluent_kafka import Producer

    topic = f"bench-sec-{protocol.lower()}-{uuid.uuid4().hex[:8]}"
    warm = f"{topic}-warm"
    producer = Producer({**client_config(broker, protocol, ca), "acks": "all", "linger.ms": 5,
                         "batch.size": MIB, "compression.type": "none", "enable.idempotence": False,
                         "message.max.bytes": 10 * MIB, "queue.buffering.max.messages": 2_000_000,
                         "queue.buffering.max.kbytes": 2_097_151})
    producer.list_topics(topic, timeout=DEADLINE_S)  # creates the topic
    # One record through the leader's connection, so the clock measures records, not the set-up.
    producer.produce(warm, b"warm-up")
    if producer.flush(DEADLINE_S):
        raise RuntimeError(f"{protocol}: the warm-up record was not delivered")
    failed = [0]

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failed[0] += 1

    value = b"x" * RECORD_SIZE
    produce = producer.produce
    start = time.perf_counter()
    for _ in range(count):
        while True:
            try:
                produce(topic, value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.005)
    remaining = producer.flush(max(120.0, count / 1000))
    elapsed = time.perf_counter() - start
    if remaining or failed[0]:
        raise RuntimeError(f"{protocol}: {remaining} records not delivered, {failed[0]} failed")
    return topic, elapsed, warm


def consume_run(broker: SecureBroker, protocol: str, ca: Path, topic: str, warm: str, count: int) -> float:
    """Seconds to read ``count`` records of ``topic`` from offset 0 with an assigned consumer."""
    from confluent_kafka import Consumer, TopicPartition

    # confluent-kafka insists on a group.id; the consumer never joins it (assign) nor commits.
    consumer = Consumer({**client_config(broker, protocol, ca), "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "enable.auto.offset.store": False,
                         "fetch.max.bytes": 50 * MIB, "max.partition.fetch.bytes": 10 * MIB,
                         "fetch.wait.max.ms": 100, "queued.max.messages.kbytes": 256 * 1024})
    try:
        # The warm-up record, so the leader's connection is up (and authenticated) before the clock starts.
        consumer.assign([TopicPartition(warm, 0, 0)])
        deadline = time.monotonic() + DEADLINE_S
        while not any(m.error() is None for m in consumer.consume(1, 1.0)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{protocol}: the warm-up record was not read within {DEADLINE_S:.0f} s")
        # The topic's metadata too: without it the new assignment waits up to a second for a refresh.
        consumer.list_topics(topic, timeout=DEADLINE_S)
        got = nbytes = 0
        start = time.perf_counter()
        consumer.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + max(120.0, count / 1000)
        while got < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{protocol}: {got} of {count} records read before the deadline")
            # Never more than are left: consume() waits its whole timeout for a batch it cannot fill.
            for msg in consumer.consume(min(10_000, count - got), 1.0):
                if msg.error() is None:
                    got += 1
                    nbytes += len(msg.value())
        elapsed = time.perf_counter() - start
    finally:
        consumer.close()
    if nbytes != count * RECORD_SIZE:
        raise RuntimeError(f"{protocol}: read {nbytes} bytes, expected {count * RECORD_SIZE}")
    return elapsed


# ---------------------------------------------------------------- connection set-up (raw client)

class RawConnection:
    """A blocking Kafka connection over the standard library, speaking through ``protocol.codec``."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.correlation_id = 0

    def call(self, api_key: int, version: int, body: Any) -> Any:
        self.correlation_id += 1
        parts = codec.encode_request(api_key, version, self.correlation_id, "bench-security", body)
        self.sock.sendall(b"".join(bytes(p) for p in parts))
        (size,) = struct.unpack(">i", self._read(4))
        header, response = codec.decode_response(api_key, version, self._read(size))
        if header.correlation_id != self.correlation_id:
            raise RuntimeError(f"correlation id {header.correlation_id}, expected {self.correlation_id}")
        return response

    def _read(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            buf += chunk
        return bytes(buf)


def _check(response: Any, what: str) -> None:
    if response.error_code:
        raise RuntimeError(f"{what} failed: error {response.error_code} {getattr(response, 'error_message', '')}")


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha512).digest()


def salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)


PHASES = ("tcp connect", "TLS handshake", "ApiVersions v3", "SaslHandshake v1", "SaslAuthenticate #1",
          "client proof (PBKDF2 + HMAC)", "SaslAuthenticate #2", "Metadata v12")


def connect_once(address: tuple[str, int], tls: ssl.SSLContext | None, sasl: bool) -> dict[str, float]:
    """One connection from TCP connect to a Metadata answer: seconds per phase, plus "total" and the
    client's PBKDF2 alone ("pbkdf2")."""
    times: dict[str, float] = {}
    start = mark = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        times[name] = now - mark
        mark = now

    sock = socket.create_connection(address, timeout=DEADLINE_S)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        lap("tcp connect")
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=address[0])  # the handshake happens here
            lap("TLS handshake")
        conn = RawConnection(sock)
        _check(conn.call(18, 3, messages.ApiVersionsRequest(client_software_name="bench-security",
                                                            client_software_version="1")), "ApiVersions")
        lap("ApiVersions v3")
        if sasl:
            _check(conn.call(17, 1, messages.SaslHandshakeRequest(mechanism=MECHANISM)), "SaslHandshake")
            lap("SaslHandshake v1")
            # RFC 5802: client-first, server-first, client-final (with the proof), server-final.
            client_nonce = base64.b64encode(secrets.token_bytes(24)).decode()
            client_first_bare = f"n={USER},r={client_nonce}"
            first = conn.call(36, 2, messages.SaslAuthenticateRequest(
                auth_bytes=f"n,,{client_first_bare}".encode()))
            _check(first, "SaslAuthenticate (client-first)")
            lap("SaslAuthenticate #1")
            server_first = bytes(first.auth_bytes).decode()
            attrs = dict(item.split("=", 1) for item in server_first.split(","))
            nonce, salt, iterations = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
            if not nonce.startswith(client_nonce):
                raise RuntimeError("the server's nonce does not extend the client's")
            t0 = time.perf_counter()
            salted = salted_password(PASSWORD, salt, iterations)
            times["pbkdf2"] = time.perf_counter() - t0
            client_key = _hmac(salted, b"Client Key")
            without_proof = f"c={base64.b64encode(b'n,,').decode()},r={nonce}"
            auth_message = f"{client_first_bare},{server_first},{without_proof}".encode()
            signature = _hmac(hashlib.sha512(client_key).digest(), auth_message)
            proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
            client_final = f"{without_proof},p={base64.b64encode(proof).decode()}".encode()
            lap("client proof (PBKDF2 + HMAC)")
            final = conn.call(36, 2, messages.SaslAuthenticateRequest(auth_bytes=client_final))
            _check(final, "SaslAuthenticate (client-final)")
            lap("SaslAuthenticate #2")
            expected = base64.b64encode(_hmac(_hmac(salted, b"Server Key"), auth_message)).decode()
            if bytes(final.auth_bytes).decode() != f"v={expected}":
                raise RuntimeError("the server's signature does not verify")
        metadata = conn.call(3, 12, messages.MetadataRequest(topics=None))
        if not metadata.brokers:
            raise RuntimeError("Metadata answered without brokers")
        lap("Metadata v12")
        times["total"] = time.perf_counter() - start
        return times
    finally:
        sock.close()


def tls_context(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def connection_setup(broker: SecureBroker, ca: Path, count: int) -> dict[str, list[dict[str, float]]]:
    """``count`` connections per kind, the kinds interleaved (after a few warm-up connections each)."""
    context = tls_context(ca)
    kinds = {"PLAINTEXT": (broker.listeners["PLAINTEXT"], None, False),
             "SASL_PLAINTEXT": (broker.listeners["SASL_PLAINTEXT"], None, True),
             "SASL_SSL": (broker.listeners["SASL_SSL"], context, True)}
    samples: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    for i in range(count + 3):
        for kind, (address, tls, sasl) in kinds.items():
            times = connect_once(address, tls, sasl)
            if i >= 3:
                samples[kind].append(times)
    return samples


def pbkdf2_alone(count: int, iterations: int) -> list[float]:
    salt = secrets.token_bytes(32)
    took = []
    for _ in range(count):
        t0 = time.perf_counter()
        salted_password(PASSWORD, salt, iterations)
        took.append(time.perf_counter() - t0)
    return took


def tls_session(broker: SecureBroker, ca: Path) -> str:
    address = broker.listeners["SASL_SSL"]
    with (socket.create_connection(address, timeout=DEADLINE_S) as raw,
          tls_context(ca).wrap_socket(raw, server_hostname=address[0]) as sock):
        cipher = sock.cipher()
        return f"{sock.version()}, {cipher[0] if cipher else '?'}"


# ---------------------------------------------------------------- figures

def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="throughput runs per protocol (default 5)")
    parser.add_argument("--records", type=int, default=200_000, help="1 KiB records per run (default 200000)")
    parser.add_argument("--connections", type=int, default=200,
                        help="connections per listener for the set-up times (default 200)")
    args = parser.parse_args()
    if min(args.runs, args.records, args.connections) < 1:
        parser.error("--runs, --records and --connections must be positive")

    # A SIGTERM to this script unwinds it like an error does, so the broker is stopped too.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    import confluent_kafka

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, confluent-kafka {confluent_kafka.__version__}"
          f" (librdkafka {confluent_kafka.libversion()[0]}), {ssl.OPENSSL_VERSION}")
    with tempfile.TemporaryDirectory(prefix="moldau-bench-security-") as tmp:
        pki = make_certificates(Path(tmp) / "pki")
        broker = SecureBroker(pki.server_pem)
        try:
            print(f"broker listeners: {', '.join(f'{k}://{broker.bootstrap(k)}' for k in broker.listeners)};"
                  f" TLS: {tls_session(broker, pki.ca)}")
            produce: dict[str, list[float]] = {p: [] for p in PROTOCOLS}
            consume: dict[str, list[float]] = {p: [] for p in PROTOCOLS}
            for run in range(args.runs):
                for protocol in PROTOCOLS:
                    topic, produce_s, warm = produce_run(broker, protocol, pki.ca, args.records)
                    consume_s = consume_run(broker, protocol, pki.ca, topic, warm, args.records)
                    produce[protocol].append(produce_s)
                    consume[protocol].append(consume_s)
                    mb = args.records * RECORD_SIZE / 1e6
                    print(f"  run {run + 1}/{args.runs} {protocol:<10} produce {mb / produce_s:7.1f} MB/s,"
                          f" consume {mb / consume_s:7.1f} MB/s", flush=True)
            samples = connection_setup(broker, pki.ca, args.connections)
            iterations = 4096
            alone = pbkdf2_alone(args.connections, iterations)
        except BaseException:
            if broker.proc.poll() is not None:
                print(f"the broker exited ({broker.proc.returncode}); its last log lines:", file=sys.stderr)
                print("\n".join(broker.tail), file=sys.stderr)
            raise
        finally:
            broker.stop()

    mb = args.records * RECORD_SIZE / 1e6

    def rate(seconds: list[float], per: float) -> float:
        return per / statistics.median(seconds)

    print()
    print(f"Throughput, 1 KiB records, {args.records:,} per run, median of {args.runs} runs")
    print(f"{'':<36} {'PLAINTEXT':>12} {'SASL_SSL':>12} {'SASL_SSL/PLAINTEXT':>20}")
    rows = [("produce acks=all, MB/s", produce, mb), ("produce acks=all, records/s", produce, args.records),
            ("consume from offset 0, MB/s", consume, mb), ("consume from offset 0, records/s", consume,
                                                           args.records)]
    ratios = {}
    for name, seconds, per in rows:
        plain, secure = rate(seconds["PLAINTEXT"], per), rate(seconds["SASL_SSL"], per)
        ratios[name.split(",")[0]] = secure / plain
        print(f"{name:<36} {plain:>12,.1f} {secure:>12,.1f} {secure / plain:>19.0%}")

    print()
    print(f"Connection set-up, TCP connect to a Metadata answer, {args.connections} connections each (ms)")
    print(f"{'':<48} {'median':>8} {'p90':>8}")

    def line(name: str, values: list[float]) -> None:
        print(f"{name:<48} {statistics.median(values) * 1000:>8.2f} {p90(values) * 1000:>8.2f}")

    line("PLAINTEXT (ApiVersions + Metadata; reference)", [s["total"] for s in samples["PLAINTEXT"]])
    for kind in ("SASL_PLAINTEXT", "SASL_SSL"):
        line(f"{kind}, {MECHANISM}", [s["total"] for s in samples[kind]])
        line("  of which the client's PBKDF2", [s["pbkdf2"] for s in samples[kind]])
        line("  without the client's PBKDF2", [s["total"] - s["pbkdf2"] for s in samples[kind]])
    line(f"client PBKDF2-HMAC-SHA512, {iterations} iterations, alone", alone)

    print()
    print("Connection set-up by phase, median ms")
    print(f"{'':<32} {'PLAINTEXT':>10} {'SASL_PLAINTEXT':>15} {'SASL_SSL':>10}")
    for phase in PHASES:
        cells = []
        for kind in ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"):
            values = [s[phase] for s in samples[kind] if phase in s]
            cells.append(f"{statistics.median(values) * 1000:.2f}" if values else "-")
        print(f"{phase:<32} {cells[0]:>10} {cells[1]:>15} {cells[2]:>10}")

    # Each SASL_SSL run follows its PLAINTEXT run at once, so the ratio within a pair is the least
    # disturbed by a machine whose speed drifts between runs (a shared 2-CPU VM swings by 2x).
    paired = {name: statistics.median(p / s for p, s in zip(seconds["PLAINTEXT"], seconds["SASL_SSL"], strict=True))
              for name, seconds in (("produce", produce), ("consume", consume))}
    print()
    print(f"SASL_SSL / PLAINTEXT produce: {ratios['produce acks=all']:.0%}, consume: "
          f"{ratios['consume from offset 0']:.0%} (issue 15's target: at least 70 %)")
    print(f"  median of the per-run-pair ratios: produce {paired['produce']:.0%}, consume {paired['consume']:.0%}")
    scram = statistics.median(s["total"] for s in samples["SASL_SSL"])
    plain = statistics.median(s["total"] for s in samples["PLAINTEXT"])
    print(f"SASL_SSL connection set-up: {scram * 1000:.2f} ms, {scram / plain:.1f}x PLAINTEXT's; the client's"
          f" PBKDF2 is {statistics.median(alone) / scram:.0%} of it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
