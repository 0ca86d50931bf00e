"""Zigzag varints (int32) and varlongs (int64) of the v2 record format, and varint-prefixed byte fields.

Readers take untrusted bytes: they reject over-long encodings, values out of range, negative lengths
other than -1 (null), and lengths that run past the buffer, all before slicing anything.
"""

from __future__ import annotations

from protocol.primitives import INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN
from protocol.records.errors import CorruptRecordError

Buffer = bytes | bytearray | memoryview

VARINT_MAX_BYTES = 5
VARLONG_MAX_BYTES = 10


def read_varint(buf: Buffer, pos: int) -> tuple[int, int]:
    """Decode a zigzag int32 at `pos`; return (value, position after it)."""
    try:
        b = buf[pos]
    except IndexError:
        raise CorruptRecordError(f"varint at position {pos} runs past the end of the data") from None
    if b < 0x80:  # one byte covers -64..63: most deltas, lengths of small keys
        return (b >> 1) ^ -(b & 1), pos + 1
    return _read_multibyte(buf, pos, VARINT_MAX_BYTES, 32)


def read_varlong(buf: Buffer, pos: int) -> tuple[int, int]:
    """Decode a zigzag int64 at `pos`; return (value, position after it)."""
    try:
        b = buf[pos]
    except IndexError:
        raise CorruptRecordError(f"varlong at position {pos} runs past the end of the data") from None
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    return _read_multibyte(buf, pos, VARLONG_MAX_BYTES, 64)


def _read_multibyte(buf: Buffer, pos: int, max_bytes: int, bits: int) -> tuple[int, int]:
    if pos + 1 < len(buf) and buf[pos + 1] < 0x80:
        # Two bytes (14 bits, fits any width): record lengths and timestamp deltas of ordinary records.
        raw = (buf[pos] & 0x7F) | (buf[pos + 1] << 7)
        return (raw >> 1) ^ -(raw & 1), pos + 2
    kind = "varint" if bits == 32 else "varlong"
    raw = 0
    shift = 0
    end = min(pos + max_bytes, len(buf))
    for i in range(pos, end):
        b = buf[i]
        raw |= (b & 0x7F) << shift
        if b < 0x80:
            if raw >> bits:
                raise CorruptRecordError(f"{kind} at position {pos} does not fit in {bits} bits")
            return (raw >> 1) ^ -(raw & 1), i + 1
        shift += 7
    if end - pos == max_bytes:
        raise CorruptRecordError(f"{kind} at position {pos} is longer than {max_bytes} bytes")
    raise CorruptRecordError(f"{kind} at position {pos} runs past the end of the data")


def read_nullable_bytes(buf: Buffer, pos: int) -> tuple[bytes | None, int]:
    """Decode a varint length (-1 = null) and that many bytes; return (bytes or None, next position)."""
    length, pos = read_varint(buf, pos)
    if length < 0:
        if length == -1:
            return None, pos
        raise CorruptRecordError(f"invalid negative length {length} at position {pos}")
    end = pos + length
    if end > len(buf):
        raise CorruptRecordError(f"length {length} at position {pos} runs past the end of the data")
    return bytes(buf[pos:end]), end


def write_varint(out: bytearray, value: int) -> None:
    """Append `value` (an int32) zigzag-encoded."""
    if not INT32_MIN <= value <= INT32_MAX:
        raise ValueError(f"varint value {value} is outside the int32 range")
    _write_unsigned(out, (value << 1) ^ (value >> 31))


def write_varlong(out: bytearray, value: int) -> None:
    """Append `value` (an int64) zigzag-encoded."""
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"varlong value {value} is outside the int64 range")
    _write_unsigned(out, (value << 1) ^ (value >> 63))


def write_nullable_bytes(out: bytearray, data: Buffer | None) -> None:
    """Append a varint length (-1 for None) followed by the bytes."""
    if data is None:
        out.append(1)  # zigzag(-1)
        return
    write_varint(out, len(data))
    out += data


def _write_unsigned(out: bytearray, raw: int) -> None:
    while raw >= 0x80:
        out.append((raw & 0x7F) | 0x80)
        raw >>= 7
    out.append(raw)
