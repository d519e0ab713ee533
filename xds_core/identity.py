"""Who is on the other end: roles, a peer's certificate, and the node identity it maps to.

ITI TF-2a 3.19.6.1 (Authenticate Node) leaves node *authorization* to the deployment and strongly discourages
deriving it from "any certificate chaining to CA X".  This suite therefore maps every authenticated peer
through an explicit table (the ``atna`` app's ``NodeIdentity``) to an :class:`Identity`: a certificate
(by SHA-256 fingerprint or exact subject) or a DICOM calling AE title at an address -> a named identity with
the roles and sourceIds it may use.  This module holds the plain objects and the vocabulary; the table and its
lookup live in ``atna``, the TLS handshake in :mod:`xds_core.tls`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Role(StrEnum):
    """What an identity may do (issue 13/14): the one vocabulary of roles, declared once."""

    SOURCE = "source"  # Document Source / Imaging Document Source: ITI-41, ITI-42, RAD-68
    CONSUMER = "consumer"  # Document Consumer / Imaging Document Consumer: ITI-18, ITI-43, RAD-69, RAD-55
    FEED = "feed"  # Patient Identity Source: ITI-8
    OPERATOR = "operator"  # operations of an imaging source (publish, retry)
    ADMIN = "admin"  # administration (admin site, identity table)

    @classmethod
    def parse_list(cls, text: str) -> frozenset[Role]:
        """``"source, consumer"`` -> the roles; an unknown name raises ValueError naming it."""
        roles: set[Role] = set()
        for raw in text.replace(";", ",").split(","):
            name = raw.strip().lower()
            if not name:
                continue
            try:
                roles.add(cls(name))
            except ValueError:
                raise ValueError(f"unknown role {name!r} (known: {', '.join(r.value for r in cls)})") from None
        return frozenset(roles)


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """The certificate a peer presented and TLS verified (ITI TF-2a 3.19.6.1).

    ``sha256`` is the lower-case hex SHA-256 of the DER encoding (the fingerprint ``openssl x509 -fingerprint
    -sha256`` prints, without colons); ``subject`` / ``issuer`` are RFC 4514 strings (``CN=x,O=y``).
    """

    sha256: str
    subject: str
    issuer: str = ""
    not_after: datetime | None = None

    @classmethod
    def from_der(cls, der: bytes) -> PeerCertificate:
        """Read a DER certificate (cryptography's parser: bounded, no network)."""
        from cryptography import x509

        cert = x509.load_der_x509_certificate(der)
        return cls(sha256=hashlib.sha256(der).hexdigest(), subject=cert.subject.rfc4514_string(),
                   issuer=cert.issuer.rfc4514_string(), not_after=cert.not_valid_after_utc)

    @property
    def colon_fingerprint(self) -> str:
        """``AB:CD:...``, as openssl and browsers show it."""
        return ":".join(self.sha256[i:i + 2] for i in range(0, len(self.sha256), 2)).upper()


def normalize_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as typed (``AB:CD:..``, spaces, any case) -> 64 lower-case hex digits.

    :raises ValueError: not 32 bytes of hex.
    """
    cleaned = "".join(ch for ch in text if ch not in ": \t").lower()
    if len(cleaned) != 64 or any(ch not in "0123456789abcdef" for ch in cleaned):
        raise ValueError("a SHA-256 fingerprint is 64 hex digits (colons allowed)")
    return cleaned


@dataclass(frozen=True, slots=True)
class Identity:
    """A node identity of the table: its name, its roles and the sourceIds it may submit under."""

    name: str
    roles: frozenset[Role]
    source_ids: tuple[str, ...] = ()

    def has(self, role: Role) -> bool:
        return role in self.roles
