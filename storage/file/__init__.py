"""The durable file engine (``file:///path``): Kafka's log directory layout, crash recovery, retention.

Layout of a data directory (names as in Kafka, so operators and tools recognise them)::

    <data dir>/
      .lock                              flock'ed while an engine runs on the directory
      .kafka_cleanshutdown               present only after a clean close (empty)
      recovery-point-offset-checkpoint   per partition: offset below which everything is fsynced
      log-start-offset-checkpoint        per partition: the log start offset
      <topic>-<partition>/
        00000000000000000000.log         raw v2 batches, exactly as served
        00000000000000000000.index       sparse offset index (8-byte entries)
        00000000000000000000.timeindex   sparse time index (12-byte entries)
        00000000000000000000.txnindex    aborted transactions whose marker is in the segment (if any)
        00000000000000004711.log ...     next segment, named by its base offset
        00000000000000004711.snapshot    producer state at that offset (at each roll and clean close)

Modules: `fs` (the file system seam and `StorageError`), `index` (OffsetIndex, TimeIndex), `segment`
(LogSegment), `recovery` (opening and recovering a partition), `log` (FileLog, the PartitionLog),
`flusher` (group commit, and the durability each flush setting guarantees), `retention`,
`checkpoint` (atomic small files), `config` (per-topic settings), `open_files` (the cap on open
segment descriptors), `txn_index` (.txnindex), `producer_snapshot` (.snapshot files),
`producer_state` (rebuilding the transaction state on open and truncation), `engine` (FileEngine).
"""

from __future__ import annotations

import importlib
from typing import Any

# Loaded on first use, so that importing one small module (the broker's config imports
# storage.file.open_files for its default) does not load the whole engine.
_EXPORTS = {
    "DEFAULTS": "config", "LogConfig": "config", "TopicConfigSource": "config",
    "FileEngine": "engine",
    "FaultInjectingFileSystem": "fs", "FileSystem": "fs", "StorageError": "fs",
    "FileLog": "log",
    "DeletedSegment": "retention", "RetentionResult": "retention",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "DEFAULTS",
    "DeletedSegment",
    "FaultInjectingFileSystem",
    "FileEngine",
    "FileLog",
    "FileSystem",
    "LogConfig",
    "RetentionResult",
    "StorageError",
    "TopicConfigSource",
]
