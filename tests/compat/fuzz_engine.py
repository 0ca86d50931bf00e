"""The network fuzzer: mutated client requests sent to a real ``moldau serve`` process, with checks.

Shared by ``tests/compat/test_fuzz.py`` (a short run with a fixed seed) and ``scripts/fuzz.py`` (long
campaigns and ``--replay``). It lives here, beside the compat harness it builds on (``BrokerProcess``
and ``KafkaSocket`` from ``conftest.py``); the script puts the repository root on ``sys.path`` and
imports it.

A few worker threads each take the next case number, build its frames (`fuzz_corpus.CaseMaker`:
deterministic for a seed and case number), send them on a fresh connection and close it. Meanwhile
the main thread checks the broker:

- crash: the process exited;
- hang: a fresh connection's ApiVersions and Metadata are not both answered within ``PROBE_TIMEOUT_S``
  (every ``probe_every`` frames);
- round trip: a record produced (acks=all) is fetched back unchanged (every ``round_trip_every`` frames);
- traceback / error log: a log record at error level, with ``exception``/``exc_info``, or a line that
  is not JSON (the broker logs JSON lines with ``level``);
- log flood: more log lines for one connection than its frames can explain;
- leaked connection: with every fuzz connection closed, the broker still holds established TCP sockets
  (its socket fds joined with ``/proc/<pid>/net/tcp``) after ``LEAK_TIMEOUT_S``;
- memory: broker RSS (``/proc/<pid>/status``) grew more than ``rss_bound_mb`` above its warmed-up value.

Log lines carry the connection's ``peer`` (our local port), so a traceback or flood is pinned on the
exact connection; a crash, hang or unattributed line is pinned on the connections of the window since
the last good probe. Every finding's reproducer (the exact bytes sent on those connections) is saved
as JSON and replayed by `replay`.
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import tempfile
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol import codec, messages
from protocol.records import Record, build_batch, iter_batches, iter_records
from tests.compat.conftest import BrokerProcess, KafkaSocket
from tests.compat.fuzz_corpus import GOLDEN_TOPIC, Case, CaseMaker, golden_seeds, synthesized_seeds

PROBE_TIMEOUT_S = 2.0  # a fresh connection's ApiVersions and Metadata must each be answered this soon
ROUND_TRIP_TIMEOUT_S = 10.0
LEAK_TIMEOUT_S = 10.0  # closed fuzz connections must be gone from the broker within this
READ_IDLE_S = 0.1  # after sending, read responses until the connection is quiet this long
CASE_READ_LIMIT_S = 2.0  # never read one case's responses longer than this
STEP_TIMEOUT_S = 0.5  # stepwise mode: wait this long for each response before sending on
FLOOD_BASE_LINES = 20  # log lines one connection may cause beyond FLOOD_LINES_PER_FRAME per frame sent
FLOOD_LINES_PER_FRAME = 3
UNATTRIBUTED_FLOOD_LINES = 500  # log lines without a peer between two checks
RSS_HARD_LIMIT_MB = 2048  # the broker is killed beyond this, to protect a shared machine
MAX_REPRODUCER_CONNECTIONS = 200
API_VERSIONS, METADATA, PRODUCE, FETCH = 18, 3, 0, 1


@dataclass
class Finding:
    """One failure: what, why, and where its reproducer was saved."""

    kind: str
    detail: str
    signature: str
    cases: list[Case] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    reproducer: Path | None = None

    def describe(self) -> str:
        where = f"; reproducer {self.reproducer}" if self.reproducer else ""
        labels = f"; first frames: {self.cases[0].labels[:3]}" if len(self.cases) == 1 else (
            f"; {len(self.cases)} candidate connections" if self.cases else "")
        return f"[{self.kind}] {self.detail}{labels}{where}"


@dataclass
class Settings:
    seed: int = 1
    seconds: float = 60.0
    workers: int = 4
    probe_every: int = 40  # frames
    round_trip_every: int = 300
    leak_check_every: int = 1500
    rss_bound_mb: int = 300
    out_dir: Path = Path("fuzz-findings")
    stop_on_fatal: bool = True  # a crash or hang ends the run (a campaign restarts the broker instead)
    broker_args: list[str] = field(default_factory=list)
    storage: str = "memory"  # or "file": a temporary data dir


# ---------------------------------------------------------------- observing the broker process

def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def established_peers(pid: int) -> list[tuple[int, str]]:
    """(remote port, TCP state) of every non-listening TCP socket the process holds."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return []
    found = []
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[9] in inodes and cols[3] != "0A":  # 0A: LISTEN
                        found.append((int(cols[2].rsplit(":", 1)[1], 16), _TCP_STATES.get(cols[3], cols[3])))
        except OSError:
            continue
    return found


_TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
               "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0B": "CLOSING"}


def bad_record(record: dict[str, Any]) -> bool:
    """A log record that input must never cause: error level, a traceback, or a non-JSON line."""
    return (record.get("level") in ("error", "critical", "exception") or "exception" in record
            or "exc_info" in record or record.get("event") == "<not json>")


def signature(record: dict[str, Any]) -> str:
    """What makes two bad log records the same bug: event (numbers and quoted text masked, so asyncio's
    "Task-359" and the handler's message do not split one bug in many), API, and the exception type."""
    event = re.sub(r"'[^']*'|\"[^\"]*\"|\d+", "_", str(record.get("event")).splitlines()[0])[:80]
    exc = str(record.get("exception", "")).strip().splitlines()
    kind = re.findall(r"exception=(\w+)", str(record.get("event")))
    last = exc[-1].split(":")[0][:80] if exc else (kind[0] if kind else record.get("line", "")[:80])
    return ":".join(str(x) for x in (event, record.get("api_name") or record.get("api_key", ""), last))


# ---------------------------------------------------------------- sending one case

@dataclass
class CaseRun:
    case: Case
    port: int = 0
    started: float = 0.0
    finished: float = 0.0
    responses: list[int] = field(default_factory=list)  # correlation ids, in arrival order
    error: str = ""


def _recv_frames(sock: socket.socket, buf: bytearray, out: list[int], until: float, idle: float,
                 want: int | None = None) -> bool:
    """Read responses into ``out`` (their correlation ids) until quiet for ``idle`` s, ``until``, EOF,
    or ``out`` holds ``want`` responses; returns False once the peer has closed."""
    while True:
        left = until - time.monotonic()
        if left <= 0 or (want is not None and len(out) >= want):
            return True
        sock.settimeout(min(idle, left))
        try:
            chunk = sock.recv(1 << 16)
        except TimeoutError:
            return True
        except OSError:
            return False
        if not chunk:
            return False
        buf += chunk
        while len(buf) >= 8:
            (size,) = struct.unpack_from(">i", buf)
            if len(buf) < 4 + size:
                break
            out.append(struct.unpack_from(">i", buf, 4)[0])
            del buf[:4 + size]


def send_case(case: Case, host: str, port: int, on_connect: Callable[[CaseRun], None] | None = None) -> CaseRun:
    """Send ``case`` on a fresh connection, read what comes back (bounded), close it."""
    run = CaseRun(case, started=time.monotonic())
    try:
        sock = socket.create_connection((host, port), timeout=5)
    except OSError as exc:
        run.error = f"connect: {exc}"
        run.finished = time.monotonic()
        return run
    run.port = sock.getsockname()[1]
    if on_connect is not None:
        on_connect(run)
    buf = bytearray()
    open_ = True
    try:
        if case.mode == "pipelined":
            sock.sendall(b"".join(case.frames))
        else:
            for frame in case.frames:
                if case.mode == "trickle":  # framing across many small reads
                    step = max(1, len(frame) // 7)
                    for i in range(0, len(frame), step):
                        sock.sendall(frame[i:i + step])
                else:
                    sock.sendall(frame)
                if case.mode == "stepwise":  # wait for this frame's answer (none comes for acks=0)
                    open_ = _recv_frames(sock, buf, run.responses, time.monotonic() + STEP_TIMEOUT_S,
                                         STEP_TIMEOUT_S, len(run.responses) + 1)
                else:
                    open_ = _recv_frames(sock, buf, run.responses, time.monotonic(), 0.0)
                if not open_:
                    break
        if open_:
            _recv_frames(sock, buf, run.responses, time.monotonic() + CASE_READ_LIMIT_S, READ_IDLE_S)
    except OSError as exc:
        run.error = f"send: {exc}"
    finally:
        if case.abort:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        run.finished = time.monotonic()
    return run


def out_of_order(run: CaseRun) -> str | None:
    """Responses must come back in request order: their correlation ids a subsequence of the sent ones."""
    if not run.case.well_framed() or not run.responses:
        return None
    sent = [struct.unpack_from(">i", f, 8)[0] for f in run.case.frames if len(f) >= 12]
    it = iter(sent)
    if all(any(c == s for s in it) for c in run.responses):
        return None
    return f"responses with correlation ids {run.responses} for requests {sent}"


# ---------------------------------------------------------------- probes

def _request(sock: KafkaSocket, api_key: int, version: int, corr: int, body: Any) -> Any:
    return sock.request(api_key, version, corr, body, client_id="moldau-fuzz-probe")


def probe(host: str, port: int, topic: str) -> str | None:
    """ApiVersions and Metadata on a fresh connection, each answered within PROBE_TIMEOUT_S; None if so."""
    started = time.monotonic()
    try:
        sock = KafkaSocket(host, port, timeout=PROBE_TIMEOUT_S)
    except OSError as exc:
        return f"connect failed: {exc}"
    try:
        versions = _request(sock, API_VERSIONS, 3, 1, messages.ApiVersionsRequest(
            client_software_name="moldau-fuzz", client_software_version="1"))
        if versions.error_code != 0:
            return f"ApiVersions answered error {versions.error_code}"
        meta = _request(sock, METADATA, 12, 2, messages.MetadataRequest(
            topics=[messages.MetadataRequest.MetadataRequestTopic(name=topic)]))
        if not meta.brokers:
            return "Metadata named no broker"
    except (OSError, ConnectionError, codec.DecodeError) as exc:
        return f"{type(exc).__name__}: {exc} after {time.monotonic() - started:.1f}s"
    finally:
        sock.close()
    return None


class RoundTrip:
    """Produce one unique record (acks=all) to a probe topic and fetch it back, over raw protocol."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.host, self.port, self.topic = host, port, topic
        self.count = 0

    def ensure_topics(self) -> None:
        sock = KafkaSocket(self.host, self.port, timeout=ROUND_TRIP_TIMEOUT_S)
        try:
            meta = _request(sock, METADATA, 9, 1, messages.MetadataRequest(
                topics=[messages.MetadataRequest.MetadataRequestTopic(name=t) for t in (self.topic, GOLDEN_TOPIC)],
                allow_auto_topic_creation=True))
            errors = {t.name: t.error_code for t in meta.topics if t.error_code}
            if errors:
                raise AssertionError(f"could not create the probe topics: {errors}")
        finally:
            sock.close()

    def run(self) -> str | None:
        self.count += 1
        value = f"round-trip-{self.count}-{uuid.uuid4().hex}".encode()
        batch = bytes(build_batch([Record(0, int(time.time() * 1000), b"k", value)]))
        step, started = "metadata", time.monotonic()  # a failure names the step it happened in
        try:
            self.ensure_topics()
            step = "connect"
            sock = KafkaSocket(self.host, self.port, timeout=ROUND_TRIP_TIMEOUT_S)
            try:
                step = "produce"
                produce = messages.ProduceRequest
                answer = _request(sock, PRODUCE, 9, 1, produce(acks=-1, timeout_ms=5000, topic_data=[
                    produce.TopicProduceData(name=self.topic, partition_data=[
                        produce.PartitionProduceData(index=0, records=batch)])]))
                result = answer.responses[0].partition_responses[0]
                if result.error_code:
                    return f"produce answered error {result.error_code}"
                step = "fetch"
                fetch = messages.FetchRequest
                got = _request(sock, FETCH, 12, 2, fetch(
                    replica_id=-1, max_wait_ms=0, min_bytes=1, max_bytes=1 << 20, isolation_level=0,
                    topics=[fetch.FetchTopic(topic=self.topic, partitions=[fetch.FetchPartition(
                        partition=0, fetch_offset=result.base_offset, partition_max_bytes=1 << 20)])]))
                data = got.responses[0].partitions[0]
                if data.error_code:
                    return f"fetch at offset {result.base_offset} answered error {data.error_code}"
                values = [r.value for _, b in iter_batches(data.records or b"") for r in iter_records(b)]
                if value not in values:
                    return f"record produced at offset {result.base_offset} not fetched back (got {len(values)})"
            finally:
                sock.close()
        except (OSError, ConnectionError, codec.DecodeError, AssertionError, IndexError) as exc:
            return f"{type(exc).__name__}: {exc} (in the {step} step, {time.monotonic() - started:.1f} s into the trip)"
        return None


# ---------------------------------------------------------------- the campaign

class Campaign:
    """One fuzz run against one broker process (restarted after a crash or hang unless stopping)."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.findings: list[Finding] = []
        self.signatures: set[str] = set()
        self.frames_sent = 0
        self.cases_run = 0
        self.stats: dict[str, int] = {}
        self._next_case = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pause = threading.Event()
        self._active: dict[int, CaseRun] = {}
        self._recent: deque[CaseRun] = deque(maxlen=5000)
        self._by_peer: OrderedDict[str, CaseRun] = OrderedDict()
        self._log_seen = 0
        self._peer_lines: dict[str, int] = {}
        self._flooded: set[str] = set()
        self._window_start = 0.0
        self._tmp = tempfile.TemporaryDirectory(prefix="moldau-fuzz-")
        self.broker: BrokerProcess | None = None
        self.maker: CaseMaker | None = None
        self.baseline_rss = self.rss_last = self.rss_peak = 0.0  # MiB; the baseline is taken once warmed up
        self.rss_samples: list[float] = []  # at every tenth of the campaign, to show whether RSS stays flat
        self.probe_topic = f"fuzz-probe-{settings.seed}"

    # --- broker lifetime

    def _broker_args(self) -> list[str]:
        args = list(self.s.broker_args)
        if self.s.storage == "file":
            args = ["--data-dir", str(Path(self._tmp.name) / f"data-{uuid.uuid4().hex[:6]}"), *args]
        return args

    def start_broker(self) -> BrokerProcess:
        self.broker = BrokerProcess(self._broker_args(), Path(self._tmp.name), memory=self.s.storage == "memory")
        self._log_seen = 0
        self._peer_lines.clear()
        self.round_trip = RoundTrip(self.broker.host, self.broker.port, self.probe_topic)
        self.round_trip.ensure_topics()
        error = self.round_trip.run()
        if error:
            raise AssertionError(f"the first round trip failed before any fuzzing: {error}")
        self.baseline_rss = self.rss_last = rss_mb(self.broker.proc.pid)
        self.rss_peak = max(self.rss_peak, self.rss_last)
        if self.maker is None:
            served = self._served()
            self.maker = CaseMaker(golden_seeds() + synthesized_seeds(served), served, self.s.seed)
        return self.broker

    def _served(self) -> list[tuple[int, int, int]]:
        assert self.broker is not None
        sock = KafkaSocket(self.broker.host, self.broker.port)
        try:
            answer = _request(sock, API_VERSIONS, 3, 1, messages.ApiVersionsRequest(
                client_software_name="moldau-fuzz", client_software_version="1"))
        finally:
            sock.close()
        return [(a.api_key, a.min_version, a.max_version) for a in answer.api_keys]

    def close(self) -> int | None:
        code = None
        if self.broker is not None:
            code = self.broker.stop()
        self._tmp.cleanup()
        return code

    # --- workers

    def _take(self) -> int:
        with self._lock:
            index = self._next_case
            self._next_case += 1
            return index

    def _registered(self, run: CaseRun) -> None:
        with self._lock:
            self._active[run.case.index] = run
            self._by_peer[f"127.0.0.1:{run.port}"] = run
            self._by_peer.move_to_end(f"127.0.0.1:{run.port}")
            while len(self._by_peer) > 20000:
                self._by_peer.popitem(last=False)

    def _worker(self) -> None:
        assert self.maker is not None
        while not self._stop.is_set():
            if self._pause.is_set():
                time.sleep(0.01)
                continue
            self.send(self.maker.make(self._take()))

    def send(self, case: Case) -> CaseRun:
        """Send one case on a fresh connection, remembering it for attribution and the window."""
        broker = self.broker
        assert broker is not None
        run = send_case(case, broker.host, broker.port, self._registered)
        with self._lock:
            self._active.pop(case.index, None)
            self._recent.append(run)
            self.frames_sent += len(case.frames)
            self.cases_run += 1
        problem = out_of_order(run)
        if problem:
            self._report("response_order", problem, f"response_order:{case.labels[0].split(' ')[0]}", [case])
        return run

    def open_window(self) -> None:
        """From now on, crash and hang candidates are the connections opened after this point."""
        self._window_start = time.monotonic()

    # --- findings

    def _report(self, kind: str, detail: str, sig: str, cases: list[Case], log: list[str] | None = None) -> None:
        with self._lock:
            if sig in self.signatures:
                return
            self.signatures.add(sig)
            finding = Finding(kind, f"{detail} (seed {self.s.seed})", sig, cases[:MAX_REPRODUCER_CONNECTIONS],
                              log or [])
            finding.reproducer = self._save(finding)
            self.findings.append(finding)

    def _save(self, finding: Finding) -> Path:
        self.s.out_dir.mkdir(parents=True, exist_ok=True)
        name = f"{finding.kind}-seed{self.s.seed}-{len(self.findings) + 1:03d}-{uuid.uuid4().hex[:6]}.json"
        path = self.s.out_dir / name
        path.write_text(json.dumps({
            "kind": finding.kind, "detail": finding.detail, "signature": finding.signature,
            "seed": self.s.seed, "storage": self.s.storage, "broker_args": self.s.broker_args,
            "log": finding.log[-40:], "connections": [c.to_json() for c in finding.cases]}, indent=1))
        return path.resolve()

    def _window(self) -> list[Case]:
        """Connections open or finished since the last good probe: the candidates for a crash or hang."""
        with self._lock:
            runs = [r for r in self._recent if r.finished >= self._window_start] + list(self._active.values())
        return [r.case for r in sorted(runs, key=lambda r: r.started)]

    # --- checks

    def check_logs(self) -> None:
        broker = self.broker
        assert broker is not None
        records = broker.records[self._log_seen:]
        self._log_seen += len(records)
        unattributed: dict[str, int] = {}
        for record in records:
            peer = record.get("peer")
            if isinstance(peer, str):
                self._peer_lines[peer] = self._peer_lines.get(peer, 0) + 1
            event = str(record.get("event"))
            if not isinstance(peer, str):
                unattributed[event] = unattributed.get(event, 0) + 1
            self.stats[event] = self.stats.get(event, 0) + 1
            if not bad_record(record):
                continue
            run = self._by_peer.get(peer) if isinstance(peer, str) else None
            cases = [run.case] if run is not None else self._window()
            line = json.dumps(record)
            who = f"connection {peer}" if run is not None else "an unattributed record"
            self._report("traceback" if ("exception" in record or "exc_info" in record) else "error_log",
                         f"broker logged {record.get('level')} {event!r} for {who}: {line[:300]}",
                         signature(record), cases, [line])
        for peer, count in self._peer_lines.items():
            run = self._by_peer.get(peer)
            if run is None or peer in self._flooded:
                continue
            if count > FLOOD_BASE_LINES + FLOOD_LINES_PER_FRAME * len(run.case.frames):
                self._flooded.add(peer)
                self._report("log_flood", f"{count} log lines for one connection of {len(run.case.frames)} frames",
                             f"log_flood:{run.case.labels[0].split(' ')[0]}", [run.case])
        for event, count in unattributed.items():
            if count > UNATTRIBUTED_FLOOD_LINES:
                self._report("log_flood", f"{count} {event!r} log lines without a peer between two checks",
                             f"log_flood:{event}", self._window(), broker.lines[-20:])

    def check_alive(self, what: str) -> bool:
        broker = self.broker
        assert broker is not None
        code = broker.proc.poll()
        if code is not None:
            time.sleep(0.2)  # let the reader collect the last lines
            self.check_logs()
            self._report("crash", f"broker exited with code {code} ({what})", f"crash:{code}", self._window(),
                         broker.lines[-40:])
            return False
        error = probe(broker.host, broker.port, self.probe_topic)
        if error is not None:
            if broker.proc.poll() is not None:
                return self.check_alive(what)
            self._report("hang", f"liveness probe failed ({what}): {error}", "hang", self._window(),
                         broker.lines[-40:])
            return False
        self.open_window()
        return True

    def check_round_trip(self) -> bool:
        error = self.round_trip.run()
        if error is None:
            return True
        alive = self.broker is not None and self.broker.proc.poll() is None
        self._report("round_trip", f"produce/fetch round trip failed: {error}", f"round_trip:{error[:40]}",
                     self._window(), self.broker.lines[-40:] if self.broker else [])
        return alive

    def check_rss(self) -> bool:
        broker = self.broker
        assert broker is not None
        rss = rss_mb(broker.proc.pid)
        self.rss_last = rss
        self.rss_peak = max(self.rss_peak, rss)
        if rss > RSS_HARD_LIMIT_MB:
            broker.proc.kill()
        if rss - self.baseline_rss > self.s.rss_bound_mb:
            self._report("rss", f"broker RSS grew from {self.baseline_rss:.0f} MiB to {rss:.0f} MiB "
                         f"(bound +{self.s.rss_bound_mb} MiB)", "rss", self._window())
            return False
        return True

    def quiesce(self) -> None:
        """Let every worker finish its case and hold them until `resume`."""
        self._pause.set()
        deadline = time.monotonic() + CASE_READ_LIMIT_S * 10
        while time.monotonic() < deadline:
            with self._lock:
                if not self._active:
                    break
            time.sleep(0.01)
        time.sleep(0.05)  # a worker between its pause check and its registration

    def check_leaks(self) -> bool:
        """With every fuzz connection closed, the broker must drop its side of them."""
        broker = self.broker
        assert broker is not None
        self.quiesce()
        try:
            deadline = time.monotonic() + LEAK_TIMEOUT_S
            peers = established_peers(broker.proc.pid)
            while peers and time.monotonic() < deadline:
                time.sleep(0.1)
                peers = established_peers(broker.proc.pid)
            if not peers:
                return True
            for port, state in peers:
                run = self._by_peer.get(f"127.0.0.1:{port}")
                cases = [run.case] if run is not None else self._window()
                self._report("leak", f"broker still holds a {state} connection from port {port} "
                             f"{LEAK_TIMEOUT_S}s after the client closed it", f"leak:{state}:"
                             f"{run.case.labels[-1].split(' ')[0] if run else '?'}", cases)
            return False
        finally:
            self._pause.clear()

    # --- the loop

    def run(self) -> list[Finding]:
        self.start_broker()
        self.open_window()
        workers = [threading.Thread(target=self._worker, daemon=True, name=f"fuzz-{i}")
                   for i in range(self.s.workers)]
        for w in workers:
            w.start()
        deadline = time.monotonic() + self.s.seconds
        next_sample = time.monotonic()
        last_probe = last_trip = last_leak = 0
        try:
            while time.monotonic() < deadline:
                time.sleep(0.05)
                self.check_logs()
                sent = self.frames_sent
                healthy = self.check_rss()
                if time.monotonic() >= next_sample:
                    self.rss_samples.append(self.rss_last)
                    next_sample += self.s.seconds / 10
                if healthy and sent - last_probe >= self.s.probe_every:
                    last_probe = sent
                    healthy = self.check_alive(f"after {sent} frames")
                if healthy and sent - last_trip >= self.s.round_trip_every:
                    last_trip = sent
                    healthy = self.check_round_trip()
                if healthy and sent - last_leak >= self.s.leak_check_every:
                    last_leak = sent
                    self.check_leaks()
                if not healthy:
                    if self.s.stop_on_fatal:
                        break
                    self._restart()
        finally:
            self._stop.set()
            for w in workers:
                w.join(CASE_READ_LIMIT_S * 10)
        if self.broker is not None and self.broker.proc.poll() is None and not self._fatal():
            self.check_alive("at the end")
            self.check_leaks()
            self.check_logs()
        return self.findings

    def _fatal(self) -> bool:
        return any(f.kind in ("crash", "hang", "rss") for f in self.findings)

    def _restart(self) -> None:
        self.quiesce()
        assert self.broker is not None
        self.broker.proc.kill()
        self.broker.stop()
        self.start_broker()
        self.open_window()
        self._pause.clear()

    def summary(self) -> str:
        return (f"seed {self.s.seed}: {self.cases_run} connections, {self.frames_sent} frames, "
                f"{len(self.findings)} distinct findings; broker RSS {self.baseline_rss:.0f} MiB after the "
                f"first round trip, peak {self.rss_peak:.0f} MiB, last {self.rss_last:.0f} MiB; at each tenth of the "
                f"run: {', '.join(f'{rss:.0f}' for rss in self.rss_samples)} MiB")


# ---------------------------------------------------------------- replay

def replay(path: Path, storage: str | None = None, isolate: bool = False) -> list[Finding]:
    """Start a fresh broker with the reproducer's settings, send its connections one after another,
    and run every check once; ``isolate`` replays each connection on its own fresh broker and keeps
    the ones that fail alone."""
    data = json.loads(path.read_text())
    cases = [Case.from_json(c) for c in data["connections"]]
    base = Settings(seed=int(data.get("seed", 0)), storage=storage or data.get("storage", "memory"),
                    broker_args=list(data.get("broker_args", [])), out_dir=path.parent / "replayed")
    if not isolate:
        return _replay_cases(base, cases)
    failing = []
    for case in cases:
        findings = _replay_cases(base, [case])
        if findings:
            print(f"connection of case {case.index} fails alone: " + "; ".join(f.describe() for f in findings))
            failing += findings
    return failing


def _replay_cases(settings: Settings, cases: list[Case]) -> list[Finding]:
    campaign = Campaign(settings)
    try:
        broker = campaign.start_broker()
        campaign.open_window()
        for case in cases:
            campaign.send(case)
            if broker.proc.poll() is not None:
                break
        time.sleep(0.3)  # let the broker log what the last frames caused
        campaign.check_logs()
        if campaign.check_rss() and campaign.check_alive("after the replay") and campaign.check_round_trip():
            campaign.check_leaks()
        campaign.check_logs()
        return campaign.findings
    finally:
        campaign.close()
