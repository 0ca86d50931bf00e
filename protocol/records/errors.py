"""Typed errors of the record layer, each naming the Kafka error code a broker should answer with.

The record layer stays sans-io and does not import the protocol error enum; `error_name` carries
Kafka's name (e.g. ``CORRUPT_MESSAGE``) so a handler can map any of these with one lookup.
"""

from __future__ import annotations


class RecordBatchError(Exception):
    """Base of every error raised while reading, building or (de)compressing record batches."""

    error_name = "CORRUPT_MESSAGE"


class CorruptRecordError(RecordBatchError):
    """The bytes cannot be a valid v2 batch or record: bad CRC, bad length, malformed varint, ..."""


class InvalidRecordError(CorruptRecordError):
    """The records of a batch disagree with its header: fewer or more than the declared record count.

    Kafka's record iterator raises InvalidRecordException for these ("Incorrect declared batch size").
    """

    error_name = "INVALID_RECORD"


class TruncatedBatchError(RecordBatchError):
    """The buffer ends inside a batch: a torn tail in a log segment, or a short Produce payload.

    Kept apart from `CorruptRecordError` so that log recovery can truncate at `position` while a
    Produce handler treats it as corruption.
    """

    def __init__(self, position: int, needed: int, available: int) -> None:
        super().__init__(
            f"record batch at position {position} is truncated: needs {needed} bytes, {available} available"
        )
        self.position = position
        self.needed = needed
        self.available = available


class UnsupportedMagicError(RecordBatchError):
    """A legacy MessageSet (magic 0 or 1) where only v2 record batches are accepted."""

    # Kafka answers a v3+ Produce carrying magic < 2 with InvalidRecordException.
    error_name = "INVALID_RECORD"

    def __init__(self, magic: int, position: int) -> None:
        super().__init__(
            f"message format v0/v1 (magic={magic}) at position {position} is not supported; "
            "Moldau accepts only v2 record batches (Kafka 0.11+ clients)"
        )
        self.magic = magic
        self.position = position


class UnsupportedCompressionError(RecordBatchError):
    """The compression attribute names a codec Kafka does not define (5, 6 or 7)."""

    error_name = "UNSUPPORTED_COMPRESSION_TYPE"


class DecompressionError(CorruptRecordError):
    """The compressed payload of a batch is not valid data for its codec."""


class DecompressionBombError(DecompressionError):
    """Decompressing would produce more bytes than the caller allowed."""

    # The batch is too large once decompressed; the Java producer splits a batch answered this way.
    error_name = "MESSAGE_TOO_LARGE"

    def __init__(self, codec: str, max_size: int) -> None:
        super().__init__(f"{codec} payload decompresses to more than the allowed {max_size} bytes")
        self.codec = codec
        self.max_size = max_size
