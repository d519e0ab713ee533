"""Who may associate with our DICOM listener: TLS (PS3.15 B.10) and the node identity table (issue 13).

Two layers, both before any DIMSE handler runs:

1. **Transport** (PS3.15 Annex B.10, "Non-Downgrading BCP 195 TLS Secure Transport Connection Profile": the
   ITI-19 "STX: TLS 1.2 floor using BCP195" rules of :mod:`xds_core.tls`).  When the listener has a server
   context, TLS is the only way in: the handshake (TLS >= 1.2, a client certificate required and verified
   against XDS_TLS_CA / XDS_TLS_PINNED) runs in the connection's own thread, bounded by
   :attr:`PeerAdmission.handshake_timeout` -- a silent client holds one thread for that long, never the
   accepting loop.  A failed handshake (no certificate, TLS 1.0/1.1, an unknown CA, silence) closes the
   connection: there is no association to reject yet.
2. **Identity** (ITI TF-2a 3.19.6.1: authorization by an explicit list).  Decided on the A-ASSOCIATE-RQ:

   * under TLS the verified certificate must map to an identity (fingerprint, else exact subject); the
     Calling AE Title is the peer's claim and adds nothing to it;
   * without TLS the Calling AE Title at the peer's address is all there is: it must map to an AE-title row.
     For backwards compatibility a node whose table has **no** AE-title row admits any calling AE in plain
     mode (the local-development default; the listener says so at start).  The first AE-title row closes
     plain DICOM to everyone else.

   A peer that does not map is refused with A-ASSOCIATE-RJ rejected-permanent (1), source DICOM UL
   service-user (1), reason calling-AE-title-not-recognized (3) (PS3.8 9.3.4, Table 9-21).

Every refusal -- handshake or identity -- is a Security Alert, Node Authentication
(:func:`xds_core.audit.node_authentication_failure`), rate-limited as on every listener of the node
(:class:`atna.tls.AlertLimiter`: one per peer address and interval, a burst cap in all -- a scanner must not
flood the audit trail); the next alert says how many were held back.

This module reads no settings: the edge (``manage.py xds_dicom_listener``) builds a :class:`PeerAdmission`
with :meth:`PeerAdmission.with_identity_table` and passes it to the listener.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from atna.tls import AlertLimiter
from xds_core import audit
from xds_core.identity import Identity, PeerCertificate

logger = logging.getLogger(__name__)

#: A-ASSOCIATE-RJ (PS3.8 Table 9-21): rejected-permanent, DICOM UL service-user, calling AE title not recognized.
REJECTED_PERMANENT, SOURCE_SERVICE_USER, CALLING_AE_NOT_RECOGNIZED = 0x01, 0x01, 0x03
#: Seconds a TLS handshake may take (a silent client holds its thread this long, at most).
DEFAULT_HANDSHAKE_TIMEOUT = 10.0


@dataclass(frozen=True)
class Admitted:
    """The outcome of :meth:`PeerAdmission.admit`: the identity (None: admitted without one, plain mode with
    no AE-title rows) or a refusal (its reason, for the log and the Security Alert)."""

    identity: Identity | None = None
    refusal: str = ""


@dataclass(frozen=True)
class PeerAdmission:
    """TLS and identity policy of one listener (see the module docstring).

    ``tls``: the server context (:func:`xds_core.tls.server_context`), None for plain TCP.
    ``by_certificate`` / ``by_ae_title``: lookups in the node identity table.  ``ae_titles_configured``: whether
    the table has any (enabled) AE-title row -- without TLS, none means "admit every calling AE".
    """

    tls: ssl.SSLContext | None
    by_certificate: Callable[[PeerCertificate], Identity | None]
    by_ae_title: Callable[[str, str], Identity | None]
    ae_titles_configured: Callable[[], bool]
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    alerts: AlertLimiter = field(default_factory=AlertLimiter)

    @property
    def uses_tls(self) -> bool:
        return self.tls is not None

    def admit(self, certificate: PeerCertificate | None, calling_ae_title: str, address: str) -> Admitted:
        """Decide on an A-ASSOCIATE-RQ from ``address`` (its verified ``certificate`` under TLS)."""
        if self.tls is not None:
            if certificate is None:  # cannot happen after a CERT_REQUIRED handshake; refuse all the same
                return Admitted(refusal="no client certificate")
            identity = self.by_certificate(certificate)
            return Admitted(identity) if identity is not None else Admitted(
                refusal="certificate not in the node identity table")
        identity = self.by_ae_title(calling_ae_title, address)
        if identity is not None:
            return Admitted(identity)
        if not self.ae_titles_configured():
            return Admitted()
        return Admitted(refusal="calling AE title at this address not in the node identity table")

    def alert(self, listener: str, address: str, reason: str, *, claimed: str = "") -> None:
        """Record a Security Alert (Node Authentication) for a refused peer, rate-limited per address."""
        if not self.alerts.allow(address):
            return
        held = self.alerts.take_suppressed()
        text = f"{reason} ({held} more refusals held back since the last alert)" if held else reason
        audit.record(lambda: audit.node_authentication_failure(listener=listener, peer_address=address,
                                                               reason=text, peer=claimed))
        # The refused peer's thread ends here; the audit sink may have opened its database connection.
        from django.db import connection

        connection.close()

    @classmethod
    def with_identity_table(cls, tls: ssl.SSLContext | None, *,
                            handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT) -> PeerAdmission:
        """The policy backed by the ``atna`` node identity table (a Django app: imported here, at the edge).

        Lookups run in pynetdicom's association threads: each releases that thread's database connection
        afterwards, as the SCP's handlers do (scp.py), so an open association holds none.
        """
        from django.db import connection

        from atna import identities
        from atna.models import NodeIdentity

        def released(lookup: Callable[[], Identity | None]) -> Identity | None:
            try:
                return lookup()
            finally:
                connection.close()

        checked: list[tuple[float, bool]] = []

        def ae_titles_configured() -> bool:
            now = time.monotonic()
            if checked and now - checked[0][0] < identities.CACHE_SECONDS:
                return checked[0][1]
            try:
                found = NodeIdentity.objects.filter(enabled=True).exclude(ae_title="").exists()
            finally:
                connection.close()
            checked[:] = [(now, found)]
            return found

        return cls(tls=tls,
                   by_certificate=lambda cert: released(lambda: identities.for_certificate(cert)),
                   by_ae_title=lambda title, address: released(lambda: identities.for_dicom(title, address)),
                   ae_titles_configured=ae_titles_configured, handshake_timeout=handshake_timeout)


__all__ = ["Admitted", "PeerAdmission", "CALLING_AE_NOT_RECOGNIZED", "REJECTED_PERMANENT",
           "SOURCE_SERVICE_USER"]
