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

Topic names are written as they are when they can round-trip (every legal Kafka name can); any other
character (a space, a line break, anything outside Kafka's ``[a-zA-Z0-9._-]``) is percent-encoded, so
one odd name can never break the lines of every other partition.

Reading is per line, never all or nothing. Kafka's CheckpointFile throws on a malformed file and the
log directory goes offline; here a damaged file keeps every good entry and `read_checkpoint` logs an
error naming the file, the line and what is wrong (and keeps a copy as ``<name>.corrupt``). A
partition whose entry is lost falls back to what loses no data: a full recovery scan (no recovery
point), the first segment's base offset (no log start offset: records DeleteRecords had hidden in that
segment are readable again, never lost), a full clean (no cleaner offset).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from storage.file.fs import FileSystem, read_file, replace_file

RECOVERY_POINT_CHECKPOINT = "recovery-point-offset-checkpoint"
LOG_START_OFFSET_CHECKPOINT = "log-start-offset-checkpoint"
CLEAN_SHUTDOWN_FILE = ".kafka_cleanshutdown"
LOCK_FILE = ".lock"
CHECKPOINT_VERSION = 0
CORRUPT_SUFFIX = ".corrupt"  # where a damaged checkpoint's bytes are kept for the operator

PartitionKey = tuple[str, int]

_ENTRY = re.compile(r"(\S+) (\d+) (\d+)", re.ASCII)
_SHOWN_CHARS = 200  # of a bad line, in the log


def encode_topic(topic: str) -> str:
    """The topic as a checkpoint line holds it: unchanged for Kafka's legal characters, else
    percent-encoded (``%`` is not legal in Kafka topic names, so legal names never change)."""
    return quote(topic, safe="")


def decode_topic(text: str) -> str:
    return unquote(text, errors="strict")


def format_checkpoint(entries: Mapping[PartitionKey, int]) -> bytes:
    lines = [str(CHECKPOINT_VERSION), str(len(entries))]
    lines += [f"{encode_topic(topic)} {partition} {offset}"
              for (topic, partition), offset in sorted(entries.items())]
    return ("\n".join(lines) + "\n").encode()


@dataclass
class Checkpoint:
    """What a checkpoint file holds: the good entries, and (line number, line, reason) per bad line."""

    entries: dict[PartitionKey, int] = field(default_factory=dict)
    problems: list[tuple[int, str, str]] = field(default_factory=list)


def scan_checkpoint(data: bytes) -> Checkpoint:
    """Parse a checkpoint file line by line, keeping every good entry and noting every bad line.

    A line is bad when it is not ``topic partition offset`` (non-negative decimal numbers), when it is
    the last line and lacks its newline (the file was cut), or when it repeats a partition (the lower
    offset is kept: for each kind of checkpoint that is the one that loses nothing)."""
    result = Checkpoint()
    problems = result.problems
    raw_lines = data.split(b"\n")
    cut = bool(raw_lines[-1])
    if cut:
        problems.append((len(raw_lines), _shown(raw_lines[-1]), "cut short: the file does not end with a newline"))
    raw_lines.pop()  # the empty text after the final newline, or the cut line (reported above)
    if len(raw_lines) < 2:
        problems.append((len(raw_lines) + 1, "", "missing the version and entry count header lines"))
        return result
    version, count = raw_lines[0].strip(), raw_lines[1].strip()
    if version != str(CHECKPOINT_VERSION).encode():
        reason = f"unknown format version (expected {CHECKPOINT_VERSION}): no entry is trusted"
        problems.append((1, _shown(raw_lines[0]), reason))
        return result
    for number, raw in enumerate(raw_lines[2:], start=3):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            problems.append((number, _shown(raw), "not UTF-8 text"))
            continue
        match = _ENTRY.fullmatch(line)
        if match is None:
            problems.append((number, _shown(raw), "not 'topic partition offset'"))
            continue
        try:
            key = (decode_topic(match[1]), int(match[2]))
        except UnicodeDecodeError:
            problems.append((number, _shown(raw), "the topic's percent-encoding is not UTF-8"))
            continue
        offset = int(match[3])
        if key in result.entries:
            problems.append((number, _shown(raw), f"repeats {key[0]}-{key[1]}; the lower offset is kept"))
            offset = min(offset, result.entries[key])
        result.entries[key] = offset
    held = sum(1 for raw in raw_lines[2:] if raw.strip()) + (1 if cut else 0)
    if not count.isdigit() or int(count) != held:
        problems.append((2, _shown(raw_lines[1]), f"declares {_shown(count)!r} entries, the file holds {held}"))
    return result


def _shown(raw: bytes) -> str:
    return raw[:_SHOWN_CHARS].decode("utf-8", errors="replace")


def parse_checkpoint(data: bytes) -> dict[PartitionKey, int]:
    """Parse a checkpoint file that must be sound; raises ValueError naming the first bad line."""
    checkpoint = scan_checkpoint(data)
    if checkpoint.problems:
        number, line, reason = checkpoint.problems[0]
        raise ValueError(f"line {number} ({line!r}): {reason}")
    return checkpoint.entries


def read_checkpoint(fs: FileSystem, path: str, log: Any) -> Checkpoint:
    """Blocking: the entries of a checkpoint file (none when it is missing). A damaged file keeps its
    good entries; each bad line is logged as an error naming the file and the line, and the bytes are
    kept as ``<path>.corrupt`` before the next checkpoint replaces the file."""
    try:
        data = read_file(fs, path)
    except FileNotFoundError:
        return Checkpoint()
    checkpoint = scan_checkpoint(data)
    if checkpoint.problems:
        for number, line, reason in checkpoint.problems:
            log.error("storage.checkpoint.corrupt_line", path=path, line=number, content=line, reason=reason)
        try:
            replace_file(fs, path + CORRUPT_SUFFIX, data)
        except OSError as exc:
            log.warning("storage.checkpoint.copy_failed", path=path + CORRUPT_SUFFIX, error=str(exc))
        log.error("storage.checkpoint.corrupt", path=path, bad_lines=len(checkpoint.problems),
                  entries_kept=len(checkpoint.entries), copy=path + CORRUPT_SUFFIX,
                  fix="partitions without an entry fall back to a full recovery scan and their first "
                      "segment's base offset; check the copy and any DeleteRecords done on them")
    return checkpoint
