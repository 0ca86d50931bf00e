"""SASL server mechanisms (broker/security/sasl_mechanisms.py) and OAUTHBEARER token validators
(broker/security/oauth_tokens.py): PLAIN, SCRAM-SHA-256/512 against RFC 7677's vector and a client written
here from RFC 5802, OAUTHBEARER with unsecured tokens and its two-step failure, and JWKS-signed tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from broker.security.oauth_tokens import (
    JwksValidator,
    TokenInvalid,
    UnsecuredJwsValidator,
    ValidatedToken,
)
from broker.security.sasl_mechanisms import (
    SUPPORTED_MECHANISMS,
    AuthenticationFailed,
    OAuthBearerServer,
    PlainServer,
    SaslServer,
    ScramServer,
    create_server,
    decode_saslname,
)
from broker.security.scram_credentials import ScramCredential

NOW = 1_700_000_000.0  # the fixed clock, in seconds


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def no_plain_users(name: str) -> str | None:
    return None


def no_scram(mechanism: str, name: str) -> ScramCredential | None:
    return None


# --- PLAIN ---------------------------------------------------------------------------------------------

PLAIN_USERS = {"alice": "alice-secret", "bob": "bob-secret"}


def plain() -> PlainServer:
    return PlainServer(PLAIN_USERS.get)


def test_plain_accepts_known_user_in_one_step() -> None:
    """A right password completes at once with an empty reply and the user as principal."""
    server = plain()
    assert not server.complete
    assert server.evaluate(b"\0alice\0alice-secret") == b""
    assert server.complete
    assert server.principal_name == "alice"
    assert server.session_expiry_ms is None


def test_plain_accepts_authzid_equal_to_user() -> None:
    """An authorization id equal to the user name is allowed."""
    server = plain()
    server.evaluate(b"bob\0bob\0bob-secret")
    assert server.principal_name == "bob"


def test_plain_refuses_wrong_password_and_unknown_user_alike() -> None:
    """Wrong password and unknown user get Kafka's one message, which never contains the password."""
    for token in (b"\0alice\0wrong-pass", b"\0mallory\0alice-secret"):
        with pytest.raises(AuthenticationFailed) as info:
            plain().evaluate(token)
        assert str(info.value) == "Authentication failed: Invalid username or password"
        assert "wrong-pass" not in str(info.value) and "secret" not in str(info.value)


def test_plain_refuses_empty_fields_and_other_authzid() -> None:
    """Empty user or password and a different authzid fail with Kafka's messages."""
    cases = {
        b"\0\0pw": "Authentication failed: username not specified",
        b"\0alice\0": "Authentication failed: password not specified",
        b"bob\0alice\0alice-secret":
            "Authentication failed: Client requested an authorization id that is different from username",
    }
    for token, message in cases.items():
        with pytest.raises(AuthenticationFailed, match=f"^{message}$"):
            plain().evaluate(token)


def test_plain_refuses_malformed_tokens() -> None:
    """Not exactly three NUL-separated parts, or bytes that are not UTF-8, are refused."""
    for token in (b"alice\0alice-secret", b"\0alice\0alice-secret\0x", b"", b"\0alice\0\xff\xfe"):
        with pytest.raises(AuthenticationFailed):
            plain().evaluate(token)


def test_plain_refuses_tokens_after_the_end() -> None:
    """Once complete or failed, an exchange takes no further token; principal_name waits for success."""
    server = plain()
    with pytest.raises(RuntimeError):
        _ = server.principal_name
    server.evaluate(b"\0alice\0alice-secret")
    with pytest.raises(AuthenticationFailed):
        server.evaluate(b"\0alice\0alice-secret")
    failed = plain()
    with pytest.raises(AuthenticationFailed):
        failed.evaluate(b"\0alice\0nope")
    with pytest.raises(AuthenticationFailed):
        failed.evaluate(b"\0alice\0alice-secret")
    assert not failed.complete


def test_oversized_token_is_refused_before_parsing() -> None:
    """A token over the bound is refused without being looked at."""
    with pytest.raises(AuthenticationFailed, match="too large"):
        plain().evaluate(b"\0alice\0" + b"x" * 600_000)


# --- SCRAM ---------------------------------------------------------------------------------------------

RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_COMBINED = RFC_CLIENT_NONCE + RFC_SERVER_NONCE


def scram_store(mechanism: str, users: dict[str, str]) -> Callable[[str, str], ScramCredential | None]:
    creds = {name: ScramCredential.from_password(mechanism, pw, salt=RFC_SALT, iterations=4096)
             for name, pw in users.items()}
    return lambda mech, name: creds.get(name) if mech == mechanism else None


def rfc_server(nonce: str = RFC_SERVER_NONCE) -> ScramServer:
    return ScramServer("SCRAM-SHA-256", scram_store("SCRAM-SHA-256", {"user": "pencil"}), nonce=lambda: nonce)


def escape_saslname(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


def scram_client(server: SaslServer, mechanism: str, user: str, password: str, *,
                 client_nonce: str = "fyko+d2lbbFgONRv9qkxdawL", gs2: str = "n,,", extensions: str = "") -> bytes:
    """RFC 5802's client side, written from the RFC: returns the server-final message after checking it."""
    hash_name = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}[mechanism]
    bare = f"n={escape_saslname(user)},r={client_nonce}{extensions}"
    server_first = server.evaluate((gs2 + bare).encode()).decode()
    fields = dict(attr.split("=", 1) for attr in server_first.split(","))
    assert fields["r"].startswith(client_nonce) and len(fields["r"]) > len(client_nonce)
    salted = hashlib.pbkdf2_hmac(hash_name, password.encode(), base64.b64decode(fields["s"]), int(fields["i"]))
    client_key = hmac.digest(salted, b"Client Key", hash_name)
    without_proof = f"c={b64(gs2.encode())},r={fields['r']}"
    auth_message = f"{bare},{server_first},{without_proof}".encode()
    signature = hmac.digest(hashlib.new(hash_name, client_key).digest(), auth_message, hash_name)
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    server_final = server.evaluate(f"{without_proof},p={b64(proof)}".encode())
    server_key = hmac.digest(salted, b"Server Key", hash_name)
    assert server_final == f"v={b64(hmac.digest(server_key, auth_message, hash_name))}".encode()
    return server_final


def test_scram_sha256_matches_rfc7677_vector() -> None:
    """RFC 7677's SCRAM-SHA-256 exchange, byte for byte: server-first, proof check, server signature."""
    server = rfc_server()
    server_first = server.evaluate(f"n,,n=user,r={RFC_CLIENT_NONCE}".encode())
    assert server_first == f"r={RFC_COMBINED},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096".encode()
    assert not server.complete
    final = server.evaluate(f"c=biws,r={RFC_COMBINED},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=".encode())
    assert final == b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    assert server.complete
    assert server.principal_name == "user"
    assert server.session_expiry_ms is None


def test_scram_round_trips_for_both_mechanisms() -> None:
    """The RFC 5802 client here authenticates against SCRAM-SHA-512 and SCRAM-SHA-256 servers."""
    for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256"):
        server = create_server(mechanism, plain_users=no_plain_users,
                               scram_credentials=scram_store(mechanism, {"alice": "alice-secret"}))
        scram_client(server, mechanism, "alice", "alice-secret")
        assert server.complete and server.principal_name == "alice"


def test_scram_accepts_the_client_nonce_repeated_in_front_as_kafka_does() -> None:
    """librdkafka before 2.1 sends r=<client nonce><server-first nonce> in its client-final message;
    Kafka's ScramSaslServer only checks that the nonce ends with the server-first one, so it works."""
    hash_name = "sha256"
    server = rfc_server()
    bare = f"n=user,r={RFC_CLIENT_NONCE}"
    server_first = server.evaluate(f"n,,{bare}".encode()).decode()
    salted = hashlib.pbkdf2_hmac(hash_name, b"pencil", base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="), 4096)
    client_key = hmac.digest(salted, b"Client Key", hash_name)
    without_proof = f"c=biws,r={RFC_CLIENT_NONCE}{RFC_COMBINED}"
    auth_message = f"{bare},{server_first},{without_proof}".encode()
    signature = hmac.digest(hashlib.sha256(client_key).digest(), auth_message, hash_name)
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    server.evaluate(f"{without_proof},p={b64(proof)}".encode())
    assert server.complete and server.principal_name == "user"


def test_scram_server_nonces_are_fresh_and_printable() -> None:
    """Without an injected nonce each exchange gets a new printable server nonce without commas."""
    store = scram_store("SCRAM-SHA-256", {"user": "pencil"})
    nonces = set()
    for _ in range(3):
        first = ScramServer("SCRAM-SHA-256", store).evaluate(b"n,,n=user,r=abc").decode()
        nonce = first.split(",")[0][len("r=abc"):]
        assert nonce and all(0x21 <= ord(c) <= 0x7E and c != "," for c in nonce)
        nonces.add(nonce)
    assert len(nonces) == 3


def test_scram_wrong_password_and_unknown_user_get_one_message() -> None:
    """A wrong proof and an unknown user both fail with 'Invalid user credentials'."""
    server = create_server("SCRAM-SHA-512", plain_users=no_plain_users,
                           scram_credentials=scram_store("SCRAM-SHA-512", {"alice": "alice-secret"}))
    with pytest.raises(AuthenticationFailed) as wrong:
        scram_client(server, "SCRAM-SHA-512", "alice", "not-her-password")
    assert str(wrong.value) == "Authentication failed: Invalid user credentials"
    assert not server.complete
    with pytest.raises(AuthenticationFailed) as unknown:
        rfc_server().evaluate(b"n,,n=nobody,r=abc")
    assert str(unknown.value) == str(wrong.value)


def test_scram_credential_of_another_mechanism_is_not_used() -> None:
    """A SHA-256 credential is never offered to a SCRAM-SHA-512 exchange."""
    store = scram_store("SCRAM-SHA-256", {"user": "pencil"})
    server = ScramServer("SCRAM-SHA-512", lambda mech, name: store("SCRAM-SHA-256", name))
    with pytest.raises(AuthenticationFailed, match="Invalid user credentials"):
        server.evaluate(b"n,,n=user,r=abc")


def test_scram_decodes_escaped_user_names() -> None:
    """'=2C' and '=3D' in the user name decode to ',' and '='; other escapes are malformed."""
    name = "a,b=c"
    server = ScramServer("SCRAM-SHA-256", scram_store("SCRAM-SHA-256", {name: "pw"}))
    scram_client(server, "SCRAM-SHA-256", name, "pw")
    assert server.principal_name == name
    assert decode_saslname("x=2Cy=3Dz") == "x,y=z"
    for bad in ("a=2c", "a=", "a=41", "", "a,b"):
        assert decode_saslname(bad) is None
    with pytest.raises(AuthenticationFailed, match="invalid SCRAM client-first message"):
        rfc_server().evaluate(b"n,,n=us=41er,r=abc")


def test_scram_authzid_must_match_user() -> None:
    """An authzid in the gs2 header equal to the user is accepted; a different one is refused."""
    server = rfc_server()
    scram_client(server, "SCRAM-SHA-256", "user", "pencil", gs2="n,a=user,")
    assert server.principal_name == "user"
    with pytest.raises(AuthenticationFailed, match="authorization id that is different"):
        rfc_server().evaluate(b"n,a=admin,n=user,r=abc")


def test_scram_accepts_y_flag_and_refuses_channel_binding() -> None:
    """'y' (client could bind, server does not offer it) works; 'p=' channel binding is refused."""
    scram_client(rfc_server(), "SCRAM-SHA-256", "user", "pencil", gs2="y,,")
    with pytest.raises(AuthenticationFailed, match="channel binding is not supported"):
        rfc_server().evaluate(b"p=tls-unique,,n=user,r=abc")


def test_scram_extensions_unknown_ignored_tokenauth_refused() -> None:
    """Unknown client-first extensions are ignored; Kafka's tokenauth=true (delegation tokens) is refused;
    a mandatory extension (m=) is refused."""
    scram_client(rfc_server(), "SCRAM-SHA-256", "user", "pencil", extensions=",foo=bar,tokenauth=false")
    with pytest.raises(AuthenticationFailed, match="delegation token"):
        rfc_server().evaluate(b"n,,n=user,r=abc,tokenauth=true")
    with pytest.raises(AuthenticationFailed, match="mandatory extensions"):
        rfc_server().evaluate(b"n,,m=ext,n=user,r=abc")


@pytest.mark.parametrize("message", [
    b"n,,r=abc,n=user",          # attributes out of order
    b"n,,n=user",                # no nonce
    b"n,,n=user,r=",             # empty nonce
    b"x,,n=user,r=abc",          # bad gs2 flag
    b"n,n=user,r=abc",           # gs2 header lacks its second comma
    b"n,,n=user,r=abc,=x",       # bad extension
    b"n,,n=user,r=ab\x7fc",      # unprintable nonce
    b"\xff\xfe",                 # not UTF-8
])
def test_scram_malformed_client_first(message: bytes) -> None:
    """Malformed client-first messages fail, naming the client-first message."""
    with pytest.raises(AuthenticationFailed, match="SCRAM client-first message"):
        rfc_server().evaluate(message)


def rfc_final(**fields: str) -> bytes:
    values = {"c": "biws", "r": RFC_COMBINED, "p": "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="} | fields
    return ",".join(f"{k}={v}" for k, v in values.items()).encode()


@pytest.mark.parametrize("final, complaint", [
    (rfc_final(p="not base64!"), "bad base64"),
    (rfc_final(c="bm90IGl0"), "channel binding data does not match"),
    (rfc_final(r=RFC_COMBINED + "x"), "invalid nonce"),
    (rfc_final(r=RFC_CLIENT_NONCE), "invalid nonce"),
    (f"r={RFC_COMBINED},c=biws,p=AAAA".encode(), "invalid SCRAM client-final message"),
    (f"c=biws,r={RFC_COMBINED}".encode(), "invalid SCRAM client-final message"),
    (rfc_final(p=b64(b"short")), "Invalid user credentials"),
    (rfc_final(p=b64(bytes(32))), "Invalid user credentials"),
])
def test_scram_malformed_or_wrong_client_final(final: bytes, complaint: str) -> None:
    """Bad client-final messages fail with a message naming the problem and never echoing the proof."""
    server = rfc_server()
    server.evaluate(f"n,,n=user,r={RFC_CLIENT_NONCE}".encode())
    with pytest.raises(AuthenticationFailed, match=complaint) as info:
        server.evaluate(final)
    assert "dHzbZapW" not in str(info.value) and "AAAA" not in str(info.value)
    assert not server.complete


def test_scram_third_token_is_refused() -> None:
    """After the server-final message the exchange takes no more tokens."""
    server = rfc_server()
    server.evaluate(f"n,,n=user,r={RFC_CLIENT_NONCE}".encode())
    server.evaluate(rfc_final())
    with pytest.raises(AuthenticationFailed):
        server.evaluate(rfc_final())


def test_scram_refuses_credentials_below_kafka_minimum_iterations() -> None:
    """A stored credential with fewer than 4096 iterations is not used."""
    weak = ScramCredential.from_password("SCRAM-SHA-256", "pencil", salt=RFC_SALT, iterations=1000)
    server = ScramServer("SCRAM-SHA-256", lambda mech, name: weak)
    with pytest.raises(AuthenticationFailed, match="Invalid user credentials"):
        server.evaluate(b"n,,n=user,r=abc")


def test_create_server_dispatch() -> None:
    """create_server knows the four mechanisms, needs a validator for OAUTHBEARER, refuses the rest."""
    assert SUPPORTED_MECHANISMS == ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
    kw: dict[str, Any] = {"plain_users": no_plain_users, "scram_credentials": no_scram}
    assert create_server("PLAIN", **kw).mechanism == "PLAIN"
    assert create_server("SCRAM-SHA-256", **kw).mechanism == "SCRAM-SHA-256"
    assert create_server("OAUTHBEARER", oauth_validator=UnsecuredJwsValidator(), **kw).mechanism == "OAUTHBEARER"
    for bad in ("GSSAPI", "plain", "SCRAM-SHA-1"):
        with pytest.raises(ValueError):
            create_server(bad, **kw)
    with pytest.raises(ValueError, match="validator"):
        create_server("OAUTHBEARER", **kw)


# --- OAUTHBEARER with unsecured tokens ----------------------------------------------------------------

def unsecured_token(claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    header = {"alg": "none"} if header is None else header
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}."


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "alice", "iat": NOW - 10, "exp": NOW + 3600, "scope": "read write"} | extra


def initial_response(token: str, *, authzid: str = "", extensions: dict[str, str] | None = None,
                     scheme: str = "Bearer") -> bytes:
    pairs = "".join(f"{k}={v}\x01" for k, v in (extensions or {}).items())
    gs2 = f"n,a={authzid}," if authzid else "n,,"
    return f"{gs2}\x01auth={scheme} {token}\x01{pairs}\x01".encode()


def unsecured(**kw: Any) -> UnsecuredJwsValidator:
    return UnsecuredJwsValidator(clock=lambda: NOW, **kw)


def oauth_server(**kw: Any) -> OAuthBearerServer:
    return OAuthBearerServer(unsecured(**kw))


def test_oauthbearer_unsecured_token_succeeds() -> None:
    """A valid unsecured token completes in one step; principal from 'sub', expiry from 'exp' in ms."""
    server = oauth_server()
    assert server.evaluate(initial_response(unsecured_token(claims()))) == b""
    assert server.complete
    assert server.principal_name == "alice"
    assert server.session_expiry_ms == int((NOW + 3600) * 1000)
    assert server.extensions == {}


def test_oauthbearer_scheme_is_case_insensitive_and_extensions_kept() -> None:
    """'bearer' in any case is accepted, and other key=value pairs are kept as SASL extensions."""
    server = oauth_server()
    server.evaluate(initial_response(unsecured_token(claims()), scheme="BEARER",
                                     extensions={"traceId": "abc 123", "logicalCluster": "lkc-1"}))
    assert server.extensions == {"traceId": "abc 123", "logicalCluster": "lkc-1"}


def test_oauthbearer_authzid_must_equal_principal() -> None:
    """An authzid equal to the token's principal is fine; a different one fails."""
    server = oauth_server()
    server.evaluate(initial_response(unsecured_token(claims()), authzid="alice"))
    assert server.principal_name == "alice"
    with pytest.raises(AuthenticationFailed, match="authorization id"):
        oauth_server().evaluate(initial_response(unsecured_token(claims()), authzid="admin"))


def test_oauthbearer_invalid_token_fails_in_two_steps() -> None:
    """An expired token gets a JSON invalid_token challenge first; the failure comes after the client's
    %x01, and its message carries neither the token nor the reason."""
    token = unsecured_token(claims(exp=NOW - 1))
    server = oauth_server()
    challenge = server.evaluate(initial_response(token))
    assert json.loads(challenge) == {"status": "invalid_token"}
    assert not server.complete
    assert server.token_error == "the token has expired"
    with pytest.raises(AuthenticationFailed) as info:
        server.evaluate(b"\x01")
    assert str(info.value) == "Authentication failed: invalid token"
    assert token not in str(info.value)
    with pytest.raises(AuthenticationFailed):
        server.evaluate(initial_response(unsecured_token(claims())))
    assert not server.complete


def test_oauthbearer_missing_scope_challenge() -> None:
    """A token lacking a required scope gets an insufficient_scope challenge naming the scope."""
    server = oauth_server(required_scopes=("admin",))
    challenge = server.evaluate(initial_response(unsecured_token(claims())))
    assert json.loads(challenge) == {"status": "insufficient_scope", "scope": "admin"}
    with pytest.raises(AuthenticationFailed, match="insufficient scope"):
        server.evaluate(b"\x01")


def test_oauthbearer_anything_but_ack_after_challenge_fails() -> None:
    """After the error challenge, a new initial response is not a second chance."""
    server = oauth_server()
    server.evaluate(initial_response(unsecured_token(claims(exp=NOW - 1))))
    with pytest.raises(AuthenticationFailed, match="invalid token"):
        server.evaluate(initial_response(unsecured_token(claims())))


@pytest.mark.parametrize("message", [
    b"n,,auth=Bearer x\x01\x01",                   # no separator after the gs2 header
    b"y,,\x01auth=Bearer x\x01\x01",               # gs2 flag other than n
    b"n,,\x01auth=Bearer x\x01",                   # missing the closing %x01
    b"n,,\x01\x01",                                # no auth
    b"n,,\x01host=x\x01\x01",                      # no auth
    b"n,,\x01auth=Basic abc\x01\x01",              # not Bearer
    b"n,,\x01auth=Bearer\x01\x01",                 # no token
    b"n,,\x01auth=Bearer a b\x01\x01",             # token with a space
    b"n,,\x01auth=Bearer x\x01auth=Bearer y\x01\x01",  # repeated key
    b"n,,\x01auth=Bearer x\x01bad-key=1\x01\x01",  # bad extension key
    b"n,,\x01auth=Bearer x\x01empty=\x01\x01",     # empty extension value
    b"n,b=x,\x01auth=Bearer x\x01\x01",            # bad authzid field
    b"\xff",                                       # not UTF-8
])
def test_oauthbearer_malformed_initial_response(message: bytes) -> None:
    """Malformed client initial responses fail at once (no challenge)."""
    with pytest.raises(AuthenticationFailed, match="OAUTHBEARER"):
        oauth_server().evaluate(message)


@pytest.mark.parametrize("token, reason", [
    (unsecured_token(claims(exp=NOW - 1)), "expired"),
    (unsecured_token(claims(exp=NOW)), "expired"),
    (unsecured_token({"iat": NOW, "exp": NOW + 60}), "principal"),
    (unsecured_token(claims(sub="")), "principal"),
    (unsecured_token(claims(sub=42)), "principal"),
    (unsecured_token(claims(exp=None)), "'exp'"),
    (unsecured_token(claims(exp="soon")), "'exp'"),
    (unsecured_token(claims(exp=True)), "'exp'"),
    (unsecured_token(claims(iat=NOW + 60)), "future"),
    (unsecured_token(claims(iat=NOW - 10, exp=NOW - 20)), "expired"),
    (unsecured_token(claims(scope=7)), "scope"),
    (unsecured_token(claims(), header={"alg": "HS256"}), "alg"),
    (unsecured_token(claims(), header={"typ": "JWT"}), "alg"),
    (unsecured_token(claims()) + "c2ln", "signature"),
    ("only.two", "three"),
    ("a.b.c.", "three"),
    ("!!!." + b64url(b"{}") + ".", "header"),
    (b64url(b'{"alg":"none"}') + "." + b64url(b"[1]") + ".", "claims"),
    (b64url(b'{"alg":"none"}') + "." + b64url(b'{"sub":"a","exp":Infinity}') + ".", "claims"),
    (b64url(b'{"alg":"none"}') + "." + b64url(b"[" * 20_000) + ".", "claims"),
    ("a" * 70_000 + "..", "too large"),
])
def test_unsecured_validator_refuses(token: str, reason: str) -> None:
    """The unsecured validator refuses expired, principal-less, exp-less, signed, non-'none' and garbled
    tokens, with reasons that quote nothing from the token."""
    with pytest.raises(TokenInvalid, match=reason) as info:
        unsecured().validate(token)
    assert "alice" not in str(info.value)


def test_unsecured_validator_options() -> None:
    """Principal and scope claim names, list or space-separated scopes, required scopes and clock skew."""
    token = unsecured_token({"user": "bob", "exp": NOW + 60, "perms": ["a", "b"]})
    validated = unsecured(principal_claim="user", scope_claim="perms", required_scopes=("a",)).validate(token)
    assert validated == ValidatedToken("bob", int((NOW + 60) * 1000), frozenset({"a", "b"}))
    assert unsecured().validate(unsecured_token(claims())).scopes == frozenset({"read", "write"})
    assert unsecured().validate(unsecured_token(claims(scope=None))).scopes == frozenset()
    late = unsecured_token(claims(exp=NOW - 5, iat=NOW - 100))
    assert unsecured(allowable_clock_skew_ms=10_000).validate(late).principal_name == "alice"
    with pytest.raises(TokenInvalid):
        unsecured(allowable_clock_skew_ms=1_000).validate(late)


# --- JWKS-signed tokens --------------------------------------------------------------------------------

class Signer:
    """A key generated with cryptography, its JWK, and JWS signing for one algorithm."""

    def __init__(self, alg: str, kid: str) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        self.alg, self.kid = alg, kid
        if alg.startswith("RS"):
            self.key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            numbers = self.key.public_key().public_numbers()
            self.jwk = {"kty": "RSA", "kid": kid, "use": "sig", "n": b64url(int_bytes(numbers.n)),
                        "e": b64url(int_bytes(numbers.e))}
        else:
            curve, crv, self.size = {"ES256": (ec.SECP256R1(), "P-256", 32), "ES384": (ec.SECP384R1(), "P-384", 48),
                                     "ES512": (ec.SECP521R1(), "P-521", 66)}[alg]
            self.key = ec.generate_private_key(curve)
            numbers = self.key.public_key().public_numbers()
            self.jwk = {"kty": "EC", "kid": kid, "crv": crv, "x": b64url(numbers.x.to_bytes(self.size, "big")),
                        "y": b64url(numbers.y.to_bytes(self.size, "big"))}

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, padding
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        head = {"alg": self.alg, "kid": self.kid, "typ": "JWT"} | header
        signing_input = f"{b64url(json.dumps(head).encode())}.{b64url(json.dumps(claims).encode())}"
        algorithm = getattr(hashes, "SHA" + self.alg[2:])()
        if self.alg.startswith("RS"):
            signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), algorithm)
        else:
            r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(algorithm)))
            signature = r.to_bytes(self.size, "big") + s.to_bytes(self.size, "big")
        return f"{signing_input}.{b64url(signature)}"


def int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


@pytest.fixture(scope="module")
def signers() -> dict[str, Signer]:
    pytest.importorskip("cryptography")
    return {alg: Signer(alg, f"key-{alg}") for alg in ("RS256", "RS512", "ES256", "ES384", "ES512")}


def jwks_validator(signers: dict[str, Signer], **kw: Any) -> JwksValidator:
    jwks = {"keys": [s.jwk for s in signers.values()] + [{"kty": "oct", "k": "c2VjcmV0"}]}
    return JwksValidator(jwks, clock=lambda: NOW, **kw)


def jwt_claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "svc-orders", "iss": "https://idp.example", "aud": ["kafka", "other"], "iat": NOW - 10,
            "exp": NOW + 600, "scope": "produce"} | extra


def test_jwks_validates_rsa_and_ec_tokens(signers: dict[str, Signer]) -> None:
    """Tokens signed with RS256/RS512/ES256/ES384/ES512 verify against their JWK chosen by kid."""
    validator = jwks_validator(signers, expected_audience=["kafka"], expected_issuer="https://idp.example")
    for signer in signers.values():
        validated = validator.validate(signer.sign(jwt_claims()))
        assert validated == ValidatedToken("svc-orders", int((NOW + 600) * 1000), frozenset({"produce"}))


def test_jwks_token_in_an_oauthbearer_exchange(signers: dict[str, Signer]) -> None:
    """A signed token authenticates an OAUTHBEARER exchange."""
    server = create_server("OAUTHBEARER", plain_users=no_plain_users, scram_credentials=no_scram,
                           oauth_validator=jwks_validator(signers))
    server.evaluate(initial_response(signers["ES256"].sign(jwt_claims())))
    assert server.principal_name == "svc-orders"
    assert server.session_expiry_ms == int((NOW + 600) * 1000)


def test_jwks_without_kid_tries_matching_keys(signers: dict[str, Signer]) -> None:
    """A token without kid is checked against the keys of its algorithm's type."""
    token = signers["RS512"].sign(jwt_claims(), kid=None)
    assert jwks_validator(signers).validate(token).principal_name == "svc-orders"


def test_jwks_refuses_wrong_key_or_kid(signers: dict[str, Signer]) -> None:
    """A signature by another key, an unknown kid, or a tampered payload is refused."""
    validator = jwks_validator(signers)
    impostor = Signer("RS256", "key-RS256")
    with pytest.raises(TokenInvalid, match="signature does not verify"):
        validator.validate(impostor.sign(jwt_claims()))
    with pytest.raises(TokenInvalid, match="no key"):
        validator.validate(signers["RS256"].sign(jwt_claims(), kid="unknown"))
    with pytest.raises(TokenInvalid, match="no key"):
        validator.validate(signers["ES256"].sign(jwt_claims(), kid="key-ES384"))
    header, _, signature = signers["ES256"].sign(jwt_claims()).split(".")
    forged = f"{header}.{b64url(json.dumps(jwt_claims(sub='admin')).encode())}.{signature}"
    with pytest.raises(TokenInvalid, match="signature"):
        validator.validate(forged)


def test_jwks_refuses_alg_none_and_hmac(signers: dict[str, Signer]) -> None:
    """'none' and HS256 are never accepted, whatever the JWKS holds."""
    validator = jwks_validator(signers)
    for header in ({"alg": "none", "kid": "key-RS256"}, {"alg": "HS256"}):
        with pytest.raises(TokenInvalid, match="algorithm"):
            validator.validate(unsecured_token(jwt_claims(), header=header))
    with pytest.raises(TokenInvalid, match="critical"):
        validator.validate(signers["RS256"].sign(jwt_claims(), crit=["b64"]))


@pytest.mark.parametrize("extra, reason", [
    ({"exp": NOW - 31}, "expired"),
    ({"exp": None}, "'exp'"),
    ({"nbf": NOW + 31}, "not valid yet"),
    ({"iat": NOW + 31}, "future"),
    ({"iss": "https://evil.example"}, "issuer"),
    ({"iss": None}, "issuer"),
    ({"aud": "other"}, "audience"),
    ({"aud": None}, "audience"),
    ({"sub": None}, "principal"),
])
def test_jwks_refuses_bad_claims(signers: dict[str, Signer], extra: dict[str, Any], reason: str) -> None:
    """Expired, not-yet-valid, wrong issuer or audience, and subject-less tokens are refused (30 s skew)."""
    validator = jwks_validator(signers, expected_audience=["kafka"], expected_issuer="https://idp.example")
    token = signers["ES256"].sign({k: v for k, v in jwt_claims(**extra).items() if v is not None})
    with pytest.raises(TokenInvalid, match=reason):
        validator.validate(token)


def test_jwks_clock_skew_and_string_audience(signers: dict[str, Signer]) -> None:
    """Within the 30 s default skew an expired token still passes; 'aud' may be a single string."""
    validator = jwks_validator(signers, expected_audience=["kafka"])
    token = signers["RS256"].sign(jwt_claims(exp=NOW - 29, iat=NOW - 100, aud="kafka"))
    assert validator.validate(token).principal_name == "svc-orders"


def test_jwks_from_file_and_bad_jwks(signers: dict[str, Signer], tmp_path: Path) -> None:
    """A JWKS file loads; a missing, non-JSON or malformed JWKS raises ValueError naming the problem."""
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [signers["ES384"].jwk]}))
    validator = JwksValidator.from_file(path, clock=lambda: NOW)
    assert validator.validate(signers["ES384"].sign(jwt_claims())).principal_name == "svc-orders"
    with pytest.raises(ValueError, match="missing.json"):
        JwksValidator.from_file(tmp_path / "missing.json")
    path.write_text("{not json")
    with pytest.raises(ValueError, match="jwks.json"):
        JwksValidator.from_file(path)
    with pytest.raises(ValueError, match="'keys'"):
        JwksValidator({"nokeys": []})
    with pytest.raises(ValueError, match="#0"):
        JwksValidator({"keys": [{"kty": "EC", "crv": "P-192", "x": "AA", "y": "AA"}]})
    with pytest.raises(ValueError, match="2048"):
        JwksValidator({"keys": [{"kty": "RSA", "n": b64url(int_bytes(2**1023 + 1)), "e": "AQAB"}]})
