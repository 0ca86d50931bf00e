"""The pytest plugin (``broker/pytest_plugin.py``, entry point ``moldau``) used the way a user's suite uses
it: a small test project is written into ``tmp_path`` (its own ``pytest.ini``, no conftest, so nothing of
this repository's pytest configuration applies) and run with ``python -m pytest`` in a subprocess, with a
bound on its run time. The project's tests use ``moldau_broker``, ``kafka_topic`` (with the
``moldau_topic`` marker), ``moldau_reset`` and ``moldau_faults`` with confluent-kafka, and record which
broker they saw (its bootstrap address, the xdist worker) in files the outer test reads.

Runs: plain (one in-process broker for the session); ``-n 2`` (each xdist worker its own broker);
``--moldau-bootstrap`` to a ``moldau serve --profile ci`` process (no in-process broker); and a project
with a failing test (a normal test failure, not a plugin error).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from tests.compat.conftest import BrokerProcess

RUN_TIMEOUT_S = 90  # a whole run takes a few seconds; this only stops a hung one

PYTEST_INI = """\
[pytest]
addopts = --strict-markers -p no:cacheprovider
moldau_settings =
    num.partitions=2
"""

# Imported by the project's tests (pytest puts a conftest-less test file's directory on sys.path).
HELPERS = '''
import json
import os
import time
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

WAIT_S = 15.0


def record(name, broker):
    """Note which broker this test saw, for the outer test."""
    out = Path(os.environ["MOLDAU_PLUGIN_OUT"])
    out.mkdir(exist_ok=True)
    inner = getattr(broker, "broker", None)  # the Broker of an in-process BrokerThread
    (out / f"{name}.json").write_text(json.dumps({
        "bootstrap": broker.bootstrap_servers, "kind": type(broker).__name__,
        "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
        "storage": inner and inner.storage_url, "kafka_version": inner and inner.config.kafka_version,
        "rebalance_delay": inner and inner.config.group_initial_rebalance_delay_ms}))


def produce(bootstrap, topic, values, partition=0, **options):
    errors = []
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "message.timeout.ms": 10000, **options})
    for value in values:
        producer.produce(topic, value=value, partition=partition,
                         on_delivery=lambda err, msg: errors.append(err) if err else None)
    assert producer.flush(WAIT_S) == 0, "records not acknowledged in time"
    assert errors == []


def consume(bootstrap, topic, count, partition=0):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{topic}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 50})
    try:
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        got, deadline = [], time.monotonic() + WAIT_S
        while len(got) < count and time.monotonic() < deadline:
            for msg in consumer.consume(count - len(got), 0.2):
                assert msg.error() is None, msg.error()
                got.append(msg.value())
        return got
    finally:
        consumer.close()


def topics(bootstrap):
    """Topic names, without creating any (the plugin's own admin client)."""
    from broker.admin_client import AdminClient

    with AdminClient(bootstrap) as admin:
        return admin.list_topics()


def partitions(bootstrap, topic):
    from confluent_kafka.admin import AdminClient

    return len(AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10).topics[topic].partitions)
'''

TEST_TOPICS = '''
import os

import pytest

from helpers import consume, partitions, produce, record


def test_produce_and_consume(moldau_broker, kafka_topic):
    record("produce_and_consume", moldau_broker)
    produce(moldau_broker.bootstrap_servers, kafka_topic, [b"a", b"b", b"c"])
    assert consume(moldau_broker.bootstrap_servers, kafka_topic, 3) == [b"a", b"b", b"c"]


def test_default_partitions(moldau_broker, kafka_topic):
    record("default_partitions", moldau_broker)
    assert partitions(moldau_broker.bootstrap_servers, kafka_topic) == int(os.environ["EXPECT_PARTITIONS"])


@pytest.mark.moldau_topic(partitions=3, config={"retention.ms": 60000, "cleanup.policy": "compact"})
def test_marker_shapes_the_topic(moldau_broker, kafka_topic):
    from confluent_kafka.admin import AdminClient, ConfigResource

    record("marker", moldau_broker)
    assert partitions(moldau_broker.bootstrap_servers, kafka_topic) == 3
    admin = AdminClient({"bootstrap.servers": moldau_broker.bootstrap_servers})
    [future] = admin.describe_configs([ConfigResource("topic", kafka_topic)]).values()
    configs = future.result(timeout=10)
    assert (configs["retention.ms"].value, configs["cleanup.policy"].value) == ("60000", "compact")


@pytest.mark.parametrize("case", ["a/b", "x y"])
def test_topic_names_are_legal_and_unique(moldau_broker, kafka_topic, case):
    record(f"names-{case.replace('/', '_').replace(' ', '_')}", moldau_broker)
    assert kafka_topic.startswith("test_topic_names_are_legal_and_unique-")
    produce(moldau_broker.bootstrap_servers, kafka_topic, [case.encode()])
'''

TEST_RESET = '''
from helpers import produce, record, topics


def test_reset_removes_what_other_tests_left(moldau_broker, moldau_reset):
    record("reset", moldau_broker)
    produce(moldau_broker.bootstrap_servers, "leftover-topic", [b"x"])
    assert "leftover-topic" in topics(moldau_broker.bootstrap_servers)
    result = moldau_reset()
    assert "leftover-topic" in result.topics
    assert topics(moldau_broker.bootstrap_servers) == []


def test_kafka_topic_requested_before_moldau_reset_survives_the_reset(moldau_broker, kafka_topic, moldau_reset):
    record("reset_order_1", moldau_broker)
    assert topics(moldau_broker.bootstrap_servers) == [kafka_topic]


def test_kafka_topic_requested_after_moldau_reset_survives_the_reset(moldau_broker, moldau_reset, kafka_topic):
    record("reset_order_2", moldau_broker)
    assert topics(moldau_broker.bootstrap_servers) == [kafka_topic]
'''

TEST_FAULTS = '''
from confluent_kafka import KafkaError, Producer

from helpers import WAIT_S, produce, record


def test_a_failed_produce_is_retried_by_the_client(moldau_broker, moldau_faults, kafka_topic):
    record("faults_retry", moldau_broker)
    moldau_faults.fail_requests("Produce", "NOT_LEADER_OR_FOLLOWER", count=2, topic=kafka_topic)
    assert [rule["kind"] for rule in moldau_faults.rules()] == ["fail"]
    produce(moldau_broker.bootstrap_servers, kafka_topic, [b"x"], retries=5, **{"retry.backoff.ms": 10})
    assert moldau_faults.rules() == []  # both failures used


def test_a_failed_disk_reaches_a_producer_that_does_not_retry(moldau_broker, moldau_faults, kafka_topic):
    record("faults_disk", moldau_broker)
    moldau_faults.fail_disk(kafka_topic)
    errors = []
    producer = Producer({"bootstrap.servers": moldau_broker.bootstrap_servers, "retries": 0})
    producer.produce(kafka_topic, b"x", partition=0, on_delivery=lambda err, msg: errors.append(err))
    assert producer.flush(WAIT_S) == 0
    assert [e.code() for e in errors] == [KafkaError.KAFKA_STORAGE_ERROR]
    # left in place on purpose: the fixture clears it after the test


def test_rules_left_by_earlier_tests_are_gone(moldau_broker, moldau_faults):
    record("faults_cleared", moldau_broker)
    assert moldau_faults.rules() == []


def test_moldau_reset_clears_the_faults(moldau_broker, moldau_reset, moldau_faults):
    record("faults_reset", moldau_broker)
    moldau_faults.fail_requests("Metadata", "UNKNOWN_SERVER_ERROR", count=None)
    assert moldau_reset().faults == 1
    assert moldau_faults.rules() == []
'''

TEST_FAILING = '''
from helpers import produce


def test_passes(moldau_broker, kafka_topic):
    produce(moldau_broker.bootstrap_servers, kafka_topic, [b"ok"])


def test_fails_on_purpose(moldau_broker, kafka_topic):
    produce(moldau_broker.bootstrap_servers, kafka_topic, [b"ok"])
    assert kafka_topic == "not-the-topic-name", "failing on purpose"
'''


SUITE = {"test_topics.py": TEST_TOPICS, "test_reset.py": TEST_RESET, "test_faults.py": TEST_FAULTS}
SUITE_TESTS = 12


def write_project(root: Path, files: dict[str, str]) -> Path:
    root.mkdir()
    (root / "pytest.ini").write_text(PYTEST_INI)
    (root / "helpers.py").write_text(textwrap.dedent(HELPERS))
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text))
    return root


def run_pytest(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m pytest -q`` in ``project``, with nothing of the outer run's pytest or Moldau setup in its
    environment (an outer xdist worker's variables would make the inner run think it is a worker)."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("PYTEST_", "MOLDAU_")) and k != "PYTHONPATH"}
    base.update({"MOLDAU_PLUGIN_OUT": str(project / "out"), "EXPECT_PARTITIONS": "2",
                 "XDG_DATA_HOME": str(project / "xdg-data"), **(env or {})})
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          cwd=project, env=base, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                          stdin=subprocess.DEVNULL, check=False)


def outcome(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """The counts of pytest's summary line, e.g. {"passed": 5, "failed": 1}."""
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    summary = lines[-1] if lines else ""
    return {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|errors?|skipped)", summary)}


def explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit code {result.returncode}\n--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-3000:]}"


def seen(project: Path) -> dict[str, dict[str, str]]:
    import json

    return {p.stem: json.loads(p.read_text()) for p in sorted((project / "out").glob("*.json"))}


def test_a_suite_gets_one_in_process_broker_topics_per_test_and_a_reset(tmp_path: Path) -> None:
    """The whole project passes with one in-process broker (``BrokerThread``) for the session: the ini's
    moldau_settings apply (2 partitions by default), the marker shapes a topic, and moldau_reset empties the
    broker without removing the test's own kafka_topic, whichever order the test asks for them in."""
    project = write_project(tmp_path / "project", SUITE)
    result = run_pytest(project)
    assert (result.returncode, outcome(result)) == (0, {"passed": SUITE_TESTS}), explain(result)
    tests = seen(project)
    assert len(tests) == SUITE_TESTS
    assert {(t["kind"], t["storage"], t["kafka_version"], t["rebalance_delay"]) for t in tests.values()} == {
        ("BrokerThread", "memory://", None, 0)}
    assert len({t["bootstrap"] for t in tests.values()}) == 1, tests


def test_under_xdist_each_worker_gets_its_own_broker(tmp_path: Path) -> None:
    """``-n 2``: both workers run tests, each against a broker of its own (two addresses, one per worker).
    With ``--moldau-profile dev`` (data on disk) each worker's broker keeps its data in a temporary
    directory of its own, not in `moldau serve`'s default one (which the first worker would lock);
    ``--moldau-set`` wins over the ini's moldau_settings; ``--moldau-kafka-version`` reaches the broker."""
    project = write_project(tmp_path / "project", SUITE)
    result = run_pytest(project, "-n", "2", "--moldau-set", "num.partitions=4", "--moldau-profile", "dev",
                        "--moldau-kafka-version", "2.8", env={"EXPECT_PARTITIONS": "4"})
    assert (result.returncode, outcome(result)) == (0, {"passed": SUITE_TESTS}), explain(result)
    by_worker: dict[str, set[tuple[str, str]]] = {}
    for test in seen(project).values():
        assert (test["kafka_version"], test["rebalance_delay"]) == ("2.8", 0), test
        by_worker.setdefault(test["worker"], set()).add((test["bootstrap"], test["storage"]))
    assert sorted(by_worker) == ["gw0", "gw1"], by_worker
    assert all(len(brokers) == 1 for brokers in by_worker.values()), by_worker
    [(gw0_address, gw0_storage)], [(gw1_address, gw1_storage)] = by_worker["gw0"], by_worker["gw1"]
    assert gw0_address != gw1_address and gw0_storage != gw1_storage, by_worker
    assert all(storage.startswith("file://") for storage in (gw0_storage, gw1_storage)), by_worker
    assert not (project / "xdg-data").exists(), "a broker used the default data directory"


def test_moldau_bootstrap_uses_a_running_broker_and_starts_none(tmp_path: Path,
                                                                 start_broker: Callable[..., BrokerProcess]) -> None:
    """``--moldau-bootstrap`` to ``moldau serve --profile ci``: every test sees that address and an
    ``ExternalBroker``; the in-process settings do not apply (the server's num.partitions is 1); topics are
    created and deleted on the server, and moldau_reset works over the Kafka protocol."""
    server = start_broker("--profile", "ci")
    project = write_project(tmp_path / "project", SUITE)
    result = run_pytest(project, f"--moldau-bootstrap={server.bootstrap}", env={"EXPECT_PARTITIONS": "1"})
    assert (result.returncode, outcome(result)) == (0, {"passed": SUITE_TESTS}), explain(result)
    tests = seen(project)
    assert {(t["kind"], t["bootstrap"]) for t in tests.values()} == {("ExternalBroker", server.bootstrap)}
    assert server.stop() == 0, "the server stops cleanly (and every line it logged has been read)"
    created = [r["topic"] for r in server.records if r.get("event") == "topic.created"]
    assert sum(name.startswith("test_produce_and_consume-") for name in created) == 1, created


def test_a_failing_test_is_reported_as_a_normal_failure(tmp_path: Path) -> None:
    """A test whose assertion fails is one ordinary failure: the other test passes, no setup or teardown
    error, no internal error, and the assertion message is shown."""
    project = write_project(tmp_path / "project", {"test_failing.py": TEST_FAILING})
    result = run_pytest(project)
    assert (result.returncode, outcome(result)) == (1, {"failed": 1, "passed": 1}), explain(result)
    assert "failing on purpose" in result.stdout and "INTERNALERROR" not in result.stdout + result.stderr


def test_reset_of_an_external_broker_without_a_control_endpoint_still_deletes_topics(
        start_broker: Callable[..., BrokerProcess]) -> None:
    """``ExternalBroker.reset()`` (what moldau_reset does under ``--moldau-bootstrap``) against a broker
    whose control endpoint is off (the dev profile, or Apache Kafka): no faults to clear, and the topics
    still go."""
    from broker.admin_client import AdminClient
    from broker.pytest_plugin import ExternalBroker

    server = start_broker()
    with AdminClient(server.bootstrap) as admin:
        admin.create_topic("plugin-external-reset", 2)
    external = ExternalBroker(server.bootstrap)
    result = external.reset()
    assert (result.topics, result.faults) == (["plugin-external-reset"], 0)
    assert external.reset().topics == []
    with AdminClient(server.bootstrap) as admin:
        assert admin.list_topics() == []
