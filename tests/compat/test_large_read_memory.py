"""A file broker gives back the memory of large fetches once they are answered.

Found by the network fuzzer (its RSS check, on the file engine): fetches of tens of MiB are read on the
engine's reader threads, and glibc's malloc, whose mmap threshold rises to the largest buffer freed,
then serves such buffers from per-thread arenas that keep the memory. `moldau serve` fixes the
threshold (broker/cli.py), so a broker that served four clients' large fetches stays near its idle size.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from pathlib import Path

from protocol import messages as m
from protocol.records import Record, build_batch
from tests.compat.conftest import BrokerProcess, KafkaSocket, finish

PRODUCE, FETCH, CREATE_TOPICS = 0, 1, 19
BATCHES = 60  # of about 1 MiB each
FETCHERS = 4
FETCHES_EACH = 40
MAX_BYTES = (1 << 20, 8 << 20, 30 << 20, 50 << 20)
GROWTH_BOUND_MIB = 100  # glibc's default kept about 230 MiB here


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line")


def _fetch(broker: BrokerProcess, topic: str, seed: int, errors: list[str]) -> None:
    fetch = m.FetchRequest
    rng = random.Random(seed)
    sock = KafkaSocket(broker.host, broker.port, timeout=60)
    try:
        for _ in range(FETCHES_EACH):
            size = rng.choice(MAX_BYTES)
            answer = sock.request(FETCH, 11, 1, fetch(
                replica_id=-1, max_wait_ms=0, min_bytes=1, max_bytes=size, isolation_level=0, session_id=0,
                session_epoch=-1, forgotten_topics_data=[], rack_id="", topics=[fetch.FetchTopic(
                    topic=topic, partitions=[fetch.FetchPartition(
                        partition=0, fetch_offset=rng.randrange(BATCHES * 15), partition_max_bytes=size,
                        log_start_offset=-1)])]))
            code = answer.responses[0].partitions[0].error_code
            if code:
                errors.append(f"fetch error {code}")
    finally:
        sock.close()


def test_large_fetches_leave_the_file_broker_near_its_idle_size(tmp_path: Path) -> None:
    broker = BrokerProcess(["--data-dir", str(tmp_path / "data")], tmp_path, memory=False)
    try:
        sock = KafkaSocket(broker.host, broker.port, timeout=60)
        topic = f"large-reads-{uuid.uuid4().hex[:8]}"
        create = m.CreateTopicsRequest
        created = sock.request(CREATE_TOPICS, 7, 1, create(timeout_ms=30000, topics=[create.CreatableTopic(
            name=topic, num_partitions=1, replication_factor=1)]))
        assert created.topics[0].error_code == 0
        batch = bytes(build_batch([Record(i, int(time.time() * 1000), None, os.urandom(1 << 16)) for i in range(15)]))
        produce = m.ProduceRequest
        request = produce(acks=1, timeout_ms=30000, topic_data=[produce.TopicProduceData(
            name=topic, partition_data=[produce.PartitionProduceData(index=0, records=batch)])])
        for corr in range(BATCHES):
            assert sock.request(PRODUCE, 9, corr, request).responses[0].partition_responses[0].error_code == 0
        idle = rss_mib(broker.proc.pid)
        errors: list[str] = []
        threads = [threading.Thread(target=_fetch, args=(broker, topic, seed, errors)) for seed in range(FETCHERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors and not any(t.is_alive() for t in threads), errors[:3]
        grown = rss_mib(broker.proc.pid) - idle
        assert grown < GROWTH_BOUND_MIB, f"RSS grew by {grown:.0f} MiB after the fetches were answered"
    finally:
        finish(broker)
