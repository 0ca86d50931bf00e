"""Checkpoint files of the file engine: a damaged file loses only its bad lines, loudly (issue 12, item 4).

A topic named ``"abc\\n"`` once broke the text checkpoints: after a restart every partition had lost its
log start offset and recovery point, so DeleteRecords and retention were undone for all of them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from storage.file import FileEngine
from storage.file.checkpoint import (
    CORRUPT_SUFFIX,
    LOG_START_OFFSET_CHECKPOINT,
    RECOVERY_POINT_CHECKPOINT,
    format_checkpoint,
    parse_checkpoint,
    scan_checkpoint,
)
from tests.unit.test_file_engine import batch, run

SEGMENT = {"segment.bytes": 3 * len(batch(2))}


def test_a_bad_line_loses_only_its_own_entry() -> None:
    data = b"0\n3\norders 0 1200\norders one 5\nother 2 877\n"
    checkpoint = scan_checkpoint(data)
    assert checkpoint.entries == {("orders", 0): 1200, ("other", 2): 877}
    assert [(number, line) for number, line, _ in checkpoint.problems] == [(4, "orders one 5")]
    with pytest.raises(ValueError, match=r"line 4 \('orders one 5'\)"):
        parse_checkpoint(data)


def test_a_truncated_checkpoint_keeps_its_whole_lines() -> None:
    whole = format_checkpoint({("a", 0): 10, ("b", 0): 877, ("c", 0): 12345})
    cut = whole[:-3]  # "c 0 123": a smaller offset that must not be taken for the real one
    checkpoint = scan_checkpoint(cut)
    assert checkpoint.entries == {("a", 0): 10, ("b", 0): 877}
    assert [(number, reason) for number, _, reason in checkpoint.problems] == [
        (5, "cut short: the file does not end with a newline")]
    # cut inside the header: nothing to keep, and it says so
    assert scan_checkpoint(b"0\n").problems and scan_checkpoint(b"").problems


def test_a_count_that_disagrees_and_an_unknown_version_are_reported() -> None:
    assert scan_checkpoint(b"0\n5\na 0 1\n").problems[0][0] == 2
    unknown = scan_checkpoint(b"7\n1\na 0 1\n")
    assert unknown.entries == {} and unknown.problems[0][0] == 1


def test_topic_names_that_would_break_a_line_round_trip_escaped() -> None:
    entries = {("abc\n", 0): 5, ("a b", 1): 6, ("50%", 2): 7, ("ü\r\u2028x", 3): 8, ("orders.v1-x_y", 4): 9}
    data = format_checkpoint(entries)
    assert data.count(b"\n") == 2 + len(entries)  # one line per entry, whatever the names
    assert b"orders.v1-x_y 4 9\n" in data  # legal Kafka names are written as Kafka writes them
    assert parse_checkpoint(data) == entries


def test_a_newline_in_a_topic_name_keeps_every_log_start_offset(tmp_path: Path) -> None:
    """The original report: DeleteRecords on "abc\\n" and on another topic, restart, both still hold."""
    async def go() -> None:
        engine = FileEngine(tmp_path)
        for topic in ("abc\n", "orders"):
            log = await engine.open_log(topic, 0, SEGMENT)
            for _ in range(5):
                await log.append(batch(2))
            await log.delete_records_before(7)
        await engine.close()
        engine = FileEngine(tmp_path)
        for topic in ("abc\n", "orders"):
            log = await engine.open_log(topic, 0, SEGMENT)
            assert (log.log_start_offset, log.recovery_point) == (7, 10), topic
        await engine.close()
    with capture_logs() as logs:
        run(go())
    assert not [e for e in logs if e["log_level"] == "error"]


def test_a_corrupt_log_start_checkpoint_keeps_the_other_partitions_deletions(tmp_path: Path) -> None:
    async def go() -> None:
        engine = FileEngine(tmp_path)
        for partition in (0, 1):
            log = await engine.open_log("t", partition, SEGMENT)
            for _ in range(5):
                await log.append(batch(2))
            await log.delete_records_before(7)
        await engine.close()
        path = tmp_path / LOG_START_OFFSET_CHECKPOINT
        # What the old writer made of a topic named "abc\n": two lines where one was due.
        damaged = path.read_bytes().replace(b"0\n2\n", b"0\n3\nabc\n 0 4\n", 1)
        path.write_bytes(damaged)
        with capture_logs() as logs:
            engine = FileEngine(tmp_path)
            starts = [(await engine.open_log("t", p, SEGMENT)).log_start_offset for p in (0, 1)]
        assert starts == [7, 7]
        errors = [e for e in logs if e["event"] == "storage.checkpoint.corrupt_line"]
        assert [(e["path"], e["line"], e["content"]) for e in errors] == [
            (str(path), 3, "abc"), (str(path), 4, " 0 4"), (str(path), 2, "3")]  # 3 declared, 4 held
        assert (tmp_path / (LOG_START_OFFSET_CHECKPOINT + CORRUPT_SUFFIX)).read_bytes() == damaged
        await engine.close()
        assert parse_checkpoint(path.read_bytes()) == {("t", 0): 7, ("t", 1): 7}  # rewritten sound
    run(go())


def test_a_partition_whose_entry_was_lost_starts_at_its_first_segment_loudly(tmp_path: Path) -> None:
    async def go() -> None:
        engine = FileEngine(tmp_path)
        log = await engine.open_log("t", 0, SEGMENT)
        for _ in range(5):
            await log.append(batch(2))
        await log.delete_records_before(7)  # segments [0, 6) and [6, 10): the first goes
        await engine.close()
        (tmp_path / LOG_START_OFFSET_CHECKPOINT).write_bytes(b"0\n1\nt 0 7")  # cut before its newline
        (tmp_path / RECOVERY_POINT_CHECKPOINT).write_bytes(b"0\n1\nt 0 1")
        with capture_logs() as logs:
            engine = FileEngine(tmp_path)
            log = await engine.open_log("t", 0, SEGMENT)
        # Nothing is lost: the start falls back to the first remaining segment; the log says so.
        assert (log.log_start_offset, log.log_end_offset) == (6, 10)
        assert [e["event"] for e in logs if e["log_level"] == "error"] == [
            "storage.checkpoint.corrupt_line", "storage.checkpoint.corrupt",
            "storage.checkpoint.corrupt_line", "storage.checkpoint.corrupt", "storage.log_start_offset.lost"]
        await engine.close()
    run(go())
