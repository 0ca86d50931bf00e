"""Hostile topic requests on the wire: huge partition counts, illegal topic names, Metadata by topic id.

Each test sends raw requests to the real broker process (a client library would refuse to build most
of them) and checks Kafka's answer:

- a CreateTopics or CreatePartitions request that would create more partitions than the controller's
  10,000 records per operation gets POLICY_VIOLATION "Excessively large number of partitions per
  request." at once, creates nothing, and another client is answered meanwhile;
- a topic name Kafka's ``Topic.validate`` refuses (``"abc\\n"``: ``$`` in a regex would let the newline
  through) gets INVALID_TOPIC_EXCEPTION from CreateTopics and from Metadata auto-creation, and no topic
  is created;
- Metadata v10-v11 naming a topic by id (or with a null name) is INVALID_REQUEST for the whole request,
  as Kafka's ``KafkaApis.handleTopicMetadataRequest`` throws; v12 resolves ids, an unknown one gets
  UNKNOWN_TOPIC_ID with a null name, and when any id is given, names are ignored;
- a legal Metadata request of more array elements than one message may hold closes the connection
  before they are built; one name repeated 200,000 times is answered (and auto-created) once;
- on the file engine, DeleteTopics of ``__consumer_offsets`` pipelined among offset commits (found by
  the fuzzer: the coordinator saw the topic with no partitions yet, or opened files the deletion was
  removing) answers every commit with NONE or a retriable error, logs no error, and commits work after.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable

from protocol import codec
from protocol import messages as m
from protocol.errors import ErrorCode
from protocol.primitives import ZERO_UUID
from tests.compat.conftest import BrokerProcess, KafkaSocket, finish
from tests.waiting import wait_until

METADATA, API_VERSIONS, CREATE_TOPICS, CREATE_PARTITIONS = 3, 18, 19, 37
OFFSET_COMMIT, OFFSET_FETCH, DELETE_TOPICS = 8, 9, 20
OFFSETS_TOPIC = "__consumer_offsets"
HUGE_COUNTS = (8_388_608, 2**31 - 1)
TOO_MANY = "Excessively large number of partitions per request."

RawSocket = Callable[[BrokerProcess], KafkaSocket]


def unique(prefix: str) -> str:
    return f"hostile-{prefix}-{uuid.uuid4().hex[:8]}"


def topic_names(sock: KafkaSocket) -> list[str]:
    response = sock.request(METADATA, 12, 99, m.MetadataRequest(topics=None))
    return [t.name for t in response.topics]


def send_then_check_others_served(broker: BrokerProcess, raw_socket: RawSocket, api_key: int, version: int,
                                  body: object) -> object:
    """Send ``body`` on one connection, have a second client answered (ApiVersions) before reading the
    first answer, and return that first answer."""
    hostile = raw_socket(broker)
    hostile.send(codec.encode_request(api_key, version, 7, "hostile", body))
    other = raw_socket(broker)
    answer = other.request(API_VERSIONS, 3, 1, m.ApiVersionsRequest(client_software_name="other",
                                                                    client_software_version="1"))
    assert answer.error_code == 0
    header, response = codec.decode_response(api_key, version, hostile.recv_frame())
    assert header.correlation_id == 7
    return response


# ------------------------------------------------------------------ partition counts

def test_create_topics_with_a_huge_partition_count_is_a_policy_violation(broker: BrokerProcess,
                                                                          raw_socket: RawSocket) -> None:
    """Kafka's controller refuses a CreateTopics that would create more than 10,000 partitions
    (``validateTotalNumberOfPartitions``): every topic of the request gets POLICY_VIOLATION, nothing is
    created, and the broker keeps answering other clients."""
    req = m.CreateTopicsRequest
    for count in HUGE_COUNTS:
        name = unique("huge")
        response = send_then_check_others_served(broker, raw_socket, CREATE_TOPICS, 7, req(
            timeout_ms=10000, topics=[req.CreatableTopic(name=name, num_partitions=count, replication_factor=1)]))
        assert [(t.name, t.error_code, t.error_message) for t in response.topics] == [
            (name, ErrorCode.POLICY_VIOLATION, TOO_MANY)]
        assert name not in topic_names(raw_socket(broker))


def test_create_topics_limit_counts_every_topic_and_assignment(broker: BrokerProcess, raw_socket: RawSocket) -> None:
    """The 10,000 bound is on the whole request: two topics of 5,000 partitions and one of 1 exceed it
    together (all three answered POLICY_VIOLATION), and a manual assignment counts one partition per
    entry; 10,000 in all is still accepted (validate_only here, so nothing is made)."""
    req = m.CreateTopicsRequest
    names = [unique("sum") for _ in range(3)]
    response = send_then_check_others_served(broker, raw_socket, CREATE_TOPICS, 7, req(
        timeout_ms=10000, validate_only=True,
        topics=[req.CreatableTopic(name=names[0], num_partitions=5000, replication_factor=1),
                req.CreatableTopic(name=names[1], num_partitions=5000, replication_factor=1),
                req.CreatableTopic(name=names[2], num_partitions=1, replication_factor=1)]))
    assert [(t.name, t.error_code, t.error_message) for t in response.topics] == [
        (n, ErrorCode.POLICY_VIOLATION, TOO_MANY) for n in names]

    assignments = [req.CreatableReplicaAssignment(partition_index=i, broker_ids=[1]) for i in range(10_001)]
    response = send_then_check_others_served(broker, raw_socket, CREATE_TOPICS, 7, req(
        timeout_ms=10000, topics=[req.CreatableTopic(name=names[0], num_partitions=-1, replication_factor=-1,
                                                     assignments=assignments)]))
    assert [(t.error_code, t.error_message) for t in response.topics] == [(ErrorCode.POLICY_VIOLATION, TOO_MANY)]

    response = raw_socket(broker).request(CREATE_TOPICS, 7, 3, req(
        timeout_ms=10000, validate_only=True,
        topics=[req.CreatableTopic(name=names[0], num_partitions=9_999, replication_factor=1),
                req.CreatableTopic(name=names[1], num_partitions=1, replication_factor=1)]))
    assert [(t.error_code, t.num_partitions) for t in response.topics] == [(0, 9_999), (0, 1)]


def test_create_partitions_with_a_huge_count_is_a_policy_violation(broker: BrokerProcess,
                                                                    raw_socket: RawSocket) -> None:
    """CreatePartitions to 8,388,608 or 2^31-1 partitions would add more than 10,000: POLICY_VIOLATION at
    once, the topic keeps its partitions, and other clients are answered meanwhile."""
    name = unique("grow")
    req = m.CreateTopicsRequest
    created = raw_socket(broker).request(CREATE_TOPICS, 7, 1, req(timeout_ms=10000, topics=[
        req.CreatableTopic(name=name, num_partitions=2, replication_factor=1)]))
    assert created.topics[0].error_code == 0
    preq = m.CreatePartitionsRequest
    for count in HUGE_COUNTS:
        response = send_then_check_others_served(broker, raw_socket, CREATE_PARTITIONS, 3, preq(
            timeout_ms=10000, validate_only=False, topics=[preq.CreatePartitionsTopic(name=name, count=count)]))
        assert [(r.name, r.error_code, r.error_message) for r in response.results] == [
            (name, ErrorCode.POLICY_VIOLATION, TOO_MANY)]
    metadata = raw_socket(broker).request(METADATA, 12, 2, m.MetadataRequest(topics=[
        m.MetadataRequest.MetadataRequestTopic(name=name)], allow_auto_topic_creation=False))
    assert len(metadata.topics[0].partitions) == 2
    # 10,000 more is the most one request may add.
    grown = raw_socket(broker).request(CREATE_PARTITIONS, 3, 4, preq(
        timeout_ms=10000, validate_only=True, topics=[preq.CreatePartitionsTopic(name=name, count=10_002, assignments=None)]))
    assert [r.error_code for r in grown.results] == [0]


def test_auto_creation_with_a_huge_num_partitions_is_refused(start_broker, raw_socket: RawSocket) -> None:
    """num.partitions above the per-operation bound cannot make Metadata auto-creation stall the broker:
    the topic is answered POLICY_VIOLATION and not created."""
    proc = start_broker("--set", "num.partitions=8388608")
    name = unique("auto")
    response = send_then_check_others_served(proc, raw_socket, METADATA, 12, m.MetadataRequest(
        topics=[m.MetadataRequest.MetadataRequestTopic(name=name)], allow_auto_topic_creation=True))
    assert [(t.name, t.error_code) for t in response.topics] == [(name, ErrorCode.POLICY_VIOLATION)]
    assert name not in topic_names(raw_socket(proc))


# ------------------------------------------------------------------ topic names

def test_topic_name_with_a_trailing_newline_is_invalid(broker: BrokerProcess, raw_socket: RawSocket) -> None:
    """Kafka's ``Topic.validate`` allows only [a-zA-Z0-9._-]: "abc\\n" gets INVALID_TOPIC_EXCEPTION from
    CreateTopics and from Metadata auto-creation (v1 and v12), and no topic is created."""
    bad = f"{unique('nl')}\n"
    sock = raw_socket(broker)
    req = m.CreateTopicsRequest
    response = sock.request(CREATE_TOPICS, 7, 1, req(timeout_ms=10000, topics=[
        req.CreatableTopic(name=bad, num_partitions=1, replication_factor=1)]))
    assert [(t.name, t.error_code) for t in response.topics] == [(bad, ErrorCode.INVALID_TOPIC_EXCEPTION)]
    for version in (1, 12):
        response = sock.request(METADATA, version, 2, m.MetadataRequest(
            topics=[m.MetadataRequest.MetadataRequestTopic(name=bad)], allow_auto_topic_creation=True))
        assert [(t.name, t.error_code) for t in response.topics] == [(bad, ErrorCode.INVALID_TOPIC_EXCEPTION)]
    names = topic_names(sock)
    assert bad not in names and bad.rstrip("\n") not in names


# ------------------------------------------------------------------ Metadata by topic id

def _create(sock: KafkaSocket, name: str) -> uuid.UUID:
    req = m.CreateTopicsRequest
    response = sock.request(CREATE_TOPICS, 7, 1, req(timeout_ms=10000, topics=[
        req.CreatableTopic(name=name, num_partitions=1, replication_factor=1)]))
    assert response.topics[0].error_code == 0
    return response.topics[0].topic_id


def _metadata(sock: KafkaSocket, version: int, *entries: tuple[str | None, uuid.UUID]) -> m.MetadataResponse:
    topic = m.MetadataRequest.MetadataRequestTopic
    return sock.request(METADATA, version, 5, m.MetadataRequest(
        topics=[topic(name=n, topic_id=i) for n, i in entries], allow_auto_topic_creation=False))


def test_metadata_v10_v11_by_topic_id_is_an_invalid_request(broker: BrokerProcess, raw_socket: RawSocket) -> None:
    """Before v12 Kafka refuses topic ids in Metadata ("Topic IDs are not supported in requests for
    version N") and null names ("Topic name can not be null for version N"): the whole request is
    answered INVALID_REQUEST, each entry with its name ("" for null, the response field is not
    nullable before v12) and id, and the connection stays usable."""
    sock = raw_socket(broker)
    name = unique("byid")
    topic_id = _create(sock, name)
    unknown = uuid.uuid4()
    for version in (10, 11):
        for entries, expected in (
            (((None, topic_id),), [("", topic_id)]),
            (((None, unknown),), [("", unknown)]),
            (((name, topic_id),), [(name, topic_id)]),
            (((name, ZERO_UUID), (None, unknown)), [(name, ZERO_UUID), ("", unknown)]),
        ):
            response = _metadata(sock, version, *entries)
            assert [(t.name, t.topic_id, t.error_code, t.partitions) for t in response.topics] == [
                (n, i, ErrorCode.INVALID_REQUEST, []) for n, i in expected], (version, entries)
        response = _metadata(sock, version, (name, ZERO_UUID))
        assert [(t.name, t.topic_id, t.error_code) for t in response.topics] == [(name, topic_id, 0)]


def test_metadata_v12_resolves_topic_ids(broker: BrokerProcess, raw_socket: RawSocket) -> None:
    """v12: a known id is answered with the topic's name, id and partitions; an unknown id with
    UNKNOWN_TOPIC_ID and a null name; a name given with an id is ignored (Kafka looks up by id whenever
    the request has any); each id is answered once."""
    sock = raw_socket(broker)
    name, other = unique("v12"), unique("v12-other")
    topic_id = _create(sock, name)
    _create(sock, other)
    unknown = uuid.uuid4()

    response = _metadata(sock, 12, (None, topic_id), (None, unknown), (None, topic_id))
    got = {t.topic_id: (t.name, t.error_code, len(t.partitions)) for t in response.topics}
    assert len(response.topics) == 2
    assert got == {topic_id: (name, 0, 1), unknown: (None, ErrorCode.UNKNOWN_TOPIC_ID, 0)}

    response = _metadata(sock, 12, ("ignored-name", topic_id), (other, ZERO_UUID))
    assert [(t.name, t.topic_id, t.error_code) for t in response.topics] == [(name, topic_id, 0)]


# ------------------------------------------------------------------ decode amplification

def test_metadata_of_a_million_empty_names_is_refused_and_others_are_served(
        broker: BrokerProcess, raw_socket: RawSocket) -> None:
    """A legal Metadata v1 frame of 1,000,001 empty names (2 MB, far below socket.request.max.bytes)
    holds more array elements than one message may: the connection is closed with a log line naming the
    bound, before the names are built, and another client is answered."""
    count = 1_000_001
    payload = struct.pack(">hhih", METADATA, 1, 3, 7) + b"hostile" + struct.pack(">i", count) + bytes(2 * count)
    hostile = raw_socket(broker)
    hostile.send(struct.pack(">i", len(payload)) + payload)
    other = raw_socket(broker)
    assert other.request(API_VERSIONS, 3, 1, m.ApiVersionsRequest(
        client_software_name="other", client_software_version="1")).error_code == 0
    assert hostile.is_closed_by_peer(5.0)
    record = broker.wait_for_log(lambda r: r.get("event") == "request.malformed_body" and r.get("correlation_id") == 3,
                                 5.0, "request.malformed_body")
    assert "more than 1000000 array elements" in record["reason"]


def test_metadata_repeating_one_name_is_answered_once(start_broker, raw_socket: RawSocket) -> None:
    """Kafka treats the topics of a Metadata request as a set: 200,000 copies of one new name give one
    answer entry and one auto-created topic."""
    proc = start_broker()
    name = unique("dup")
    topics = [m.MetadataRequest.MetadataRequestTopic(name=name)] * 200_000
    response = send_then_check_others_served(proc, raw_socket, METADATA, 9, m.MetadataRequest(
        topics=topics, allow_auto_topic_creation=True))
    assert [(t.name, t.error_code) for t in response.topics] == [(name, 0)]
    # The log is read by another thread; once the broker has stopped, every line it wrote has been read.
    assert proc.stop() == 0
    created = [r for r in proc.records if r.get("event") == "topic.created" and r.get("topic") == name]
    assert len(created) == 1


def _commit(offset: int, topic: str, group: str) -> m.OffsetCommitRequest:
    req = m.OffsetCommitRequest
    return req(group_id=group, generation_id_or_member_epoch=-1, member_id="", topics=[req.OffsetCommitRequestTopic(
        name=topic, partitions=[req.OffsetCommitRequestPartition(partition_index=0, committed_offset=offset)])])


def test_deleting_the_offsets_topic_among_commits_logs_no_error(tmp_path: object, raw_socket: RawSocket) -> None:
    from pathlib import Path

    data = Path(str(tmp_path)) / "data"
    broker = BrokerProcess(["--data-dir", str(data), "--set", "offsets.topic.num.partitions=50"], Path(str(tmp_path)),
                           memory=False)
    try:
        sock = raw_socket(broker)
        topic, group = unique("commits"), unique("commits-g")
        _create(sock, topic)
        assert sock.request(OFFSET_COMMIT, 8, 1, _commit(1, topic, group)).topics[0].partitions[0].error_code == 0
        # Pipelined: Moldau works on a connection's requests concurrently, so the deletion (and the
        # coordinator recreating the topic for the commits after it) overlap the commits.
        frames = [codec.encode_request(OFFSET_COMMIT, 8, 10 + i, "hostile", _commit(10 + i, topic, group))
                  for i in range(5)]
        frames.append(codec.encode_request(DELETE_TOPICS, 6, 20, "hostile", m.DeleteTopicsRequest(
            topics=[m.DeleteTopicsRequest.DeleteTopicState(name=OFFSETS_TOPIC)], timeout_ms=5000)))
        frames += [codec.encode_request(OFFSET_COMMIT, 8, 30 + i, "hostile", _commit(30 + i, topic, group))
                   for i in range(5)]
        sock.send([part for frame in frames for part in (frame if isinstance(frame, list) else [frame])])
        retriable = {ErrorCode.NONE, ErrorCode.COORDINATOR_NOT_AVAILABLE, ErrorCode.COORDINATOR_LOAD_IN_PROGRESS}
        for corr in [*range(10, 15), 20, *range(30, 35)]:
            if corr == 20:
                deleted = sock.read_response(DELETE_TOPICS, 6, corr)
                assert deleted.responses[0].error_code == 0, deleted
                continue
            code = sock.read_response(OFFSET_COMMIT, 8, corr).topics[0].partitions[0].error_code
            assert ErrorCode(code) in retriable, f"commit {corr}: {ErrorCode(code).name}"

        def committed() -> bool:
            answer = sock.request(OFFSET_COMMIT, 8, 40, _commit(40, topic, group))
            return answer.topics[0].partitions[0].error_code == 0
        wait_until(committed, 10, "an offset commit after the deletion")
        errors = [r for r in broker.records if r.get("level") in ("error", "critical")]
        assert not errors, f"error-level log lines: {errors[:3]}"
    finally:
        finish(broker)
