"""The ``moldau`` command line: ``moldau --version``, ``moldau serve`` (a thin shell around ``Broker``),
``moldau fault`` (see ``broker.fault_cli``) and ``moldau scram`` (``broker.scram_cli``).

Exit codes: 0 after a clean stop (SIGINT/SIGTERM; a second signal while stopping is logged and
ignored, so it can never kill a clean shutdown), 2 for bad usage, bad settings or an unusable data
directory, 1 when the listen address cannot be bound. Errors are one line on stderr, never a traceback.
Imports beyond argparse happen inside ``serve`` so ``--version`` and ``--help`` stay instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from broker import __version__, fault_cli, scram_cli

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
SERVE_SWITCH_INTERVAL_S = 0.0005
# Buffers from this size are mapped on their own and returned to the system when freed (glibc's mallopt
# M_MMAP_THRESHOLD, parameter -3). glibc's default threshold rises to the largest buffer freed (up to 32
# MiB), after which large fetch reads and request frames come from per-thread arenas that keep the
# memory: a file broker serving large fetches stayed at about 265 MiB instead of its 38.
SERVE_MMAP_THRESHOLD_BYTES = 1 << 20
_M_MMAP_THRESHOLD = -3

_LEVELS = ("debug", "info", "warning", "error")


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter with the terminal width found without shutil: argparse builds a formatter
    for every argument it is given, and shutil (with bz2 and lzma) would add 0.6 MB to every broker."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position, _terminal_columns() - 2 if width is None else width)


def _terminal_columns() -> int:
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return 80


class _Parser(argparse.ArgumentParser):
    """The parser of ``moldau`` and its subcommands (argparse makes subparsers of the parent's class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


COMMANDS = ("serve", "fault", "scram")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``moldau`` parser; with ``command``, one with only that command, which is all `main` needs
    once the command line starts with it (the fault and scram parsers cost ``serve`` milliseconds)."""
    parser = _Parser(
        prog="moldau", description="Moldau: a Kafka-wire-compatible broker in Python.")
    parser.add_argument("--version", action="version", version=f"moldau {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    if command in (None, "serve"):
        _add_serve(commands)
    if command in (None, "fault"):
        fault_cli.add_parser(commands)
    if command in (None, "scram"):
        scram_cli.add_parser(commands)
    return parser


def _add_serve(commands: Any) -> None:
    serve = commands.add_parser(
        "serve", help="run a broker", description="Run a broker until SIGINT or SIGTERM.",
        epilog="Settings use Kafka's names (num.partitions, socket.request.max.bytes, ...). Precedence, "
               "lowest first: defaults, --config FILE, MOLDAU_<NAME> environment variables (dots as "
               "underscores, e.g. MOLDAU_NUM_PARTITIONS), --set, then the dedicated flags.")
    serve.add_argument("--listen", metavar="HOST:PORT",
                       help="address to listen on (default localhost:9092; port 0 picks a free port)")
    serve.add_argument("--advertised", metavar="HOST:PORT",
                       help="address given to clients (default: the listen host and bound port; the "
                            "machine's hostname when listening on 0.0.0.0)")
    serve.add_argument("--data-dir", metavar="PATH",
                       help="data directory (default $XDG_DATA_HOME/moldau or ~/.local/share/moldau)")
    where = serve.add_mutually_exclusive_group()
    where.add_argument("--memory", action="store_true",
                       help="keep everything in memory; nothing is written to disk")
    where.add_argument("--storage", metavar="URL",
                       help="storage engine (storage.url): file:///PATH, memory://, or "
                            "postgresql://USER:PASSWORD@HOST:PORT/DATABASE, which brokers share as a cluster")
    # No argparse choices for these two: their homes (broker.profiles, broker.version_profiles) import
    # the settings registry, which --help and --version should not pay for; the config checks them.
    serve.add_argument("--profile", default=None, metavar="NAME",
                       help="setting profile: dev (the default; Kafka's shipped server.properties, e.g. "
                            "group.initial.rebalance.delay.ms=0), ci (test brokers: in memory, small "
                            "segments, 1 s sessions allowed, fault control on; prints the bootstrap "
                            "address on stdout) or kafka (Kafka's code defaults)")
    serve.add_argument("--kafka-version", default=None, metavar="VERSION",
                       help="advertise the API versions this Apache Kafka release offered (kafka.version)")
    serve.add_argument("--add-scram", dest="add_scram", action="append", default=[], metavar="CREDENTIAL",
                       help="add a SCRAM user at start, in kafka-storage format's syntax: "
                            "'SCRAM-SHA-256=[name=alice,password=alice-secret]' (repeatable; stored in the "
                            "data directory, replacing that user's credential for the mechanism)")
    serve.add_argument("--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
                       help="set a broker setting by its Kafka name (repeatable)")
    serve.add_argument("--config", metavar="FILE", help="a Kafka-style .properties file")
    serve.add_argument("--log-level", choices=_LEVELS, default="info", help="(default info)")
    serve.add_argument("--log-format", choices=("console", "json"), default=None,
                       help="(default console when stderr is a terminal, json otherwise)")


def _fix_mmap_threshold() -> None:
    """Set SERVE_MMAP_THRESHOLD_BYTES on glibc, unless the user chose one (MALLOC_MMAP_THRESHOLD_)."""
    import platform

    if platform.libc_ver()[0] != "glibc" or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    import ctypes

    try:
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, SERVE_MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        pass  # not the C library we know: its own defaults stay


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(arguments[0] if arguments and arguments[0] in COMMANDS else None)
    args = parser.parse_args(arguments)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.command == "serve":
        return _serve(args)
    if args.command == "fault":
        return fault_cli.run(args)
    if args.command == "scram":
        return scram_cli.run(args)
    raise AssertionError(args.command)


def _fail(message: str, code: int) -> int:
    print(f"moldau: error: {message}", file=sys.stderr, flush=True)
    return code


def config_from_args(args: argparse.Namespace, environ: Any = None) -> Any:
    """The BrokerConfig the ``serve`` flags describe (raises ConfigError)."""
    from broker.config import MEMORY_STORAGE_URL, load_config, parse_assignments
    from broker.profiles import DEFAULT_PROFILE, profile_settings

    overrides: dict[str, Any] = parse_assignments(args.settings)
    if args.kafka_version is not None:
        overrides["kafka.version"] = args.kafka_version
    if args.listen is not None:
        overrides["listeners"] = args.listen
    if args.advertised is not None:
        overrides["advertised.listeners"] = args.advertised
    if args.data_dir is not None:
        overrides["log.dirs"] = args.data_dir
    if args.storage is not None:
        overrides["storage.url"] = args.storage
    if args.memory:
        overrides["storage.url"] = MEMORY_STORAGE_URL
    name = DEFAULT_PROFILE if args.profile is None else args.profile
    profile = (name, profile_settings(name))
    config = load_config(config_file=args.config, environ=os.environ if environ is None else environ,
                         overrides=overrides, profile=profile)
    if args.add_scram:
        import dataclasses

        from broker.config import ConfigError
        from broker.security.scram_credentials import parse_add_scram

        for text in args.add_scram:
            try:
                parse_add_scram(text)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        config = dataclasses.replace(config, add_scram=tuple(args.add_scram))
    return config


def _serve(args: argparse.Namespace) -> int:
    from broker.config import ConfigError

    try:
        config = config_from_args(args)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)

    from storage.interface import is_postgres_url

    if config.storage_url is None or not is_postgres_url(config.storage_url):
        _import_without_openssl()
    from broker.log import configure_logging

    configure_logging(args.log_level, args.log_format)

    import asyncio
    import sys

    # Worker threads (batch validation, decompression) hand the GIL back to the event loop after at most
    # this long instead of CPython's 5 ms, which would otherwise add up to 5 ms to every other client's
    # latency while a large batch is checked. Set for the process `moldau serve` owns, not for embedders.
    sys.setswitchinterval(SERVE_SWITCH_INTERVAL_S)
    _fix_mmap_threshold()
    signals = StopSignals()
    # Installed for the rest of the process (not with loop.add_signal_handler, which asyncio removes
    # when the loop closes): a signal arriving while the process exits must not kill it.
    signals.install()
    try:
        from broker.profiles import DEFAULT_PROFILE, PRINTS_BOOTSTRAP

        prints = (DEFAULT_PROFILE if args.profile is None else args.profile) in PRINTS_BOOTSTRAP
        return asyncio.run(_run(config, signals, print_bootstrap=prints))
    finally:
        # From here the process only exits; the interpreter's shutdown resets Python-level handlers to
        # the default (a late signal would kill it), but keeps an ignored signal ignored.
        signals.ignore()


# Modules whose import would load OpenSSL only for features `moldau serve` without TLS never uses.
_OPENSSL_FREE_IMPORTS = ("asyncio", "construct")
_OPENSSL_MODULES = ("ssl", "_hashlib")


def _import_without_openssl() -> None:
    """Import asyncio and construct as on a Python without OpenSSL, for the process ``moldau serve`` owns.

    Loading OpenSSL costs about 3.5 MB of memory and some milliseconds of start-up, and neither module
    needs it here: asyncio imports ssl only for its own TLS transports (the broker does its TLS itself, in
    broker.security.tls, which imports ssl when a listener needs it; the PostgreSQL driver, which does use
    asyncio's TLS, has its storage URLs skip this), and construct imports hashlib only for checksum fields
    the codec does not use. asyncio supports running without ssl and says so if asked for TLS. The
    hashlib that construct got is dropped from the module cache, so the next `import hashlib` (SCRAM,
    cluster leadership) gets one backed by OpenSSL."""
    if any(name in sys.modules for name in (*_OPENSSL_FREE_IMPORTS, *_OPENSSL_MODULES, "hashlib")):
        return
    for name in _OPENSSL_MODULES:
        sys.modules[name] = None  # type: ignore[assignment]  # `import` raises ImportError meanwhile
    try:
        for name in _OPENSSL_FREE_IMPORTS:
            __import__(name)
    finally:
        for name in (*_OPENSSL_MODULES, "hashlib"):
            sys.modules.pop(name, None)


class StopSignals:
    """SIGINT and SIGTERM for ``serve``: the first one asks the broker to stop; later ones, arriving
    while it shuts down or while the process exits, are logged (while the loop runs) and ignored."""

    def __init__(self) -> None:
        self.received = 0
        self._loop: Any = None
        self._stop: Any = None

    def install(self) -> None:
        import signal

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def ignore(self) -> None:
        import signal

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)

    def attach(self, loop: Any, stop: Any) -> None:
        """Signals from now on set ``stop`` on ``loop``; one that came before sets it at once."""
        self._loop, self._stop = loop, stop
        if self.received:
            stop.set()

    def _handle(self, signum: int, frame: Any) -> None:
        # Runs between bytecodes of the main thread: hand the work to the loop, never print from here.
        self.received += 1
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            if self.received == 1:
                loop.call_soon_threadsafe(self._stop.set)
            else:
                loop.call_soon_threadsafe(_log_ignored_signal, signum)
        except RuntimeError:
            pass  # the loop closed in between: the process is exiting anyway


def _log_ignored_signal(signum: int) -> None:
    import signal

    import structlog

    structlog.get_logger().info("signal.ignored", signal=signal.Signals(signum).name,
                                reason="already stopping")


# asyncio's message when accept() fails for want of descriptors or memory. It retries a second later, and
# every attempt logs once per connection waiting in the backlog: a flood while the condition lasts.
_ACCEPT_OUT_OF_RESOURCES = "socket.accept() out of system resource"


def _loop_exception(throttle: Any, loop: Any, context: dict[str, Any]) -> None:
    """The event loop's exception handler in ``moldau serve``: failed accepts are logged through the
    broker's log throttle (once per window, with a count), everything else as asyncio would."""
    if context.get("message") == _ACCEPT_OUT_OF_RESOURCES:
        exc = context.get("exception")
        throttle.error("listener.accept_failed", "-", reason=str(exc) if exc is not None else "unknown",
                       hint="the broker is out of file descriptors or memory: raise its descriptor limit "
                            "(ulimit -n) or bound connections with max.connections; accepting resumes by "
                            "itself once some are free")
        return
    loop.default_exception_handler(context)


async def _run(config: Any, signals: StopSignals, *, print_bootstrap: bool = False) -> int:
    import asyncio
    import functools

    import structlog

    from broker.config import ConfigError, format_address
    from broker.server import Broker

    log = structlog.get_logger()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals.attach(loop, stop)

    broker = Broker(config)
    loop.set_exception_handler(functools.partial(_loop_exception, broker.log_throttle))
    try:
        await broker.start()
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except OSError as exc:
        where = format_address(config.listen_host, config.listen_port)
        return _fail(f"cannot listen on {where}: {exc.strerror or exc}", EXIT_RUNTIME)
    if print_bootstrap:
        # One line on stdout, after the listener is open: `read` in a script waits exactly until then.
        print(broker.bootstrap_servers, flush=True)
    try:
        await stop.wait()
        log.info("stopping", reason="signal")
    finally:
        await broker.stop()
    return EXIT_OK
