"""End to end over real HTTP: gunicorn (sync workers) serving config.wsgi on an
ephemeral loopback port, against a fresh SQLite file migrated with manage.py.

Only what the real apps expose is used: the three SOAP endpoints with their
current OPERATIONS, the WSDLs, and the hostile-input corpus.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
import requests
from lxml import etree

from tests.gunicorn_server import Server, run_gunicorn
from tests.xds_core.soap.hostile_corpus import HostileCase, cases, hundred_megabytes, watched_port
from xds_core import ns
from xds_core.ns import q
from xds_core.safe_xml import parse_xml
from xds_core.soap.client import SoapClient, TransportError
from xds_core.soap.faults import parse_fault
from xds_core.soap.mtom import OutgoingPart, cid_href
from xds_core.vocabulary import Action

MAX_REQUEST = 16 * 1024 * 1024
UNKNOWN_ACTION = "urn:example:NotAnIheAction"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("e2e")
    spool = work / "spool"
    spool.mkdir()
    env = {
        "DATABASE_URL": f"sqlite:///{work / 'xds.sqlite3'}",
        "XDS_VAR_DIR": str(work / "var"),
        "XDS_DOCUMENT_DIR": str(work / "documents"),
        "XDS_MAX_REQUEST_SIZE": str(MAX_REQUEST),
        "TMPDIR": str(spool),  # MTOM spill files land here: checked empty afterwards
    }
    with run_gunicorn(env, spool=spool, migrate=True) as running:
        yield running


def stored_query_body() -> etree._Element:
    """A well-formed ITI-18 FindDocuments request."""
    request = etree.Element(q(ns.QUERY, "AdhocQueryRequest"), nsmap={"query": ns.QUERY, "rim": ns.RIM})
    etree.SubElement(request, q(ns.QUERY, "ResponseOption"), returnType="ObjectRef", returnComposedObjects="true")
    query = etree.SubElement(request, q(ns.RIM, "AdhocQuery"), id="urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d")
    for name, value in (("$XDSDocumentEntryPatientId", "'e2e-1^^^&1.3.6.1.4.1.21367.13.20.1000&ISO'"),
                        ("$XDSDocumentEntryStatus", "('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')")):
        slot = etree.SubElement(query, q(ns.RIM, "Slot"), name=name)
        etree.SubElement(etree.SubElement(slot, q(ns.RIM, "ValueList")), q(ns.RIM, "Value")).text = value
    return request


def assert_valid_exchange(server: Server) -> None:
    """A valid SOAP request is answered with a SOAP 1.2 message relating to it."""
    result = SoapClient(server.endpoint("registry"), timeout=30).call(
        Action.RegistryStoredQuery, stored_query_body(), message_id="urn:uuid:e2e-valid-request")
    assert result.relates_to == "urn:uuid:e2e-valid-request"
    assert result.fault is None, result.fault
    assert result.body.tag == q(ns.QUERY, "AdhocQueryResponse")
    assert result.action == Action.RegistryStoredQueryResponse


def test_unknown_action_is_action_not_supported_over_http(server: Server) -> None:
    for name in ("registry", "repository", "imaging-source"):
        result = SoapClient(server.endpoint(name)).call(UNKNOWN_ACTION, etree.Element("{urn:x}Ping"),
                                                         message_id=f"urn:uuid:e2e-unknown-{name}")
        assert result.http_status == 400
        assert result.fault is not None and result.fault.subcode == "wsa:ActionNotSupported"
        assert result.action == ns.WSA_FAULT_ACTION and result.relates_to == f"urn:uuid:e2e-unknown-{name}"


@pytest.mark.parametrize(("name", "path"), [
    ("registry", "/xds/registry"), ("repository", "/xds/repository"), ("imaging-source", "/xds/imaging-source")])
def test_wsdl_carries_the_real_address(server: Server, name: str, path: str) -> None:
    response = requests.get(f"{server.url}{path}?wsdl", timeout=10)
    assert response.status_code == 200
    wsdl = parse_xml(response.content)
    assert [el.get("location") for el in wsdl.iter(q(ns.WSDL_SOAP12, "address"))] == [server.url + path]
    first = next(el.get("schemaLocation") for el in wsdl.iter(q(ns.XSD, "include")))
    assert first.startswith(f"{server.url}{path}?xsd=")
    assert parse_xml(requests.get(first, timeout=10).content).tag == q(ns.XSD, "schema")
    assert requests.get(f"{server.url}{path}", params={"xsd": "../../config/settings.py"}, timeout=10
                        ).status_code == 404


def test_mtom_request_over_http_leaves_no_spill_files(server: Server) -> None:
    body = etree.Element("{urn:x}Submit", nsmap={"xop": ns.XOP})
    document = etree.SubElement(body, "{urn:x}Document")
    etree.SubElement(document, q(ns.XOP, "Include"), href=cid_href("big@e2e"))
    content = os.urandom(3 * 1024 * 1024)
    result = SoapClient(server.endpoint("repository")).call(
        UNKNOWN_ACTION, body, parts=[OutgoingPart("big@e2e", "application/octet-stream", content)])
    assert result.fault is not None and result.fault.subcode == "wsa:ActionNotSupported"
    time.sleep(0.2)
    assert list(server.spool.iterdir()) == []


def test_chunked_mtom_request_is_read_to_its_end(server: Server) -> None:
    # An iterator part without a size: no Content-Length, chunked transfer; the
    # whole body must still be parsed (the fault names the action it found).
    body = etree.Element("{urn:x}Submit", nsmap={"xop": ns.XOP})
    etree.SubElement(etree.SubElement(body, "{urn:x}Document"), q(ns.XOP, "Include"), href=cid_href("c@e2e"))
    part = OutgoingPart("c@e2e", "application/octet-stream", lambda: iter([b"x" * 300_000] * 4))
    result = SoapClient(server.endpoint("repository")).call(UNKNOWN_ACTION, body, parts=[part],
                                                            message_id="urn:uuid:e2e-chunked")
    assert result.fault is not None and result.fault.subcode == "wsa:ActionNotSupported"
    assert result.relates_to == "urn:uuid:e2e-chunked"


@pytest.mark.parametrize("case", cases(), ids=lambda case: case.file)
def test_hostile_input_then_valid_request(server: Server, case: HostileCase) -> None:
    with watched_port() as port:
        response = requests.post(server.endpoint("registry"), data=case.body(port.port),
                                 headers={"Content-Type": case.content_type}, timeout=30)
        assert port.connections() == 0
    assert response.status_code == case.http
    assert response.headers["Content-Type"].startswith("application/soap+xml")
    fault = parse_fault(parse_xml(response.content).find(f"{q(ns.SOAP12, 'Body')}/{q(ns.SOAP12, 'Fault')}"))
    assert fault.code == case.code
    if case.subcode:
        assert fault.subcode == case.subcode
    assert server.process.poll() is None
    assert_valid_exchange(server)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_hundred_megabyte_body_is_refused_with_413(server: Server, chunked: bool) -> None:
    body = hundred_megabytes()
    if not chunked:
        # requests sends Content-Length for a sized iterable.
        class Sized:
            def __iter__(self) -> Iterator[bytes]:
                return body

            def __len__(self) -> int:
                return 100 * 1024 * 1024

        data: object = Sized()
    else:
        data = body
    response = requests.post(server.endpoint("registry"), data=data,
                             headers={"Content-Type": "application/soap+xml"}, timeout=60)
    assert response.status_code == 413
    fault = parse_fault(parse_xml(response.content).find(f"{q(ns.SOAP12, 'Body')}/{q(ns.SOAP12, 'Fault')}"))
    assert fault.code == "Sender"
    assert server.process.poll() is None
    assert_valid_exchange(server)


def test_client_transport_errors(server: Server) -> None:
    with pytest.raises(TransportError, match="not SOAP"):
        SoapClient(f"{server.url}/no/such/endpoint").call(UNKNOWN_ACTION, etree.Element("{urn:x}Ping"))
    with watched_port() as port:
        closed = port.port
    with pytest.raises(TransportError):
        SoapClient(f"http://127.0.0.1:{closed}/xds/registry", timeout=5).call(UNKNOWN_ACTION,
                                                                              etree.Element("{urn:x}Ping"))


def test_one_log_line_per_transaction(server: Server) -> None:
    before = len(server.transaction_lines())
    SoapClient(server.endpoint("imaging-source")).call(UNKNOWN_ACTION, etree.Element("{urn:x}Ping"),
                                                        message_id="urn:uuid:e2e-log-line")
    deadline = time.monotonic() + 5
    while len(server.transaction_lines()) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    new = [line for line in server.transaction_lines()[before:] if "urn:uuid:e2e-log-line" in line]
    assert len(new) == 1
    assert "endpoint=imaging-source" in new[0] and "status=Fault:Sender/wsa:ActionNotSupported" in new[0]
