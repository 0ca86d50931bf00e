"""Real clients over TLS and SASL: confluent-kafka, kafka-python, aiokafka, kafkajs, kcat and Apache Kafka's
Java client produce and consume through SSL, SASL_PLAINTEXT and SASL_SSL listeners with PLAIN and both
SCRAM mechanisms; confluent-kafka also with OAUTHBEARER (unsecured token) and with mutual TLS.

One broker serves the module with five named listeners, configured with Kafka's setting names:
PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL and MTLS (SSL with ``ssl.client.auth=required``). Certificates
are made at test time (``certs.py``). PLAIN users come from the listeners' ``plain.sasl.jaas.config``,
SCRAM users from ``--add-scram``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.compat.certs import Pki, make_pki
from tests.compat.clients import kcat, node
from tests.compat.conftest import BrokerProcess, finish
from tests.compat.java_client import java_client

COUNT = 5
DEADLINE_S = 20.0
USERS = {"PLAIN": ("alice", "alice-secret"), "SCRAM-SHA-256": ("bob", "bob-secret"),
         "SCRAM-SHA-512": ("carol", "carol-secret")}
PLAIN_JAAS = 'org.apache.kafka.common.security.plain.PlainLoginModule required user_alice="alice-secret";'
# (listener, mechanism) pairs every client is run over.
MATRIX = [("SSL", None), ("SASL_PLAINTEXT", "PLAIN"), ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
          ("SASL_PLAINTEXT", "SCRAM-SHA-512"), ("SASL_SSL", "PLAIN"), ("SASL_SSL", "SCRAM-SHA-256"),
          ("SASL_SSL", "SCRAM-SHA-512")]
MATRIX_IDS = [f"{p}-{m or 'tls'}" for p, m in MATRIX]


class SecureBroker:
    def __init__(self, proc: BrokerProcess, pki: Pki, tmp: Path) -> None:
        self.proc = proc
        self.pki = pki
        self.tmp = tmp

    def address(self, listener: str) -> str:
        return self.proc.listeners[listener]


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    tmp = tmp_path_factory.mktemp("secure-broker")
    pki = make_pki(tmp / "pki")
    args = [
        "--set", ("listeners=PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0,"
                  "SASL_SSL://127.0.0.1:0,MTLS://127.0.0.1:0"),
        "--set", "listener.security.protocol.map=MTLS:SSL",
        "--set", "ssl.keystore.type=PEM", "--set", f"ssl.keystore.location={pki.server_pem}",
        "--set", f"listener.name.mtls.ssl.truststore.location={pki.ca}",
        "--set", "listener.name.mtls.ssl.client.auth=required",
        "--set", "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,OAUTHBEARER",
        "--set", f"listener.name.sasl_plaintext.plain.sasl.jaas.config={PLAIN_JAAS}",
        "--set", f"listener.name.sasl_ssl.plain.sasl.jaas.config={PLAIN_JAAS}",
        "--add-scram", "SCRAM-SHA-256=[name=bob,password=bob-secret]",
        "--add-scram", "SCRAM-SHA-512=[name=carol,password=carol-secret]",
        "--log-level", "debug",
    ]
    proc = BrokerProcess(args, tmp, listen=False)
    yield SecureBroker(proc, pki, tmp)
    finish(proc)
    # Secrets never reach the log: not the passwords, not the JAAS text.
    for secret in ("alice-secret", "bob-secret", "carol-secret"):
        assert not any(secret in line for line in proc.lines), f"{secret!r} appeared in the broker log"


def topic_name(what: str) -> str:
    return f"sec-{what}-{uuid.uuid4().hex[:8]}".replace("_", "-").lower()


def values() -> list[bytes]:
    return [f"value-{i}".encode() for i in range(COUNT)]


# ---------------------------------------------------------------------------------------------- clients

def confluent_config(secure: SecureBroker, listener: str, mechanism: str | None) -> dict[str, Any]:
    config: dict[str, Any] = {"bootstrap.servers": secure.address(listener), "security.protocol": listener}
    if listener in ("SSL", "SASL_SSL"):
        config["ssl.ca.location"] = str(secure.pki.ca)
    if mechanism is not None:
        user, password = USERS[mechanism]
        config.update({"sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password})
    return config


def confluent_round_trip(config: dict[str, Any], topic: str) -> list[bytes]:
    from confluent_kafka import Consumer, Producer

    producer = Producer({**config, "message.timeout.ms": 15000, "enable.idempotence": True})
    failures: list[Any] = []
    for value in values():
        producer.produce(topic, value, on_delivery=lambda err, msg: failures.append(err) if err else None)
    assert producer.flush(DEADLINE_S) == 0 and not failures, f"deliveries failed: {failures}"
    consumer = Consumer({**config, "group.id": f"g-{topic}", "auto.offset.reset": "earliest"})
    got: list[bytes] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + DEADLINE_S
        while len(got) < COUNT and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(msg.value())
    finally:
        consumer.close()
    return got


def kafka_python_options(secure: SecureBroker, listener: str, mechanism: str | None) -> dict[str, Any]:
    options: dict[str, Any] = {"bootstrap_servers": secure.address(listener), "security_protocol": listener}
    if listener in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl.create_default_context(cafile=str(secure.pki.ca))
    if mechanism is not None:
        user, password = USERS[mechanism]
        options.update({"sasl_mechanism": mechanism, "sasl_plain_username": user, "sasl_plain_password": password})
    return options


@pytest.mark.parametrize(("listener", "mechanism"), MATRIX, ids=MATRIX_IDS)
def test_confluent_kafka_produces_and_consumes_in_a_group(secure: SecureBroker, listener: str,
                                                         mechanism: str | None) -> None:
    topic = topic_name(f"ck-{listener}-{mechanism}")
    assert confluent_round_trip(confluent_config(secure, listener, mechanism), topic) == values()


@pytest.mark.parametrize(("listener", "mechanism"), MATRIX, ids=MATRIX_IDS)
def test_kafka_python_produces_and_consumes_in_a_group(secure: SecureBroker, listener: str,
                                                       mechanism: str | None) -> None:
    from kafka import KafkaConsumer, KafkaProducer

    topic = topic_name(f"kp-{listener}-{mechanism}")
    options = kafka_python_options(secure, listener, mechanism)
    producer = KafkaProducer(acks="all", **options)
    try:
        for value in values():
            producer.send(topic, value).get(timeout=DEADLINE_S)
    finally:
        producer.close(timeout=5)
    consumer = KafkaConsumer(topic, group_id=f"g-{topic}", auto_offset_reset="earliest",
                             consumer_timeout_ms=int(DEADLINE_S * 1000), **options)
    got: list[bytes] = []
    try:
        for record in consumer:
            got.append(record.value)
            if len(got) == COUNT:
                break
    finally:
        consumer.close()
    assert got == values()


@pytest.mark.parametrize(("listener", "mechanism"), MATRIX, ids=MATRIX_IDS)
def test_aiokafka_produces_and_consumes_in_a_group(secure: SecureBroker, listener: str,
                                                   mechanism: str | None) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = topic_name(f"ak-{listener}-{mechanism}")
    options = kafka_python_options(secure, listener, mechanism)

    async def run() -> list[bytes]:
        producer = AIOKafkaProducer(acks="all", **options)
        await producer.start()
        try:
            for value in values():
                await producer.send_and_wait(topic, value)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, group_id=f"g-{topic}", auto_offset_reset="earliest", **options)
        await consumer.start()
        got: list[bytes] = []
        try:
            deadline = time.monotonic() + DEADLINE_S
            while len(got) < COUNT and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                got.extend(r.value for records in batches.values() for r in records)
        finally:
            await consumer.stop()
        return got

    assert asyncio.run(asyncio.wait_for(run(), DEADLINE_S * 2)) == values()


@pytest.mark.parametrize(("listener", "mechanism"), MATRIX, ids=MATRIX_IDS)
def test_kafkajs_produces_and_consumes_in_a_group(secure: SecureBroker, listener: str, mechanism: str | None) -> None:
    topic = topic_name(f"js-{listener}-{mechanism}")
    security: dict[str, Any] = {}
    if listener in ("SSL", "SASL_SSL"):
        security["ssl"] = {"ca": str(secure.pki.ca)}
    if mechanism is not None:
        user, password = USERS[mechanism]
        security["sasl"] = {"mechanism": mechanism.lower(), "username": user, "password": password}
    payload = json.dumps([{"key": None, "value": base64.b64encode(v).decode(), "headers": [], "partition": 0}
                          for v in values()])
    sent = node("produce.js", secure.address(listener), topic, "--compression", "none", stdin=payload,
                security=security)
    assert sent["sent"], f"kafkajs acknowledged nothing: {sent}"
    out = node("group_consume.js", secure.address(listener), topic, f"g-{topic}", "--count", str(COUNT),
               security=security)
    assert [base64.b64decode(r["value"]) for r in out["records"]] == values()


@pytest.mark.parametrize(("listener", "mechanism"), [("SSL", None), ("SASL_SSL", "SCRAM-SHA-256"),
                                                     ("SASL_PLAINTEXT", "PLAIN")],
                         ids=["SSL", "SASL_SSL-SCRAM-SHA-256", "SASL_PLAINTEXT-PLAIN"])
def test_kcat_produces_and_consumes_with_security_protocol_settings(secure: SecureBroker, listener: str,
                                                                   mechanism: str | None) -> None:
    topic = topic_name(f"kcat-{listener}")
    options = ["-X", f"security.protocol={listener}"]
    if listener in ("SSL", "SASL_SSL"):
        options += ["-X", f"ssl.ca.location={secure.pki.ca}"]
    if mechanism is not None:
        user, password = USERS[mechanism]
        options += ["-X", f"sasl.mechanism={mechanism}", "-X", f"sasl.username={user}",
                    "-X", f"sasl.password={password}"]
    bootstrap = secure.address(listener)
    kcat(bootstrap, "-P", "-t", topic, *options, stdin=b"\n".join(values()) + b"\n")
    out = kcat(bootstrap, "-C", "-t", topic, "-o", "beginning", "-c", str(COUNT), "-e", *options)
    assert out.splitlines() == values()


@pytest.mark.parametrize(("listener", "mechanism"), [("SSL", None), ("SASL_PLAINTEXT", "PLAIN"),
                                                     ("SASL_SSL", "SCRAM-SHA-256"), ("SASL_SSL", "SCRAM-SHA-512")],
                         ids=["SSL", "SASL_PLAINTEXT-PLAIN", "SASL_SSL-SCRAM-SHA-256", "SASL_SSL-SCRAM-SHA-512"])
def test_java_client_produces_and_consumes_in_a_group(secure: SecureBroker, listener: str, mechanism: str | None,
                                                      tmp_path: Path) -> None:
    """Kafka's own client with its usual settings: a PEM trust store and a JAAS login module."""
    lines = [f"security.protocol={listener}"]
    if listener in ("SSL", "SASL_SSL"):
        lines += ["ssl.truststore.type=PEM", f"ssl.truststore.location={secure.pki.ca}"]
    if mechanism is not None:
        user, password = USERS[mechanism]
        module = ("org.apache.kafka.common.security.plain.PlainLoginModule" if mechanism == "PLAIN"
                  else "org.apache.kafka.common.security.scram.ScramLoginModule")
        lines += [f"sasl.mechanism={mechanism}",
                  f'sasl.jaas.config={module} required username="{user}" password="{password}";']
    config = tmp_path / "client.properties"
    config.write_text("\n".join(lines) + "\n")
    topic = topic_name(f"java-{listener}-{mechanism}")
    bootstrap = secure.address(listener)
    produced = java_client("produce", bootstrap, topic, str(COUNT), "none", client_config=config)
    assert len(produced["acked"]) == COUNT
    consumed = java_client("consume", bootstrap, topic, f"g-{topic}", str(COUNT), client_config=config)
    assert [base64.b64decode(r["value"]) for r in consumed["records"]] == [
        f"value-{i}".encode() for i in range(COUNT)]


# ---------------------------------------------------------------------------------------------- OAUTHBEARER, mTLS

@pytest.mark.parametrize("listener", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_confluent_kafka_with_an_unsecured_oauthbearer_token(secure: SecureBroker, listener: str) -> None:
    """librdkafka's built-in unsecured JWT (alg none), which Kafka's default OAUTHBEARER handler accepts."""
    config = confluent_config(secure, listener, None)
    config.update({"sasl.mechanism": "OAUTHBEARER", "enable.sasl.oauthbearer.unsecure.jwt": True,
                   "sasl.oauthbearer.config": "principal=oauth-user scope=kafka lifeSeconds=3600"})
    topic = topic_name(f"oauth-{listener}")
    assert confluent_round_trip(config, topic) == values()
    secure.proc.wait_for_log(lambda r: r.get("event") == "sasl.authenticated" and r.get("mechanism") == "OAUTHBEARER"
                             and r.get("principal") == "User:oauth-user", what="the OAUTHBEARER principal")


def test_mutual_tls_client_certificate_becomes_the_principal(secure: SecureBroker) -> None:
    config = {"bootstrap.servers": secure.address("MTLS"), "security.protocol": "SSL",
              "ssl.ca.location": str(secure.pki.ca), "ssl.certificate.location": str(secure.pki.client_cert),
              "ssl.key.location": str(secure.pki.client_key)}
    assert confluent_round_trip(config, topic_name("mtls")) == values()
    secure.proc.wait_for_log(lambda r: r.get("event") == "tls.established" and r.get("listener") == "MTLS"
                             and r.get("principal") == f"User:{secure.pki.client_dn}",
                             what="the certificate's subject as the principal")


def test_mutual_tls_refuses_a_client_without_a_certificate(secure: SecureBroker) -> None:
    """ssl.client.auth=required: the handshake fails, the broker logs it once (no traceback) and goes on."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": secure.address("MTLS"), "security.protocol": "SSL",
                         "ssl.ca.location": str(secure.pki.ca)})
    with pytest.raises(Exception, match="transport|Handshake|SSL|timed out"):
        admin.list_topics(timeout=5)
    secure.proc.wait_for_log(lambda r: r.get("event") == "tls.handshake_failed" and r.get("listener") == "MTLS",
                             what="the failed handshake")
    assert not secure.proc.tracebacks()


def test_metadata_advertises_the_listener_the_client_came_in_on(secure: SecureBroker) -> None:
    from confluent_kafka.admin import AdminClient

    for listener, mechanism in (("PLAINTEXT", None), ("SSL", None), ("SASL_SSL", "PLAIN")):
        admin = AdminClient(confluent_config(secure, listener, mechanism))
        brokers = admin.list_topics(timeout=10).brokers
        assert [f"{b.host}:{b.port}" for b in brokers.values()] == [secure.address(listener)]
