"""Which MIME part is the SOAP root: byte-level, hand-written multipart/related bodies.

RFC 2387 §3.2: "The start parameter, if given, is the content-ID of the compound object's
root.  If not present the root is the first body part."  XOP 1.0 §4.1: apart from finding the
root, the order of the parts is not significant.  So the root may come first, in the middle or
last; ``start`` may be written with or without the angle brackets of a msg-id; without
``start`` the first part is the root; a ``start`` that names no part is an error (SOAP 1.2
Sender fault from the server, TransportError in the client), never a guess.

Every package holds the root, a *decoy* (another well-formed SOAP envelope with its own
wsa:Action) and a binary part: a reader that picks the wrong part answers for the decoy.
Server side: POSTs to the real endpoint served by gunicorn (the root's action is unknown, so
the ActionNotSupported fault names the action of the part the server took as the root).
Client side: :class:`SoapClient` against a loopback HTTP server answering such bodies.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from lxml import etree

from tests.gunicorn_server import Server, run_gunicorn
from tests.xds_core.soap.mtom_bodies import (
    DECOY_ACTION,
    DOCUMENT,
    FIRST,
    LAST,
    MIDDLE,
    ROOT_ACTION,
    ROOT_CASES,
    ROOT_MESSAGE_ID,
    content_type,
    package,
)
from tests.xds_core.soap.test_client import Responder, Seen, http_server
from xds_core import ns
from xds_core.ns import q
from xds_core.safe_xml import parse_xml
from xds_core.soap.client import SoapClient, SoapResult, TransportError
from xds_core.soap.faults import parse_fault

# ----------------------------------------------------------------------------- server side


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("mtom-root")
    with run_gunicorn({"XDS_VAR_DIR": str(work / "var"), "DATABASE_URL": f"sqlite:///{work / 'db.sqlite3'}"},
                      spool=work) as running:
        yield running


def post(server: Server, ctype: str, body: bytes) -> tuple[int, etree._Element]:
    response = requests.post(server.endpoint("registry"), data=body, timeout=30,
                             headers={"Content-Type": ctype, "Accept-Encoding": "identity"})
    assert response.headers["Content-Type"].startswith("application/soap+xml"), response.text[:300]
    return response.status_code, parse_xml(response.content)


def taken_as_root(envelope: etree._Element) -> tuple[str | None, str | None]:
    """(action the ActionNotSupported fault names, RelatesTo) of the server's answer."""
    fault = parse_fault(envelope.find(f"{q(ns.SOAP12, 'Body')}/{q(ns.SOAP12, 'Fault')}"))
    assert (fault.code, fault.subcode) == ("Sender", "wsa:ActionNotSupported"), fault.reason
    action = fault.detail.findtext(q(ns.WSA, "Action")) if fault.detail is not None else None
    return action, envelope.findtext(f"{q(ns.SOAP12, 'Header')}/{q(ns.WSA, 'RelatesTo')}")


@pytest.mark.parametrize(("order", "start"), ROOT_CASES)
def test_server_takes_the_part_start_names_as_the_root_wherever_it_is(server: Server, order: tuple[str, ...],
                                                                      start: str) -> None:
    status, envelope = post(server, content_type(start), package(order))
    assert status == 400
    assert taken_as_root(envelope) == (ROOT_ACTION, ROOT_MESSAGE_ID)


def test_server_takes_the_first_part_as_the_root_without_start(server: Server) -> None:
    status, envelope = post(server, content_type(None), package(FIRST))
    assert (status, taken_as_root(envelope)) == (400, (ROOT_ACTION, ROOT_MESSAGE_ID))
    # RFC 2387 §3.2's default applies whatever the first part is: here, the decoy.
    status, envelope = post(server, content_type(None), package(MIDDLE))
    assert taken_as_root(envelope)[0] == DECOY_ACTION


@pytest.mark.parametrize("start", ['"<nobody@t>"', "nobody@t", '"<>"', '""'])
def test_server_answers_a_start_naming_no_part_with_a_sender_fault(server: Server, start: str) -> None:
    status, envelope = post(server, content_type(start), package(LAST))
    assert status == 400
    fault = parse_fault(envelope.find(f"{q(ns.SOAP12, 'Body')}/{q(ns.SOAP12, 'Fault')}"))
    assert fault.code == "Sender"
    assert "start" in fault.reason
    assert any(" endpoint=registry " in line and "Fault:Sender" in line for line in server.transaction_lines())


# ----------------------------------------------------------------------------- client side


def answering(ctype: str, order: tuple[str, ...]) -> Responder:
    def respond(request: Seen) -> tuple[int, str, bytes]:
        message_id = parse_xml(request.body).findtext(f"{q(ns.SOAP12, 'Header')}/{q(ns.WSA, 'MessageID')}")
        return 200, ctype, package(order, relates_to=message_id)
    return respond


def _ask(url: str) -> SoapResult:
    body = etree.Element("{urn:test:soap}Ask")
    return SoapClient(url, timeout=10).call("urn:test:mtom-root:Ask", body, message_id="urn:uuid:client-ask-1")


@pytest.mark.parametrize(("order", "start"), ROOT_CASES)
def test_client_takes_the_part_start_names_as_the_root_wherever_it_is(order: tuple[str, ...], start: str) -> None:
    with http_server(answering(content_type(start), order)) as (url, _seen):
        result = _ask(url)
    try:
        assert (result.action, result.relates_to, result.message_id) == (
            ROOT_ACTION, "urn:uuid:client-ask-1", ROOT_MESSAGE_ID)
        include = result.body.find(f"{{{ns.XOP}}}Include")
        assert result.binary(result.body).read_bytes() == DOCUMENT and include is not None
        assert sorted(result.attachments) == ["decoy@t", "doc@t"]  # the decoy is just another part
    finally:
        result.close()


def test_client_takes_the_first_part_as_the_root_without_start() -> None:
    with http_server(answering(content_type(None), MIDDLE)) as (url, _seen):
        result = _ask(url)
    assert result.action == DECOY_ACTION
    result.close()


@pytest.mark.parametrize("start", ['"<nobody@t>"', "nobody@t", '""'])
def test_client_refuses_a_start_naming_no_part(start: str) -> None:
    with http_server(answering(content_type(start), FIRST)) as (url, _seen):
        with pytest.raises(TransportError, match="start"):
            _ask(url)
