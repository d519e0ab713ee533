"""The demo PKI (``XDS_TLS=demo``) and the certificate files ``manage.py xds_pki`` issues.

Layout under ``XDS_PKI_DIR`` (``var/pki/``; directories 0700, private keys 0600)::

    ca.crt  ca.key                    the demo CA (self-signed, signs certificates only)
    nodes/<site>.crt  <site>.key      one node certificate per demo site: server *and* client (a node answers
                                      and calls), subjectAltName localhost / 127.0.0.1 / ::1
    clients/<role>.crt  <role>.key    one client certificate per role (source, consumer, feed, admin), for
    clients/<role>.p12 (+ .password)  curl and, as PKCS#12, for a browser

:func:`ensure_demo_pki` is idempotent: it keeps what exists and issues only what is missing, expiring within
:data:`RENEW_WITHIN`, or no longer signed by the CA (a CA issued again re-issues everything under it).  What a
certificate's holder may do is *not* decided by these files: it is the node identity table's (``atna.models``;
ITI TF-2a 3.19.6.1.3).  Nothing here reads settings or the database; :func:`register` is the one function that
writes a :class:`~atna.models.NodeIdentity` row and is called from management commands.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

from xds_core import pki
from xds_core.identity import PeerCertificate, Role

#: The demo affinity domain's nodes (demo.sites: the domain node and the two hospitals).
DEMO_NODES = ("domain", "hospital-a", "hospital-b")
#: The client certificates ``XDS_TLS=demo`` issues, one per role a person or tool may act in (issue 13).
DEMO_ROLES = (Role.SOURCE, Role.CONSUMER, Role.FEED, Role.ADMIN)
#: Every certificate of the demo is for one machine: its loopback names.
DEMO_DNS_NAMES = ("localhost",)
DEMO_ADDRESSES = ("127.0.0.1", "::1")
#: A certificate expiring within this time is issued again by :func:`ensure_demo_pki`.
RENEW_WITHIN = timedelta(days=30)
ORGANIZATION = "XDS-I.b demo affinity domain"


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    path.chmod(0o600)


@dataclass(frozen=True, slots=True)
class CertFiles:
    """A certificate and its key on disk (``<stem>.crt`` / ``<stem>.key``), and its PKCS#12 bundle if any."""

    cert: Path
    key: Path

    @property
    def p12(self) -> Path:
        return self.cert.with_suffix(".p12")

    @property
    def p12_password_file(self) -> Path:
        return self.cert.with_suffix(".p12.password")

    def exists(self) -> bool:
        return self.cert.is_file() and self.key.is_file()

    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert.read_bytes())

    def peer(self) -> PeerCertificate:
        """What a listener sees when this certificate is presented (fingerprint, subject, issuer, expiry)."""
        from cryptography.hazmat.primitives.serialization import Encoding

        return PeerCertificate.from_der(self.certificate().public_bytes(Encoding.DER))


@dataclass(frozen=True, slots=True)
class DemoPki:
    """Where the demo PKI's files are (they may not exist yet: :func:`ensure_demo_pki` makes them)."""

    directory: Path

    @property
    def ca(self) -> CertFiles:
        return CertFiles(self.directory / "ca.crt", self.directory / "ca.key")

    def node(self, site: str) -> CertFiles:
        return CertFiles(self.directory / "nodes" / f"{site}.crt", self.directory / "nodes" / f"{site}.key")

    def client(self, role: Role | str) -> CertFiles:
        name = Role(role).value
        return CertFiles(self.directory / "clients" / f"{name}.crt", self.directory / "clients" / f"{name}.key")

    def all_files(self) -> list[CertFiles]:
        """Every certificate present under the directory (CA first), in a stable order."""
        found = [self.ca] if self.ca.exists() else []
        for sub in ("nodes", "clients"):
            folder = self.directory / sub
            if folder.is_dir():
                found += [CertFiles(c, c.with_suffix(".key")) for c in sorted(folder.glob("*.crt"))]
        return found


@dataclass(frozen=True, slots=True)
class IssuedFiles:
    """What :func:`issue_client` wrote: the files, and the PKCS#12 password when a bundle was asked for."""

    files: CertFiles
    peer: PeerCertificate
    p12_password: str = ""


def load_ca(directory: Path) -> pki.Issued:
    """The CA kept in ``directory`` (``ca.crt`` + ``ca.key``).

    :raises FileNotFoundError: naming the file that is missing.
    """
    ca = DemoPki(directory).ca
    for path in (ca.cert, ca.key):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no CA here (manage.py xds_pki demo creates the demo CA)")
    return pki.Issued.load(ca.cert, ca.key)


def _usable(files: CertFiles, ca: x509.Certificate | None, now: datetime) -> bool:
    """Present, valid for more than :data:`RENEW_WITHIN`, and (for an end-entity) signed by ``ca``."""
    if not files.exists():
        return False
    try:
        cert = files.certificate()
        pki.Issued.load(files.cert, files.key)  # the key is readable and RSA
    except (ValueError, OSError):
        return False
    if cert.not_valid_after_utc - now < RENEW_WITHIN:
        return False
    if ca is not None:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            return False
    return True


def write_p12(issued: pki.Issued, files: CertFiles, friendly_name: str, ca: x509.Certificate | None) -> str:
    """``<stem>.p12`` (for a browser) encrypted with a new random password; returns the password.

    The password is also kept beside it in ``<stem>.p12.password`` (0600): the demo prints where it is.
    """
    password = secrets.token_urlsafe(12)
    bundle = pkcs12.serialize_key_and_certificates(
        friendly_name.encode(), issued.key, issued.certificate, [ca] if ca is not None else None,
        BestAvailableEncryption(password.encode()))
    _write_private(files.p12, bundle)
    _write_private(files.p12_password_file, password.encode() + b"\n")
    return password


def issue_client(ca: pki.Issued, role: Role, name: str, out: Path, *, days: int = pki.MAX_LIFETIME_DAYS,
                 p12: bool = False) -> IssuedFiles:
    """A client certificate ``CN=<name>,OU=<role>`` signed by ``ca``, written as ``out/<name>.crt|.key``.

    The role in OU is for people reading the certificate; what the holder may do is the identity table's.
    :raises ValueError: ``days`` over the ITI-19 maximum (3.19.6.1.3).
    """
    issued = pki.issue(ca, name, organization=ORGANIZATION, unit=role.value, server=False, client=True, days=days)
    _private_dir(out)
    cert_path, key_path = issued.write(out, name)
    files = CertFiles(cert_path, key_path)
    password = write_p12(issued, files, name, ca.certificate) if p12 else ""
    return IssuedFiles(files, PeerCertificate.from_der(issued.der), password)


def ensure_demo_pki(directory: Path, nodes: Sequence[str] = DEMO_NODES, roles: Iterable[Role] = DEMO_ROLES,
                    *, now: datetime | None = None) -> tuple[DemoPki, list[str]]:
    """Create or complete the demo PKI under ``directory``; returns it and what was issued (empty: nothing).

    Idempotent: an existing, valid certificate is kept (so fingerprints in identity tables stay right);
    a missing, expiring or foreign one is issued again.
    """
    now = now or datetime.now(UTC)
    demo = DemoPki(directory)
    _private_dir(directory)
    issued_now: list[str] = []
    if _usable(demo.ca, None, now):
        ca = pki.Issued.load(demo.ca.cert, demo.ca.key)
    else:
        ca = pki.issue_ca(organization=ORGANIZATION)
        ca.write(directory, "ca")
        issued_now.append("CA")
    for site in nodes:
        files = demo.node(site)
        if not _usable(files, ca.certificate, now):
            node = pki.issue(ca, site, organization=ORGANIZATION, unit="node", dns_names=DEMO_DNS_NAMES,
                             addresses=DEMO_ADDRESSES, server=True, client=True)
            node.write(_private_dir(directory / "nodes"), site)
            issued_now.append(f"node {site}")
    for role in roles:
        files = demo.client(role)
        if not _usable(files, ca.certificate, now) or not files.p12.is_file():
            issue_client(ca, role, role.value, directory / "clients", p12=True)
            issued_now.append(f"client {role.value}")
    return demo, issued_now


def register(name: str, peer: PeerCertificate, roles: Iterable[Role], *, source_ids: Sequence[str] = (),
             description: str = "") -> bool:
    """Add or update the identity-table row ``name`` matching ``peer`` by fingerprint; True when it changed.

    Updating by name is how a re-issued certificate replaces its predecessor (rotation): the old fingerprint
    no longer matches anything.
    """
    from atna.models import NodeIdentity

    wanted = {"cert_sha256": peer.sha256, "cert_subject": "", "ae_title": "", "address": "",
              "roles": ",".join(sorted(Role(r).value for r in roles)), "source_ids": "\n".join(source_ids),
              "enabled": True}
    if description:
        wanted["description"] = description[:200]
    row = NodeIdentity.objects.filter(name=name).first()
    if row is None:
        row = NodeIdentity(name=name, **wanted)
    elif all(getattr(row, field) == value for field, value in wanted.items()):
        return False
    else:
        for field, value in wanted.items():
            setattr(row, field, value)
    row.full_clean()
    row.save()
    return True
