"""The accepting side of our DICOM listener, bounded: associations, PDU lengths, idle time.

pynetdicom's ``AssociationServer`` starts a thread per TCP connection and keeps an association as
long as the peer does.  Its only limit, ``AE.maximum_associations`` (10 by default), counts every
association alike: a handful of idle ones from one peer locked every modality out (issue 15).
Here, through pynetdicom's own extension points (``make_server(server_class=...)``, the server's
``request_handler``):

- **Association limits** (:class:`LimitedACSE`): at most ``max_associations`` in total and
  ``max_associations_per_ae`` per Calling AE Title; past either, A-ASSOCIATE-RJ with result
  rejected-transient (2), source service-provider presentation related (3), reason
  local-limit-exceeded (2) - PS3.8 9.3.4, Table 9-21.  "Transient": the peer may try again later.
- **TCP connections** (:meth:`GuardedAssociationServer.verify_request`): a connection that never
  sends an A-ASSOCIATE-RQ still costs a thread until the ARTIM timer (``acse_timeout``) closes it;
  past twice the association limit new connections are closed at once.
- **PDU lengths** (:mod:`imaging_source.dicom.pdu_limits`): every association's PDU reader refuses
  a declared length past our Maximum Length (P-DATA-TF) or a small cap (the others) with A-ABORT.
- **Idle and stalled peers**: ``network_timeout`` is the idle limit of an association (pynetdicom
  aborts it) *and* the receive timeout of its socket, so a peer that stops in the middle of a PDU
  is dropped as well (accepted sockets are blocking without it, and would hold their thread forever).
- **TLS and identity** (issue 13, :mod:`imaging_source.dicom.admission`): with a server context the
  accepted socket is wrapped *without* a handshake -- pynetdicom's own ``ssl_context`` would shake hands
  in ``get_request``, i.e. in the one accepting thread, where a silent client stops every other peer --
  and the handshake runs in the connection's thread (:meth:`GuardedRequestHandler.handle`), bounded by
  the handshake timeout; connections still shaking hands count against the connection cap.  Who the peer
  is (its verified certificate, else its Calling AE Title at its address) is decided on the
  A-ASSOCIATE-RQ, before the limits: an unknown peer gets A-ASSOCIATE-RJ rejected-permanent /
  calling-AE-title-not-recognized (PS3.8 Table 9-21).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

from pynetdicom import evt
from pynetdicom.acse import ACSE
from pynetdicom.transport import RequestHandler

from imaging_source.dicom.admission import (
    CALLING_AE_NOT_RECOGNIZED,
    REJECTED_PERMANENT,
    SOURCE_SERVICE_USER,
    PeerAdmission,
)
from imaging_source.dicom.ae import NoDelayAssociationServer
from imaging_source.dicom.config import ListenerLimits
from imaging_source.dicom.pdu_limits import PduLimits, guard_pdu_reader
from xds_core.identity import Identity, PeerCertificate
from xds_core.tls import peer_certificate

logger = logging.getLogger(__name__)

#: A-ASSOCIATE-RJ (PS3.8 Table 9-21): rejected-transient, DICOM UL service-provider (presentation
#: related function), local-limit-exceeded.
REJECTED_TRANSIENT, SOURCE_PROVIDER_PRESENTATION, LOCAL_LIMIT_EXCEEDED = 0x02, 0x03, 0x02
#: Attribute on an Association: the Calling AE Title it was admitted under.
_ADMITTED = "_xds_admitted_as"
#: Attributes on an Association: the peer's verified certificate (TLS), and the identity it was admitted as.
_CERTIFICATE = "_xds_peer_certificate"
_IDENTITY = "_xds_identity"


def identity_of(assoc: Any) -> Identity | None:
    """The node identity an accepted association was admitted as (None: plain mode, no AE-title rows)."""
    return getattr(assoc, _IDENTITY, None)


class LimitedACSE(ACSE):
    """pynetdicom's ACSE with the peer's identity (node identity table) and then our association limits
    checked before the negotiation proper."""

    def _negotiate_as_acceptor(self) -> None:
        server = self.assoc._server
        calling = str(self.requestor.primitive.calling_ae_title or "").strip()
        if isinstance(server, GuardedAssociationServer) and server.admission is not None:
            if not server.identify(self.assoc, calling):
                self.send_reject(REJECTED_PERMANENT, SOURCE_SERVICE_USER, CALLING_AE_NOT_RECOGNIZED)
                evt.trigger(self.assoc, evt.EVT_REJECTED, {})
                self.assoc.kill()
                return
        refusal = server.admit(self.assoc, calling) if isinstance(server, GuardedAssociationServer) else ""
        if refusal:
            logger.warning("dicom association refused from=%s@%s result=rejected-transient "
                           "reason=local-limit-exceeded (%s)", calling or "-",
                           getattr(self.requestor, "address", "-"), refusal)
            self.send_reject(REJECTED_TRANSIENT, SOURCE_PROVIDER_PRESENTATION, LOCAL_LIMIT_EXCEEDED)
            evt.trigger(self.assoc, evt.EVT_REJECTED, {})
            self.assoc.kill()
            return
        super()._negotiate_as_acceptor()


class GuardedRequestHandler(RequestHandler):
    """pynetdicom's request handler; the association it builds gets our ACSE and PDU guard."""

    server: GuardedAssociationServer

    def handle(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            try:
                self._handshake(self.request)
            finally:
                self.server.handshake_done()
            if self.request.fileno() == -1:  # refused and closed
                return
        super().handle()

    def _handshake(self, sock: ssl.SSLSocket) -> None:
        """The TLS handshake (PS3.15 B.10), in this connection's thread and bounded in time; a failure -- no
        certificate, TLS < 1.2, an unknown CA, a silent client -- closes the connection with a Security Alert."""
        admission = self.server.admission
        assert admission is not None
        address = str(self.client_address[0]) if self.client_address else "-"
        sock.settimeout(admission.handshake_timeout)
        try:
            sock.do_handshake()
        except (OSError, ValueError) as exc:  # ssl.SSLError, a timeout, a reset
            reason = _handshake_failure(exc)
            logger.warning("dicom TLS handshake refused from=%s: %s", address, reason)
            admission.alert(self.server.listener_name, address, f"TLS handshake failed: {reason}")
            _close(sock)
            return
        sock.settimeout(self.server.limits.network_timeout)

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        if isinstance(self.request, ssl.SSLSocket):
            setattr(assoc, _CERTIFICATE, peer_certificate(self.request))
        assoc.acse = LimitedACSE(assoc)
        guard_pdu_reader(assoc.dul, PduLimits(max_p_data=int(self.ae.maximum_pdu_size or 0)))
        on_end = self.server.on_association_end
        if on_end is not None:
            # However the association ends - released, aborted by either side, or killed by an
            # exception in pynetdicom's reactor, which fires no event - its thread ends here.
            upstream_run = assoc.run

            def run() -> None:
                try:
                    upstream_run()
                finally:
                    on_end(assoc)

            assoc.run = run
        return assoc


class GuardedAssociationServer(NoDelayAssociationServer):
    """Threaded association server with :class:`ListenerLimits` (``limits=`` and optionally
    ``on_association_end=`` are passed through ``make_server``)."""

    def __init__(self, *args: Any, limits: ListenerLimits,
                 on_association_end: Callable[[Any], None] | None = None,
                 admission: PeerAdmission | None = None, **kwargs: Any) -> None:
        self.limits = limits
        #: Called with each association when its thread ends (after pynetdicom's own clean-up).
        self.on_association_end = on_association_end
        #: TLS and the identity table (None: plain TCP, anyone -- the tests of the limits alone).
        self.admission = admission
        self._admission = threading.Lock()
        self._handshaking = 0
        kwargs["request_handler"] = GuardedRequestHandler
        super().__init__(*args, **kwargs)
        host, port = self.server_address[:2]
        #: This listener as the Security Alerts name it (``dicom://AE@host:port``).
        self.listener_name = f"dicom://{self.ae_title}@{host}:{port}"

    @property
    def connection_cap(self) -> int:
        """Open TCP connections (shaking hands, negotiating or associated) beyond which new ones are closed."""
        return 2 * self.limits.max_associations

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        client_socket, address = super().get_request()
        # A receive that waits longer than this ends the association (pynetdicom: Evt17).
        client_socket.settimeout(self.limits.network_timeout)
        if self.admission is not None and self.admission.tls is not None:
            # Wrapped only: the handshake is the connection thread's (GuardedRequestHandler.handle).
            client_socket = self.admission.tls.wrap_socket(client_socket, server_side=True,
                                                           do_handshake_on_connect=False)
        return client_socket, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self._admission:
            open_now = len(self.active_associations) + self._handshaking
            if open_now >= self.connection_cap:
                logger.warning("dicom connection refused from=%s: %d connections open (cap %d)",
                               client_address[0] if client_address else "-", open_now, self.connection_cap)
                return False
            if isinstance(request, ssl.SSLSocket):
                self._handshaking += 1
        return True

    def handshake_done(self) -> None:
        with self._admission:
            self._handshaking -= 1

    def identify(self, assoc: Any, calling_ae_title: str) -> bool:
        """Map the peer of ``assoc`` to a node identity (kept on the association); False, after a Security
        Alert, when it maps to none."""
        admission = self.admission
        assert admission is not None
        address = str(assoc.requestor.address or "-")
        certificate: PeerCertificate | None = getattr(assoc, _CERTIFICATE, None)
        try:
            admitted = admission.admit(certificate, calling_ae_title, address)
        except Exception:  # noqa: BLE001 - the table unreachable (database down): refuse, never admit
            logger.exception("dicom association from=%s: the node identity table could not be read", address)
            return False
        if admitted.refusal:
            claimed = certificate.subject if certificate is not None else calling_ae_title
            logger.warning("dicom association refused from=%s@%s result=rejected-permanent "
                           "reason=calling-ae-title-not-recognized (%s)", calling_ae_title or "-", address,
                           admitted.refusal)
            admission.alert(self.listener_name, address, admitted.refusal, claimed=claimed)
            return False
        setattr(assoc, _IDENTITY, admitted.identity)
        return True

    def admit(self, assoc: Any, calling_ae_title: str) -> str:
        """Admit ``assoc`` for ``calling_ae_title`` ("") or say which limit refuses it."""
        with self._admission:
            admitted = [getattr(a, _ADMITTED) for a in self.active_associations
                        if a is not assoc and getattr(a, _ADMITTED, None) is not None]
            same = sum(1 for title in admitted if title == calling_ae_title)
            if len(admitted) >= self.limits.max_associations:
                return f"{len(admitted)} associations open, limit {self.limits.max_associations}"
            if same >= self.limits.max_associations_per_ae:
                return f"{same} associations open for this AE title, limit {self.limits.max_associations_per_ae}"
            setattr(assoc, _ADMITTED, calling_ae_title)
            return ""


def _handshake_failure(exc: BaseException) -> str:
    """A handshake failure for the log and the Security Alert: OpenSSL's reason, never peer-sent text."""
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc.__class__.__name__).lower().replace("_", " ")
    return exc.__class__.__name__


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


__all__ = ["GuardedAssociationServer", "LimitedACSE", "LOCAL_LIMIT_EXCEEDED", "REJECTED_TRANSIENT", "identity_of"]
