"""Node identity of every HTTP request under TLS (ITI TF-2a 3.19.6.1: authorization by an explicit table).

The web worker (``config.http_worker``) terminated TLS and put the verified client certificate in the WSGI
environ (``xds.peer_certificate``).  This middleware maps it through the node identity table
(:func:`atna.identities.for_certificate`) to an :class:`~xds_core.identity.Identity`, set as
``request.xds_identity`` for the views (the SOAP endpoint names it in its audit record; role checks read it).
No certificate, no row, or a disabled row: the request is refused with its protocol's own answer and a Security
Alert (Node Authentication) is recorded, rate-limited per peer address (:class:`atna.tls.AlertLimiter`):

* a SOAP request (``application/soap+xml`` or MTOM ``multipart/related``) -> a SOAP 1.2 Fault ``env:Sender``
  with subcode ``wsse:FailedAuthentication`` (WS-Security 1.1 SOAP Message Security 12, "An invalid security
  token was provided"), HTTP 403: the peer is known not to be allowed (RFC 9110 15.5.4); SOAP 1.2 Part 2
  7.5.2.2 maps Sender to 400, but a 400 would invite a client to "fix" its message and send it again;
* anything else (WADO, portal, APIs, WSDL) -> 403 plain text.

With ``XDS_TLS=off`` the middleware removes itself at start (``MiddlewareNotUsed``): plain HTTP costs nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseForbidden

from atna.identities import for_certificate
from atna.tls import AlertLimiter, node_tls
from xds_core import audit, ns
from xds_core.identity import Identity, PeerCertificate
from xds_core.soap.envelope import render_fault
from xds_core.soap.faults import SoapFault
from xds_core.tls import ENVIRON_PEER_CERTIFICATE

logger = logging.getLogger("xds.security")

#: WS-Security 1.0 SOAP Message Security, 12 "Error Handling": the fault subcode of a refused requester.
FAILED_AUTHENTICATION = f"{{{ns.WSSE}}}FailedAuthentication"
#: WS-Addressing 1.0 SOAP Binding 6: a fault message's action (as xds_core.http.endpoint answers faults).
_FAULT_CONTENT_TYPE = f'application/soap+xml; charset=UTF-8; action="{ns.WSA_FAULT_ACTION}"'
#: Content types of SOAP 1.2 requests (plain, and MTOM/XOP packages).
_SOAP_MEDIA = ("application/soap+xml", "multipart/related")


def identity_of(request: HttpRequest) -> Identity | None:
    """The node identity of the request's TLS peer (None under plain HTTP, or before the middleware ran)."""
    return getattr(request, "xds_identity", None)


def certificate_of(request: HttpRequest) -> PeerCertificate | None:
    """The verified client certificate of the request (None under plain HTTP)."""
    found = request.META.get(ENVIRON_PEER_CERTIFICATE)
    return found if isinstance(found, PeerCertificate) else None


class NodeIdentityMiddleware:
    """Refuses a TLS request whose certificate maps to no enabled node identity; sets ``request.xds_identity``."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase], *,
                 tls_enabled: bool | None = None) -> None:
        if not (node_tls().enabled if tls_enabled is None else tls_enabled):
            raise MiddlewareNotUsed("XDS_TLS=off: no client certificates to check")
        self.get_response = get_response
        self.alerts = AlertLimiter()

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        certificate = certificate_of(request)
        identity = for_certificate(certificate) if certificate is not None else None
        if identity is None:
            return self.refuse(request, certificate)
        request.xds_identity = identity  # type: ignore[attr-defined]
        return self.get_response(request)

    def refuse(self, request: HttpRequest, certificate: PeerCertificate | None) -> HttpResponseBase:
        address = request.META.get("REMOTE_ADDR", "")
        reason = ("no client certificate" if certificate is None
                  else "certificate not in the node identity table (or its identity is disabled)")
        if self.alerts.allow(address):
            held = self.alerts.take_suppressed()
            # The fingerprint names the certificate for the operator adding it to the table; no patient data.
            logger.warning("node identity refused peer=%s sha256=%s reason=%s (alerts held back: %d)", address,
                           certificate.sha256 if certificate else "-", reason, held)
            meta = request.META
            listener = f"{request.scheme}://{meta.get('SERVER_NAME', '')}:{meta.get('SERVER_PORT', '')}"
            audit.record(audit.node_authentication_failure(
                listener=listener, peer_address=address, reason=reason,
                peer=certificate.subject if certificate is not None else ""))
        if request.method == "POST" and request.content_type in _SOAP_MEDIA:
            fault = SoapFault("Sender", "the client certificate is not authorized on this node",
                              subcode=FAILED_AUTHENTICATION, http_status=403)
            response: HttpResponseBase = HttpResponse(render_fault(fault), status=403,
                                                      content_type=_FAULT_CONTENT_TYPE)
        else:
            response = HttpResponseForbidden("403 Forbidden: the client certificate is not authorized on this node\n",
                                             content_type="text/plain; charset=utf-8")
        response._has_been_logged = True  # type: ignore[attr-defined]  # our warning above is the log line
        return response
