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
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from pynetdicom import evt
from pynetdicom.acse import ACSE
from pynetdicom.transport import RequestHandler

from imaging_source.dicom.ae import NoDelayAssociationServer
from imaging_source.dicom.config import ListenerLimits
from imaging_source.dicom.pdu_limits import PduLimits, guard_pdu_reader

logger = logging.getLogger(__name__)

#: A-ASSOCIATE-RJ (PS3.8 Table 9-21): rejected-transient, DICOM UL service-provider (presentation
#: related function), local-limit-exceeded.
REJECTED_TRANSIENT, SOURCE_PROVIDER_PRESENTATION, LOCAL_LIMIT_EXCEEDED = 0x02, 0x03, 0x02
#: Attribute on an Association: the Calling AE Title it was admitted under.
_ADMITTED = "_xds_admitted_as"


class LimitedACSE(ACSE):
    """pynetdicom's ACSE with our association limits checked before the negotiation proper."""

    def _negotiate_as_acceptor(self) -> None:
        server = self.assoc._server
        calling = str(self.requestor.primitive.calling_ae_title or "").strip()
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

    def _create_association(self) -> Any:
        assoc = super()._create_association()
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
                 on_association_end: Callable[[Any], None] | None = None, **kwargs: Any) -> None:
        self.limits = limits
        #: Called with each association when its thread ends (after pynetdicom's own clean-up).
        self.on_association_end = on_association_end
        self._admission = threading.Lock()
        kwargs["request_handler"] = GuardedRequestHandler
        super().__init__(*args, **kwargs)

    @property
    def connection_cap(self) -> int:
        """Open TCP connections (negotiating or associated) beyond which new ones are closed at once."""
        return 2 * self.limits.max_associations

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        client_socket, address = super().get_request()
        # A receive that waits longer than this ends the association (pynetdicom: Evt17).
        client_socket.settimeout(self.limits.network_timeout)
        return client_socket, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        if len(self.active_associations) >= self.connection_cap:
            logger.warning("dicom connection refused from=%s: %d connections open (cap %d)",
                           client_address[0] if client_address else "-", len(self.active_associations),
                           self.connection_cap)
            return False
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


__all__ = ["GuardedAssociationServer", "LimitedACSE", "LOCAL_LIMIT_EXCEEDED", "REJECTED_TRANSIENT"]
