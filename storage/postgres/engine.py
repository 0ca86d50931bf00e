"""The PostgreSQL storage engine (``postgresql://user:password@host:port/database``).

Partition logs live in a database that any number of Moldau brokers may share (`storage.postgres.schema`
has the tables). A record batch is one row holding its bytes as received, with its offset range,
timestamps and producer header fields beside them; records are never split into rows.

Appends are one statement: it moves the log's end offset in ``moldau_logs`` only if the end is still the
one this broker last saw (which takes the row's lock), and inserts the batches only if it did. Another
broker's append in between makes the statement insert nothing; this log then takes the row's lock,
learns what was appended (`PostgresLog.refresh`) and appends at the new end, so offsets stay dense and
ordered whoever appends, and one round trip is all an uncontended append costs. A committed append is durable as PostgreSQL's commit is (``synchronous_commit``), so `flush`
has nothing to do.

Producer state (idempotence, ongoing and aborted transactions) is rebuilt when a log is opened from the
producer header columns of its batches, starting from ``head_producers``, the state of what retention
and DeleteRecords dropped from the head (saved with each such drop, as the memory engine keeps it in
memory and the file engine in snapshots).

Compaction (`storage.postgres.compaction`) rewrites and deletes batch rows in place, under the log row's
lock; the cleaner checkpoint is a column of ``moldau_logs``.

A database that cannot be reached answers every operation with `DatabaseUnavailable`
(KAFKA_STORAGE_ERROR, which clients retry); the pool replaces broken connections, so service resumes
when the database returns.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import structlog

from protocol.errors import ErrorCode, KafkaError
from protocol.records import RecordBatch, iter_batches, set_base_offset, set_log_append_time
from storage.aborted_txns import AbortedTxnList
from storage.file.config import LogConfig
from storage.file.producer_snapshot import decode_snapshot, encode_snapshot
from storage.interface import (
    AppendResult,
    OffsetOutOfRange,
    PartitionLog,
    ReadResult,
    StorageEngine,
    TimestampOffset,
    TopicConfigSource,
    redacted_url,
    wall_clock_ms,
)
from storage.log_transactions import TransactionState
from storage.postgres.schema import migrate
from storage.record_lookup import first_at_or_after, offset_of_timestamp
from storage.transactions import TransactionTracker

log = structlog.get_logger()

# Moldau's own URL options, taken out before the URL goes to the driver (which passes unknown options
# to the server as settings).
POOL_SIZE_OPTION = "pool_size"
COMMAND_TIMEOUT_OPTION = "command_timeout"
DEFAULT_POOL_SIZE = 10
DEFAULT_COMMAND_TIMEOUT_S = 15.0
# A read returns at most this many batches, whatever max_bytes allows (bounds one query's work).
MAX_BATCHES_PER_READ = 4096

TRANSACTIONAL_FLAG = 0x10
CONTROL_FLAG = 0x20

METADATA_NAME = "cluster"
CLUSTER_ID_NAME = "cluster.id"

_APPEND = """
WITH moved AS (
    UPDATE moldau_logs SET log_end = $3, size_bytes = size_bytes + $4
    WHERE log_id = $1 AND log_end = $2
    RETURNING log_id),
added AS (
    INSERT INTO moldau_batches (log_id, base_offset, last_offset, max_timestamp, retention_timestamp,
                                producer_id, producer_epoch, last_sequence, attributes, size, data)
    SELECT moved.log_id, b.* FROM moved,
        unnest($5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::smallint[],
               $11::integer[], $12::smallint[], $13::integer[], $14::bytea[]) AS b
    RETURNING 1)
SELECT count(*) FROM added"""
# The same, telling the other brokers (LISTEN moldau_appends) the log's new end offset: the payload is
# "partition:end:topic" ($15 partition, $16 topic).
_APPEND_AND_NOTIFY = _APPEND.replace(
    "SELECT count(*) FROM added",
    "SELECT n, CASE WHEN n > 0 THEN pg_notify('moldau_appends', $15::text || ':' || $3::text || ':' || $16) END "
    "FROM (SELECT count(*) AS n FROM added) AS counted")

# The batches from the one holding $2 (the last one starting at or below it; the next one when compaction
# removed every batch up to $2) whose base offset is below $3, while their running size stays within $5
# (or the first one, when $6 says a read returns at least one batch).
_READ = """
SELECT b.data FROM (
    SELECT base_offset, sum(size) OVER (ORDER BY base_offset) AS upto,
           row_number() OVER (ORDER BY base_offset) AS n
    FROM moldau_batches
    WHERE log_id = $1 AND base_offset < $3 AND base_offset >= coalesce((
        SELECT base_offset FROM moldau_batches WHERE log_id = $1 AND base_offset <= $2
        ORDER BY base_offset DESC LIMIT 1), $2)
    ORDER BY base_offset LIMIT $4) AS pick
JOIN moldau_batches b ON b.log_id = $1 AND b.base_offset = pick.base_offset
WHERE pick.upto <= $5 OR (pick.n = 1 AND $6)
ORDER BY b.base_offset"""

_PRODUCER_COLUMNS = ("base_offset, last_offset, max_timestamp, producer_id, producer_epoch, last_sequence, "
                     f"attributes, CASE WHEN attributes & {CONTROL_FLAG} <> 0 THEN data END AS data")


class DatabaseUnavailable(KafkaError):
    """PostgreSQL could not be reached or failed a statement; clients retry KAFKA_STORAGE_ERROR."""

    def __init__(self, where: str, exc: BaseException) -> None:
        super().__init__(ErrorCode.KAFKA_STORAGE_ERROR,
                         f"PostgreSQL storage at {where} failed: {type(exc).__name__}: {exc}")


def _database_errors() -> tuple[type[BaseException], ...]:
    import asyncpg
    from asyncpg.exceptions import InternalClientError

    # InternalClientError: a pooled connection left mid-operation by a server that went away.
    return (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, InternalClientError)


def _feed(txns: TransactionTracker, aborted: AbortedTxnList, rows: Iterable[Any]) -> None:
    """Feed producer batches (rows of `_PRODUCER_COLUMNS`, by offset) to a log's producer state."""
    for row in rows:
        base, max_ts = row["base_offset"], row["max_timestamp"]
        if row["attributes"] & CONTROL_FLAG:
            ended = txns.append(RecordBatch(row["data"]), base, max_ts)
            if ended is not None:
                aborted.append(ended)
        else:
            txns.add_data(row["producer_id"], row["producer_epoch"], base, row["last_offset"],
                          row["last_sequence"], max_ts, bool(row["attributes"] & TRANSACTIONAL_FLAG))


class PostgresLog(TransactionState, PartitionLog):
    """One partition's log in the database; offsets, size and producer state are cached here and
    refreshed from the database whenever another broker is seen to have changed the log."""

    def __init__(self, engine: PostgresEngine, log_id: int, topic: str, partition: int,
                 config: TopicConfigSource) -> None:
        self.topic = topic
        self.partition = partition
        self.log_id = log_id
        self._engine = engine
        self._config = config
        self._start = 0
        self._end = 0
        self._size = 0
        self._closed = False
        self._loaded = False  # whether the producer state was built from the database
        self._cleaning = False
        self._txns_before = TransactionTracker()
        self._txns = TransactionTracker()
        self._aborted = AbortedTxnList()

    # ------------------------------------------------------------ state

    @property
    def log_start_offset(self) -> int:
        return self._start

    @property
    def log_end_offset(self) -> int:
        return self._end

    @property
    def size_bytes(self) -> int:
        return self._size

    @property
    def _where(self) -> str:
        return f"{self.topic}-{self.partition}"

    @property
    def engine(self) -> PostgresEngine:
        return self._engine

    @property
    def config(self) -> LogConfig:
        """The log's settings, read through its source on every access."""
        return LogConfig(self._config)

    def _check_open(self) -> None:
        if self._closed:
            raise KafkaError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                             f"Partition {self.topic}-{self.partition} was deleted")

    async def refresh(self, conn: Any = None) -> None:
        """Catch up with what other brokers did to this log: their appends are fed to the producer
        state; a moved log start or a truncation reloads the state from the database."""
        if conn is None:
            async with self._engine.connection() as fresh:
                return await self.refresh(fresh)
        row = await conn.fetchrow(
            "SELECT log_start, log_end, size_bytes, head_producers FROM moldau_logs WHERE log_id = $1",
            self.log_id)
        if row is None:
            self._closed = True
            self._check_open()
        if row["log_start"] != self._start or row["log_end"] < self._end or not self._loaded:
            self._txns_before = TransactionTracker.from_entries(
                decode_snapshot(row["head_producers"]) if row["head_producers"] else ())
            self._txns = self._txns_before.copy()
            self._aborted = AbortedTxnList()
            since = row["log_start"]
            self._loaded = True
        elif row["log_end"] > self._end:
            since = self._end
        else:
            return
        rows = await conn.fetch(
            f"SELECT {_PRODUCER_COLUMNS} FROM moldau_batches WHERE log_id = $1 AND base_offset >= $2 "
            "AND producer_id >= 0 ORDER BY base_offset", self.log_id, since)
        _feed(self._txns, self._aborted, rows)
        self._aborted = self._aborted.without_markers_below(row["log_start"])
        self._start, self._end, self._size = row["log_start"], row["log_end"], row["size_bytes"]

    # ------------------------------------------------------------ appends

    async def append(self, records: bytearray | memoryview, log_append_time: int | None = None) -> AppendResult:
        self._check_open()
        buf = records if isinstance(records, memoryview) else memoryview(records)
        # Framing is checked before anything is written, so a bad batch appends nothing.
        batches = list(iter_batches(buf))
        now = self._engine.clock()
        first = self._end
        columns, next_offset = self._columns(buf, batches, first, log_append_time, now)
        size = sum(columns[8])
        statement, extra = (_APPEND_AND_NOTIFY, (str(self.partition), self.topic)) if self._engine.notify_appends \
            else (_APPEND, ())
        async with self._engine.connection() as conn:
            if not await conn.fetchval(statement, self.log_id, first, next_offset, size, *columns, *extra):
                # Another broker appended since this one last looked (or deleted the partition): hold
                # the log's row lock, learn what was appended, and append after it.
                async with conn.transaction():
                    await conn.execute("SELECT 1 FROM moldau_logs WHERE log_id = $1 FOR UPDATE", self.log_id)
                    await self.refresh(conn)
                    first = self._end
                    columns, next_offset = self._columns(buf, batches, first, log_append_time, now)
                    if not await conn.fetchval(statement, self.log_id, first, next_offset, size, *columns, *extra):
                        raise AssertionError(f"append to {self._where} at {first} failed under its row lock")
        self._end = next_offset
        self._size += size
        for (pos, batch), base, max_ts in zip(batches, columns[0], columns[2]):
            if batch.producer_id >= 0:
                ended = self._txns.append(RecordBatch(buf, pos), base, max_ts)
                if ended is not None:
                    self._aborted.append(ended)
        return AppendResult(first, next_offset - 1, -1 if log_append_time is None else log_append_time)

    @staticmethod
    def _columns(buf: memoryview, batches: list[tuple[int, RecordBatch]], first: int,
                 log_append_time: int | None, now: int) -> tuple[list[list[Any]], int]:
        """Patch the batches' base offsets (from `first`) and append time; the insert's column arrays."""
        columns: list[list[Any]] = [[] for _ in range(10)]
        bases, lasts, max_tss, retention_tss, pids, epochs, seqs, attrs, sizes, datas = columns
        next_offset = first
        for pos, batch in batches:
            set_base_offset(buf, pos, next_offset)
            if log_append_time is not None:
                set_log_append_time(buf, pos, log_append_time)
            last = next_offset + batch.last_offset_delta
            max_ts = log_append_time if log_append_time is not None else batch.max_timestamp
            bases.append(next_offset)
            lasts.append(last)
            max_tss.append(max_ts)
            retention_tss.append(max_ts if max_ts >= 0 else now)
            pids.append(batch.producer_id)
            epochs.append(batch.producer_epoch)
            seqs.append(batch.last_sequence)
            attrs.append(batch.attributes)
            sizes.append(batch.total_size)
            datas.append(buf[pos:pos + batch.total_size])
            next_offset = last + 1
        return columns, next_offset

    # ------------------------------------------------------------ reads

    async def read(self, offset: int, max_bytes: int, *, min_one_batch: bool = True,
                   max_offset: int | None = None) -> ReadResult:
        self._check_open()
        if offset < self._start or offset > self._end:
            raise OffsetOutOfRange(offset, self._start, self._end)
        limit = self.high_watermark if max_offset is None else max_offset
        result = ReadResult(high_watermark=self.high_watermark, log_start_offset=self._start)
        if offset >= min(limit, self._end):
            return result  # the common long-poll at the end of the log: no query
        async with self._engine.connection() as conn:
            rows = await conn.fetch(_READ, self.log_id, offset, limit, MAX_BATCHES_PER_READ, max_bytes,
                                    min_one_batch)
        result.chunks = [row["data"] for row in rows]
        result.size = sum(len(chunk) for chunk in result.chunks)
        return result

    async def offset_for_timestamp(self, timestamp: int) -> TimestampOffset | None:
        self._check_open()
        after = -1
        async with self._engine.connection() as conn:
            while True:
                row = await conn.fetchrow(
                    "SELECT base_offset, data FROM moldau_batches WHERE log_id = $1 AND last_offset >= $2 "
                    "AND base_offset > $3 AND max_timestamp >= $4 ORDER BY base_offset LIMIT 1",
                    self.log_id, self._start, after, timestamp)
                if row is None:
                    return None
                found = first_at_or_after(RecordBatch(row["data"]), self._start, timestamp, self._where)
                if found is not None:
                    return found
                after = row["base_offset"]

    async def max_timestamp(self) -> TimestampOffset | None:
        self._check_open()
        async with self._engine.connection() as conn:
            row = await conn.fetchrow(
                "SELECT max_timestamp, data FROM moldau_batches WHERE log_id = $1 AND last_offset >= $2 "
                "ORDER BY max_timestamp DESC, base_offset LIMIT 1", self.log_id, self._start)
        if row is None:
            return None
        return offset_of_timestamp(RecordBatch(row["data"]), self._start, row["max_timestamp"], self._where)

    # ------------------------------------------------------------ removal

    async def truncate_to(self, offset: int) -> None:
        self._check_open()
        if offset < self._start or offset > self._end:
            raise OffsetOutOfRange(offset, self._start, self._end)
        async with self._engine.connection() as conn, conn.transaction():
            await conn.execute("SELECT 1 FROM moldau_logs WHERE log_id = $1 FOR UPDATE", self.log_id)
            row = await conn.fetchrow(
                "SELECT base_offset, last_offset FROM moldau_batches WHERE log_id = $1 AND base_offset < $2 "
                "ORDER BY base_offset DESC LIMIT 1", self.log_id, offset)
            if row is not None and row["last_offset"] >= offset:
                raise ValueError(f"truncation offset {offset} falls inside the batch at {row['base_offset']}")
            freed = await conn.fetchval(
                "WITH gone AS (DELETE FROM moldau_batches WHERE log_id = $1 AND base_offset >= $2 "
                "RETURNING size) SELECT coalesce(sum(size), 0) FROM gone", self.log_id, offset)
            # A cleaner checkpoint past the new end comes down to it (Kafka's truncation does the same).
            await conn.execute("UPDATE moldau_logs SET log_end = $2, size_bytes = size_bytes - $3, cleaner_offset = "
                               "CASE WHEN cleaner_offset > $2 THEN $2 ELSE cleaner_offset END WHERE log_id = $1",
                               self.log_id, offset, freed)
            self._loaded = False  # rebuild the producer state as it was after the last batch kept
            await self.refresh(conn)

    async def delete_records_before(self, offset: int) -> int:
        self._check_open()
        if offset < 0 or offset > self.high_watermark:
            raise OffsetOutOfRange(offset, self._start, self.high_watermark)
        if offset > self._start:
            # Whole batches below the new start go; one straddling it stays (Kafka keeps its segment).
            await self._drop_head(offset, None)
        return self._start

    async def _drop_head(self, new_start: int, first_kept: int | None) -> list[Any]:
        """Move the log start to `new_start` and delete the batches below `first_kept` (None: those
        wholly below the new start), feeding them to the state before the log; returns the deleted
        rows (offsets and sizes), by offset."""
        async with self._engine.connection() as conn, conn.transaction():
            row = await conn.fetchrow("SELECT log_start FROM moldau_logs WHERE log_id = $1 FOR UPDATE",
                                      self.log_id)
            if row is None:
                self._closed = True
                self._check_open()
            new_start = max(new_start, row["log_start"])
            if first_kept is None:
                condition, bound = "last_offset < $2", new_start
            else:
                condition, bound = "base_offset < $2", first_kept
            gone = sorted(await conn.fetch(
                f"DELETE FROM moldau_batches WHERE log_id = $1 AND {condition} RETURNING size, {_PRODUCER_COLUMNS}",
                self.log_id, bound), key=lambda r: r["base_offset"])
            before = self._txns_before.copy()
            _feed(before, AbortedTxnList(), (r for r in gone if r["producer_id"] >= 0))
            freed = sum(r["size"] for r in gone)
            await conn.execute(
                "UPDATE moldau_logs SET log_start = $2, size_bytes = size_bytes - $3, head_producers = $4 "
                "WHERE log_id = $1", self.log_id, new_start, freed, encode_snapshot(before.entries()))
        self._txns_before = before
        self._start = new_start
        self._size -= freed
        self._aborted = self._aborted.without_markers_below(new_start)
        return gone

    async def apply_retention(self, now_ms: int | None = None) -> Any:
        """Delete the oldest batches that ``retention.ms`` / ``retention.bytes`` no longer keep, each
        batch in the role of a Kafka segment (the memory engine's rules); returns a
        `storage.file.retention.RetentionResult`."""
        from storage.file.retention import RETENTION_BYTES, RETENTION_MS, DeletedSegment, RetentionResult

        config = self.config
        if self._closed or self._size == 0 or not config.delete_enabled:
            return RetentionResult((), self._start)
        now = self._engine.clock() if now_ms is None else now_ms
        by_time = by_bytes = None  # first batch each rule keeps; None: it keeps none
        async with self._engine.connection() as conn:
            if config.retention_ms >= 0:
                by_time = await conn.fetchval(
                    "SELECT base_offset FROM moldau_batches WHERE log_id = $1 AND $2 - retention_timestamp <= $3 "
                    "ORDER BY base_offset LIMIT 1", self.log_id, now, config.retention_ms)
            else:
                by_time = await conn.fetchval(
                    "SELECT min(base_offset) FROM moldau_batches WHERE log_id = $1", self.log_id)
            if config.retention_bytes >= 0 and by_time is not None:
                by_bytes = await conn.fetchval(
                    "SELECT min(base_offset) FROM (SELECT base_offset, sum(size) OVER (ORDER BY base_offset) "
                    "AS upto, sum(size) OVER () AS total FROM moldau_batches WHERE log_id = $1 "
                    "AND base_offset >= $2) AS kept WHERE total - upto < $3",
                    self.log_id, by_time, config.retention_bytes)
            else:
                by_bytes = by_time
        if by_bytes is not None and by_bytes == await self._first_base():
            return RetentionResult((), self._start)
        new_start = self._end if by_bytes is None else by_bytes
        gone = await self._drop_head(new_start, new_start)
        deleted = tuple(DeletedSegment(
            r["base_offset"], r["last_offset"] + 1, r["size"],
            RETENTION_MS if by_time is None or r["base_offset"] < by_time else RETENTION_BYTES) for r in gone)
        if deleted:
            log.info("storage.postgres.retention", topic=self.topic, partition=self.partition,
                     batches=len(deleted), bytes=sum(d.size for d in deleted),
                     reasons=sorted({d.reason for d in deleted}), log_start_offset=self._start)
        return RetentionResult(deleted, self._start)

    async def clean(self, now_ms: int | None = None) -> Any:
        """Compact the log when cleanup.policy includes compact (`storage.postgres.compaction`); returns a
        `storage.compaction.CleanResult`, or None when the log is not due. The broker's retention loop calls
        this, on the partition's leader."""
        from storage.compaction import CleanerSettings
        from storage.postgres.compaction import clean_log

        settings = CleanerSettings.of(self.config)
        if not settings.compact or self._closed or self._cleaning:
            return None
        self._cleaning = True
        try:
            return await clean_log(self, settings, self._engine.clock() if now_ms is None else now_ms)
        finally:
            self._cleaning = False

    def compacted(self, freed: int, dropped_markers: set[int]) -> None:
        """A compaction round's page is written: `freed` bytes fewer, and the aborted transactions whose
        ABORT markers went are forgotten with them."""
        self._size -= freed
        if dropped_markers:
            self._aborted = self._aborted.without_markers_at(dropped_markers)

    async def _first_base(self) -> int | None:
        async with self._engine.connection() as conn:
            return await conn.fetchval("SELECT min(base_offset) FROM moldau_batches WHERE log_id = $1",
                                       self.log_id)

    async def close(self) -> None:
        """Forget the cached state; the data stays in the database (`PostgresEngine.delete_log` deletes)."""
        self._closed = True
        self._reset_transactions()


class PostgresEngine(StorageEngine):
    """Partition logs and cluster metadata in one PostgreSQL database (see the module docstring)."""

    shared = True

    def __init__(self, url: str, *, pool_size: int = DEFAULT_POOL_SIZE,
                 command_timeout: float = DEFAULT_COMMAND_TIMEOUT_S,
                 clock: Callable[[], int] = wall_clock_ms) -> None:
        self.url = redacted_url(url)
        self.clock = clock
        self.dsn = url
        self.command_timeout = command_timeout
        # Set by the broker once it is part of a cluster: appends then notify the other brokers.
        self.notify_appends = False
        self._pool_size = pool_size
        self._cluster: Any = None
        self._pool: Any = None
        self._connecting = asyncio.Lock()
        self._logs: dict[tuple[str, int], PostgresLog] = {}
        self._known: set[tuple[str, int]] = set()
        self._opening = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str, **defaults: Any) -> PostgresEngine:
        """An engine for a ``postgresql://`` URL; ``pool_size`` and ``command_timeout`` (seconds) may be
        given as URL options, the rest of the URL goes to the driver as it is."""
        parts = urlsplit(url)
        options = parse_qsl(parts.query, keep_blank_values=True)
        mine = {k: v for k, v in options if k in (POOL_SIZE_OPTION, COMMAND_TIMEOUT_OPTION)}
        rest = [(k, v) for k, v in options if k not in mine]
        settings: dict[str, Any] = {}
        try:
            if POOL_SIZE_OPTION in mine:
                settings["pool_size"] = int(mine[POOL_SIZE_OPTION])
            if COMMAND_TIMEOUT_OPTION in mine:
                settings["command_timeout"] = float(mine[COMMAND_TIMEOUT_OPTION])
        except ValueError as exc:
            raise ValueError(f"bad option in storage URL {redacted_url(url)!r}: {exc}") from None
        dsn = urlunsplit(parts._replace(query=urlencode(rest)))
        return cls(dsn, **{**defaults, **settings})

    # ------------------------------------------------------------ connections

    async def _ready(self) -> Any:
        if self._pool is not None:
            return self._pool
        async with self._connecting:
            if self._pool is None:
                try:
                    import asyncpg
                except ImportError:
                    raise RuntimeError("storage.url is a PostgreSQL URL but the asyncpg driver is not "
                                       "installed: pip install 'moldau[postgresql]'") from None
                try:
                    pool = await asyncpg.create_pool(self.dsn, min_size=0, max_size=self._pool_size,
                                                     command_timeout=self.command_timeout)
                    async with pool.acquire() as conn:
                        await migrate(conn)
                        rows = await conn.fetch("SELECT topic, partition FROM moldau_logs")
                except _database_errors() as exc:
                    raise DatabaseUnavailable(self.url, exc) from exc
                self._known = {(r["topic"], r["partition"]) for r in rows}
                self._pool = pool
                log.info("storage.postgres.connected", url=self.url, logs=len(self._known))
        return self._pool

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """A pooled connection; database failures inside come out as `DatabaseUnavailable`."""
        pool = await self._ready()
        try:
            async with pool.acquire(timeout=self.command_timeout) as conn:
                yield conn
        except _database_errors() as exc:
            raise DatabaseUnavailable(self.url, exc) from exc

    @property
    def cluster(self) -> Any:
        """This broker's side of the registry of brokers sharing the database
        (`storage.postgres.cluster.PostgresCluster`)."""
        if self._cluster is None:
            from storage.postgres.cluster import PostgresCluster

            self._cluster = PostgresCluster(self)
        return self._cluster

    # ------------------------------------------------------------ logs

    async def open_log(self, topic: str, partition: int, config: TopicConfigSource = None) -> PartitionLog:
        key = (topic, partition)
        plog = self._logs.get(key)
        if plog is not None:
            return plog
        async with self._opening:
            plog = self._logs.get(key)
            if plog is None:
                async with self.connection() as conn:
                    log_id = await conn.fetchval(
                        "INSERT INTO moldau_logs (topic, partition) VALUES ($1, $2) ON CONFLICT (topic, partition) "
                        "DO UPDATE SET topic = EXCLUDED.topic RETURNING log_id", topic, partition)
                    plog = PostgresLog(self, log_id, topic, partition, config)
                    await plog.refresh(conn)
                self._logs[key] = plog
                self._known.add(key)
        return plog

    async def delete_log(self, topic: str, partition: int) -> None:
        async with self.connection() as conn:
            await conn.execute("DELETE FROM moldau_logs WHERE topic = $1 AND partition = $2", topic, partition)
        self._known.discard((topic, partition))
        plog = self._logs.pop((topic, partition), None)
        if plog is not None:
            await plog.close()

    async def forget_log(self, topic: str, partition: int) -> None:
        self._known.discard((topic, partition))
        plog = self._logs.pop((topic, partition), None)
        if plog is not None:
            await plog.close()

    def partitions(self) -> list[tuple[str, int]]:
        return sorted(self._known)

    def metadata_lock(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self.cluster.metadata_lock()

    # ------------------------------------------------------------ cluster metadata

    async def load_metadata(self) -> bytes | None:
        return await self.load_document(METADATA_NAME)

    async def save_metadata(self, data: bytes) -> None:
        """Replace the metadata blob and tell the other brokers (LISTEN moldau_metadata) on commit."""
        await self._save_named(METADATA_NAME, data, "moldau_metadata", "")

    async def load_document(self, name: str) -> bytes | None:
        """A named document every broker shares (``moldau_metadata``), or None."""
        async with self.connection() as conn:
            data = await conn.fetchval("SELECT data FROM moldau_metadata WHERE name = $1", name)
        return None if data is None else bytes(data)

    async def save_document(self, name: str, data: bytes) -> None:
        """Replace a shared document and tell the other brokers (LISTEN moldau_documents: its name)."""
        await self._save_named(name, data, "moldau_documents", name)

    async def _save_named(self, name: str, data: bytes, channel: str, payload: str) -> None:
        async with self.connection() as conn, conn.transaction():
            await conn.execute("INSERT INTO moldau_metadata (name, data) VALUES ($1, $2) ON CONFLICT (name) "
                               "DO UPDATE SET data = EXCLUDED.data", name, bytes(data))
            await conn.execute("SELECT pg_notify($1, $2)", channel, payload)

    async def claim_cluster_id(self, candidate: str) -> str:
        async with self.connection() as conn:
            await conn.execute("INSERT INTO moldau_metadata (name, data) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                               CLUSTER_ID_NAME, candidate.encode())
            stored = await conn.fetchval("SELECT data FROM moldau_metadata WHERE name = $1", CLUSTER_ID_NAME)
        return bytes(stored).decode()

    async def close(self) -> None:
        for plog in self._logs.values():
            await plog.close()
        self._logs.clear()
        if self._cluster is not None:
            await self._cluster.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    def __repr__(self) -> str:
        return f"PostgresEngine({self.url}, {len(self._logs)} logs open)"
