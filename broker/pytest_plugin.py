"""The pytest plugin (registered as ``moldau`` through the ``pytest11`` entry point when Moldau is
installed): a Kafka broker for a test suite, topics per test, a reset between tests, and faults on purpose.

Fixtures:
- ``moldau_broker`` (session): the broker, with ``bootstrap_servers``. By default an in-process broker on
  a background thread (``broker.embedded.BrokerThread``, the ``ci`` profile), started on first use and
  stopped at the end of the session. Under pytest-xdist each worker process gets its own.
  ``--moldau-bootstrap HOST:PORT`` uses a broker that is already running instead (any Kafka broker).
- ``kafka_topic`` (function): the name of a new topic, unique to the test, created before it and deleted
  after it. ``@pytest.mark.moldau_topic(partitions=3, config={...})`` shapes it.
- ``moldau_reset`` (function): deletes every topic and group (and clears the faults) before the test; call
  it to do so again during the test.
- ``moldau_faults`` (function): the broker's fault injector (``broker/faults.py``; over the control
  endpoint for an external broker started with ``--profile ci``); every rule is cleared after the test.

Nothing is imported or started unless a test uses a fixture, so the plugin costs nothing in suites
that do not.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

_TOPIC_NAME_MAX = 249
_UNSAFE = re.compile(r"[^a-zA-Z0-9._-]+")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("moldau", "Moldau Kafka broker")
    group.addoption("--moldau-bootstrap", metavar="HOST:PORT", default=None,
                    help="use this running broker instead of starting one in-process")
    group.addoption("--moldau-profile", default=None,
                    help="setting profile of the in-process broker (default ci)")
    group.addoption("--moldau-set", action="append", default=[], metavar="NAME=VALUE",
                    help="a setting of the in-process broker by its Kafka name (repeatable)")
    group.addoption("--moldau-kafka-version", default=None, metavar="VERSION",
                    help="the in-process broker advertises this Kafka release's API versions")
    group.addoption("--moldau-log-level", default=None, metavar="LEVEL",
                    help="log level of the in-process broker (default: warning, unless the suite configures "
                         "structlog itself)")
    parser.addini("moldau_settings", type="linelist", default=[],
                  help="NAME=VALUE settings of the in-process broker, one per line")
    parser.addini("moldau_profile", default="ci", help="setting profile of the in-process broker")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "moldau_topic(partitions=-1, config=None): how kafka_topic creates the test's topic")


class ExternalBroker:
    """A broker the plugin did not start (``--moldau-bootstrap``): reached over the Kafka protocol, and
    over the control endpoint for faults."""

    def __init__(self, bootstrap_servers: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self._faults: Any = None
        self._has_control_endpoint = True

    @property
    def faults(self) -> Any:
        if self._faults is None:
            from broker.faults import FaultClient

            self._faults = FaultClient(self.bootstrap_servers)
        return self._faults

    def reset(self) -> Any:
        from broker.admin_client import AdminClient
        from broker.embedded import ResetResult

        result = ResetResult()
        # The faults first, as reset_broker does: a rule left by a test could fail the admin requests below.
        if self._has_control_endpoint:
            from broker.faults import ControlEndpointError

            try:
                result.faults = self.faults.clear()
            except ControlEndpointError:
                self._has_control_endpoint = False  # Apache Kafka, or Moldau without it: no rules to clear
        with AdminClient(self.bootstrap_servers) as admin:
            result.groups, result.groups_kept = admin.delete_groups(admin.list_groups())
            result.topics = admin.delete_topics(admin.list_topics())
        return result


def _settings(config: pytest.Config) -> dict[str, str]:
    from broker.config import parse_assignments

    lines = [*config.getini("moldau_settings"), *config.getoption("moldau_set")]
    return parse_assignments(lines, "moldau_settings / --moldau-set")


@pytest.fixture(scope="session")
def moldau_broker(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The session's Kafka broker: an object with ``bootstrap_servers``, ``reset()`` and ``faults``."""
    external = pytestconfig.getoption("moldau_bootstrap")
    if external:
        yield ExternalBroker(external)
        return
    from broker.embedded import BrokerThread, broker_config

    level = pytestconfig.getoption("moldau_log_level")
    if level:
        from broker.log import configure_logging

        # Asked for by name: structlog renders at this level even if the suite configured it. Without
        # the option the suite's own structlog set-up stands (BrokerThread: warnings to stderr if none).
        configure_logging(level, route_stdlib=False)
    profile = pytestconfig.getoption("moldau_profile") or pytestconfig.getini("moldau_profile")
    settings = _settings(pytestconfig)
    data_dir = None
    config = broker_config(profile=profile, settings=settings)
    if not config.in_memory and config.log_dirs is None and config.storage_url is None:
        # A profile that keeps data on disk (dev, kafka) would use `moldau serve`'s default data directory,
        # locked by the first xdist worker (or the user's own broker) and kept across sessions.
        data_dir = tmp_path_factory.mktemp("moldau-data")
    with BrokerThread(profile=profile, settings=settings, data_dir=data_dir,
                      kafka_version=pytestconfig.getoption("moldau_kafka_version")) as broker:
        yield broker


def unique_topic_name(node_name: str) -> str:
    """A legal Kafka topic name for a test, unique across runs and xdist workers."""
    stem = _UNSAFE.sub("-", node_name).strip("-.") or "test"
    suffix = uuid.uuid4().hex[:12]
    return f"{stem[:_TOPIC_NAME_MAX - len(suffix) - 1]}-{suffix}"


@pytest.fixture
def kafka_topic(request: pytest.FixtureRequest, moldau_broker: Any) -> Iterator[str]:
    """A new topic for this test (created before it, deleted after it); its name."""
    from broker.admin_client import AdminClient

    if "moldau_reset" in request.fixturenames:
        # The reset must come first, or it deletes this topic when the test lists kafka_topic before it.
        request.getfixturevalue("moldau_reset")
    marker = request.node.get_closest_marker("moldau_topic")
    options = dict(marker.kwargs) if marker else {}
    name = unique_topic_name(request.node.name)
    with AdminClient(moldau_broker.bootstrap_servers) as admin:
        admin.create_topic(name, options.get("partitions", -1), options.get("config"))
    yield name
    with AdminClient(moldau_broker.bootstrap_servers) as admin:
        admin.delete_topics([name])


@pytest.fixture
def moldau_reset(moldau_broker: Any) -> Callable[[], Any]:
    """Delete every topic and group and clear the faults now; the fixture's value does it again."""
    moldau_broker.reset()
    return moldau_broker.reset


@pytest.fixture
def moldau_faults(moldau_broker: Any) -> Iterator[Any]:
    """The broker's fault injector; every rule is cleared after the test."""
    faults = moldau_broker.faults
    yield faults
    faults.clear()
