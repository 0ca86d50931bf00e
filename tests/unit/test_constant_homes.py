"""Kafka's integer bounds have one home (`protocol.primitives`): modules import them, never restate them, so
a reader finds one definition and a grep for the name finds every use."""

from __future__ import annotations

import re
from pathlib import Path

from protocol.primitives import INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN

ROOT = Path(__file__).resolve().parents[2]
HOME = ROOT / "protocol" / "primitives.py"
# 2**31 - 1, 2 ** 63 - 1, (1 << 31) - 1, -(2**63) ...: the bounds written out instead of imported.
RESTATED = re.compile(r"2\s*\*\*\s*\(?(31|63)\)?\s*-\s*1"  # 2**31 - 1
                      r"|\(\s*1\s*<<\s*(31|63)\s*\)\s*-\s*1"  # (1 << 31) - 1
                      r"|-\s*\(\s*2\s*\*\*\s*(31|63)\s*\)")  # -(2**31)


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


def test_topic_config_defaults_are_the_storage_engines_own() -> None:
    """The broker's topic configs (DescribeConfigs, validation) default to exactly what the storage engines
    apply when a topic sets nothing: one value per setting, defined where it is used."""
    from broker.config import MESSAGE_MAX_BYTES
    from broker.produce_validation import TopicRules
    from broker.topic_config import BY_NAME
    from storage.compaction import CLEANER_DEFAULTS
    from storage.file.config import DEFAULTS

    for name, value in {**DEFAULTS, **CLEANER_DEFAULTS}.items():
        assert BY_NAME[name].default == value, name
    rules = TopicRules()
    assert (rules.max_message_bytes, rules.segment_bytes) == (MESSAGE_MAX_BYTES, DEFAULTS["segment.bytes"])
    assert BY_NAME["max.message.bytes"].default == MESSAGE_MAX_BYTES
