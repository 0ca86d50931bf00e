"""Sans-io SASL server mechanisms: PLAIN (RFC 4616), SCRAM-SHA-256/512 (RFC 5802, RFC 7677) and
OAUTHBEARER (RFC 7628), each behaving as Kafka's server for the same mechanism.

A server takes the client's tokens one at a time (``evaluate``) and answers the token to send back, until
it is ``complete`` or raises ``AuthenticationFailed``. No sockets, no clocks (token expiry is the
validator's business), no I/O. Every failure message is safe to send to the client and to log: none
contains a password, proof, token or salted value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import string
from collections.abc import Callable
from typing import Protocol

from broker.security.oauth_tokens import OAuthBearerValidator, TokenInvalid, ValidatedToken
from broker.security.scram_credentials import MIN_ITERATIONS, SCRAM_MECHANISMS, ScramCredential

SUPPORTED_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
# Kafka's default sasl.server.max.receive.size: no legitimate token of these mechanisms comes near it.
MAX_TOKEN_BYTES = 524288


class AuthenticationFailed(Exception):
    """A client's credentials were refused; str(exc) is the message sent to the client (never a secret)."""


class SaslServer(Protocol):
    mechanism: str

    def evaluate(self, token: bytes) -> bytes:
        """One client token in, the server's reply token out; raises AuthenticationFailed."""
        ...

    @property
    def complete(self) -> bool:
        """True once authentication succeeded."""
        ...

    @property
    def principal_name(self) -> str:
        """The authenticated user name; RuntimeError before ``complete``."""
        ...

    @property
    def session_expiry_ms(self) -> int | None:
        """Wall-clock ms at which the credential expires (an OAUTHBEARER token's exp), else None."""
        ...


class _Exchange:
    """What all mechanisms share: the size bound, and refusing tokens once the exchange has ended."""

    mechanism: str

    def __init__(self) -> None:
        self._principal: str | None = None
        self._failed = False

    def __repr__(self) -> str:
        state = "failed" if self._failed else "complete" if self.complete else "in progress"
        return f"{type(self).__name__}(mechanism={self.mechanism!r}, {state})"

    @property
    def complete(self) -> bool:
        return self._principal is not None

    @property
    def principal_name(self) -> str:
        if self._principal is None:
            raise RuntimeError(f"{self.mechanism} authentication has not completed")
        return self._principal

    @property
    def session_expiry_ms(self) -> int | None:
        return None

    def evaluate(self, token: bytes) -> bytes:
        if self._failed:
            raise AuthenticationFailed(f"Authentication failed: the {self.mechanism} exchange has already failed")
        if self.complete:
            raise AuthenticationFailed(f"Authentication failed: unexpected {self.mechanism} token after "
                                       "authentication completed")
        try:
            if len(token) > MAX_TOKEN_BYTES:
                raise AuthenticationFailed(f"Authentication failed: {self.mechanism} token too large")
            return self._step(bytes(token))
        except AuthenticationFailed:
            self._failed = True
            raise

    def _step(self, token: bytes) -> bytes:
        raise NotImplementedError


def _utf8(token: bytes, what: str) -> str:
    try:
        return token.decode("utf-8")
    except UnicodeDecodeError:
        raise AuthenticationFailed(f"Authentication failed: invalid {what}: not UTF-8") from None


def decode_saslname(text: str) -> str | None:
    """RFC 5802 saslname -> user name (``=2C`` is ``,``, ``=3D`` is ``=``); None if not a valid saslname."""
    if not text or "," in text or "\0" in text:
        return None
    parts = text.split("=")
    out = [parts[0]]
    for part in parts[1:]:
        if part[:2] == "2C":
            out.append("," + part[2:])
        elif part[:2] == "3D":
            out.append("=" + part[2:])
        else:
            return None
    return "".join(out)


class PlainServer(_Exchange):
    """SASL/PLAIN: one token, ``authzid NUL authcid NUL passwd``, checked against the configured users."""

    mechanism = "PLAIN"

    def __init__(self, users: Callable[[str], str | None]) -> None:
        super().__init__()
        self._users = users

    def _step(self, token: bytes) -> bytes:
        parts = _utf8(token, "SASL/PLAIN response").split("\0")
        if len(parts) != 3:
            raise AuthenticationFailed(
                f"Authentication failed: invalid SASL/PLAIN response: expected 3 tokens, got {len(parts)}")
        authzid, username, password = parts
        if not username:
            raise AuthenticationFailed("Authentication failed: username not specified")
        if not password:
            raise AuthenticationFailed("Authentication failed: password not specified")
        if authzid and authzid != username:
            raise AuthenticationFailed(
                "Authentication failed: Client requested an authorization id that is different from username")
        expected = self._users(username)
        if expected is None or not hmac.compare_digest(password.encode("utf-8"), expected.encode("utf-8")):
            raise AuthenticationFailed("Authentication failed: Invalid username or password")
        self._principal = username
        return b""


_PRINTABLE_NONCE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")  # RFC 5802 printable: %x21-7E except ","
_EXTENSION = re.compile(r"([A-Za-z]+)=([^,\0]+)")
_INVALID_CREDENTIALS = "Authentication failed: Invalid user credentials"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise AuthenticationFailed(f"Authentication failed: invalid SCRAM {what}: bad base64") from None


def _server_nonce() -> str:
    # Letters and digits only, like Kafka's own nonces.
    return "".join(secrets.choice(_NONCE_ALPHABET) for _ in range(32))


_NONCE_ALPHABET = string.ascii_letters + string.digits


class ScramServer(_Exchange):
    """SCRAM-SHA-256/512 in two round trips: client-first -> server-first, client-final -> server-final.
    As in Kafka, an unknown user fails at once, with the message a wrong password gets."""

    def __init__(
        self,
        mechanism: str,
        credentials: Callable[[str, str], ScramCredential | None],
        *,
        nonce: Callable[[], str] | None = None,
    ) -> None:
        if mechanism not in SCRAM_MECHANISMS:
            raise ValueError(f"not a SCRAM mechanism: {mechanism}")
        super().__init__()
        self.mechanism = mechanism
        self._hash = SCRAM_MECHANISMS[mechanism]
        self._credentials = credentials
        self._nonce = nonce or _server_nonce
        self._user = ""
        self._gs2_header = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._combined_nonce = ""
        self._credential: ScramCredential | None = None

    def _step(self, token: bytes) -> bytes:
        # A third token never gets here: after the final message the exchange is complete or failed.
        if not self._server_first:
            return self._client_first(_utf8(token, "SCRAM client-first message"))
        return self._client_final(_utf8(token, "SCRAM client-final message"))

    def _client_first(self, message: str) -> bytes:
        malformed = AuthenticationFailed("Authentication failed: invalid SCRAM client-first message")
        cbind, _, rest = message.partition(",")
        if cbind.startswith("p="):
            raise AuthenticationFailed("Authentication failed: SCRAM channel binding is not supported")
        if cbind not in ("n", "y"):
            raise malformed
        authzid_field, sep, bare = rest.partition(",")
        if not sep:
            raise malformed
        authzid = ""
        if authzid_field:
            decoded = decode_saslname(authzid_field[2:]) if authzid_field.startswith("a=") else None
            if decoded is None:
                raise malformed
            authzid = decoded
        attributes = bare.split(",")
        if attributes[0].startswith("m="):
            raise AuthenticationFailed("Authentication failed: SCRAM mandatory extensions are not supported")
        if len(attributes) < 2 or not attributes[0].startswith("n=") or not attributes[1].startswith("r="):
            raise malformed
        user = decode_saslname(attributes[0][2:])
        client_nonce = attributes[1][2:]
        if user is None or not _PRINTABLE_NONCE.fullmatch(client_nonce):
            raise malformed
        for extension in attributes[2:]:
            match = _EXTENSION.fullmatch(extension)
            if match is None:
                raise malformed
            # Kafka's only SCRAM extension marks delegation-token authentication; others are ignored.
            if match[1] == "tokenauth" and match[2].lower() == "true":
                raise AuthenticationFailed("Authentication failed: delegation token authentication is not supported")
        credential = self._credentials(self.mechanism, user)
        if credential is None or credential.mechanism != self.mechanism:
            raise AuthenticationFailed(_INVALID_CREDENTIALS)
        if authzid and authzid != user:
            raise AuthenticationFailed(
                "Authentication failed: Client requested an authorization id that is different from username")
        if credential.iterations < MIN_ITERATIONS:
            raise AuthenticationFailed(_INVALID_CREDENTIALS)
        server_nonce = self._nonce()
        if not _PRINTABLE_NONCE.fullmatch(server_nonce):
            raise ValueError("a SCRAM server nonce must be printable ASCII without commas")
        self._user = user
        self._credential = credential
        self._gs2_header = message[:len(message) - len(bare)]
        self._client_first_bare = bare
        self._combined_nonce = client_nonce + server_nonce
        self._server_first = f"r={self._combined_nonce},s={_b64(credential.salt)},i={credential.iterations}"
        return self._server_first.encode("ascii")

    def _client_final(self, message: str) -> bytes:
        credential = self._credential
        assert credential is not None
        malformed = AuthenticationFailed("Authentication failed: invalid SCRAM client-final message")
        attributes = message.split(",")
        if (len(attributes) < 3 or not attributes[0].startswith("c=") or not attributes[1].startswith("r=")
                or not attributes[-1].startswith("p=")):
            raise malformed
        if any(_EXTENSION.fullmatch(extension) is None for extension in attributes[2:-1]):
            raise malformed
        if _unb64(attributes[0][2:], "client-final message") != self._gs2_header.encode("utf-8"):
            raise AuthenticationFailed("Authentication failed: SCRAM channel binding data does not match "
                                       "the client-first message")
        # Kafka checks only that the nonce ends with the server-first one (ScramSaslServer), and
        # librdkafka before 2.1 sends its client nonce twice: RFC 5802's equality would lock it out.
        if not attributes[1][2:].endswith(self._combined_nonce):
            raise AuthenticationFailed("Authentication failed: invalid nonce in the SCRAM client-final message")
        proof = _unb64(attributes[-1][2:], "client-final message")
        without_proof = message[:len(message) - len(attributes[-1]) - 1]
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        client_signature = hmac.digest(credential.stored_key, auth_message, self._hash)
        if len(proof) != len(client_signature):
            raise AuthenticationFailed(_INVALID_CREDENTIALS)
        client_key = bytes(p ^ s for p, s in zip(proof, client_signature))
        if not hmac.compare_digest(hashlib.new(self._hash, client_key).digest(), credential.stored_key):
            raise AuthenticationFailed(_INVALID_CREDENTIALS)
        server_signature = hmac.digest(credential.server_key, auth_message, self._hash)
        self._credential = None  # as Kafka clears it: nothing secret outlives the exchange
        self._principal = self._user
        return f"v={_b64(server_signature)}".encode("ascii")


_OAUTH_KEY = re.compile(r"[A-Za-z]+")
_OAUTH_VALUE = re.compile(r"[\x21-\x7e \t\r\n]+")
# RFC 6750's b64token after the scheme; Kafka accepts the "Bearer" scheme in any case.
_OAUTH_AUTH = re.compile(r"([A-Za-z0-9_]+) +([A-Za-z0-9\-._~+/]+=*)")


class OAuthBearerServer(_Exchange):
    """OAUTHBEARER: the client's initial response carries ``auth=Bearer <token>`` and optional SASL
    extensions. A refused token is not failed at once: as Kafka (and RFC 7628) do, the server answers a
    JSON error challenge, the client acknowledges with ``%x01``, and only then does the exchange fail."""

    mechanism = "OAUTHBEARER"

    def __init__(self, validator: OAuthBearerValidator) -> None:
        super().__init__()
        self._validator = validator
        self._pending_failure: str | None = None
        self._token: ValidatedToken | None = None
        self.extensions: dict[str, str] = {}
        # Why the token was refused, for the broker's logs (a fixed phrase, never token content).
        self.token_error: str | None = None

    @property
    def session_expiry_ms(self) -> int | None:
        return self._token.expiry_ms if self._token is not None and self.complete else None

    def _step(self, token: bytes) -> bytes:
        if self._pending_failure is not None:
            # Anything but the %x01 acknowledgement is a protocol error; both end the exchange the same way.
            raise AuthenticationFailed(f"Authentication failed: {self._pending_failure}")
        authzid, bearer, extensions = self._parse_initial_response(_utf8(token, "OAUTHBEARER client message"))
        try:
            validated = self._validator.validate(bearer)
        except TokenInvalid as e:
            self.token_error = e.reason
            challenge = {"status": "invalid_token"}
            self._pending_failure = "invalid token"
            if e.failure_scope is not None:
                challenge = {"status": "insufficient_scope", "scope": e.failure_scope}
                self._pending_failure = "insufficient scope"
            return json.dumps(challenge, separators=(",", ":")).encode("utf-8")
        if authzid and authzid != validated.principal_name:
            raise AuthenticationFailed("Authentication failed: Client requested an authorization id that is "
                                       "different from the token's principal name")
        self.extensions = extensions
        self._token = validated
        self._principal = validated.principal_name
        return b""

    @staticmethod
    def _parse_initial_response(message: str) -> tuple[str, str, dict[str, str]]:
        malformed = AuthenticationFailed("Authentication failed: invalid OAUTHBEARER client first message")
        gs2, sep, rest = message.partition("\x01")
        if not sep or not gs2.startswith("n,") or not gs2.endswith(","):
            raise malformed
        authzid = ""
        if gs2 != "n,,":
            decoded = decode_saslname(gs2[4:-1]) if gs2.startswith("n,a=") else None
            if decoded is None:
                raise malformed
            authzid = decoded
        # rest is "key=value\x01" * n followed by the closing "\x01".
        if not rest.endswith("\x01\x01"):
            raise malformed
        pairs: dict[str, str] = {}
        for pair in rest[:-2].split("\x01"):
            key, eq, value = pair.partition("=")
            if not eq or not _OAUTH_KEY.fullmatch(key) or not _OAUTH_VALUE.fullmatch(value) or key in pairs:
                raise malformed
            pairs[key] = value
        auth = pairs.pop("auth", None)
        if auth is None:
            raise AuthenticationFailed("Authentication failed: invalid OAUTHBEARER client first message: "
                                       "'auth' not specified")
        match = _OAUTH_AUTH.fullmatch(auth)
        if match is None or match[1].lower() != "bearer":
            raise AuthenticationFailed("Authentication failed: invalid OAUTHBEARER client first message: "
                                       "'auth' is not 'Bearer <token>'")
        return authzid, match[2], pairs


def create_server(
    mechanism: str,
    *,
    plain_users: Callable[[str], str | None],
    scram_credentials: Callable[[str, str], ScramCredential | None],
    oauth_validator: OAuthBearerValidator | None = None,
) -> SaslServer:
    """A fresh server for one exchange. OAUTHBEARER needs a validator: Kafka's default is the unsecured
    one (``UnsecuredJwsValidator``), which the caller must choose explicitly."""
    if mechanism == "PLAIN":
        return PlainServer(plain_users)
    if mechanism in SCRAM_MECHANISMS:
        return ScramServer(mechanism, scram_credentials)
    if mechanism == "OAUTHBEARER":
        if oauth_validator is None:
            raise ValueError("OAUTHBEARER needs a token validator")
        return OAuthBearerServer(oauth_validator)
    raise ValueError(f"unsupported SASL mechanism; choose one of {', '.join(SUPPORTED_MECHANISMS)}")
