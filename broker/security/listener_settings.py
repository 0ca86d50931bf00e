"""What one listener's security settings resolve to: its TLS settings and its SASL settings.

Each setting is read as the listener sees it (``listener.name.<name>.<setting>`` over the broker-wide
value, ``BrokerConfig.listener_setting``). ``check_listener_settings`` validates them when the config
loads; files are read when the broker starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from broker.config import JAAS_CONFIG, ConfigError
from broker.security.tls import CLIENT_AUTH_MODES, TLS_VERSIONS, TlsSettings

if TYPE_CHECKING:
    from broker.config import BrokerConfig
    from broker.listeners import ListenerSpec

PEM = "PEM"


@dataclass(frozen=True)
class SaslSettings:
    """One SASL listener's mechanisms and where its users come from."""

    listener: str
    mechanisms: tuple[str, ...]
    plain_users: dict[str, str] = field(repr=False)  # from plain.sasl.jaas.config
    plain_users_file: Path | None
    oauth_jaas_options: dict[str, str] = field(repr=False)  # from oauthbearer.sasl.jaas.config
    reauth_ms: int


def check_listener_settings(config: BrokerConfig, spec: ListenerSpec) -> None:
    """Raise ConfigError for a listener whose TLS or SASL settings cannot work."""
    if spec.uses_tls:
        tls_settings(config, spec)
    if spec.uses_sasl:
        sasl_settings(config, spec)
    from broker.security.principal import PrincipalMapper

    PrincipalMapper(config.listener_setting(spec.name, "ssl.principal.mapping.rules"))


def _prefixed(spec: ListenerSpec, name: str) -> str:
    return f"{name} (or {spec.config_prefix}{name})"


def tls_settings(config: BrokerConfig, spec: ListenerSpec) -> TlsSettings:
    def get(name: str) -> str | None:
        return config.listener_setting(spec.name, name)

    for name in ("ssl.keystore.type", "ssl.truststore.type"):
        kind = (get(name) or PEM).upper()
        if kind != PEM:
            raise ConfigError(f"listener {spec.name}: {_prefixed(spec, name)} is {kind}; Moldau reads PEM files "
                              f"only (convert with: keytool -importkeystore -deststoretype PKCS12, then "
                              f"openssl pkcs12 -nodes)")
    keystore = get("ssl.keystore.location")
    if not keystore:
        raise ConfigError(f"listener {spec.name} ({spec.security_protocol}) needs a certificate: set "
                          f"{_prefixed(spec, 'ssl.keystore.location')} to a PEM file holding the private "
                          f"key and its certificate chain")
    client_auth = (get("ssl.client.auth") or "none").lower()
    if client_auth not in CLIENT_AUTH_MODES:
        raise ConfigError(f"listener {spec.name}: {_prefixed(spec, 'ssl.client.auth')} must be one of "
                          f"{', '.join(CLIENT_AUTH_MODES)}, got {client_auth!r}")
    protocols = tuple(p.strip() for p in (get("ssl.enabled.protocols") or "").split(",") if p.strip())
    bad = [p for p in protocols if p not in TLS_VERSIONS]
    if bad or not protocols:
        raise ConfigError(f"listener {spec.name}: {_prefixed(spec, 'ssl.enabled.protocols')} may name "
                          f"{' and '.join(TLS_VERSIONS)} only (older TLS is refused), got {bad or protocols}")
    truststore = get("ssl.truststore.location")
    return TlsSettings(
        listener=spec.name,
        keystore_location=Path(keystore).expanduser(),
        key_password=get("ssl.key.password") or get("ssl.keystore.password"),
        truststore_location=Path(truststore).expanduser() if truststore else None,
        truststore_certificates=get("ssl.truststore.certificates"),
        client_auth=client_auth,
        enabled_protocols=protocols,
        cipher_suites=get("ssl.cipher.suites"),
    )


def sasl_settings(config: BrokerConfig, spec: ListenerSpec) -> SaslSettings:
    from broker.security.jaas import parse_jaas_config, plain_users
    from broker.security.sasl_mechanisms import SUPPORTED_MECHANISMS

    text = config.listener_setting(spec.name, "sasl.enabled.mechanisms") or ""
    mechanisms = tuple(dict.fromkeys(m.strip().upper() for m in text.split(",") if m.strip()))
    unknown = [m for m in mechanisms if m not in SUPPORTED_MECHANISMS]
    if unknown or not mechanisms:
        raise ConfigError(f"listener {spec.name}: {_prefixed(spec, 'sasl.enabled.mechanisms')} must name some "
                          f"of {', '.join(SUPPORTED_MECHANISMS)}, got {', '.join(unknown) or 'none'}")
    jaas: dict[str, list] = {}
    for mechanism in mechanisms:
        key = f"{mechanism.lower()}.{JAAS_CONFIG}"
        value = config.listener_setting(spec.name, key)
        if value:
            jaas[mechanism] = parse_jaas_config(value, f"{spec.config_prefix}{key}")
    users_file = config.listener_setting(spec.name, "sasl.plain.users.file")
    oauth_options: dict[str, str] = {}
    for entry in jaas.get("OAUTHBEARER", []):
        oauth_options.update(entry.options)
    return SaslSettings(
        listener=spec.name,
        mechanisms=mechanisms,
        plain_users=plain_users(jaas.get("PLAIN", [])),
        plain_users_file=Path(users_file).expanduser() if users_file else None,
        oauth_jaas_options=oauth_options,
        reauth_ms=int(config.listener_setting(spec.name, "connections.max.reauth.ms") or 0),
    )
