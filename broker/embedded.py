"""Moldau inside a program or a test suite: start a broker in-process, use it, stop it.

Two ways to run one, with the same options:

    from broker.embedded import BrokerThread, EmbeddedBroker

    async with EmbeddedBroker() as kafka:        # asyncio code: on the running event loop
        producer = aiokafka.AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers)

    with BrokerThread(settings={"num.partitions": 3}) as kafka:   # sync code: on its own thread
        producer = confluent_kafka.Producer({"bootstrap.servers": kafka.bootstrap_servers})

Defaults are the ``ci`` profile (``broker/profiles.py``): a free port on 127.0.0.1, everything in memory
(unless ``data_dir`` is given), consumer groups that form at once, 1 s sessions allowed. Settings go by
their Kafka names and win over the profile. For tests, ``clock`` replaces the coordinators' wall clock and
``engine`` the storage engine (e.g. a ``storage.file.FileEngine`` over a ``FaultInjectingFileSystem``, to
fail the disk); ``faults`` makes the broker misbehave on purpose (``broker/faults.py``); ``reset()`` deletes
every topic and group and clears the faults, for a clean broker between tests without a restart.

A start that fails (the port is taken, a bad setting, an unusable data directory) raises and leaves
nothing behind: no open port, no storage lock, no thread.

Logging: in a program that has not configured structlog, the broker logs warnings and errors to stderr
(structlog's own default would print every event, debug included, to stdout); a program that has
configured structlog gets the broker's events through its own set-up. The standard ``logging`` module is
left alone either way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

from broker.config import BrokerConfig, build_config, format_address
from broker.profiles import profile_settings
from broker.server import Broker

if TYPE_CHECKING:
    from broker.faults import FaultInjector
    from broker.groups.coordinator import Clock
    from storage.interface import StorageEngine

__all__ = ["BrokerThread", "EmbeddedBroker", "ResetResult", "broker_config", "reset_broker"]

T = TypeVar("T")

DEFAULT_PROFILE = "ci"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_LOG_LEVEL = "warning"
_THREAD_STOP_TIMEOUT_S = 30.0


def broker_config(*, profile: str = DEFAULT_PROFILE, settings: Mapping[str, Any] | None = None,
                  data_dir: str | os.PathLike[str] | None = None, host: str | None = None, port: int | None = None,
                  kafka_version: str | None = None) -> BrokerConfig:
    """The BrokerConfig an embedded broker runs with: ``profile``, then ``settings`` (Kafka names; values
    as text, as in a properties file, or as ints and bools), then the keyword arguments. ``host`` and
    ``port`` (default 127.0.0.1 and a free port) make one PLAINTEXT listener; without them, ``settings``
    may give ``listeners`` instead (several, TLS, SASL: the first one's address is ``bootstrap_servers``,
    ``broker.listener(name)`` has the others). The environment is not read, so a test's broker does not
    change with the shell it runs in. Raises ``ConfigError``."""
    # Values as text, parsed as a properties file's would be: topic defaults such as log.retention.ms are
    # string settings, and {"log.retention.ms": 1000} must work as {"num.partitions": 3} does.
    overrides: dict[str, Any] = {name: _setting_text(value) for name, value in (settings or {}).items()}
    if host is not None or port is not None or "listeners" not in overrides:
        overrides["listeners"] = format_address(DEFAULT_HOST if host is None else host, port or 0)
    if data_dir is not None:
        overrides["log.dirs"] = os.fspath(data_dir)
    if kafka_version is not None:
        overrides["kafka.version"] = kafka_version
    # log.dirs among the settings names a data directory as data_dir does: files, not the profile's memory.
    dir_given = data_dir is not None or not {"log.dirs", "log.dir"}.isdisjoint(overrides)
    chosen = profile_settings(profile, data_dir_given=dir_given)
    return build_config([(f"profile {profile!r}", chosen), ("settings", overrides)])


def _default_logging() -> None:
    import structlog

    if not structlog.is_configured():
        from broker.log import configure_logging

        configure_logging(DEFAULT_LOG_LEVEL, route_stdlib=False)


def _setting_text(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return os.fspath(value) if isinstance(value, os.PathLike) else str(value)


@dataclass
class ResetResult:
    """What ``reset()`` removed, and the groups it had to keep because members were still in them."""

    topics: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    groups_kept: list[str] = field(default_factory=list)
    faults: int = 0


async def reset_broker(broker: Broker) -> ResetResult:
    """Delete every topic but the internal ones and every group, and clear the fault rules; on the
    broker's loop. A group with members (a consumer still open) cannot be deleted, as with DeleteGroups:
    it is listed in ``groups_kept`` and goes when its members leave or time out."""
    from broker.cluster import INTERNAL_TOPICS
    from protocol.errors import ErrorCode

    result = ResetResult(faults=broker.faults.clear())
    # Just after a start on a data directory the groups are still loading: list_groups would answer
    # COORDINATOR_LOAD_IN_PROGRESS and the groups would be kept without a word.
    await broker.groups.wait_loaded()
    error, listings = broker.groups.list_groups()
    if error is ErrorCode.NONE and listings:
        for group_id, code in await broker.groups.delete_groups([g.group_id for g in listings]):
            (result.groups if code is ErrorCode.NONE else result.groups_kept).append(group_id)
    for name in sorted(broker.cluster.names()):
        if name not in INTERNAL_TOPICS:
            await broker.cluster.delete_topic(name)
            result.topics.append(name)
    return result


class EmbeddedBroker:
    """A broker on the running event loop, as an async context manager (or ``start()``/``stop()``).

    Keyword arguments are those of ``broker_config`` plus ``engine`` and ``clock`` (see the module
    docstring)."""

    def __init__(self, *, profile: str = DEFAULT_PROFILE, settings: Mapping[str, Any] | None = None,
                 data_dir: str | os.PathLike[str] | None = None, host: str | None = None, port: int | None = None,
                 kafka_version: str | None = None, engine: StorageEngine | None = None,
                 clock: Clock | None = None) -> None:
        self.config = broker_config(profile=profile, settings=settings, data_dir=data_dir, host=host,
                                    port=port, kafka_version=kafka_version)
        _default_logging()
        self.broker = Broker(self.config, engine=engine, clock=clock)

    async def start(self) -> Self:
        await self.broker.start()
        return self

    async def stop(self) -> None:
        await self.broker.stop()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for the clients' ``bootstrap.servers``."""
        return self.broker.bootstrap_servers

    @property
    def host(self) -> str:
        return self.broker.advertised_address[0]

    @property
    def port(self) -> int:
        return self.broker.advertised_address[1]

    @property
    def faults(self) -> FaultInjector:
        return self.broker.faults

    async def reset(self) -> ResetResult:
        """Delete every topic and group and clear the faults (see ``reset_broker``)."""
        return await reset_broker(self.broker)


class BrokerThread:
    """A broker on a background thread with its own event loop, for synchronous code: a context manager
    (or ``start()``/``stop()``). Its methods may be called from any thread.

    Keyword arguments are those of ``broker_config`` plus ``engine`` and ``clock`` (see the module
    docstring); ``engine`` and ``clock`` then belong to the broker's thread."""

    def __init__(self, *, profile: str = DEFAULT_PROFILE, settings: Mapping[str, Any] | None = None,
                 data_dir: str | os.PathLike[str] | None = None, host: str | None = None, port: int | None = None,
                 kafka_version: str | None = None, engine: StorageEngine | None = None,
                 clock: Clock | None = None) -> None:
        self.config = broker_config(profile=profile, settings=settings, data_dir=data_dir, host=host,
                                    port=port, kafka_version=kafka_version)
        _default_logging()
        self.broker = Broker(self.config, engine=engine, clock=clock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self.faults = _ThreadSafeFaults(self)

    def start(self) -> Self:
        """Start the broker and return once it accepts connections; a failed start raises here, after
        the thread has released everything and ended."""
        if self._thread is not None:
            raise RuntimeError("broker thread already started")
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(started,), name="moldau-broker", daemon=True)
        self._thread.start()
        try:
            started.result()
        except BaseException:
            self._thread.join()
            raise
        return self

    def _run(self, started: concurrent.futures.Future[None]) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve(loop, started))
        finally:
            loop.close()

    async def _serve(self, loop: asyncio.AbstractEventLoop, started: concurrent.futures.Future[None]) -> None:
        try:
            await self.broker.start()
        except BaseException as exc:  # noqa: BLE001 - re-raised by start() in the caller's thread
            started.set_exception(exc)
            return
        self._stop = asyncio.Event()
        self._loop = loop
        started.set_result(None)
        try:
            await self._stop.wait()
        finally:
            await self.broker.stop()

    def stop(self) -> None:
        """Stop the broker and wait for its thread to end (idempotent)."""
        loop, thread, stop = self._loop, self._thread, self._stop
        if loop is None or thread is None or stop is None:
            return
        if thread.is_alive():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:
                pass  # the loop has closed: the thread is finishing on its own
            thread.join(_THREAD_STOP_TIMEOUT_S)
            if thread.is_alive():
                raise RuntimeError(f"the broker thread did not stop within {_THREAD_STOP_TIMEOUT_S:.0f} s")
        self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for the clients' ``bootstrap.servers``."""
        return self.broker.bootstrap_servers

    @property
    def host(self) -> str:
        return self.broker.advertised_address[0]

    @property
    def port(self) -> int:
        return self.broker.advertised_address[1]

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the broker's loop and return its result (for tests that reach inside)."""
        return asyncio.run_coroutine_threadsafe(coro, self._running_loop()).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        """Call ``fn(*args)`` on the broker's loop and return its result."""
        async def call() -> T:
            return fn(*args)

        return self.run(call(), timeout)

    def reset(self, timeout: float | None = 30.0) -> ResetResult:
        """Delete every topic and group and clear the faults (see ``reset_broker``)."""
        return self.run(reset_broker(self.broker), timeout)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("broker thread not running; use start() or a with block")
        return self._loop


class _ThreadSafeFaults:
    """The broker's ``FaultInjector`` seen from another thread: each method call runs on the broker's
    loop and returns its result."""

    def __init__(self, owner: BrokerThread) -> None:
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._owner.broker.faults, name)
        if not callable(method):
            return self._owner.call(lambda: getattr(self._owner.broker.faults, name))

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._owner.call(lambda: method(*args, **kwargs))

        return call
