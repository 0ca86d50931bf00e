"""Crash-loop durability check: idempotent acks=all producers while the broker is SIGKILLed and restarted.

Shared by ``tests/compat/test_crash_loop.py`` (a short run) and ``scripts/crash_loop.py`` (any number
of restarts). Built on the kill -9 helpers of ``test_durability.py``: `RestartableBroker` (file storage,
one data dir, restarted on its port), `ConfluentProducer` (here with ``enable.idempotence=true``),
`create_topic` and `verify_log`.

Kafka's promise for an idempotent acks=all producer: every record whose delivery callback reported no
error is in the log exactly once, at the offset it was acknowledged with, whatever happens to the
broker process. Each producer writes unique numbered values to its own topic (3 partitions); after
the last restart every producer must still make progress, and once all are flushed every acknowledged
value is read back exactly once.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from tests.compat.test_durability import (
    PARTITIONS,
    PROGRESS_TIMEOUT_S,
    ConfluentProducer,
    RestartableBroker,
    create_topic,
    unique_topic,
    verify_log,
    watermarks,
)

MAX_KILL_DELAY_S = 0.5  # a kill lands at a random moment this long after the producers' last progress


@dataclass
class ProducerOutcome:
    topic: str
    sent: int
    acked: int
    failed: dict[str, int]
    stored: int
    unacked_stored: int


@dataclass
class CrashLoopResult:
    restarts: int
    seconds: float
    outcomes: list[ProducerOutcome] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.restarts} kill -9 restarts in {self.seconds:.1f}s"]
        for o in self.outcomes:
            lines.append(f"  {o.topic}: sent {o.sent}, acked {o.acked}, failed {o.failed}, stored {o.stored} "
                         f"({o.unacked_stored} never acknowledged)")
        return "\n".join(lines)


def _wait_for_progress(producers: list[ConfluentProducer], counts: list[int], after: str) -> None:
    for producer, count in zip(producers, counts, strict=True):
        assert producer.acks.wait_beyond(count, PROGRESS_TIMEOUT_S), (
            f"{producer.topic}: no new acknowledgement within {PROGRESS_TIMEOUT_S}s {after} (sent {producer.sent}, "
            f"acked {producer.acks.count}, failed {dict(producer.acks.failed)}, errors {producer.errors})")


def run_crash_loop(broker: RestartableBroker, restarts: int, producers: int = 2, seed: int = 0) -> CrashLoopResult:
    """Produce through ``restarts`` SIGKILLs and check every acknowledged record (see the module doc)."""
    rng = random.Random(seed)
    started = time.monotonic()
    topics = [unique_topic("crash-loop") for _ in range(producers)]
    for topic in topics:
        create_topic(broker.bootstrap, topic)
    running = [ConfluentProducer(broker.bootstrap, topic, idempotent=True) for topic in topics]
    for producer in running:
        producer.start()
    try:
        for restart in range(restarts):
            _wait_for_progress(running, [p.acks.count for p in running], f"after restart {restart}")
            time.sleep(rng.uniform(0.0, MAX_KILL_DELAY_S))
            highest = [p.acks.highest() for p in running]
            broker.kill()
            broker.start()
            for producer, acked in zip(running, highest, strict=True):
                marks = watermarks(broker.bootstrap, producer.topic)
                behind = {p: (marks[p][1], acked[p]) for p in acked if marks[p][1] < acked[p] + 1}
                assert not behind, (f"{producer.topic}: after restart {restart + 1} the high watermark is below an "
                                    f"acknowledged offset: partition: (high watermark, highest acked) {behind}")
        _wait_for_progress(running, [p.acks.count for p in running], f"after the last restart ({restarts})")
    finally:
        for producer in running:
            producer.stop()
    result = CrashLoopResult(restarts, time.monotonic() - started)
    for producer in running:
        verdict = verify_log(broker.bootstrap, producer.topic, producer)
        assert not verdict.duplicated_acked, (
            f"{producer.topic}: {len(verdict.duplicated_acked)} acknowledged values stored more than once "
            f"(partition, value, offsets): {verdict.duplicated_acked[:5]}")
        assert verdict.acked > restarts, f"{producer.topic}: only {verdict.acked} acknowledgements in {restarts} restarts"
        result.outcomes.append(ProducerOutcome(producer.topic, producer.sent, verdict.acked,
                                               dict(producer.acks.failed), verdict.stored, verdict.unacked_stored))
    assert len(running[0].acks.offsets) == PARTITIONS
    return result
