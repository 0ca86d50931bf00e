"""Codec behaviour beyond round-trips: headers, Kafka's ignorable rule, nullability, tagged fields,
hostile lengths, zero-copy records and typed decode errors."""

from __future__ import annotations

import struct
import uuid

import construct
import pytest

from protocol import codec
from protocol import messages as m


def _join(parts: list) -> bytes:
    return b"".join(bytes(x) for x in parts)


def test_request_header_versions_follow_flexibility() -> None:
    assert codec.request_header_version(3, 8) == 1  # Metadata v8: classic
    assert codec.request_header_version(3, 9) == 2  # Metadata v9: flexible
    assert codec.request_header_version(7, 0) == 0  # ControlledShutdown v0 has no client id
    assert codec.request_header_version(18, 3) == 2
    assert codec.request_header_version(9999, 0) == 1  # unknown key: classic header assumed
    assert codec.response_header_version(18, 4) == 0  # ApiVersions always answers with header v0
    assert codec.response_header_version(3, 12) == 1


def test_api_versions_v0_request_golden_bytes() -> None:
    frame = _join(codec.encode_request(18, 0, 7, "abc", m.ApiVersionsRequest()))
    assert frame == bytes.fromhex("0000000d" "0012" "0000" "00000007" "0003") + b"abc"
    header, body = codec.decode_request(frame[4:])
    assert (header.request_api_key, header.request_api_version, header.correlation_id) == (18, 0, 7)
    assert header.client_id == "abc"
    assert body == m.ApiVersionsRequest()


def test_flexible_header_keeps_classic_client_id_and_tagged_fields() -> None:
    frame = _join(codec.encode_request(18, 3, 1, "cid", m.ApiVersionsRequest(
        client_software_name="x", client_software_version="1")))
    # header v2: key, version, correlation id, int16-length client id (never compact), empty tag section
    assert frame[4:18] == bytes.fromhex("0012" "0003" "00000001" "0003") + b"cid" + b"\x00"
    assert frame[18:] == b"\x02x\x021\x00"


def test_null_client_id() -> None:
    frame = _join(codec.encode_request(3, 1, 5, None, m.MetadataRequest(topics=None)))
    header, body = codec.decode_request(frame[4:])
    assert header.client_id is None
    assert body.topics is None


def test_api_versions_response_always_uses_header_v0() -> None:
    body = m.ApiVersionsResponse(api_keys=[m.ApiVersionsResponse.ApiVersion(api_key=18, min_version=0,
                                                                             max_version=4)])
    frame = _join(codec.encode_response(18, 3, 9, body))
    # size, correlation id, then straight into the body: no tagged-field byte after the correlation id
    assert frame[4:8] == b"\x00\x00\x00\x09"
    assert frame[8:10] == b"\x00\x00"  # error code
    header, decoded = codec.decode_response(18, 3, frame[4:])
    assert header.correlation_id == 9 and decoded == body


def test_non_ignorable_field_missing_from_version_raises() -> None:
    # ClusterAuthorizedOperations exists only in Metadata v8-10 and is not ignorable.
    body = m.MetadataResponse(cluster_authorized_operations=123)
    with pytest.raises(codec.EncodeError, match="cluster_authorized_operations"):
        codec.encode_response(3, 11, 1, body)
    _join(codec.encode_response(3, 10, 1, body))


def test_ignorable_field_is_dropped_silently() -> None:
    body = m.MetadataResponse(throttle_time_ms=50)  # ignorable, only v3+
    frame = _join(codec.encode_response(3, 0, 1, body))
    _, decoded = codec.decode_response(3, 0, frame[4:])
    assert decoded.throttle_time_ms == 0


def test_null_in_non_nullable_field_raises() -> None:
    body = m.MetadataResponse(topics=[m.MetadataResponse.MetadataResponseTopic(name=None)])
    with pytest.raises(codec.EncodeError, match="name"):
        codec.encode_response(3, 11, 1, body)
    _join(codec.encode_response(3, 12, 1, body))  # nullable from v12


def test_known_tagged_field_written_only_when_not_default() -> None:
    table = codec.request_table(1)
    c = codec.codec_for(table, 12)
    plain = _join(c.encode(m.FetchRequest()))
    tagged = _join(c.encode(m.FetchRequest(cluster_id="abc")))
    assert plain.endswith(b"\x00")
    # one tagged field: tag 0, size 4, compact string "abc"
    assert tagged.endswith(b"\x01\x00\x04\x04abc")
    decoded, _ = c.decode(memoryview(tagged))
    assert decoded.cluster_id == "abc"


def test_unknown_tagged_fields_survive_a_round_trip() -> None:
    c = codec.codec_for(codec.request_table(18), 3)
    wire = b"\x02a\x021\x02\x05\x02hi\x09\x00"  # names, then tags 5 and 9 that no spec defines
    obj, end = c.decode(memoryview(wire))
    assert end == len(wire)
    assert obj._unknown_tags == [(5, b"hi"), (9, b"")]
    assert _join(c.encode(obj)) == wire


def test_tagged_fields_out_of_order_are_rejected() -> None:
    c = codec.codec_for(codec.request_table(18), 3)
    with pytest.raises(Exception, match="out of order"):
        c.decode(memoryview(b"\x01\x01\x02\x09\x00\x05\x00"))


def test_records_decode_as_a_view_of_the_frame() -> None:
    batch = bytes(range(256)) * 64
    req = m.ProduceRequest(acks=-1, timeout_ms=1000, topic_data=[m.ProduceRequest.TopicProduceData(
        name="t", partition_data=[m.ProduceRequest.PartitionProduceData(index=0, records=batch)])])
    frame = bytearray(_join(codec.encode_request(0, 9, 1, "c", req)))
    _, body = codec.decode_request(memoryview(frame)[4:])
    records = body.topic_data[0].partition_data[0].records
    assert isinstance(records, memoryview) and records == batch
    assert records.obj is frame  # no copy: a window on the received frame


def test_large_records_are_separate_output_parts() -> None:
    batch = b"\x01" * 100_000
    resp = m.FetchResponse(responses=[m.FetchResponse.FetchableTopicResponse(topic="t", partitions=[
        m.FetchResponse.PartitionData(partition_index=0, records=batch)])])
    parts = codec.encode_response(1, 11, 1, resp)
    assert any(part is batch for part in parts)
    assert struct.unpack(">i", parts[0])[0] == sum(len(x) for x in parts[1:])


def test_huge_array_count_fails_at_once() -> None:
    # Metadata v1 whose topics array claims 2**31-1 elements in a tiny frame
    frame = bytes.fromhex("0003" "0001" "00000001" "ffff" "7fffffff") + b"\x00\x00\x00\x01"
    with pytest.raises(codec.DecodeError, match="tried to allocate a collection of size 2147483647") as info:
        codec.decode_request(frame)
    assert (info.value.api_key, info.value.api_version, info.value.correlation_id) == (3, 1, 1)


@pytest.mark.parametrize("cut", range(30))
def test_truncated_body_is_a_typed_error(cut: int) -> None:
    frame = _join(codec.encode_request(3, 4, 42, "client", m.MetadataRequest(
        topics=[m.MetadataRequest.MetadataRequestTopic(name="topic-a")])))[4:]
    if cut >= len(frame):
        return
    with pytest.raises(codec.DecodeError):
        codec.decode_request(frame[:cut])


def test_unknown_api_key_and_version() -> None:
    frame = bytes.fromhex("03e7" "0000" "00000005" "0000")
    header, offset = codec.decode_request_header(frame)
    assert header.request_api_key == 999 and offset == 10
    with pytest.raises(codec.DecodeError, match="unknown api key"):
        codec.decode_request_body(999, 0, frame, offset, 5)
    with pytest.raises(codec.DecodeError, match="unsupported version"):
        codec.decode_request_body(3, 99, frame, offset, 5)


def test_string_length_past_end() -> None:
    frame = bytes.fromhex("0003" "0001" "00000001" "7fff")
    with pytest.raises(codec.DecodeError, match="past the end"):
        codec.decode_request(frame)


def test_uuid_and_float_fields() -> None:
    tid = uuid.uuid4()
    req = m.MetadataRequest(topics=[m.MetadataRequest.MetadataRequestTopic(topic_id=tid, name=None)])
    frame = _join(codec.encode_request(3, 12, 1, None, req))
    _, body = codec.decode_request(frame[4:])
    assert body.topics[0].topic_id == tid and body.topics[0].name is None


def test_codec_is_a_construct_type() -> None:
    c = codec.codec_for(codec.response_table(3), 1)
    obj = m.MetadataResponse(controller_id=3)
    framed = construct.Struct("size" / construct.Int32sb, "body" / c)
    data = framed.build({"size": 7, "body": obj})
    assert framed.parse(data).body == obj


def test_codecs_are_cached() -> None:
    t = codec.response_table(3)
    assert codec.codec_for(t, 5) is codec.codec_for(t, 5)


def test_messages_have_spec_defaults() -> None:
    topic = m.MetadataResponse.MetadataResponseTopic()
    assert topic.topic_authorized_operations == -2147483648
    assert topic.partitions == [] and topic.partitions is not m.MetadataResponse.MetadataResponseTopic().partitions
    assert m.MetadataResponse().cluster_id is None
    assert m.MetadataResponse.MetadataResponsePartition().leader_epoch == -1


def test_an_error_message_too_long_for_a_classic_string_is_cut_not_a_failed_response() -> None:
    """Messages that quote a request's names (each up to 32767 bytes) can outgrow a classic string: the
    response still encodes, with the message cut to 32767 bytes at a character boundary and marked."""
    name = "é" * 16383  # 32766 bytes: a legal classic string in the request
    result_type = m.CreatePartitionsResponse.CreatePartitionsTopicResult
    resp = m.CreatePartitionsResponse(throttle_time_ms=0, results=[
        result_type(name=name, error_code=3, error_message=f"Topic {name!r} does not exist")])
    frame = b"".join(bytes(p) for p in codec.encode_response(37, 0, 9, resp))
    (result,) = codec.decode_response(37, 0, frame[4:])[1].results
    assert result.name == name
    assert len(result.error_message.encode()) <= 32767
    assert result.error_message.startswith("Topic 'éé") and result.error_message.endswith("...")
