"""protocol.error_responses: every API and version the broker serves has an error answer in its own
response shape, which encodes, carries the error code where the client looks, and mirrors the
request's topics and partitions (Kafka's AbstractRequest.getErrorResponse)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from broker.handlers import default_registry
from protocol import codec
from protocol import messages as m
from protocol.error_responses import error_response
from protocol.errors import ErrorCode

UNKNOWN = int(ErrorCode.UNKNOWN_SERVER_ERROR)
_TOPIC_ID = uuid.UUID("01234567-89ab-cdef-0123-456789abcdef")


def _in(vrange: tuple[int, int] | None, version: int) -> bool:
    return vrange is not None and vrange[0] <= version <= vrange[1]


def sample_request(api_key: int, version: int) -> Any:
    """A request with one entry in every array (so mirroring shows), round-tripped through the codec."""
    from protocol.messages import class_for_table

    table = codec.request_table(api_key)
    cls = class_for_table(table)
    obj = cls()
    flexible = _in(table["flexible"], version)
    for f in table["fields"]:
        present = (flexible and _in(f["tagged"], version)) if "tag" in f else _in(f["versions"], version)
        if present:
            setattr(obj, f["name"], _value(table, f["type"], f["name"], version))
    if api_key == 0:
        obj.acks = -1
    frame = b"".join(bytes(p) for p in codec.encode_request(api_key, version, 7, "t", obj))
    _, body = codec.decode_request(memoryview(frame)[4:])
    return body


def _value(table: dict, ftype: str, name: str, version: int) -> Any:
    from protocol.messages import class_for_table

    if ftype.startswith("[]"):
        return [_value(table, ftype[2:], name, version)]
    if ftype in table["structs"]:
        cls = class_for_table(table)._structs[ftype]
        obj = cls()
        flexible = _in(table["flexible"], version)
        for f in table["structs"][ftype]:
            present = (flexible and _in(f["tagged"], version)) if "tag" in f else _in(f["versions"], version)
            if present:
                setattr(obj, f["name"], _value(table, f["type"], f["name"], version))
        return obj
    return {"string": f"{name}-x", "uuid": _TOPIC_ID, "bool": False, "records": None, "bytes": b"",
            "float64": 0.0}.get(ftype, 1)


def error_codes(obj: Any) -> list[int]:
    """Every error code in a decoded response (``error_code`` and ``*_error_code``), depth first."""
    found: list[int] = []
    for f in type(obj)._fields:
        value = getattr(obj, f["name"])
        if f["name"] == "error_code" or f["name"].endswith("_error_code"):
            found.append(value)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, m.Message):
                    found.extend(error_codes(item))
        elif isinstance(value, m.Message):
            found.extend(error_codes(value))
    return found


# DescribeLogDirs v0-2 has no top-level error code and its results are log dirs, not the request's
# topics: Kafka answers those versions with empty results, and so does Moldau.
NO_ERROR_FIELD = {(35, 0), (35, 1), (35, 2)}

SERVED = [(e.api_key, v) for e in default_registry() for v in range(e.min_version, e.max_version + 1)]


@pytest.mark.parametrize(("api_key", "version"), SERVED, ids=[f"{codec.api_name(k)}-v{v}" for k, v in SERVED])
def test_every_served_api_version_has_an_encodable_error_response(api_key: int, version: int) -> None:
    request = sample_request(api_key, version)
    response = error_response(api_key, version, request, UNKNOWN)
    frame = b"".join(bytes(p) for p in codec.encode_response(api_key, version, 7, response))
    header, decoded = codec.decode_response(api_key, version, memoryview(frame)[4:])
    assert header.correlation_id == 7
    codes = error_codes(decoded)
    if (api_key, version) in NO_ERROR_FIELD:
        return
    assert UNKNOWN in codes, f"{codec.api_name(api_key)} v{version}: no error code in {decoded}"


def test_produce_error_mirrors_topics_and_partitions() -> None:
    request = m.ProduceRequest(acks=-1, timeout_ms=1000, topic_data=[
        m.ProduceRequest.TopicProduceData(name="a", partition_data=[
            m.ProduceRequest.PartitionProduceData(index=0), m.ProduceRequest.PartitionProduceData(index=3)])])
    response = error_response(0, 9, request, UNKNOWN)
    assert [(t.name, [(p.index, p.error_code, p.base_offset) for p in t.partition_responses])
            for t in response.responses] == [("a", [(0, UNKNOWN, -1), (3, UNKNOWN, -1)])]


def test_acks_zero_produce_has_no_error_response() -> None:
    assert error_response(0, 9, m.ProduceRequest(acks=0), UNKNOWN) is None


def test_fetch_error_sets_top_level_and_partition_codes_with_unknown_offsets() -> None:
    request = sample_request(1, 12)
    response = error_response(1, 12, request, UNKNOWN)
    assert response.error_code == UNKNOWN
    [topic] = response.responses
    assert topic.topic == "topic-x"
    [partition] = topic.partitions
    assert (partition.partition_index, partition.error_code, partition.high_watermark) == (1, UNKNOWN, -1)


def test_plain_value_arrays_become_entries_keyed_by_the_value() -> None:
    """OffsetFetch v1 lists partition numbers, DeleteTopics v1 topic names, DescribeGroups group ids."""
    fetch = m.OffsetFetchRequest(group_id="g", topics=[
        m.OffsetFetchRequest.OffsetFetchRequestTopic(name="t", partition_indexes=[2, 5])])
    response = error_response(9, 1, fetch, UNKNOWN)
    assert [(p.partition_index, p.error_code, p.committed_offset) for p in response.topics[0].partitions] == [
        (2, UNKNOWN, -1), (5, UNKNOWN, -1)]
    deleted = error_response(20, 1, m.DeleteTopicsRequest(topic_names=["x", "y"]), UNKNOWN)
    assert [(r.name, r.error_code) for r in deleted.responses] == [("x", UNKNOWN), ("y", UNKNOWN)]
    groups = error_response(15, 0, m.DescribeGroupsRequest(groups=["g1"]), UNKNOWN)
    assert [(g.group_id, g.error_code) for g in groups.groups] == [("g1", UNKNOWN)]


def test_request_numbers_other_than_partition_keys_are_not_echoed() -> None:
    """An epoch or timestamp of the request is not an answer: the response keeps its -1 defaults."""
    request = sample_request(23, 4)  # OffsetForLeaderEpoch: partition, current_leader_epoch, leader_epoch
    [topic] = error_response(23, 4, request, UNKNOWN).topics
    [partition] = topic.partitions
    assert (partition.partition, partition.leader_epoch, partition.end_offset) == (1, -1, -1)


def test_metadata_error_for_all_topics_has_no_topics() -> None:
    response = error_response(3, 12, m.MetadataRequest(topics=None), UNKNOWN)
    assert response.topics == [] and response.brokers == []
