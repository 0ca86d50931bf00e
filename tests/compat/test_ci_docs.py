"""docs/ci.md ("Using Moldau in CI") stays true: its test files, marked ``<!-- ci-docs: NAME -->`` just above
a python code block, are written into a fresh project and run by ``pytest`` in a subprocess, as a reader
who copies them would run them (the plugin found through its entry point, nothing of this repository's
pytest setup applied)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.compat.test_pytest_plugin import explain, outcome, run_pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "ci.md"
_MARKED_BLOCK = re.compile(r"<!-- ci-docs: (\S+) -->\n```python\n(.*?)```", re.DOTALL)


def marked_files() -> dict[str, str]:
    return dict(_MARKED_BLOCK.findall(DOC.read_text(encoding="utf-8")))


def test_the_ci_page_shows_the_quick_start_and_fault_examples() -> None:
    assert set(marked_files()) == {"test_orders.py", "test_faults.py"}


def test_the_ci_page_test_files_pass_as_written(tmp_path: Path) -> None:
    files = marked_files()
    project = tmp_path / "project"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    for name, text in files.items():
        (project / name).write_text(text)
    result = run_pytest(project)
    expected = sum(text.count("\ndef test_") for text in files.values())
    assert (result.returncode, outcome(result)) == (0, {"passed": expected}), explain(result)
