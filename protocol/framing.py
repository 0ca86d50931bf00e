"""Kafka's size-prefixed frames: a big-endian int32 length, then that many bytes. Sans-io.

`FrameDecoder` is fed bytes as they arrive and hands back each complete frame without its prefix;
`frame_prefix` is the writer's half. Nothing here knows about API keys or headers.

Size rules, as a Kafka broker applies them to `socket.request.max.bytes`:
- a size above the limit, or a negative one, raises `FrameSizeError` as soon as the 4 size bytes
  are in, before anything of that size is allocated or awaited. A plaintext Kafka port hit by TLS
  or HTTP sees exactly this: the first four bytes read as a huge length.
- a size equal to the limit is allowed (Kafka rejects only sizes above it).
- a size of 0 is also rejected. No Kafka message is empty (a request header is at least 8 bytes, a
  response header 4), and Kafka would fail to parse one and drop the connection anyway; saying so at
  the framing layer gives a clearer error. Frames shorter than a header are the header codec's
  business, since framing does not know header layouts.
"""

from __future__ import annotations

import struct

from protocol.primitives import INT32_MAX

SIZE_PREFIX = struct.Struct(">i")
PREFIX_BYTES = SIZE_PREFIX.size
DEFAULT_LIMIT_NAME = "socket.request.max.bytes"

BytesLike = bytes | bytearray | memoryview
# From this size a frame is gathered as the chunks it arrives in and copied together once, when complete.
LARGE_FRAME_BYTES = 1 << 20


class FrameSizeError(ValueError):
    """A frame's size prefix is unacceptable. The connection cannot be resynchronised: close it."""

    def __init__(self, size: int, max_size: int, limit_name: str = DEFAULT_LIMIT_NAME) -> None:
        if size < 0:
            reason = f"frame size {size} is negative"
        elif size == 0:
            reason = "frame size 0 is invalid: a Kafka message is never empty"
        else:
            reason = f"frame size {size} exceeds {limit_name}={max_size}"
        super().__init__(reason)
        self.size = size
        self.max_size = max_size
        self.limit_name = limit_name


class GatheredFrame:
    """A complete large frame still in the pieces it arrived in. `assemble` copies them into one
    writable buffer, once; it may run on any thread, since the copy of a large join runs without the
    interpreter lock, so an event loop can have it done elsewhere and keep serving meanwhile."""

    __slots__ = ("_parts", "_size")

    def __init__(self, parts: list[BytesLike], size: int) -> None:
        self._parts = parts
        self._size = size

    def __len__(self) -> int:
        return self._size

    def assemble(self) -> bytearray:
        """The frame as one bytearray; the pieces are let go (call it once)."""
        parts, self._parts = self._parts, []
        return bytearray().join(parts)


class FrameDecoder:
    """Split a byte stream into frames. Feed it whatever the socket gave; get back complete frames.

    Partial data of small frames is kept in one bytearray: appending is amortised O(len(chunk)) and
    each buffered byte is moved at most once when consumed frames are dropped from the front. When
    nothing is buffered, frames are cut straight from the caller's chunk and only its incomplete tail
    is kept. A large frame (from LARGE_FRAME_BYTES) is gathered as the chunks it arrives in, without
    copying them, and put together with one copy when complete: growing one buffer chunk by chunk
    would copy it again at every reallocation, many times its size in all, on the caller's thread.
    With ``defer_assembly`` that copy is the caller's, through the `GatheredFrame` handed back.

    After a `FrameSizeError` the stream has lost its framing: every later `feed` raises the same
    error. Complete frames that came before the bad prefix in the same chunk are dropped with it.
    """

    def __init__(self, max_frame_size: int, *, limit_name: str = DEFAULT_LIMIT_NAME,
                 defer_assembly: bool = False) -> None:
        if not 1 <= max_frame_size <= INT32_MAX:
            raise ValueError(f"max_frame_size must be between 1 and {INT32_MAX}, got {max_frame_size}")
        self.max_frame_size = max_frame_size
        self.limit_name = limit_name
        self.defer_assembly = defer_assembly
        self._buffer = bytearray()
        self._error: FrameSizeError | None = None
        # The large frame being gathered: its size, its pieces so far, and their total length.
        self._large_size = 0
        self._parts: list[BytesLike] = []
        self._gathered = 0

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for a frame not yet complete; 0 means the stream is at a frame boundary."""
        if self._large_size:
            return PREFIX_BYTES + self._gathered
        return len(self._buffer)

    @property
    def pending_frame_size(self) -> int | None:
        """The size announced by the frame being received, once its size prefix is in; else None."""
        if self._large_size:
            return self._large_size
        if len(self._buffer) < PREFIX_BYTES:
            return None
        return SIZE_PREFIX.unpack_from(self._buffer, 0)[0]

    def feed(self, data: BytesLike) -> list[bytearray | GatheredFrame]:
        """Take the next bytes of the stream; return the frames they complete, in order (large ones as
        `GatheredFrame` with ``defer_assembly``)."""
        if self._error is not None:
            raise self._error
        if not data:
            return []
        if self._large_size:
            return self._gather(data)
        if self._buffer:
            self._buffer += data
            with memoryview(self._buffer) as view:
                frames, consumed = self._split(view)
            # Outside the `with`: a bytearray cannot be resized while a memoryview of it is alive.
            del self._buffer[:consumed]
        else:
            with memoryview(data) as raw, raw.cast("B") as view:
                frames, consumed = self._split(view)
                self._buffer += view[consumed:]
        rest = self._start_gathering()
        if rest is not None:
            return [*frames, *self.feed(rest)]
        return frames

    def _start_gathering(self) -> bytearray | None:
        """When the buffer holds the start of a large frame, gather it from now on: the buffered bytes
        become its first piece (at most one chunk's worth). Returns bytes to feed on, or None."""
        buffer = self._buffer
        if len(buffer) < PREFIX_BYTES:
            return None
        (size,) = SIZE_PREFIX.unpack_from(buffer, 0)
        if size < LARGE_FRAME_BYTES:
            return None
        # _split left it here, so the size is within the limit and the frame is incomplete.
        del buffer[:PREFIX_BYTES]  # a bytearray drops its front without moving the rest
        self._buffer = bytearray()
        self._large_size = size
        self._parts, self._gathered = [], 0
        return buffer

    def _gather(self, data: BytesLike) -> list[bytearray | GatheredFrame]:
        needed = self._large_size - self._gathered
        size = data.nbytes if isinstance(data, memoryview) else len(data)
        if size <= needed:
            # Kept as given: a bytes chunk from the transport is never written to or reused.
            self._parts.append(data if isinstance(data, bytes) else bytes(data))
            self._gathered += size
            if size < needed:
                return []
            rest: BytesLike = b""
        else:
            with memoryview(data) as raw, raw.cast("B") as view:
                self._parts.append(bytes(view[:needed]))
                rest = bytes(view[needed:])
        frame = GatheredFrame(self._parts, self._large_size)
        self._large_size, self._parts, self._gathered = 0, [], 0
        done: bytearray | GatheredFrame = frame if self.defer_assembly else frame.assemble()
        return [done, *self.feed(rest)]

    def _split(self, view: memoryview) -> tuple[list[bytes], int]:
        """Cut every complete frame from `view`; return them and how many bytes they used."""
        frames: list[bytes] = []
        pos = 0
        end = len(view)
        while end - pos >= PREFIX_BYTES:
            (size,) = SIZE_PREFIX.unpack_from(view, pos)
            if size <= 0 or size > self.max_frame_size:
                self._error = FrameSizeError(size, self.max_frame_size, self.limit_name)
                raise self._error
            start = pos + PREFIX_BYTES
            if end - start < size:
                break
            # A bytearray, so handlers can patch record batches (base offsets) in place without a copy.
            frames.append(bytearray(view[start : start + size]))
            pos = start + size
        return frames, pos


def frame_prefix(length: int) -> bytes:
    """The 4-byte size prefix for a frame of `length` bytes (write it, then the frame itself)."""
    if not 1 <= length <= INT32_MAX:
        # Same rule as the decoder: an empty frame is never a valid Kafka message.
        raise ValueError(f"frame length must be between 1 and {INT32_MAX}, got {length}")
    return SIZE_PREFIX.pack(length)
