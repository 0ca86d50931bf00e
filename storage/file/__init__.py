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
        00000000000000004711.log ...     next segment, named by its base offset

Modules: `fs` (the file system seam and `StorageError`), `index` (OffsetIndex, TimeIndex), `segment`
(LogSegment), `recovery` (opening and recovering a partition), `log` (FileLog, the PartitionLog),
`flusher` (group commit, and the durability each flush setting guarantees), `retention`,
`checkpoint` (atomic small files), `config` (per-topic settings), `engine` (FileEngine).
"""

from storage.file.config import DEFAULTS, LogConfig, TopicConfigSource
from storage.file.engine import FileEngine
from storage.file.fs import FaultInjectingFileSystem, FileSystem, StorageError
from storage.file.log import FileLog
from storage.file.retention import DeletedSegment, RetentionResult

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
