"""Kafka's integer bounds have one home (`protocol.primitives`): modules import them, never restate them, so
a reader finds one definition and a grep for the name finds every use."""

from __future__ import annotations

import re
from pathlib import Path

from protocol.primitives import INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN

ROOT = Path(__file__).resolve().parents[2]
HOME = ROOT / "protocol" / "primitives.py"
# 2**31 - 1, 2 ** 63 - 1, (1 << 31) - 1, -(2**63) ...: the bounds written out instead of imported.
RESTATED = re.compile(r"2\s*\*\*\s*\(?(31|63)\)?\s*-\s*1|\(\s*1\s*<<\s*(31|63)\s*\)\s*-\s*1|-\s*\(\s*2\s*\*\*\s*(31|63)\s*\)")


def test_the_bounds_are_kafkas_int32_and_int64() -> None:
    assert (INT32_MIN, INT32_MAX) == (-2_147_483_648, 2_147_483_647)
    assert (INT64_MIN, INT64_MAX) == (-9_223_372_036_854_775_808, 9_223_372_036_854_775_807)


def test_the_project_code_imports_the_bounds_instead_of_restating_them() -> None:
    restated = []
    for package in ("broker", "protocol", "storage", "scripts"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == HOME:
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if RESTATED.search(line.split("#", 1)[0]):
                    restated.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not restated, "import INT32_MAX / INT64_MAX (and the MINs) from protocol.primitives:\n" + "\n".join(restated)
