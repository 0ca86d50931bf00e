"""TLS for SSL and SASL_SSL listeners, with the standard library's ``ssl``.

``build_server_context`` makes a listener's context from Kafka's PEM settings (TLS 1.2 at least, client
certificates as ``ssl.client.auth`` says). ``ReloadingContext`` hands out the current context and
rebuilds it when the key store or trust store file changes (checked at most once a second, on new
connections), so a renewed certificate is served without a restart; a file that does not load keeps the
old context and is logged.

``TlsSession`` is one connection's TLS engine over memory buffers: ciphertext in, plaintext out and the
reverse. The connection owns the socket and feeds it, which keeps the handshake in its hands: a failed
handshake is logged there, once, with the peer's address, and the client certificate's subject becomes
the principal as soon as the handshake ends (``broker/security/principal.py``).
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from broker.config import ConfigError

log = structlog.get_logger()

CLIENT_AUTH_MODES = {"none": ssl.CERT_NONE, "requested": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
TLS_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
RELOAD_CHECK_INTERVAL_S = 1.0
# Responses smaller than a TLS record are joined before encryption: one record, not one per part.
_RECORD_BYTES = 16384
# One TLS record holds at most 16 KiB of plaintext and a read returns one record: a small buffer spares
# allocating (and, past the malloc mmap threshold, mapping) a large one per record.
_READ_BYTES = 1 << 15


@dataclass(frozen=True)
class TlsSettings:
    """One listener's TLS settings, resolved from the broker-wide and per-listener values."""

    listener: str
    keystore_location: Path
    key_password: str | None
    truststore_location: Path | None
    truststore_certificates: str | None
    client_auth: str
    enabled_protocols: tuple[str, ...]
    cipher_suites: str | None

    def __repr__(self) -> str:  # the key password stays out of logs and tracebacks
        return (f"TlsSettings(listener={self.listener!r}, keystore={str(self.keystore_location)!r}, "
                f"truststore={str(self.truststore_location)!r}, client_auth={self.client_auth!r})")

    def watched_files(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.keystore_location, self.truststore_location) if p is not None)


def build_server_context(settings: TlsSettings) -> ssl.SSLContext:
    """A server context from the settings; ConfigError names the file and what is wrong with it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    versions = sorted(TLS_VERSIONS[v] for v in settings.enabled_protocols)
    ctx.minimum_version = versions[0]
    ctx.maximum_version = versions[-1]
    # Renegotiation is an old way to stall a server; Kafka's clients never ask for it.
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    if settings.cipher_suites:
        try:
            ctx.set_ciphers(settings.cipher_suites.replace(",", ":"))
        except ssl.SSLError:
            raise ConfigError(f"listener {settings.listener}: ssl.cipher.suites names no cipher OpenSSL "
                              f"knows: {settings.cipher_suites!r}") from None
    try:
        ctx.load_cert_chain(settings.keystore_location, password=settings.key_password or None)
    except FileNotFoundError:
        raise ConfigError(f"listener {settings.listener}: ssl.keystore.location {str(settings.keystore_location)!r}"
                          f" does not exist") from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"listener {settings.listener}: cannot load the private key and certificate chain from "
                          f"ssl.keystore.location {str(settings.keystore_location)!r} (one PEM file holding "
                          f"both; an encrypted key needs ssl.key.password): {failure_reason(exc)}") from None
    ctx.verify_mode = CLIENT_AUTH_MODES[settings.client_auth]
    if settings.truststore_location is not None:
        try:
            ctx.load_verify_locations(cafile=settings.truststore_location)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"listener {settings.listener}: cannot load CA certificates from "
                              f"ssl.truststore.location {str(settings.truststore_location)!r}: "
                              f"{failure_reason(exc)}") from None
    if settings.truststore_certificates:
        try:
            ctx.load_verify_locations(cadata=settings.truststore_certificates)
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"listener {settings.listener}: ssl.truststore.certificates is not PEM "
                              f"certificates: {failure_reason(exc)}") from None
    if ctx.verify_mode != ssl.CERT_NONE and settings.truststore_location is None \
            and not settings.truststore_certificates:
        raise ConfigError(f"listener {settings.listener}: ssl.client.auth={settings.client_auth} needs a trust "
                          f"store to check client certificates against (ssl.truststore.location)")
    return ctx


def failure_reason(exc: BaseException) -> str:
    """A one-line reason for an ``ssl`` or file error (OpenSSL's reason code when there is one), for a
    message or a log line without a traceback."""
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None)
    return str(reason or exc) or type(exc).__name__


class ReloadingContext:
    """A listener's current server context, rebuilt when its files change."""

    def __init__(self, settings: TlsSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._context = build_server_context(settings)
        self._stamps = self._file_stamps()
        self._checked = clock()
        self.reloads = 0

    def current(self) -> ssl.SSLContext:
        now = self._clock()
        if now - self._checked >= RELOAD_CHECK_INTERVAL_S:
            self._checked = now
            self.reload_if_changed()
        return self._context

    def reload_if_changed(self) -> bool:
        """Rebuild the context if a watched file changed; True when a new one is in use."""
        stamps = self._file_stamps()
        if stamps == self._stamps:
            return False
        try:
            context = build_server_context(self.settings)
        except ConfigError as exc:
            # Mid-rotation files (a key without its new certificate yet) are normal: keep serving the old
            # ones and try again at the next check; the stamp is kept so an unchanged bad file logs once.
            self._stamps = stamps
            log.error("tls.reload_failed", listener=self.settings.listener, reason=str(exc))
            return False
        self._context = context
        self._stamps = stamps
        self.reloads += 1
        log.info("tls.reloaded", listener=self.settings.listener,
                 files=[str(p) for p in self.settings.watched_files()])
        return True

    def _file_stamps(self) -> tuple[tuple[int, int, int] | None, ...]:
        stamps: list[tuple[int, int, int] | None] = []
        for path in self.settings.watched_files():
            try:
                st = os.stat(path)
            except OSError:
                stamps.append(None)
            else:
                stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(stamps)


class TlsSession:
    """One server-side TLS connection over memory buffers (no socket)."""

    __slots__ = ("_in", "_obj", "_out", "handshake_done", "peer_closed")

    def __init__(self, context: ssl.SSLContext) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_side=True)
        self.handshake_done = False
        self.peer_closed = False

    def receive(self, data: bytes) -> bytes:
        """Take ciphertext from the peer; return the plaintext it completes (often b""). Raises
        ``ssl.SSLError`` for a failed handshake or a corrupt record. Call ``take_output`` afterwards:
        the handshake and TLS 1.3 tickets produce bytes to send."""
        self._in.write(data)
        obj = self._obj
        if not self.handshake_done:
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                return b""
            self.handshake_done = True
        chunks: list[bytes] = []
        while True:
            try:
                chunk = obj.read(_READ_BYTES)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.peer_closed = True
                break
            if not chunk:  # the peer's close_notify: ssl reports a clean close as an empty read
                self.peer_closed = True
                break
            chunks.append(chunk)
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)

    def encrypt(self, parts: Iterable[Any]) -> bytes:
        """The ciphertext of ``parts`` (bytes-like), in order."""
        obj = self._obj
        small: list[Any] = []
        small_bytes = 0
        for part in parts:
            size = len(part)
            if size < _RECORD_BYTES:
                small.append(part)
                small_bytes += size
                if small_bytes < _RECORD_BYTES:
                    continue
            if small:
                obj.write(b"".join(small))
                small, small_bytes = [], 0
            if size >= _RECORD_BYTES:
                obj.write(part)
        if small:
            obj.write(b"".join(small))
        return self._out.read()

    def take_output(self) -> bytes:
        """Bytes the TLS layer itself needs sent (handshake messages, alerts, close_notify)."""
        return self._out.read() if self._out.pending else b""

    def close_notify(self) -> bytes:
        """The close_notify alert, to send before closing the socket (b"" if it cannot be made)."""
        if not self.handshake_done:
            return b""
        try:
            self._obj.unwrap()
        except (ssl.SSLError, ValueError):
            pass  # SSLWantReadError: the alert is written; the peer's answer is not awaited
        return self.take_output()

    def peer_certificate(self) -> dict[str, Any] | None:
        """The client's verified certificate as ``ssl`` decodes it, or None when it sent none."""
        cert = self._obj.getpeercert()
        return cert or None

    @property
    def version(self) -> str | None:
        return self._obj.version()

    @property
    def cipher(self) -> str | None:
        cipher = self._obj.cipher()
        return cipher[0] if cipher else None
