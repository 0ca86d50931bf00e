"""SCRAM users managed over the Kafka protocol (KIP-554) on the real broker process: confluent-kafka's
AdminClient creates, describes and deletes credentials (AlterUserScramCredentials and
DescribeUserScramCredentials over PLAINTEXT), and a confluent-kafka Producer then authenticates with the new
credential over SASL_PLAINTEXT; ``moldau scram set/list/delete`` does the same as a command.

Each test uses its own user and topic names; every wait is bounded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.compat.conftest import REPO, BrokerProcess

DEADLINE_S = 20.0
LISTENERS = "listeners=PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0"


@pytest.fixture
def scram_broker(start_broker: Callable[..., BrokerProcess]) -> BrokerProcess:
    return start_broker("--set", LISTENERS)


def unique(what: str) -> str:
    return f"scram-{what}-{uuid.uuid4().hex[:8]}"


def admin(proc: BrokerProcess) -> Any:
    """An AdminClient on the PLAINTEXT listener; callers keep it referenced until its futures are done
    (a client collected early fails them with _DESTROY)."""
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": proc.listeners["PLAINTEXT"]})


def create_topic(proc: BrokerProcess, topic: str) -> None:
    from confluent_kafka.admin import NewTopic

    client = admin(proc)
    client.create_topics([NewTopic(topic, 1, 1)])[topic].result(DEADLINE_S)


def produce_as(proc: BrokerProcess, mechanism: str, user: str, password: str, topic: str) -> list[Any]:
    """Deliver one record over SASL_PLAINTEXT as ``user``: [] when delivered, else the errors seen (an
    authentication failure is reported through error_cb; the record is then purged, not waited for)."""
    from confluent_kafka import KafkaError, Producer

    errors: list[Any] = []
    delivered: list[bool] = []
    producer = Producer({
        "bootstrap.servers": proc.listeners["SASL_PLAINTEXT"], "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password,
        "message.timeout.ms": int(DEADLINE_S * 1000),
        "error_cb": lambda err: errors.append(err) if err.code() == KafkaError._AUTHENTICATION else None})
    producer.produce(topic, b"hello",
                     on_delivery=lambda err, msg: errors.append(err) if err else delivered.append(True))
    deadline = time.monotonic() + DEADLINE_S
    while not (delivered or errors) and time.monotonic() < deadline:
        producer.poll(0.1)
    if not delivered:
        producer.purge()
        producer.flush(1)
    assert delivered or errors, f"the record was neither delivered nor refused within {DEADLINE_S}s"
    return errors


def kafka_error(future: Any) -> Any:
    from confluent_kafka import KafkaException

    with pytest.raises(KafkaException) as info:
        future.result(DEADLINE_S)
    return info.value.args[0]


def test_confluent_admin_creates_a_scram_sha_512_user_that_a_producer_then_logs_in_as(
        scram_broker: BrokerProcess) -> None:
    """AlterUserScramCredentials from confluent-kafka (it salts and hashes the password itself) makes a
    credential the broker describes with its mechanism and iterations, and a Producer authenticates with it
    over SASL_PLAINTEXT; a wrong password is refused."""
    from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

    user, topic, password = unique("user"), unique("topic"), "pw-" + uuid.uuid4().hex
    create_topic(scram_broker, topic)
    client = admin(scram_broker)
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    futures = client.alter_user_scram_credentials([UserScramCredentialUpsertion(user, info, password.encode())])
    assert futures[user].result(DEADLINE_S) is None

    description = client.describe_user_scram_credentials([user])[user].result(DEADLINE_S)
    assert [(c.mechanism, c.iterations) for c in description.scram_credential_infos] == [
        (ScramMechanism.SCRAM_SHA_512, 8192)]
    everyone = client.describe_user_scram_credentials().result(DEADLINE_S)
    assert user in everyone, f"describe-all answered {sorted(everyone)}"

    assert produce_as(scram_broker, "SCRAM-SHA-512", user, password, topic) == []
    refused = produce_as(scram_broker, "SCRAM-SHA-512", user, "not-" + password, topic)
    assert refused, "a wrong SCRAM password was not refused"
    assert not any(password in line for line in scram_broker.lines), "the password reached the broker log"


def test_confluent_admin_gets_kafkas_errors_for_refused_changes_and_unknown_users(
        scram_broker: BrokerProcess) -> None:
    """RESOURCE_NOT_FOUND for describing a user without credentials and for deleting one; UNACCEPTABLE_CREDENTIAL
    for too few iterations; a deletion then leaves no credential, and the user can no longer log in."""
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import (
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialDeletion,
        UserScramCredentialUpsertion,
    )

    client = admin(scram_broker)
    nobody, weak, user, topic = unique("nobody"), unique("weak"), unique("user"), unique("topic")
    missing = kafka_error(client.describe_user_scram_credentials([nobody])[nobody])
    assert missing.code() == KafkaError.RESOURCE_NOT_FOUND, missing
    assert kafka_error(client.alter_user_scram_credentials(
        [UserScramCredentialDeletion(nobody, ScramMechanism.SCRAM_SHA_256)])[nobody]).code() == \
        KafkaError.RESOURCE_NOT_FOUND
    too_few = kafka_error(client.alter_user_scram_credentials([UserScramCredentialUpsertion(
        weak, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 1024), b"pw")])[weak])
    assert too_few.code() == KafkaError.UNACCEPTABLE_CREDENTIAL and "Too few iterations" in too_few.str(), too_few

    create_topic(scram_broker, topic)
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096)
    client.alter_user_scram_credentials([UserScramCredentialUpsertion(user, info, b"pw")])[user].result(DEADLINE_S)
    assert produce_as(scram_broker, "SCRAM-SHA-256", user, "pw", topic) == []
    client.alter_user_scram_credentials(
        [UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_256)])[user].result(DEADLINE_S)
    assert kafka_error(client.describe_user_scram_credentials([user])[user]).code() == KafkaError.RESOURCE_NOT_FOUND
    assert produce_as(scram_broker, "SCRAM-SHA-256", user, "pw", topic), "a deleted credential still logged in"


def moldau_scram(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOLDAU_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "broker", "scram", *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=DEADLINE_S, check=False)


def test_moldau_scram_set_list_delete_against_the_running_broker(scram_broker: BrokerProcess) -> None:
    """``moldau scram set`` (password on stdin, salted locally) makes a credential a Producer logs in with;
    ``list`` shows it; ``delete`` removes it, after which ``list USER`` exits 1."""
    user, topic, password = unique("cli"), unique("topic"), "pw-" + uuid.uuid4().hex
    bootstrap = ["--bootstrap", scram_broker.listeners["PLAINTEXT"]]
    create_topic(scram_broker, topic)

    done = moldau_scram("set", user, "--mechanism", "SCRAM-SHA-256", "--iterations", "4500", *bootstrap,
                        stdin=password + "\n")
    assert done.returncode == 0, done.stderr
    assert password not in done.stdout + done.stderr
    assert produce_as(scram_broker, "SCRAM-SHA-256", user, password, topic) == []

    listed = moldau_scram("list", *bootstrap)
    assert listed.returncode == 0, listed.stderr
    assert [user, "SCRAM-SHA-256", "4500"] in [line.split() for line in listed.stdout.splitlines()], listed.stdout

    done = moldau_scram("delete", user, "--mechanism", "SCRAM-SHA-256", *bootstrap)
    assert done.returncode == 0, done.stderr
    listed = moldau_scram("list", user, *bootstrap)
    assert (listed.returncode, listed.stderr) == (1, f"moldau scram: error: {user} has no SCRAM credentials\n")
    assert not any(password in line for line in scram_broker.lines), "the password reached the broker log"


def test_moldau_scram_errors_are_one_line_with_kafkas_error_name(scram_broker: BrokerProcess) -> None:
    """Deleting a credential that does not exist: exit 1 with RESOURCE_NOT_FOUND; iterations out of range:
    exit 2 before anything is sent."""
    user = unique("cli")
    bootstrap = ["--bootstrap", scram_broker.listeners["PLAINTEXT"]]
    done = moldau_scram("delete", user, "--mechanism", "SCRAM-SHA-512", *bootstrap)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("moldau scram: error: ") and "RESOURCE_NOT_FOUND" in done.stderr, done.stderr
    done = moldau_scram("set", user, "--mechanism", "SCRAM-SHA-512", "--iterations", "99999", *bootstrap,
                        stdin="pw\n")
    assert (done.returncode, done.stderr) == (
        2, "moldau scram: error: --iterations must be between 4096 and 16384, got 99999\n")


def test_java_admin_client_upserts_describes_and_deletes_a_credential(scram_broker: BrokerProcess) -> None:
    """Kafka's own AdminClient (alterUserScramCredentials hashes the password itself, then sends salt and
    salted password) against DescribeUserScramCredentials and AlterUserScramCredentials."""
    from tests.compat.java_client import java_client

    user = f"java-{uuid.uuid4().hex[:6]}"
    out = java_client("scram-admin", scram_broker.listeners["PLAINTEXT"], user)
    assert out["described"] == ["SCRAM-SHA-256:8192"]
    assert user not in out["usersAfter"]
