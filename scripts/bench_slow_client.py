#!/usr/bin/env python3
"""Slow-client isolation: does one client's 16 MiB zstd batches slow everyone else down?

    python scripts/bench_slow_client.py [--runs 3] [--samples 1000] [--storage memory|file]

Starts `moldau serve` itself (the `BrokerProc` of bench_broker.py, with message.max.bytes raised) and
measures the p50/p99 latency of a small confluent-kafka producer (acks=1, one 100-byte record at a
time, each delivery awaited) twice per run: unloaded, then while another connection sends Produce
requests carrying one 16 MiB zstd-compressed batch (16 records of 1 MiB) back to back, over raw
protocol. Two payloads: highly compressible (a few KiB on the wire, 16 MiB to decompress) and random
(16 MiB on the wire too). The loader's topic keeps its last 256 MiB (retention.bytes, checked every
second), so memory stays bounded. Prints the median of the runs and the loaded/unloaded ratio; the
target is a p99 ratio within 2x (the broker must not validate a large batch on its event loop). The
loader, the broker and the measured producer share the machine's cores: on a small machine the figures
measure that contention too, so the header line says how many cores there were, and each run is followed
by a reference measurement: the same loader frames, at the rate the broker took them, sent to a sink
process that only reads each frame into a reused buffer and answers it. The sink's loaded p99 is what the
machine itself costs the small producer at that traffic; `--no-reference` skips it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import statistics
import struct
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_broker import MIB, BrokerProc

from protocol import codec, messages
from protocol.records import Compression, Record, build_batch
from tests.compat.conftest import KafkaSocket
from tests.compat.test_durability import create_topic

BATCH_BYTES = 16 * MIB
RECORDS_PER_BATCH = 16
MAX_MESSAGE_BYTES = 32 * MIB  # room for a random (incompressible) 16 MiB batch and its framing
SMALL_RECORD = b"s" * 100
# The loader's topic keeps about this much (16 MiB batches add up fast, in memory or on disk).
BIG_TOPIC_RETENTION_BYTES = 256 * MIB
RETENTION_CHECK_MS = 1000
PRODUCE = 0
PRODUCE_VERSION = 9


def big_batch(kind: str) -> bytes:
    """One zstd batch of RECORDS_PER_BATCH records totalling BATCH_BYTES, compressible or random."""
    size = BATCH_BYTES // RECORDS_PER_BATCH
    now = int(time.time() * 1000)
    if kind == "compressible":
        values = [bytes([65 + i % 26]) * size for i in range(RECORDS_PER_BATCH)]
    else:
        import random

        rng = random.Random(16)
        values = [rng.randbytes(size) for _ in range(RECORDS_PER_BATCH)]
    return bytes(build_batch([Record(i, now, None, v) for i, v in enumerate(values)], compression=Compression.ZSTD))


class Loader:
    """A separate process sending Produce requests with one big batch each (acks=1), back to back, until
    stopped. A process, not a thread: the loader's own Python work (building 16 MiB requests) must not
    hold the interpreter lock of the process whose latency is measured."""

    def __init__(self, host: str, port: int, topic: str, kind: str, rate: float | None = None) -> None:
        """`rate`: batches per second to pace at; None sends back to back."""
        context = multiprocessing.get_context("spawn")
        self._sent = context.Value("q", 0)
        self._failed = context.Value("q", 0)
        self._stop = context.Event()
        self._process = context.Process(target=_load, args=(host, port, topic, kind, rate, self._sent,
                                                            self._failed, self._stop), daemon=True)

    @property
    def sent(self) -> int:
        return int(self._sent.value)

    def __enter__(self) -> Self:
        self._process.start()
        deadline = time.monotonic() + 60
        while self.sent == 0 and not self._failed.value and time.monotonic() < deadline:
            time.sleep(0.01)  # measure only once the big batches are flowing
        if self._failed.value or self.sent == 0:
            self.__exit__()
            raise RuntimeError(f"the loader's first 16 MiB batch was not accepted (error code "
                               f"{self._failed.value or 'none: timeout'})")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._process.join(120)
        if self._process.is_alive():
            self._process.kill()


def _load(host: str, port: int, topic: str, kind: str, rate: float | None, sent: Any, failed: Any,
          stop: Any) -> None:
    """The loader process's loop: one request encoded once, sent again and again on one connection."""
    produce = messages.ProduceRequest
    request = produce(acks=1, timeout_ms=30000, topic_data=[produce.TopicProduceData(
        name=topic, partition_data=[produce.PartitionProduceData(index=0, records=big_batch(kind))])])
    encoded = codec.encode_request(PRODUCE, PRODUCE_VERSION, 1, "slow-client-loader", request)
    frame = encoded if isinstance(encoded, bytes) else b"".join(bytes(part) for part in encoded)
    sock = KafkaSocket(host, port, timeout=120)
    next_send = time.monotonic()
    try:
        while not stop.is_set():
            if rate:
                next_send += 1 / rate
                stop.wait(max(0.0, next_send - time.monotonic()))  # pacing, not synchronisation
            sock.sock.sendall(frame)
            response = sock.read_response(PRODUCE, PRODUCE_VERSION, 1)
            code = response.responses[0].partition_responses[0].error_code
            if code:
                failed.value = code
                return
            with sent.get_lock():
                sent.value += 1
    finally:
        sock.close()


class Sink:
    """A process that takes Produce requests on one connection, reads each frame into a reused buffer and
    answers it with a fixed success: the least a receiver can do with the loader's bytes."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._ports = context.Queue()
        self._process = context.Process(target=_sink, args=(self._ports,), daemon=True)

    def __enter__(self) -> int:
        self._process.start()
        return int(self._ports.get(timeout=60))

    def __exit__(self, *exc: object) -> None:
        self._process.kill()
        self._process.join(60)


def _sink(ports: Any) -> None:
    produce = messages.ProduceResponse
    answer = produce(responses=[produce.TopicProduceResponse(name="sink", partition_responses=[
        produce.PartitionProduceResponse(index=0, error_code=0, base_offset=0)])])
    with socket.create_server(("127.0.0.1", 0)) as server:
        ports.put(server.getsockname()[1])
        conn, _ = server.accept()
    buffer = memoryview(bytearray(MAX_MESSAGE_BYTES + MIB))
    with conn:
        while True:
            if conn.recv_into(buffer[:4], 4, socket.MSG_WAITALL) < 4:
                return
            (size,) = struct.unpack_from(">i", buffer)
            if conn.recv_into(buffer[:size], size, socket.MSG_WAITALL) < size:
                return
            (correlation_id,) = struct.unpack_from(">i", buffer, 4)  # after api_key and api_version
            conn.sendall(b"".join(bytes(part) for part in codec.encode_response(
                PRODUCE, PRODUCE_VERSION, correlation_id, answer)))


def small_latencies(bootstrap: str, topic: str, samples: int) -> list[float]:
    """Seconds from produce() to the delivery callback, one 100-byte acks=1 record at a time."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 0, "enable.idempotence": False})
    producer.list_topics(topic, timeout=10)
    latencies: list[float] = []
    done: list[float] = []

    def delivered(err: object, _msg: object) -> None:
        if err is None:
            done.append(time.perf_counter())

    for _ in range(samples):
        done.clear()
        start = time.perf_counter()
        producer.produce(topic, SMALL_RECORD, partition=0, on_delivery=delivered)
        producer.flush(30)
        if not done:
            raise RuntimeError("a small record was not acknowledged within 30 s")
        latencies.append(done[0] - start)
    return latencies


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(int(len(ordered) * q) - 1, 0))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=1000, help="small records per measurement")
    parser.add_argument("--storage", choices=("memory", "file"), default="memory")
    parser.add_argument("--payload", choices=("compressible", "random", "both"), default="both")
    parser.add_argument("--no-reference", action="store_true", help="skip the sink reference measurement")
    args = parser.parse_args()
    broker = BrokerProc(args.storage, ["--set", f"message.max.bytes={MAX_MESSAGE_BYTES}",
                                       "--set", f"log.retention.check.interval.ms={RETENTION_CHECK_MS}"])
    try:
        small_topic = f"slow-client-small-{uuid.uuid4().hex[:8]}"
        big_topic = f"slow-client-big-{uuid.uuid4().hex[:8]}"
        create_topic(broker.bootstrap, small_topic, partitions=1)
        create_topic(broker.bootstrap, big_topic, partitions=1, config={
            "max.message.bytes": str(MAX_MESSAGE_BYTES), "retention.bytes": str(BIG_TOPIC_RETENTION_BYTES)})
        kinds = ("compressible", "random") if args.payload == "both" else (args.payload,)
        print(f"small producer: {args.samples} x 100 B acks=1, one at a time; loader: Produce of one "
              f"{BATCH_BYTES // MIB} MiB zstd batch ({RECORDS_PER_BATCH} records) back to back; "
              f"median of {args.runs} runs, storage {args.storage}, {os.cpu_count()} cores")
        for kind in kinds:
            wire_bytes = len(big_batch(kind))
            rows: dict[str, list[float]] = {"p50 unloaded": [], "p99 unloaded": [], "p50 loaded": [], "p99 loaded": []}
            if not args.no_reference:
                rows.update({"p50 sink": [], "p99 sink": []})
            batches, loaded_s = 0, 0.0
            for _ in range(args.runs):
                unloaded = small_latencies(broker.bootstrap, small_topic, args.samples)
                with Loader(broker.host, broker.port, big_topic, kind) as loader:
                    started, before = time.perf_counter(), loader.sent
                    loaded = small_latencies(broker.bootstrap, small_topic, args.samples)
                    elapsed = time.perf_counter() - started
                    run_batches = loader.sent - before
                loaded_s += elapsed
                batches += run_batches
                rows["p50 unloaded"].append(p(unloaded, 0.5))
                rows["p99 unloaded"].append(p(unloaded, 0.99))
                rows["p50 loaded"].append(p(loaded, 0.5))
                rows["p99 loaded"].append(p(loaded, 0.99))
                if not args.no_reference:
                    with Sink() as sink_port, Loader("127.0.0.1", sink_port, big_topic, kind,
                                                     rate=max(run_batches, 1) / elapsed):
                        reference = small_latencies(broker.bootstrap, small_topic, args.samples)
                    rows["p50 sink"].append(p(reference, 0.5))
                    rows["p99 sink"].append(p(reference, 0.99))
            med = {k: statistics.median(v) * 1000 for k, v in rows.items()}
            print(f"\n{kind} payload ({wire_bytes / 1024:.0f} KiB on the wire per batch; {batches} batches "
                  f"accepted in {loaded_s:.1f}s of loaded measurement, {batches / loaded_s:.1f}/s)")
            for k, v in med.items():
                print(f"  {k:<14} {v:9.2f} ms")
            ratio50 = med["p50 loaded"] / med["p50 unloaded"]
            ratio99 = med["p99 loaded"] / med["p99 unloaded"]
            print(f"  ratio loaded/unloaded: p50 {ratio50:.1f}x, p99 {ratio99:.1f}x "
                  f"({'within' if ratio99 <= 2 else 'ABOVE'} the 2x target)")
            per_run = [loaded / unloaded for loaded, unloaded in zip(rows["p99 loaded"], rows["p99 unloaded"])]
            print(f"  p99 ratio of each run: {', '.join(f'{r:.1f}x' for r in per_run)}")
            if not args.no_reference:
                print(f"  same traffic into the sink: p99 {med['p99 sink'] / med['p99 unloaded']:.1f}x unloaded; "
                      f"the broker's loaded p99 is {med['p99 loaded'] / med['p99 sink']:.1f}x the sink's")
                versus = [loaded / sink for loaded, sink in zip(rows["p99 loaded"], rows["p99 sink"])]
                print(f"  broker/sink p99 of each run: {', '.join(f'{r:.1f}x' for r in versus)}")
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
