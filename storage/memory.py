"""The in-memory storage engine (``memory://``): batches kept as bytes in lists, nothing on disk.

Meant for tests and CI: fast, and gone when the process ends. Each stored batch is one ``bytes``
object (a single copy out of the request frame), found by binary search over base offsets.
"""

from __future__ import annotations

import bisect

from protocol.records import RecordBatch, iter_batches, set_base_offset, set_log_append_time
from storage.interface import (
    AppendResult,
    OffsetOutOfRange,
    PartitionLog,
    ReadResult,
    StorageEngine,
    TimestampOffset,
    TopicConfigSource,
)
from storage.record_lookup import first_at_or_after, offset_of_timestamp


class MemoryLog(PartitionLog):
    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self._bases: list[int] = []  # base offset of each stored batch, ascending
        self._lasts: list[int] = []
        self._max_ts: list[int] = []
        self._data: list[bytes] = []
        self._start = 0
        self._end = 0
        self._size = 0

    @property
    def log_start_offset(self) -> int:
        return self._start

    @property
    def log_end_offset(self) -> int:
        return self._end

    @property
    def size_bytes(self) -> int:
        return self._size

    async def append(self, records: bytearray | memoryview, log_append_time: int | None = None) -> AppendResult:
        buf = records if isinstance(records, memoryview) else memoryview(records)
        first = self._end
        next_offset = first
        staged = []
        for pos, batch in iter_batches(buf):
            set_base_offset(buf, pos, next_offset)
            if log_append_time is not None:
                set_log_append_time(buf, pos, log_append_time)
            size = batch.total_size
            last = next_offset + batch.last_offset_delta
            max_ts = log_append_time if log_append_time is not None else batch.max_timestamp
            staged.append((next_offset, last, max_ts, bytes(buf[pos:pos + size])))
            next_offset = last + 1
        # Commit only after every batch was framed correctly, so a bad batch appends nothing.
        for base, last, max_ts, data in staged:
            self._bases.append(base)
            self._lasts.append(last)
            self._max_ts.append(max_ts)
            self._data.append(data)
            self._size += len(data)
        self._end = next_offset
        return AppendResult(first, next_offset - 1, -1 if log_append_time is None else log_append_time)

    def _index_of(self, offset: int) -> int:
        """Index of the first batch whose last offset is >= offset."""
        return bisect.bisect_left(self._lasts, offset)

    async def read(self, offset: int, max_bytes: int, *, min_one_batch: bool = True,
                   max_offset: int | None = None) -> ReadResult:
        if offset < self._start or offset > self._end:
            raise OffsetOutOfRange(offset, self._start, self._end)
        limit = self.high_watermark if max_offset is None else max_offset
        result = ReadResult(high_watermark=self.high_watermark, log_start_offset=self._start)
        i = self._index_of(offset)
        while i < len(self._data) and self._bases[i] < limit:
            data = self._data[i]
            if result.size + len(data) > max_bytes and (result.chunks or not min_one_batch):
                break
            result.chunks.append(data)
            result.size += len(data)
            i += 1
        return result

    async def offset_for_timestamp(self, timestamp: int) -> TimestampOffset | None:
        for i in range(self._index_of(self._start), len(self._data)):
            if self._max_ts[i] >= timestamp:
                found = first_at_or_after(RecordBatch(self._data[i]), self._start, timestamp, self._where)
                if found is not None:
                    return found
        return None

    async def max_timestamp(self) -> TimestampOffset | None:
        first = self._index_of(self._start)
        if first >= len(self._data):
            return None
        best = max(range(first, len(self._data)), key=lambda i: (self._max_ts[i], -i))
        return offset_of_timestamp(RecordBatch(self._data[best]), self._start, self._max_ts[best], self._where)

    @property
    def _where(self) -> str:
        return f"{self.topic}-{self.partition}"

    async def truncate_to(self, offset: int) -> None:
        if offset < self._start or offset > self._end:
            raise OffsetOutOfRange(offset, self._start, self._end)
        i = bisect.bisect_left(self._bases, offset)
        if i > 0 and self._lasts[i - 1] >= offset:
            raise ValueError(f"truncation offset {offset} falls inside the batch at {self._bases[i - 1]}")
        self._size -= sum(len(d) for d in self._data[i:])
        for column in (self._bases, self._lasts, self._max_ts, self._data):
            del column[i:]
        self._end = offset

    async def delete_records_before(self, offset: int) -> int:
        if offset < 0 or offset > self.high_watermark:
            raise OffsetOutOfRange(offset, self._start, self.high_watermark)
        if offset > self._start:
            self._start = offset
            keep = self._index_of(offset)
            self._size -= sum(len(d) for d in self._data[:keep])
            for column in (self._bases, self._lasts, self._max_ts, self._data):
                del column[:keep]
        return self._start


class MemoryEngine(StorageEngine):
    url = "memory://"

    def __init__(self) -> None:
        self._logs: dict[tuple[str, int], MemoryLog] = {}
        self._metadata: bytes | None = None

    async def open_log(self, topic: str, partition: int, config: TopicConfigSource = None) -> PartitionLog:
        key = (topic, partition)
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = MemoryLog(topic, partition)
        return log

    async def delete_log(self, topic: str, partition: int) -> None:
        self._logs.pop((topic, partition), None)

    def partitions(self) -> list[tuple[str, int]]:
        return sorted(self._logs)

    async def load_metadata(self) -> bytes | None:
        return self._metadata

    async def save_metadata(self, data: bytes) -> None:
        self._metadata = bytes(data)

    async def close(self) -> None:
        self._logs.clear()

    def __repr__(self) -> str:
        return f"MemoryEngine({len(self._logs)} logs)"
