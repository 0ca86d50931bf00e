#!/usr/bin/env python3
"""Broker benchmark: starts `moldau serve` itself and drives it with confluent-kafka.

    python scripts/bench_broker.py [--runs 3] [--consume-mb 512] [--storage memory|file]

Prints the median of several runs for each figure, next to a reference measured in the same run:
- produce throughput, 100 B and 1 KiB records, acks=all, ~1 MiB batches (reference: raw loopback
  socket throughput of the same bytes, and the same producer with acks=0);
- consume throughput from the start of a large topic (reference: raw loopback throughput);
- end-to-end latency p50/p99 with fetch.wait.max.ms=500 (a record produced while the consumer waits);
- Metadata requests/s from 200 connections;
- start-up time to the first ApiVersions answer; broker RSS idle and under load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
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

from protocol import codec
from protocol import messages as m

MIB = 1024 * 1024


class BrokerProc:
    def __init__(self, storage: str, extra: list[str] | None = None) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="moldau-bench-")
        args = [sys.executable, "-m", "broker", "serve", "--listen", "127.0.0.1:0", "--log-format", "json"]
        args += ["--memory"] if storage == "memory" else ["--data-dir", self.tmp.name]
        args += ["--set", "message.max.bytes=10485760", *(extra or [])]
        env = dict(os.environ, PYTHONPATH=str(ROOT), XDG_DATA_HOME=self.tmp.name)
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        self.host = "127.0.0.1"
        self.port = self._wait_ready()
        self.bootstrap = f"{self.host}:{self.port}"

    def _wait_ready(self) -> int:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            record = json.loads(line) if line.startswith("{") else {}
            if record.get("event") == "ready":
                # Keep draining the log so the broker never blocks on a full pipe.
                threading.Thread(target=self.proc.stderr.read, daemon=True).start()
                return int(record["port"])
        raise RuntimeError("broker did not log its ready line within 10 s")

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.tmp.cleanup()


# ---------------------------------------------------------------- references

def loopback_throughput(total: int, chunk: int = MIB) -> float:
    """Bytes/s through a plain loopback TCP socket (the physical ceiling for a broker on this host)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    received = [0]

    def sink() -> None:
        conn, _ = server.accept()
        buf = bytearray(MIB)
        while True:
            n = conn.recv_into(buf)
            if not n:
                break
            received[0] += n
        conn.close()

    t = threading.Thread(target=sink)
    t.start()
    client = socket.create_connection(server.getsockname())
    data = bytes(chunk)
    start = time.perf_counter()
    sent = 0
    while sent < total:
        client.sendall(data)
        sent += len(data)
    client.shutdown(socket.SHUT_WR)
    t.join()
    elapsed = time.perf_counter() - start
    client.close()
    server.close()
    return received[0] / elapsed


# ---------------------------------------------------------------- workloads

def produce_throughput(bootstrap: str, size: int, count: int, acks: str) -> float:
    from confluent_kafka import Producer

    topic = f"bench-produce-{uuid.uuid4().hex[:8]}"
    p = Producer({"bootstrap.servers": bootstrap, "acks": acks, "linger.ms": 20, "batch.size": MIB,
                  "queue.buffering.max.messages": 2_000_000, "queue.buffering.max.kbytes": 2_097_151,
                  "message.max.bytes": 10 * MIB, "enable.idempotence": False})
    p.list_topics(topic, timeout=10)
    value = b"x" * size
    start = time.perf_counter()
    for _ in range(count):
        while True:
            try:
                p.produce(topic, value)
                break
            except BufferError:
                p.poll(0.01)
    remaining = p.flush(120)
    elapsed = time.perf_counter() - start
    if remaining:
        raise RuntimeError(f"{remaining} records not delivered")
    return count / elapsed


def fill_topic(bootstrap: str, topic: str, total_bytes: int, size: int = 1024) -> int:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 20, "batch.size": MIB,
                  "queue.buffering.max.kbytes": 2_097_151, "queue.buffering.max.messages": 2_000_000,
                  "enable.idempotence": False})
    count = total_bytes // size
    value = b"y" * size
    for _ in range(count):
        while True:
            try:
                p.produce(topic, value)
                break
            except BufferError:
                p.poll(0.01)
    p.flush(300)
    return count


def raw_fetch_throughput(port: int, topic: str, end_offset: int) -> float:
    """Bytes/s a protocol-level consumer gets: Fetch v12 requests on one socket, records not decoded.
    Separates the broker's serving rate from a client library's per-record work."""
    from protocol.records import iter_batches

    sock = socket.create_connection(("127.0.0.1", port))
    buf = bytearray(64 * MIB)
    view = memoryview(buf)

    def read_exact(n: int) -> memoryview:
        got = 0
        while got < n:
            k = sock.recv_into(view[got:n])
            if not k:
                raise ConnectionError("broker closed the connection")
            got += k
        return view[:n]

    fr = m.FetchRequest
    offset = total = corr = 0
    start = time.perf_counter()
    while offset < end_offset:
        corr += 1
        req = fr(replica_id=-1, max_wait_ms=100, min_bytes=1, max_bytes=50 * MIB, isolation_level=0, topics=[
            fr.FetchTopic(topic=topic, partitions=[fr.FetchPartition(partition=0, fetch_offset=offset,
                                                                     partition_max_bytes=50 * MIB)])])
        sock.sendall(b"".join(bytes(x) for x in codec.encode_request(1, 12, corr, "bench", req)))
        (size,) = struct.unpack(">i", read_exact(4))
        _, resp = codec.decode_response(1, 12, read_exact(size))
        for _, batch in iter_batches(resp.responses[0].partitions[0].records):
            offset = batch.last_offset + 1
        total += size
    sock.close()
    return total / (time.perf_counter() - start)


def consume_throughput(bootstrap: str, topic: str, count: int) -> tuple[float, float]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False, "fetch.max.bytes": 50 * MIB,
                  "max.partition.fetch.bytes": 10 * MIB, "fetch.wait.max.ms": 100})
    c.assign([TopicPartition(topic, 0, 0)])
    got = nbytes = 0
    start = time.perf_counter()
    deadline = start + 300
    while got < count and time.perf_counter() < deadline:
        for msg in c.consume(10000, 1.0):
            if msg.error() is None:
                got += 1
                nbytes += len(msg.value())
    elapsed = time.perf_counter() - start
    c.close()
    return got / elapsed, nbytes / elapsed


def e2e_latency(bootstrap: str, samples: int) -> tuple[float, float]:
    from confluent_kafka import Consumer, Producer, TopicPartition

    topic = f"bench-e2e-{uuid.uuid4().hex[:8]}"
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0, "enable.idempotence": False})
    p.list_topics(topic, timeout=10)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 500, "fetch.min.bytes": 1})
    c.assign([TopicPartition(topic, 0, 0)])
    c.consume(1, 1.0)
    latencies = []
    for i in range(samples):
        sent = time.perf_counter()
        p.produce(topic, str(sent).encode())
        p.poll(0)
        deadline = sent + 5
        while time.perf_counter() < deadline:
            msgs = c.consume(1, 1.0)
            if msgs and msgs[0].error() is None:
                latencies.append((time.perf_counter() - sent) * 1000)
                break
        time.sleep(0.01)
    p.flush(10)
    c.close()
    latencies.sort()
    return statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]


async def metadata_rate(port: int, connections: int, per_connection: int) -> float:
    frame = b"".join(bytes(x) for x in codec.encode_request(3, 12, 1, "bench", m.MetadataRequest(topics=[])))

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(per_connection):
            writer.write(frame)
            (size,) = struct.unpack(">i", await reader.readexactly(4))
            await reader.readexactly(size)
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(connections)))
    return connections * per_connection / (time.perf_counter() - start)


def startup_time(storage: str) -> float:
    """Seconds from process start to the first ApiVersions answer."""
    b = BrokerProc(storage)
    frame = b"".join(bytes(x) for x in codec.encode_request(18, 0, 1, "bench", m.ApiVersionsRequest()))
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", b.port), timeout=5)
            break
        except OSError:
            time.sleep(0.001)
    s.sendall(frame)
    s.recv(4)
    elapsed = time.perf_counter() - b.started
    s.close()
    b.stop()
    return elapsed


def med(values: list[float]) -> float:
    return statistics.median(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--consume-mb", type=int, default=512)
    parser.add_argument("--produce-records", type=int, default=300_000)
    parser.add_argument("--storage", choices=["memory", "file"], default="memory")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args()
    runs = args.runs
    results: dict[str, Any] = {}

    def show(name: str, value: float, unit: str, reference: str = "") -> None:
        results[name] = value
        print(f"{name:<44} {value:>14,.1f} {unit:<10} {reference}")

    ref_bytes = med([loopback_throughput(512 * MIB) for _ in range(runs)])
    show("raw loopback TCP (reference)", ref_bytes / 1e6, "MB/s")
    show("start-up to first ApiVersions", med([startup_time(args.storage) for _ in range(runs)]) * 1000, "ms")

    broker = BrokerProc(args.storage)
    try:
        time.sleep(0.5)
        show("broker RSS idle", broker.rss_mb(), "MB")
        for size in (100, 1024):
            n = args.produce_records
            acks_all = med([produce_throughput(broker.bootstrap, size, n, "all") for _ in range(runs)])
            acks_0 = med([produce_throughput(broker.bootstrap, size, n, "0") for _ in range(runs)])
            show(f"produce {size} B records, acks=all", acks_all, "records/s",
                 f"({acks_all * size / 1e6:,.0f} MB/s; acks=0 same client: {acks_0:,.0f} records/s; "
                 f"loopback {ref_bytes / size:,.0f} records/s)")
        show("broker RSS after produce runs", broker.rss_mb(), "MB")

        topic = f"bench-consume-{uuid.uuid4().hex[:8]}"
        count = fill_topic(broker.bootstrap, topic, args.consume_mb * MIB)
        show("broker RSS holding the consume topic", broker.rss_mb(), "MB")
        rates = [consume_throughput(broker.bootstrap, topic, count) for _ in range(runs)]
        show("consume 1 KiB records from the start", med([r[1] for r in rates]) / 1e6, "MB/s",
             f"({med([r[0] for r in rates]):,.0f} records/s with confluent-kafka; loopback "
             f"{ref_bytes / 1e6:,.0f} MB/s)")
        raw = med([raw_fetch_throughput(broker.port, topic, count) for _ in range(runs)])
        show("consume from the start, protocol-level Fetch loop", raw / 1e6, "MB/s",
             "(the broker's serving rate without a client library's per-record work)")

        p50s, p99s = zip(*[e2e_latency(broker.bootstrap, 200) for _ in range(runs)])
        show("end-to-end latency p50 (fetch.wait.max.ms=500)", med(list(p50s)), "ms")
        show("end-to-end latency p99 (fetch.wait.max.ms=500)", med(list(p99s)), "ms")

        rate = med([asyncio.run(metadata_rate(broker.port, 200, 20)) for _ in range(runs)])
        show("Metadata requests/s from 200 connections", rate, "req/s")
        show("broker RSS at the end", broker.rss_mb(), "MB")
    finally:
        broker.stop()
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
