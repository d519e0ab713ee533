"""NodeIdentityMiddleware: a TLS peer's certificate -> its node identity, or a refusal with a Security Alert."""

from __future__ import annotations

import pytest
from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory
from lxml import etree

from atna import identities
from atna.middleware import NodeIdentityMiddleware, identity_of
from atna.models import NodeIdentity
from xds_core import audit, ns
from xds_core.identity import Identity, PeerCertificate, Role
from xds_core.tls import ENVIRON_PEER_CERTIFICATE

CONSUMER = PeerCertificate(sha256="a" * 64, subject="CN=consumer,OU=consumer,O=Hospital B", issuer="CN=CA")
STRANGER = PeerCertificate(sha256="b" * 64, subject="CN=stranger,O=Elsewhere", issuer="CN=CA")

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def table() -> None:
    identities.forget()
    NodeIdentity.objects.create(name="consumer-b", cert_sha256=CONSUMER.sha256, roles="consumer")
    NodeIdentity.objects.create(name="retired", cert_subject=STRANGER.subject, roles="source", enabled=False)


def _view(request: HttpRequest) -> HttpResponse:
    identity = identity_of(request)
    return HttpResponse(identity.name if identity else "none")


def _middleware() -> NodeIdentityMiddleware:
    return NodeIdentityMiddleware(_view, tls_enabled=True)


def _request(certificate: PeerCertificate | None, *, soap: bool = False, address: str = "192.0.2.10") -> HttpRequest:
    factory = RequestFactory()
    extra = {ENVIRON_PEER_CERTIFICATE: certificate} if certificate is not None else {}
    if soap:
        return factory.post("/xds/registry", data=b"<x/>", content_type="application/soap+xml; charset=UTF-8",
                            REMOTE_ADDR=address, **extra)
    return factory.get("/patients/", REMOTE_ADDR=address, **extra)


def test_with_tls_off_the_middleware_removes_itself() -> None:
    with pytest.raises(MiddlewareNotUsed):
        NodeIdentityMiddleware(_view, tls_enabled=False)


def test_a_known_certificate_reaches_the_view_with_its_identity() -> None:
    request = _request(CONSUMER)
    with audit.capture() as events:
        response = _middleware()(request)
    assert response.status_code == 200 and response.content == b"consumer-b"
    assert request.xds_identity == Identity("consumer-b", frozenset({Role.CONSUMER}))  # type: ignore[attr-defined]
    assert events == []


@pytest.mark.parametrize("certificate", [None, STRANGER], ids=["no-certificate", "disabled-identity"])
def test_an_unknown_peer_gets_403_and_a_security_alert(certificate: PeerCertificate | None) -> None:
    with audit.capture() as events:
        response = _middleware()(_request(certificate))
    assert response.status_code == 403 and response["Content-Type"].startswith("text/plain")
    [alert] = events
    assert alert.event_id is audit.EventId.SECURITY_ALERT
    assert alert.event_types == (audit.SecurityAlertType.NODE_AUTHENTICATION,)
    assert alert.requestor is not None and alert.requestor.network_address == "192.0.2.10"
    assert alert.requestor.user_id == (certificate.subject if certificate else "unauthenticated peer")


def test_a_soap_request_of_an_unknown_peer_gets_a_failed_authentication_fault() -> None:
    response = _middleware()(_request(STRANGER, soap=True))
    assert response.status_code == 403
    assert response["Content-Type"].startswith("application/soap+xml")
    envelope = etree.fromstring(response.content)
    code = envelope.find(f".//{{{ns.SOAP12}}}Code")
    assert code is not None
    assert code.findtext(f"{{{ns.SOAP12}}}Value") == "env:Sender"
    subcode = code.find(f"{{{ns.SOAP12}}}Subcode/{{{ns.SOAP12}}}Value")
    assert subcode is not None
    prefix, _, local = (subcode.text or "").partition(":")
    assert (subcode.nsmap[prefix], local) == (ns.WSSE, "FailedAuthentication")


def test_alerts_are_rate_limited_per_peer_address() -> None:
    middleware = _middleware()
    with audit.capture() as events:
        for _ in range(5):
            assert middleware(_request(STRANGER, address="192.0.2.20")).status_code == 403
        assert middleware(_request(STRANGER, address="192.0.2.21")).status_code == 403
    assert [e.requestor.network_address for e in events if e.requestor] == ["192.0.2.20", "192.0.2.21"]

