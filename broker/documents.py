"""Where the broker keeps its small JSON documents: SCRAM credentials, ACLs and client quotas.

A store (`broker.security.scram_credentials`, `broker.security.acl_store`, `broker.quotas`) reads and
writes its whole document through one of these:

- `FileDocument`: a private file in the data directory, replaced atomically (file storage);
- `SharedDocument`: a named row of the database brokers share (PostgreSQL storage), so that a credential,
  an ACL or a quota set through one broker holds on every broker. Its content is loaded when the broker
  starts and whenever another broker announces a change; writes go to the database before the store
  changes its memory, from a worker thread (stores write off the event loop, as they fsync files);
- none: memory only (memory storage).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, Protocol

from storage.file.fs import FileSystem, read_file, replace_file

# How long a write waits for the database before it fails (the store then keeps its old content).
SHARED_WRITE_TIMEOUT_S = 30.0


class Document(Protocol):
    def read(self) -> bytes | None:
        """The content, or None when there is none yet."""

    def write(self, data: bytes) -> None:
        """Replace the content durably (raises OSError when it cannot)."""


class FileDocument:
    """A private file, replaced atomically (write, fsync, rename, fsync the directory)."""

    def __init__(self, path: Path, fs: FileSystem | None = None) -> None:
        self.path = path
        self._fs = fs if fs is not None else FileSystem()

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"FileDocument({str(self.path)!r})"

    def read(self) -> bytes | None:
        try:
            return read_file(self._fs, str(self.path))
        except FileNotFoundError:
            return None

    def write(self, data: bytes) -> None:
        replace_file(self._fs, str(self.path), data, private=True)


class SharedDocument:
    """A document in the database every broker of a cluster shares (see the module docstring)."""

    def __init__(self, engine: Any, name: str, data: bytes | None) -> None:
        self.name = name
        self.data = data
        self._engine = engine
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    def __str__(self) -> str:
        return f"{self.name!r} in {self._engine.url}"

    def __repr__(self) -> str:
        return f"SharedDocument({self.name!r})"

    def read(self) -> bytes | None:
        return self.data

    def write(self, data: bytes) -> None:
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError(f"{self} is written from a worker thread, never from the event loop")
        future = asyncio.run_coroutine_threadsafe(self._engine.save_document(self.name, data), self._loop)
        try:
            future.result(SHARED_WRITE_TIMEOUT_S)
        except Exception as exc:
            future.cancel()
            raise OSError(f"{self} could not be written: {type(exc).__name__}: {exc}") from exc
        self.data = data


def as_document(where: Path | Document | None, fs: FileSystem | None = None) -> Document | None:
    """A store's document: a path means a `FileDocument`."""
    if isinstance(where, Path):
        return FileDocument(where, fs)
    return where
