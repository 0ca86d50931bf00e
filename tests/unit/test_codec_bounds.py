"""Decoding work is bounded by the bytes received: every array count is checked against the bytes left
(n elements need n times the smallest encoding of one) before anything is allocated, one message holds
at most ``MAX_ELEMENTS`` array elements in all, and tagged-field counts are checked the same way.

Memory is checked with tracemalloc (a hostile count must be refused before the list is built); no
timing is asserted (scripts/bench_decode_bounds.py measures the cost per MB).
"""

from __future__ import annotations

import struct
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import codec
from protocol import messages as m
from protocol import primitives as p
from protocol.schema import APIS

METADATA, OFFSET_FETCH = 3, 9
# A refusal may allocate its error message and a few frames, never anything like the claimed elements.
REFUSAL_BYTES = 64 * 1024


def _header(api_key: int, version: int, flexible: bool = False) -> bytes:
    return struct.pack(">hhih", api_key, version, 1, 4) + b"test" + (b"\x00" if flexible else b"")


def _uvarint(value: int) -> bytes:
    return p.uvarint_bytes(value)


def _decode_or_error(frame: memoryview) -> None:
    try:
        codec.decode_request(frame)
    except codec.DecodeError:
        pass


def _peak_while(fn: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


def _refused(frame: bytes, match: str) -> int:
    """Decode ``frame``, expect a DecodeError matching ``match``; returns the peak memory of the attempt."""
    mv = memoryview(frame)
    _decode_or_error(mv)  # builds and caches the codecs outside the trace

    def attempt() -> None:
        with pytest.raises(codec.DecodeError, match=match):
            codec.decode_request(mv)

    return _peak_while(attempt)


def test_classic_count_needs_min_size_bytes_per_element() -> None:
    """Metadata v1 topics are at least 2 bytes each (an int16 name length): 600,000 of them in 1 MB of
    body is refused with Kafka's message before a list is built (the old 1-byte check let it through)."""
    count = 600_000
    frame = _header(METADATA, 1) + struct.pack(">i", count) + bytes(count + 10)
    peak = _refused(frame, f"tried to allocate a collection of size {count}, but there are only {count + 10} "
                           f"bytes remaining")
    assert peak < REFUSAL_BYTES, f"refusing the count allocated {peak} bytes"


def test_compact_struct_count_needs_min_size_bytes_per_element() -> None:
    """Metadata v12 topics are at least 18 bytes (uuid, compact name, tag count)."""
    count = 100_000
    body = _uvarint(count + 1) + bytes(count * 17)
    frame = _header(METADATA, 12, flexible=True) + body
    peak = _refused(frame, f"tried to allocate a collection of size {count}")
    assert peak < REFUSAL_BYTES


def test_fixed_width_array_count_is_checked_before_unpacking() -> None:
    """OffsetFetch v1 partition indexes are int32s: a count of n needs 4n bytes."""
    count = 50_000
    body = struct.pack(">h", 5) + b"group" + struct.pack(">i", 1) + struct.pack(">h", 1) + b"t"
    body += struct.pack(">i", count) + bytes(count * 3)
    frame = _header(OFFSET_FETCH, 1) + body
    peak = _refused(frame, f"tried to allocate a collection of size {count}")
    assert peak < REFUSAL_BYTES


def test_tagged_field_count_is_checked() -> None:
    """A flexible message whose tag count claims more fields than 2 bytes each can hold is refused."""
    frame = _header(METADATA, 12, flexible=True) + b"\x01" + b"\x01\x00" + _uvarint(10_000) + bytes(100)
    _refused(frame, "tried to allocate a collection of size 10000")


def test_element_budget_refuses_a_legal_but_huge_message() -> None:
    """More than MAX_ELEMENTS array elements in one message (here 1,000,001 empty names, each legal) is
    refused before the list is built, whatever the frame size allows."""
    count = p.MAX_ELEMENTS + 1
    frame = _header(METADATA, 1) + struct.pack(">i", count) + b"\x00\x00" * count
    peak = _refused(frame, f"more than {p.MAX_ELEMENTS} array elements")
    assert peak < REFUSAL_BYTES


def test_element_budget_counts_every_array_of_the_message() -> None:
    """The budget is for the whole message: two arrays of 3 elements exceed a budget of 5."""
    table = codec.request_table(OFFSET_FETCH)
    req = m.OffsetFetchRequest(group_id="g", topics=[
        m.OffsetFetchRequest.OffsetFetchRequestTopic(name="t", partition_indexes=[0, 1])] * 2)
    data = b"".join(bytes(x) for x in codec.codec_for(table, 1).encode(req))
    c = codec.codec_for(table, 1)
    assert c.decode(memoryview(data), 0, max_elements=6)[0] == req
    with pytest.raises(p.WireError, match="more than 5 array elements"):
        c.decode(memoryview(data), 0, max_elements=5)


def test_a_message_just_within_the_bounds_decodes() -> None:
    """Exactly enough bytes for the claimed elements is accepted."""
    count = 1000
    frame = _header(METADATA, 1) + struct.pack(">i", count) + b"\x00\x00" * count
    _, body = codec.decode_request(memoryview(frame))
    assert len(body.topics) == count and body.topics[0].name == ""


_REQUEST_VERSIONS = [(key, version) for key in sorted(APIS)
                     for version in range(codec.spec_versions(key)[0], codec.spec_versions(key)[1] + 1)]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_REQUEST_VERSIONS), st.binary(max_size=256), st.integers(0, 2**31 - 1))
def test_any_body_decodes_or_fails_with_decode_error(api_version: tuple[int, int], tail: bytes, count: int) -> None:
    """Whatever bytes follow a valid header, with a (possibly huge) count up front, decoding gives a
    message or a DecodeError, never another exception, and never allocates far beyond the frame."""
    key, version = api_version
    flexible = codec.is_flexible(key, version)
    head = _header(key, version, flexible)
    for body in (struct.pack(">i", count) + tail, _uvarint(count) + tail, tail):
        frame = memoryview(head + body)
        _decode_or_error(frame)  # builds and caches the codecs outside the trace
        assert _peak_while(lambda frame=frame: _decode_or_error(frame)) < REFUSAL_BYTES + 64 * len(frame)
