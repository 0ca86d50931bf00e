"""Test certificates, made at test time with ``cryptography`` (none are committed).

``make_pki(directory)`` writes a CA, a server certificate for localhost/127.0.0.1 and a client
certificate, in the files Kafka's PEM settings and the clients take:

- ``server.pem``: the server's private key and certificate chain in one file (``ssl.keystore.location``
  with ``ssl.keystore.type=PEM``);
- ``ca.pem``: the CA certificate (clients' ``ssl.ca.location``; the broker's ``ssl.truststore.location``);
- ``client.key`` and ``client.crt``: a client's key and certificate (mutual TLS), subject
  ``CN=<client_cn>,OU=compat,O=Moldau Tests``.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_pem: Path
    client_key: Path
    client_cert: Path
    client_dn: str  # the client certificate's subject as the broker names it (RFC 2253)


def _name(cn: str, ou: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Moldau Tests")]
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject: x509.Name, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False, sans: list[x509.GeneralName] | None = None,
          days: int = 2) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(directory: Path, *, client_cn: str = "compat-client", server_cn: str = "localhost") -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_name = _name("Moldau Test CA")
    ca_cert = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
    server_key = _key()
    server_cert = _cert(_name(server_cn), server_key, ca_name, ca_key, sans=[
        x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client_key = _key()
    client_cert = _cert(_name(client_cn, "compat"), client_key, ca_name, ca_key)
    pem = serialization.Encoding.PEM
    paths = Pki(ca=directory / "ca.pem", server_pem=directory / "server.pem",
                client_key=directory / "client.key", client_cert=directory / "client.crt",
                client_dn=f"CN={client_cn},OU=compat,O=Moldau Tests")
    paths.ca.write_bytes(ca_cert.public_bytes(pem))
    paths.server_pem.write_bytes(_pem_key(server_key) + server_cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    paths.client_key.write_bytes(_pem_key(client_key))
    paths.client_cert.write_bytes(client_cert.public_bytes(pem))
    return paths


def reissue_server(pki: Pki, directory: Path, *, server_cn: str) -> None:
    """Replace server.pem with a certificate for ``server_cn`` under a new CA written to ``new-ca.pem``
    (a certificate rotation the broker must pick up without a restart)."""
    fresh = make_pki(directory / "rotated", server_cn=server_cn)
    tmp = pki.server_pem.with_suffix(".tmp")
    tmp.write_bytes(fresh.server_pem.read_bytes())
    tmp.replace(pki.server_pem)
    (directory / "new-ca.pem").write_bytes(fresh.ca.read_bytes())
