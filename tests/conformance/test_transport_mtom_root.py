"""The conformance runner's transport reads a vendor's MTOM answer by ``start`` (RFC 2387 §3.2).

A retrieve answer whose SOAP root is first, in the middle or last (``start`` with or without
angle brackets) yields the document bytes; a ``start`` naming no part is a TransportFailure
with a reason, not a guess at the first part.  Hand-written bodies
(tests/xds_core/soap/mtom_bodies.py) from a loopback HTTP server.
"""

from __future__ import annotations

import pytest

from conformance.transport import Exchange, Transport, TransportFailure, retrieve_request
from tests.xds_core.soap.mtom_bodies import DOCUMENT, FIRST, LAST, ROOT_CASES, content_type, package
from tests.xds_core.soap.test_client import Responder, Seen, http_server
from xds_core import ns
from xds_core.safe_xml import parse_xml
from xds_core.vocabulary import Action, ResponseStatus

REPOSITORY_ID = "1.3.6.1.4.1.21367.13.70.777"
DOCUMENT_ID = "1.3.6.1.4.1.21367.13.70.777.1"


def _retrieve_answer(relates_to: str) -> bytes:
    """An ITI-43 answer envelope (ITI TF-2b 3.43.5) whose Document refers to ``cid:doc%40t``."""
    return (
        f"<env:Envelope xmlns:env='{ns.SOAP12}' xmlns:wsa='{ns.WSA}'><env:Header>"
        f"<wsa:Action>{Action.RetrieveDocumentSetResponse.value}</wsa:Action>"
        f"<wsa:RelatesTo>{relates_to}</wsa:RelatesTo></env:Header><env:Body>"
        f"<xdsb:RetrieveDocumentSetResponse xmlns:xdsb='{ns.XDSB}' xmlns:rs='{ns.RS}'>"
        f"<rs:RegistryResponse status='{ResponseStatus.SUCCESS.value}'/><xdsb:DocumentResponse>"
        f"<xdsb:RepositoryUniqueId>{REPOSITORY_ID}</xdsb:RepositoryUniqueId>"
        f"<xdsb:DocumentUniqueId>{DOCUMENT_ID}</xdsb:DocumentUniqueId>"
        f"<xdsb:mimeType>application/octet-stream</xdsb:mimeType><xdsb:Document>"
        f"<xop:Include xmlns:xop='{ns.XOP}' href='cid:doc%40t'/></xdsb:Document></xdsb:DocumentResponse>"
        f"</xdsb:RetrieveDocumentSetResponse></env:Body></env:Envelope>").encode()


def answering(ctype: str, order: tuple[str, ...]) -> Responder:
    def respond(request: Seen) -> tuple[int, str, bytes]:
        message_id = parse_xml(request.body).findtext(f"{{{ns.SOAP12}}}Header/{{{ns.WSA}}}MessageID")
        return 200, ctype, package(order, root=_retrieve_answer(message_id))
    return respond


def _send(url: str) -> Exchange:
    return Transport({"repository": url}, timeout=10).send("ITI-43", retrieve_request([(REPOSITORY_ID, DOCUMENT_ID)]))


@pytest.mark.parametrize(("order", "start"), ROOT_CASES)
def test_transport_takes_the_root_start_names_and_returns_the_document(order: tuple[str, ...], start: str) -> None:
    with http_server(answering(content_type(start), order)) as (url, _seen):
        exchange = _send(url)
    assert (exchange.http_status, exchange.fault, exchange.action) == (
        200, None, Action.RetrieveDocumentSetResponse.value)
    [document] = exchange.documents
    assert (document.document_unique_id, document.content, document.problem) == (DOCUMENT_ID, DOCUMENT, None)


@pytest.mark.parametrize("start", ['"<nobody@t>"', '""'])
def test_transport_reports_a_start_naming_no_part_as_a_transport_failure(start: str) -> None:
    with http_server(answering(content_type(start), LAST)) as (url, _seen):
        with pytest.raises(TransportFailure, match="start"):
            _send(url)


def test_transport_without_start_takes_the_first_part() -> None:
    with http_server(answering(content_type(None), FIRST)) as (url, _seen):
        [document] = _send(url).documents
    assert document.content == DOCUMENT
