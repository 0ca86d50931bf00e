"""Kafka's idempotent-producer promise across kill -9: a short crash loop (see `crash_loop`).

``scripts/crash_loop.py --restarts N`` runs the same check for longer.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.compat.crash_loop import run_crash_loop
from tests.compat.test_durability import RestartableBroker, restartable  # noqa: F401 - the fixture

RESTARTS = 5


@pytest.mark.timeout(120)
def test_idempotent_acks_all_records_read_back_exactly_once_through_kill_9_restarts(
        restartable: Callable[..., RestartableBroker]) -> None:  # noqa: F811 - the imported fixture
    """Kafka: with enable.idempotence=true and acks=all, every record whose delivery callback reported
    no error is in the log exactly once at its acknowledged offset. Two confluent-kafka producers write
    unique values to 3-partition topics on the file engine while the broker is SIGKILLed and restarted
    RESTARTS times at random moments; the high watermark never falls below an acknowledged offset,
    both producers keep making progress, and the final read finds every acknowledged value once."""
    broker = restartable()
    result = run_crash_loop(broker, RESTARTS, producers=2, seed=0xC0A5)
    print(result.summary())
    assert broker.stop() == 0, "broker did not stop cleanly with SIGTERM after the crash loop"
