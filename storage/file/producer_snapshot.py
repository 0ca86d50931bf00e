"""Producer-state snapshot files: Kafka's ``<offset>.snapshot`` (ProducerStateManager, format version 1).

A snapshot at offset O holds the producer entries of a log (`storage.transactions`) as they were
after every batch below O; ongoing transactions are the entries with a current transaction first
offset. Layout, big-endian::

    version int16 (1) | crc uint32 | entry count int32 | entries
    entry: producer_id int64 | epoch int16 | last_sequence int32 | last_offset int64 | offset_delta int32
           | timestamp int64 | coordinator_epoch int32 | current_txn_first_offset int64

The CRC is CRC-32C of everything after the CRC field (count and entries). Files are named by the
offset, 20 digits like segments, and written through a temporary file and a rename, then fsynced.

Which snapshots are kept is Kafka's rule (``removeStraySnapshots`` and the deletion of a segment's
snapshot with the segment): one at each segment's base offset (written when that segment was rolled)
and the newest other one if it is past the last segment's base (written at a clean close). Snapshots
below the first segment go with it.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Sequence

from protocol.records.checksum import crc32c
from storage.file.fs import FileSystem, read_file, replace_file, unlink_if_exists
from storage.file.segment import NAME_DIGITS, segment_name
from storage.interface import ProducerSnapshotEntry

SNAPSHOT_SUFFIX = ".snapshot"
SNAPSHOT_VERSION = 1
HEAD = struct.Struct(">hIi")  # version, crc, entry count
ENTRY = struct.Struct(">qhiqiqiq")
ENTRY_SIZE = ENTRY.size  # 46
_CRC_END = 2 + 4  # the CRC covers the bytes from here on


class CorruptSnapshotError(Exception):
    """A snapshot file that cannot be trusted (the caller deletes it and falls back to an older one)."""


def encode_snapshot(entries: Iterable[ProducerSnapshotEntry]) -> bytes:
    body = bytearray()
    count = 0
    for e in entries:
        body += ENTRY.pack(e.producer_id, e.producer_epoch, e.last_sequence, e.last_offset, e.offset_delta,
                           e.timestamp, e.coordinator_epoch, e.current_txn_first_offset)
        count += 1
    tail = struct.pack(">i", count) + body
    return struct.pack(">hI", SNAPSHOT_VERSION, crc32c(tail)) + tail


def decode_snapshot(data: bytes) -> list[ProducerSnapshotEntry]:
    """Parse and check a snapshot file's bytes; raises CorruptSnapshotError."""
    if len(data) < HEAD.size:
        raise CorruptSnapshotError(f"{len(data)} bytes, shorter than the {HEAD.size}-byte header")
    version, crc, count = HEAD.unpack_from(data, 0)
    if version != SNAPSHOT_VERSION:
        raise CorruptSnapshotError(f"unknown version {version} (expected {SNAPSHOT_VERSION})")
    if crc32c(memoryview(data)[_CRC_END:]) != crc:
        raise CorruptSnapshotError("CRC mismatch")
    if count < 0 or count * ENTRY_SIZE != len(data) - HEAD.size:
        raise CorruptSnapshotError(f"declares {count} entries, holds {len(data) - HEAD.size} bytes of entries")
    return [ProducerSnapshotEntry(*fields) for fields in ENTRY.iter_unpack(memoryview(data)[HEAD.size:])]


def snapshot_path(directory: str, offset: int) -> str:
    return os.path.join(directory, segment_name(offset) + SNAPSHOT_SUFFIX)


def list_snapshots(fs: FileSystem, directory: str) -> list[int]:
    """Blocking: the offsets of the snapshot files in a partition directory, ascending."""
    offsets = []
    for name in fs.listdir(directory):
        stem, dot, ext = name.partition(".")
        if dot and "." + ext == SNAPSHOT_SUFFIX and len(stem) == NAME_DIGITS and stem.isdigit():
            offsets.append(int(stem))
    return sorted(offsets)


def read_snapshot(fs: FileSystem, directory: str, offset: int) -> list[ProducerSnapshotEntry]:
    """Blocking: the entries of one snapshot file; raises CorruptSnapshotError or OSError."""
    return decode_snapshot(read_file(fs, snapshot_path(directory, offset)))


def write_snapshot(fs: FileSystem, directory: str, offset: int, data: bytes) -> None:
    """Blocking: write a snapshot atomically (temporary file, fsync, rename, directory fsync)."""
    replace_file(fs, snapshot_path(directory, offset), data)


def delete_snapshots(fs: FileSystem, directory: str, offsets: Iterable[int]) -> None:
    for offset in offsets:
        unlink_if_exists(fs, snapshot_path(directory, offset))


def stray_snapshots(offsets: Sequence[int], segment_bases: Sequence[int]) -> list[int]:
    """The snapshots Kafka would not keep (see the module docstring), given the segments' bases."""
    if not segment_bases:
        return list(offsets)
    bases = set(segment_bases)
    first, last = segment_bases[0], segment_bases[-1]
    doomed = [o for o in offsets if o < first]
    strays = [o for o in offsets if o >= first and o not in bases]
    if strays:
        keep = strays[-1] if strays[-1] > last else None
        doomed += [o for o in strays if o != keep]
    return sorted(doomed)
