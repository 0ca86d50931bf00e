"""FrameDecoder and frame_prefix: Kafka's int32 size-prefixed frames, fed in arbitrary chunks."""

from __future__ import annotations

import array
import itertools
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.framing import FrameDecoder, FrameSizeError, GatheredFrame, frame_prefix
from protocol.primitives import INT32_MAX

KAFKA_DEFAULT_MAX = 104_857_600  # socket.request.max.bytes default


def framed(*payloads: bytes) -> bytes:
    return b"".join(frame_prefix(len(p)) + p for p in payloads)


def size_bytes(size: int) -> bytes:
    return size.to_bytes(4, "big", signed=True)


def test_many_frames_in_one_chunk() -> None:
    payloads = [bytes([i % 256]) * (i + 1) for i in range(200)]
    decoder = FrameDecoder(KAFKA_DEFAULT_MAX)
    assert decoder.feed(framed(*payloads)) == payloads
    assert decoder.buffered_bytes == 0


def test_one_frame_split_byte_by_byte() -> None:
    payload = b"\x00\x12\x00\x03\x00\x00\x00\x07\x00\x04moldau"
    stream = framed(payload)
    decoder = FrameDecoder(KAFKA_DEFAULT_MAX)
    for i, byte in enumerate(stream[:-1]):
        assert decoder.feed(bytes([byte])) == [], f"frame returned early, after {i + 1} bytes"
        assert decoder.buffered_bytes == i + 1
    assert decoder.feed(stream[-1:]) == [payload]
    assert decoder.buffered_bytes == 0


def test_frame_boundary_inside_the_size_prefix() -> None:
    decoder = FrameDecoder(KAFKA_DEFAULT_MAX)
    stream = framed(b"first", b"second")
    assert decoder.feed(stream[:11]) == [b"first"]  # 4 + 5 bytes of frame one, 2 of the next prefix
    assert decoder.buffered_bytes == 2
    assert decoder.feed(stream[11:]) == [b"second"]


def test_large_frame_in_small_chunks() -> None:
    big = bytes(range(256)) * (32 * 1024)  # 8 MiB
    stream = framed(big, b"tail")
    decoder = FrameDecoder(KAFKA_DEFAULT_MAX)
    out: list[bytes] = []
    for start in range(0, len(stream), 4096):
        out += decoder.feed(stream[start : start + 4096])
    assert len(out) == 2, f"expected 2 frames, got {len(out)}"
    assert out[0] == big and out[1] == b"tail"
    assert decoder.buffered_bytes == 0


@pytest.mark.parametrize("defer", [False, True], ids=["assembled", "deferred"])
def test_large_frames_between_small_ones_in_uneven_chunks(defer: bool) -> None:
    payloads = [b"a", b"x" * 3_000_001, b"bc", b"y" * 1_000_003, b"d", b"z" * (1 << 20)]
    stream = framed(*payloads)
    decoder = FrameDecoder(KAFKA_DEFAULT_MAX, defer_assembly=defer)
    out: list[bytearray | GatheredFrame] = []
    pos, step = 0, 1
    while pos < len(stream):
        out += decoder.feed(memoryview(stream)[pos : pos + step])  # views: pieces must be copies
        pos += step
        step = step * 3 % 65_521 + 1  # varied chunk sizes, some tiny, some tens of KiB
    assert [type(f) is GatheredFrame for f in out] == [defer and len(p) >= 1 << 20 for p in payloads]
    assert [f.assemble() if isinstance(f, GatheredFrame) else f for f in out] == payloads


def test_accepts_bytearray_and_memoryview_and_returns_independent_writable_frames() -> None:
    decoder = FrameDecoder(1024)
    chunk = bytearray(framed(b"abc", b"de"))
    frames = decoder.feed(memoryview(chunk)[:9])  # all of "abc" and the start of the next prefix
    assert frames == [b"abc"] and type(frames[0]) is bytearray  # writable: batches are patched in place
    chunk[4:7] = b"XYZ"  # the caller reuses its buffer: frames already returned must not change
    assert frames == [b"abc"]
    assert decoder.feed(chunk[9:]) == [b"de"]


def test_accepts_a_memoryview_with_a_non_byte_format() -> None:
    words = array.array("I", framed(b"1234"))  # 8 bytes: two 4-byte items
    assert FrameDecoder(64).feed(memoryview(words)) == [b"1234"]
    large = array.array("I", framed(b"w" * (1 << 20)) + b"\0\0\0\1")  # a large frame, and 4 bytes of the next
    decoder = FrameDecoder(2 << 20)
    assert decoder.feed(memoryview(large)[:2]) == []  # the prefix and 4 bytes of the large frame
    assert decoder.feed(memoryview(large)[2:]) == [b"w" * (1 << 20)]
    assert decoder.pending_frame_size == 1


def test_empty_feed_returns_nothing() -> None:
    decoder = FrameDecoder(64)
    assert decoder.feed(b"") == []
    assert decoder.buffered_bytes == 0


def test_frame_of_exactly_the_max_size_is_accepted() -> None:
    decoder = FrameDecoder(1000)
    assert decoder.feed(framed(b"m" * 1000)) == [b"m" * 1000]


def test_frame_one_byte_over_the_max_size_is_rejected() -> None:
    with pytest.raises(FrameSizeError) as caught:
        FrameDecoder(1000).feed(size_bytes(1001))
    assert caught.value.size == 1001 and caught.value.max_size == 1000
    assert str(caught.value) == "frame size 1001 exceeds socket.request.max.bytes=1000"


def test_huge_size_names_the_kafka_limit() -> None:
    with pytest.raises(FrameSizeError) as caught:
        FrameDecoder(KAFKA_DEFAULT_MAX).feed(size_bytes(INT32_MAX))
    assert str(caught.value) == "frame size 2147483647 exceeds socket.request.max.bytes=104857600"


def test_limit_name_is_configurable_for_other_directions() -> None:
    with pytest.raises(FrameSizeError, match=r"exceeds fetch\.max\.bytes=10$"):
        FrameDecoder(10, limit_name="fetch.max.bytes").feed(size_bytes(11))


@pytest.mark.parametrize("size", [-1, -100, -(1 << 31)])
def test_negative_size_is_rejected(size: int) -> None:
    with pytest.raises(FrameSizeError, match=f"frame size {size} is negative") as caught:
        FrameDecoder(KAFKA_DEFAULT_MAX).feed(size_bytes(size))
    assert caught.value.size == size


def test_zero_size_is_rejected() -> None:
    with pytest.raises(FrameSizeError, match="frame size 0 is invalid") as caught:
        FrameDecoder(KAFKA_DEFAULT_MAX).feed(size_bytes(0) + b"more")
    assert caught.value.size == 0


@pytest.mark.parametrize(
    "first_bytes",
    [b"GET / HTTP/1.1\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"],
    ids=["http", "tls-client-hello"],
)
def test_non_kafka_traffic_fails_on_the_first_four_bytes(first_bytes: bytes) -> None:
    with pytest.raises(FrameSizeError, match="exceeds socket.request.max.bytes"):
        FrameDecoder(KAFKA_DEFAULT_MAX).feed(first_bytes)


def test_bad_size_is_reported_once_its_four_bytes_arrive() -> None:
    decoder = FrameDecoder(KAFKA_DEFAULT_MAX)
    prefix = size_bytes(KAFKA_DEFAULT_MAX + 1)
    for byte in prefix[:3]:
        assert decoder.feed(bytes([byte])) == []
    with pytest.raises(FrameSizeError):
        decoder.feed(prefix[3:])


def test_bad_size_after_good_frames_in_the_same_chunk() -> None:
    decoder = FrameDecoder(100)
    with pytest.raises(FrameSizeError):
        decoder.feed(framed(b"ok") + size_bytes(101))


def test_decoder_stays_failed_after_a_size_error() -> None:
    decoder = FrameDecoder(100)
    with pytest.raises(FrameSizeError) as first:
        decoder.feed(size_bytes(-5))
    with pytest.raises(FrameSizeError) as again:
        decoder.feed(framed(b"valid now, but the stream has lost its framing"))
    assert again.value is first.value


def test_no_allocation_for_a_claimed_size_that_has_not_arrived() -> None:
    # The limit allows a 2 GiB frame; a peer that only claims one must not make us reserve it.
    decoder = FrameDecoder(INT32_MAX)
    tracemalloc.start()
    try:
        assert decoder.feed(size_bytes(INT32_MAX) + b"just a few bytes") == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"feeding 20 bytes allocated {peak} bytes at peak"
    assert decoder.buffered_bytes == 20


@pytest.mark.parametrize("max_size", [0, -1, INT32_MAX + 1])
def test_max_frame_size_must_fit_the_int32_prefix(max_size: int) -> None:
    with pytest.raises(ValueError, match="max_frame_size"):
        FrameDecoder(max_size)


def test_frame_prefix_is_big_endian_int32() -> None:
    assert frame_prefix(1) == b"\x00\x00\x00\x01"
    assert frame_prefix(0x01020304) == b"\x01\x02\x03\x04"
    assert frame_prefix(INT32_MAX) == b"\x7f\xff\xff\xff"


@pytest.mark.parametrize("length", [0, -1, INT32_MAX + 1])
def test_frame_prefix_rejects_lengths_no_decoder_accepts(length: int) -> None:
    with pytest.raises(ValueError, match="frame length"):
        frame_prefix(length)


payload_lists = st.lists(st.binary(min_size=1, max_size=300), max_size=30)


@given(payloads=payload_lists, data=st.data())
def test_any_chunking_yields_the_same_frames(payloads: list[bytes], data: st.DataObject) -> None:
    stream = framed(*payloads)
    cuts = sorted(data.draw(st.sets(st.integers(min_value=1, max_value=max(1, len(stream) - 1)))))
    decoder = FrameDecoder(300)
    out: list[bytes] = []
    previous = 0
    for cut in [*cuts, len(stream)]:
        out += decoder.feed(stream[previous:cut])
        previous = cut
    assert out == payloads
    assert decoder.buffered_bytes == 0


@given(payloads=payload_lists, bad_size=st.sampled_from([0, -1, 301, INT32_MAX]), data=st.data())
def test_any_chunking_reaches_the_bad_size(payloads: list[bytes], bad_size: int, data: st.DataObject) -> None:
    stream = framed(*payloads) + size_bytes(bad_size) + b"junk"
    chunk_sizes = itertools.cycle(data.draw(st.lists(st.integers(1, 64), min_size=1, max_size=20)))
    decoder = FrameDecoder(300)
    out: list[bytes] = []
    pos = 0
    with pytest.raises(FrameSizeError) as caught:
        while pos < len(stream):
            size = next(chunk_sizes)
            out += decoder.feed(stream[pos : pos + size])
            pos += size
    assert caught.value.size == bad_size
    assert out == payloads[: len(out)], "frames before the error must be the stream's own, in order"


def test_a_large_frame_is_gathered_from_its_chunks_and_assembled_with_one_copy() -> None:
    """A 16 MiB frame arriving in 256 KiB chunks, followed in its last chunk by a small frame and part
    of another: with defer_assembly the large one comes back as its pieces (feeding copies none of the
    chunks it keeps whole), and assembling it makes exactly one copy; everything comes out intact."""
    big = bytes(range(256)) * (16 * 4096)
    small = b"small frame"
    stream = frame_prefix(len(big)) + big + frame_prefix(len(small)) + small + frame_prefix(100) + b"part"
    chunks = [stream[pos : pos + 256 * 1024] for pos in range(0, len(stream), 256 * 1024)]
    decoder = FrameDecoder(32 << 20, defer_assembly=True)
    got: list[bytearray | GatheredFrame] = []
    tracemalloc.start()
    try:
        for chunk in chunks:
            got += decoder.feed(chunk)
        _, gathering_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        gathered = got[0]
        assert isinstance(gathered, GatheredFrame) and len(gathered) == len(big)
        assembled = gathered.assemble()
        _, assembling_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert gathering_peak < 1 << 20, f"gathering allocated {gathering_peak} bytes at peak"
    assert assembling_peak < 1.1 * len(big), f"assembling allocated {assembling_peak} bytes at peak"
    assert type(assembled) is bytearray and assembled == big
    assert got[1:] == [bytearray(small)]
    assert decoder.buffered_bytes == 8 and decoder.pending_frame_size == 100
    assert decoder.feed(b"x" * 96) == [bytearray(b"part" + b"x" * 96)]


def test_a_large_frames_size_and_bytes_so_far_are_reported_while_it_is_gathered() -> None:
    """The connection charges the frame being received by these: the announced size once the prefix is
    in, and until then the bytes held (the prefix included)."""
    decoder = FrameDecoder(8 << 20)
    stream = framed(b"z" * (2 << 20))
    assert decoder.feed(stream[:3]) == [] and decoder.pending_frame_size is None and decoder.buffered_bytes == 3
    assert decoder.feed(stream[3:1000]) == []
    assert (decoder.pending_frame_size, decoder.buffered_bytes) == (2 << 20, 1000)
    assert decoder.feed(stream[1000:-1]) == [] and decoder.buffered_bytes == len(stream) - 1
    assert decoder.feed(stream[-1:]) == [bytearray(b"z" * (2 << 20))]
    assert (decoder.pending_frame_size, decoder.buffered_bytes) == (None, 0)
