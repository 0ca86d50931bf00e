"""SCRAM credentials (broker/security/scram_credentials.py): keys derived as RFC 5802/7677 say, the JSON
file store (round trip, atomic replace, mode 0600, corrupt files), and Kafka's ``--add-scram`` syntax."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
from pathlib import Path

import pytest

from broker.security.scram_credentials import (
    MAX_ITERATIONS,
    MIN_ITERATIONS,
    SCRAM_MECHANISMS,
    ScramCredential,
    ScramCredentialStore,
    iterations_problem,
    parse_add_scram,
    salted_password,
)

RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_NONCE = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_AUTH_MESSAGE = (f"n=user,r=rOprNGfwEbeRWgbNEkqO,r={RFC_NONCE},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
                    f"c=biws,r={RFC_NONCE}").encode()
RFC_PROOF = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
RFC_SERVER_SIGNATURE = base64.b64decode("6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


def cred(mechanism: str = "SCRAM-SHA-256", password: str = "pw", iterations: int = 4096) -> ScramCredential:
    return ScramCredential.from_password(mechanism, password, salt=b"salt", iterations=iterations)


def test_from_password_matches_rfc7677_vector() -> None:
    """With RFC 7677's salt and password, StoredKey accepts the RFC's proof and ServerKey yields its
    server signature."""
    c = ScramCredential.from_password("SCRAM-SHA-256", "pencil", salt=RFC_SALT, iterations=4096)
    assert (c.mechanism, c.salt, c.iterations) == ("SCRAM-SHA-256", RFC_SALT, 4096)
    client_signature = hmac.digest(c.stored_key, RFC_AUTH_MESSAGE, "sha256")
    client_key = bytes(a ^ b for a, b in zip(RFC_PROOF, client_signature))
    assert hashlib.sha256(client_key).digest() == c.stored_key
    assert hmac.digest(c.server_key, RFC_AUTH_MESSAGE, "sha256") == RFC_SERVER_SIGNATURE


def test_from_salted_password_equals_from_password() -> None:
    """A credential from Hi(password, salt, i) is the one from the password, for both mechanisms."""
    for mechanism in SCRAM_MECHANISMS:
        salted = salted_password(mechanism, "secret", b"NaCl", 5000)
        assert len(salted) == hashlib.new(SCRAM_MECHANISMS[mechanism]).digest_size
        assert ScramCredential.from_salted_password(mechanism, salted, b"NaCl", 5000) == \
            ScramCredential.from_password(mechanism, "secret", salt=b"NaCl", iterations=5000)


def test_from_password_draws_a_random_salt() -> None:
    """Without a salt, each credential gets its own random one."""
    a, b = (ScramCredential.from_password("SCRAM-SHA-512", "pw") for _ in range(2))
    assert a.salt != b.salt and len(a.salt) >= 16
    assert len(a.stored_key) == len(a.server_key) == 64


def test_credential_checks_and_repr() -> None:
    """Unknown mechanisms, bad iterations and wrong key sizes are refused; repr shows no key or salt."""
    with pytest.raises(ValueError, match="SCRAM-SHA-256, SCRAM-SHA-512"):
        ScramCredential.from_password("SCRAM-SHA-1", "pw")
    with pytest.raises(ValueError):
        ScramCredential.from_password("SCRAM-SHA-256", "pw", iterations=0)
    with pytest.raises(ValueError, match="32 bytes"):
        ScramCredential.from_salted_password("SCRAM-SHA-256", bytes(64), b"s", 4096)
    with pytest.raises(ValueError):
        ScramCredential("SCRAM-SHA-256", b"s", bytes(31), bytes(32), 4096)
    c = cred()
    text = repr(c)
    assert "SCRAM-SHA-256" in text and "4096" in text
    for secret in (c.stored_key, c.server_key, c.salt):
        assert secret.hex() not in text and base64.b64encode(secret).decode() not in text and repr(secret) not in text


def test_iterations_problem_uses_kafka_messages() -> None:
    """Kafka's AlterUserScramCredentials messages for counts outside [4096, 16384]."""
    assert (MIN_ITERATIONS, MAX_ITERATIONS) == (4096, 16384)
    assert iterations_problem(4095) == "Too few iterations"
    assert iterations_problem(16385) == "Too many iterations"
    assert iterations_problem(4096) is None and iterations_problem(16384) is None


def test_store_round_trip_through_file(tmp_path: Path) -> None:
    """Credentials written by one store are read back by a new store over the same file."""
    path = tmp_path / "scram.json"
    store = ScramCredentialStore(path)
    store.load()  # no file yet: empty
    assert store.users() == []
    alice256, alice512, bob = cred(), cred("SCRAM-SHA-512", iterations=8192), cred(password="bob")
    store.upsert("alice", alice256)
    store.upsert("alice", alice512)
    store.upsert("bob", bob)
    reloaded = ScramCredentialStore(path)
    reloaded.load()
    assert reloaded.users() == ["alice", "bob"]
    assert reloaded.get("SCRAM-SHA-256", "alice") == alice256
    assert reloaded.get("SCRAM-SHA-512", "alice") == alice512
    assert reloaded.get("SCRAM-SHA-512", "bob") is None
    assert reloaded.get("SCRAM-SHA-256", "carol") is None
    assert not (tmp_path / "scram.json.tmp").exists()


def test_store_file_holds_no_password_and_is_private(tmp_path: Path) -> None:
    """The file is mode 0600, base64 salts and keys only, never the password."""
    path = tmp_path / "scram.json"
    store = ScramCredentialStore(path)
    store.upsert("alice", ScramCredential.from_password("SCRAM-SHA-256", "alice-secret"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "alice-secret" not in text
    entry = json.loads(text)["users"]["alice"]["SCRAM-SHA-256"]
    assert set(entry) == {"salt", "stored_key", "server_key", "iterations"}
    assert len(base64.b64decode(entry["stored_key"])) == 32


def test_store_upsert_replaces_and_delete_persists(tmp_path: Path) -> None:
    """Upsert replaces a user's credential for its mechanism; delete removes it and reports absence."""
    path = tmp_path / "scram.json"
    store = ScramCredentialStore(path)
    store.upsert("alice", cred(iterations=4096))
    store.upsert("alice", cred(iterations=5000))
    assert store.describe() == {"alice": [("SCRAM-SHA-256", 5000)]}
    assert store.delete("SCRAM-SHA-256", "alice") is True
    assert store.delete("SCRAM-SHA-256", "alice") is False
    assert store.delete("SCRAM-SHA-512", "nobody") is False
    reloaded = ScramCredentialStore(path)
    reloaded.load()
    assert reloaded.users() == []


def test_store_describe() -> None:
    """describe lists (mechanism, iterations) per user, all users or the ones asked for (unknown ones are
    left out)."""
    store = ScramCredentialStore(None)
    store.upsert("bob", cred("SCRAM-SHA-512", iterations=8192))
    store.upsert("alice", cred("SCRAM-SHA-512", iterations=4096))
    store.upsert("alice", cred("SCRAM-SHA-256", iterations=4096))
    assert store.describe() == {"alice": [("SCRAM-SHA-256", 4096), ("SCRAM-SHA-512", 4096)],
                                "bob": [("SCRAM-SHA-512", 8192)]}
    assert store.describe(["bob", "carol"]) == {"bob": [("SCRAM-SHA-512", 8192)]}


def test_memory_only_store_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no path the store keeps credentials in memory and touches no file."""
    monkeypatch.chdir(tmp_path)
    store = ScramCredentialStore(None)
    store.load()
    store.upsert("alice", cred())
    assert store.get("SCRAM-SHA-256", "alice") == cred()
    assert store.delete("SCRAM-SHA-256", "alice")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError):
        store.upsert("", cred())


@pytest.mark.parametrize("content", [
    "{not json",
    "[]",
    '{"version": 2, "users": {}}',
    '{"version": 1, "users": []}',
    '{"version": 1, "users": {"alice": {"SCRAM-SHA-256": {"salt": "!!"}}}}',
    ('{"version": 1, "users": {"alice": {"SCRAM-MD5": {"salt": "AA==", "stored_key": "AA==", '
     '"server_key": "AA==", "iterations": 4096}}}}'),
    ('{"version": 1, "users": {"alice": {"SCRAM-SHA-256": {"salt": "AA==", "stored_key": "AA==", '
     '"server_key": "AA==", "iterations": 4096}}}}'),
    '{"version": 1, "users": {"alice": {"SCRAM-SHA-256": []}}}',
    '{"version": 1, "users": {"alice": []}}',
])
def test_corrupt_store_file_raises_naming_it(tmp_path: Path, content: str) -> None:
    """A corrupt file raises ValueError naming the file, and the store does not start empty silently."""
    path = tmp_path / "scram.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="scram.json"):
        ScramCredentialStore(path).load()


def test_corrupt_store_message_quotes_no_key(tmp_path: Path) -> None:
    """The corrupt-file message names the user and problem but quotes no salt or key."""
    path = tmp_path / "scram.json"
    ScramCredentialStore(path).upsert("alice", cred())
    document = json.loads(path.read_text())
    entry = document["users"]["alice"]["SCRAM-SHA-256"]
    stored_key = entry["stored_key"]
    entry["server_key"] = "!!" + entry["server_key"]
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError) as info:
        ScramCredentialStore(path).load()
    assert "alice" in str(info.value)
    assert stored_key not in str(info.value) and entry["server_key"] not in str(info.value)


def test_parse_add_scram_password() -> None:
    """Kafka's ``MECHANISM=[name=...,password=...]`` gives a credential of that password."""
    mechanism, user, c = parse_add_scram("SCRAM-SHA-256=[name=alice,password=alice-secret]")
    assert (mechanism, user, c.iterations) == ("SCRAM-SHA-256", "alice", 4096)
    assert c == ScramCredential.from_password("SCRAM-SHA-256", "alice-secret", salt=c.salt)


def test_parse_add_scram_quoted_values_salt_and_iterations() -> None:
    """Quoted values lose their quotes and may hold commas; salt and iterations are honoured."""
    salt = base64.b64encode(b"pepper").decode()
    mechanism, user, c = parse_add_scram(
        f'SCRAM-SHA-512=[name="bob,the=builder",password="a,b=c",iterations=8192,salt="{salt}"]')
    assert (mechanism, user) == ("SCRAM-SHA-512", "bob,the=builder")
    assert c == ScramCredential.from_password("SCRAM-SHA-512", "a,b=c", salt=b"pepper", iterations=8192)


def test_parse_add_scram_salted_password() -> None:
    """saltedpassword (base64 of Hi(password, salt, i)) with salt stands in for the password."""
    salted = salted_password("SCRAM-SHA-256", "secret", b"NaCl", 4096)
    text = (f'SCRAM-SHA-256=[name=alice,salt="{base64.b64encode(b"NaCl").decode()}",'
            f'saltedpassword="{base64.b64encode(salted).decode()}"]')
    _, _, c = parse_add_scram(text)
    assert c == ScramCredential.from_password("SCRAM-SHA-256", "secret", salt=b"NaCl")


@pytest.mark.parametrize("text, complaint", [
    ("SCRAM-SHA-1=[name=alice,password=hunter2]", "SCRAM-SHA-1 is not supported; choose one of SCRAM-SHA-256"),
    ("hunter2", "MECHANISM="),
    ("SCRAM-SHA-256=name=alice,password=hunter2", "brackets"),
    ("SCRAM-SHA-256=[password=hunter2]", "'name'"),
    ("SCRAM-SHA-256=[name=,password=hunter2]", "'name'"),
    ("SCRAM-SHA-256=[name=alice]", "exactly one of 'password' or 'saltedpassword'"),
    ("SCRAM-SHA-256=[name=alice,password=hunter2,saltedpassword=AAAA,salt=AAAA]", "exactly one of"),
    ("SCRAM-SHA-256=[name=alice,password=hunter2,iterations=4095]", "between 4096 and 16384, got 4095"),
    ("SCRAM-SHA-256=[name=alice,password=hunter2,iterations=16385]", "between 4096 and 16384"),
    ("SCRAM-SHA-256=[name=alice,password=hunter2,iterations=many]", "integer"),
    ("SCRAM-SHA-256=[name=alice,saltedpassword=AAAA]", "'salt'"),
    ("SCRAM-SHA-256=[name=alice,password=hunter2,salt=*hunter2*]", "'salt' is not valid base64"),
    ("SCRAM-SHA-256=[name=alice,password=hunter2,salt=]", "'salt' must not be empty"),
    ("SCRAM-SHA-256=[name=alice,salt=AAAA,saltedpassword=hunter2]", "'saltedpassword' is not valid base64"),
    ("SCRAM-SHA-256=[name=alice,salt=AAAA,saltedpassword=AAAA]", "32 bytes"),
    ("SCRAM-SHA-256=[name=alice,pasword=hunter2]", "does not know 'pasword'"),
    ("SCRAM-SHA-256=[name=alice,hunter2]", "key=value"),
    ("SCRAM-SHA-256=[name=alice,password=\"hunter2]", "unterminated quoted value for 'password'"),
    ("SCRAM-SHA-256=[name=alice,password=\"hunter\"2]", "after the quoted value of 'password'"),
    ("SCRAM-SHA-256=[name=alice,password=x,password=hunter2]", "'password' more than once"),
    ("SCRAM-SHA-256=[name=alice,hunter2!=x]", "does not know a key"),
    ("hunter2!=[name=alice,password=hunter2]", "mechanism is not supported"),
])
def test_parse_add_scram_errors_name_the_problem_not_the_password(text: str, complaint: str) -> None:
    """Each mistake gets a ValueError saying what was wrong, and no message contains the password."""
    with pytest.raises(ValueError) as info:
        parse_add_scram(text)
    assert complaint in str(info.value)
    assert "hunter" not in str(info.value)
