"""OAUTHBEARER with signed tokens: the broker checks them against a JWKS file
(``sasl.oauthbearer.jwks.endpoint.url``), with Kafka's expected audience and issuer checks, and a
confluent-kafka client supplies an RS256 token from its ``oauth_cb`` (as an application with its own
identity provider does). A token signed by another key, for another audience, or expired is refused.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ISSUER = "https://idp.example"
AUDIENCE = "moldau-test"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    return {"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
            "n": b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
            "e": b64url(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big"))}


def token(key: rsa.RSAPrivateKey, kid: str, subject: str, *, audience: str = AUDIENCE, lifetime_s: int = 600) -> str:
    now = int(time.time())
    header = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": kid}).encode())
    claims = b64url(json.dumps({"sub": subject, "iss": ISSUER, "aud": audience, "iat": now,
                                "exp": now + lifetime_s}).encode())
    signature = key.sign(f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{claims}.{b64url(signature)}"


@pytest.fixture
def jwks_broker(start_broker: Any, tmp_path: Path) -> tuple[Any, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk(key, "key-1")]}))
    proc = start_broker("--set", "listeners=SASL_PLAINTEXT://127.0.0.1:0",
                        "--set", "sasl.enabled.mechanisms=OAUTHBEARER",
                        "--set", f"sasl.oauthbearer.jwks.endpoint.url={jwks.as_uri()}",
                        "--set", f"sasl.oauthbearer.expected.audience={AUDIENCE}",
                        "--set", f"sasl.oauthbearer.expected.issuer={ISSUER}",
                        "--set", "connection.failed.authentication.delay.ms=0", "--log-level", "debug")
    return proc, key


def client_config(proc: Any, make_token: Any) -> dict[str, Any]:
    return {"bootstrap.servers": proc.listeners["SASL_PLAINTEXT"], "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "OAUTHBEARER", "oauth_cb": lambda _config: (make_token(), time.time() + 600)}


def test_a_token_signed_by_a_jwks_key_authenticates(jwks_broker: tuple[Any, rsa.RSAPrivateKey]) -> None:
    proc, key = jwks_broker
    subject = f"service-{uuid.uuid4().hex[:6]}"
    producer = Producer({**client_config(proc, lambda: token(key, "key-1", subject)), "message.timeout.ms": 10000})
    delivered: list[Any] = []
    producer.produce(f"jwks-{uuid.uuid4().hex[:8]}", b"signed", on_delivery=lambda e, m: delivered.append(e))
    producer.flush(15)
    assert delivered == [None]
    proc.wait_for_log(lambda r: r.get("event") == "sasl.authenticated" and r.get("principal") == f"User:{subject}",
                      what="the token's subject as the principal")


@pytest.mark.parametrize("forged", ["other-key", "other-audience", "expired"])
def test_a_token_the_jwks_does_not_vouch_for_is_refused(jwks_broker: tuple[Any, rsa.RSAPrivateKey],
                                                        forged: str) -> None:
    proc, key = jwks_broker
    if forged == "other-key":
        stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        make = lambda: token(stranger, "key-1", "mallory")
    elif forged == "other-audience":
        make = lambda: token(key, "key-1", "mallory", audience="someone-else")
    else:
        make = lambda: token(key, "key-1", "mallory", lifetime_s=-120)
    admin = AdminClient(client_config(proc, make))
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)
    proc.wait_for_log(lambda r: r.get("event") == "sasl.authentication_failed" and r.get("mechanism") == "OAUTHBEARER",
                      what="the refused token logged")
