"""A short, deterministic network fuzz run against the real broker process (issue 12).

Kafka's rule for bad input: the client gets an error code or a closed connection, the broker never
crashes, hangs, leaks the connection, logs a traceback or floods its log, and keeps serving everyone
else. Mutated real client requests (see `fuzz_corpus`) go to ``moldau serve`` on a few concurrent
connections for about 30 s on each storage engine (memory, and file, where most findings so far came
from), with liveness probes, produce/fetch round trips and connection and memory
checks in between (see `fuzz_engine`). Every distinct failure is named with the seed and the path of
its reproducer (``fuzz-findings/`` at the repository root), replayable with
``python scripts/fuzz.py --replay FILE``.
"""

from __future__ import annotations

import os

import pytest

from tests.compat.conftest import REPO
from tests.compat.fuzz_engine import Campaign, Settings

SEED = int(os.environ.get("MOLDAU_FUZZ_SEED", "12"))
SECONDS = float(os.environ.get("MOLDAU_FUZZ_SECONDS", "30"))


@pytest.mark.timeout(180)
@pytest.mark.parametrize("storage", ["memory", "file"])
def test_mutated_client_requests_never_crash_hang_leak_or_log_tracebacks(storage: str) -> None:
    """Kafka: hostile or corrupt requests cost at most their own connection. After ~30 s of mutated
    frames (seed SEED) the broker is alive, answers a fresh ApiVersions and Metadata within 2 s, round-trips
    a record, has closed every fuzz connection, stayed within its RSS bound and logged no traceback,
    error line or flood."""
    campaign = Campaign(Settings(seed=SEED, seconds=SECONDS, workers=4, storage=storage,
                                 out_dir=REPO / "fuzz-findings"))
    try:
        findings = campaign.run()
    finally:
        code = campaign.close()
    if findings:
        pytest.fail(f"{len(findings)} distinct fuzz findings ({campaign.summary()}); replay one with "
                    f"`python scripts/fuzz.py --replay FILE` (add --isolate to find which of several candidate "
                    f"connections fails alone):\n" + "\n".join(f.describe() for f in findings), pytrace=False)
    assert code == 0, f"broker exited with {code} after SIGTERM at the end of the fuzz run ({campaign.summary()})"
    assert campaign.frames_sent > 500, f"the fuzzer sent too little to mean anything: {campaign.summary()}"
