"""Kafka's wire primitives: fast read/write helpers and their `construct` types.

The helpers are what the generated message codecs call on the hot path: readers take
``(buf, pos)`` and return ``(value, new_pos)``; writers append to a ``bytearray``. Every reader checks
a length prefix against the bytes actually left before it slices or allocates, so a hostile length can
never cause a large allocation. The `construct` classes at the bottom wrap the same helpers so the
types compose with any other `construct` structure (internal topic records, tests).
"""

from __future__ import annotations

import struct
import uuid
from typing import Any

import construct

ZERO_UUID = uuid.UUID(int=0)

INT8 = struct.Struct(">b")
INT16 = struct.Struct(">h")
UINT16 = struct.Struct(">H")
INT32 = struct.Struct(">i")
UINT32 = struct.Struct(">I")
INT64 = struct.Struct(">q")
FLOAT64 = struct.Struct(">d")

# The ranges of Kafka's INT32 and INT64 (Java's Integer and Long): the one home of these bounds.
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


class WireError(ValueError):
    """Malformed bytes: a length past the end, an over-long varint, invalid UTF-8, a bad marker."""


# ---------------------------------------------------------------- varints

def read_uvarint(buf: Any, pos: int) -> tuple[int, int]:
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    result = b & 0x7F
    shift = 7
    pos += 1
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 28:
            raise WireError("unsigned varint longer than 5 bytes")


def write_uvarint(out: bytearray, value: int) -> None:
    if value < 0:
        raise WireError(f"unsigned varint cannot hold {value}")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def uvarint_bytes(value: int) -> bytes:
    out = bytearray()
    write_uvarint(out, value)
    return bytes(out)


def read_varint(buf: Any, pos: int) -> tuple[int, int]:
    raw, pos = read_uvarint(buf, pos)
    return (raw >> 1) ^ -(raw & 1), pos


def write_varint(out: bytearray, value: int) -> None:
    write_uvarint(out, ((value << 1) ^ (value >> 31)) & 0xFFFFFFFF)


# ---------------------------------------------------------------- length checks

def _need(buf: Any, pos: int, n: int) -> int:
    end = pos + n
    if end > len(buf):
        raise WireError(f"length {n} at offset {pos} runs past the end of the {len(buf)}-byte message")
    return end


# The most array elements one decoded message may hold, all arrays together, unless the caller gives
# another bound: a legal frame of 100 MiB made of 2-byte elements would otherwise cost tens of seconds of
# decoding and gigabytes of objects.
MAX_ELEMENTS = 1_000_000


def new_budget(max_elements: int = MAX_ELEMENTS) -> list[int]:
    """The element budget of one decode: [elements still allowed, the bound]."""
    return [max_elements, max_elements]


def _check_count(buf: Any, pos: int, n: int, min_size: int, budget: list[int] | None) -> None:
    if n < -1:
        raise WireError(f"negative array length {n}")
    if n * min_size > len(buf) - pos:
        # Kafka's words: the count is refused before anything is allocated.
        raise WireError(f"tried to allocate a collection of size {n}, but there are only {len(buf) - pos} "
                        f"bytes remaining")
    if budget is not None and n > 0:
        budget[0] -= n
        if budget[0] < 0:
            raise WireError(f"message holds more than {budget[1]} array elements, the most one message may hold")


def read_array_len(buf: Any, pos: int, min_size: int = 1, budget: list[int] | None = None) -> tuple[int, int]:
    """Classic array count (int32, -1 = null). The count times ``min_size`` (the smallest encoding of
    one element) must fit in the bytes left, and the count is taken from ``budget`` (see `new_budget`)."""
    (n,) = INT32.unpack_from(buf, pos)
    pos += 4
    _check_count(buf, pos, n, min_size, budget)
    return n, pos


def read_compact_array_len(buf: Any, pos: int, min_size: int = 1,
                           budget: list[int] | None = None) -> tuple[int, int]:
    """Compact array count (uvarint N+1, 0 = null), checked as `read_array_len` checks it."""
    n, pos = read_uvarint(buf, pos)
    n -= 1
    _check_count(buf, pos, n, min_size, budget)
    return n, pos


def read_uvarint_count(buf: Any, pos: int, min_size: int, budget: list[int] | None = None) -> tuple[int, int]:
    """A plain uvarint count (the number of tagged fields), checked as `read_array_len` checks it."""
    n, pos = read_uvarint(buf, pos)
    _check_count(buf, pos, n, min_size, budget)
    return n, pos


# ---------------------------------------------------------------- strings and bytes

def read_string(buf: Any, pos: int) -> tuple[str | None, int]:
    (n,) = INT16.unpack_from(buf, pos)
    pos += 2
    if n < 0:
        if n == -1:
            return None, pos
        raise WireError(f"negative string length {n}")
    end = _need(buf, pos, n)
    return str(buf[pos:end], "utf-8"), end


def read_compact_string(buf: Any, pos: int) -> tuple[str | None, int]:
    n, pos = read_uvarint(buf, pos)
    if n == 0:
        return None, pos
    end = _need(buf, pos, n - 1)
    return str(buf[pos:end], "utf-8"), end


def write_string(out: bytearray, value: str | None) -> None:
    if value is None:
        out += b"\xff\xff"
        return
    data = value.encode()
    if len(data) > 0x7FFF:
        raise WireError(f"string of {len(data)} bytes is longer than 32767")
    out += INT16.pack(len(data))
    out += data


def write_message_string(out: bytearray, value: str | None) -> None:
    """A classic string holding free text (an error message): one too long for the field is cut at a
    character boundary, marked with "...", rather than failing the whole response. Messages that
    quote a request's names can outgrow the 32767 bytes the names themselves fit in."""
    if value is not None and len(value) > 0x7FFF // 4:  # only then can the UTF-8 form be too long
        data = value.encode()
        if len(data) > 0x7FFF:
            value = data[:0x7FFF - 3].decode("utf-8", "ignore") + "..."
    write_string(out, value)


def write_compact_string(out: bytearray, value: str | None) -> None:
    if value is None:
        out.append(0)
        return
    data = value.encode()
    write_uvarint(out, len(data) + 1)
    out += data


def read_bytes(buf: Any, pos: int) -> tuple[Any, int]:
    """Classic bytes (int32 length, -1 = null). Returns a slice of `buf`: a memoryview stays zero-copy."""
    (n,) = INT32.unpack_from(buf, pos)
    pos += 4
    if n < 0:
        if n == -1:
            return None, pos
        raise WireError(f"negative bytes length {n}")
    end = _need(buf, pos, n)
    return buf[pos:end], end


def read_compact_bytes(buf: Any, pos: int) -> tuple[Any, int]:
    n, pos = read_uvarint(buf, pos)
    if n == 0:
        return None, pos
    end = _need(buf, pos, n - 1)
    return buf[pos:end], end


def read_uuid(buf: Any, pos: int) -> tuple[uuid.UUID, int]:
    end = _need(buf, pos, 16)
    return uuid.UUID(bytes=bytes(buf[pos:end])), end


def read_bool(buf: Any, pos: int) -> tuple[bool, int]:
    return buf[pos] != 0, pos + 1


# ---------------------------------------------------------------- output with zero-copy big chunks

BIG_CHUNK = 4096


class Writer:
    """Accumulates small fields in a bytearray; large byte blobs (record batches) are kept as separate
    parts so they reach the socket without being copied into the frame."""

    __slots__ = ("buf", "parts")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.parts: list[Any] = []

    def blob(self, data: Any) -> None:
        if len(data) < BIG_CHUNK:
            self.buf += data
            return
        if self.buf:
            self.parts.append(self.buf)
            self.buf = bytearray()
        self.parts.append(data)

    def finish(self) -> list[Any]:
        if self.buf:
            self.parts.append(self.buf)
            self.buf = bytearray()
        return self.parts


def write_bytes(w: Writer, value: Any) -> None:
    if value is None:
        w.buf += b"\xff\xff\xff\xff"
        return
    if type(value) is list:
        w.buf += INT32.pack(sum(len(v) for v in value))
        for chunk in value:
            w.blob(chunk)
        return
    w.buf += INT32.pack(len(value))
    w.blob(value)


def write_compact_bytes(w: Writer, value: Any) -> None:
    """A list of buffers is written as their concatenation without joining them (record batches read
    from a log as several chunks go to the socket as they are)."""
    if value is None:
        w.buf.append(0)
        return
    if type(value) is list:
        write_uvarint(w.buf, sum(len(v) for v in value) + 1)
        for chunk in value:
            w.blob(chunk)
        return
    write_uvarint(w.buf, len(value) + 1)
    w.blob(value)


# ---------------------------------------------------------------- construct types

class _Helper(construct.Construct):
    """A `construct` type backed by one of the reader/writer helpers above."""

    def __init__(self, reader: Any, writer: Any, name: str) -> None:
        super().__init__()
        self._reader = reader
        self._writer = writer
        self._kafka_name = name

    def _parse(self, stream: Any, context: Any, path: Any) -> Any:
        # construct streams are file-like; read what is left and give back the unused tail.
        start = stream.tell()
        data = stream.read()
        try:
            value, used = self._reader(data, 0)
        except (WireError, IndexError, struct.error) as exc:
            raise construct.StreamError(f"{self._kafka_name}: {exc}", path=path) from exc
        stream.seek(start + used)
        return value

    def _build(self, obj: Any, stream: Any, context: Any, path: Any) -> Any:
        out = Writer()
        self._writer(out, obj)
        stream.write(b"".join(bytes(p) for p in out.finish()))
        return obj


def _buf_writer(fn: Any) -> Any:
    return lambda w, v: fn(w.buf, v)


UVarInt = _Helper(read_uvarint, _buf_writer(write_uvarint), "uvarint")
VarInt = _Helper(read_varint, _buf_writer(write_varint), "varint")
String = _Helper(read_string, _buf_writer(write_string), "string")
CompactString = _Helper(read_compact_string, _buf_writer(write_compact_string), "compact string")
def _owned(reader: Any) -> Any:
    """A bytes reader that returns its own copy rather than a view of the input."""

    def read(buf: Any, pos: int) -> tuple[bytes | None, int]:
        value, pos = reader(buf, pos)
        return (None if value is None else bytes(value)), pos

    return read


Bytes = _Helper(_owned(read_bytes), write_bytes, "bytes")
CompactBytes = _Helper(_owned(read_compact_bytes), write_compact_bytes, "compact bytes")
Uuid = _Helper(read_uuid, lambda w, v: w.buf.extend(v.bytes), "uuid")
Int8 = construct.Int8sb
Int16 = construct.Int16sb
UInt16 = construct.Int16ub
Int32 = construct.Int32sb
Int64 = construct.Int64sb
Float64 = construct.Float64b
Bool = construct.Flag
