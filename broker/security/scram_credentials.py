"""SCRAM credentials (RFC 5802 / RFC 7677): the salted keys a broker keeps instead of passwords, the store
that persists them as one JSON file, and the ``--add-scram`` syntax of Kafka's ``kafka-storage format``.

The store never holds a plain password: only the salt, the iteration count, StoredKey and ServerKey, which
is all a SCRAM server needs. No message, repr or log line produced here contains a password or a key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.documents import Document, as_document

SCRAM_MECHANISMS: dict[str, str] = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
MIN_ITERATIONS = 4096
MAX_ITERATIONS = 16384
DEFAULT_SALT_BYTES = 32
_STORE_VERSION = 1


def hash_name(mechanism: str) -> str:
    """The hashlib name behind a SCRAM mechanism; ValueError (listing the choices) for any other."""
    try:
        return SCRAM_MECHANISMS[mechanism]
    except KeyError:
        raise ValueError(f"unknown SCRAM mechanism; choose one of {', '.join(SCRAM_MECHANISMS)}") from None


def digest_size(mechanism: str) -> int:
    return hashlib.new(hash_name(mechanism)).digest_size


def salted_password(mechanism: str, password: str, salt: bytes, iterations: int) -> bytes:
    """RFC 5802's Hi(password, salt, i): PBKDF2-HMAC with one output block. Like Kafka, the password is
    used as UTF-8 without SASLprep."""
    return hashlib.pbkdf2_hmac(hash_name(mechanism), password.encode("utf-8"), salt, iterations)


def iterations_problem(iterations: int) -> str | None:
    """Kafka's AlterUserScramCredentials verdict on an iteration count (None when acceptable)."""
    if iterations < MIN_ITERATIONS:
        return "Too few iterations"
    if iterations > MAX_ITERATIONS:
        return "Too many iterations"
    return None


@dataclass(frozen=True, repr=False)
class ScramCredential:
    """What the server keeps for one user and mechanism. StoredKey = H(ClientKey) lets it check a proof
    without being able to produce one; ServerKey signs its final message."""

    mechanism: str
    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int

    def __post_init__(self) -> None:
        size = digest_size(self.mechanism)
        if not isinstance(self.iterations, int) or isinstance(self.iterations, bool) or self.iterations < 1:
            raise ValueError("SCRAM iterations must be a positive integer")
        if not self.salt:
            raise ValueError("SCRAM salt must not be empty")
        if len(self.stored_key) != size or len(self.server_key) != size:
            raise ValueError(f"SCRAM keys for {self.mechanism} must be {size} bytes")

    @classmethod
    def from_password(
        cls, mechanism: str, password: str, *, salt: bytes | None = None, iterations: int = MIN_ITERATIONS
    ) -> ScramCredential:
        if salt is None:
            salt = secrets.token_bytes(DEFAULT_SALT_BYTES)
        if iterations < 1:
            raise ValueError("SCRAM iterations must be a positive integer")
        return cls.from_salted_password(mechanism, salted_password(mechanism, password, salt, iterations),
                                        salt, iterations)

    @classmethod
    def from_salted_password(
        cls, mechanism: str, salted_password: bytes, salt: bytes, iterations: int
    ) -> ScramCredential:
        """From Hi(password, salt, i), which is what AlterUserScramCredentials carries."""
        algorithm = hash_name(mechanism)
        if len(salted_password) != digest_size(mechanism):
            raise ValueError(f"a salted password for {mechanism} must be {digest_size(mechanism)} bytes")
        client_key = hmac.digest(salted_password, b"Client Key", algorithm)
        server_key = hmac.digest(salted_password, b"Server Key", algorithm)
        return cls(mechanism, bytes(salt), hashlib.new(algorithm, client_key).digest(), server_key, iterations)

    def __repr__(self) -> str:
        return f"ScramCredential(mechanism={self.mechanism!r}, iterations={self.iterations}, keys=<hidden>)"

    def to_json(self) -> dict[str, Any]:
        b64 = base64.b64encode
        return {"salt": b64(self.salt).decode(), "stored_key": b64(self.stored_key).decode(),
                "server_key": b64(self.server_key).decode(), "iterations": self.iterations}

    @classmethod
    def from_json(cls, mechanism: str, data: Any) -> ScramCredential:
        try:
            salt, stored, server = (_b64decode(data[k]) for k in ("salt", "stored_key", "server_key"))
            iterations = data["iterations"]
        except (KeyError, TypeError):
            raise ValueError("a credential must be an object with salt, stored_key, server_key and "
                             "iterations") from None
        return cls(mechanism, salt, stored, server, iterations)


def _b64decode(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("invalid base64") from None


class ScramCredentialStore:
    """User name + mechanism -> credential; persisted as one JSON document (`broker.documents`: a file
    replaced atomically, or a row of a shared database), or in memory only when there is none."""

    def __init__(self, path: Path | Document | None) -> None:
        self.path = as_document(path)
        self._users: dict[str, dict[str, ScramCredential]] = {}
        # Changes may come from worker threads (blocking file writes); one lock keeps file and memory equal.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ScramCredentialStore(path={self.path!r}, users={len(self._users)})"

    def load(self) -> None:
        """Read the stored document if present. A corrupt one raises ValueError naming it: starting with no
        users would silently lock everyone out (or let an attacker-shortened file pass unnoticed)."""
        if self.path is None:
            return
        try:
            data = self.path.read()
            if data is None:
                return
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"SCRAM credential file {self.path} cannot be read: {e.__class__.__name__}") from None
        try:
            users = _parse_store(text)
        except (ValueError, RecursionError) as e:
            raise ValueError(f"SCRAM credential file {self.path} is corrupt: {e}") from None
        with self._lock:
            self._users = users

    def get(self, mechanism: str, user: str) -> ScramCredential | None:
        return self._users.get(user, {}).get(mechanism)

    def upsert(self, user: str, credential: ScramCredential) -> None:
        if not user:
            raise ValueError("a SCRAM user name must not be empty")
        with self._lock:
            users = {name: dict(creds) for name, creds in self._users.items()}
            users.setdefault(user, {})[credential.mechanism] = credential
            self._persist(users)
            self._users = users

    def delete(self, mechanism: str, user: str) -> bool:
        with self._lock:
            if mechanism not in self._users.get(user, {}):
                return False
            users = {name: dict(creds) for name, creds in self._users.items()}
            del users[user][mechanism]
            if not users[user]:
                del users[user]
            self._persist(users)
            self._users = users
            return True

    def describe(self, users: Iterable[str] | None = None) -> dict[str, list[tuple[str, int]]]:
        """user -> [(mechanism, iterations)], sorted by mechanism. Requested users without credentials are
        left out (Kafka answers those with RESOURCE_NOT_FOUND)."""
        snapshot = self._users
        names = sorted(snapshot) if users is None else users
        return {name: [(m, c.iterations) for m, c in sorted(snapshot[name].items())]
                for name in names if name in snapshot}

    def users(self) -> list[str]:
        return sorted(self._users)

    def _persist(self, users: dict[str, dict[str, ScramCredential]]) -> None:
        if self.path is None:
            return
        document = {"version": _STORE_VERSION,
                    "users": {name: {m: c.to_json() for m, c in sorted(creds.items())}
                              for name, creds in sorted(users.items())}}
        data = json.dumps(document, indent=2).encode("utf-8")
        self.path.write(data)


def _parse_store(text: str) -> dict[str, dict[str, ScramCredential]]:
    document = json.loads(text)
    if (not isinstance(document, dict) or document.get("version") != _STORE_VERSION
            or not isinstance(document.get("users"), dict)):
        raise ValueError(f"expected a JSON object with version {_STORE_VERSION} and a 'users' object")
    users: dict[str, dict[str, ScramCredential]] = {}
    for name, raw_creds in document["users"].items():
        if not name or not isinstance(raw_creds, dict):
            raise ValueError("each user must have a non-empty name and an object of credentials")
        creds: dict[str, ScramCredential] = {}
        for mechanism, raw in raw_creds.items():
            try:
                creds[mechanism] = ScramCredential.from_json(mechanism, raw)
            except ValueError as e:
                raise ValueError(f"user {name!r}: {e}") from None
        if creds:
            users[name] = creds
    return users


_ADD_SCRAM_KEYS = ("name", "password", "salt", "saltedpassword", "iterations")
_PRINTABLE_WORD = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def parse_add_scram(text: str) -> tuple[str, str, ScramCredential]:
    """``MECHANISM=[name=alice,password=alice-secret]`` (Kafka's ``kafka-storage format --add-scram``),
    optionally with ``iterations=N``, ``salt="<base64>"`` and ``saltedpassword="<base64>"`` in place of the
    password. Values may be double-quoted; a quoted value may contain commas. Returns (mechanism, user,
    credential). Error messages name keys, never values."""
    mechanism, sep, body = text.strip().partition("=")
    if not sep:
        raise ValueError("--add-scram expects MECHANISM=[name=...,password=...]")
    mechanism = mechanism.strip()
    if mechanism not in SCRAM_MECHANISMS:
        shown = f" {mechanism}" if _PRINTABLE_WORD.fullmatch(mechanism) else ""
        raise ValueError(f"the --add-scram mechanism{shown} is not supported; choose one of "
                         f"{', '.join(SCRAM_MECHANISMS)}")
    body = body.strip()
    if not (body.startswith("[") and body.endswith("]")):
        raise ValueError("--add-scram expects the configuration in brackets: MECHANISM=[key=value,...]")
    fields = _parse_add_scram_fields(body[1:-1])
    name = fields.get("name")
    if not name:
        raise ValueError("you must supply 'name' to --add-scram")
    password = fields.get("password")
    salted_b64 = fields.get("saltedpassword")
    if (password is None) == (salted_b64 is None):
        raise ValueError("you must supply exactly one of 'password' or 'saltedpassword' to --add-scram")
    iterations = MIN_ITERATIONS
    if "iterations" in fields:
        try:
            iterations = int(fields["iterations"])
        except ValueError:
            raise ValueError("--add-scram 'iterations' must be an integer") from None
        if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
            raise ValueError(f"--add-scram 'iterations' must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}, "
                             f"got {iterations}")
    salt = None
    if "salt" in fields:
        salt = _b64_field(fields["salt"], "salt")
        if not salt:
            raise ValueError("--add-scram 'salt' must not be empty")
    if password is not None:
        return mechanism, name, ScramCredential.from_password(mechanism, password, salt=salt, iterations=iterations)
    if salt is None:
        raise ValueError("you must supply 'salt' with 'saltedpassword' to --add-scram")
    salted = _b64_field(salted_b64 or "", "saltedpassword")
    return mechanism, name, ScramCredential.from_salted_password(mechanism, salted, salt, iterations)


def _b64_field(value: str, key: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"--add-scram '{key}' is not valid base64") from None


def _parse_add_scram_fields(body: str) -> dict[str, str]:
    """``key=value,key="value, with commas"`` -> {key: value}; unknown or repeated keys are errors."""
    fields: dict[str, str] = {}
    i = 0
    while i < len(body):
        eq = body.find("=", i)
        comma = body.find(",", i)
        if eq < 0 or 0 <= comma < eq:
            raise ValueError("--add-scram expects key=value pairs separated by commas")
        key = body[i:eq].strip()
        start = eq + 1
        if body.startswith('"', start):
            close = body.find('"', start + 1)
            if close < 0:
                raise ValueError(f"--add-scram has an unterminated quoted value for {_shown_key(key)}")
            value = body[start + 1:close]
            end = close + 1
            if end < len(body) and body[end] != ",":
                raise ValueError(f"--add-scram has text after the quoted value of {_shown_key(key)}")
        else:
            end = body.find(",", start)
            end = len(body) if end < 0 else end
            value = body[start:end]
        if key not in _ADD_SCRAM_KEYS:
            raise ValueError(f"--add-scram does not know {_shown_key(key)}; the keys are {', '.join(_ADD_SCRAM_KEYS)}")
        if key in fields:
            raise ValueError(f"--add-scram has {_shown_key(key)} more than once")
        fields[key] = value
        i = end + 1
    return fields


def _shown_key(key: str) -> str:
    # A mistyped line may put a secret where a key belongs: echo only what looks like a key.
    return f"'{key}'" if re.fullmatch(r"[A-Za-z]{1,32}", key) else "a key"
