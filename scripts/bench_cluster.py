#!/usr/bin/env python3
"""Cluster benchmark: Moldau on PostgreSQL with one and with three brokers, next to the file engine.

    python scripts/bench_cluster.py [--runs 3] [--mib 64]

Starts a throwaway PostgreSQL server (``tests/postgres_server.py``, with its crash safety on: fsync as
in production) and the brokers itself, and drives them with confluent-kafka. For each set-up it prints
the median of several runs of:
- produce throughput of 1 KiB records, acks=all, to a 6-partition topic (leaders spread over the
  brokers), with a producer bootstrapped at every broker;
- consume throughput of the same records from the start (assign, no group);
- end-to-end latency p50/p99 of single records produced through the first broker and consumed through
  the last (with one broker: the same one).
The reference is the file engine on one broker, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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

from tests.postgres_server import PostgresServer

KIB = 1024
MIB = 1024 * KIB
PARTITIONS = 6
LATENCY_SAMPLES = 300


class Broker:
    """One ``moldau serve`` process."""

    def __init__(self, storage_args: list[str], tmp: str) -> None:
        args = [sys.executable, "-m", "broker", "serve", "--listen", "127.0.0.1:0", "--log-format", "json",
                *storage_args, "--set", "message.max.bytes=10485760"]
        env = dict(os.environ, PYTHONPATH=str(ROOT), XDG_DATA_HOME=tmp)
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            record = json.loads(line) if line.startswith("{") else {}
            if record.get("event") == "ready":
                threading.Thread(target=self.proc.stderr.read, daemon=True).start()
                self.bootstrap = f"127.0.0.1:{record['port']}"
                return
        raise RuntimeError(f"broker {args} did not log its ready line")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def create_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
        future.result(30)


def produce(bootstrap: str, topic: str, count: int) -> float:
    """MiB/s of 1 KiB records, acks=all."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 10, "batch.size": MIB,
                         "queue.buffering.max.messages": 2_000_000, "queue.buffering.max.kbytes": 2_097_151})
    value = b"x" * KIB
    start = time.perf_counter()
    for i in range(count):
        while True:
            try:
                producer.produce(topic, value, partition=i % PARTITIONS)
                break
            except BufferError:
                producer.poll(0.01)
    if producer.flush(300):
        raise RuntimeError("records left undelivered")
    return count * KIB / MIB / (time.perf_counter() - start)


def consume(bootstrap: str, topic: str, count: int) -> float:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False, "fetch.max.bytes": 50 * MIB})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    got = 0
    start = time.perf_counter()
    deadline = start + 300
    while got < count and time.perf_counter() < deadline:
        for msg in consumer.consume(10_000, 1.0):
            if not msg.error():
                got += 1
    elapsed = time.perf_counter() - start
    consumer.close()
    if got < count:
        raise RuntimeError(f"consumed {got} of {count}")
    return count * KIB / MIB / elapsed


def latency(produce_at: str, consume_at: str, topic: str) -> tuple[float, float]:
    """p50/p99 ms from produce() to the consumer's poll() returning the record."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    consumer = Consumer({"bootstrap.servers": consume_at, "group.id": f"lat-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 500})
    consumer.assign([TopicPartition(topic, 0, 0)])
    consumer.poll(1.0)
    producer = Producer({"bootstrap.servers": produce_at, "acks": "all", "linger.ms": 0})
    samples = []
    for _ in range(LATENCY_SAMPLES):
        sent = time.perf_counter()
        producer.produce(topic, str(sent).encode(), partition=0)
        producer.poll(0)
        while True:
            msg = consumer.poll(2.0)
            if msg is not None and not msg.error() and msg.value() == str(sent).encode():
                samples.append((time.perf_counter() - sent) * 1000)
                break
    producer.flush(10)
    consumer.close()
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def wait_formed(brokers: list[Broker]) -> None:
    """Until the first broker lists every broker (they learn of each other within a heartbeat)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": brokers[0].bootstrap})
    deadline = time.monotonic() + 30
    while len(admin.list_topics(timeout=10).brokers) < len(brokers):
        if time.monotonic() > deadline:
            raise RuntimeError("the brokers did not form a cluster within 30 s")
        time.sleep(0.1)


def run_setup(name: str, brokers: list[Broker], count: int) -> dict[str, Any]:
    bootstrap = ",".join(b.bootstrap for b in brokers)
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    create_topic(brokers[0].bootstrap, topic)
    produced = produce(bootstrap, topic, count)
    consumed = consume(bootstrap, topic, count)
    lat_topic = f"lat-{uuid.uuid4().hex[:8]}"
    create_topic(brokers[0].bootstrap, lat_topic)
    p50, p99 = latency(brokers[0].bootstrap, brokers[-1].bootstrap, lat_topic)
    return {"setup": name, "produce_mib_s": produced, "consume_mib_s": consumed, "e2e_p50_ms": p50,
            "e2e_p99_ms": p99}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mib", type=int, default=64, help="MiB of 1 KiB records produced per run")
    args = parser.parse_args()
    count = args.mib * MIB // KIB
    server = PostgresServer(durable=True)
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        for run in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="moldau-bench-") as tmp:
                setups: list[tuple[str, list[list[str]]]] = [
                    ("file engine, 1 broker", [["--data-dir", os.path.join(tmp, "data")]]),
                ]
                for size in (1, 3):
                    url = server.create_database(f"bench_{run}_{size}")
                    setups.append((f"postgresql, {size} broker{'s' if size > 1 else ''}",
                                   [["--storage", url]] * size))
                for name, storage_args in setups:
                    brokers = [Broker(a, tmp) for a in storage_args]
                    try:
                        wait_formed(brokers)
                        results.setdefault(name, []).append(run_setup(name, brokers, count))
                    finally:
                        for b in brokers:
                            b.stop()
    finally:
        server.close()
    print(f"{args.mib} MiB of 1 KiB records per run, median of {args.runs} runs")
    print(f"{'setup':<26} {'produce MiB/s':>14} {'consume MiB/s':>14} {'e2e p50 ms':>11} {'e2e p99 ms':>11}")
    for name, rows in results.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "setup"}
        print(f"{name:<26} {med['produce_mib_s']:>14.1f} {med['consume_mib_s']:>14.1f} "
              f"{med['e2e_p50_ms']:>11.2f} {med['e2e_p99_ms']:>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
