"""``moldau scram``: list, set and delete a running broker's SCRAM users over the Kafka protocol
(DescribeUserScramCredentials and AlterUserScramCredentials v0, KIP-554), as Kafka's ``kafka-configs
--entity-type users`` does it.

    moldau scram list [USER...]
    moldau scram set alice --mechanism SCRAM-SHA-512 [--iterations 8192] [--password-file FILE]
    moldau scram delete alice --mechanism SCRAM-SHA-512

Each takes ``--bootstrap HOST:PORT`` (default localhost:9092; a PLAINTEXT listener) and ``--timeout``. The
password never goes on the command line, where ``ps`` and shell history would show it: ``set`` reads the
first line of ``--password-file`` (``-`` for stdin), else a line of stdin when stdin is not a terminal,
else asks twice without echo. The salt (32 random bytes) and Hi(password, salt, iterations) are computed
here, so the password never leaves this machine; the broker keeps only keys derived from them.
``--iterations`` defaults to 4096, as ``kafka-configs`` does; Kafka accepts 4096 to 16384.

Output is a table or one line for people, JSON with ``--json``. Exit codes: 0 done; 1 the broker could not
be reached, does not serve these APIs, or refused (a user without credentials, CLUSTER_AUTHORIZATION_FAILED,
...); 2 bad usage. ``add_parser`` adds the subcommand to ``moldau``'s parser and ``run`` executes it; nothing
beyond argparse (and the connection options shared with ``moldau fault``) is imported until ``run``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import IO, Any, Self

from broker.fault_cli import connection_options

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
DEFAULT_ITERATIONS = 4096  # kafka-configs' default for a SCRAM credential
MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
CLIENT_ID = "moldau-scram"

API_VERSIONS, DESCRIBE_USER_SCRAM_CREDENTIALS, ALTER_USER_SCRAM_CREDENTIALS = 18, 50, 51
_API_NAMES = {DESCRIBE_USER_SCRAM_CREDENTIALS: "DescribeUserScramCredentials",
              ALTER_USER_SCRAM_CREDENTIALS: "AlterUserScramCredentials"}
# A describe of every user of a big cluster stays far below this; a larger frame is not a Kafka answer.
_MAX_RESPONSE_BYTES = 64 << 20


class Refused(Exception):
    """The broker could not be used or said no: exit code 1."""


def _mechanism(text: str) -> str:
    name = text.strip().upper()
    if name not in MECHANISMS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(MECHANISMS)}")
    return name


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``scram`` to ``moldau``'s subcommands (an ``add_subparsers`` result); returns its parser."""
    scram = commands.add_parser(
        "scram", help="list, set and delete the SCRAM users of a running broker",
        description="List, set and delete the SCRAM-SHA-256 and SCRAM-SHA-512 credentials of a running "
                    "broker through a PLAINTEXT listener (DescribeUserScramCredentials, "
                    "AlterUserScramCredentials).",
        epilog="The password is read from --password-file, from stdin, or asked for; never from the command "
               "line. It is salted and hashed here and never sent.")
    connection_options(scram, with_defaults=True)  # --bootstrap, --json, --timeout, as moldau fault has them
    scram.set_defaults(scram_parser=scram)
    actions = scram.add_subparsers(dest="scram_action", metavar="ACTION")
    shared = type(scram)(add_help=False)  # moldau's parser class, whatever it is
    connection_options(shared, with_defaults=False)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, parents=[shared], help=help_text,
                                 description=help_text[0].upper() + help_text[1:] + ".")
        sub.set_defaults(scram_parser=sub)
        return sub

    listing = action("list", "list users and their mechanisms and iteration counts (default every user)")
    listing.add_argument("users", nargs="*", metavar="USER")

    setting = action("set", "create or replace a user's credential for one mechanism")
    setting.add_argument("user", metavar="USER")
    setting.add_argument("--mechanism", required=True, type=_mechanism, metavar="MECHANISM",
                         help=f"one of {', '.join(MECHANISMS)}")
    setting.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS, metavar="N",
                         help=f"PBKDF2 iterations (default {DEFAULT_ITERATIONS}; Kafka accepts 4096-16384)")
    setting.add_argument("--password-file", metavar="FILE",
                         help="read the password from the first line of FILE ('-': stdin)")

    deleting = action("delete", "delete a user's credential for one mechanism")
    deleting.add_argument("user", metavar="USER")
    deleting.add_argument("--mechanism", required=True, type=_mechanism, metavar="MECHANISM",
                          help=f"one of {', '.join(MECHANISMS)}")
    return scram


def run(args: argparse.Namespace, *, stdin: IO[str] | None = None) -> int:
    """Execute ``moldau scram ...``; the exit code. ``stdin`` replaces sys.stdin (tests)."""
    if getattr(args, "scram_action", None) is None:
        args.scram_parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return _run(args, sys.stdin if stdin is None else stdin)
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except (Refused, OSError) as exc:
        return _fail(str(exc), EXIT_RUNTIME)


def _run(args: argparse.Namespace, stdin: IO[str]) -> int:
    from broker.config import ConfigError
    from broker.listeners import split_address

    first = args.bootstrap.split(",")[0].strip().rpartition("://")[2]
    try:
        host, port = split_address(first, "--bootstrap")
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    if args.timeout <= 0:
        raise ValueError("--timeout must be positive")
    if args.scram_action == "list":
        with ScramAdmin(host, port, args.timeout) as admin:
            return _list(admin, args)
    if not args.user:
        raise ValueError("the user name must not be empty")
    if args.scram_action == "set":
        from broker.security.scram_credentials import MAX_ITERATIONS, MIN_ITERATIONS, iterations_problem

        if iterations_problem(args.iterations) is not None:
            raise ValueError(f"--iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}, "
                             f"got {args.iterations}")
        # Read before connecting: a broker that is down is reported after the prompt, not half-way.
        password = read_password(args.user, args.password_file, stdin)
        with ScramAdmin(host, port, args.timeout) as admin:
            admin.upsert(args.user, args.mechanism, password, args.iterations)
        _print({"user": args.user, "mechanism": args.mechanism, "iterations": args.iterations} if args.json
               else f"set the {args.mechanism} credential of {args.user} ({args.iterations} iterations)")
        return EXIT_OK
    with ScramAdmin(host, port, args.timeout) as admin:
        admin.delete(args.user, args.mechanism)
    _print({"user": args.user, "mechanism": args.mechanism, "deleted": True} if args.json
           else f"deleted the {args.mechanism} credential of {args.user}")
    return EXIT_OK


def _list(admin: ScramAdmin, args: argparse.Namespace) -> int:
    users = list(dict.fromkeys(args.users))  # a name given twice would be DUPLICATE_RESOURCE
    found, missing = admin.describe(users)
    if args.json:
        _print({"users": {user: [{"mechanism": m, "iterations": i} for m, i in creds]
                          for user, creds in found.items()}, "missing": missing})
    else:
        _print(format_table(found) if found or not missing else "")
    for user in missing:
        print(f"moldau scram: error: {user} has no SCRAM credentials", file=sys.stderr, flush=True)
    return EXIT_RUNTIME if missing else EXIT_OK


def read_password(user: str, password_file: str | None, stdin: IO[str]) -> str:
    """The password for ``user``: the first line of ``password_file`` ('-': stdin), else a line of stdin
    when it is not a terminal, else asked twice with getpass. ValueError when empty or unreadable; no
    message contains the password."""
    if password_file == "-" or (password_file is None and not stdin.isatty()):
        line = stdin.readline()
    elif password_file is not None:
        try:
            with open(password_file, encoding="utf-8") as f:
                line = f.readline()
        except OSError as exc:
            raise ValueError(f"cannot read the password file {password_file}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ValueError(f"the password file {password_file} is not UTF-8 text") from None
    else:
        import getpass

        line = getpass.getpass(f"Password for {user}: ")
        if getpass.getpass("Password again: ") != line:
            raise ValueError("the two passwords differ")
    password = line.rstrip("\r\n")
    if not password:
        raise ValueError("the password is empty")
    return password


class ScramAdmin:
    """One PLAINTEXT connection to a broker for the two SCRAM admin APIs; a context manager. Broker errors
    raise ``Refused``; network errors raise OSError subclasses."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        import socket

        from broker.config import format_address

        self.address = format_address(host, port)
        self.timeout = timeout
        self._correlation = 0
        try:
            self._sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise Refused(f"cannot reach the broker at {self.address}: {exc.strerror or exc}") from None
        self._reader = self._sock.makefile("rb")
        try:
            self._check_versions()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._reader.close()
        self._sock.close()

    def _check_versions(self) -> None:
        from protocol import messages

        answer = self._call(API_VERSIONS, 0, messages.ApiVersionsRequest())
        if answer.error_code:
            raise Refused(f"the broker at {self.address} refused ApiVersions v0 (error {answer.error_code})")
        served = {k.api_key: (k.min_version, k.max_version) for k in answer.api_keys}
        for key, name in _API_NAMES.items():
            lo, hi = served.get(key, (1, 0))
            if not lo <= 0 <= hi:
                raise Refused(f"the broker at {self.address} does not serve {name} v0")

    def _call(self, api_key: int, version: int, body: Any) -> Any:
        import struct

        from protocol import codec

        self._correlation += 1
        corr = self._correlation
        frame = b"".join(bytes(p) for p in codec.encode_request(api_key, version, corr, CLIENT_ID, body))
        try:
            self._sock.sendall(frame)
            (size,) = struct.unpack(">i", self._recv(4))
            if not 0 <= size <= _MAX_RESPONSE_BYTES:
                raise Refused(f"the broker at {self.address} sent a response frame of {size} bytes")
            data = self._recv(size)
        except TimeoutError:
            raise Refused(f"the broker at {self.address} did not answer within {self.timeout:g} s") from None
        except (ConnectionError, EOFError):
            raise Refused(f"the broker at {self.address} closed the connection; moldau scram needs a PLAINTEXT "
                          f"listener (not SSL or SASL)") from None
        try:
            header, response = codec.decode_response(api_key, version, data)
        except codec.DecodeError:
            raise Refused(f"the broker at {self.address} sent an answer that is not Kafka's; moldau scram "
                          f"needs a PLAINTEXT listener") from None
        if header.correlation_id != corr:
            raise Refused(f"the broker at {self.address} answered correlation id {header.correlation_id}, "
                          f"expected {corr}")
        return response

    def _recv(self, n: int) -> bytes:
        data = self._reader.read(n)  # a buffered read returns short only at the end of the stream
        if len(data) < n:
            raise EOFError
        return data

    def describe(self, users: list[str]) -> tuple[dict[str, list[tuple[str, int]]], list[str]]:
        """({user: [(mechanism, iterations)]}, users without credentials) for ``users`` (empty: every
        user)."""
        from broker.handlers.scram import MECHANISM_BY_CODE
        from protocol import messages
        from protocol.errors import ErrorCode

        request = messages.DescribeUserScramCredentialsRequest
        answer = self._call(DESCRIBE_USER_SCRAM_CREDENTIALS, 0, request(
            users=[request.UserName(name=u) for u in users] if users else None))
        if answer.error_code:
            raise Refused(_error("describing SCRAM users", answer.error_code, answer.error_message))
        found: dict[str, list[tuple[str, int]]] = {}
        missing: list[str] = []
        for result in answer.results:
            if result.error_code == ErrorCode.RESOURCE_NOT_FOUND:
                missing.append(result.user)
            elif result.error_code:
                raise Refused(_error(f"describing {result.user}", result.error_code, result.error_message))
            else:
                found[result.user] = [(MECHANISM_BY_CODE.get(c.mechanism, f"UNKNOWN({c.mechanism})"), c.iterations)
                                      for c in result.credential_infos]
        return found, missing

    def upsert(self, user: str, mechanism: str, password: str, iterations: int) -> None:
        """Create or replace ``user``'s credential: the salt and salted password are made here."""
        import secrets

        from broker.handlers.scram import SCRAM_MECHANISM_CODES
        from broker.security.scram_credentials import DEFAULT_SALT_BYTES, salted_password
        from protocol import messages

        request = messages.AlterUserScramCredentialsRequest
        salt = secrets.token_bytes(DEFAULT_SALT_BYTES)
        upsertion = request.ScramCredentialUpsertion(
            name=user, mechanism=SCRAM_MECHANISM_CODES[mechanism], iterations=iterations, salt=salt,
            salted_password=salted_password(mechanism, password, salt, iterations))
        self._alter(request(deletions=[], upsertions=[upsertion]), f"setting the {mechanism} credential of {user}")

    def delete(self, user: str, mechanism: str) -> None:
        from broker.handlers.scram import SCRAM_MECHANISM_CODES
        from protocol import messages

        request = messages.AlterUserScramCredentialsRequest
        deletion = request.ScramCredentialDeletion(name=user, mechanism=SCRAM_MECHANISM_CODES[mechanism])
        self._alter(request(deletions=[deletion], upsertions=[]), f"deleting the {mechanism} credential of {user}")

    def _alter(self, body: Any, what: str) -> None:
        answer = self._call(ALTER_USER_SCRAM_CREDENTIALS, 0, body)
        if len(answer.results) != 1:
            raise Refused(f"{what}: the broker answered {len(answer.results)} results for one user")
        result = answer.results[0]
        if result.error_code:
            raise Refused(_error(what, result.error_code, result.error_message))


def _error(what: str, code: int, message: str | None) -> str:
    from protocol.errors import ErrorCode

    try:
        name = ErrorCode(code).name
    except ValueError:
        name = str(code)
    return f"{what}: {name}" + (f" ({message})" if message else "")


def _fail(message: str, code: int) -> int:
    print(f"moldau scram: error: {message}", file=sys.stderr, flush=True)
    return code


def _print(value: Any) -> None:
    if value == "":
        return
    print(value if isinstance(value, str) else json.dumps(value, indent=2), flush=True)


def format_table(users: dict[str, list[tuple[str, int]]]) -> str:
    """USER, MECHANISM and ITERATIONS columns, one row per credential."""
    if not users:
        return "no SCRAM users"
    width = max(len("USER"), *(len(user) for user in users))
    lines = [f"{'USER':<{width}}  {'MECHANISM':<13}  ITERATIONS"]
    lines += [f"{user:<{width}}  {mechanism:<13}  {iterations}"
              for user, creds in users.items() for mechanism, iterations in creds]
    return "\n".join(lines)
