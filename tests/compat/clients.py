"""Shared helpers for the cross-client compatibility tests: unique names, one producer and one bounded
reader per client (confluent-kafka, kafka-python, aiokafka, kcat, kafkajs), and a raw look at the
stored batches.

Records are compared in one client-neutral shape: `Msg` is what a test asks a producer to send, `Rec`
is what a reader got back. Readers never join a consumer group: they assign partitions, seek
(earliest, latest, an offset, or a timestamp through ListOffsets) and read until they have the number
of records asked for, failing after a bound with what they did get.

kafkajs runs as node scripts in ``tests/compat/node`` (see ``node/lib.js``); kcat as a subprocess.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pytest

from protocol import messages
from protocol.records.batch import iter_batches

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}

READ_TIMEOUT_S = 15.0  # every read loop ends within this bound
SUBPROCESS_SLACK_S = 20.0  # on top of the read bound, for process start and connection set-up
NODE_DIR = Path(__file__).resolve().parent / "node"
NODE_INSTALL_HINT = ("run the test command from the README (./scripts/test.sh), which installs node "
                     "and runs `npm ci` in tests/compat/node")


@dataclass(frozen=True)
class At:
    """Seek to the first offset whose timestamp is at or after ``timestamp`` (ListOffsets by time)."""

    timestamp: int


Start = str | int | At  # "earliest", "latest", an absolute offset, or At(timestamp)


@dataclass(frozen=True)
class Msg:
    """A record to produce. ``timestamp`` None lets the producer pick the create time."""

    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int | None = None
    partition: int = 0


@dataclass(frozen=True)
class Rec:
    """A record as a reader returned it."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp: int


def unique(what: str) -> str:
    """A topic name no other test (or earlier run against the same broker) uses."""
    return f"compat-{what}-{uuid.uuid4().hex[:10]}"


def now_ms() -> int:
    return int(time.time() * 1000)


def feature_messages(base_ts: int, *, binary: bool = True, timestamps: bool = True) -> list[Msg]:
    """Keys, a null key, a tombstone (null value), headers (one repeated), explicit create times.

    ``binary`` adds an empty value and bytes that are not UTF-8 (kcat's line-based input and JSON
    output cannot carry those); ``timestamps`` False leaves create times to the producer (kcat)."""
    def ts(i: int) -> int | None:
        return base_ts + i if timestamps else None

    msgs = [
        Msg(b"key-1", b"value-1", (("trace", b"abc"), ("attempt", b"1")), ts(0)),
        Msg(None, b"value-without-key", (), ts(1)),
        Msg(b"key-deleted", None, (), ts(2)),
        Msg(b"key-2", b"value-2", (("dup", b"first"), ("dup", b"second"), ("solo", b"x")), ts(3)),
        Msg(b"key-3", b"value-3", (), ts(4)),
    ]
    if binary:
        msgs += [
            Msg(b"key-empty", b"", (("bin", bytes(range(250, 256))),), ts(5)),
            Msg(bytes(range(256)), bytes(range(255, -1, -1)) * 4, (), ts(6)),
        ]
    return msgs


def describe(recs: Sequence[Rec], limit: int = 12) -> str:
    shown = [f"  {r.partition}/{r.offset} key={r.key!r:.40} value={r.value!r:.40} headers={r.headers!r:.80} "
             f"ts={r.timestamp}" for r in recs[:limit]]
    more = f"\n  ... and {len(recs) - limit} more" if len(recs) > limit else ""
    return "\n".join(shown) + more if shown else "  (nothing)"


def assert_same_records(expected: Sequence[Msg], got: Sequence[Rec], *, first_offset: int = 0,
                        produced_between: tuple[int, int] | None = None, what: str = "") -> None:
    """``got`` holds exactly ``expected``, in order, at consecutive offsets from ``first_offset``.

    A message without an explicit timestamp must carry a create time within ``produced_between``."""
    label = f" ({what})" if what else ""
    assert len(got) == len(expected), (
        f"expected {len(expected)} records{label}, got {len(got)}:\n{describe(got)}")
    for i, (m, r) in enumerate(zip(expected, got, strict=True)):
        mismatch: list[str] = []
        if r.offset != first_offset + i:
            mismatch.append(f"offset {r.offset} != {first_offset + i}")
        if r.partition != m.partition:
            mismatch.append(f"partition {r.partition} != {m.partition}")
        if r.key != m.key:
            mismatch.append(f"key {r.key!r:.60} != {m.key!r:.60}")
        if r.value != m.value:
            mismatch.append(f"value {r.value!r:.60} != {m.value!r:.60}")
        if tuple(r.headers) != tuple(m.headers):
            mismatch.append(f"headers {r.headers!r} != {m.headers!r}")
        if m.timestamp is not None and r.timestamp != m.timestamp:
            mismatch.append(f"timestamp {r.timestamp} != {m.timestamp}")
        if m.timestamp is None and produced_between is not None:
            lo, hi = produced_between
            if not lo - 1000 <= r.timestamp <= hi + 1000:
                mismatch.append(f"timestamp {r.timestamp} outside the produce window {lo}..{hi}")
        assert not mismatch, f"record {i}{label} differs: {'; '.join(mismatch)}\nall records:\n{describe(got)}"


# ---------------------------------------------------------------------------------------------------
# Producers


def produce(client: str, bootstrap: str, topic: str, msgs: Sequence[Msg], *, compression: str = "none",
            **options: Any) -> None:
    """Send ``msgs`` in order with ``client``, acks=all, and wait until every one is acknowledged."""
    {
        "confluent": _produce_confluent,
        "kafka-python": _produce_kafka_python,
        "aiokafka": _produce_aiokafka,
        "kcat": _produce_kcat,
        "kafkajs": _produce_kafkajs,
    }[client](bootstrap, topic, list(msgs), compression, **options)


def _produce_confluent(bootstrap: str, topic: str, msgs: list[Msg], compression: str, **options: Any) -> None:
    from confluent_kafka import Producer

    errors: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(f"{msg.topic()}[{msg.partition()}]: {err}")

    producer = Producer({"bootstrap.servers": bootstrap, "compression.type": compression, "acks": "all",
                         "linger.ms": 20, "message.timeout.ms": 15000, **options})
    for m in msgs:
        kwargs: dict[str, Any] = {"key": m.key, "value": m.value, "partition": m.partition,
                                  "on_delivery": delivered}
        if m.headers:
            kwargs["headers"] = list(m.headers)
        if m.timestamp is not None:
            kwargs["timestamp"] = m.timestamp
        producer.produce(topic, **kwargs)
        producer.poll(0)
    left = producer.flush(20)
    assert left == 0, f"confluent producer: {left} of {len(msgs)} records unacknowledged after 20 s"
    assert not errors, f"confluent producer: delivery failed: {errors[:5]}"


def _produce_kafka_python(bootstrap: str, topic: str, msgs: list[Msg], compression: str,
                          **options: Any) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                             compression_type=None if compression == "none" else compression,
                             request_timeout_ms=15000, **options)
    try:
        futures = [producer.send(topic, key=m.key, value=m.value, partition=m.partition,
                                 headers=list(m.headers), timestamp_ms=m.timestamp) for m in msgs]
        producer.flush(20)
        for f in futures:
            f.get(timeout=1)
    finally:
        producer.close(5)


def _produce_aiokafka(bootstrap: str, topic: str, msgs: list[Msg], compression: str, **options: Any) -> None:
    from aiokafka import AIOKafkaProducer

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                                    compression_type=None if compression == "none" else compression,
                                    request_timeout_ms=15000, **options)
        await producer.start()
        try:
            futures = [await producer.send(topic, key=m.key, value=m.value, partition=m.partition,
                                           headers=list(m.headers) or None, timestamp_ms=m.timestamp)
                       for m in msgs]
            await asyncio.wait_for(asyncio.gather(*futures), 20)
        finally:
            await producer.stop()

    asyncio.run(run())


def _produce_kcat(bootstrap: str, topic: str, msgs: list[Msg], compression: str, **options: Any) -> None:
    """kcat reads lines from stdin: key and value split by a tab, ``-Z`` turns an empty key or value
    into null, ``-H`` sets the same headers on every record of a run. So each run of consecutive
    messages with equal headers and partition is one kcat invocation; explicit timestamps are
    impossible."""
    if any(m.timestamp is not None for m in msgs):
        raise ValueError("kcat cannot produce with an explicit timestamp")
    # Per partition (the only order Kafka keeps), runs of consecutive messages with equal headers.
    runs: list[list[Msg]] = []
    for partition in sorted({m.partition for m in msgs}):
        for m in (m for m in msgs if m.partition == partition):
            if runs and runs[-1][0].headers == m.headers and runs[-1][0].partition == m.partition:
                runs[-1].append(m)
            else:
                runs.append([m])
    for batch in runs:
        lines = []
        for m in batch:
            for part in (m.key, m.value):
                if part is not None and (part == b"" or b"\n" in part or b"\t" in part):
                    raise ValueError(f"kcat cannot send {part!r} (empty, or holding a delimiter)")
            lines.append((m.key or b"") + b"\t" + (m.value or b""))
        args = ["-P", "-t", topic, "-p", str(batch[0].partition), "-K", "\t", "-Z",
                "-X", f"compression.codec={compression}", "-X", "linger.ms=20"]
        for name, value in batch[0].headers:
            args += ["-H", f"{name}={value.decode()}"]
        for name, value in options.items():
            args += ["-X", f"{name}={value}"]
        kcat(bootstrap, *args, stdin=b"\n".join(lines) + b"\n")


def _produce_kafkajs(bootstrap: str, topic: str, msgs: list[Msg], compression: str, **options: Any) -> None:
    payload = json.dumps([_msg_to_json(m) for m in msgs])
    extra = flatten([f"--{k}", str(v)] for k, v in options.items())
    result = node("produce.js", bootstrap, topic, "--compression", compression, *extra, stdin=payload)
    assert result["sent"], f"kafkajs produce.js reported no acknowledged batch: {result}"


# ---------------------------------------------------------------------------------------------------
# Readers: assign + seek, then a bounded read


class Reader:
    """One client's consumer without a group: ``start`` assigns and seeks, ``read`` returns records.

    ``start`` returns the resolved position of each partition when the client can tell it (it must for
    "latest", so that a test may produce after it and expect only the new records)."""

    client = ""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def start(self, topic: str, partitions: Sequence[int], start: Start) -> dict[int, int]:
        raise NotImplementedError

    def read(self, count: int, timeout: float = READ_TIMEOUT_S) -> list[Rec]:
        raise NotImplementedError

    def seek(self, partition: int, offset: int) -> None:
        raise NotImplementedError(f"{self.client} has no seek on a running reader")

    def offsets_for_times(self, topic: str, partitions: Sequence[int], timestamp: int) -> dict[int, int | None]:
        """The first offset at or after ``timestamp`` per partition; None where Kafka answers -1."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _short(self, want: int, got: list[Rec], timeout: float) -> str:
        return (f"{self.client}: expected {want} records within {timeout:.0f} s, got {len(got)}:\n"
                f"{describe(got)}")


def reader(client: str, bootstrap: str, **options: Any) -> Reader:
    return {
        "confluent": ConfluentReader,
        "kafka-python": KafkaPythonReader,
        "aiokafka": AiokafkaReader,
        "kcat": KcatReader,
        "kafkajs": KafkajsReader,
    }[client](bootstrap, **options)


def consume(client: str, bootstrap: str, topic: str, count: int, *, start: Start = "earliest",
            partitions: Sequence[int] = (0,), timeout: float = READ_TIMEOUT_S, **options: Any) -> list[Rec]:
    """Assign ``partitions``, seek to ``start`` and read until ``count`` records arrived (fails after
    ``timeout`` with what did arrive)."""
    with reader(client, bootstrap, **options) as r:
        r.start(topic, partitions, start)
        return r.read(count, timeout)


class ConfluentReader(Reader):
    """librdkafka needs a group.id even for assign(); nothing is committed and no group is joined."""

    client = "confluent"

    def __init__(self, bootstrap: str, **options: Any) -> None:
        super().__init__(bootstrap)
        from confluent_kafka import Consumer

        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("no-group"),
                                  "enable.auto.commit": False, "enable.auto.offset.store": False,
                                  "enable.partition.eof": True, "fetch.wait.max.ms": 100, **options})
        self.buffered: list[Rec] = []
        self.eof: dict[int, int] = {}
        self.topic = ""

    def start(self, topic: str, partitions: Sequence[int], start: Start) -> dict[int, int]:
        from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TopicPartition

        self.topic = topic
        # Leaders known before assign(): otherwise librdkafka retries its first ListOffsets on a timer.
        self.consumer.list_topics(topic, timeout=10)
        if isinstance(start, At):
            offsets = self.offsets_for_times(topic, partitions, start.timestamp)
            tps = [TopicPartition(topic, p, OFFSET_END if offsets[p] is None else offsets[p]) for p in partitions]
        else:
            offset = {"earliest": OFFSET_BEGINNING, "latest": OFFSET_END}.get(start, start)  # type: ignore[arg-type]
            tps = [TopicPartition(topic, p, offset) for p in partitions]
        self.consumer.assign(tps)
        if start != "latest":
            return {tp.partition: tp.offset for tp in tps if tp.offset >= 0}
        # The partition-EOF event tells where the fetcher stands once OFFSET_END is resolved.
        deadline = time.monotonic() + READ_TIMEOUT_S
        while len(self.eof) < len(partitions) and time.monotonic() < deadline:
            self._poll(0.2)
        assert len(self.eof) == len(partitions), (
            f"confluent: seek to latest not resolved within {READ_TIMEOUT_S} s (EOF seen for {self.eof})")
        return dict(self.eof)

    def _poll(self, timeout: float, want: int = 1) -> None:
        """One consume() call: it returns once ``want`` events are there or ``timeout`` has passed."""
        from confluent_kafka import KafkaError

        for msg in self.consumer.consume(max(1, want), timeout):
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    self.eof[msg.partition()] = msg.offset()
                    continue
                raise AssertionError(f"confluent consumer error: {err}")
            self.buffered.append(Rec(msg.partition(), msg.offset(), msg.key(), msg.value(),
                                     tuple(msg.headers() or ()), msg.timestamp()[1]))

    def read(self, count: int, timeout: float = READ_TIMEOUT_S) -> list[Rec]:
        deadline = time.monotonic() + timeout
        while len(self.buffered) < count and time.monotonic() < deadline:
            self._poll(min(0.5, max(0.0, deadline - time.monotonic())), count - len(self.buffered))
        got, self.buffered = self.buffered[:count], self.buffered[count:]
        assert len(got) == count, self._short(count, got, timeout)
        return got

    def seek(self, partition: int, offset: int) -> None:
        from confluent_kafka import TopicPartition

        self.buffered = [r for r in self.buffered if r.partition != partition]
        self.consumer.seek(TopicPartition(self.topic, partition, offset))

    def offsets_for_times(self, topic: str, partitions: Sequence[int], timestamp: int) -> dict[int, int | None]:
        from confluent_kafka import TopicPartition

        found = self.consumer.offsets_for_times([TopicPartition(topic, p, timestamp) for p in partitions], 10)
        for tp in found:
            assert tp.error is None, f"confluent offsets_for_times {topic}[{tp.partition}]: {tp.error}"
        return {tp.partition: (None if tp.offset < 0 else tp.offset) for tp in found}

    def close(self) -> None:
        self.consumer.close()


class KafkaPythonReader(Reader):
    client = "kafka-python"

    def __init__(self, bootstrap: str, **options: Any) -> None:
        super().__init__(bootstrap)
        from kafka import KafkaConsumer

        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                      fetch_max_wait_ms=100, request_timeout_ms=15000, **options)
        self.topic = ""

    def _tp(self, partition: int) -> Any:
        from kafka import TopicPartition

        return TopicPartition(self.topic, partition)

    def start(self, topic: str, partitions: Sequence[int], start: Start) -> dict[int, int]:
        self.topic = topic
        tps = [self._tp(p) for p in partitions]
        self.consumer.assign(tps)
        if start == "earliest":
            self.consumer.seek_to_beginning(*tps)
        elif start == "latest":
            self.consumer.seek_to_end(*tps)
        elif isinstance(start, At):
            offsets = self.offsets_for_times(topic, partitions, start.timestamp)
            ends = [tp for tp in tps if offsets[tp.partition] is None]
            if ends:  # seek_to_end() without partitions would move every assigned one
                self.consumer.seek_to_end(*ends)
            for tp in tps:
                if offsets[tp.partition] is not None:
                    self.consumer.seek(tp, offsets[tp.partition])
        else:
            for tp in tps:
                self.consumer.seek(tp, int(start))
        return {tp.partition: self.consumer.position(tp, timeout_ms=10000) for tp in tps}

    def read(self, count: int, timeout: float = READ_TIMEOUT_S) -> list[Rec]:
        got: list[Rec] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            polled = self.consumer.poll(timeout_ms=int(min(500, max(0, deadline - time.monotonic()) * 1000)),
                                        max_records=count - len(got))
            for batch in polled.values():
                got += [Rec(r.partition, r.offset, r.key, r.value, tuple(r.headers or ()), r.timestamp)
                        for r in batch]
        assert len(got) == count, self._short(count, got, timeout)
        return got

    def seek(self, partition: int, offset: int) -> None:
        self.consumer.seek(self._tp(partition), offset)

    def offsets_for_times(self, topic: str, partitions: Sequence[int], timestamp: int) -> dict[int, int | None]:
        from kafka import TopicPartition

        found = self.consumer.offsets_for_times({TopicPartition(topic, p): timestamp for p in partitions})
        return {tp.partition: (None if oat is None else oat.offset) for tp, oat in found.items()}

    def close(self) -> None:
        self.consumer.close(autocommit=False)


class AiokafkaReader(Reader):
    """aiokafka on a private event loop, so the test can call it like the blocking clients."""

    client = "aiokafka"

    def __init__(self, bootstrap: str, **options: Any) -> None:
        super().__init__(bootstrap)
        from aiokafka import AIOKafkaConsumer

        self.loop = asyncio.new_event_loop()

        async def make() -> Any:
            consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                        fetch_max_wait_ms=100, request_timeout_ms=15000, **options)
            await consumer.start()
            return consumer

        self.consumer = self.loop.run_until_complete(make())
        self.topic = ""

    def _run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """aiokafka's synchronous calls (assign, seek) look up the running loop."""
        async def call() -> Any:
            return fn(*args)

        return self._run(call())

    def _tp(self, partition: int) -> Any:
        from aiokafka import TopicPartition

        return TopicPartition(self.topic, partition)

    def start(self, topic: str, partitions: Sequence[int], start: Start) -> dict[int, int]:
        self.topic = topic
        tps = [self._tp(p) for p in partitions]
        self._call(self.consumer.assign, tps)
        if start == "earliest":
            self._run(self.consumer.seek_to_beginning(*tps))
        elif start == "latest":
            self._run(self.consumer.seek_to_end(*tps))
        elif isinstance(start, At):
            offsets = self.offsets_for_times(topic, partitions, start.timestamp)
            ends = [tp for tp in tps if offsets[tp.partition] is None]
            if ends:
                self._run(self.consumer.seek_to_end(*ends))
            for tp in tps:
                if offsets[tp.partition] is not None:
                    self._call(self.consumer.seek, tp, offsets[tp.partition])
        else:
            for tp in tps:
                self._call(self.consumer.seek, tp, int(start))
        return {tp.partition: self._run(asyncio.wait_for(self.consumer.position(tp), 10)) for tp in tps}

    def read(self, count: int, timeout: float = READ_TIMEOUT_S) -> list[Rec]:
        async def run() -> list[Rec]:
            got: list[Rec] = []
            deadline = time.monotonic() + timeout
            while len(got) < count and time.monotonic() < deadline:
                polled = await self.consumer.getmany(
                    timeout_ms=int(min(500, max(0, deadline - time.monotonic()) * 1000)),
                    max_records=count - len(got))
                for batch in polled.values():
                    got += [Rec(r.partition, r.offset, r.key, r.value, tuple(r.headers or ()), r.timestamp)
                            for r in batch]
            return got

        got = self._run(run())
        assert len(got) == count, self._short(count, got, timeout)
        return got

    def seek(self, partition: int, offset: int) -> None:
        self._call(self.consumer.seek, self._tp(partition), offset)

    def offsets_for_times(self, topic: str, partitions: Sequence[int], timestamp: int) -> dict[int, int | None]:
        from aiokafka import TopicPartition

        found = self._run(self.consumer.offsets_for_times({TopicPartition(topic, p): timestamp for p in partitions}))
        return {tp.partition: (None if oat is None else oat.offset) for tp, oat in found.items()}

    def close(self) -> None:
        try:
            self._run(self.consumer.stop())
        finally:
            self.loop.close()


class _ProcessReader(Reader):
    """A reader that is one subprocess: started by ``start``, collected by ``read``."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(bootstrap)
        self.proc: subprocess.Popen[bytes] | None = None
        self.stdout_lines: list[bytes] = []
        self.stderr_lines: list[bytes] = []
        self._lines = threading.Condition()
        self._threads: list[threading.Thread] = []

    def _spawn(self, args: list[str], cwd: Path | None = None, stdin: bool = False) -> None:
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)
        for stream, sink in ((self.proc.stdout, self.stdout_lines), (self.proc.stderr, self.stderr_lines)):
            thread = threading.Thread(target=self._pump, args=(stream, sink), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _pump(self, stream: Any, sink: list[bytes]) -> None:
        for line in stream:
            with self._lines:
                sink.append(line.rstrip(b"\n"))
                self._lines.notify_all()
        with self._lines:
            self._lines.notify_all()

    def _wait_line(self, sink: list[bytes], pattern: re.Pattern[bytes], timeout: float, what: str) -> re.Match[bytes]:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._lines:
            while True:
                for line in sink[seen:]:
                    found = pattern.search(line)
                    if found:
                        return found
                seen = len(sink)
                remaining = deadline - time.monotonic()
                assert self.proc is not None
                if remaining <= 0 or (self.proc.poll() is not None and not any(t.is_alive() for t in self._threads)):
                    break
                self._lines.wait(min(remaining, 0.1))
        raise AssertionError(f"{self.client}: no {what} within {timeout:.0f} s (exit {self.proc.poll()}); "
                             f"stdout: {self._tail(self.stdout_lines)}\nstderr: {self._tail(self.stderr_lines)}")

    @staticmethod
    def _tail(lines: list[bytes]) -> str:
        return b"\n".join(lines[-10:]).decode(errors="replace")

    def _finish(self, timeout: float) -> int | None:
        assert self.proc is not None
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        for t in self._threads:
            t.join(5)
        return self.proc.returncode

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class KcatReader(_ProcessReader):
    """``kcat -C -J`` from ``-o beginning|end|N|s@TS``, stopping after ``-c N`` records."""

    client = "kcat"

    def __init__(self, bootstrap: str, **options: Any) -> None:
        super().__init__(bootstrap)
        self.options = options
        self.topic = ""
        self.partitions: Sequence[int] = ()
        self.start_arg = ""
        self.positions: dict[int, int] = {}

    def start(self, topic: str, partitions: Sequence[int], start: Start) -> dict[int, int]:
        self.topic, self.partitions = topic, partitions
        if isinstance(start, At):
            self.start_arg = f"s@{start.timestamp}"
        else:
            self.start_arg = {"earliest": "beginning", "latest": "end"}.get(start, str(start))  # type: ignore[arg-type]
        if start != "latest":
            return {}
        # kcat must be running (and at the end) before the test produces the records it expects.
        self._launch(count=None)
        for p in partitions:
            found = self._wait_line(self.stderr_lines, re.compile(
                rb"Reached end of topic \S+ \[%d\] at offset (\d+)" % p), READ_TIMEOUT_S, f"EOF on partition {p}")
            self.positions[p] = int(found.group(1))
        return dict(self.positions)

    def _launch(self, count: int | None) -> None:
        args = [kcat_path(), "-b", self.bootstrap, "-C", "-t", self.topic, "-J", "-u", "-o", self.start_arg,
                "-m", "10", "-X", "fetch.wait.max.ms=100"]
        if len(self.partitions) == 1:
            args += ["-p", str(self.partitions[0])]
        if count is not None:
            args += ["-c", str(count)]
        for name, value in self.options.items():
            args += ["-X", f"{name}={value}"]
        self._spawn(args)

    def read(self, count: int, timeout: float = READ_TIMEOUT_S) -> list[Rec]:
        if self.proc is None:
            self._launch(count)
        deadline = time.monotonic() + timeout
        with self._lines:
            while len(self.stdout_lines) < count and time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None and not any(t.is_alive() for t in self._threads):
                    break
                self._lines.wait(0.1)
        self.close()
        for t in self._threads:
            t.join(5)
        got = [_kcat_record(json.loads(line)) for line in self.stdout_lines[:count] if line.startswith(b"{")]
        assert len(got) == count, (self._short(count, got, timeout) +
                                   f"\nkcat stderr: {self._tail(self.stderr_lines)}")
        return got

    def offsets_for_times(self, topic: str, partitions: Sequence[int], timestamp: int) -> dict[int, int | None]:
        args = ["-Q"]
        for p in partitions:
            args += ["-t", f"{topic}:{p}:{timestamp}"]
        out = kcat(self.bootstrap, *args).decode()
        found = {int(m.group(1)): int(m.group(2))
                 for m in re.finditer(r"\[(\d+)\]\s+offset\s+(-?\d+)", out)}
        assert set(found) == set(partitions), f"kcat -Q answered {out!r}"
        return {p: (None if o < 0 else o) for p, o in found.items()}


def _kcat_record(obj: dict[str, Any]) -> Rec:
    def enc(text: str | None) -> bytes | None:
        return None if text is None else text.encode()

    headers = obj.get("headers") or []
    if isinstance(headers, dict):
        pairs = list(headers.items())
    else:  # kcat 1.7 writes a flat list: name, value, name, value, ...
        pairs = list(zip(headers[0::2], headers[1::2], strict=True))
    return Rec(obj["partition"], obj["offset"], enc(obj["key"]), enc(obj["payload"]),
               tuple((n, enc(v)) for n, v in pairs), obj["ts"])


class KafkajsReader(_ProcessReader):
    """``node consume.js``: kafkajs's ListOffsets to seek and its Fetch to read (see node/lib.js).

    For "latest" the script starts at once, prints its resolved positions and then waits for the
    record count on stdin, so the test can produce in between."""

    client = "kafkajs"

    def __init__(self, bootstrap: str, max_wait_ms: int = 500) -> None:
        super().__init__(bootstrap)
        self.max_wait_ms = max_wait_ms
        self.args: list[str] = []

    def start(self, topic: str, partitions: Sequence[int], start: Start) -> dict[int, int]:
        if isinstance(start, At):
            start_arg = f"timestamp:{start.timestamp}"
        elif isinstance(start, int):
            start_arg = f"offset:{start}"
        else:
            start_arg = start
        self.args = [topic, "--partitions", ",".join(map(str, partitions)), "--start", start_arg,
                     "--max-wait-ms", str(self.max_wait_ms)]
        if start != "latest":
            return {}
        self._launch("stdin", READ_TIMEOUT_S)
        self._wait_line(self.stdout_lines, re.compile(rb'"event": ?"positioned"'), SUBPROCESS_SLACK_S,
                        "positioned line")
        line = next(json.loads(x) for x in self.stdout_lines if b'"positioned"' in x)
        return {int(p): int(o) for p, o in line["positions"].items()}

    def _launch(self, count: str, timeout: float) -> None:
        require_node()
        self._spawn(["node", str(NODE_DIR / "consume.js"), self.bootstrap, *self.args, "--count", count,
                     "--timeout-ms", str(int(timeout * 1000))], cwd=NODE_DIR, stdin=count == "stdin")

    def read(self, count: int, timeout: float = READ_TIMEOUT_S) -> list[Rec]:
        if self.proc is None:
            self._launch(str(count), timeout)
        else:
            assert self.proc.stdin is not None
            self.proc.stdin.write(f"{count}\n".encode())
            self.proc.stdin.close()
        self._finish(timeout + SUBPROCESS_SLACK_S)
        got = [_rec_from_json(r) for r in self._result()["records"]]
        assert len(got) == count, self._short(count, got, timeout)
        return got

    def _result(self) -> dict[str, Any]:
        lines = [x for x in self.stdout_lines if x.startswith(b"{")]
        assert lines, f"kafkajs consume.js printed nothing; stderr: {self._tail(self.stderr_lines)}"
        result = json.loads(lines[-1])
        assert result.get("ok"), f"kafkajs consume.js failed: {result.get('error')}\n{self._tail(self.stderr_lines)}"
        return result

    def offsets_for_times(self, topic: str, partitions: Sequence[int], timestamp: int) -> dict[int, int | None]:
        """kafkajs's fetchTopicOffsetsByTimestamp answers the high watermark where Kafka says -1."""
        result = node("offsets.js", self.bootstrap, topic, "--timestamp", str(timestamp))
        return {e["partition"]: e["offset"] for e in result["byTimestamp"] if e["partition"] in partitions}


# ---------------------------------------------------------------------------------------------------
# kcat and node


def kcat_path() -> str:
    path = shutil.which("kcat")
    if path is None:
        pytest.fail("kcat is not installed: run the test command from the README (./scripts/test.sh), "
                    "which installs it with apt")
    return path


def kcat(bootstrap: str, *args: str, stdin: bytes | None = None, timeout: float = 30.0) -> bytes:
    """Run kcat to completion; fails the test with its stderr when it exits non-zero."""
    result = subprocess.run([kcat_path(), "-b", bootstrap, "-m", "10", *args], input=stdin,
                            capture_output=True, timeout=timeout, check=False)
    assert result.returncode == 0, (f"kcat {' '.join(args)} exited {result.returncode}: "
                                    f"{result.stderr.decode(errors='replace')[-2000:]}")
    return result.stdout


def require_node() -> None:
    """Fail (never skip) when node or the installed kafkajs packages are missing."""
    if shutil.which("node") is None:
        pytest.fail(f"node is not installed; the kafkajs tests need node and npm: {NODE_INSTALL_HINT}")
    if not (NODE_DIR / "node_modules" / "kafkajs" / "package.json").exists():
        pytest.fail(f"{NODE_DIR / 'node_modules'} is missing kafkajs: {NODE_INSTALL_HINT}")


def node(script: str, *args: str, stdin: str | None = None, timeout: float = 60.0,
         security: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one scenario script and return its result (the last JSON line it printed). ``security`` is
    kafkajs's ``ssl``/``sasl`` client options (``{"ssl": {"ca": PATH}, "sasl": {...}}``; a CA path is
    read by the script), given to every client the script makes."""
    require_node()
    env = dict(os.environ)
    if security is not None:
        env["MOLDAU_KAFKAJS_SECURITY"] = json.dumps(security)
    result = subprocess.run(["node", str(NODE_DIR / script), *args], input=stdin, capture_output=True,
                            text=True, timeout=timeout, cwd=NODE_DIR, check=False, env=env)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, (f"node {script} printed no JSON (exit {result.returncode}); "
                   f"stderr: {result.stderr[-3000:]}")
    out = json.loads(lines[-1])
    assert out.get("ok") is True and result.returncode == 0, (
        f"node {script} {' '.join(args)} failed (exit {result.returncode}): {out.get('error')}\n"
        f"stderr: {result.stderr[-3000:]}")
    return out


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def _msg_to_json(m: Msg) -> dict[str, Any]:
    return {"key": _b64(m.key), "value": _b64(m.value), "headers": [[n, _b64(v)] for n, v in m.headers],
            "timestamp": m.timestamp, "partition": m.partition}


def _rec_from_json(obj: dict[str, Any]) -> Rec:
    return Rec(obj["partition"], obj["offset"], _unb64(obj["key"]), _unb64(obj["value"]),
               tuple((n, _unb64(v)) for n, v in obj["headers"]), obj["timestamp"])


# ---------------------------------------------------------------------------------------------------
# The broker's side


def stored_batch_codecs(host: str, port: int, topic: str, partition: int = 0) -> list[int]:
    """The compression codec id of every batch a raw Fetch v11 returns from offset 0: what the broker
    stored and serves, byte for byte as the producer sent it."""
    from tests.compat.conftest import KafkaSocket

    sock = KafkaSocket(host, port)
    try:
        request = messages.FetchRequest(
            replica_id=-1, max_wait_ms=0, min_bytes=0, max_bytes=50 << 20, isolation_level=0,
            session_id=0, session_epoch=-1,
            topics=[messages.FetchRequest.FetchTopic(topic=topic, partitions=[
                messages.FetchRequest.FetchPartition(partition=partition, fetch_offset=0,
                                                     partition_max_bytes=50 << 20)])])
        response = sock.request(1, 11, 7, request)
    finally:
        sock.close()
    (part,) = [p for t in response.responses if t.topic == topic for p in t.partitions]
    assert part.error_code == 0, f"raw Fetch v11 {topic}[{partition}]: error code {part.error_code}"
    return [batch.compression for _, batch in iter_batches(memoryview(bytes(part.records or b"")))]


# ---------------------------------------------------------------------------------------------------
# The shared broker


@contextlib.contextmanager
def no_new_tracebacks(proc: Any) -> Iterator[None]:
    """Fail the test during which the shared broker logged a traceback (not only the last one)."""
    before = len(proc.tracebacks())
    yield
    new = proc.tracebacks()[before:]
    assert not new, (f"broker logged {len(new)} traceback(s) during this test, the first ones:\n"
                     + "\n".join(line[:1500] for line in new[:3]))


# ---------------------------------------------------------------------------------------------------
# Scenarios shared by test_client_matrix.py and test_kafkajs.py


def check_features(producer: str, consumer: str, bootstrap: str) -> None:
    """Records produced by ``producer`` come back from ``consumer`` unchanged, at offsets 0..n-1."""
    topic = unique(f"features-{producer}-to-{consumer}")
    kcat_involved = "kcat" in (producer, consumer)
    msgs = feature_messages(now_ms() - 60_000, binary=not kcat_involved, timestamps=producer != "kcat")
    before = now_ms()
    produce(producer, bootstrap, topic, msgs)
    after = now_ms()
    got = consume(consumer, bootstrap, topic, len(msgs), start="earliest")
    assert_same_records(msgs, got, produced_between=(before, after), what=f"{producer} -> {consumer}")


def compressible(i: int) -> bytes:
    return (f"record {i:04d} " + "compressible text " * 12).encode()


def check_compression(producer: str, consumer: str, codec: str, bootstrap: str, host: str, port: int) -> None:
    """A batch ``producer`` compressed with ``codec`` is stored as sent and ``consumer`` reads it back."""
    topic = unique(f"codec-{codec}-{producer}-to-{consumer}")
    msgs = [Msg(f"k{i}".encode(), compressible(i), (("codec", codec.encode()),)) for i in range(30)]
    before = now_ms()
    produce(producer, bootstrap, topic, msgs, compression=codec)
    after = now_ms()
    codecs = stored_batch_codecs(host, port, topic)
    assert codecs and set(codecs) == {CODEC_IDS[codec]}, (
        f"{producer} with {codec}: expected every stored batch to carry codec {CODEC_IDS[codec]}, "
        f"the broker serves batches with codecs {codecs}")
    got = consume(consumer, bootstrap, topic, len(msgs))
    assert_same_records(msgs, got, produced_between=(before, after), what=f"{producer} {codec} -> {consumer}")


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create ``topic`` with ``partitions`` partitions (CreateTopics through confluent-kafka)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)], operation_timeout=10)[topic].result(15)


def check_ordering(client: str, bootstrap: str, partitions: int = 3, per_partition: int = 40) -> None:
    """Records sent to one partition are read back in send order at consecutive offsets."""
    topic = unique(f"order-{client}")
    create_topic(bootstrap, topic, partitions)
    msgs = [Msg(f"k{i}".encode(), f"p{i % partitions}-seq{i // partitions:03d}".encode(), partition=i % partitions)
            for i in range(partitions * per_partition)]
    produce(client, bootstrap, topic, msgs)
    got = consume(client, bootstrap, topic, len(msgs), partitions=tuple(range(partitions)))
    for p in range(partitions):
        mine = [r for r in got if r.partition == p]
        assert [r.value for r in mine] == [m.value for m in msgs if m.partition == p], (
            f"{client}: partition {p} out of order:\n{describe(mine, 50)}")
        assert [r.offset for r in mine] == list(range(per_partition)), (
            f"{client}: partition {p} offsets {[r.offset for r in mine]} are not 0..{per_partition - 1}")


def check_seeks(client: str, bootstrap: str) -> None:
    """Seek to earliest, to an offset, by timestamp (ListOffsets) and to latest, each read bounded.

    kcat cannot set create times, so its timestamped records come from confluent-kafka."""
    topic = unique(f"seek-{client}")
    producer = "confluent" if client == "kcat" else client
    base = now_ms() - 3_600_000
    msgs = [Msg(f"k{i}".encode(), f"v{i}".encode(), (), base + 10 * i) for i in range(10)]
    produce(producer, bootstrap, topic, msgs)

    with reader(client, bootstrap) as r:
        found = {"before the first": r.offsets_for_times(topic, [0], base - 1000),
                 "base+45": r.offsets_for_times(topic, [0], base + 45),
                 "past the last": r.offsets_for_times(topic, [0], base + 10_000)}
    # Kafka answers -1 past the last timestamp; kafkajs's admin helper turns that into the high watermark.
    expected = {"before the first": {0: 0}, "base+45": {0: 5},
                "past the last": {0: 10} if client == "kafkajs" else {0: None}}
    assert found == expected, f"{client}: offsets_for_times: expected {expected}, got {found}"

    got = consume(client, bootstrap, topic, 5, start=At(base + 45))
    assert_same_records(msgs[5:], got, first_offset=5, what=f"{client} seek by timestamp")
    got = consume(client, bootstrap, topic, 3, start=7)
    assert_same_records(msgs[7:], got, first_offset=7, what=f"{client} seek to offset 7")
    got = consume(client, bootstrap, topic, 10, start="earliest")
    assert_same_records(msgs, got, what=f"{client} seek to earliest")

    more = [Msg(b"late-1", b"after-latest-1", (), base + 1000), Msg(b"late-2", b"after-latest-2", (), base + 1001)]
    with reader(client, bootstrap) as r:
        positions = r.start(topic, [0], "latest")
        assert positions == {0: 10}, f"{client}: seek to latest resolved to {positions}, expected {{0: 10}}"
        produce(producer, bootstrap, topic, more)
        got = r.read(2)
    assert_same_records(more, got, first_offset=10, what=f"{client} seek to latest, then 2 new records")


def flatten(groups: Iterable[Iterable[Any]]) -> list[Any]:
    return [x for g in groups for x in g]
