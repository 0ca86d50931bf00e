"""A throwaway PostgreSQL server for tests: ``initdb`` and ``pg_ctl`` in a temporary directory, on a free
port of 127.0.0.1, stopped and removed afterwards.

The server binaries come from PATH or Debian's ``/usr/lib/postgresql/<version>/bin`` (the test command
installs the ``postgresql`` package when neither has them); when none is found, tests that need the
server fail saying so, they never skip. PostgreSQL refuses to run as root, so under root the server
runs as the ``postgres`` system user the Debian package creates. Every test takes a database of its own
(`PostgresServer.create_database`). The server trusts local connections and, being throwaway, trades
its own crash safety for speed (``fsync=off``): the tests kill brokers, never the database.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

START_TIMEOUT_S = 30
SUPERUSER = "postgres"


def find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return candidates[-1] if candidates else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One running throwaway server (see the module docstring)."""

    def __init__(self, *, durable: bool = False) -> None:
        """``durable`` keeps PostgreSQL's own crash safety (fsync): what benchmarks measure."""
        self._durable = durable
        initdb, pg_ctl = find_binary("initdb"), find_binary("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise RuntimeError("PostgreSQL's initdb and pg_ctl were not found (on PATH or in "
                               "/usr/lib/postgresql/*/bin): install the Debian package postgresql, as "
                               "./scripts/test.sh does")
        self._pg_ctl = pg_ctl
        self._as_user: list[str] = []
        self.directory = Path(tempfile.mkdtemp(prefix="moldau-pg-"))
        if os.geteuid() == 0:
            user = pwd.getpwnam(SUPERUSER)
            os.chown(self.directory, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", SUPERUSER, "--"]
        self.data = self.directory / "data"
        self.port = free_port()
        self._run([initdb, "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "--no-sync",
                   "-E", "UTF8", "--locale=C"])
        self.start()

    def _run(self, args: list[str]) -> None:
        result = subprocess.run(self._as_user + args, check=False, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")

    def start(self) -> None:
        """Start (or restart after `stop`) the server on its port."""
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
                   "-c max_connections=300")
        if not self._durable:
            options += " -c fsync=off -c full_page_writes=off"
        self._run([self._pg_ctl, "-D", str(self.data), "-l", str(self.directory / "server.log"),
                   "-o", options, "-w", "-t", str(START_TIMEOUT_S), "start"])

    def stop(self) -> None:
        self._run([self._pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its URL."""
        import asyncpg

        name = name or f"t_{uuid.uuid4().hex[:16]}"

        async def create() -> None:
            conn = await asyncpg.connect(self.url("postgres"))
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')  # a name made here, never client input
            finally:
                await conn.close()

        asyncio.run(create())
        return self.url(name)

    def close(self) -> None:
        try:
            self.stop()
        except RuntimeError:
            pass  # already stopped (a test stopped it) or never started
        shutil.rmtree(self.directory, ignore_errors=True)
