"""The transaction coordinator in-process over the file engine, with a manual clock: the whole path of a
transaction (InitProducerId, AddPartitions, data, TxnOffsetCommit, EndTxn, markers) and a crash at each
step, after which a new broker state on the same directory must finish what was decided: committed stays
committed, aborted stays invisible to read_committed, nothing is lost or doubled.

A crash is `FileEngine.simulate_crash()` (what was written stays in the page cache, as after kill -9)
with the coordinator's work stopped at the chosen step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from broker.cluster import OFFSETS_TOPIC, ClusterState
from broker.config import BrokerConfig
from broker.groups.coordinator import CommitPartition, GroupCoordinator, ManualClock
from broker.transactions.coordinator import TransactionCoordinator
from broker.transactions.state import TxnState
from protocol.errors import ErrorCode
from protocol.records import Record, build_batch, iter_batches
from protocol.records.control import ControlType, control_type
from storage.interface import open_engine
from tests.unit.virtual_clock import run_virtual

TOPIC = "orders"
TXN_ID = "txn-1"
GROUP = "readers"
TIMEOUT_MS = 60_000


def settings(data_dir: Path) -> BrokerConfig:
    return BrokerConfig.from_settings({
        "storage.url": f"file://{data_dir}", "listeners": "127.0.0.1:0", "offsets.topic.num.partitions": 3,
        "transaction.state.log.num.partitions": 3})


class Node:
    """One broker's state on a data directory: engine, cluster, group and transaction coordinators."""

    def __init__(self, data_dir: Path, clock: ManualClock) -> None:
        self.config = settings(data_dir)
        self.engine = open_engine(self.config.storage_url)
        self.cluster = ClusterState(self.engine, self.config)
        self.clock = clock
        self.groups: Any = None
        self.txns: Any = None

    async def start(self) -> Node:
        await self.cluster.load()
        self.groups = GroupCoordinator(self.cluster, self.config, self.clock)
        self.groups.start()
        self.txns = TransactionCoordinator(self.cluster, self.config, self.groups, self.clock)
        self.txns.start()
        await self.groups.wait_loaded()
        await self.txns.wait_loaded()
        return self

    async def crash(self) -> None:
        self.engine.simulate_crash()
        await self.txns.stop(grace_s=0)
        await self.groups.stop()

    async def close(self) -> None:
        await self.txns.stop()
        await self.groups.stop()
        await self.engine.close()

    async def produce(self, partition: int, producer_id: int, epoch: int, sequence: int, values: list[bytes]) -> None:
        assert self.txns.verify(TXN_ID, producer_id, epoch, TOPIC, partition) is ErrorCode.NONE
        batch = build_batch([Record(i, 1000, None, v) for i, v in enumerate(values)], producer_id=producer_id,
                            producer_epoch=epoch, base_sequence=sequence, transactional=True)
        p = self.cluster.partition(TOPIC, partition)
        async with p.lock:
            await p.log.append(batch)
        await p.log.flush()

    async def committed_view(self, partition: int) -> tuple[list[bytes], list[int]]:
        """(values a read_committed consumer keeps, control types seen) for one partition, as a client
        filters them with the aborted transactions the log reports."""
        plog = self.cluster.partition(TOPIC, partition).log
        lso = plog.last_stable_offset
        result = await plog.read(plog.log_start_offset, 1 << 20, max_offset=lso)
        aborted = await plog.aborted_transactions(plog.log_start_offset, lso)
        values: list[bytes] = []
        controls: list[int] = []
        from protocol.records import iter_records

        for chunk in result.chunks:
            for _, batch in iter_batches(chunk):
                if batch.base_offset >= lso:
                    continue
                if batch.is_control:
                    controls.append(control_type(batch))
                    continue
                if any(a.producer_id == batch.producer_id and a.first_offset <= batch.base_offset <= a.last_offset
                       for a in aborted):
                    continue
                values += [r.value for r in iter_records(batch)]
        return values, controls


async def begin(node: Node) -> tuple[int, int]:
    error, pid, epoch = await node.txns.init_producer_id(TXN_ID, TIMEOUT_MS, None)
    assert error is ErrorCode.NONE
    assert await node.txns.add_partitions(TXN_ID, pid, epoch, [(TOPIC, 0), (TOPIC, 1)]) is ErrorCode.NONE
    await node.produce(0, pid, epoch, 0, [b"a0", b"a1"])
    await node.produce(1, pid, epoch, 0, [b"b0"])
    return pid, epoch


async def commit_offsets(node: Node, pid: int, epoch: int, offset: int) -> None:
    assert await node.txns.add_offsets(TXN_ID, pid, epoch, GROUP) is ErrorCode.NONE

    def verify(index: int) -> ErrorCode:
        return node.txns.verify(TXN_ID, pid, epoch, OFFSETS_TOPIC, index)

    errors = await node.groups.commit_txn_offsets(GROUP, pid, epoch, -1, "", None,
                                                  [CommitPartition(TOPIC, 0, offset)], verify)
    assert errors == [ErrorCode.NONE]


def committed_offset(node: Node) -> int | None:
    _, offsets = node.groups.fetch_offsets(GROUP, [(TOPIC, 0)])
    (_, om), = offsets
    return None if om is None else om.offset


def scenario(tmp_path: Path, test: Callable[[Path, ManualClock], Awaitable[None]]) -> None:
    async def main() -> None:
        await asyncio.wait_for(test(tmp_path / "data", ManualClock()), 60)
    run_virtual(main())


async def first_node(data_dir: Path, clock: ManualClock) -> Node:
    node = await Node(data_dir, clock).start()
    await node.cluster.create_topic(TOPIC, 2)
    return node


def stall_markers(node: Node, after_partitions: int = 0) -> None:
    """Make the coordinator stop after writing markers to ``after_partitions`` partitions (a crash point)."""
    original = node.txns.write_markers

    async def partial(txn: Any, commit: bool) -> bool:
        if after_partitions:
            first = sorted(txn.partitions)[:after_partitions]
            clone = type(txn)(txn.transactional_id, txn.producer_id, producer_epoch=txn.producer_epoch,
                              partitions=set(first))
            await original(clone, commit)
        await asyncio.Event().wait()
        return False

    node.txns.write_markers = partial


def test_commit_without_a_crash(tmp_path: Path) -> None:
    async def test(data_dir: Path, clock: ManualClock) -> None:
        node = await first_node(data_dir, clock)
        pid, epoch = await begin(node)
        await commit_offsets(node, pid, epoch, 7)
        assert (await node.committed_view(0))[0] == []  # held back by the open transaction
        assert committed_offset(node) is None  # pending until the commit
        assert await node.txns.end_txn(TXN_ID, pid, epoch, True) is ErrorCode.NONE
        await node.txns.wait_completed(TXN_ID)
        assert await node.committed_view(0) == ([b"a0", b"a1"], [ControlType.COMMIT])
        assert await node.committed_view(1) == ([b"b0"], [ControlType.COMMIT])
        assert committed_offset(node) == 7
        await node.close()
        again = await Node(data_dir, clock).start()
        assert again.txns.state.get(TXN_ID).state is TxnState.COMPLETE_COMMIT
        assert committed_offset(again) == 7
        assert await again.committed_view(0) == ([b"a0", b"a1"], [ControlType.COMMIT])
        await again.close()
    scenario(tmp_path, test)


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "abort"])
@pytest.mark.parametrize("markers_written", [0, 1, 2], ids=["before-markers", "mid-markers", "all-markers"])
def test_a_crash_after_the_decision_is_completed_on_restart(tmp_path: Path, commit: bool,
                                                             markers_written: int) -> None:
    async def test(data_dir: Path, clock: ManualClock) -> None:
        node = await first_node(data_dir, clock)
        pid, epoch = await begin(node)
        await commit_offsets(node, pid, epoch, 7)
        stall_markers(node, markers_written)
        assert await node.txns.end_txn(TXN_ID, pid, epoch, commit) is ErrorCode.NONE
        await node.crash()

        again = await Node(data_dir, clock).start()
        await again.txns.wait_completed(TXN_ID)
        txn = again.txns.state.get(TXN_ID)
        assert txn.state is (TxnState.COMPLETE_COMMIT if commit else TxnState.COMPLETE_ABORT)
        kind = ControlType.COMMIT if commit else ControlType.ABORT
        values0, controls0 = await again.committed_view(0)
        values1, controls1 = await again.committed_view(1)
        assert values0 == ([b"a0", b"a1"] if commit else [])
        assert values1 == ([b"b0"] if commit else [])
        assert set(controls0) == set(controls1) == {kind}  # a repeated marker is harmless
        assert committed_offset(again) == (7 if commit else None)
        plog = again.cluster.partition(TOPIC, 0).log
        assert plog.last_stable_offset == plog.high_watermark
        await again.close()
    scenario(tmp_path, test)


def test_a_crash_during_an_open_transaction_aborts_it_after_its_timeout(tmp_path: Path) -> None:
    async def test(data_dir: Path, clock: ManualClock) -> None:
        node = await first_node(data_dir, clock)
        pid, epoch = await begin(node)
        await commit_offsets(node, pid, epoch, 7)
        await node.crash()

        again = await Node(data_dir, clock).start()
        assert again.txns.state.get(TXN_ID).state is TxnState.ONGOING
        plog = again.cluster.partition(TOPIC, 0).log
        assert plog.last_stable_offset == 0  # the open transaction still holds read_committed back
        clock.advance(TIMEOUT_MS + 1)
        await again.txns.abort_timed_out()
        await again.txns.wait_completed(TXN_ID)
        txn = again.txns.state.get(TXN_ID)
        assert txn.state is TxnState.COMPLETE_ABORT and txn.producer_epoch == epoch + 1  # fenced
        assert await again.committed_view(0) == ([], [ControlType.ABORT])
        assert plog.last_stable_offset == plog.high_watermark
        assert committed_offset(again) is None
        # The producer comes back: InitProducerId bumps the epoch again and it can start over.
        error, pid2, epoch2 = await again.txns.init_producer_id(TXN_ID, TIMEOUT_MS, None)
        assert (error, pid2, epoch2) == (ErrorCode.NONE, pid, epoch + 2)
        await again.close()
    scenario(tmp_path, test)


def test_a_crash_after_add_partitions_before_any_data(tmp_path: Path) -> None:
    async def test(data_dir: Path, clock: ManualClock) -> None:
        node = await first_node(data_dir, clock)
        error, pid, epoch = await node.txns.init_producer_id(TXN_ID, TIMEOUT_MS, None)
        assert error is ErrorCode.NONE
        assert await node.txns.add_partitions(TXN_ID, pid, epoch, [(TOPIC, 0)]) is ErrorCode.NONE
        await node.crash()
        again = await Node(data_dir, clock).start()
        txn = again.txns.state.get(TXN_ID)
        assert txn.state is TxnState.ONGOING and txn.partitions == {(TOPIC, 0)}
        # The producer carries on after the restart: its partition is still in the transaction.
        await again.produce(0, pid, epoch, 0, [b"late"])
        assert await again.txns.end_txn(TXN_ID, pid, epoch, True) is ErrorCode.NONE
        await again.txns.wait_completed(TXN_ID)
        assert await again.committed_view(0) == ([b"late"], [ControlType.COMMIT])
        await again.close()
    scenario(tmp_path, test)


@pytest.mark.parametrize("restart", ["clean", "crash"])
def test_an_old_idempotent_producer_is_still_deduplicated_after_a_restart(tmp_path: Path, restart: str) -> None:
    """Issue 13 item 5: the producer's last batch lies more than 10,000 offsets before the log end (past
    the tail the broker replays); the log's producer-state snapshot still remembers it, so its retry is
    recognised as a duplicate instead of being appended again."""
    async def test(data_dir: Path, clock: ManualClock) -> None:
        node = await first_node(data_dir, clock)
        partition = node.cluster.partition(TOPIC, 0)
        old = build_batch([Record(i, 1000, None, b"x") for i in range(3)], producer_id=4242, producer_epoch=0,
                          base_sequence=0)
        async with partition.lock:
            await partition.log.append(bytearray(old))
            await partition.log.append(build_batch([Record(i, 1000, None, b"") for i in range(10_001)]))
        await partition.log.flush()
        if restart == "clean":
            await node.close()
        else:
            await node.crash()
        again = await Node(data_dir, clock).start()
        p = again.cluster.partition(TOPIC, 0)
        async with p.lock:
            state = await again.cluster.producer_state(p)
            duplicate = state.check(4242, 0, 0, 2, p.log.log_end_offset)
        assert duplicate is not None and (duplicate.first_offset, duplicate.last_offset) == (0, 2)
        await again.close()
    scenario(tmp_path, test)


def test_an_idle_transactional_id_expires_and_stays_gone_after_a_restart(tmp_path: Path) -> None:
    """transactional.id.expiration.ms (7 days): an id with nothing in progress is removed with a tombstone
    in __transaction_state; an id with an open transaction is not."""
    async def test(data_dir: Path, clock: ManualClock) -> None:
        node = await first_node(data_dir, clock)
        pid, epoch = await begin(node)
        assert await node.txns.end_txn(TXN_ID, pid, epoch, True) is ErrorCode.NONE
        await node.txns.wait_completed(TXN_ID)
        error, _, _ = await node.txns.init_producer_id("busy", TIMEOUT_MS, None)
        busy = node.txns.state.get("busy")
        assert error is ErrorCode.NONE
        assert await node.txns.add_partitions("busy", busy.producer_id, busy.producer_epoch,
                                              [(TOPIC, 1)]) is ErrorCode.NONE
        clock.advance(node.config.transactional_id_expiration_ms - 1)
        await node.txns.remove_expired()
        assert node.txns.state.get(TXN_ID) is not None
        clock.advance(1)
        await node.txns.remove_expired()
        assert node.txns.state.get(TXN_ID) is None
        assert node.txns.state.get("busy") is not None  # open: never expired (the timeout aborts it first)
        await node.close()
        again = await Node(data_dir, clock).start()
        assert again.txns.state.get(TXN_ID) is None
        # A new producer with that id starts afresh: a new producer id, epoch 0.
        error, new_pid, new_epoch = await again.txns.init_producer_id(TXN_ID, TIMEOUT_MS, None)
        assert error is ErrorCode.NONE and new_pid != pid and new_epoch == 0
        await again.close()
    scenario(tmp_path, test)


def test_the_logs_producer_state_is_bounded_with_the_brokers(tmp_path: Path) -> None:
    """Issue 12 item 7 holds with producer-state snapshots: producers the broker's bound
    (producer.state.max.entries) evicts leave the log's state too, so snapshots do not keep every producer
    id a client ever made up; a producer with an open transaction stays (the last stable offset needs it);
    idle producers expire after producer.id.expiration.ms."""
    async def test(data_dir: Path, clock: ManualClock) -> None:
        node = await first_node(data_dir, clock)
        node.cluster.producers = type(node.cluster.producers)(max_entries=10)
        partition = node.cluster.partition(TOPIC, 0)
        pid, _ = await begin(node)  # an open transaction on partition 0
        async with partition.lock:
            state = await node.cluster.producer_state(partition)
            for producer_id in range(5000, 5100):
                batch = build_batch([Record(0, 1000, None, b"x")], producer_id=producer_id, producer_epoch=0,
                                    base_sequence=0)
                result = await partition.log.append(batch)
                state.record(producer_id, 0, 0, 0, result.base_offset, result.last_offset, 1000)
        known = {e.producer_id for e in partition.log.producer_entries()}
        assert pid in known  # its transaction is open
        assert len(known) <= 11 and set(range(5090, 5100)) <= known
        assert partition.log.expire_producers(10**13, 86_400_000) == len(known) - 1
        assert {e.producer_id for e in partition.log.producer_entries()} == {pid}
        await node.close()
    scenario(tmp_path, test)
