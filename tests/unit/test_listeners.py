"""Named listeners and the security settings around them: ``listeners``, ``advertised.listeners`` and
``listener.security.protocol.map`` as Kafka reads them, per-listener ``listener.name.<name>.`` settings,
JAAS values, client-certificate principals, and secrets kept out of DescribeConfigs."""

from __future__ import annotations

import pytest

from broker.config import BrokerConfig, ConfigError
from broker.listeners import ListenerSpec, parse_advertised, parse_listeners, parse_protocol_map
from broker.security.jaas import parse_jaas_config, plain_users
from broker.security.principal import PrincipalMapper, distinguished_name

MAP = parse_protocol_map("CLIENT:PLAINTEXT,SECURE:SASL_SSL")


def test_listeners_by_name_with_the_protocol_map() -> None:
    specs = parse_listeners("CLIENT://0.0.0.0:9092, SECURE://[::1]:9093,SSL://:0", MAP)
    assert specs == [ListenerSpec("CLIENT", "0.0.0.0", 9092, "PLAINTEXT"),
                     ListenerSpec("SECURE", "::1", 9093, "SASL_SSL"), ListenerSpec("SSL", "", 0, "SSL")]
    assert (specs[1].uses_tls, specs[1].uses_sasl, specs[1].config_prefix) == (True, True, "listener.name.secure.")
    assert parse_listeners("localhost:9092", MAP) == [ListenerSpec("PLAINTEXT", "localhost", 9092, "PLAINTEXT")]


@pytest.mark.parametrize(("text", "message"), [
    ("OTHER://h:1", "listener OTHER has no security protocol"),
    ("SSL://h:1,SSL://h:2", "listener SSL appears twice"),
    ("SSL://h:1,PLAINTEXT://h:1", "port 1 is used by two listeners"),
    ("h:1,SSL://h:2", "each needs a name"),
    ("SSL://h:x", "numeric port"),
])
def test_bad_listeners_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_listeners(text, MAP)


def test_protocol_map_refuses_unknown_protocols() -> None:
    with pytest.raises(ConfigError, match="unknown security protocol 'TLS' for listener X"):
        parse_protocol_map("X:TLS")


def test_advertised_addresses_by_listener() -> None:
    specs = parse_listeners("CLIENT://0.0.0.0:9092,SECURE://0.0.0.0:9093", MAP)
    assert parse_advertised("SECURE://kafka.example:443", specs) == {"SECURE": ("kafka.example", 443)}
    with pytest.raises(ConfigError, match="name the listener"):
        parse_advertised("kafka.example:443", specs)
    with pytest.raises(ConfigError, match="NOPE is not a listener"):
        parse_advertised("NOPE://h:1", specs)
    single = parse_listeners("0.0.0.0:9092", MAP)
    assert parse_advertised("h:1", single) == {"PLAINTEXT": ("h", 1)}


def test_per_listener_settings_override_the_broker_wide_ones() -> None:
    config = BrokerConfig.from_settings({
        "listeners": "A://h:0,B://h:0", "listener.security.protocol.map": "A:SASL_PLAINTEXT,B:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": "PLAIN", "listener.name.b.sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.a.plain.sasl.jaas.config": 'x.PlainLoginModule required user_u="p";'})
    assert config.listener_setting("A", "sasl.enabled.mechanisms") == "PLAIN"
    assert config.listener_setting("B", "sasl.enabled.mechanisms") == "SCRAM-SHA-512"
    assert config.listener_setting("A", "plain.sasl.jaas.config").startswith("x.PlainLoginModule")
    assert config.listener_setting("B", "plain.sasl.jaas.config") is None


@pytest.mark.parametrize(("settings", "message"), [
    ({"listener.name.a.num.partitions": "3"}, "cannot be set per listener"),
    ({"listener.name.a.gssapi.sasl.jaas.config": "x required;"}, "unknown SASL mechanism 'gssapi'"),
    ({"listeners": "SSL://h:0"}, r"listener SSL \(SSL\) needs a certificate"),
    ({"listeners": "SSL://h:0", "ssl.keystore.location": "k.pem", "ssl.keystore.type": "JKS"},
     "Moldau reads PEM files only"),
    ({"listeners": "SSL://h:0", "ssl.keystore.location": "k.pem", "ssl.enabled.protocols": "TLSv1.1"},
     "older TLS is refused"),
    ({"listeners": "SSL://h:0", "ssl.keystore.location": "k.pem", "ssl.client.auth": "maybe"},
     "ssl.client.auth.*must be one of none, requested, required"),
    ({"listeners": "SASL_SSL://h:0", "ssl.keystore.location": "k.pem", "sasl.enabled.mechanisms": "GSSAPI"},
     "must name some of PLAIN"),
    ({"listeners": "SASL_PLAINTEXT://h:0", "ssl.principal.mapping.rules": "RULE:oops"},
     "RULE:pattern/replacement"),
])
def test_bad_security_settings_fail_at_load(settings: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BrokerConfig.from_settings(settings)


def test_passwords_are_sensitive_and_described_without_their_values() -> None:
    from broker.handlers.configs import broker_config_entries

    config = BrokerConfig.from_settings({"ssl.key.password": "hunter2", "num.partitions": 2})
    entries = {e.name: e for e in broker_config_entries(config)}
    assert entries["ssl.key.password"].sensitive and entries["ssl.key.password"].value is None
    assert all(value is None for _, value, _ in entries["ssl.key.password"].synonyms)
    assert entries["num.partitions"].value == "2" and not entries["num.partitions"].sensitive
    assert "hunter2" not in repr(entries)


def test_jaas_config_values() -> None:
    entries = parse_jaas_config(
        'org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" '
        'password="admin-secret" user_admin="admin-secret" user_alice="a;b \\"c\\"";', "jaas")
    assert entries[0].module.endswith("PlainLoginModule") and entries[0].flag == "required"
    assert plain_users(entries) == {"admin": "admin-secret", "alice": 'a;b "c"'}
    for bad in ("PlainLoginModule required user_a=\"x\"", "PlainLoginModule maybe;", "M required user_a=\"x;"):
        with pytest.raises(ConfigError) as info:
            parse_jaas_config(bad, "jaas")
        assert '"x' not in str(info.value)  # values (passwords) are never quoted back


def test_certificate_subject_as_kafka_names_it_and_mapping_rules() -> None:
    cert = {"subject": ((("countryName", "US"),), (("organizationName", "Example, Inc."),),
                        (("organizationalUnitName", "eng"),), (("commonName", "app-1"),))}
    dn = distinguished_name(cert)
    assert dn == "CN=app-1,OU=eng,O=Example\\, Inc.,C=US"
    assert PrincipalMapper("DEFAULT").map(dn) == dn
    rules = PrincipalMapper("RULE:^CN=(.*?),OU=(.*?),.*$/$1@$2/U, DEFAULT")
    assert rules.map(dn) == "APP-1@ENG"
    assert rules.map("CN=x") == "CN=x"  # the first rule does not match: DEFAULT does
    assert PrincipalMapper("RULE:^CN=([^,]*).*$/$1/L").map("CN=Svc,O=x") == "svc"
    assert PrincipalMapper("RULE:^CN=admin$/root/").map("CN=other") is None  # no rule applies
