#!/usr/bin/env python3
"""Network fuzzing campaigns against a real `moldau serve` process, and replay of their reproducers.

    python scripts/fuzz.py --minutes 30 --seed 7 [--workers 4] [--storage memory|file] [--out fuzz-findings]
    python scripts/fuzz.py --replay fuzz-findings/hang-seed7-001-ab12cd.json [--isolate]

A campaign keeps going after a crash or hang (the broker is restarted) and saves one reproducer per
distinct finding: the exact frames sent on the connections that triggered it. ``--replay`` sends a
reproducer's connections to a fresh broker and runs every check once; ``--isolate`` replays each
connection on its own broker to find the one that fails alone. Exit code 1 when anything was found.

The engine is `tests/compat/fuzz_engine.py` (shared with `tests/compat/test_fuzz.py`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.compat.fuzz_engine import Campaign, Settings, replay


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=4, help="concurrent fuzz connections (default 4)")
    parser.add_argument("--storage", choices=("memory", "file"), default="memory")
    parser.add_argument("--out", type=Path, default=ROOT / "fuzz-findings", help="where reproducers go")
    parser.add_argument("--rss-bound-mb", type=int, default=Settings.rss_bound_mb)
    parser.add_argument("--stop-on-fatal", action="store_true", help="end at the first crash or hang")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
                        help="a broker setting, passed on as --set")
    parser.add_argument("--top-events", type=int, default=25, help="how many log event counts to print")
    parser.add_argument("--replay", type=Path, metavar="FILE", help="replay one reproducer and exit")
    parser.add_argument("--isolate", action="store_true", help="with --replay: each connection on its own broker")
    args = parser.parse_args(argv)

    if args.replay is not None:
        findings = replay(args.replay, args.storage if "--storage" in (argv or sys.argv) else None, args.isolate)
        for finding in findings:
            print(finding.describe())
        print("reproduced" if findings else "not reproduced: every check passed")
        return 1 if findings else 0

    broker_args = [a for s in args.settings for a in ("--set", s)]
    campaign = Campaign(Settings(seed=args.seed, seconds=args.minutes * 60, workers=args.workers,
                                 rss_bound_mb=args.rss_bound_mb, out_dir=args.out,
                                 stop_on_fatal=args.stop_on_fatal, broker_args=broker_args,
                                 storage=args.storage))
    try:
        findings = campaign.run()
    finally:
        campaign.close()
    for finding in findings:
        print(finding.describe())
    print(campaign.summary())
    top = sorted(campaign.stats.items(), key=lambda kv: -kv[1])[:args.top_events]
    print("log events seen: " + ", ".join(f"{event} {count}" for event, count in top))
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
