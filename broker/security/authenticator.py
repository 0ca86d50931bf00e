"""SASL on a connection: which requests may come when, and the exchange of tokens (Kafka's
SaslServerAuthenticator).

A connection on a SASL listener starts unauthenticated. It may send ApiVersions and then SaslHandshake,
naming a mechanism the listener enables (else UNSUPPORTED_SASL_MECHANISM, and the connection closes).
After a v1 handshake the tokens come in SaslAuthenticate requests; after a v0 handshake they come as bare
size-prefixed frames and are answered the same way (``expects_raw_token``). Anything else before
authentication closes the connection.

A failed authentication is answered with SASL_AUTHENTICATION_FAILED and the mechanism's message, held back
``connection.failed.authentication.delay.ms`` (which makes guessing passwords slow), and the connection
then closes. A success makes the connection's principal ``User:<name>``.

Re-authentication (KIP-368): SaslAuthenticate v1+ tells the client how long its session lasts
(``connections.max.reauth.ms``, or sooner when an OAUTHBEARER token expires). Before it ends the client
sends SaslHandshake and SaslAuthenticate again on the same connection, with the same mechanism and user;
a connection that sends any other request after its session ended is closed.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from broker.handlers import API_VERSIONS, CloseConnection, RawFrame
from broker.security.principal import user_principal
from broker.security.sasl_mechanisms import AuthenticationFailed, SaslServer, create_server

if TYPE_CHECKING:
    from broker.handlers import ConnectionInfo
    from broker.log_throttle import LogThrottle
    from broker.security.listener_settings import SaslSettings
    from broker.security.oauth_tokens import OAuthBearerValidator
    from broker.security.scram_credentials import ScramCredentialStore

log = structlog.get_logger()

SASL_HANDSHAKE = 17
SASL_AUTHENTICATE = 36
# Connection states.
_EXPECT_HANDSHAKE = "handshake"
_EXPECT_AUTHENTICATE = "authenticate"  # after a v1 handshake: SaslAuthenticate requests
_EXPECT_RAW_TOKEN = "raw-token"  # after a v0 handshake: bare tokens
_AUTHENTICATED = "authenticated"
_FAILED = "failed"


class PlainUsersFile:
    """``sasl.plain.users.file``: name=password lines, re-read when the file changes."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._users: dict[str, str] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = -1.0
        self.refresh(force=True)

    def get(self, name: str) -> str | None:
        self.refresh()
        return self._users.get(name)

    def refresh(self, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._checked < 1.0:
            return
        self._checked = now
        from broker.config import ConfigError, read_properties_file

        try:
            st = os.stat(self.path)
        except OSError as exc:
            if force:
                raise ConfigError(f"sasl.plain.users.file {str(self.path)!r} cannot be read: "
                                  f"{exc.strerror or exc}") from None
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            users = read_properties_file(self.path)
        except (ConfigError, OSError) as exc:
            if force:
                raise
            log.error("sasl.plain_users_reload_failed", file=str(self.path), reason=str(exc))
            return
        self._users, self._stamp = users, stamp
        if not force:
            log.info("sasl.plain_users_reloaded", file=str(self.path), users=len(users))


class SaslListener:
    """One SASL listener's mechanisms and credentials; makes each connection's authenticator."""

    def __init__(self, settings: SaslSettings, scram_store: ScramCredentialStore,
                 oauth_validator: OAuthBearerValidator | None, throttle: LogThrottle,
                 failed_delay_ms: int, clock_ms: Callable[[], int] | None = None) -> None:
        self.settings = settings
        self.mechanisms = settings.mechanisms
        self._scram = scram_store
        self._oauth = oauth_validator
        self._users_file = PlainUsersFile(settings.plain_users_file) if settings.plain_users_file else None
        self.throttle = throttle
        self.failed_delay_s = failed_delay_ms / 1000
        self.clock_ms = clock_ms or (lambda: int(time.time() * 1000))

    def plain_password(self, name: str) -> str | None:
        password = self.settings.plain_users.get(name)
        if password is None and self._users_file is not None:
            password = self._users_file.get(name)
        return password

    def new_server(self, mechanism: str) -> SaslServer:
        return create_server(mechanism, plain_users=self.plain_password, scram_credentials=self._scram.get,
                             oauth_validator=self._oauth)

    def authenticator(self, info: ConnectionInfo) -> SaslAuthenticator:
        return SaslAuthenticator(self, info)


class SaslAuthenticator:
    """The SASL state of one connection."""

    __slots__ = ("_credential_expiry_ms", "_info", "_listener", "_mechanism", "_server", "_session_end_ms", "_state",
                 "_user")

    def __init__(self, listener: SaslListener, info: ConnectionInfo) -> None:
        self._listener = listener
        self._info = info
        self._state = _EXPECT_HANDSHAKE
        self._mechanism: str | None = None
        self._server: SaslServer | None = None
        self._user: str | None = None  # once authenticated; re-authentication must keep it
        self._session_end_ms: int | None = None
        self._credential_expiry_ms: int | None = None  # an OAUTHBEARER token's exp

    # ------------------------------------------------------------ what the connection asks

    @property
    def expects_raw_token(self) -> bool:
        return self._state == _EXPECT_RAW_TOKEN

    @property
    def authenticated(self) -> bool:
        return self._user is not None

    @property
    def established(self) -> bool:
        """Authenticated and not in a re-authentication: requests may be pipelined."""
        return self._state == _AUTHENTICATED

    def refusal(self, api_key: int) -> str | None:
        """None when a request of ``api_key`` may be served now, else why the connection must close."""
        state = self._state
        if state == _AUTHENTICATED:
            end = self._session_end_ms
            if end is None or api_key in (SASL_HANDSHAKE, API_VERSIONS) or self._listener.clock_ms() < end:
                return None
            return "SASL session expired without re-authentication (connections.max.reauth.ms)"
        if api_key == API_VERSIONS or (api_key == SASL_HANDSHAKE and state == _EXPECT_HANDSHAKE):
            return None
        if api_key == SASL_AUTHENTICATE and state == _EXPECT_AUTHENTICATE:
            return None
        if state == _FAILED:
            return "request after a failed SASL authentication"
        if state == _EXPECT_AUTHENTICATE:
            return f"SaslAuthenticate expected after SaslHandshake, got api key {api_key}"
        return f"request of api key {api_key} before SASL authentication (send SaslHandshake first)"

    # ------------------------------------------------------------ the handlers' side

    def handshake(self, mechanism: str, version: int) -> str | None:
        """Start an exchange with ``mechanism``; None if accepted, else the refusal (the connection then
        closes after answering)."""
        if mechanism not in self._listener.mechanisms:
            self._state = _FAILED
            return f"Unsupported SASL mechanism {mechanism}"
        if self._user is not None and mechanism != self._mechanism:
            self._state = _FAILED
            return (f"Re-authentication must use the mechanism of the first authentication ({self._mechanism}), "
                    f"not {mechanism}")
        self._mechanism = mechanism
        self._server = self._listener.new_server(mechanism)
        self._state = _EXPECT_RAW_TOKEN if version == 0 else _EXPECT_AUTHENTICATE
        return None

    @property
    def exchange_open(self) -> bool:
        """A SaslHandshake started an exchange that SaslAuthenticate may continue."""
        return self._state == _EXPECT_AUTHENTICATE

    @property
    def enabled_mechanisms(self) -> list[str]:
        return list(self._listener.mechanisms)

    async def authenticate(self, token: bytes) -> tuple[bytes, str | None, int]:
        """One SaslAuthenticate token: (reply token, failure message or None, session lifetime ms (0: no
        limit)). A failure has already waited out the failed-authentication delay."""
        try:
            reply = self._evaluate(token)
        except AuthenticationFailed as exc:
            await self._failure_delay(str(exc))
            return b"", str(exc), 0
        lifetime = self._session_lifetime_ms() if self._state == _AUTHENTICATED else 0
        return reply, None, lifetime

    async def raw_token(self, token: bytes) -> RawFrame:
        """One bare token after a v0 handshake: the bare reply, or CloseConnection after the delay."""
        try:
            reply = self._evaluate(token)
        except AuthenticationFailed as exc:
            await self._failure_delay(str(exc))
            raise CloseConnection(f"SASL authentication failed: {exc}") from None
        if self._state == _AUTHENTICATED:
            self._session_lifetime_ms()
        return RawFrame(reply)

    # ------------------------------------------------------------ internals

    def _evaluate(self, token: bytes) -> bytes:
        server = self._server
        if server is None:
            self._state = _FAILED
            raise AuthenticationFailed("Authentication failed: SaslAuthenticate before SaslHandshake")
        try:
            reply = server.evaluate(token)
        except AuthenticationFailed:
            self._state = _FAILED
            raise
        if not server.complete:
            return reply
        name = server.principal_name
        if self._user is not None and name != self._user:
            self._state = _FAILED
            raise AuthenticationFailed("Authentication failed: Cannot change principals during re-authentication "
                                       f"from {user_principal(self._user)}")
        first = self._user is None
        self._user = name
        self._server = None
        self._state = _AUTHENTICATED
        self._info.principal = user_principal(name)
        log.debug("sasl.authenticated", peer=self._info.peer, listener=self._info.listener,
                  mechanism=self._mechanism, principal=self._info.principal, reauthentication=not first)
        self._credential_expiry_ms = server.session_expiry_ms
        return reply

    def _session_lifetime_ms(self) -> int:
        """Set when this session ends and return its length (0: unlimited), as KIP-368 computes it."""
        now = self._listener.clock_ms()
        limits = []
        reauth_ms = self._listener.settings.reauth_ms
        if reauth_ms > 0:
            limits.append(reauth_ms)
        expiry = self._credential_expiry_ms
        if expiry is not None:
            limits.append(max(expiry - now, 1))
        if not limits:
            self._session_end_ms = None
            return 0
        lifetime = min(limits)
        self._session_end_ms = now + lifetime
        return lifetime

    async def _failure_delay(self, reason: str) -> None:
        info = self._info
        self._listener.throttle.warning("sasl.authentication_failed", info.host, peer=info.peer,
                                        listener=info.listener, mechanism=self._mechanism, reason=reason)
        if self._listener.failed_delay_s > 0:
            await asyncio.sleep(self._listener.failed_delay_s)
