"""What the PostgreSQL engine does beyond the storage contract (tests/unit/test_storage_contract.py runs
that on it too): data and producer state outlive the engine, several engines (brokers) append to one
partition with dense offsets, the schema is migrated once and versioned, an unreachable or restarted
database gives retriable errors, and the URL's password stays out of messages."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from protocol.errors import ErrorCode
from storage.interface import open_engine, redacted_url
from storage.postgres import DatabaseUnavailable, PostgresEngine
from storage.postgres.schema import SCHEMA_VERSION, SchemaTooNewError, migrate
from tests.postgres_server import PostgresServer, free_port
from tests.unit.test_storage_contract import batch, offsets_of, run
from tests.unit.test_txn_tracker import data, marker


def test_data_metadata_and_producer_state_outlive_the_engine(postgres_url: str) -> None:
    async def go() -> None:
        first = open_engine(postgres_url)
        log = await first.open_log("t", 0)
        await log.append(data(10))  # 0-1: transaction of producer 10
        await log.append(data(11, n=1))  # 2: transaction of producer 11
        await log.append(marker(10, commit=False))  # 3: 10 aborted
        await log.append(batch(3))  # 4-6
        await log.delete_records_before(3)  # the head (with 10's data) goes; its state stays
        await first.save_metadata(b'{"topics": []}')
        cluster_id = await first.claim_cluster_id("first-id")
        before = (log.log_start_offset, log.log_end_offset, log.size_bytes, log.last_stable_offset,
                  log.ongoing_transactions(), log.producer_entries(), await log.aborted_transactions(0, 10))
        await first.close()

        second = open_engine(postgres_url)
        assert await second.load_metadata() == b'{"topics": []}'
        assert await second.claim_cluster_id("second-id") == cluster_id == "first-id"
        again = await second.open_log("t", 0)
        after = (again.log_start_offset, again.log_end_offset, again.size_bytes, again.last_stable_offset,
                 again.ongoing_transactions(), again.producer_entries(), await again.aborted_transactions(0, 10))
        assert after == before
        assert before[3] == 3 and set(before[4]) == {11}  # LSO: max(log start, 11's first offset 2)
        assert offsets_of((await again.read(3, 1 << 20)).chunks) == [3, 4, 5, 6]
        assert second.partitions() == [("t", 0)]
        await second.close()
    run(go())


def test_shared_documents_round_trip_and_are_written_only_off_the_event_loop(postgres_url: str) -> None:
    from broker.documents import SharedDocument

    async def go() -> None:
        engine = PostgresEngine.from_url(postgres_url)
        assert await engine.load_document("acls.json") is None
        document = SharedDocument(engine, "acls.json", None)
        with pytest.raises(RuntimeError, match="worker thread"):
            document.write(b"{}")
        await asyncio.to_thread(document.write, b'{"version": 1, "acls": []}')
        assert await engine.load_document("acls.json") == b'{"version": 1, "acls": []}' == document.read()
        await engine.close()
    run(go())


def test_engines_sharing_a_partition_keep_offsets_dense_and_ordered(postgres_url: str) -> None:
    """Two brokers appending to one partition at once: every append gets its own offsets, none is lost,
    and each learns the other's batches (producer state included) before appending after them."""
    async def go() -> None:
        a, b = open_engine(postgres_url), open_engine(postgres_url)
        log_a, log_b = await a.open_log("shared", 0), await b.open_log("shared", 0)

        async def writer(log: Any, count: int) -> list[tuple[int, int]]:
            ranges = []
            for _ in range(count):
                result = await log.append(batch(2))
                ranges.append((result.base_offset, result.last_offset))
            return ranges

        got_a, got_b = await asyncio.gather(writer(log_a, 30), writer(log_b, 30))
        ranges = sorted(got_a + got_b)
        assert ranges == [(2 * i, 2 * i + 1) for i in range(60)]
        await log_a.append(data(42, transactional=True))  # an ongoing transaction appended through a
        await log_b.refresh()
        assert log_b.log_end_offset == 122 and set(log_b.ongoing_transactions()) == {42}
        assert offsets_of((await log_b.read(0, 1 << 20)).chunks) == list(range(122))
        await a.close()
        await b.close()
    run(go())


def test_a_deleted_partition_is_gone_for_every_engine(postgres_url: str) -> None:
    async def go() -> None:
        a, b = open_engine(postgres_url), open_engine(postgres_url)
        await (await a.open_log("gone", 0)).append(batch(1))
        log_b = await b.open_log("gone", 0)
        await a.delete_log("gone", 0)
        with pytest.raises(Exception) as failure:
            await log_b.append(batch(1))
        assert getattr(failure.value, "code", None) == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        await a.close()
        await b.close()
    run(go())


def test_schema_is_migrated_once_and_a_newer_one_is_refused(postgres_url: str) -> None:
    async def go() -> None:
        engines = [open_engine(postgres_url) for _ in range(3)]
        await asyncio.gather(*(e.load_metadata() for e in engines))  # three brokers starting together
        conn = await asyncpg.connect(postgres_url)
        try:
            assert await conn.fetch("SELECT version FROM moldau_schema") == [(SCHEMA_VERSION,)]
            assert await migrate(conn) == SCHEMA_VERSION  # nothing left to do
            await conn.execute("UPDATE moldau_schema SET version = $1", SCHEMA_VERSION + 1)
            with pytest.raises(SchemaTooNewError, match="newer than this Moldau knows"):
                await migrate(conn)
        finally:
            await conn.close()
        for e in engines:
            await e.close()
    run(go())


def test_an_unreachable_database_is_a_retriable_storage_error() -> None:
    async def go() -> None:
        engine = PostgresEngine.from_url(f"postgresql://moldau:secret@127.0.0.1:{free_port()}/nothing"
                                         "?command_timeout=2")
        with pytest.raises(DatabaseUnavailable) as failure:
            await engine.open_log("t", 0)
        assert failure.value.code == ErrorCode.KAFKA_STORAGE_ERROR
        assert "secret" not in str(failure.value) and "***" in str(failure.value)
        await engine.close()
    run(go())


def test_service_resumes_when_the_database_returns(tmp_path: Any) -> None:
    server = PostgresServer()
    try:
        url = server.create_database("resumes")

        async def go() -> None:
            engine = open_engine(url + "?command_timeout=5")
            log = await engine.open_log("t", 0)
            await log.append(batch(2))
            await asyncio.to_thread(server.stop)
            with pytest.raises(DatabaseUnavailable):
                await log.append(batch(2))
            with pytest.raises(DatabaseUnavailable):
                await log.read(0, 1 << 20)
            await asyncio.to_thread(server.start)
            result = await log.append(batch(2))
            assert (result.base_offset, result.last_offset) == (2, 3)
            assert offsets_of((await log.read(0, 1 << 20)).chunks) == [0, 1, 2, 3]
            await engine.close()
        run(go())
    finally:
        server.close()


def test_url_options_and_redaction() -> None:
    engine = PostgresEngine.from_url("postgresql://u:pw@db.example:5433/k?pool_size=3&command_timeout=1.5"
                                     "&sslmode=disable")
    assert engine.url == "postgresql://u:***@db.example:5433/k?sslmode=disable"
    assert repr(engine).startswith("PostgresEngine(postgresql://u:***@")
    assert redacted_url("postgresql://u@h/d") == "postgresql://u@h/d"
    with pytest.raises(ValueError, match="bad option"):
        PostgresEngine.from_url("postgresql://u:pw@h/d?pool_size=many")


def test_a_dead_brokers_node_id_is_free_though_another_database_uses_it(postgres_server: PostgresServer) -> None:
    """Two clusters in two databases of one server, each with a node 1: when one cluster's node 1 dies
    (its sessions end without a goodbye), that cluster no longer lists it and a new broker may take the
    id at once, whatever the other cluster's node 1 holds (advisory locks are per database)."""
    first_url, second_url = postgres_server.create_database(), postgres_server.create_database()
    mine, theirs = {"PLAINTEXT": ("127.0.0.1", 1111)}, {"PLAINTEXT": ("127.0.0.1", 2222)}

    async def go() -> None:
        other = PostgresEngine.from_url(first_url)
        await other.cluster.register(1, mine, None, lease_ms=60_000)
        dying = PostgresEngine.from_url(second_url)
        await dying.cluster.register(1, mine, None, lease_ms=60_000)
        name = second_url.rsplit("/", 1)[1]
        admin = await asyncpg.connect(postgres_server.url("postgres"))
        try:  # a crash: the database sees every session of the dying broker end, and no row deleted
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
        finally:
            await admin.close()
        successor = PostgresEngine.from_url(second_url)
        assert await successor.cluster.live() == []
        assert await successor.cluster.register(1, theirs, None, lease_ms=60_000) == 1
        assert [b.endpoints for b in await successor.cluster.live()] == [theirs]
        assert [b.endpoints for b in await other.cluster.live()] == [mine]
        for engine in (successor, other):
            await engine.close()
        await dying.close()
    run(go())
