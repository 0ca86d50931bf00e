"""v2 record batches (Kafka 0.11+), sans-io: header view, CRC-32C, patching, records, compression.

`batch` is the hot path (header and CRC only); `record` and `builder` decode and build records for
the features that need them; `compression` holds the codecs; `errors` the typed failures.
"""

from protocol.records.batch import (
    HEADER_SIZE,
    LOG_OVERHEAD,
    NO_PRODUCER_ID,
    NO_SEQUENCE,
    NO_TIMESTAMP,
    RecordBatch,
    TimestampType,
    compute_crc,
    iter_batches,
    set_base_offset,
    set_log_append_time,
    set_partition_leader_epoch,
    write_crc,
)
from protocol.records.builder import build_batch
from protocol.records.compression import DEFAULT_MAX_DECOMPRESSED_SIZE, Compression, compress, decompress
from protocol.records.errors import (
    CorruptRecordError,
    DecompressionBombError,
    DecompressionError,
    InvalidRecordError,
    RecordBatchError,
    TruncatedBatchError,
    UnsupportedCompressionError,
    UnsupportedMagicError,
)
from protocol.records.record import MIN_RECORD_SIZE, Record, check_record_framing, iter_records

__all__ = [
    "DEFAULT_MAX_DECOMPRESSED_SIZE",
    "HEADER_SIZE",
    "LOG_OVERHEAD",
    "MIN_RECORD_SIZE",
    "NO_PRODUCER_ID",
    "NO_SEQUENCE",
    "NO_TIMESTAMP",
    "Compression",
    "CorruptRecordError",
    "DecompressionBombError",
    "DecompressionError",
    "InvalidRecordError",
    "Record",
    "RecordBatch",
    "RecordBatchError",
    "TimestampType",
    "TruncatedBatchError",
    "UnsupportedCompressionError",
    "UnsupportedMagicError",
    "build_batch",
    "check_record_framing",
    "compress",
    "compute_crc",
    "decompress",
    "iter_batches",
    "iter_records",
    "set_base_offset",
    "set_log_append_time",
    "set_partition_leader_epoch",
    "write_crc",
]
