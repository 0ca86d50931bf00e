"""Small files of the data directory, replaced atomically: offset checkpoints and the shutdown marker.

Checkpoint files use Kafka's names and text format, so operators and tools recognise them::

    0                  <- format version
    2                  <- number of entries
    orders 0 1200      <- topic, partition, offset
    orders 1 877

``recovery-point-offset-checkpoint`` holds, per partition, the offset below which every batch was
fsynced (recovery scans only from there). ``log-start-offset-checkpoint`` holds each log start offset
(DeleteRecords and retention move it). ``.kafka_cleanshutdown`` (Kafka's name, empty) exists only
while no engine runs on the directory after a clean close. Replacement is atomic: write a temporary
file, fsync it, rename it over the old one, fsync the directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from storage.file.fs import FileSystem, fsync_path, read_file, write_file

RECOVERY_POINT_CHECKPOINT = "recovery-point-offset-checkpoint"
LOG_START_OFFSET_CHECKPOINT = "log-start-offset-checkpoint"
CLEAN_SHUTDOWN_FILE = ".kafka_cleanshutdown"
LOCK_FILE = ".lock"
CHECKPOINT_VERSION = 0

PartitionKey = tuple[str, int]


def format_checkpoint(entries: Mapping[PartitionKey, int]) -> bytes:
    lines = [str(CHECKPOINT_VERSION), str(len(entries))]
    lines += [f"{topic} {partition} {offset}" for (topic, partition), offset in sorted(entries.items())]
    return ("\n".join(lines) + "\n").encode()


def parse_checkpoint(data: bytes) -> dict[PartitionKey, int]:
    """Parse a checkpoint file; raises ValueError saying what is wrong."""
    lines = data.decode().splitlines()
    if len(lines) < 2:
        raise ValueError("fewer than the two header lines")
    if int(lines[0]) != CHECKPOINT_VERSION:
        raise ValueError(f"unknown version {lines[0]!r}")
    count = int(lines[1])
    body = [line for line in lines[2:] if line.strip()]
    if len(body) != count:
        raise ValueError(f"declares {count} entries but holds {len(body)}")
    entries = {}
    for line in body:
        topic, partition, offset = line.split(" ")
        entries[(topic, int(partition))] = int(offset)
    return entries


def read_checkpoint(fs: FileSystem, path: str, log: Any) -> dict[PartitionKey, int]:
    """The entries of a checkpoint file; empty when it is missing or unreadable (which is safe: a
    missing recovery point means a full scan, a missing log start offset the first segment's base)."""
    try:
        return parse_checkpoint(read_file(fs, path))
    except FileNotFoundError:
        return {}
    except (ValueError, UnicodeDecodeError) as exc:
        log.warning("storage.checkpoint.unreadable", path=path, error=str(exc))
        return {}


def write_atomic(fs: FileSystem, path: str, data: bytes) -> None:
    """Blocking: replace `path` with `data` so a crash leaves either the old or the new content."""
    temp = path + ".tmp"
    write_file(fs, temp, data, sync=True)
    fs.replace(temp, path)
    fsync_path(fs, os.path.dirname(path) or ".")
