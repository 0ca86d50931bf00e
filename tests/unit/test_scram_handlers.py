"""DescribeUserScramCredentials (key 50) and AlterUserScramCredentials (key 51) against a real in-process
broker, over its PLAINTEXT listener with the project's codec; a SCRAM login over its SASL_PLAINTEXT
listener with a credential made through AlterUserScramCredentials; and ``moldau scram`` (broker/scram_cli.py)
run in-process against the same broker. Each test names the Kafka behaviour it checks
(``ScramImage.describe``, ``ScramControlManager.alterCredentials``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import io
import itertools
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from broker import scram_cli
from broker.config import BrokerConfig
from broker.security.acls import (
    CLUSTER_RESOURCE_NAME,
    AclBinding,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourceType,
)
from broker.security.scram_credentials import salted_password
from broker.server import Broker
from protocol import messages as m
from protocol.errors import ErrorCode
from tests.compat.conftest import KafkaSocket
from tests.unit.test_sasl_mechanisms import scram_client


@pytest.fixture(autouse=True)
def every_log_level() -> Any:
    """capture_logs sees only what the bound logger lets through: an earlier test (an embedded broker) may
    have configured structlog to drop info events, so these tests start from structlog's defaults."""
    import structlog

    saved = structlog.get_config()
    structlog.reset_defaults()
    yield
    structlog.configure(**saved)

DESCRIBE, ALTER, SASL_HANDSHAKE, SASL_AUTHENTICATE = 50, 51, 17, 36
SHA256, SHA512 = 1, 2
CODES = {"SCRAM-SHA-256": SHA256, "SCRAM-SHA-512": SHA512}
DS = m.DescribeUserScramCredentialsRequest
AS = m.AlterUserScramCredentialsRequest
SALT = b"s" * 32


class Client:
    """A KafkaSocket driven from the broker's own event loop (its blocking calls run in a thread)."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = KafkaSocket(*address)
        self._corr = itertools.count(1)

    async def call(self, api_key: int, version: int, body: Any) -> Any:
        return await asyncio.to_thread(self.sock.request, api_key, version, next(self._corr), body)

    async def describe(self, users: list[str] | None) -> Any:
        body = DS(users=None if users is None else [DS.UserName(name=u) for u in users])
        return await self.call(DESCRIBE, 0, body)

    async def alter(self, deletions: Sequence[Any] = (),
                    upsertions: Sequence[Any] = ()) -> dict[str, tuple[int, str | None]]:
        """{user: (error code, message)}; fails if a user is answered twice."""
        answer = await self.call(ALTER, 0, AS(deletions=list(deletions), upsertions=list(upsertions)))
        results = {r.user: (r.error_code, r.error_message) for r in answer.results}
        assert len(results) == len(answer.results), f"a user answered twice: {answer.results}"
        return results

    def close(self) -> None:
        self.sock.close()


def upsertion(user: str, mechanism: str = "SCRAM-SHA-512", password: str = "secret", *, iterations: int = 4096,
              salt: bytes = SALT, salted: bytes | None = None) -> Any:
    return AS.ScramCredentialUpsertion(
        name=user, mechanism=CODES.get(mechanism, 0), iterations=iterations, salt=salt,
        salted_password=salted if salted is not None else salted_password(mechanism, password, salt, iterations))


def raw_upsertion(user: str, mechanism_code: int, iterations: int = 4096) -> Any:
    return AS.ScramCredentialUpsertion(name=user, mechanism=mechanism_code, iterations=iterations, salt=SALT,
                                       salted_password=b"x" * 64)


def deletion(user: str, mechanism: str | int = "SCRAM-SHA-512") -> Any:
    return AS.ScramCredentialDeletion(name=user, mechanism=CODES[mechanism] if isinstance(mechanism, str)
                                      else mechanism)


def described(answer: Any) -> dict[str, Any]:
    """{user: [(mechanism code, iterations)] or (error code, message)}."""
    assert answer.error_code == 0, answer
    return {r.user: sorted((c.mechanism, c.iterations) for c in r.credential_infos) if r.error_code == 0
            else (r.error_code, r.error_message) for r in answer.results}


def run(test: Callable[[Broker, Client], Awaitable[None]], **settings: Any) -> None:
    """Run ``test`` against a started broker (PLAINTEXT and SASL_PLAINTEXT listeners, memory storage unless
    settings say otherwise) and a client on its PLAINTEXT listener."""
    async def main() -> None:
        base = {"listeners": "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0"}
        if "log.dirs" not in settings:
            base["storage.url"] = "memory://"
        broker = Broker(BrokerConfig.from_settings({**base, **settings}))
        await broker.start()
        client = Client(broker.listener("PLAINTEXT").bound)
        try:
            await asyncio.wait_for(test(broker, client), 30)
        finally:
            client.close()
            await broker.stop()

    asyncio.run(main())


# ---------------------------------------------------------------- DescribeUserScramCredentials

def test_describe_null_or_empty_users_lists_every_user_with_mechanism_codes_and_iterations() -> None:
    """users null or empty: every user with a credential; SCRAM-SHA-256 is 1, SCRAM-SHA-512 is 2."""
    async def test(broker: Broker, client: Client) -> None:
        assert described(await client.describe(None)) == {}
        assert await client.alter(upsertions=[upsertion("alice", "SCRAM-SHA-256", iterations=8192),
                                              upsertion("bob", "SCRAM-SHA-512")]) == {"alice": (0, None),
                                                                                      "bob": (0, None)}
        assert await client.alter(upsertions=[upsertion("alice", "SCRAM-SHA-512", iterations=4096)]) == {
            "alice": (0, None)}
        expected = {"alice": [(SHA256, 8192), (SHA512, 4096)], "bob": [(SHA512, 4096)]}
        assert described(await client.describe(None)) == expected
        assert described(await client.describe([])) == expected
    run(test)


def test_describe_named_users_answers_each_and_unknown_ones_with_resource_not_found() -> None:
    """A named user without credentials gets RESOURCE_NOT_FOUND with Kafka's message naming it."""
    async def test(broker: Broker, client: Client) -> None:
        await client.alter(upsertions=[upsertion("alice"), upsertion("bob")])
        answer = await client.describe(["bob", "nobody"])
        assert [r.user for r in answer.results] == ["bob", "nobody"]
        assert described(answer) == {
            "bob": [(SHA512, 4096)],
            "nobody": (ErrorCode.RESOURCE_NOT_FOUND, "Attempt to describe a user credential that does not exist: nobody")}
    run(test)


def test_describe_a_user_named_twice_gets_one_duplicate_resource_result() -> None:
    """A name given twice (or more) gets one result, DUPLICATE_RESOURCE, and no credential infos."""
    async def test(broker: Broker, client: Client) -> None:
        await client.alter(upsertions=[upsertion("alice"), upsertion("bob")])
        answer = await client.describe(["alice", "bob", "alice", "alice"])
        assert [r.user for r in answer.results] == ["alice", "bob"]
        assert described(answer) == {
            "alice": (ErrorCode.DUPLICATE_RESOURCE,
                      "Cannot describe SCRAM credentials for the same user twice in a single request: alice"),
            "bob": [(SHA512, 4096)]}
    run(test)


# ---------------------------------------------------------------- AlterUserScramCredentials

class WireScram:
    """Looks like a SaslServer to the RFC 5802 client: each token goes out in a SaslAuthenticate v2."""

    def __init__(self, client: KafkaSocket) -> None:
        self.client = client
        self.corr = itertools.count(100)

    def evaluate(self, token: bytes) -> bytes:
        answer = self.client.request(SASL_AUTHENTICATE, 2, next(self.corr), m.SaslAuthenticateRequest(auth_bytes=token))
        if answer.error_code:
            raise PermissionError(f"{ErrorCode(answer.error_code).name}: {answer.error_message}")
        return bytes(answer.auth_bytes)


def sasl_login(address: tuple[str, int], mechanism: str, user: str, password: str) -> None:
    """A SCRAM login on a SASL listener (blocking): SaslHandshake v1, then SaslAuthenticate tokens."""
    sock = KafkaSocket(*address)
    try:
        answer = sock.request(SASL_HANDSHAKE, 1, 1, m.SaslHandshakeRequest(mechanism=mechanism))
        assert answer.error_code == 0, answer
        scram_client(WireScram(sock), mechanism, user, password)  # type: ignore[arg-type]
    finally:
        sock.close()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_upserted_credential_logs_in_over_sasl_and_wrong_password_does_not(mechanism: str) -> None:
    """The salted password an upsertion carries is all the broker needs: a client then authenticates with
    the password over SASL_PLAINTEXT; another password gets SASL_AUTHENTICATION_FAILED."""
    async def test(broker: Broker, client: Client) -> None:
        sasl = broker.listener("SASL_PLAINTEXT").bound
        assert await client.alter(upsertions=[upsertion("carol", mechanism, "carol-secret", iterations=4500)]) == {
            "carol": (0, None)}
        await asyncio.to_thread(sasl_login, sasl, mechanism, "carol", "carol-secret")
        with pytest.raises(PermissionError, match="SASL_AUTHENTICATION_FAILED"):
            await asyncio.to_thread(sasl_login, sasl, mechanism, "carol", "not-the-secret")
        # A replaced credential takes effect at once: the old password stops working.
        assert await client.alter(upsertions=[upsertion("carol", mechanism, "new-secret")]) == {"carol": (0, None)}
        await asyncio.to_thread(sasl_login, sasl, mechanism, "carol", "new-secret")
        with pytest.raises(PermissionError, match="SASL_AUTHENTICATION_FAILED"):
            await asyncio.to_thread(sasl_login, sasl, mechanism, "carol", "carol-secret")
    run(test)


def test_delete_removes_one_mechanism_and_a_missing_credential_is_resource_not_found() -> None:
    """Deleting one mechanism leaves the other; deleting a credential that does not exist (again, or an
    unknown user) is RESOURCE_NOT_FOUND; the deleted credential no longer logs in."""
    async def test(broker: Broker, client: Client) -> None:
        await client.alter(upsertions=[upsertion("dave", "SCRAM-SHA-256", "pw")])
        await client.alter(upsertions=[upsertion("dave", "SCRAM-SHA-512", "pw")])
        assert await client.alter(deletions=[deletion("dave", "SCRAM-SHA-256")]) == {"dave": (0, None)}
        assert described(await client.describe(["dave"])) == {"dave": [(SHA512, 4096)]}
        missing = (ErrorCode.RESOURCE_NOT_FOUND, "Attempt to delete a user credential that does not exist")
        assert await client.alter(deletions=[deletion("dave", "SCRAM-SHA-256"), deletion("erin")]) == {
            "dave": missing, "erin": missing}
        with pytest.raises(PermissionError, match="SASL_AUTHENTICATION_FAILED"):
            await asyncio.to_thread(sasl_login, broker.listener("SASL_PLAINTEXT").bound, "SCRAM-SHA-256", "dave", "pw")
        assert await client.alter(deletions=[deletion("dave", "SCRAM-SHA-512")]) == {"dave": (0, None)}
        assert described(await client.describe(None)) == {}
    run(test)


def test_each_refused_user_gets_kafkas_error_and_the_accepted_changes_still_apply() -> None:
    """Empty name: UNACCEPTABLE_CREDENTIAL; mechanism not 1 or 2: UNSUPPORTED_SASL_MECHANISM; iterations
    outside 4096..16384: UNACCEPTABLE_CREDENTIAL "Too few/many iterations"; the valid changes of the same
    request are applied."""
    async def test(broker: Broker, client: Client) -> None:
        await client.alter(upsertions=[upsertion("gone")])
        results = await client.alter(
            deletions=[deletion("gone"), deletion("", SHA512), deletion("mech-del", 3)],
            upsertions=[upsertion("ok"), raw_upsertion("", SHA256), raw_upsertion("mech0", 0),
                        raw_upsertion("mech3", 3), upsertion("few", iterations=4095),
                        upsertion("many", iterations=16385), upsertion("edge", iterations=16384)])
        unknown = (ErrorCode.UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism")
        assert results == {
            "gone": (0, None), "": (ErrorCode.UNACCEPTABLE_CREDENTIAL, "Username must not be empty"),
            "mech-del": unknown, "ok": (0, None), "mech0": unknown, "mech3": unknown,
            "few": (ErrorCode.UNACCEPTABLE_CREDENTIAL, "Too few iterations"),
            "many": (ErrorCode.UNACCEPTABLE_CREDENTIAL, "Too many iterations"), "edge": (0, None)}
        assert list(results) == ["gone", "", "mech-del", "ok", "mech0", "mech3", "few", "many", "edge"]
        assert described(await client.describe(None)) == {"edge": [(SHA512, 16384)], "ok": [(SHA512, 4096)]}
    run(test)


def test_a_user_altered_twice_in_one_request_is_duplicate_resource_and_left_unchanged() -> None:
    """A user named by two deletions, two upsertions (even of different mechanisms) or a deletion and an
    upsertion gets one DUPLICATE_RESOURCE result and none of its changes apply; other users' do."""
    async def test(broker: Broker, client: Client) -> None:
        await client.alter(upsertions=[upsertion("mixed", "SCRAM-SHA-256")])
        await client.alter(upsertions=[upsertion("twice-del", "SCRAM-SHA-256")])
        await client.alter(upsertions=[upsertion("twice-del", "SCRAM-SHA-512")])
        twice = (ErrorCode.DUPLICATE_RESOURCE, "A user credential cannot be altered twice in the same request")
        results = await client.alter(
            deletions=[deletion("twice-del", "SCRAM-SHA-256"), deletion("twice-del", "SCRAM-SHA-512"),
                       deletion("mixed", "SCRAM-SHA-256")],
            upsertions=[upsertion("mixed", "SCRAM-SHA-512"), upsertion("two-mechs", "SCRAM-SHA-256"),
                        upsertion("two-mechs", "SCRAM-SHA-512"), upsertion("thrice"), upsertion("thrice"),
                        upsertion("thrice"), upsertion("single")])
        assert results == {"twice-del": twice, "mixed": twice, "two-mechs": twice, "thrice": twice,
                           "single": (0, None)}
        assert described(await client.describe(None)) == {
            "mixed": [(SHA256, 4096)], "single": [(SHA512, 4096)], "twice-del": [(SHA256, 4096), (SHA512, 4096)]}
    run(test)


def test_a_users_first_refusal_stands_over_later_entries() -> None:
    """Kafka looks no further at a user once refused: a missing deletion followed by an upsertion of the
    same user stays RESOURCE_NOT_FOUND (not DUPLICATE_RESOURCE), and the upsertion is not applied."""
    async def test(broker: Broker, client: Client) -> None:
        results = await client.alter(deletions=[deletion("frank")], upsertions=[upsertion("frank")])
        assert results == {"frank": (ErrorCode.RESOURCE_NOT_FOUND,
                                     "Attempt to delete a user credential that does not exist")}
        assert described(await client.describe(None)) == {}
    run(test)


@pytest.mark.parametrize(("salt", "salted", "message"), [
    (b"", b"k" * 64, "Salt must not be empty"),
    (SALT, b"k" * 32, "must be 64 bytes"),
    (SALT, b"", "must be 64 bytes"),
])
def test_an_unusable_salt_or_salted_password_is_unacceptable_credential(salt: bytes, salted: bytes,
                                                                         message: str) -> None:
    """Moldau's own check: no client could log in with an empty salt or a salted password that is not the
    digest size, so the upsertion is UNACCEPTABLE_CREDENTIAL and nothing is stored."""
    async def test(broker: Broker, client: Client) -> None:
        [(code, text)] = (await client.alter(upsertions=[upsertion("gina", salt=salt, salted=salted)])).values()
        assert code == ErrorCode.UNACCEPTABLE_CREDENTIAL and message in (text or ""), (code, text)
        assert described(await client.describe(None)) == {}
    run(test)


AUTHORIZER = {"authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer"}


def allow_cluster(operation: AclOperation) -> AclBinding:
    return AclBinding(ResourceType.CLUSTER, CLUSTER_RESOURCE_NAME, PatternType.LITERAL, "User:ANONYMOUS", "*",
                      operation, AclPermissionType.ALLOW)


def test_without_cluster_permission_describe_and_alter_are_cluster_authorization_failed() -> None:
    """With an authorizer and no ACL for the (anonymous) principal: Describe answers a top-level
    CLUSTER_AUTHORIZATION_FAILED and no results; Alter gives every distinct user, sorted, that error and
    changes nothing."""
    async def test(broker: Broker, client: Client) -> None:
        answer = await client.describe(["alice"])
        assert (answer.error_code, answer.error_message, answer.results) == (
            ErrorCode.CLUSTER_AUTHORIZATION_FAILED, "Cluster authorization failed.", [])
        answer = await client.call(ALTER, 0, AS(deletions=[deletion("zed"), deletion("amy")],
                                                upsertions=[upsertion("amy"), upsertion("bo")]))
        assert [(r.user, r.error_code, r.error_message) for r in answer.results] == [
            (user, ErrorCode.CLUSTER_AUTHORIZATION_FAILED, "Cluster authorization failed.")
            for user in ("amy", "bo", "zed")]
        assert broker.scram_credentials.users() == []
    run(test, **AUTHORIZER)


def test_describe_needs_describe_and_alter_needs_alter_on_the_cluster() -> None:
    """DESCRIBE on the cluster allows Describe but not Alter; ALTER allows Alter (and, as an ALLOW of ALTER
    implies DESCRIBE, Describe)."""
    async def test(broker: Broker, client: Client) -> None:
        assert broker.acls is not None
        await broker.acls.create([allow_cluster(AclOperation.DESCRIBE)])
        assert described(await client.describe(None)) == {}
        denied = (ErrorCode.CLUSTER_AUTHORIZATION_FAILED, "Cluster authorization failed.")
        assert await client.alter(upsertions=[upsertion("amy")]) == {"amy": denied}
        await broker.acls.create([allow_cluster(AclOperation.ALTER)])
        assert await client.alter(upsertions=[upsertion("amy")]) == {"amy": (0, None)}
        assert described(await client.describe(["amy"])) == {"amy": [(SHA512, 4096)]}
    run(test, **AUTHORIZER)


def test_credentials_set_over_the_protocol_survive_a_restart(tmp_path: Path) -> None:
    """With a data directory the store is a file: a new broker on it describes the same users and logs
    them in; a deletion persists too."""
    settings = {"log.dirs": str(tmp_path)}

    async def first(broker: Broker, client: Client) -> None:
        await client.alter(upsertions=[upsertion("hal", "SCRAM-SHA-256", "hal-secret", iterations=5000),
                                       upsertion("ivy", "SCRAM-SHA-512", "ivy-secret")])
    run(first, **settings)
    assert (tmp_path / "scram-credentials.json").exists()

    async def second(broker: Broker, client: Client) -> None:
        assert described(await client.describe(None)) == {"hal": [(SHA256, 5000)], "ivy": [(SHA512, 4096)]}
        await asyncio.to_thread(sasl_login, broker.listener("SASL_PLAINTEXT").bound, "SCRAM-SHA-256", "hal",
                                "hal-secret")
        assert await client.alter(deletions=[deletion("ivy")]) == {"ivy": (0, None)}
    run(second, **settings)

    async def third(broker: Broker, client: Client) -> None:
        assert described(await client.describe(None)) == {"hal": [(SHA256, 5000)]}
    run(third, **settings)


def test_a_store_that_cannot_be_written_fails_the_changes_not_made(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """When the credential file cannot be written, the changes made so far stand and the others are
    answered UNKNOWN_SERVER_ERROR; the broker keeps serving."""
    async def test(broker: Broker, client: Client) -> None:
        store = broker.scram_credentials
        real_upsert, calls = store.upsert, []

        def upsert(user: str, credential: Any) -> None:
            calls.append(user)
            if len(calls) > 1:
                raise OSError(28, "No space left on device")
            real_upsert(user, credential)

        monkeypatch.setattr(store, "upsert", upsert)
        with capture_logs() as events:
            results = await client.alter(upsertions=[upsertion("rob"), upsertion("sue"), upsertion("tom")])
        unwritten = (ErrorCode.UNKNOWN_SERVER_ERROR, "The SCRAM credential store could not be written")
        assert results == {"rob": (0, None), "sue": unwritten, "tom": unwritten}
        assert [e["event"] for e in events if e["log_level"] == "warning"] == ["scram.store_write_failed"]
        assert described(await client.describe(None)) == {"rob": [(SHA512, 4096)]}
    run(test, **{"log.dirs": str(tmp_path)})


def test_logs_name_users_and_mechanisms_but_never_salts_or_salted_passwords() -> None:
    """Accepted and refused changes are logged; neither the salt nor the salted password (raw, hex or
    base64) appears in any log event."""
    salt = b"\x01salt-that-must-not-leak\x02" + bytes(6)
    salted = salted_password("SCRAM-SHA-256", "pw", salt, 4096)
    secrets_seen = [v for b in (salt, salted) for v in (repr(b), b.hex(), base64.b64encode(b).decode())]

    async def test(broker: Broker, client: Client) -> None:
        with capture_logs() as events:
            await client.alter(upsertions=[upsertion("jay", "SCRAM-SHA-256", salt=salt, salted=salted),
                                           upsertion("kim", "SCRAM-SHA-256", salt=salt, salted=salted,
                                                     iterations=10),
                                           upsertion("lee", "SCRAM-SHA-256", salt=salt, salted=salted[:5])])
        text = repr(events)
        assert "scram.credential_upserted" in text and "jay" in text, events
        assert "scram.alter_refused" in text and "kim" in text, events  # "lee": the log throttle folds it
        assert not [s for s in secrets_seen if s in text], events
    run(test)


# ---------------------------------------------------------------- moldau scram

def cli(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    """Run ``moldau scram ARGV`` in-process (blocking): (exit code, stdout, stderr)."""
    import contextlib

    parser = argparse.ArgumentParser(prog="moldau")
    scram_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["scram", *argv])
    out, err = io.StringIO(), io.StringIO()
    # The broker logs to stdout from the other thread meanwhile: capture_logs keeps that out of ``out``.
    with capture_logs(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = scram_cli.run(args, stdin=io.StringIO(stdin))
    return code, out.getvalue(), err.getvalue()


def test_cli_set_list_delete_round_trip_and_the_password_logs_in(tmp_path: Path) -> None:
    """set (password from a file, then from stdin), list, delete; the credential works for a SCRAM login
    and the password is never printed."""
    async def test(broker: Broker, client: Client) -> None:
        bootstrap = f"127.0.0.1:{broker.listener('PLAINTEXT').bound[1]}"
        password_file = tmp_path / "pw"
        password_file.write_text("mia-secret\n")
        code, out, err = await asyncio.to_thread(cli, "set", "mia", "--mechanism", "scram-sha-512", "--iterations",
                                                 "8192", "--password-file", str(password_file),
                                                 "--bootstrap", bootstrap)
        assert (code, err) == (0, ""), (code, out, err)
        assert "mia-secret" not in out
        await asyncio.to_thread(sasl_login, broker.listener("SASL_PLAINTEXT").bound, "SCRAM-SHA-512", "mia",
                                "mia-secret")
        code, out, err = await asyncio.to_thread(cli, "--bootstrap", bootstrap, "set", "ned", "--mechanism",
                                                 "SCRAM-SHA-256", stdin="ned-secret\n")
        assert (code, err) == (0, ""), (code, out, err)
        await asyncio.to_thread(sasl_login, broker.listener("SASL_PLAINTEXT").bound, "SCRAM-SHA-256", "ned",
                                "ned-secret")
        code, out, err = await asyncio.to_thread(cli, "list", "--bootstrap", bootstrap)
        assert code == 0 and [line.split() for line in out.splitlines()] == [
            ["USER", "MECHANISM", "ITERATIONS"], ["mia", "SCRAM-SHA-512", "8192"], ["ned", "SCRAM-SHA-256", "4096"]]
        code, out, err = await asyncio.to_thread(cli, "delete", "mia", "--mechanism", "SCRAM-SHA-512",
                                                 "--bootstrap", bootstrap)
        assert (code, err) == (0, ""), (code, out, err)
        assert broker.scram_credentials.users() == ["ned"]
    run(test)


def test_cli_errors_are_one_line_with_exit_1_for_the_broker_and_2_for_usage(tmp_path: Path) -> None:
    """A user without credentials or a refused deletion: exit 1; bad iterations or an empty password: exit
    2, before anything is sent; every error is one ``moldau scram: error:`` line."""
    async def test(broker: Broker, client: Client) -> None:
        bootstrap = f"127.0.0.1:{broker.listener('PLAINTEXT').bound[1]}"
        await client.alter(upsertions=[upsertion("olga")])
        code, out, err = await asyncio.to_thread(cli, "list", "olga", "pat", "olga", "--bootstrap", bootstrap)
        assert code == 1 and "olga" in out and err == "moldau scram: error: pat has no SCRAM credentials\n", (
            code, out, err)
        code, out, err = await asyncio.to_thread(cli, "delete", "pat", "--mechanism", "SCRAM-SHA-256",
                                                 "--bootstrap", bootstrap)
        assert (code, err) == (1, ("moldau scram: error: deleting the SCRAM-SHA-256 credential of pat: "
                                   "RESOURCE_NOT_FOUND (Attempt to delete a user credential that does not exist)\n"))
        code, out, err = await asyncio.to_thread(cli, "set", "pat", "--mechanism", "SCRAM-SHA-256",
                                                 "--iterations", "100", "--bootstrap", bootstrap, stdin="pw\n")
        assert (code, err) == (2, "moldau scram: error: --iterations must be between 4096 and 16384, got 100\n")
        code, out, err = await asyncio.to_thread(cli, "set", "pat", "--mechanism", "SCRAM-SHA-256",
                                                 "--bootstrap", bootstrap, stdin="\n")
        assert (code, err) == (2, "moldau scram: error: the password is empty\n")
        code, out, err = await asyncio.to_thread(cli, "set", "pat", "--mechanism", "SCRAM-SHA-256",
                                                 "--password-file", str(tmp_path / "missing"), "--bootstrap", bootstrap)
        assert code == 2 and err.startswith("moldau scram: error: cannot read the password file "), err
        assert broker.scram_credentials.users() == ["olga"]
        # The SASL listener answers ApiVersions, then closes on anything else before authentication.
        sasl_bootstrap = f"127.0.0.1:{broker.listener('SASL_PLAINTEXT').bound[1]}"
        code, out, err = await asyncio.to_thread(cli, "list", "--bootstrap", sasl_bootstrap)
        assert code == 1 and "closed the connection" in err and "PLAINTEXT" in err, err
    run(test)


def test_cli_unreachable_broker_is_exit_1_and_bad_bootstrap_exit_2() -> None:
    code, _, err = cli("list", "--bootstrap", "127.0.0.1:1", "--timeout", "2")
    assert code == 1 and err.startswith("moldau scram: error: cannot reach the broker at 127.0.0.1:1"), err
    code, _, err = cli("list", "--bootstrap", "no-port")
    assert code == 2 and err.startswith("moldau scram: error: ") and err.count("\n") == 1, err


def test_cli_refuses_a_broker_that_does_not_serve_the_scram_apis() -> None:
    """A broker without keys 50/51 in ApiVersions: exit 1 naming the API (it would close the connection)."""
    async def test(broker: Broker, client: Client) -> None:
        for key in (DESCRIBE, ALTER):
            broker.registry.unregister(key)
        bootstrap = f"127.0.0.1:{broker.listener('PLAINTEXT').bound[1]}"
        code, _, err = await asyncio.to_thread(cli, "list", "--bootstrap", bootstrap)
        assert (code, err) == (1, (f"moldau scram: error: the broker at {bootstrap} does not serve "
                                   f"DescribeUserScramCredentials v0\n"))
    run(test)


def test_cli_password_is_salted_locally_with_32_random_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """What goes on the wire is a fresh 32-byte salt and Hi(password, salt, i), never the password."""
    sent: list[Any] = []

    def fake_alter(self: scram_cli.ScramAdmin, body: Any, what: str) -> None:
        sent.append(body)

    monkeypatch.setattr(scram_cli.ScramAdmin, "__init__", lambda self, *a: None)
    monkeypatch.setattr(scram_cli.ScramAdmin, "close", lambda self: None)
    monkeypatch.setattr(scram_cli.ScramAdmin, "_alter", fake_alter)
    for _ in range(2):
        assert cli("set", "quinn", "--mechanism", "SCRAM-SHA-256", stdin="quinn-secret\n")[0] == 0
    first, second = (body.upsertions[0] for body in sent)
    assert len(first.salt) == 32 and first.salt != second.salt
    assert first.salted_password == hashlib.pbkdf2_hmac("sha256", b"quinn-secret", first.salt, 4096)
    assert b"quinn-secret" not in repr(sent).encode()
