"""The PostgreSQL engine's schema and its versioned migrations.

Moldau creates and upgrades its own tables: `migrate` applies, in order, every migration above the
version recorded in ``moldau_schema`` (one row), each in its own transaction, under an advisory lock so
that brokers starting together on one database migrate it once. A database written by a newer Moldau
(a version above the last one known here) is refused rather than guessed at.

Version 1:

``moldau_logs``
    one row per partition log: ``log_id`` (the key batches use), ``topic``, ``partition``, the log start
    and end offsets, the bytes of batch data held, and ``head_producers``, the producer state of the
    batches dropped from the head (a producer-state snapshot, `storage.file.producer_snapshot`'s
    encoding), from which the state of the log is rebuilt on open. Appends take this row's lock, which
    is what keeps offsets dense and ordered when several brokers append to one partition.
``moldau_batches``
    one row per stored record batch, its bytes as received (``data``, stored uncompressed and out of
    line: batches are compressed by producers already), its offset range, the timestamps retention and
    lookups use, and the header fields the producer state needs (producer id, epoch, last sequence,
    attributes), so that state is rebuilt without reading the batches themselves.
``moldau_metadata``
    named blobs of cluster state (``cluster``: topics, ids, configs, producer-id blocks; ``cluster.id``).

Version 2:

``moldau_brokers``
    one row per registered broker (`storage.postgres.cluster`): node id, incarnation, rack, advertised
    endpoints by listener (JSON), and the end of its lease.

Version 3: ``moldau_logs.cleaner_offset``, the cleaner checkpoint of a compacted log (below it everything is
clean; NULL: no round yet), as Kafka's ``cleaner-offset-checkpoint`` file holds it.
"""

from __future__ import annotations

from typing import Any

import structlog

log = structlog.get_logger()

# Taken while migrating; any fixed 64-bit key unlikely to clash with an application's own locks.
MIGRATION_LOCK_KEY = 0x6D6F6C646175_01

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: partition logs, their batches, cluster metadata blobs
        """CREATE TABLE moldau_logs (
            log_id bigserial PRIMARY KEY,
            topic text NOT NULL,
            partition integer NOT NULL,
            log_start bigint NOT NULL DEFAULT 0,
            log_end bigint NOT NULL DEFAULT 0,
            size_bytes bigint NOT NULL DEFAULT 0,
            head_producers bytea,
            UNIQUE (topic, partition))""",
        """CREATE TABLE moldau_batches (
            log_id bigint NOT NULL REFERENCES moldau_logs (log_id) ON DELETE CASCADE,
            base_offset bigint NOT NULL,
            last_offset bigint NOT NULL,
            max_timestamp bigint NOT NULL,
            retention_timestamp bigint NOT NULL,
            producer_id bigint NOT NULL,
            producer_epoch smallint NOT NULL,
            last_sequence integer NOT NULL,
            attributes smallint NOT NULL,
            size integer NOT NULL,
            data bytea NOT NULL,
            PRIMARY KEY (log_id, base_offset))""",
        "ALTER TABLE moldau_batches ALTER COLUMN data SET STORAGE EXTERNAL",
        "CREATE TABLE moldau_metadata (name text PRIMARY KEY, data bytea NOT NULL)",
    ),
    (  # 2: broker registrations (storage.postgres.cluster)
        """CREATE TABLE moldau_brokers (
            node_id integer PRIMARY KEY,
            incarnation uuid NOT NULL,
            rack text,
            endpoints text NOT NULL,
            lease_expires_at timestamptz NOT NULL)""",
    ),
    (  # 3: the cleaner checkpoint of compacted logs (storage.postgres.compaction)
        "ALTER TABLE moldau_logs ADD COLUMN cleaner_offset bigint",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNewError(RuntimeError):
    """The database holds a schema from a newer Moldau than this one."""


async def migrate(conn: Any) -> int:
    """Bring the schema to `SCHEMA_VERSION`; returns the version found before (0 for an empty database)."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS moldau_schema (version integer NOT NULL)")
        found = await conn.fetchval("SELECT max(version) FROM moldau_schema") or 0
        if found > SCHEMA_VERSION:
            raise SchemaTooNewError(
                f"the database's Moldau schema is version {found}, newer than this Moldau knows "
                f"({SCHEMA_VERSION}); upgrade Moldau, or point storage.url at another database")
        for version in range(found + 1, SCHEMA_VERSION + 1):
            async with conn.transaction():
                for statement in MIGRATIONS[version - 1]:
                    await conn.execute(statement)
                await conn.execute("DELETE FROM moldau_schema")
                await conn.execute("INSERT INTO moldau_schema (version) VALUES ($1)", version)
            log.info("storage.postgres.migrated", version=version)
        return found
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
