"""Repeated bad-input warnings are logged once per (event, host) and window, then summarised with a
count; the throttle's own memory is bounded. Unit rules on a virtual clock, and the broker under a
flood of malformed frames over raw sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from broker.log_throttle import SUMMARY_EVENT, LogThrottle
from broker.server import Broker
from tests.unit.test_connection import Script, connect, eventually, is_closed, served, with_broker


class Recorder:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append(("warning", event, fields))

    def error(self, event: str, **fields: Any) -> None:
        self.lines.append(("error", event, fields))


def make(window_s: float = 60.0, max_keys: int = 100) -> tuple[LogThrottle, Recorder, list[float]]:
    now = [0.0]
    rec = Recorder()
    return LogThrottle(window_s, max_keys, lambda: now[0], rec), rec, now


def test_first_line_in_full_then_counted_then_one_summary() -> None:
    throttle, rec, now = make()
    assert throttle.warning("request.malformed_body", "10.0.0.1", reason="first")
    for i in range(500):
        now[0] = i * 0.1
        assert not throttle.warning("request.malformed_body", "10.0.0.1", reason=f"n{i}")
    now[0] = 61.0
    assert throttle.warning("request.malformed_body", "10.0.0.1", reason="next window")
    events = [(e, f.get("reason"), f.get("suppressed")) for _, e, f in rec.lines]
    assert events == [("request.malformed_body", "first", None), (SUMMARY_EVENT, None, 500),
                      ("request.malformed_body", "next window", None)]
    summary = rec.lines[1][2]
    assert summary["message"] == "request.malformed_body suppressed 500 similar from 10.0.0.1 in the last 61.0 s"


def test_hosts_and_events_are_throttled_separately() -> None:
    throttle, rec, _ = make()
    assert throttle.warning("a", "h1") and throttle.warning("a", "h2") and throttle.warning("b", "h1")
    assert not throttle.warning("a", "h1")
    assert len(rec.lines) == 3


def test_flush_reports_a_flood_that_stopped_and_nothing_when_quiet() -> None:
    throttle, rec, now = make(window_s=10)
    throttle.warning("x", "h")
    throttle.warning("x", "h")
    throttle.warning("y", "h")  # alone in its window: no summary
    throttle.flush()
    assert len(rec.lines) == 2  # windows still open
    now[0] = 10.0
    throttle.flush()
    assert [(e, f.get("suppressed")) for _, e, f in rec.lines[2:]] == [(SUMMARY_EVENT, 1)]
    assert len(throttle) == 0


def test_memory_is_bounded_by_max_keys_and_the_evicted_key_is_summarised() -> None:
    throttle, rec, _ = make(max_keys=3)
    throttle.warning("x", "h0")
    throttle.warning("x", "h0")
    for i in range(1, 1000):
        throttle.warning("x", f"h{i}")
    assert len(throttle) == 3
    assert [f["host"] for _, e, f in rec.lines if e == SUMMARY_EVENT] == ["h0"]


def test_window_zero_logs_every_line() -> None:
    throttle, rec, _ = make(window_s=0)
    for _ in range(3):
        assert throttle.warning("x", "h")
    assert len(rec.lines) == 3


def test_a_flood_of_malformed_frames_logs_one_warning_and_a_summary() -> None:
    """50 connections from one host each sending a frame whose header does not decode: one
    request.malformed_header line, and at stop one log.suppressed line counting the other 49."""
    script = Script()
    flood = 50
    holder: dict[str, Broker] = {}

    async def test(broker: Broker) -> None:
        holder["broker"] = broker
        for _ in range(flood):
            reader, writer = await connect(broker)
            writer.write(b"\x00\x00\x00\x03abc")  # a 3-byte frame: no room for a request header
            assert await is_closed(reader)
        await eventually(lambda: broker.connection_count == 0, "all bad connections closed")
        assert await served(broker)

    with structlog.testing.capture_logs() as logs:
        asyncio.run(with_broker(script, test))
    malformed = [r for r in logs if r["event"] == "request.malformed_header"]
    summaries = [r for r in logs if r["event"] == SUMMARY_EVENT]
    assert len(malformed) == 1, malformed
    assert [(s["suppressed_event"], s["host"], s["suppressed"]) for s in summaries] == [
        ("request.malformed_header", "127.0.0.1", flood - 1)]
