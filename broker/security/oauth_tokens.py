"""OAUTHBEARER token validation: Kafka's unsecured JWS validator (the broker default, for development) and
a signed-JWT validator against a JWKS (Kafka's ``sasl.oauthbearer.jwks.endpoint.url`` handler, here fed
from a dict or a file).

Failure reasons in ``TokenInvalid`` are fixed phrases: they never quote the token or any of its values, so
they are safe to log. ``cryptography`` is imported only where JWKS keys are built and signatures checked.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from protocol.primitives import INT64_MAX

MAX_TOKEN_CHARS = 64 * 1024
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


class TokenInvalid(Exception):
    """A token was refused. ``reason`` is safe to log; ``failure_scope`` names a missing required scope
    (the SASL error challenge then reports ``insufficient_scope``)."""

    def __init__(self, reason: str, *, failure_scope: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.failure_scope = failure_scope


@dataclass(frozen=True)
class ValidatedToken:
    principal_name: str
    expiry_ms: int
    scopes: frozenset[str]


class OAuthBearerValidator(Protocol):
    def validate(self, token: str) -> ValidatedToken:
        """The token's principal, expiry and scopes; raises TokenInvalid."""
        ...


def _b64url_decode(text: str) -> bytes:
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("invalid base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("invalid base64url") from None


def _reject_constant(name: str) -> Any:
    raise ValueError("non-finite number")


def _json_object(segment: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(_b64url_decode(segment), parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise TokenInvalid(f"the token's {what} is not base64url-encoded JSON") from None
    if not isinstance(value, dict):
        raise TokenInvalid(f"the token's {what} is not a JSON object")
    return value


def _split_token(token: str) -> list[str]:
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenInvalid("the token is too large")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenInvalid("the token is not a JWS compact serialization (three dot-separated parts)")
    return parts


def _number_claim(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TokenInvalid(f"the token's '{name}' claim is not a number")
    return value


def _principal(claims: dict[str, Any], claim: str) -> str:
    value = claims.get(claim)
    if not isinstance(value, str) or not value.strip():
        raise TokenInvalid(f"the token has no principal ('{claim}' claim missing, empty or not a string)")
    return value


def _scopes(claims: dict[str, Any], claim: str) -> frozenset[str]:
    value = claims.get(claim)
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return frozenset(value)
    raise TokenInvalid(f"the token's '{claim}' claim is neither a string nor a list of strings")


def _check_times(claims: dict[str, Any], now_ms: float, skew_ms: int) -> int:
    """Check exp (required), nbf and iat with the allowed skew; returns the expiry in ms since the epoch."""
    exp = _number_claim(claims, "exp")
    if exp is None:
        raise TokenInvalid("the token has no 'exp' claim")
    exp_ms = exp * 1000
    if now_ms >= exp_ms + skew_ms:
        raise TokenInvalid("the token has expired")
    nbf = _number_claim(claims, "nbf")
    if nbf is not None and now_ms + skew_ms < nbf * 1000:
        raise TokenInvalid("the token is not valid yet ('nbf' is in the future)")
    iat = _number_claim(claims, "iat")
    if iat is not None:
        if iat * 1000 > now_ms + skew_ms:
            raise TokenInvalid("the token was issued in the future ('iat')")
        if exp <= iat:
            raise TokenInvalid("the token's expiration time is not after its issued-at time")
    # An absurd exp would overflow the int64 session lifetime Kafka's SaslAuthenticate carries.
    return int(min(exp_ms, INT64_MAX))


class UnsecuredJwsValidator:
    """Kafka's default OAUTHBEARER validator (OAuthBearerUnsecuredValidatorCallbackHandler): accepts
    unsigned tokens ``base64url(header).base64url(claims).`` with ``"alg":"none"``. Anyone can mint these:
    for development only."""

    def __init__(
        self,
        *,
        principal_claim: str = "sub",
        scope_claim: str = "scope",
        required_scopes: Sequence[str] = (),
        allowable_clock_skew_ms: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.principal_claim = principal_claim
        self.scope_claim = scope_claim
        self.required_scopes = tuple(required_scopes)
        self.allowable_clock_skew_ms = allowable_clock_skew_ms
        self.clock = clock

    def validate(self, token: str) -> ValidatedToken:
        header_b64, claims_b64, signature = _split_token(token)
        if signature:
            raise TokenInvalid("an unsecured JWS must not carry a signature")
        if _json_object(header_b64, "header").get("alg") != "none":
            raise TokenInvalid("an unsecured JWS must have the header \"alg\":\"none\"")
        claims = _json_object(claims_b64, "claims")
        principal = _principal(claims, self.principal_claim)
        expiry_ms = _check_times(claims, self.clock() * 1000, self.allowable_clock_skew_ms)
        scopes = _scopes(claims, self.scope_claim)
        for scope in self.required_scopes:
            if scope not in scopes:
                raise TokenInvalid("the token lacks a required scope", failure_scope=scope)
        return ValidatedToken(principal, expiry_ms, scopes)


# JWS algorithm -> (key type, hash name, EC curve, bytes per EC signature half). HMAC and "none" are absent
# on purpose: a JWKS holds public keys, and accepting them would let a token choose a weaker check.
_ALGORITHMS: dict[str, tuple[str, str, str | None, int]] = {
    "RS256": ("RSA", "SHA256", None, 0),
    "RS384": ("RSA", "SHA384", None, 0),
    "RS512": ("RSA", "SHA512", None, 0),
    "ES256": ("EC", "SHA256", "P-256", 32),
    "ES384": ("EC", "SHA384", "P-384", 48),
    "ES512": ("EC", "SHA512", "P-521", 66),
}
_MIN_RSA_BITS = 2048  # as jose4j (Kafka's JWT library) requires for the RS algorithms


@dataclass(frozen=True)
class _Jwk:
    kid: str | None
    kty: str
    crv: str | None
    alg: str | None
    public_key: Any  # a cryptography RSAPublicKey or EllipticCurvePublicKey


def _require_cryptography() -> None:
    try:
        import cryptography  # noqa: F401
    except ImportError as e:
        raise ImportError("JWKS token validation needs the 'cryptography' package") from e


def _jwk_int(jwk: dict[str, Any], name: str) -> int:
    value = jwk.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"lacks '{name}'")
    return int.from_bytes(_b64url_decode(value), "big")


def _load_jwk(jwk: Any) -> _Jwk | None:
    """One JWKS entry as a verification key; None for keys that cannot sign tokens we accept."""
    _require_cryptography()
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    try:
        kty, use, kid, alg = (jwk.get(name) for name in ("kty", "use", "kid", "alg"))
    except AttributeError:
        raise ValueError("is not a JSON object") from None
    if use not in (None, "sig") or kty not in ("RSA", "EC"):
        return None
    if kid is not None and not isinstance(kid, str):
        raise ValueError("has a non-string 'kid'")
    if kty == "RSA":
        rsa_numbers = rsa.RSAPublicNumbers(_jwk_int(jwk, "e"), _jwk_int(jwk, "n"))
        key = _public_key(rsa_numbers, kty)
        if key.key_size < _MIN_RSA_BITS:
            raise ValueError(f"is an RSA key shorter than {_MIN_RSA_BITS} bits")
        return _Jwk(kid, kty, None, alg, key)
    curves = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}
    crv = jwk.get("crv")
    if not isinstance(crv, str) or crv not in curves:
        raise ValueError("has an unsupported curve (expected P-256, P-384 or P-521)")
    ec_numbers = ec.EllipticCurvePublicNumbers(_jwk_int(jwk, "x"), _jwk_int(jwk, "y"), curves[crv])
    return _Jwk(kid, kty, crv, alg, _public_key(ec_numbers, kty))


def _public_key(numbers: Any, kty: str) -> Any:
    try:
        return numbers.public_key()
    except ValueError as e:
        raise ValueError(f"is not a valid {kty} public key ({e})") from None


def _signature_valid(jwk: _Jwk, alg: str, signing_input: bytes, signature: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    _, hash_name, _, half = _ALGORITHMS[alg]
    algorithm = getattr(hashes, hash_name)()
    try:
        if jwk.kty == "RSA":
            jwk.public_key.verify(signature, signing_input, padding.PKCS1v15(), algorithm)
        else:
            # JWS carries ECDSA signatures as fixed-size r || s; cryptography wants DER.
            if len(signature) != 2 * half:
                return False
            r, s = int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
            jwk.public_key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(algorithm))
    except InvalidSignature:
        return False
    return True


class JwksValidator:
    """Signed JWTs checked against a JSON Web Key Set, as Kafka's OAuthBearerValidatorCallbackHandler does
    with ``sasl.oauthbearer.jwks.endpoint.url``: RS256/384/512 or ES256/384/512 signatures, the key chosen
    by ``kid``; ``exp`` required; ``nbf``/``iat`` honoured; issuer and audience checked when configured."""

    def __init__(
        self,
        jwks: dict[str, Any],
        *,
        expected_audience: Sequence[str] = (),
        expected_issuer: str | None = None,
        principal_claim: str = "sub",
        scope_claim: str = "scope",
        allowable_clock_skew_ms: int = 30000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        try:
            raw_keys = list(jwks["keys"])
        except (KeyError, TypeError):
            raise ValueError("a JWKS must be a JSON object with a 'keys' list") from None
        self._keys: list[_Jwk] = []
        for index, raw in enumerate(raw_keys):
            try:
                jwk = _load_jwk(raw)
            except ValueError as e:
                raise ValueError(f"JWKS key #{index} {e}") from None
            if jwk is not None:
                self._keys.append(jwk)
        if isinstance(expected_audience, str):
            expected_audience = (expected_audience,)
        self.expected_audience = frozenset(expected_audience)
        self.expected_issuer = expected_issuer
        self.principal_claim = principal_claim
        self.scope_claim = scope_claim
        self.allowable_clock_skew_ms = allowable_clock_skew_ms
        self.clock = clock

    def __repr__(self) -> str:
        return f"JwksValidator(keys={len(self._keys)}, issuer={self.expected_issuer!r})"

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> JwksValidator:
        try:
            jwks = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
            raise ValueError(f"cannot read the JWKS file {path}: {e.__class__.__name__}") from None
        try:
            return cls(jwks, **kwargs)
        except ValueError as e:
            raise ValueError(f"JWKS file {path}: {e}") from None

    def validate(self, token: str) -> ValidatedToken:
        header_b64, claims_b64, signature_b64 = _split_token(token)
        header = _json_object(header_b64, "header")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in _ALGORITHMS:
            raise TokenInvalid("the token's signing algorithm is not accepted (RS256/384/512, ES256/384/512)")
        if "crit" in header:
            raise TokenInvalid("the token's header names critical extensions, which are not supported")
        try:
            signature = _b64url_decode(signature_b64)
        except ValueError:
            raise TokenInvalid("the token's signature is not base64url") from None
        kid = header.get("kid")
        kty, _, crv, _ = _ALGORITHMS[alg]
        candidates = [k for k in self._keys
                      if k.kty == kty and k.crv == crv and k.alg in (None, alg) and (kid is None or k.kid == kid)]
        if not candidates:
            raise TokenInvalid("no key in the JWKS matches the token's key id and algorithm")
        signing_input = f"{header_b64}.{claims_b64}".encode("ascii")
        if not any(_signature_valid(k, alg, signing_input, signature) for k in candidates):
            raise TokenInvalid("the token's signature does not verify")
        claims = _json_object(claims_b64, "claims")
        expiry_ms = _check_times(claims, self.clock() * 1000, self.allowable_clock_skew_ms)
        if self.expected_issuer is not None and claims.get("iss") != self.expected_issuer:
            raise TokenInvalid("the token's issuer is not the expected one")
        if self.expected_audience:
            aud = claims.get("aud")
            audiences = {aud} if isinstance(aud, str) else set()
            if isinstance(aud, list):
                audiences = {a for a in aud if isinstance(a, str)}
            if not audiences & self.expected_audience:
                raise TokenInvalid("the token's audience is not an expected one")
        return ValidatedToken(_principal(claims, self.principal_claim), expiry_ms,
                              _scopes(claims, self.scope_claim))
