#!/usr/bin/env python3
"""Reference figures for the docs: start-up time and idle memory of a real Apache Kafka broker (JVM).

    python scripts/bench_kafka_reference.py [--runs 5] [--kafka-version 4.1.1] [--json]

Fetches org.apache.kafka:kafka_2.13 and its runtime dependencies with Maven into a cache directory
(default ~/.cache/moldau-bench/kafka-<version>), plus a log4j2 slf4j binding if the set lacks one, so the
broker logs through log4j2 at WARN like a quietened installation instead of falling back to a no-op logger.

Each run then, in a fresh temporary directory:
- writes a single-node KRaft combined-mode (broker + controller) server.properties on free loopback ports;
- formats the storage with kafka.tools.StorageTool (timed and reported apart, not part of start-up);
- spawns `java ... kafka.Kafka server.properties` with the JVM options bin/kafka-server-start.sh uses by
  default (heap -Xmx1G -Xms1G, G1 flags, GC log, local JMX) and measures the wall time from spawn to the
  first ApiVersions v0 answer on the PLAINTEXT listener, probing every 10 ms;
- reads VmRSS of the JVM after it has been idle for 2 s, then stops it (SIGTERM, then SIGKILL).

Prints median, min and max over the runs, with the Kafka and Java versions, the heap options and the
number of CPUs. The Maven download is done once before the runs and is not counted.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
DEFAULT_HEAP_OPTS = "-Xmx1G -Xms1G"
# KAFKA_JVM_PERFORMANCE_OPTS and KAFKA_JMX_OPTS as bin/kafka-run-class.sh sets them when unset.
JVM_PERFORMANCE_OPTS = [
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
    "-Djava.awt.headless=true",
]
JMX_OPTS = [
    "-Dcom.sun.management.jmxremote",
    "-Dcom.sun.management.jmxremote.authenticate=false",
    "-Dcom.sun.management.jmxremote.ssl=false",
]
LOG4J2_CONFIG = """\
status = warn
appender.console.type = Console
appender.console.name = STDERR
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = STDERR
"""
POM_TEMPLATE = """\
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.moldau.bench</groupId>
  <artifactId>kafka-reference</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
  </dependencies>
</project>
"""
API_VERSIONS = 18
MAVEN_TIMEOUT_S = 900
FORMAT_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30


class BenchError(RuntimeError):
    pass


def run_bounded(args: list[str], timeout: float, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"timed out after {timeout:.0f} s: {' '.join(args)}") from exc
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip()[-3000:]
        raise BenchError(f"exit code {done.returncode}: {' '.join(args)}\n{tail}")
    return done


def jar_version(jars: Path, artifact: str) -> str | None:
    # Anchored on the digit so that "log4j-api-" never matches "log4j-api-something-2.x.jar".
    pattern = re.compile(re.escape(artifact) + r"-(\d[^-]*)\.jar$")
    for jar in jars.glob(f"{artifact}-*.jar"):
        if found := pattern.match(jar.name):
            return found.group(1)
    return None


def fetch_jars(version: str, cache: Path) -> tuple[Path, float | None]:
    """Return the directory holding the broker's class path, downloading it on first use."""
    jars = cache / "jars"
    marker = jars / ".complete"
    if marker.exists():
        return jars, None
    if shutil.which("mvn") is None:
        raise BenchError("mvn not found on PATH; it is needed once to fetch the Kafka jars")
    started = time.perf_counter()
    cache.mkdir(parents=True, exist_ok=True)
    # Filled beside the final directory and renamed at the end, so an interrupted download is never
    # mistaken for a complete class path by the next invocation.
    staging = Path(tempfile.mkdtemp(prefix="jars-", dir=cache))
    try:
        with tempfile.TemporaryDirectory(prefix="moldau-kafka-pom-") as pom_dir:
            (Path(pom_dir) / "pom.xml").write_text(POM_TEMPLATE.format(version=version))
            run_bounded(
                ["mvn", "-q", "-B", f"{DEPENDENCY_PLUGIN}:copy-dependencies", "-DincludeScope=runtime",
                 f"-DoutputDirectory={staging}"],
                MAVEN_TIMEOUT_S, cwd=Path(pom_dir),
            )
        if not (staging / f"kafka_2.13-{version}.jar").exists():
            raise BenchError(f"Maven did not deliver kafka_2.13-{version}.jar")
        extra = missing_logging_jars(staging)
        for coordinates in extra:
            run_bounded(
                ["mvn", "-q", "-B", f"{DEPENDENCY_PLUGIN}:copy", f"-Dartifact={coordinates}",
                 f"-DoutputDirectory={staging}"],
                MAVEN_TIMEOUT_S,
            )
        (staging / ".complete").write_text(f"kafka_2.13 {version}\n")
        if jars.exists():
            shutil.rmtree(jars)
        staging.rename(jars)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return jars, time.perf_counter() - started


def missing_logging_jars(jars: Path) -> list[str]:
    # Kafka's published pom brings slf4j-api and log4j-api but leaves the binding to the distribution
    # tarball; without one slf4j silently uses its no-op logger, which would make start-up look cheaper.
    log4j = jar_version(jars, "log4j-api")
    slf4j = jar_version(jars, "slf4j-api")
    if log4j is None or slf4j is None:
        return []
    wanted = []
    if jar_version(jars, "log4j-core") is None:
        wanted.append(f"org.apache.logging.log4j:log4j-core:{log4j}")
    binding = "log4j-slf4j-impl" if slf4j.startswith("1.") else "log4j-slf4j2-impl"
    if jar_version(jars, binding) is None:
        wanted.append(f"org.apache.logging.log4j:{binding}:{log4j}")
    return wanted


def java_version(java: str) -> str:
    done = run_bounded([java, "-version"], 30)
    first = (done.stderr or done.stdout).splitlines()[0]
    found = re.search(r'version "([^"]+)"', first)
    return found.group(1) if found else first.strip()


def free_ports(count: int) -> list[int]:
    # All sockets stay bound until every port is chosen so the kernel cannot hand out the same one twice;
    # 9092 is skipped because a developer's own Kafka (or Moldau) may be expected there.
    held: list[socket.socket] = []
    try:
        while len(held) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            if sock.getsockname()[1] == 9092:
                sock.close()
                continue
            held.append(sock)
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


def new_cluster_id() -> str:
    # Kafka's Uuid.randomUuid() rejects ids starting with '-' since the CLI would parse them as a flag.
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def write_config(workdir: Path, port: int, controller_port: int) -> Path:
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(workdir / "data"),
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
    }
    path = workdir / "server.properties"
    path.write_text("".join(f"{key}={value}\n" for key, value in props.items()))
    return path


def recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionResetError("connection closed mid-response")
        chunks += chunk
    return bytes(chunks)


def api_versions_ok(port: int, correlation_id: int, timeout: float) -> bool:
    """One ApiVersions v0 round trip; False while the listener is not up or not yet answering."""
    body = struct.pack(">hhih", API_VERSIONS, 0, correlation_id, -1)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack(">i", len(body)) + body)
            (size,) = struct.unpack(">i", recv_exact(sock, 4))
            response = recv_exact(sock, size)
    except OSError:
        return False
    if len(response) < 6:
        return False
    got_id, error_code = struct.unpack_from(">ih", response)
    return got_id == correlation_id and error_code == 0


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def log_tail(path: Path, limit: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


def one_run(
    java: str, jars: Path, heap_opts: list[str], idle_s: float, deadline_s: float
) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="moldau-kafka-ref-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        port, controller_port = free_ports(2)
        config = write_config(workdir, port, controller_port)
        log_config = workdir / "log4j2.properties"
        log_config.write_text(LOG4J2_CONFIG)
        classpath = f"{jars}/*"
        log_opts = [f"-Dlog4j2.configurationFile={log_config}", f"-Dkafka.logs.dir={workdir}"]

        started = time.perf_counter()
        run_bounded(
            [java, *log_opts, "-cp", classpath, "kafka.tools.StorageTool", "format",
             "-t", new_cluster_id(), "-c", str(config)],
            FORMAT_TIMEOUT_S,
        )
        format_s = time.perf_counter() - started

        # As kafka-server-start.sh passes -loggc, the GC log is part of the default set-up.
        gc_log = f"-Xlog:gc*:file={workdir / 'kafkaServer-gc.log'}:time,tags:filecount=10,filesize=100M"
        args = [java, *heap_opts, *JVM_PERFORMANCE_OPTS, gc_log, *JMX_OPTS, *log_opts,
                "-cp", classpath, "kafka.Kafka", str(config)]
        console = workdir / "kafkaServer.out"
        with console.open("wb") as out:
            # A file rather than a pipe: nobody reads the broker's output while it runs, and a full pipe
            # would stall it.
            started = time.perf_counter()
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + deadline_s
        correlation_id = 0
        while True:
            correlation_id += 1
            if api_versions_ok(port, correlation_id, timeout=1.0):
                startup_s = time.perf_counter() - started
                break
            if proc.poll() is not None:
                raise BenchError(
                    f"broker exited with {proc.returncode} before answering\n{log_tail(console)}"
                )
            if time.monotonic() > deadline:
                raise BenchError(f"no ApiVersions answer within {deadline_s:g} s\n{log_tail(console)}")
            time.sleep(0.01)

        time.sleep(idle_s)
        if proc.poll() is not None:
            raise BenchError(f"broker exited with {proc.returncode} while idle\n{log_tail(console)}")
        rss = rss_bytes(proc.pid)
        return {"format_s": format_s, "startup_s": startup_s, "idle_rss_bytes": float(rss)}
    finally:
        if proc is not None:
            stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def summary(values: list[float], scale: float) -> dict[str, float]:
    scaled = [value * scale for value in values]
    return {
        "median": round(statistics.median(scaled), 1),
        "min": round(min(scaled), 1),
        "max": round(max(scaled), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--kafka-version", default="4.1.1")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where the jars are kept (default ~/.cache/moldau-bench/kafka-<version>)")
    parser.add_argument("--heap-opts", default=DEFAULT_HEAP_OPTS,
                        help="KAFKA_HEAP_OPTS equivalent, written --heap-opts='-Xmx512M -Xms512M' "
                        f"(default: kafka-server-start.sh's {DEFAULT_HEAP_OPTS!r})")
    parser.add_argument("--idle", type=float, default=2.0, help="seconds idle before reading RSS")
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds to wait for the first answer")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    # Turned into SystemExit so the try/finally blocks stop the JVM and remove its directory; the default
    # action would end this process at once and leave a 1 GiB-heap broker running.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else "java"
    cache = args.cache_dir or Path.home() / ".cache" / "moldau-bench" / f"kafka-{args.kafka_version}"
    heap_opts = args.heap_opts.split()

    try:
        jars, download_s = fetch_jars(args.kafka_version, cache)
        if download_s is not None and not args.json:
            print(f"fetched Kafka {args.kafka_version} jars into {jars} in {download_s:.1f} s (not counted)",
                  file=sys.stderr)
        jvm = java_version(java)
        runs = []
        for index in range(args.runs):
            result = one_run(java, jars, heap_opts, args.idle, args.deadline)
            runs.append(result)
            if not args.json:
                print(f"run {index + 1}/{args.runs}: start-up {result['startup_s'] * 1000:.0f} ms, "
                      f"idle RSS {result['idle_rss_bytes'] / 2**20:.0f} MiB, "
                      f"format {result['format_s'] * 1000:.0f} ms", file=sys.stderr)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    report: dict[str, Any] = {
        "kafka_version": args.kafka_version,
        "java_version": jvm,
        "heap_opts": args.heap_opts,
        "jvm_opts": JVM_PERFORMANCE_OPTS,
        "cpus": os.cpu_count(),
        "runs": args.runs,
        "idle_s": args.idle,
        "startup_ms": summary([run["startup_s"] for run in runs], 1000),
        "idle_rss_mib": summary([run["idle_rss_bytes"] for run in runs], 1 / 2**20),
        "format_ms": summary([run["format_s"] for run in runs], 1000),
        "download_s": None if download_s is None else round(download_s, 1),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0

    def line(label: str, stats: dict[str, float], unit: str) -> str:
        spread = f"(min {stats['min']:.1f}, max {stats['max']:.1f})"
        return f"{label:<24}median {stats['median']:>8.1f} {unit}   {spread}"

    print(f"Apache Kafka {args.kafka_version} (KRaft combined broker+controller), Java {jvm}, "
          f"{os.cpu_count()} CPUs, {args.runs} runs")
    print(f"JVM heap: {args.heap_opts} (kafka-server-start.sh default)")
    print(f"JVM options: {' '.join(JVM_PERFORMANCE_OPTS)}, GC log, local JMX (kafka-run-class.sh defaults)")
    print(line("start-up to ApiVersions", report["startup_ms"], "ms"))
    print(line(f"RSS idle {args.idle:g} s", report["idle_rss_mib"], "MiB"))
    print(line("storage format (apart)", report["format_ms"], "ms"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
