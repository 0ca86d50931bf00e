"""Compat-test harness: the real ``moldau serve`` process on a free port, and a raw Kafka socket.

``broker`` starts ``python -m broker serve --memory --listen 127.0.0.1:0 --log-format json``, learns the
port from the ``ready`` log line (bounded wait), yields a ``BrokerProcess`` and, at the end, sends
SIGTERM (SIGKILL after a bound) and fails the test if the broker logged a traceback or did not stop
cleanly. ``start_broker`` does the same with extra command-line arguments; ``module_broker`` is one
broker shared by a whole test module.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


class BrokerProcess:
    """A running ``moldau serve`` process and the JSON log records it has written to stderr."""

    def __init__(self, extra_args: list[str], tmp_path: Path, *, memory: bool = True,
                 env: dict[str, str] | None = None, listen: bool | None = None) -> None:
        """``listen=False`` leaves the listeners to ``extra_args``; by default that happens when they set
        ``listeners=`` (``--set listeners=...``), else the broker listens on a free port of 127.0.0.1."""
        if listen is None:
            listen = not any(arg.startswith("listeners=") for arg in extra_args)
        args = [sys.executable, "-m", "broker", "serve", *(["--memory"] if memory else []),
                *(["--listen", "127.0.0.1:0"] if listen else []), "--log-format", "json", *extra_args]
        base = {k: v for k, v in os.environ.items() if not k.startswith("MOLDAU_")}
        # Nothing should be written with --memory; pointing XDG at tmp_path lets a test check that.
        base["XDG_DATA_HOME"] = str(tmp_path / "xdg-data")
        base["PYTHONPATH"] = str(REPO) + os.pathsep + base.get("PYTHONPATH", "")
        base.update(env or {})
        self.args = args
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=base, cwd=tmp_path)
        self.lines: list[str] = []
        self.records: list[dict[str, Any]] = []
        self._new = threading.Condition()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        self.ready = self.wait_for_log(lambda r: r.get("event") == "ready", READY_TIMEOUT_S, "the ready event")
        self.host: str = self.ready["host"]
        self.port: int = self.ready["port"]
        self.bootstrap = f"{self.host}:{self.port}"
        # Every listener's bound address by name, from the ready line's NAME://HOST:PORT entries.
        self.listeners: dict[str, str] = {}
        for entry in self.ready.get("listeners", []):
            name, _, address = entry.partition("://")
            self.listeners[name] = address

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._new:
                self.lines.append(line.rstrip("\n"))
                try:
                    record = json.loads(line)
                except ValueError:
                    record = {"event": "<not json>", "line": line.rstrip("\n")}
                self.records.append(record)
                self._new.notify_all()
        with self._new:
            self._new.notify_all()

    def wait_for_log(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0,
                     what: str = "a matching log record") -> dict[str, Any]:
        """The first log record matching ``predicate``, waiting at most ``timeout`` seconds for it."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._new:
            while True:
                for record in self.records[seen:]:
                    if predicate(record):
                        return record
                seen = len(self.records)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    break
                self._new.wait(min(remaining, 0.1))
        raise AssertionError(f"broker did not log {what} within {timeout}s (exit code {self.proc.poll()}); "
                             f"log so far:\n" + "\n".join(self.lines[-30:]))

    def tracebacks(self) -> list[str]:
        return [line for line in self.lines if "Traceback" in line or '"exception"' in line]

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it has not exited within the bound; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT_S)
        self._reader.join(STOP_TIMEOUT_S)
        return self.proc.returncode


def finish(proc: BrokerProcess) -> None:
    """Stop the broker with SIGTERM and fail if it logged a traceback or did not stop cleanly."""
    code = proc.stop()
    tracebacks = proc.tracebacks()
    assert not tracebacks, "broker logged a traceback:\n" + "\n".join(proc.lines)
    assert code == 0, f"broker exited with {code} after SIGTERM; log:\n" + "\n".join(proc.lines[-30:])
    assert any(r.get("event") == "stopped" for r in proc.records), "no 'stopped' log line after SIGTERM"


@pytest.fixture
def start_broker(tmp_path: Path) -> Iterator[Callable[..., BrokerProcess]]:
    """Start ``moldau serve`` with extra arguments; every process started is stopped and checked."""
    started: list[BrokerProcess] = []

    def start(*extra_args: str) -> BrokerProcess:
        proc = BrokerProcess(list(extra_args), tmp_path)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        finish(proc)


@pytest.fixture
def broker(start_broker: Callable[..., BrokerProcess]) -> BrokerProcess:
    return start_broker()


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker shared by every test of a module (tests must use their own topic names), for suites
    where a process per test would dominate the run time. Checked for tracebacks at the end."""
    proc = BrokerProcess([], tmp_path_factory.mktemp("module-broker"))
    yield proc
    finish(proc)


class KafkaSocket:
    """A raw TCP connection to the broker for byte-level tests; every read is bounded."""

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)

    def send(self, data: bytes | list[Any]) -> None:
        self.sock.sendall(data if isinstance(data, bytes) else b"".join(bytes(p) for p in data))

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    def recv_frame(self) -> bytes:
        """One response frame, without its size prefix."""
        (size,) = struct.unpack(">i", self._recv_exact(4))
        return self._recv_exact(size)

    def request(self, api_key: int, api_version: int, correlation_id: int, body: Any,
                client_id: str | None = "moldau-compat") -> Any:
        """Send one request built by the codec and decode its response body."""
        self.send_request(api_key, api_version, correlation_id, body, client_id)
        return self.read_response(api_key, api_version, correlation_id)

    def send_request(self, api_key: int, api_version: int, correlation_id: int, body: Any,
                     client_id: str | None = "moldau-compat") -> None:
        """Send one request without reading its answer (for a request that parks)."""
        from protocol import codec

        self.send(codec.encode_request(api_key, api_version, correlation_id, client_id, body))

    def read_response(self, api_key: int, api_version: int, correlation_id: int) -> Any:
        """The next response frame, decoded; it must answer ``correlation_id``."""
        from protocol import codec

        header, response = codec.decode_response(api_key, api_version, self.recv_frame())
        assert header.correlation_id == correlation_id
        return response

    def is_closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True if the broker closes the connection within ``timeout`` (recv returns b'' or resets)."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.sock.recv(65536) == b"":
                    return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_socket() -> Iterator[Callable[[BrokerProcess], KafkaSocket]]:
    """Open raw sockets to a broker; all are closed at the end of the test."""
    opened: list[KafkaSocket] = []

    def connect(proc: BrokerProcess) -> KafkaSocket:
        s = KafkaSocket(proc.host, proc.port)
        opened.append(s)
        return s

    yield connect
    for s in opened:
        s.close()
