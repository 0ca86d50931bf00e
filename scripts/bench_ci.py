#!/usr/bin/env python3
"""What a test suite pays for Moldau: start-up, memory, first record, and a 100-test pytest project.

    python scripts/bench_ci.py [--runs 5] [--skip-project]

Prints the median of ``--runs`` runs of:
- process start to first ApiVersions answer: ``moldau serve --profile ci`` spawned, its bootstrap line
  read from stdout, one ApiVersions request answered (reference: a bare ``python -c pass``);
- in-process start: ``EmbeddedBroker().start()`` in a fresh interpreter, with the import of
  ``broker.embedded`` reported apart;
- idle RSS of ``moldau serve --profile ci`` once it has answered ApiVersions and sat idle for 1 s;
- ``subscribe()`` to first record for a confluent-kafka group consumer (the ci profile; the record is
  produced before the consumer starts);
- the wall time of a generated 100-test pytest project using the plugin (each test produces 10 records
  to its own ``kafka_topic`` and consumes them with an assigned consumer), plain and with ``-n 2``.
Targets (issue 14): <= 100 ms, <= 30 ms, <= 25 MB, <= 300 ms. The project's bytecode is compiled first, as
an installed package's is, and the first three run on a Python laid out as ``pip install moldau`` leaves
it (see ``installed_python``), not on the development venv with its editable-install finder.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEADLINE_S = 30.0
# The interpreter the start-up measurements use; main() replaces it with installed_python()'s.
PYTHON = sys.executable


def installed_python(where: Path) -> str:
    """A venv laid out as ``pip install moldau`` leaves one: the project and its dependencies on the path
    of a plain site-packages. The development venv's editable install adds a finder that every start
    imports (pathlib, urllib, importlib.util: about 15 ms) and that an installed package does not pay; a
    .pth line naming a directory puts it on sys.path without running the .pth files inside it."""
    import sysconfig
    import venv

    venv.create(where, with_pip=False, symlinks=True)
    site_packages = next((where / "lib").glob("python*/site-packages"))
    dependencies = sysconfig.get_paths()["purelib"]  # the running environment's site-packages
    (site_packages / "moldau-bench.pth").write_text(f"{ROOT}\n{dependencies}\n")
    return str(where / "bin" / "python")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOLDAU_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _api_versions(bootstrap: str) -> None:
    from protocol import codec, messages

    host, _, port = bootstrap.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=DEADLINE_S) as sock:
        frame = b"".join(bytes(p) for p in codec.encode_request(18, 3, 1, "bench", messages.ApiVersionsRequest(
            client_software_name="bench", client_software_version="1")))
        sock.sendall(frame)
        size = struct.unpack(">i", sock.recv(4, socket.MSG_WAITALL))[0]
        sock.recv(size, socket.MSG_WAITALL)


def _spawn_ci_broker() -> tuple[subprocess.Popen[str], str, float]:
    """A ``moldau serve --profile ci`` process, its bootstrap address, and the seconds from spawn to its
    first ApiVersions answer."""
    start = time.perf_counter()
    proc = subprocess.Popen([PYTHON, "-m", "broker", "serve", "--profile", "ci", "--listen", "127.0.0.1:0",
                             "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=_env(), cwd=ROOT)
    assert proc.stdout is not None
    bootstrap = proc.stdout.readline().strip()
    if not bootstrap:
        proc.kill()
        raise RuntimeError("moldau serve --profile ci printed no bootstrap address")
    _api_versions(bootstrap)
    return proc, bootstrap, time.perf_counter() - start


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(DEADLINE_S)


def process_start_ms() -> float:
    proc, _, took = _spawn_ci_broker()
    _stop(proc)
    return took * 1000


def bare_python_ms() -> float:
    start = time.perf_counter()
    subprocess.run([PYTHON, "-c", "pass"], check=True)
    return (time.perf_counter() - start) * 1000


_IN_PROCESS = """
import asyncio, time
t0 = time.perf_counter()
from broker.embedded import EmbeddedBroker
t1 = time.perf_counter()
async def main():
    broker = EmbeddedBroker()
    t2 = time.perf_counter()
    await broker.start()
    t3 = time.perf_counter()
    await broker.stop()
    print((t1 - t0) * 1000, (t3 - t2) * 1000)
asyncio.run(main())
"""


def in_process_ms() -> tuple[float, float]:
    out = subprocess.run([PYTHON, "-c", _IN_PROCESS], check=True, capture_output=True, text=True,
                         env=_env(), cwd=ROOT).stdout.split()
    return float(out[-2]), float(out[-1])


def idle_rss_mb() -> float:
    proc, _, _ = _spawn_ci_broker()
    time.sleep(1.0)  # a benchmark, not a test: "idle" means after a second of nothing
    with open(f"/proc/{proc.pid}/status") as status:
        rss_kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    _stop(proc)
    return rss_kb / 1024


def first_record_ms(bootstrap: str) -> float:
    from confluent_kafka import Consumer, Producer

    topic = f"bench-first-{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, b"hello")
    if producer.flush(DEADLINE_S):
        raise RuntimeError("produce did not finish")
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    try:
        start = time.perf_counter()
        consumer.subscribe([topic])
        deadline = start + DEADLINE_S
        while time.perf_counter() < deadline:
            msg = consumer.poll(0.05)
            if msg is not None and msg.error() is None:
                return (time.perf_counter() - start) * 1000
        raise RuntimeError("no record within the deadline")
    finally:
        consumer.close()


_PROJECT_TEST = '''
import uuid
from confluent_kafka import Consumer, Producer, TopicPartition
import pytest


@pytest.mark.parametrize("n", range({count}))
def test_produce_consume(moldau_broker, kafka_topic, n):
    producer = Producer({{"bootstrap.servers": moldau_broker.bootstrap_servers, "linger.ms": 0}})
    for i in range(10):
        producer.produce(kafka_topic, str(i).encode())
    assert producer.flush(10) == 0
    consumer = Consumer({{"bootstrap.servers": moldau_broker.bootstrap_servers, "group.id": "g",
                         "enable.auto.commit": False}})
    consumer.assign([TopicPartition(kafka_topic, 0, 0)])
    got = []
    for msg in consumer.consume(10, timeout=10):
        assert msg.error() is None
        got.append(msg.value())
    consumer.close()
    assert got == [str(i).encode() for i in range(10)]
'''


def project_wall_s(extra: list[str], count: int = 100) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "pytest.ini").write_text("[pytest]\n")
        Path(tmp, "test_project.py").write_text(textwrap.dedent(_PROJECT_TEST.format(count=count)))
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra],
                                check=False, cwd=tmp, env=_env(), capture_output=True, text=True)
        took = time.perf_counter() - start
        if result.returncode != 0:
            raise RuntimeError(f"the project failed:\n{result.stdout[-3000:]}")
        return took


def compile_bytecode() -> None:
    """Write the project's .pyc files, as ``pip install`` does: without them (a checkout, or a shell with
    PYTHONDONTWRITEBYTECODE set) every start compiles ~270 modules and measures that instead."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", "broker", "protocol", "storage"],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-project", action="store_true", help="skip the 100-test pytest project")
    args = parser.parse_args()
    compile_bytecode()
    global PYTHON
    installed = tempfile.TemporaryDirectory(prefix="moldau-bench-venv-")
    PYTHON = installed_python(Path(installed.name))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")

    def median(fn, runs=args.runs):  # type: ignore[no-untyped-def]
        return statistics.median(fn() for _ in range(runs))

    print(f"bare python start:                 {median(bare_python_ms):7.1f} ms (reference)")
    print(f"process start to ApiVersions:      {median(process_start_ms):7.1f} ms (target <= 100)")
    runs = [in_process_ms() for _ in range(args.runs)]
    print(f"import broker.embedded:            {statistics.median(r[0] for r in runs):7.1f} ms")
    print(f"in-process start:                  {statistics.median(r[1] for r in runs):7.1f} ms (target <= 30)")
    print(f"idle RSS:                          {median(idle_rss_mb, 3):7.1f} MB (target <= 25)")
    proc, bootstrap, _ = _spawn_ci_broker()
    try:
        # The first group of a broker also creates __consumer_offsets: reported apart.
        print(f"subscribe() to first record, first group: {first_record_ms(bootstrap):7.1f} ms")
        print(f"subscribe() to first record:       {median(lambda: first_record_ms(bootstrap)):7.1f} ms"
              " (target <= 300)")
    finally:
        _stop(proc)
    if not args.skip_project:
        print(f"100-test pytest project:           {median(lambda: project_wall_s([]), 3):7.2f} s")
        print(f"100-test pytest project, -n 2:     {median(lambda: project_wall_s(['-n', '2']), 3):7.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
