"""Named listeners: ``listeners``, ``advertised.listeners`` and ``listener.security.protocol.map``.

A listener is a name, an address to bind and a security protocol (PLAINTEXT, SSL, SASL_PLAINTEXT,
SASL_SSL), written as Kafka writes them: ``listeners=CLIENT://0.0.0.0:9092,SECURE://0.0.0.0:9093`` with
``listener.security.protocol.map=CLIENT:PLAINTEXT,SECURE:SASL_SSL``. A listener named after a security
protocol needs no map entry (Kafka's default map lists the four). A bare ``HOST:PORT`` (the ``--listen``
flag) is one PLAINTEXT listener.

Each listener has its own advertised address (``advertised.listeners``, by listener name), and Metadata
answers a client with the address of the listener it came in on. Per-listener settings use Kafka's prefix
``listener.name.<name in lower case>.`` (see ``BrokerConfig.listener_setting``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from broker.config import ConfigError, format_address

PLAINTEXT = "PLAINTEXT"
SSL = "SSL"
SASL_PLAINTEXT = "SASL_PLAINTEXT"
SASL_SSL = "SASL_SSL"
SECURITY_PROTOCOLS = (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)


@dataclass(frozen=True)
class ListenerSpec:
    """One configured listener: where it binds and what security it speaks."""

    name: str  # upper case, as Kafka normalises listener names
    host: str
    port: int
    security_protocol: str

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in (SSL, SASL_SSL)

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in (SASL_PLAINTEXT, SASL_SSL)

    @property
    def config_prefix(self) -> str:
        """Kafka's prefix for settings of this listener only: ``listener.name.sasl_ssl.``."""
        return f"listener.name.{self.name.lower()}."

    def __str__(self) -> str:
        return f"{self.name}://{format_address(self.host, self.port)}"


def parse_protocol_map(text: str, setting: str = "listener.security.protocol.map") -> dict[str, str]:
    """``NAME:PROTOCOL,...`` into {NAME: PROTOCOL}; the four protocols always map to themselves."""
    result = {p: p for p in SECURITY_PROTOCOLS}
    for item in _items(text):
        name, sep, protocol = item.partition(":")
        name, protocol = name.strip().upper(), protocol.strip().upper()
        if not sep or not name or not protocol:
            raise ConfigError(f"setting {setting!r} expects NAME:PROTOCOL pairs, got {item!r}")
        if protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(f"setting {setting!r}: unknown security protocol {protocol!r} for listener "
                              f"{name}; choose one of {', '.join(SECURITY_PROTOCOLS)}")
        result[name] = protocol
    return result


def split_address(text: str, setting: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 hosts in brackets) into host and port."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep:
        raise ConfigError(f"setting {setting!r} expects HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text, 10)
    except ValueError:
        raise ConfigError(f"setting {setting!r} expects HOST:PORT with a numeric port, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"setting {setting!r}: port must be 0-65535, got {port}")
    return host, port


def _named_addresses(text: str, setting: str) -> list[tuple[str | None, str, int]]:
    """``NAME://HOST:PORT,...`` (or one bare ``HOST:PORT``) into (NAME or None, host, port)."""
    entries: list[tuple[str | None, str, int]] = []
    for item in _items(text):
        name: str | None = None
        rest = item
        if "://" in item:
            name, _, rest = item.partition("://")
            name = name.strip().upper()
            if not name:
                raise ConfigError(f"setting {setting!r}: a listener name is missing in {item!r}")
        host, port = split_address(rest, setting)
        entries.append((name, host, port))
    if not entries:
        raise ConfigError(f"setting {setting!r} names no listener")
    if len(entries) > 1 and any(name is None for name, _, _ in entries):
        raise ConfigError(f"setting {setting!r}: with several listeners each needs a name "
                          f"(NAME://HOST:PORT), got {text!r}")
    return entries


def parse_listeners(text: str, protocol_map: dict[str, str], setting: str = "listeners") -> list[ListenerSpec]:
    """The listeners a ``listeners`` value names, in order; the first is the one the CLI reports."""
    specs: list[ListenerSpec] = []
    for name, host, port in _named_addresses(text, setting):
        name = name or PLAINTEXT
        protocol = protocol_map.get(name)
        if protocol is None:
            raise ConfigError(f"setting {setting!r}: listener {name} has no security protocol; add "
                              f"{name}:<PROTOCOL> to listener.security.protocol.map or name the listener "
                              f"after its protocol ({', '.join(SECURITY_PROTOCOLS)})")
        if any(s.name == name for s in specs):
            raise ConfigError(f"setting {setting!r}: listener {name} appears twice")
        if port and any(s.port == port for s in specs):
            raise ConfigError(f"setting {setting!r}: port {port} is used by two listeners")
        specs.append(ListenerSpec(name, host, port, protocol))
    return specs


def parse_advertised(text: str, listeners: list[ListenerSpec],
                     setting: str = "advertised.listeners") -> dict[str, tuple[str, int]]:
    """{listener name: advertised (host, port)} from ``advertised.listeners``; a bare HOST:PORT belongs to
    the only listener. Listeners left out advertise their own address."""
    names = [s.name for s in listeners]
    result: dict[str, tuple[str, int]] = {}
    for name, host, port in _named_addresses(text, setting):
        if name is None:
            if len(listeners) != 1:
                raise ConfigError(f"setting {setting!r}: name the listener each address belongs to "
                                  f"(NAME://HOST:PORT); listeners are {', '.join(names)}")
            name = names[0]
        if name not in names:
            raise ConfigError(f"setting {setting!r}: {name} is not a listener (listeners are {', '.join(names)})")
        if not host or port == 0:
            raise ConfigError(f"setting {setting!r} needs a host and a non-zero port for {name}, got {text!r}")
        result[name] = (host, port)
    return result


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


class Listener:
    """A listener while the broker runs: its spec, where it is bound, what it advertises, and its TLS
    context source and SASL set-up (None for listeners without them)."""

    def __init__(self, spec: ListenerSpec, tls: Any = None, sasl: Any = None) -> None:
        self.spec = spec
        self.tls = tls  # broker.security.tls.ReloadingContext
        self.sasl = sasl  # broker.security.authenticator.SaslListener
        self.principal_mapper: Any = None  # broker.security.principal.PrincipalMapper, for client certificates
        self.bound: tuple[str, int] | None = None
        self.advertised: tuple[str, int] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def __repr__(self) -> str:
        return f"Listener({self.spec}, bound={self.bound}, advertised={self.advertised})"
