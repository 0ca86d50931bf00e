"""Apache Kafka's own Java client (kafka-clients, the reference client) in the compatibility tests.

The scenarios live in ``tests/compat/java`` (one small program, ``moldau.compat.JavaClient``), built by
the test command with Maven into ``target/classes`` plus the client jars in ``target/lib``. Each run
prints one JSON result line; ``java_client`` returns it and fails the test with the client's error
when the scenario did not complete.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

JAVA_DIR = Path(__file__).resolve().parent / "java"
CLASSES = JAVA_DIR / "target" / "classes"
LIBS = JAVA_DIR / "target" / "lib"
MAIN_CLASS = "moldau.compat.JavaClient"
INSTALL_HINT = ("run the test command from the README (./scripts/test.sh), which installs a JDK and Maven "
                "and builds tests/compat/java")


def require_java() -> None:
    """Fail (never skip) when java or the built scenario runner is missing."""
    if shutil.which("java") is None:
        pytest.fail(f"java is not installed; the Java client tests need a JDK: {INSTALL_HINT}")
    if not (CLASSES / "moldau" / "compat" / "JavaClient.class").exists() or not any(LIBS.glob("kafka-clients-*.jar")):
        pytest.fail(f"the Java scenario runner is not built in {JAVA_DIR / 'target'}: {INSTALL_HINT}")


def java_client(scenario: str, bootstrap: str, *args: str, timeout: float = 90.0,
                client_config: Path | None = None) -> dict[str, Any]:
    """Run one scenario against ``bootstrap`` and return its JSON result. ``client_config`` is a
    properties file of extra client settings (security.protocol, sasl.*, ssl.*) every client uses."""
    require_java()
    classpath = os.pathsep.join([str(CLASSES), str(LIBS / "*")])
    extra = [f"-Dmoldau.client.config={client_config}"] if client_config is not None else []
    command = ["java", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", *extra, "-cp", classpath, MAIN_CLASS,
               scenario, bootstrap, *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, f"java {scenario} printed no JSON (exit {result.returncode}); stderr: {result.stderr[-3000:]}"
    out = json.loads(lines[-1])
    assert out.get("ok") is True, (f"java {scenario} {' '.join(args)} failed: {out.get('error')}\n"
                                   f"stderr: {result.stderr[-3000:]}")
    return out
