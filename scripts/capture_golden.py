"""Capture golden request bytes from real Kafka clients into ``tests/unit/golden/``.

A developer tool, not part of the broker and never run by the tests (they read only the committed
fixture files). It starts a small asyncio responder on 127.0.0.1 built on ``protocol.codec`` alone,
which records every request frame it receives and answers just enough for each client to go on; then
it drives confluent-kafka (librdkafka), kafka-python, aiokafka and kcat against it, one bounded
scenario at a time, and saves a small, meaningful selection of the captured frames (without their
4-byte size prefix) as ``<out>/<client>/<ApiName>_v<version>[_<suffix>].bin``, together with
``manifest.json`` and a ``README.md`` that records how each file was captured.

    python scripts/capture_golden.py --out tests/unit/golden

Each client scenario runs in a child process (``--drive NAME``) or as a kcat command, with a time
limit: on overrun it gets SIGINT, then SIGKILL.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from protocol import codec
from protocol import messages as m
from protocol.schema import APIS

TOPIC = "golden"
GROUP = "golden-group"
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
NODE_ID = 1
CLUSTER_ID = "golden-cluster-0000001"
SCENARIO_TIMEOUT_S = 30.0
FETCH_WAIT_CAP_MS = 200

# The records every producer sends, in this order, to partition 0 of TOPIC. kcat can only give every
# record the same headers, so all clients do. tests/unit/test_client_batches.py asserts these values.
HEADERS = [("h1", b"one"), ("h2", b"two")]
RECORDS = [
    (f"golden-key-{i}".encode(), (f"golden-value-{i}-" + "0123456789" * 4).encode(), HEADERS)
    for i in range(3)
]

CLIENT_IDS = {
    "confluent-kafka": "golden-confluent-kafka",
    "kafka-python": "golden-kafka-python",
    "aiokafka": "golden-aiokafka",
    "kcat": "golden-kcat",
}

API_VERSIONS = 18
UNSUPPORTED_VERSION = 35
MEMBER_ID_REQUIRED = 79
LATEST = -1  # ListOffsets timestamp asking for the end offset


def topic_id(name: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"moldau-golden/{name}")


# ---------------------------------------------------------------- the responder

@dataclass
class Frame:
    scenario: str
    api_key: int
    api_version: int
    client_id: str | None
    data: bytes
    decode_error: str | None = None


@dataclass
class PartitionLog:
    batches: list[tuple[int, int, bytes]] = field(default_factory=list)  # (base, next offset, bytes)
    next_offset: int = 0

    def append(self, records: bytes | None) -> int:
        """Store the batches of a produce request with broker-assigned offsets; returns the base offset."""
        base = self.next_offset
        data = bytes(records or b"")
        pos = 0
        while pos + 61 <= len(data):
            length = struct.unpack_from(">i", data, pos + 8)[0]
            end = pos + 12 + length
            magic = data[pos + 16]
            count = struct.unpack_from(">i", data, pos + 23)[0] + 1 if magic == 2 else 1
            batch = struct.pack(">q", self.next_offset) + data[pos + 8:end]  # base offset is outside the CRC
            self.batches.append((self.next_offset, self.next_offset + count, batch))
            self.next_offset += count
            pos = end
        return base

    def read(self, offset: int, max_bytes: int) -> bytes:
        out = bytearray()
        for _, nxt, batch in self.batches:
            if nxt <= offset:
                continue
            if out and len(out) + len(batch) > max_bytes:
                break
            out += batch
        return bytes(out)


class Responder:
    """An asyncio TCP server that records request frames and gives minimal, valid answers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.scenario = ""
        self.frames: list[Frame] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="golden-responder", daemon=True)
        self.ready = threading.Event()
        self.reset()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self.thread.start()
        if not self.ready.wait(10):
            raise RuntimeError("responder did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    def reset(self) -> None:
        """Forget the log and the groups (between clients)."""
        self.logs: dict[tuple[str, int], PartitionLog] = {}
        self.generations: dict[str, int] = {}
        self.member_counter = 0

    def set_scenario(self, name: str) -> None:
        with self.lock:
            self.scenario = name

    def take(self, scenario: str) -> list[Frame]:
        with self.lock:
            return [f for f in self.frames if f.scenario == scenario]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- connections --------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = struct.unpack(">i", await reader.readexactly(4))[0]
                data = await reader.readexactly(size)
                api_key, api_version, corr = struct.unpack_from(">hhi", data)
                frame = Frame(self.scenario, api_key, api_version, None, data)
                with self.lock:
                    self.frames.append(frame)
                try:
                    header, _ = codec.decode_request_header(data)
                    frame.client_id = header.client_id
                except codec.DecodeError as exc:
                    frame.decode_error = str(exc)
                    return
                if api_key == API_VERSIONS:
                    lo, hi = codec.spec_versions(API_VERSIONS)
                    if not lo <= api_version <= hi:
                        body = self._api_versions(error_code=UNSUPPORTED_VERSION)
                        writer.writelines(codec.encode_response(API_VERSIONS, 0, corr, body))
                        await writer.drain()
                        continue
                try:
                    header, body = codec.decode_request(data)
                except codec.DecodeError as exc:
                    frame.decode_error = str(exc)
                    print(f"  ! cannot decode a request: {exc}", file=sys.stderr)
                    return
                response = await self._answer(header, body)
                if response is None:
                    continue
                _fit(response, api_version, type(response)._structs)
                try:
                    writer.writelines(codec.encode_response(api_key, api_version, corr, response))
                except codec.EncodeError as exc:
                    print(f"  ! cannot answer {_name(api_key)} v{api_version}: {exc}", file=sys.stderr)
                    return
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _answer(self, header: Any, body: Any) -> Any:
        key, version = header.request_api_key, header.request_api_version
        handler = getattr(self, f"_h{key}", None)
        if handler is None:
            return _default_response(key)
        result = handler(header, body, version)
        if asyncio.iscoroutine(result):
            result = await result
        return result

    # -- answers, one per API key -------------------------------------------------------------

    def _api_versions(self, error_code: int = 0) -> Any:
        keys = []
        for key in sorted(APIS):
            lo, hi = codec.spec_versions(key)
            keys.append(m.ApiVersionsResponse.ApiVersion(api_key=key, min_version=lo, max_version=hi))
        return m.ApiVersionsResponse(error_code=error_code, api_keys=keys)

    def _h18(self, header: Any, body: Any, version: int) -> Any:  # ApiVersions
        return self._api_versions()

    def _h3(self, header: Any, body: Any, version: int) -> Any:  # Metadata
        r = m.MetadataResponse
        if body.topics is None or (version == 0 and not body.topics):
            names = [TOPIC]
        else:
            names = []
            for t in body.topics:
                name = t.name
                if name is None and t.topic_id == topic_id(TOPIC):
                    name = TOPIC
                if name is not None:
                    names.append(name)
        topics = []
        for name in names:
            part = r.MetadataResponsePartition(partition_index=0, leader_id=NODE_ID, leader_epoch=0,
                                               replica_nodes=[NODE_ID], isr_nodes=[NODE_ID])
            topics.append(r.MetadataResponseTopic(name=name, topic_id=topic_id(name), partitions=[part]))
        broker = r.MetadataResponseBroker(node_id=NODE_ID, host="127.0.0.1", port=self.port)
        return r(brokers=[broker], cluster_id=CLUSTER_ID, controller_id=NODE_ID, topics=topics)

    def _h10(self, header: Any, body: Any, version: int) -> Any:  # FindCoordinator
        r = m.FindCoordinatorResponse
        if version < 4:
            return r(error_code=0, node_id=NODE_ID, host="127.0.0.1", port=self.port)
        return r(coordinators=[r.Coordinator(key=k, node_id=NODE_ID, host="127.0.0.1", port=self.port)
                               for k in body.coordinator_keys])

    def _h11(self, header: Any, body: Any, version: int) -> Any:  # JoinGroup
        r = m.JoinGroupResponse
        if not body.member_id:
            self.member_counter += 1
            member_id = f"{header.client_id or 'member'}-{self.member_counter}"
            if version >= 4:
                return r(error_code=MEMBER_ID_REQUIRED, generation_id=-1, member_id=member_id)
        else:
            member_id = body.member_id
        generation = self.generations[body.group_id] = self.generations.get(body.group_id, 0) + 1
        proto = body.protocols[0]
        member = r.JoinGroupResponseMember(member_id=member_id, group_instance_id=body.group_instance_id,
                                           metadata=proto.metadata)
        return r(error_code=0, generation_id=generation, protocol_type=body.protocol_type,
                 protocol_name=proto.name, leader=member_id, member_id=member_id, members=[member])

    def _h14(self, header: Any, body: Any, version: int) -> Any:  # SyncGroup
        assignment = next((a.assignment for a in body.assignments if a.member_id == body.member_id), b"")
        return m.SyncGroupResponse(error_code=0, protocol_type=body.protocol_type,
                                   protocol_name=body.protocol_name, assignment=assignment)

    def _h12(self, header: Any, body: Any, version: int) -> Any:  # Heartbeat
        return m.HeartbeatResponse(error_code=0)

    def _h13(self, header: Any, body: Any, version: int) -> Any:  # LeaveGroup
        r = m.LeaveGroupResponse
        members = [r.MemberResponse(member_id=x.member_id, group_instance_id=x.group_instance_id)
                   for x in body.members]
        return r(error_code=0, members=members)

    def _h8(self, header: Any, body: Any, version: int) -> Any:  # OffsetCommit
        r = m.OffsetCommitResponse
        return r(topics=[r.OffsetCommitResponseTopic(
            name=t.name,
            partitions=[r.OffsetCommitResponsePartition(partition_index=p.partition_index, error_code=0)
                        for p in t.partitions]) for t in body.topics])

    def _h9(self, header: Any, body: Any, version: int) -> Any:  # OffsetFetch
        r = m.OffsetFetchResponse
        if version < 8:
            part = r.OffsetFetchResponsePartition
            topics = [r.OffsetFetchResponseTopic(name=t.name, partitions=[
                part(partition_index=i, committed_offset=-1, metadata="") for i in t.partition_indexes])
                for t in body.topics or []]
            return r(topics=topics, error_code=0)
        groups = []
        part = r.OffsetFetchResponsePartitions
        for g in body.groups:
            topics = [r.OffsetFetchResponseTopics(name=t.name, partitions=[
                part(partition_index=i, committed_offset=-1, metadata="") for i in t.partition_indexes])
                for t in g.topics or []]
            groups.append(r.OffsetFetchResponseGroup(group_id=g.group_id, topics=topics))
        return r(groups=groups)

    def _log(self, name: str, partition: int) -> PartitionLog:
        return self.logs.setdefault((name, partition), PartitionLog())

    def _h2(self, header: Any, body: Any, version: int) -> Any:  # ListOffsets
        r = m.ListOffsetsResponse
        topics = []
        for t in body.topics:
            parts = []
            for p in t.partitions:
                offset = self._log(t.name, p.partition_index).next_offset if p.timestamp == LATEST else 0
                parts.append(r.ListOffsetsPartitionResponse(
                    partition_index=p.partition_index, error_code=0, timestamp=-1, offset=offset,
                    old_style_offsets=[offset], leader_epoch=0))
            topics.append(r.ListOffsetsTopicResponse(name=t.name, partitions=parts))
        return r(topics=topics)

    async def _h1(self, header: Any, body: Any, version: int) -> Any:  # Fetch
        r = m.FetchResponse
        names = {topic_id(n): n for n, _ in self.logs} | {topic_id(TOPIC): TOPIC}
        responses, total = [], 0
        for t in body.topics:
            name = t.topic if version < 13 else names.get(t.topic_id, "")
            parts = []
            for p in t.partitions:
                log = self._log(name, p.partition)
                records = log.read(p.fetch_offset, p.partition_max_bytes)
                total += len(records)
                end = log.next_offset
                parts.append(r.PartitionData(partition_index=p.partition, error_code=0, high_watermark=end,
                                             last_stable_offset=end, log_start_offset=0, records=records))
            responses.append(r.FetchableTopicResponse(topic=t.topic, topic_id=t.topic_id, partitions=parts))
        if total == 0:
            await asyncio.sleep(min(max(body.max_wait_ms, 0), FETCH_WAIT_CAP_MS) / 1000)
        return r(error_code=0, session_id=0, responses=responses)

    def _h0(self, header: Any, body: Any, version: int) -> Any:  # Produce
        r = m.ProduceResponse
        responses = []
        for t in body.topic_data:
            parts = [r.PartitionProduceResponse(index=p.index, error_code=0,
                                                base_offset=self._log(t.name, p.index).append(p.records),
                                                log_append_time_ms=-1, log_start_offset=0)
                     for p in t.partition_data]
            responses.append(r.TopicProduceResponse(name=t.name, partition_responses=parts))
        return None if body.acks == 0 else r(responses=responses)

    def _h22(self, header: Any, body: Any, version: int) -> Any:  # InitProducerId
        return m.InitProducerIdResponse(error_code=0, producer_id=1000, producer_epoch=0)

    def _h71(self, header: Any, body: Any, version: int) -> Any:  # GetTelemetrySubscriptions
        # A long push interval and no requested metrics: the client asks again rarely and never pushes.
        return m.GetTelemetrySubscriptionsResponse(client_instance_id=topic_id(header.client_id or ""),
                                                   subscription_id=1, push_interval_ms=300_000)


def _fit(obj: Any, version: int, structs: dict[str, type]) -> None:
    """Reset the fields that ``version`` does not have to their defaults, through nested structs, so that a
    handler can fill in every field once and the codec still accepts the message at any version."""
    for f in obj._fields:
        value = getattr(obj, f["name"])
        lo, hi = f["tagged"] if "tag" in f else f["versions"]
        if not lo <= version <= hi:
            default, fresh = m.default_factory(f, structs)
            setattr(obj, f["name"], default() if fresh else default)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, m.Message):
                    _fit(item, version, structs)
        elif isinstance(value, m.Message):
            _fit(value, version, structs)


def _default_response(key: int) -> Any:
    return m.class_for_table(codec.response_table(key))()


# ---------------------------------------------------------------- client drivers (child processes)

CONFLUENT_PRODUCER = {"client.id": CLIENT_IDS["confluent-kafka"], "linger.ms": 100, "acks": "all"}
CONFLUENT_CONSUMER = {"client.id": CLIENT_IDS["confluent-kafka"], "group.id": GROUP,
                      "auto.offset.reset": "earliest", "enable.auto.commit": False,
                      "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}
KAFKA_PYTHON_PRODUCER = {"client_id": CLIENT_IDS["kafka-python"], "linger_ms": 100}
KAFKA_PYTHON_CONSUMER = {"client_id": CLIENT_IDS["kafka-python"], "group_id": GROUP,
                         "auto_offset_reset": "earliest", "enable_auto_commit": False,
                         "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
AIOKAFKA_PRODUCER = {"client_id": CLIENT_IDS["aiokafka"], "linger_ms": 100}
AIOKAFKA_CONSUMER = {"client_id": CLIENT_IDS["aiokafka"], "group_id": GROUP, "auto_offset_reset": "earliest",
                     "enable_auto_commit": False, "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


def drive_confluent_producer(bootstrap: str, codec_name: str) -> int:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, **CONFLUENT_PRODUCER, "compression.type": codec_name})
    p.list_topics(TOPIC, timeout=10)  # connected and leader known: the three records go in one batch
    for key, value, headers in RECORDS:
        p.produce(TOPIC, value=value, key=key, headers=headers, partition=0)
    left = p.flush(15)
    return 0 if left == 0 else 1


def drive_confluent_consumer(bootstrap: str, codec_name: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, **CONFLUENT_CONSUMER})
    c.subscribe([TOPIC])
    got, deadline = 0, time.monotonic() + 10
    while time.monotonic() < deadline and got < len(RECORDS):
        msg = c.poll(0.5)
        if msg is not None and msg.error() is None:
            got += 1
    c.commit(offsets=[TopicPartition(TOPIC, 0, 1)], asynchronous=False)
    c.close()
    return 0 if got else 1


def drive_kafka_python_producer(bootstrap: str, codec_name: str) -> int:
    from kafka import KafkaProducer

    compression = None if codec_name == "none" else codec_name
    p = KafkaProducer(bootstrap_servers=bootstrap, compression_type=compression, **KAFKA_PYTHON_PRODUCER)
    futures = [p.send(TOPIC, key=k, value=v, headers=h, partition=0) for k, v, h in RECORDS]
    p.flush(15)
    ok = all(f.succeeded() for f in futures)
    p.close(5)
    return 0 if ok else 1


def drive_kafka_python_consumer(bootstrap: str, codec_name: str) -> int:
    from kafka import KafkaConsumer
    from kafka.structs import OffsetAndMetadata, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, **KAFKA_PYTHON_CONSUMER)
    c.subscribe([TOPIC])
    got, deadline = 0, time.monotonic() + 10
    while time.monotonic() < deadline and got < len(RECORDS):
        for records in c.poll(timeout_ms=500).values():
            got += len(records)
    c.commit({TopicPartition(TOPIC, 0): OffsetAndMetadata(1, "", -1)})
    c.close()
    return 0 if got else 1


def drive_aiokafka_producer(bootstrap: str, codec_name: str) -> int:
    from aiokafka import AIOKafkaProducer

    async def run() -> int:
        compression = None if codec_name == "none" else codec_name
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type=compression, **AIOKAFKA_PRODUCER)
        await p.start()
        try:
            futures = [await p.send(TOPIC, key=k, value=v, headers=h, partition=0) for k, v, h in RECORDS]
            await asyncio.wait_for(asyncio.gather(*futures), 15)
        finally:
            await p.stop()
        return 0

    return asyncio.run(run())


def drive_aiokafka_consumer(bootstrap: str, codec_name: str) -> int:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run() -> int:
        c = AIOKafkaConsumer(TOPIC, bootstrap_servers=bootstrap, **AIOKAFKA_CONSUMER)
        await c.start()
        try:
            try:
                await asyncio.wait_for(c.getone(), 10)
                got = 1
            except TimeoutError:
                got = 0
            await c.commit({TopicPartition(TOPIC, 0): 1})
        finally:
            await c.stop()
        return 0 if got else 1

    return asyncio.run(run())


DRIVERS = {
    "confluent-kafka-producer": drive_confluent_producer,
    "confluent-kafka-consumer": drive_confluent_consumer,
    "kafka-python-producer": drive_kafka_python_producer,
    "kafka-python-consumer": drive_kafka_python_consumer,
    "aiokafka-producer": drive_aiokafka_producer,
    "aiokafka-consumer": drive_aiokafka_consumer,
}


# ---------------------------------------------------------------- scenarios

@dataclass
class Scenario:
    client: str
    name: str
    argv: list[str]
    config: str  # how the client was configured, for the README
    codec: str | None = None  # for producers
    stdin: bytes | None = None
    status: str = "not run"


def _py(driver: str, bootstrap: str, codec_name: str | None = None) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--drive", driver, "--bootstrap", bootstrap]
    return argv + (["--codec", codec_name] if codec_name else [])


def _fmt(conf: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in conf.items())


def scenarios(bootstrap: str, kcat: str | None) -> list[Scenario]:
    out: list[Scenario] = []
    for c in CODECS:
        out.append(Scenario("confluent-kafka", f"producer-{c}", _py("confluent-kafka-producer", bootstrap, c),
                            f"Producer({{{_fmt({**CONFLUENT_PRODUCER, 'compression.type': c})}}}); "
                            "list_topics('golden'); produce() x3 to partition 0 with key, value, headers; "
                            "flush(15)", c))
    out.append(Scenario("confluent-kafka", "consumer", _py("confluent-kafka-consumer", bootstrap),
                        f"Consumer({{{_fmt(CONFLUENT_CONSUMER)}}}); subscribe(['golden']); poll(0.5) until 3 "
                        "records or 10 s; commit(offsets=[TopicPartition('golden', 0, 1)], "
                        "asynchronous=False); close()"))
    for c in CODECS:
        arg = "None" if c == "none" else repr(c)
        out.append(Scenario("kafka-python", f"producer-{c}", _py("kafka-python-producer", bootstrap, c),
                            f"KafkaProducer({_fmt(KAFKA_PYTHON_PRODUCER)}, compression_type={arg}); "
                            "send() x3 to partition 0 with key, value, headers; flush(15)", c))
    out.append(Scenario("kafka-python", "consumer", _py("kafka-python-consumer", bootstrap),
                        f"KafkaConsumer({_fmt(KAFKA_PYTHON_CONSUMER)}); subscribe(['golden']); poll(500 ms) "
                        "until 3 records or 10 s; commit({TopicPartition('golden', 0): "
                        "OffsetAndMetadata(1, '', -1)}); close()"))
    for c in CODECS:
        arg = "None" if c == "none" else repr(c)
        out.append(Scenario("aiokafka", f"producer-{c}", _py("aiokafka-producer", bootstrap, c),
                            f"AIOKafkaProducer({_fmt(AIOKAFKA_PRODUCER)}, compression_type={arg}); "
                            "send() x3 to partition 0 with key, value, headers; await the futures; stop()",
                            c))
    out.append(Scenario("aiokafka", "consumer", _py("aiokafka-consumer", bootstrap),
                        f"AIOKafkaConsumer('golden', {_fmt(AIOKAFKA_CONSUMER)}); getone() with a 10 s "
                        "timeout; commit({TopicPartition('golden', 0): 1}); stop()"))
    if kcat:
        common = [kcat, "-b", bootstrap, "-X", f"client.id={CLIENT_IDS['kcat']}"]
        out.append(Scenario("kcat", "metadata", [*common, "-L"], "kcat -L"))
        lines = b"".join(k + b":" + v + b"\n" for k, v, _ in RECORDS)
        hdrs = [a for name, value in HEADERS for a in ("-H", f"{name}={value.decode()}")]
        for c in CODECS:
            argv = [*common, "-P", "-t", TOPIC, "-p", "0", "-K", ":", *hdrs, "-z", c, "-X", "linger.ms=100"]
            out.append(Scenario("kcat", f"producer-{c}", argv, "stdin: 'key:value' lines", c, stdin=lines))
        argv = [*common, "-C", "-t", TOPIC, "-p", "0", "-o", "beginning", "-e"]
        out.append(Scenario("kcat", "consumer", argv, "simple consumer to the end of the partition"))
        argv = [*common, "-G", GROUP, TOPIC, "-e", "-X", "auto.offset.reset=earliest",
                "-X", "auto.commit.interval.ms=200"]
        out.append(Scenario("kcat", "group", argv,
                            "balanced consumer, exits at the end of the partition (auto commit on close)"))
    return out


def run_bounded(argv: list[str], stdin: bytes | None, timeout: float) -> str:
    """Run one client; on overrun SIGINT it (so it can leave its group), then kill it."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        _, err = proc.communicate(stdin, timeout=timeout)
        status = f"exit {proc.returncode}"
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=5)
            status = f"overran {timeout:.0f} s, stopped by SIGINT"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
            status = f"overran {timeout:.0f} s, killed"
    if proc.returncode not in (0, None) and err:
        tail = err.decode(errors="replace").strip().splitlines()[-3:]
        print("    " + "\n    ".join(tail), file=sys.stderr)
    return status


# ---------------------------------------------------------------- choosing and saving fixtures

REQUIRED = ("ApiVersions", "Metadata", "Produce", "Fetch", "JoinGroup", "SyncGroup", "OffsetCommit")


def _name(key: int) -> str:
    return codec.api_name(key) or f"Unknown{key}"


def _record_count(records: Any) -> int:
    """How many records the v2 batches in ``records`` hold (from their headers)."""
    data, pos, count = bytes(records or b""), 0, 0
    while pos + 61 <= len(data):
        count += struct.unpack_from(">i", data, pos + 23)[0] + 1
        pos += 12 + struct.unpack_from(">i", data, pos + 8)[0]
    return count


def _variant(frame: Frame) -> str | None:
    """What sets a frame apart from others of its API version, for keeping a second one; None if it does
    not decode (such a frame is kept all the same, under its plain name, and the tests report it)."""
    try:
        _, body = codec.decode_request(frame.data)
    except codec.DecodeError:
        return None
    if frame.api_key == 0:  # Produce: keep a request with all of RECORDS (in one batch or more)
        count = sum(_record_count(p.records) for t in body.topic_data for p in t.partition_data)
        return "all" if count == len(RECORDS) else "some" if count else "empty"
    if frame.api_key == 3:  # Metadata: all topics (null array), no topics, or named topics
        return "all" if body.topics is None else "topics" if body.topics else "none"
    if frame.api_key == 11:  # JoinGroup: the first join, then the rejoin with the assigned member id
        return "member" if body.member_id else ""
    return ""


def select(runs: list[tuple[Scenario, list[Frame]]]) -> dict[str, tuple[Scenario, Frame]]:
    """file name -> (scenario, frame) for one client: the first frame of each API version, plus one frame of
    a second variant (see ``_variant``) as ``<Api>_v<N>_<variant>.bin``; for Produce, of each producer
    scenario, the first request with all of RECORDS (else the first with any) as ``Produce_v<N>_<codec>.bin``.
    """
    chosen: dict[str, tuple[Scenario, Frame]] = {}
    variants: dict[str, list[str | None]] = {}
    for sc, frames in runs:
        for f in frames:
            base = f"{_name(f.api_key)}_v{f.api_version}"
            variant = _variant(f)
            if f.api_key == 0:
                if sc.codec and variant in ("all", "some"):
                    name = f"{base}_{sc.codec}.bin"
                    have = variants.get(name)
                    if have is None or (have == ["some"] and variant == "all"):
                        chosen[name] = (sc, f)
                        variants[name] = [variant]
                continue
            seen = variants.setdefault(base, [])
            if not seen:
                chosen[f"{base}.bin"] = (sc, f)
            elif len(seen) == 1 and variant and variant not in seen:
                chosen[f"{base}_{variant}.bin"] = (sc, f)
            else:
                continue
            seen.append(variant)
    return chosen


def versions() -> dict[str, str]:
    import aiokafka
    import confluent_kafka
    import kafka

    out = {
        "confluent-kafka": f"confluent-kafka {confluent_kafka.__version__} "
                           f"(librdkafka {confluent_kafka.libversion()[0]})",
        "kafka-python": f"kafka-python {kafka.__version__}",
        "aiokafka": f"aiokafka {aiokafka.__version__}",
    }
    kcat = shutil.which("kcat")
    if kcat:
        text = subprocess.run([kcat, "-V"], capture_output=True, text=True, timeout=10, check=False).stdout
        found = re.search(r"Version (\S+) .*librdkafka (\S+)", text)
        out["kcat"] = f"kcat {found[1]} (librdkafka {found[2]}, Debian package)" if found else "kcat"
    return out


README_HEAD = """\
# Golden request frames captured from real Kafka clients

Every `.bin` file here is one request frame exactly as a real client sent it, without the 4-byte size
prefix. `tests/unit/test_golden_bytes.py` decodes and re-encodes each one and expects the same bytes;
`tests/unit/test_client_batches.py` checks the record batches inside the Produce requests. This file and
`manifest.json` are written by `scripts/capture_golden.py`; regenerate them rather than edit them.

## How they were captured

- Date (UTC): {date}
- Command: `{command}` (from the repository root)
- Python {python} on {system}
{libraries}

The script starts an asyncio responder on 127.0.0.1 (a free port) built on `protocol.codec` alone. It
records every request frame and answers just enough for the clients to go on: ApiVersions advertises
every API key's full spec range (an unsupported ApiVersions version would get a v0 body with error 35 and
the ranges); Metadata names one broker (the responder) and the topic `golden` (one partition, led by the
responder) plus any topic asked for; FindCoordinator names the responder (v0-3 single, v4+
`coordinators`); JoinGroup v4+ answers a first join without a member id with MEMBER_ID_REQUIRED (79) and
a member id, then accepts and makes the member the leader with its own metadata; SyncGroup returns the
leader's assignment for the member; Heartbeat and LeaveGroup succeed; OffsetCommit returns error 0 for
each partition; OffsetFetch returns offset -1; ListOffsets returns 0 for earliest and the end offset for
latest; Produce stores the batches and returns incrementing base offsets; Fetch returns the stored
batches (with nothing to return it waits min(max_wait_ms, {fetch_cap} ms) and returns no records);
InitProducerId returns producer id 1000, epoch 0; GetTelemetrySubscriptions asks for no metrics;
anything else gets a default-valued response. The log and the groups are reset between clients, so each
client's consumer reads back what that client's producers wrote.

Each scenario runs in its own process (kcat as itself) with a {timeout} s limit: SIGINT on overrun, then
SIGKILL. Every producer sends these three records, in order, to partition 0 of `golden` (kcat can give all
records of a run only the same headers, so every client does):

```
{records}
```

Kept per client: the first frame of each (API, version); one frame of a second kind as
`<Api>_v<N>_<kind>.bin`, where the kinds are `member` for the JoinGroup rejoin with the member id that
MEMBER_ID_REQUIRED assigned, and `all` / `topics` / `none` for a Metadata request for all topics (null
array), named topics or no topics; and, of each producer scenario, the first Produce that carries all
three records as `Produce_v<N>_<codec>.bin`. The compression codec is the one the scenario configured;
every client produced with all five (none, gzip, snappy, lz4, zstd).

kcat is the Debian package, which links its own librdkafka: its frames come from an older librdkafka
than confluent-kafka's wheel, so the two sets differ in the versions they choose.

## Scenarios

| client | scenario | configuration | command | result |
| --- | --- | --- | --- | --- |
"""


def _batch_summary(frame: Frame) -> str:
    _, body = codec.decode_request(frame.data)
    data = b"".join(bytes(p.records or b"") for t in body.topic_data for p in t.partition_data)
    heads, pos, count = [], 0, 0
    while pos + 61 <= len(data):
        head = struct.unpack_from(">qiibIhiqqqhii", data, pos)
        if not heads:
            payload = data[pos + 61:pos + 12 + head[1]]
        heads.append(head)
        count += head[12]
        pos += 12 + head[1]
    attrs, pid, epoch, seq = heads[0][5], heads[0][9], heads[0][10], heads[0][11]
    if attrs & 7 == 2:
        kind = "snappy, xerial framing" if payload.startswith(b"\x82SNAPPY\x00") else "snappy, raw block"
    else:
        kind = {0: "uncompressed", 1: "gzip", 3: "lz4 frame", 4: "zstd frame"}.get(attrs & 7, "?")
    return f"{body.acks} | {len(heads)} | {count} | {attrs:#06x} | {pid} | {epoch} | {seq} | {kind}"


def write_readme(out: Path, runs: list[Scenario], chosen: dict[str, dict[str, tuple[Scenario, Frame]]],
                 libs: dict[str, str], argv: list[str], gaps: dict[str, list[str]]) -> None:
    text = README_HEAD.format(
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"), command=" ".join(argv),
        python=platform.python_version(), system=f"{platform.system()} {platform.machine()}",
        libraries="\n".join(f"- {client}: {version}" for client, version in libs.items()),
        fetch_cap=FETCH_WAIT_CAP_MS, timeout=f"{SCENARIO_TIMEOUT_S:.0f}",
        records="\n".join(f"key={k!r} value={v!r} headers={h!r}" for k, v, h in RECORDS))
    lines = []
    for sc in runs:
        cmd = " ".join("python" if a == sys.executable else "kcat" if a == shutil.which("kcat") else a
                       for a in sc.argv)
        cmd = cmd.replace(str(Path(__file__).resolve()), "scripts/capture_golden.py")
        cmd = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", cmd)
        lines.append(f"| {sc.client} | {sc.name} | {sc.config.replace('|', '/')} | `{cmd}` | {sc.status} |")
    lines += ["", "## Fixtures", "", "| file | API key | version | client id | scenario | bytes |",
              "| --- | --- | --- | --- | --- | --- |"]
    for client, files in chosen.items():
        for fname, (sc, f) in sorted(files.items()):
            lines.append(f"| {client}/{fname} | {f.api_key} | {f.api_version} | {f.client_id} | {sc.name} "
                         f"| {len(f.data)} |")
    lines += ["", "## Produce batches", "", "As the clients built them (from the v2 batch headers).", "",
              "| file | acks | batches | records | attributes | producer id | epoch | base seq | payload |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for client, files in chosen.items():
        for fname, (_, f) in sorted(files.items()):
            if f.api_key == 0:
                lines.append(f"| {client}/{fname} | {_batch_summary(f)} |")
    lines += ["", "## Gaps", ""]
    missing = [f"- {client}: no {api} request was captured." for client, apis in gaps.items() for api in apis]
    lines += missing or [f"- None: every client sent each of {', '.join(REQUIRED)}."]
    (out / "README.md").write_text(text + "\n".join(lines) + "\n")


def capture(out: Path, argv: list[str], only: set[str] | None) -> int:
    responder = Responder()
    responder.start()
    kcat = shutil.which("kcat")
    if kcat is None:
        print("kcat not found: install it with `apt-get install -y kcat`; skipping kcat", file=sys.stderr)
    all_runs = [s for s in scenarios(responder.bootstrap, kcat) if only is None or s.client in only]
    libs = versions()
    chosen: dict[str, dict[str, tuple[Scenario, Frame]]] = {}
    for client in dict.fromkeys(s.client for s in all_runs):
        responder.reset()
        runs = []
        for sc in (s for s in all_runs if s.client == client):
            label = f"{client}/{sc.name}"
            responder.set_scenario(label)
            print(f"{label}: ", end="", flush=True)
            sc.status = run_bounded(sc.argv, sc.stdin, SCENARIO_TIMEOUT_S)
            time.sleep(0.3)
            frames = responder.take(label)
            print(f"{sc.status}, {len(frames)} frames")
            for f in frames:
                if f.decode_error:
                    print(f"  ! {_name(f.api_key)} v{f.api_version}: {f.decode_error}", file=sys.stderr)
            runs.append((sc, frames))
        chosen[client] = select(runs)
        for fname, (_, f) in chosen[client].items():
            if f.api_key == 0 and _variant(f) != "all":
                print(f"  ! {client}/{fname} holds only some of the {len(RECORDS)} records", file=sys.stderr)
    manifest: dict[str, Any] = {}
    for client, files in chosen.items():
        d = out / client
        if d.exists():
            for old in d.glob("*.bin"):
                old.unlink()
        d.mkdir(parents=True, exist_ok=True)
        for fname, (sc, f) in files.items():
            (d / fname).write_bytes(f.data)
            manifest[f"{client}/{fname}"] = {
                "client": client, "library": libs.get(client, ""), "scenario": sc.name, "api_key": f.api_key,
                "api_name": _name(f.api_key), "api_version": f.api_version, "client_id": f.client_id,
                "codec": sc.codec if f.api_key == 0 else None, "bytes": len(f.data),
            }
    (out / "manifest.json").write_text(json.dumps(dict(sorted(manifest.items())), indent=1) + "\n")
    gaps = {client: [api for api in REQUIRED if not any(n.startswith(api + "_v") for n in files)]
            for client, files in chosen.items()}
    write_readme(out, [s for s in all_runs], chosen, libs, argv, gaps)
    total = sum(len(f.data) for files in chosen.values() for _, f in files.values())
    print(f"wrote {len(manifest)} fixtures, {total} bytes, to {out}")
    for client, missing in gaps.items():
        if missing:
            print(f"  {client}: missing {', '.join(missing)}")
    return 0


def main(args: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "unit" / "golden")
    ap.add_argument("--client", action="append", choices=sorted(CLIENT_IDS),
                    help="capture only this client (repeatable)")
    ap.add_argument("--drive", choices=sorted(DRIVERS), help=argparse.SUPPRESS)
    ap.add_argument("--bootstrap", help=argparse.SUPPRESS)
    ap.add_argument("--codec", default="none", help=argparse.SUPPRESS)
    ns = ap.parse_args(args)
    if ns.drive:
        return DRIVERS[ns.drive](ns.bootstrap, ns.codec)
    cmd = ["python", "scripts/capture_golden.py", *(args if args is not None else sys.argv[1:])]
    return capture(ns.out, cmd, set(ns.client) if ns.client else None)


if __name__ == "__main__":
    sys.exit(main())
