"""Compression codecs of the v2 record format: round trips, the wire formats Kafka clients write and
read (gzip, xerial-framed or raw snappy, LZ4 frame, zstd with or without content size), corrupt
input, and the decompression-bomb guard."""

from __future__ import annotations

import gzip
import struct
import tracemalloc
import zlib
from collections.abc import Callable

import aiokafka.codec
import cramjam
import kafka.codec
import lz4.frame
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.records import (
    Compression,
    DecompressionBombError,
    DecompressionError,
    UnsupportedCompressionError,
    compress,
    compression,
    decompress,
)
from protocol.records.compression import decompress_transient

CODECS = list(Compression)
COMPRESSING = [c for c in Compression if c != Compression.NONE]
XERIAL_MAGIC = b"\x82SNAPPY\x00"
TEXT = b"".join(b"record %d: the quick brown fox jumps over the lazy dog\n" % i for i in range(3000))


def xerial_frame(chunks: list[bytes], version_format: str = ">ii") -> bytes:
    """Build a snappy-java stream by hand: magic, two int32 versions, [int32 length][raw block]..."""
    out = bytearray(XERIAL_MAGIC + struct.pack(version_format, 1, 1))
    for chunk in chunks:
        block = bytes(cramjam.snappy.compress_raw(chunk))
        out += struct.pack(">i", len(block)) + block
    return bytes(out)


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
@pytest.mark.parametrize("data", [b"", b"x", TEXT, bytes(range(256)) * 300], ids=["empty", "1B", "text", "binary"])
def test_round_trip_every_codec(codec: Compression, data: bytes) -> None:
    """decompress(compress(x)) == x for every codec, including empty input and multi-block input."""
    assert decompress(codec, compress(codec, data), max_size=len(data)) == data


@settings(max_examples=60, deadline=None)
@given(codec=st.sampled_from(CODECS), data=st.binary(max_size=5000))
def test_round_trip_arbitrary_bytes(codec: Compression, data: bytes) -> None:
    assert decompress(codec, compress(codec, data)) == data


@pytest.mark.parametrize("codec", COMPRESSING, ids=lambda c: c.name)
def test_accepts_memoryview_slices_without_copying_input(codec: Compression) -> None:
    """The batch layer hands codecs memoryview slices of a larger buffer."""
    framed = b"HEADER" + compress(codec, TEXT) + b"TRAILER"
    view = memoryview(framed)[6:-7]
    assert decompress(codec, view) == TEXT
    assert decompress(codec, compress(codec, memoryview(TEXT)[10:])) == TEXT[10:]


@pytest.mark.parametrize(
    ("codec", "magic"),
    [
        (Compression.GZIP, b"\x1f\x8b"),
        (Compression.SNAPPY, XERIAL_MAGIC),
        (Compression.LZ4, b"\x04\x22\x4d\x18"),  # LZ4 frame magic 0x184D2204, little-endian
        (Compression.ZSTD, b"\x28\xb5\x2f\xfd"),  # zstd frame magic 0xFD2FB528, little-endian
    ],
    ids=lambda v: v.name if isinstance(v, Compression) else None,
)
def test_compress_writes_the_formats_java_clients_write(codec: Compression, magic: bytes) -> None:
    """gzip stream, xerial-framed snappy, LZ4 *frame*, zstd frame: what Kafka's Java client writes."""
    assert compress(codec, TEXT)[: len(magic)] == magic


def test_lz4_frame_uses_independent_blocks() -> None:
    """Kafka's Java LZ4 reader only supports independent blocks: FLG bit 5 (block independence) set."""
    frame = compress(Compression.LZ4, TEXT)
    flg = frame[4]
    assert flg & 0x20, f"FLG byte {flg:#04x} lacks the block-independence bit"


def test_compression_level_is_applied() -> None:
    fast = compress(Compression.GZIP, TEXT, level=1)
    best = compress(Compression.GZIP, TEXT, level=9)
    assert len(best) < len(fast)
    assert decompress(Compression.GZIP, fast) == decompress(Compression.GZIP, best) == TEXT
    assert decompress(Compression.ZSTD, compress(Compression.ZSTD, TEXT, level=19)) == TEXT
    assert decompress(Compression.LZ4, compress(Compression.LZ4, TEXT, level=9)) == TEXT


# --- snappy: raw and xerial ----------------------------------------------------------------------------

def test_snappy_decodes_raw_blocks() -> None:
    """Some clients (librdkafka, franz-go, sarama) send raw snappy without xerial framing."""
    raw = bytes(cramjam.snappy.compress_raw(TEXT))
    assert decompress(Compression.SNAPPY, raw) == TEXT


def test_snappy_decodes_hand_built_xerial_frame() -> None:
    """Magic, version 1, compat 1, then [int32 BE length][raw snappy] chunks, as snappy-java writes."""
    chunks = [TEXT[:1000], TEXT[1000:40000], TEXT[40000:]]
    assert decompress(Compression.SNAPPY, xerial_frame(chunks)) == TEXT


def test_snappy_xerial_with_little_endian_versions_is_accepted() -> None:
    """Some producers write the version fields little-endian; they carry no information we need."""
    assert decompress(Compression.SNAPPY, xerial_frame([TEXT], version_format="<ii")) == TEXT


def test_snappy_xerial_header_without_chunks_is_empty() -> None:
    assert decompress(Compression.SNAPPY, xerial_frame([])) == b""


def test_snappy_compress_splits_into_32k_xerial_chunks() -> None:
    """Our own xerial output: each chunk holds at most 32 KiB, snappy-java's default block size."""
    data = compress(Compression.SNAPPY, TEXT)
    pos, sizes = 16, []
    while pos < len(data):
        (length,) = struct.unpack_from(">i", data, pos)
        sizes.append(cramjam.snappy.decompress_raw_len(data[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    assert pos == len(data)
    assert sum(sizes) == len(TEXT)
    assert max(sizes) == 32 * 1024, sizes


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda f: f[:12], id="header-truncated"),
        pytest.param(lambda f: f[:18], id="chunk-length-truncated"),
        pytest.param(lambda f: f[:-1], id="chunk-runs-past-end"),
        pytest.param(lambda f: f[:16] + struct.pack(">i", -5) + f[20:], id="negative-chunk-length"),
        pytest.param(lambda f: f[:20] + b"\xff" * (len(f) - 20), id="garbage-chunk"),
    ],
)
def test_snappy_xerial_corruption_is_typed(mangle: Callable[[bytes], bytes]) -> None:
    with pytest.raises(DecompressionError):
        decompress(Compression.SNAPPY, mangle(xerial_frame([TEXT[:5000]])))


# --- zstd ----------------------------------------------------------------------------------------------

def test_zstd_decodes_frame_without_content_size() -> None:
    """zstd-jni's streaming output (Java producers) has no content size in the frame header."""
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(TEXT)
    assert zstandard.get_frame_parameters(frame).content_size == zstandard.CONTENTSIZE_UNKNOWN
    assert decompress(Compression.ZSTD, frame) == TEXT


def test_zstd_decodes_streamed_frame() -> None:
    cobj = zstandard.ZstdCompressor().compressobj()
    frame = b"".join(cobj.compress(TEXT[i : i + 7000]) for i in range(0, len(TEXT), 7000)) + cobj.flush()
    assert decompress(Compression.ZSTD, frame) == TEXT


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=300_000) | st.builds(lambda n: b"A" * n, st.integers(0, 2_000_000)),
       content_size=st.booleans(), checksum=st.booleans())
def test_zstd_frame_end_follows_the_block_headers(data: bytes, content_size: bool, checksum: bool) -> None:
    """The frame walk that lets one GIL-releasing call decode a whole frame finds exactly its end, and
    a frame cut short, followed by more bytes or another frame goes to the streaming decoder."""
    frame = zstandard.ZstdCompressor(write_content_size=content_size, write_checksum=checksum).compress(data)
    view = memoryview(frame)
    assert compression._zstd_frame_end(view) == len(frame)
    assert compression._zstd_one_shot(view, max(len(data), 1)) == data  # (0 means "no limit" to zstandard)
    assert compression._zstd_frame_end(view[:-1]) is None
    for longer in (frame + b"\0", frame + frame):
        assert compression._zstd_one_shot(memoryview(longer), 2 * len(data) + 1) is None
    assert decompress(Compression.ZSTD, frame + frame) == data + data


def test_zstd_one_call_path_refuses_a_declared_size_over_the_limit_without_decoding() -> None:
    frame = zstandard.ZstdCompressor().compress(b"\0" * (64 << 20))  # declares 64 MiB, a few KiB long
    tracemalloc.start()
    try:
        with pytest.raises(DecompressionBombError):
            compression._zstd_one_shot(memoryview(frame), 1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    # Without a declared size it is left to the streaming decoder, which names the bomb.
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(b"\0" * (4 << 20))
    assert compression._zstd_one_shot(memoryview(unsized), 1 << 20) is None
    with pytest.raises(DecompressionBombError):
        decompress(Compression.ZSTD, unsized, max_size=1 << 20)


LARGE = bytes(range(256)) * (8 << 12)  # 8 MiB: past the size where a thread's reused buffer serves zstd


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_transient_decompression_gives_what_decompress_gives(codec: Compression) -> None:
    for data in (b"", TEXT, LARGE):
        assert bytes(decompress_transient(codec, compress(codec, data))) == data


def test_transient_zstd_reuses_one_buffer_per_thread() -> None:
    first = decompress_transient(Compression.ZSTD, compress(Compression.ZSTD, LARGE))
    assert bytes(first) == LARGE
    smaller = LARGE[: 3 << 20][::-1]
    second = decompress_transient(Compression.ZSTD, compress(Compression.ZSTD, smaller))
    assert bytes(second) == smaller
    assert second.obj is first.obj  # the same buffer, not a new 3 MiB allocation
    assert second.nbytes == len(smaller)  # and only what this frame wrote


def test_transient_zstd_checks_like_decompress() -> None:
    frame = compress(Compression.ZSTD, LARGE)
    with pytest.raises(DecompressionBombError):
        decompress_transient(Compression.ZSTD, frame, max_size=len(LARGE) - 1)
    corrupt = bytearray(frame)
    corrupt[len(corrupt) // 2] ^= 0xFF
    with pytest.raises(DecompressionError):
        decompress_transient(Compression.ZSTD, bytes(corrupt))
    with pytest.raises(DecompressionError):
        decompress_transient(Compression.ZSTD, frame[:-10])
    # A frame without a declared size takes the streaming decoder, which bounds it.
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(LARGE)
    assert bytes(decompress_transient(Compression.ZSTD, unsized)) == LARGE
    with pytest.raises(DecompressionBombError):
        decompress_transient(Compression.ZSTD, unsized, max_size=1 << 20)


@pytest.mark.parametrize("codec", [Compression.GZIP, Compression.LZ4, Compression.ZSTD], ids=lambda c: c.name)
def test_concatenated_frames_decode_in_order(codec: Compression) -> None:
    data = compress(codec, b"first part ") + compress(codec, b"second part")
    assert decompress(codec, data) == b"first part second part"


def test_gzip_accepts_stdlib_gzip_output() -> None:
    assert decompress(Compression.GZIP, gzip.compress(TEXT, mtime=0)) == TEXT


# --- corrupt and truncated input -----------------------------------------------------------------------

@pytest.mark.parametrize("codec", COMPRESSING, ids=lambda c: c.name)
def test_garbage_raises_decompression_error(codec: Compression) -> None:
    with pytest.raises(DecompressionError):
        decompress(codec, b"\xff\x00 this is not compressed data \x13\x37" * 3)


@pytest.mark.parametrize("codec", COMPRESSING, ids=lambda c: c.name)
def test_truncated_stream_raises_decompression_error(codec: Compression) -> None:
    """A stream cut short must not decode as a shorter payload."""
    data = compress(codec, TEXT)
    with pytest.raises(DecompressionError):
        decompress(codec, data[: len(data) - 6])


@pytest.mark.parametrize("codec", COMPRESSING, ids=lambda c: c.name)
def test_empty_input_is_not_a_valid_stream(codec: Compression) -> None:
    with pytest.raises(DecompressionError):
        decompress(codec, b"")


@pytest.mark.parametrize("codec", [5, 6, 7])
def test_codecs_kafka_does_not_define_are_rejected(codec: int) -> None:
    with pytest.raises(UnsupportedCompressionError) as info:
        decompress(codec, b"abc")
    assert info.value.error_name == "UNSUPPORTED_COMPRESSION_TYPE"
    with pytest.raises(UnsupportedCompressionError):
        compress(codec, b"abc")


# --- decompression bombs -------------------------------------------------------------------------------

@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_output_of_exactly_max_size_is_allowed_one_more_byte_is_not(codec: Compression) -> None:
    data = b"\0" * 100_000
    packed = compress(codec, data)
    assert decompress(codec, packed, max_size=100_000) == data
    with pytest.raises(DecompressionBombError) as info:
        decompress(codec, packed, max_size=99_999)
    assert info.value.max_size == 99_999


def test_xerial_bomb_is_caught_across_chunks() -> None:
    """Every chunk is small, but together they exceed the limit."""
    frame = xerial_frame([b"\0" * 30_000] * 10)
    with pytest.raises(DecompressionBombError):
        decompress(Compression.SNAPPY, frame, max_size=250_000)
    assert len(decompress(Compression.SNAPPY, frame, max_size=300_000)) == 300_000


def test_raw_snappy_bomb_is_caught_before_allocating() -> None:
    """The declared length is checked first; the block itself is never expanded."""
    lying = bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x0F]) + b"\x00"  # claims 4 GiB - 1
    with pytest.raises(DecompressionBombError):
        decompress(Compression.SNAPPY, lying, max_size=1 << 20)


@pytest.mark.parametrize("codec", COMPRESSING, ids=lambda c: c.name)
def test_bomb_guard_bounds_memory(codec: Compression) -> None:
    """256 MiB of zeros compresses to a few KiB up to a few MiB (zstd streamed: no content size to
    check up front); with a 1 MiB limit, decompression stops early instead of materialising it."""
    bomb = _bomb(codec, 256 << 20)
    assert len(bomb) * 20 < 256 << 20
    tracemalloc.start()
    try:
        with pytest.raises(DecompressionBombError):
            decompress(codec, bomb, max_size=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"peak traced memory {peak} bytes for a 1 MiB limit"


def _bomb(codec: Compression, size: int) -> bytes:
    block = b"\0" * (1 << 20)
    if codec == Compression.GZIP:
        enc = zlib.compressobj(9, zlib.DEFLATED, 31)
        return b"".join(enc.compress(block) for _ in range(size >> 20)) + enc.flush()
    if codec == Compression.ZSTD:
        cobj = zstandard.ZstdCompressor().compressobj()
        return b"".join(cobj.compress(block) for _ in range(size >> 20)) + cobj.flush()
    if codec == Compression.LZ4:
        enc = lz4.frame.LZ4FrameCompressor(block_linked=False)
        return enc.begin() + b"".join(enc.compress(block) for _ in range(size >> 20)) + enc.flush()
    return xerial_frame([b"\0" * 32768] * (size >> 15))


# --- interoperability with the clients' own codecs -----------------------------------------------------

CLIENT_ENCODERS = {
    Compression.GZIP: kafka.codec.gzip_encode,
    Compression.SNAPPY: kafka.codec.snappy_encode,
    Compression.LZ4: kafka.codec.lz4_encode,
    Compression.ZSTD: kafka.codec.zstd_encode,
}
CLIENT_DECODERS = {
    "kafka-python": {
        Compression.GZIP: kafka.codec.gzip_decode,
        Compression.SNAPPY: kafka.codec.snappy_decode,
        Compression.LZ4: kafka.codec.lz4_decode,
        Compression.ZSTD: kafka.codec.zstd_decode,
    },
    "aiokafka": {
        Compression.GZIP: aiokafka.codec.gzip_decode,
        Compression.SNAPPY: aiokafka.codec.snappy_decode,
        Compression.LZ4: aiokafka.codec.lz4_decode,
        Compression.ZSTD: aiokafka.codec.zstd_decode,
    },
}


@pytest.mark.parametrize("codec", COMPRESSING, ids=lambda c: c.name)
def test_we_decode_kafka_python_codec_output(codec: Compression) -> None:
    encoded = CLIENT_ENCODERS[codec](TEXT)
    if codec == Compression.SNAPPY:
        assert encoded[:8] == XERIAL_MAGIC, "kafka-python is expected to write xerial-framed snappy"
    assert decompress(codec, encoded) == TEXT


@pytest.mark.parametrize("client", sorted(CLIENT_DECODERS))
@pytest.mark.parametrize("codec", COMPRESSING, ids=lambda c: c.name)
def test_clients_decode_our_codec_output(client: str, codec: Compression) -> None:
    assert bytes(CLIENT_DECODERS[client][codec](compress(codec, TEXT))) == TEXT
