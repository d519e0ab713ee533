"""Issuing X.509 certificates: a CA, node (server + client) certificates, client certificates by role.

Used by the demo PKI (``XDS_TLS=demo``: ``var/pki/``), by ``manage.py xds_pki issue`` and by the tests.  The
profile follows ITI TF-2a 3.19.6.1.3: RSA keys (2048 bits, within IHE's 1024-4096), a lifetime of at most two
years (the recommended maximum), no required attribute contents; a node certificate carries its DNS names and
addresses as subjectAltName so that deployments using the FQDN Validation option (3.19.6.1.4) can check them.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: ITI TF-2a 3.19.6.1.3: two years at most (730 days; a CA may live longer, it signs nothing else here).
MAX_LIFETIME_DAYS = 730
CA_LIFETIME_DAYS = 3650
KEY_BITS = 2048


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and its key, in memory; :meth:`write` puts them on disk (the key 0600)."""

    certificate: x509.Certificate
    key: rsa.RSAPrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Write ``<stem>.crt`` and ``<stem>.key`` (owner-only) into ``directory``; returns both paths."""
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert_path.write_bytes(self.cert_pem)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(self.key_pem)
        os.chmod(key_path, 0o600)
        return cert_path, key_path

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> Issued:
        certificate = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{key_path}: not an RSA private key")
        return cls(certificate, key)


def _name(common_name: str, organization: str, unit: str = "") -> x509.Name:
    parts = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)]
    if unit:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    parts.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(parts)


def _with_alt_names(builder: x509.CertificateBuilder, dns_names: tuple[str, ...], addresses: tuple[str, ...]
                    ) -> x509.CertificateBuilder:
    """subjectAltName with the DNS names and IP addresses, if any (for the FQDN Validation option, 3.19.6.1.4)."""
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    alt_names += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    if not alt_names:
        return builder
    return builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)


def issue_ca(common_name: str = "XDS-I.b demo CA", organization: str = "XDS-I.b demo affinity domain",
             *, days: int = CA_LIFETIME_DAYS) -> Issued:
    """A self-signed CA that signs certificates only (pathLen 0)."""
    key = _key()
    name = _name(common_name, organization)
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return Issued(cert, key)


def issue(ca: Issued, common_name: str, *, organization: str = "XDS-I.b demo affinity domain", unit: str = "",
          dns_names: tuple[str, ...] = (), addresses: tuple[str, ...] = (), server: bool = True,
          client: bool = True, days: int = MAX_LIFETIME_DAYS, not_before: datetime | None = None) -> Issued:
    """An end-entity certificate signed by ``ca``: a node (server and client) or a client-only certificate.

    ``unit`` carries the role of a client certificate (``OU=consumer``) for people reading it; what the holder
    may do is decided by the node identity table, never by this attribute (ITI TF-2a 3.19.6.1.3).
    """
    if days > MAX_LIFETIME_DAYS:
        raise ValueError(f"a certificate lives at most {MAX_LIFETIME_DAYS} days (ITI TF-2a 3.19.6.1.3)")
    key = _key()
    start = not_before or datetime.now(UTC) - timedelta(minutes=5)
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client
                                                                        else [])
    builder = (x509.CertificateBuilder().subject_name(_name(common_name, organization, unit))
               .issuer_name(ca.certificate.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(start + timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                              critical=False))
    return Issued(_with_alt_names(builder, dns_names, addresses).sign(ca.key, hashes.SHA256()), key)


def self_signed(common_name: str, *, organization: str = "XDS-I.b", dns_names: tuple[str, ...] = (),
                addresses: tuple[str, ...] = ()) -> Issued:
    """A self-signed end-entity certificate (a peer that is trusted by pinning, 3.19.6.1.2)."""
    key = _key()
    name = _name(common_name, organization)
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=MAX_LIFETIME_DAYS))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    return Issued(_with_alt_names(builder, dns_names, addresses).sign(key, hashes.SHA256()), key)
