#!/usr/bin/env python3
"""Crash-loop durability check: idempotent acks=all producers through N kill -9 restarts of the broker.

    python scripts/crash_loop.py --restarts 50 [--producers 3] [--seed 1]

The broker runs on the file engine in a temporary data dir; confluent-kafka producers with
enable.idempotence=true write unique values while the broker is SIGKILLed and restarted at random
moments. Afterwards every acknowledged record must be read back exactly once at its acknowledged
offset. Prints what each producer sent, got acknowledged and found stored; exit code 1 on a
violation (the assertion message says which). The check is `tests/compat/crash_loop.py`, shared with
`tests/compat/test_crash_loop.py`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.compat.crash_loop import run_crash_loop
from tests.compat.test_durability import RestartableBroker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--restarts", type=int, default=20)
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1, help="chooses the kill moments")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
                        help="a broker setting, passed on as --set")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="moldau-crash-loop-") as tmp:
        broker = RestartableBroker(Path(tmp), *[a for s in args.settings for a in ("--set", s)])
        try:
            result = run_crash_loop(broker, args.restarts, args.producers, args.seed)
        except AssertionError as exc:
            print(f"FAILED: {exc}")
            return 1
        finally:
            broker.close()
    print(result.summary())
    print("every acknowledged record was read back exactly once")
    return 0


if __name__ == "__main__":
    sys.exit(main())
