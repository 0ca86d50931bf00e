"""``moldau serve --profile ci`` as a CI script runs it: the bootstrap address as exactly one line on
stdout once the broker listens (so ``read`` in a shell waits exactly until then), a client can use it at
once, SIGTERM stops it with exit code 0, and nothing is written to disk. Other profiles print nothing on
stdout.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.compat.clients import unique
from tests.compat.conftest import REPO
from tests.waiting import wait_until

WAIT_S = 15.0


def serve(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOLDAU_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg-data")  # where the default data directory would go
    return subprocess.Popen([sys.executable, "-m", "broker", "serve", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=(tmp_path / "stderr.log").open("w"), text=True,
                            env=env, cwd=tmp_path)


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The next stdout line, waiting at most ``timeout`` seconds for it."""
    assert proc.stdout is not None
    readable, _, _ = select.select([proc.stdout], [], [], timeout)
    assert readable, f"no line on stdout within {timeout} s (exit code {proc.poll()})"
    return proc.stdout.readline()


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """SIGTERM; the exit code and whatever else the process wrote on stdout."""
    proc.send_signal(signal.SIGTERM)
    try:
        rest, _ = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT_S)
    return proc.returncode, rest


def test_ci_profile_prints_the_bootstrap_address_as_one_line_and_stops_on_sigterm(tmp_path: Path) -> None:
    from confluent_kafka import Producer

    proc = serve(tmp_path, "--profile", "ci", "--listen", "127.0.0.1:0")
    try:
        line = read_line(proc, WAIT_S)
        assert re.fullmatch(r"127\.0\.0\.1:\d+\n", line), f"stdout line {line!r}"
        bootstrap = line.strip()
        assert bootstrap != "127.0.0.1:0"
        # The line comes once the listener is open: a client connects and produces at once.
        delivered: list[object] = []
        producer = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 10000})
        producer.produce(unique("ci-profile"), b"hello", on_delivery=lambda err, _msg: delivered.append(err))
        assert producer.flush(WAIT_S) == 0 and delivered == [None], delivered
    finally:
        code, rest = stop(proc)
    assert (code, rest) == (0, ""), f"exit code {code}, more stdout: {rest!r}"
    assert not (tmp_path / "xdg-data").exists(), "the ci profile wrote a data directory"


def test_dev_profile_prints_nothing_on_stdout(tmp_path: Path) -> None:
    """Only ci prints the address; the dev profile (the default) logs ``ready`` on stderr, stdout stays
    empty."""
    proc = serve(tmp_path, "--memory", "--listen", "127.0.0.1:0", "--log-format", "json")
    try:
        log = tmp_path / "stderr.log"
        wait_until(lambda: proc.poll() is not None or any(
            json.loads(line).get("event") == "ready" for line in log.read_text().splitlines() if line.startswith("{")),
            WAIT_S, "the ready log line", log.read_text)
        assert proc.poll() is None, log.read_text()
    finally:
        code, rest = stop(proc)
    assert (code, rest) == (0, "")


def _openssl_mapped(pid: int) -> list[str]:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return sorted({line.rsplit("/", 1)[-1] for line in maps.splitlines() if "libssl" in line or "libcrypto" in line})


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/PID/maps")
def test_a_broker_without_tls_serves_clients_without_loading_openssl(tmp_path: Path) -> None:
    """``moldau serve`` imports asyncio and construct without OpenSSL (3.5 MB of a CI broker's memory):
    a broker without TLS or SCRAM never loads it. (TLS listeners and SCRAM, which load it when they are
    configured, are served by brokers started the same way in test_security_clients.)"""
    from confluent_kafka import Consumer, Producer

    proc = serve(tmp_path, "--profile", "ci", "--listen", "127.0.0.1:0")
    try:
        bootstrap = read_line(proc, WAIT_S).strip()
        topic = unique("no-openssl")
        delivered: list[object] = []
        producer = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 10000})
        producer.produce(topic, b"hello", on_delivery=lambda err, _msg: delivered.append(err))
        assert producer.flush(WAIT_S) == 0 and delivered == [None], delivered
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("no-openssl-g"),
                             "auto.offset.reset": "earliest"})
        try:
            consumer.subscribe([topic])

            def record() -> Any:
                message = consumer.poll(0.5)
                return message if message is not None and message.error() is None else None

            assert wait_until(record, WAIT_S, "the record back").value() == b"hello"
        finally:
            consumer.close()
        assert _openssl_mapped(proc.pid) == []
    finally:
        code, _ = stop(proc)
    assert code == 0, (tmp_path / "stderr.log").read_text()
