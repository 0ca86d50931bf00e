"""Log compaction (``cleanup.policy=compact``) of PostgreSQL logs: Kafka's rules (`storage.compaction`) over
the batch rows of one log.

A PostgreSQL log has no segment files, so the parts Kafka draws by segment are drawn by batch here:

* **The active segment**, which is never cleaned, is the newest batches that together hold at most
  ``segment.bytes`` and whose timestamps (append times when they carry none) are within ``segment.ms``
  of the newest batch's, and at least the last batch: what a Kafka log, rolling on whichever comes first
  when a batch is appended, would still be writing into. A log that is all active segment, as a small
  log with Kafka's defaults (1 GiB, 7 days) is, is not cleaned.
* **Dirty** is from the cleaner checkpoint (``moldau_logs.cleaner_offset``; the log start when there is
  none) to the active part, the batch of the earliest ongoing transaction or the first batch within
  ``min.compaction.lag.ms``, whichever comes first; due as in Kafka (``min.cleanable.dirty.ratio``,
  ``max.compaction.lag.ms`` from the first dirty batch's timestamp).
* **Cleaned** is every batch below the round's end offset, as one group: its last batch stays, emptied when
  nothing in it does. When the offset map passes its budget the round ends at the next batch.

The round reads pages of ``PAGE_BATCHES`` rows, so the event loop is given back between them, and writes
each page's outcome in a transaction of its own, under the log row's lock (appends take it too): a page
whose rows changed since they were read (a truncation, retention, DeleteRecords, or another broker's round
after a leadership change) stops the round, and what earlier pages did stays, each of them a valid
compaction on its own. Row updates keep a batch's offsets and producer fields, so producer state rebuilt
from the rows is unchanged; an ABORT marker that goes takes its aborted transaction with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from protocol.primitives import INT64_MAX
from protocol.records import RecordBatch
from storage.compaction import (
    MAP_MEMORY_BYTES,
    CleanedTransactions,
    CleanerSettings,
    CleanPlan,
    CleanResult,
    CleanStats,
    add_keys,
    filter_stored_batch,
)

if TYPE_CHECKING:
    from storage.postgres.engine import PostgresLog

log = structlog.get_logger()

PAGE_BATCHES = 32  # batches read (and rewritten) per query
SEGMENT_MS_BOUND = 1 << 62  # segment.ms past this is as good as never (and keeps the SQL within bigint)

_BOUNDS = """
SELECT
  (SELECT min(base_offset) FROM (
      SELECT base_offset, sum(size) OVER (ORDER BY base_offset DESC) AS suffix
      FROM moldau_batches WHERE log_id = $1) AS newest WHERE suffix <= $2) AS by_bytes,
  (SELECT max(base_offset) FROM moldau_batches WHERE log_id = $1) AS last_base,
  (SELECT min(base_offset) FROM moldau_batches WHERE log_id = $1 AND retention_timestamp >= (
      SELECT retention_timestamp FROM moldau_batches WHERE log_id = $1 ORDER BY base_offset DESC LIMIT 1) - $3)
      AS by_time,
  (SELECT max(base_offset) FROM moldau_batches WHERE log_id = $1 AND base_offset <= $4) AS by_stable,
  (SELECT min(base_offset) FROM moldau_batches WHERE log_id = $1 AND last_offset >= $5) AS dirty_base
"""

_SIZES = """
SELECT coalesce(sum(size) FILTER (WHERE base_offset < $2), 0) AS clean,
       coalesce(sum(size) FILTER (WHERE base_offset >= $2 AND base_offset < $3), 0) AS dirty,
       min(base_offset) FILTER (WHERE base_offset >= $2 AND max_timestamp > $4) AS lagging,
       (SELECT retention_timestamp FROM moldau_batches WHERE log_id = $1 AND base_offset >= $2
        ORDER BY base_offset LIMIT 1) AS first_timestamp
FROM moldau_batches WHERE log_id = $1
"""

_PAGE = ("SELECT base_offset, size, data FROM moldau_batches WHERE log_id = $1 AND base_offset >= $2 "
         "AND base_offset < $3 ORDER BY base_offset LIMIT $4")

_UPDATE = """
UPDATE moldau_batches AS b SET data = u.data, size = u.size, max_timestamp = u.max_timestamp,
    retention_timestamp = u.retention_timestamp, attributes = u.attributes
FROM unnest($2::bigint[], $3::bytea[], $4::integer[], $5::bigint[], $6::bigint[], $7::smallint[])
    AS u(base_offset, data, size, max_timestamp, retention_timestamp, attributes)
WHERE b.log_id = $1 AND b.base_offset = u.base_offset
"""


class _Changed(Exception):
    """The rows of a page changed since the round read them: stop."""


async def clean_log(plog: PostgresLog, settings: CleanerSettings, now: int) -> CleanResult | None:
    """One cleaning round of `plog` at time `now` (see the module docstring); None when it is not due."""
    engine = plog.engine
    await plog.refresh()  # other brokers' appends: the producer state and transactions the rules read
    stable = min([plog.high_watermark, *(first for _, first in plog.ongoing_transactions().values())])
    async with engine.connection() as conn:
        state = await conn.fetchrow("SELECT log_start, log_end, cleaner_offset FROM moldau_logs WHERE log_id = $1",
                                    plog.log_id)
        if state is None:
            return None
        start, end, checkpoint = state["log_start"], state["log_end"], state["cleaner_offset"]
        first_dirty = checkpoint if checkpoint is not None and start <= checkpoint <= end else start
        bounds = await conn.fetchrow(_BOUNDS, plog.log_id, settings.segment_bytes,
                                     min(int(plog.config.segment_ms), SEGMENT_MS_BOUND), stable, first_dirty)
        last_base, dirty_base = bounds["last_base"], bounds["dirty_base"]
        if last_base is None or dirty_base is None:
            return None
        # Kafka rolls on whichever of segment.bytes and segment.ms comes first, so its active segment is
        # within both: the later of the two starts (at most the last batch).
        by_bytes, by_time = bounds["by_bytes"], bounds["by_time"]
        uncleanable = max(last_base if by_bytes is None else by_bytes, last_base if by_time is None else by_time)
        uncleanable = min(uncleanable, -1 if bounds["by_stable"] is None else bounds["by_stable"])
        lag_bound = now - settings.min_compaction_lag_ms if settings.min_compaction_lag_ms > 0 else INT64_MAX
        sizes = await conn.fetchrow(_SIZES, plog.log_id, dirty_base, uncleanable, lag_bound)
    if sizes["lagging"] is not None:
        uncleanable = min(uncleanable, sizes["lagging"])
    if uncleanable <= dirty_base:
        return None
    clean_bytes, dirty_bytes = sizes["clean"], sizes["dirty"]
    total = clean_bytes + dirty_bytes
    ratio = dirty_bytes / total if total else 0.0
    first_timestamp = sizes["first_timestamp"]
    forced = (dirty_bytes > 0 and first_timestamp is not None
              and 0 < first_timestamp < now - settings.max_compaction_lag_ms)
    plan = CleanPlan(0, 0, ratio, forced, forced or ratio > settings.min_cleanable_ratio)
    if not plan.due:
        return None
    txns = CleanedTransactions(await plog.aborted_transactions(0, INT64_MAX), plog.producer_entries())
    key_map: dict[bytes, int] = {}
    end_offset = await _map_keys(plog, txns, dirty_base, uncleanable, first_dirty, key_map)
    stats = CleanStats()
    try:
        await _rewrite(plog, txns, key_map, end_offset, settings, now, stats)
    except _Changed:
        log.info("storage.postgres.clean_aborted", topic=plog.topic, partition=plog.partition,
                 reason="the log changed during the round", bytes_before=stats.bytes_before,
                 bytes_after=stats.bytes_after)
        return stats.result(first_dirty, first_dirty, plan, aborted=True)
    async with engine.connection() as conn:
        await conn.execute("UPDATE moldau_logs SET cleaner_offset = $2 WHERE log_id = $1", plog.log_id, end_offset)
    result = stats.result(first_dirty, end_offset, plan)
    log.info("storage.postgres.cleaned", topic=plog.topic, partition=plog.partition, first_dirty_offset=first_dirty,
             end_offset=end_offset, dirty_ratio=round(ratio, 3), forced=forced, bytes_before=result.bytes_before,
             bytes_after=result.bytes_after, records_removed=result.records_removed,
             tombstones_removed=result.tombstones_removed, aborted_records_removed=result.aborted_records_removed,
             markers_removed=result.markers_removed)
    return result


async def _pages(plog: PostgresLog, first: int, end: int) -> Any:
    """The rows with base offsets in [first, end), a page (one query) at a time."""
    while True:
        async with plog.engine.connection() as conn:
            rows = await conn.fetch(_PAGE, plog.log_id, first, end, PAGE_BATCHES)
        if not rows:
            return
        yield rows
        first = rows[-1]["base_offset"] + 1


async def _map_keys(plog: PostgresLog, txns: CleanedTransactions, dirty_base: int, uncleanable: int,
                    first_dirty: int, key_map: dict[bytes, int]) -> int:
    """Fill `key_map` from the dirty batches; returns the round's end offset (where mapping stopped)."""
    used = 0
    async for rows in _pages(plog, dirty_base, uncleanable):
        for row in rows:
            if used > MAP_MEMORY_BYTES:
                return int(row["base_offset"])
            used += add_keys(RecordBatch(row["data"]), first_dirty, txns, key_map)
    return uncleanable


async def _rewrite(plog: PostgresLog, txns: CleanedTransactions, key_map: dict[bytes, int], end_offset: int,
                   settings: CleanerSettings, now: int, stats: CleanStats) -> None:
    """Filter every batch below `end_offset`, in offset order, writing each page's outcome."""
    async with plog.engine.connection() as conn:
        last_base = await conn.fetchval("SELECT max(base_offset) FROM moldau_batches WHERE log_id = $1 "
                                        "AND base_offset < $2", plog.log_id, end_offset)
    if last_base is None:
        return
    async for rows in _pages(plog, 0, end_offset):
        dropped: list[int] = []
        dropped_markers: set[int] = set()
        updates: list[list[Any]] = [[], [], [], [], [], []]
        before = after = 0
        for row in rows:
            batch = RecordBatch(row["data"])
            last = row["base_offset"] == last_base
            kept = filter_stored_batch(batch, key_map, txns, now, settings.delete_retention_ms, last, stats)
            if kept is None:
                dropped.append(row["base_offset"])
                if batch.is_control:
                    dropped_markers.add(row["base_offset"])
                before += row["size"]
            elif kept[0] is not None:
                data, largest = bytes(kept[0]), kept[1]
                rewritten = RecordBatch(data)
                for column, value in zip(updates, (row["base_offset"], data, len(data), largest,
                                                   largest if largest >= 0 else now, rewritten.attributes)):
                    column.append(value)
                before += row["size"]
                after += len(data)
        if dropped or updates[0]:
            await _write_page(plog, rows, dropped, updates, before - after)
            plog.compacted(before - after, dropped_markers)
            stats.rewrote(before, after)


async def _write_page(plog: PostgresLog, rows: list[Any], dropped: list[int], updates: list[list[Any]],
                      freed: int) -> None:
    """One page's deletions and rewrites, in a transaction under the log row's lock, if its rows are still
    the ones read."""
    async with plog.engine.connection() as conn, conn.transaction():
        if await conn.fetchval("SELECT 1 FROM moldau_logs WHERE log_id = $1 FOR UPDATE", plog.log_id) is None:
            raise _Changed
        found = await conn.fetchrow(
            "SELECT count(*) AS n, coalesce(sum(size), 0) AS bytes FROM moldau_batches WHERE log_id = $1 "
            "AND base_offset >= $2 AND base_offset <= $3", plog.log_id, rows[0]["base_offset"],
            rows[-1]["base_offset"])
        if (found["n"], found["bytes"]) != (len(rows), sum(row["size"] for row in rows)):
            raise _Changed
        if dropped:
            await conn.execute("DELETE FROM moldau_batches WHERE log_id = $1 AND base_offset = ANY($2::bigint[])",
                               plog.log_id, dropped)
        if updates[0]:
            await conn.execute(_UPDATE, plog.log_id, *updates)
        await conn.execute("UPDATE moldau_logs SET size_bytes = size_bytes - $2 WHERE log_id = $1", plog.log_id,
                           freed)
