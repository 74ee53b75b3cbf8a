"""nginx's TLS folder as `build.sh ssl-setup` makes it (`setup_ssl_certificates`): a CA of
its own and a server certificate it signs, for one domain.

build.sh writes `src/nginx/ssl/`; nginx's config reads `server.crt` and `server.key`, its
entrypoint also `<domain>.crt`. The same files here: `ca/ca.{key,crt,srl}`,
`<name>.{key,crt,chain.crt}` (`*` in the domain becomes `_wildcard_`), `server.*` linking to
them, and a copy of the CA at `ca.crt`. Unlike build.sh the domain is never guessed from the
host's address: a release runs in CI, so it is SSL_DOMAIN, else EXTERNAL_HOST, else localhost.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Mapping

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

VALID_DAYS = 3650  # build.sh's SSL_VALID_DAYS
KEY_SIZE = 2048  # and SSL_KEY_SIZE
SUBJECT = {  # and SSL_COUNTRY, SSL_STATE, SSL_CITY, SSL_ORG
    NameOID.COUNTRY_NAME: "CN",
    NameOID.STATE_OR_PROVINCE_NAME: "Beijing",
    NameOID.LOCALITY_NAME: "Beijing",
    NameOID.ORGANIZATION_NAME: "AI-Infra-Matrix",
}
CA_NAME = "AI-Infra-Matrix-CA"  # and SSL_CA_NAME
DOMAIN_KEYS = ("SSL_DOMAIN", "EXTERNAL_HOST")


class Link(str):
    """A symbolic link's target (build.sh links server.crt to <name>.crt)."""


def domain(values: Mapping[str, str]) -> str:
    return next((values[k] for k in DOMAIN_KEYS if values.get(k)), "localhost")


def safe_name(name: str) -> str:
    return name.replace("*", "_wildcard_")


def file_names(name: str) -> tuple[str, ...]:
    safe = safe_name(name)
    own = (f"{safe}.key", f"{safe}.crt", f"{safe}.chain.crt")
    linked = ("server.key", "server.crt", "server.chain.crt")
    return ("ca/ca.key", "ca/ca.crt", "ca/ca.srl", *own, *linked, "ca.crt")


def is_private(name: str) -> bool:
    return name.endswith(".key")


def tls_files(name: str) -> dict[str, bytes | Link]:
    """Every file of the folder for domain `name`, by path inside it."""
    ca_key, server_key = _key(), _key()
    ca = _ca_certificate(ca_key)
    server = _server_certificate(name, server_key, ca, ca_key)
    safe = safe_name(name)
    ca_pem, server_pem = _pem(ca), _pem(server)
    return {
        "ca/ca.key": _key_pem(ca_key),
        "ca/ca.crt": ca_pem,
        "ca/ca.srl": f"{server.serial_number:X}\n".encode(),
        f"{safe}.key": _key_pem(server_key),
        f"{safe}.crt": server_pem,
        f"{safe}.chain.crt": server_pem + ca_pem,
        "server.key": Link(f"{safe}.key"),
        "server.crt": Link(f"{safe}.crt"),
        "server.chain.crt": Link(f"{safe}.chain.crt"),
        "ca.crt": ca_pem,
    }


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)


def _name(common: str) -> x509.Name:
    attributes = [x509.NameAttribute(oid, value) for oid, value in SUBJECT.items()]
    return x509.Name([*attributes, x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _builder(
    subject: x509.Name, issuer: x509.Name, key: rsa.RSAPrivateKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )


def _ca_certificate(key: rsa.RSAPrivateKey) -> x509.Certificate:
    """openssl req -x509 with openssl.cnf's v3_ca: a CA certificate."""
    name = _name(CA_NAME)
    builder = _builder(name, name, key).add_extension(
        x509.BasicConstraints(ca=True, path_length=None), critical=True
    )
    return builder.sign(key, hashes.SHA256())


def _server_certificate(
    name: str, key: rsa.RSAPrivateKey, ca: x509.Certificate, ca_key: rsa.RSAPrivateKey
) -> x509.Certificate:
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=True, key_encipherment=True,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    builder = (
        _builder(_name(name), ca.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=False)
        .add_extension(usage, critical=False)
        .add_extension(x509.SubjectAlternativeName(_alt_names(name)), critical=False)
    )
    return builder.sign(ca_key, hashes.SHA256())


def _alt_names(name: str) -> list[x509.GeneralName]:
    """build.sh's SANs: an IPv4 domain, 127.0.0.1 and localhost; else the name, localhost
    and 127.0.0.1."""
    loopback = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    try:
        address = ipaddress.IPv4Address(name)
    except ValueError:
        return [x509.DNSName(name), x509.DNSName("localhost"), loopback]
    return [x509.IPAddress(address), loopback, x509.DNSName("localhost")]


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
