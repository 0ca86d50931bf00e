#!/usr/bin/env python3
"""Transactions benchmark: starts `moldau serve` itself and drives it with confluent-kafka.

    python scripts/bench_transactions.py [--runs 3] [--transactions 1000] [--storage file|memory]

Prints the median of several runs of:
- transactions per second, each of 100 records of 100 B over 3 partitions, committed, one producer
  (reference: the same records from an idempotent producer, acks=all, with no transactions, as
  records/s);
- consume throughput of read_committed against read_uncommitted over the same data: half the
  transactions committed and half aborted, so read_committed also filters aborted batches; compared as
  the time each takes to read the whole topic (target: read_committed within 10%).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_broker import BrokerProc

RECORDS_PER_TXN = 100
PARTITIONS = 3
VALUE = b"v" * 100


def create_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the result is in
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)


def transactions_per_second(bootstrap: str, topic: str, count: int, abort_every: int = 0) -> float:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"bench-{uuid.uuid4().hex[:8]}",
                         "linger.ms": 5})
    producer.init_transactions(30)
    start = time.perf_counter()
    for n in range(count):
        producer.begin_transaction()
        for i in range(RECORDS_PER_TXN):
            producer.produce(topic, VALUE, partition=i % PARTITIONS)
        if abort_every and n % abort_every == abort_every - 1:
            producer.flush(30)
            producer.abort_transaction(30)
        else:
            producer.commit_transaction(30)
    return count / (time.perf_counter() - start)


def idempotent_records_per_second(bootstrap: str, topic: str, count: int) -> float:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    start = time.perf_counter()
    for i in range(count):
        producer.produce(topic, VALUE, partition=i % PARTITIONS)
        if i % 10000 == 0:
            producer.poll(0)
    producer.flush(60)
    return count / (time.perf_counter() - start)


def consume_records_per_second(bootstrap: str, topic: str, isolation: str, expected: int) -> float:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False, "isolation.level": isolation,
                         "fetch.wait.max.ms": 100})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    got = 0
    start = time.perf_counter()
    deadline = start + 120
    while got < expected and time.perf_counter() < deadline:
        for msg in consumer.consume(1000, 0.05):
            if msg.error() is None:
                got += 1
    elapsed = time.perf_counter() - start
    consumer.close()
    if got < expected:
        raise RuntimeError(f"{isolation} consumer read {got} of {expected} records")
    return got / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--transactions", type=int, default=1000)
    parser.add_argument("--storage", choices=("file", "memory"), default="file")
    args = parser.parse_args()
    tps, idem, committed_rate, uncommitted_rate = [], [], [], []
    for _ in range(args.runs):
        broker = BrokerProc(args.storage)
        try:
            topic = f"bench-txn-{uuid.uuid4().hex[:8]}"
            create_topic(broker.bootstrap, topic)
            tps.append(transactions_per_second(broker.bootstrap, topic, args.transactions))
            plain = f"bench-idem-{uuid.uuid4().hex[:8]}"
            create_topic(broker.bootstrap, plain)
            idem.append(idempotent_records_per_second(broker.bootstrap, plain, args.transactions * RECORDS_PER_TXN))
            mixed = f"bench-mixed-{uuid.uuid4().hex[:8]}"
            create_topic(broker.bootstrap, mixed)
            transactions_per_second(broker.bootstrap, mixed, args.transactions, abort_every=2)
            total = args.transactions * RECORDS_PER_TXN
            uncommitted_rate.append(consume_records_per_second(broker.bootstrap, mixed, "read_uncommitted", total))
            committed_rate.append(consume_records_per_second(broker.bootstrap, mixed, "read_committed", total // 2))
        finally:
            broker.stop()
    med = statistics.median
    print(f"storage {args.storage}, median of {args.runs} runs, transactions of {RECORDS_PER_TXN} x "
          f"{len(VALUE)} B records over {PARTITIONS} partitions")
    print(f"  committed transactions/s          {med(tps):10.1f}  ({med(tps) * RECORDS_PER_TXN:,.0f} records/s)")
    print(f"  idempotent producer, no txn       {med(idem):10,.0f} records/s (reference)")
    # Both scan the same batches (read_committed drops the aborted half on the client), so compare the
    # time each takes to read the whole topic.
    scan_uncommitted = 1 / med(uncommitted_rate)
    scan_committed = 0.5 / med(committed_rate)
    print(f"  read_uncommitted consume          {med(uncommitted_rate):10,.0f} records/s (all records)")
    print(f"  read_committed consume            {med(committed_rate):10,.0f} records/s (the committed half)")
    print(f"  time to read the topic, read_committed / read_uncommitted: {scan_committed / scan_uncommitted:.2f}x "
          f"(target <= 1.10x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
