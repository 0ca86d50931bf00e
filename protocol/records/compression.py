"""Compression codecs of the v2 record format: none, gzip, snappy, lz4 (frame) and zstd.

`compress` writes what Kafka's Java client writes (gzip stream, xerial-framed snappy, LZ4 frame with
independent blocks, zstd frame); `decompress` also accepts raw snappy and zstd frames without a
content size, and never produces more than `max_size` bytes, so a small batch cannot expand into
gigabytes (a "decompression bomb").

The codec libraries (cramjam for snappy, lz4, zstandard) are imported where first used: together they
cost about 4.5 MB of memory and some start-up time, which a broker or a test run that never meets their
codec does not pay.
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections.abc import Callable
from enum import IntEnum
from typing import Any

from protocol.records.errors import (
    DecompressionBombError,
    DecompressionError,
    UnsupportedCompressionError,
)
from protocol.records.varint import Buffer

# Enough for any batch a default-configured client sends, with room for very compressible data.
DEFAULT_MAX_DECOMPRESSED_SIZE = 64 * 1024 * 1024


class Compression(IntEnum):
    """Codec ids stored in bits 0-2 of the batch attributes."""

    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4


def compress(codec: int, data: Buffer, level: int | None = None) -> bytes:
    """Compress `data` with `codec`; `level` is the codec's own level (ignored by snappy)."""
    return _codec(codec)[0](data, level)


def decompress(codec: int, data: Buffer, max_size: int = DEFAULT_MAX_DECOMPRESSED_SIZE) -> bytes | bytearray:
    """Decompress `data`, raising `DecompressionBombError` if it would exceed `max_size` bytes."""
    return _codec(codec)[1](data, max_size)


def decompress_transient(codec: int, data: Buffer, max_size: int = DEFAULT_MAX_DECOMPRESSED_SIZE) -> Buffer:
    """`decompress` for a caller that reads the output and lets go of it before its thread calls again:
    a large zstd output lands in a buffer the calling thread keeps and reuses, so the result is only
    valid until this thread's next call.

    A fresh multi-MiB output costs a page fault per page to fill and, when freed, an munmap that holds
    the GIL for about a millisecond per 16 MiB, stalling the event loop each time a worker validates a
    large batch; a reused buffer pays neither. The thread keeps the largest output it decompressed this
    way (at most `max_size`)."""
    if codec == Compression.ZSTD:
        view = memoryview(data).cast("B")
        out = _zstd_into_scratch(view, max_size)
        if out is not None:
            return out
        return _zstd_decompress(view, max_size)
    return decompress(codec, data, max_size)


def _codec(codec: int) -> tuple[Callable[[Buffer, int | None], bytes], Callable[[Buffer, int], bytes | bytearray]]:
    try:
        return _CODECS[codec]
    except KeyError:
        raise UnsupportedCompressionError(f"unknown compression codec {codec}") from None


# --- none ---------------------------------------------------------------------------------------------

def _none_compress(data: Buffer, level: int | None) -> bytes:
    return bytes(data)


def _none_decompress(data: Buffer, max_size: int) -> bytes:
    if len(data) > max_size:
        raise DecompressionBombError("none", max_size)
    return bytes(data)


# --- gzip ---------------------------------------------------------------------------------------------

_GZIP_WBITS = 16 + zlib.MAX_WBITS  # deflate inside a gzip header and trailer


def _gzip_compress(data: Buffer, level: int | None) -> bytes:
    return zlib.compress(data, zlib.Z_DEFAULT_COMPRESSION if level is None else level, _GZIP_WBITS)


def _gzip_decompress(data: Buffer, max_size: int) -> bytes:
    return _decompress_frames("gzip", lambda: zlib.decompressobj(_GZIP_WBITS), zlib.error, data, max_size)


def _decompress_frames(
    codec: str, new_decoder: Callable[[], Any], errors: type[Exception], data: Buffer, max_size: int
) -> bytes:
    """Drive a zlib-style decoder (decompress(data, max_length), eof, unused_data) over one or more
    frames placed back to back: gzip members (Java's GZIPInputStream reads them all), LZ4 frames."""
    out = bytearray()
    rest: Buffer = data
    while True:
        decoder = new_decoder()
        try:
            # max_length caps this call's output, so a bomb stops one byte past the limit.
            out += decoder.decompress(rest, max_length=max_size - len(out) + 1)
        except errors as exc:
            raise DecompressionError(f"invalid {codec} data: {exc}") from None
        if len(out) > max_size:
            raise DecompressionBombError(codec, max_size)
        if not decoder.eof:
            raise DecompressionError(f"{codec} data is truncated")
        rest = decoder.unused_data
        if not rest:
            return bytes(out)


# --- snappy -------------------------------------------------------------------------------------------

# xerial snappy-java stream: magic, int32 version, int32 minimum compatible version, then chunks of
# [int32 big-endian length][raw snappy block]. A raw snappy block cannot start with this magic: after
# the length varint 0x82 0x53 comes 'N' (0x4E), a copy tag, which is invalid as a block's first element.
_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = struct.Struct(">8sii")
_XERIAL_VERSION = 1
_XERIAL_BLOCK_SIZE = 32 * 1024  # snappy-java's default block size
_INT32 = struct.Struct(">i")


def _snappy_compress(data: Buffer, level: int | None) -> bytes:
    import cramjam

    # xerial framing: the format Java producers write, so every Kafka consumer can read it.
    view = memoryview(data)
    out = bytearray(_XERIAL_HEADER.pack(_XERIAL_MAGIC, _XERIAL_VERSION, _XERIAL_VERSION))
    for start in range(0, len(view), _XERIAL_BLOCK_SIZE):
        block = cramjam.snappy.compress_raw(view[start : start + _XERIAL_BLOCK_SIZE])
        out += _INT32.pack(len(block))
        out += block
    return bytes(out)


def _snappy_decompress(data: Buffer, max_size: int) -> bytes:
    if bytes(data[: len(_XERIAL_MAGIC)]) == _XERIAL_MAGIC:
        return _xerial_decompress(memoryview(data), max_size)
    return _raw_snappy_decompress(data, max_size)


def _xerial_decompress(view: memoryview, max_size: int) -> bytes:
    # The two version fields are not checked: some producers write them little-endian.
    pos = _XERIAL_HEADER.size
    if len(view) < pos:
        raise DecompressionError("xerial snappy header is truncated")
    parts: list[bytes] = []
    total = 0
    while pos < len(view):
        if pos + _INT32.size > len(view):
            raise DecompressionError(f"xerial snappy chunk length at {pos} is truncated")
        (length,) = _INT32.unpack_from(view, pos)
        pos += _INT32.size
        if length < 0 or pos + length > len(view):
            raise DecompressionError(f"xerial snappy chunk of {length} bytes at {pos} runs past the data")
        chunk = view[pos : pos + length]
        total += _snappy_length(chunk)
        if total > max_size:
            raise DecompressionBombError("snappy", max_size)
        parts.append(_snappy_block(chunk))
        pos += length
    return b"".join(parts)


def _raw_snappy_decompress(data: Buffer, max_size: int) -> bytes:
    if _snappy_length(data) > max_size:
        raise DecompressionBombError("snappy", max_size)
    return _snappy_block(data)


def _snappy_length(block: Buffer) -> int:
    """The uncompressed length a raw block declares up front, read before allocating anything."""
    import cramjam

    try:
        return cramjam.snappy.decompress_raw_len(block)
    except cramjam.DecompressionError as exc:
        raise DecompressionError(f"invalid snappy data: {exc}") from None


def _snappy_block(block: Buffer) -> bytes:
    import cramjam

    try:
        return bytes(cramjam.snappy.decompress_raw(block))
    except cramjam.DecompressionError as exc:
        raise DecompressionError(f"invalid snappy data: {exc}") from None


# --- lz4 ----------------------------------------------------------------------------------------------

def _lz4_compress(data: Buffer, level: int | None) -> bytes:
    import lz4.frame

    # Kafka's Java reader (KafkaLZ4BlockInputStream) supports only independent blocks.
    return lz4.frame.compress(data, compression_level=level or 0, block_linked=False)


def _lz4_decompress(data: Buffer, max_size: int) -> bytes:
    import lz4.frame

    return _decompress_frames("lz4", lz4.frame.LZ4FrameDecompressor, RuntimeError, data, max_size)


# --- zstd ---------------------------------------------------------------------------------------------

# One input byte regenerates at most this much: an RLE block is 4 bytes for up to 128 KiB.
_ZSTD_MAX_RATIO = 32 * 1024
_ZSTD_MIN_STEP = 64
_ZSTD_OUTPUT_STEP = 1024 * 1024
_ZSTD_DEFAULT_LEVEL = 3  # Kafka's default zstd level
# The frame layout of RFC 8878: magic number, header (its descriptor first), 3-byte block headers.
_ZSTD_MAGIC = struct.Struct("<I")
_ZSTD_FRAME_MAGIC = 0xFD2FB528
_ZSTD_CHECKSUM_FLAG = 0x04  # Content_Checksum_flag of the Frame_Header_Descriptor
_ZSTD_CHECKSUM_BYTES = 4
_ZSTD_BLOCK_HEADER_BYTES = 3
_ZSTD_RLE_BLOCK = 1
_ZSTD_RESERVED_BLOCK = 3


# zstandard's (de)compressor objects are not thread-safe, and making one costs microseconds: one per call.

def _zstd_compress(data: Buffer, level: int | None) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=_ZSTD_DEFAULT_LEVEL if level is None else level).compress(data)


def _zstd_decompress(data: Buffer, max_size: int) -> bytes | bytearray:
    view = memoryview(data).cast("B")
    whole = _zstd_one_shot(view, max_size)
    if whole is not None:
        return whole
    # Java's zstd-jni streams frames without a content size, so the output size is unknown up front.
    # The output is returned as built: a final bytes() copy of a large batch would hold the GIL for it.
    out = bytearray()
    pos = _zstd_frame(view, 0, out, max_size)
    while pos < len(view):  # frames may follow one another
        pos = _zstd_frame(view, pos, out, max_size)
    return out


def _zstd_one_shot(view: memoryview, max_size: int) -> bytes | None:
    """The common case, decoded by one zstd call that releases the GIL for its whole run (the streaming
    decoder holds it while it builds its output, which stalls the event loop for milliseconds per
    16 MiB): a single standard frame that fills `view` and decodes within `max_size`. None when the
    data is anything else (several frames, a skippable frame, a damaged or truncated frame, a bomb
    without a declared size): the streaming decoder then handles it and names what is wrong."""
    import zstandard

    if max_size < 1 or _zstd_frame_end(view) != len(view):  # (zstandard reads a limit of 0 as none)
        return None
    try:
        declared = zstandard.frame_content_size(view)
    except zstandard.ZstdError:
        return None
    if declared > max_size:
        raise DecompressionBombError("zstd", max_size)
    try:
        # With a declared size that much is allocated; without, at most max_size (untouched pages).
        out = zstandard.ZstdDecompressor().decompress(view, max_output_size=max_size)
    except zstandard.ZstdError:
        return None
    if declared >= 0 and len(out) != declared:
        return None
    return out


# Outputs below this come from the heap (glibc's mmap threshold as `moldau serve` sets it) and cost no
# munmap: only larger ones use the thread's reused buffer.
_SCRATCH_MIN_BYTES = 1024 * 1024
_scratch = threading.local()


def _zstd_into_scratch(view: memoryview, max_size: int) -> memoryview | None:
    """A single standard frame declaring a large content size, decoded into this thread's reused buffer
    (cramjam releases the GIL for the whole call); None for anything else, which the ordinary decoder
    then handles and, if damaged, names."""
    import zstandard

    if _zstd_frame_end(view) != len(view):
        return None
    try:
        declared = zstandard.frame_content_size(view)
    except zstandard.ZstdError:
        return None
    if declared < _SCRATCH_MIN_BYTES:
        return None
    if declared > max_size:
        raise DecompressionBombError("zstd", max_size)
    import cramjam

    buffer: bytearray | None = getattr(_scratch, "zstd", None)
    if buffer is None or len(buffer) < declared:
        _scratch.zstd = None  # the old buffer goes before the new one is made
        buffer = _scratch.zstd = bytearray(declared)
    try:
        written = cramjam.zstd.decompress_into(view, buffer)
    except cramjam.DecompressionError:
        return None
    return memoryview(buffer)[:written] if written == declared else None


def _zstd_frame_end(view: memoryview) -> int | None:
    """Where the standard zstd frame at the start of `view` ends, from its block headers (RFC 8878
    section 3.1.1), or None if there is none or it runs past the data."""
    import zstandard

    if len(view) < _ZSTD_MAGIC.size or _ZSTD_MAGIC.unpack_from(view, 0)[0] != _ZSTD_FRAME_MAGIC:
        return None
    try:
        pos = zstandard.frame_header_size(view)
    except zstandard.ZstdError:
        return None
    checksum = view[_ZSTD_MAGIC.size] & _ZSTD_CHECKSUM_FLAG
    end = len(view)
    while True:
        if end - pos < _ZSTD_BLOCK_HEADER_BYTES:
            return None
        header = view[pos] | view[pos + 1] << 8 | view[pos + 2] << 16
        kind, size = header >> 1 & 3, header >> 3
        pos += _ZSTD_BLOCK_HEADER_BYTES + (1 if kind == _ZSTD_RLE_BLOCK else size)
        if kind == _ZSTD_RESERVED_BLOCK or pos > end:
            return None
        if header & 1:  # the last block
            pos += _ZSTD_CHECKSUM_BYTES if checksum else 0
            return pos if pos <= end else None


def _zstd_frame(view: memoryview, pos: int, out: bytearray, max_size: int) -> int:
    """Decode one frame starting at `pos` into `out`; return the position after it."""
    import zstandard

    decoder = zstandard.ZstdDecompressor().decompressobj()
    start, produced = pos, len(out)
    # The decoder has no output cap, so feed it slices small enough that even an all-RLE slice
    # cannot overshoot the remaining budget by more than the budget itself; and, at the ratio seen so
    # far, about _ZSTD_OUTPUT_STEP of output per call, so that one call never holds the GIL for long
    # (a compressible 16 MiB batch would otherwise inflate in one call while other clients wait).
    while pos < len(view):
        # Until a first slice shows the ratio, assume the worst.
        ratio = max(1, (len(out) - produced) // (pos - start)) if pos > start else _ZSTD_MAX_RATIO
        step = max(_ZSTD_MIN_STEP, min((max_size - len(out)) // _ZSTD_MAX_RATIO, _ZSTD_OUTPUT_STEP // ratio))
        piece = view[pos : pos + step]
        pos += len(piece)
        try:
            out += decoder.decompress(piece)
        except zstandard.ZstdError as exc:
            raise DecompressionError(f"invalid zstd data: {exc}") from None
        if len(out) > max_size:
            raise DecompressionBombError("zstd", max_size)
        if decoder.eof:
            return pos - len(decoder.unused_data)
    raise DecompressionError("zstd frame is truncated")


_CODECS: dict[int, tuple[Callable[[Buffer, int | None], bytes], Callable[[Buffer, int], bytes | bytearray]]] = {
    Compression.NONE: (_none_compress, _none_decompress),
    Compression.GZIP: (_gzip_compress, _gzip_decompress),
    Compression.SNAPPY: (_snappy_compress, _snappy_decompress),
    Compression.LZ4: (_lz4_compress, _lz4_decompress),
    Compression.ZSTD: (_zstd_compress, _zstd_decompress),
}
