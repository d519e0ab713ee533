"""The HTTP <-> SOAP boundary: dispatch, error rendering, WSDL, streaming, logging.

Operations are registered only inside these tests (monkeypatched into the
actor's OPERATIONS dict); requests go through Django's full request handling.
"""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path

import pytest
from django.test import Client, RequestFactory
from lxml import etree

from tests.xds_core.soap.soap_helpers import (
    ECHO_ACTION,
    SOAP_CT,
    TEST_NS,
    document_element,
    mtom_request,
    payload,
    plain_request,
)
from xds_core import ns
from xds_core.ebxml.responses import DocumentResponse, registry_response, retrieve_document_set_response
from xds_core.errors import ErrorCode, XdsError
from xds_core.http.endpoint import Operation
from xds_core.ns import q
from xds_core.safe_xml import parse_xml
from xds_core.soap.client import SoapClient, dispatch_local, local_endpoints
from xds_core.soap.envelope import SoapRequest, SoapResponse
from xds_core.soap.faults import SoapFault, parse_fault
from xds_core.soap.mtom import OutgoingPart
from xds_core.soap.mtom_reader import read_message
from xds_registry import soap_operations as registry_operations
from xds_repository import soap_operations as repository_operations

RESPONSE_ACTION = "urn:test:EchoResponse"
MESSAGE_ID = "urn:uuid:00000000-0000-4000-8000-000000000001"


def echo(request: SoapRequest) -> SoapResponse:
    """Answers Success; echoes the size and SHA-1 of every t:Doc in the request."""
    body = registry_response([])
    for doc in request.body.iter(f"{{{TEST_NS}}}Doc"):
        attachment = request.binary(doc)
        slot = etree.SubElement(body, f"{{{TEST_NS}}}Seen")
        slot.text = f"{attachment.size}:{attachment.sha1}"
    return SoapResponse(RESPONSE_ACTION, body)


def fail(request: SoapRequest) -> SoapResponse:
    raise XdsError.of(ErrorCode.XDSUnknownPatientId, "patient 42^^^&1.2&ISO unknown", "urn:uuid:x")


def crash(request: SoapRequest) -> SoapResponse:
    raise RuntimeError("boom")


def refuse(request: SoapRequest) -> SoapResponse:
    raise SoapFault("Sender", "handler refuses the packaging")


def retrieve(request: SoapRequest) -> SoapResponse:
    doc = request.binary(request.body.find(f"{{{TEST_NS}}}Doc"))
    part = OutgoingPart("back@x", "application/octet-stream", lambda: iter([doc.read_bytes()]), size=doc.size)
    body, parts = retrieve_document_set_response([], [DocumentResponse("1.2", "1.2.3", "application/dicom", part)])
    return SoapResponse("urn:test:RetrieveResponse", body, attachments=parts)


@pytest.fixture
def operations(monkeypatch: pytest.MonkeyPatch) -> None:
    for action, handler, kind in [
        (ECHO_ACTION, echo, "RegistryResponse"),
        ("urn:test:Fail", fail, "AdhocQueryResponse"),
        ("urn:test:Crash", crash, "RegistryResponse"),
        ("urn:test:Refuse", refuse, "RegistryResponse"),
        ("urn:test:Retrieve", retrieve, "RetrieveDocumentSetResponse"),
    ]:
        operation = Operation("TEST-1", handler, RESPONSE_ACTION, kind)
        monkeypatch.setitem(registry_operations.OPERATIONS, action, operation)
    monkeypatch.setitem(repository_operations.OPERATIONS, "urn:test:Crash",
                        Operation("TEST-2", crash, RESPONSE_ACTION, "RetrieveDocumentSetResponse"))


@pytest.fixture
def spool(settings: object, tmp_path: Path) -> Path:
    directory = tmp_path / "spool"
    directory.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(directory)  # type: ignore[attr-defined]
    return directory


def post(client: Client, data: bytes, content_type: str = SOAP_CT, url: str = "/xds/registry"):  # noqa: ANN201
    return client.generic("POST", url, data, content_type=content_type)


def content_of(response) -> bytes:  # noqa: ANN001
    return b"".join(response.streaming_content) if response.streaming else response.content


def envelope_body(response) -> etree._Element:  # noqa: ANN001
    envelope = parse_xml(content_of(response))
    return envelope.find(q(ns.SOAP12, "Body"))[0]


def header(response, name: str) -> str | None:  # noqa: ANN001
    envelope = parse_xml(content_of(response))
    element = envelope.find(f"{q(ns.SOAP12, 'Header')}/{q(ns.WSA, name)}")
    return None if element is None else element.text


# ----------------------------------------------------------------------------- dispatch


def test_dispatches_on_action_and_answers_with_response_action(client: Client, operations: None) -> None:
    response = post(client, plain_request())
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/soap+xml")
    data = content_of(response)
    envelope = parse_xml(data)
    head = envelope.find(q(ns.SOAP12, "Header"))
    assert head.find(q(ns.WSA, "Action")).text == RESPONSE_ACTION
    assert head.find(q(ns.WSA, "RelatesTo")).text == MESSAGE_ID
    body = envelope.find(q(ns.SOAP12, "Body"))[0]
    assert body.tag == q(ns.RS, "RegistryResponse")
    assert body.get("status").endswith(":Success")


def test_unknown_action_is_action_not_supported(client: Client) -> None:
    response = post(client, plain_request(action="urn:nobody:Knows"))
    assert response.status_code == 400
    assert header(response, "Action") == ns.WSA_FAULT_ACTION
    assert header(response, "RelatesTo") == MESSAGE_ID
    fault = parse_fault(envelope_body(response))
    assert (fault.code, fault.subcode) == ("Sender", "wsa:ActionNotSupported")
    assert fault.detail is not None
    assert fault.detail.findtext(q(ns.WSA, "Action")) == "urn:nobody:Knows"


def test_xds_error_becomes_failure_of_the_operation_body_kind(client: Client, operations: None) -> None:
    response = post(client, plain_request(action="urn:test:Fail"))
    assert response.status_code == 200
    body = envelope_body(response)
    assert body.tag == q(ns.QUERY, "AdhocQueryResponse")
    assert body.get("status").endswith(":Failure")
    error = body.find(f"{q(ns.RS, 'RegistryErrorList')}/{q(ns.RS, 'RegistryError')}")
    assert error.get("errorCode") == "XDSUnknownPatientId" and error.get("location") == "urn:uuid:x"
    assert body.find(q(ns.RIM, "RegistryObjectList")) is not None


def test_unexpected_exception_is_logged_and_answered_with_internal_error_code(
        client: Client, operations: None, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="xds_core.http.endpoint"):
        registry = post(client, plain_request(action="urn:test:Crash"))
    assert any(record.exc_info and "boom" in str(record.exc_info[1]) for record in caplog.records)
    error = envelope_body(registry).find(f".//{q(ns.RS, 'RegistryError')}")
    assert error.get("errorCode") == ErrorCode.XDSRegistryError
    assert "boom" not in error.get("codeContext")  # internals stay in the log

    repository = post(client, plain_request(action="urn:test:Crash"), url="/xds/repository")
    body = envelope_body(repository)
    assert body.tag == q(ns.XDSB, "RetrieveDocumentSetResponse")
    assert body.find(f".//{q(ns.RS, 'RegistryError')}").get("errorCode") == ErrorCode.XDSRepositoryError


def test_soap_fault_from_a_handler_is_rendered(client: Client, operations: None) -> None:
    response = post(client, plain_request(action="urn:test:Refuse"))
    assert response.status_code == 400
    assert parse_fault(envelope_body(response)).reason == "handler refuses the packaging"


def test_one_log_line_per_transaction(client: Client, operations: None, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="xds.transaction"):
        post(client, plain_request(action="urn:test:Fail"))
        post(client, plain_request(action="urn:nobody:Knows"))
    lines = [record.getMessage() for record in caplog.records if record.name == "xds.transaction"]
    assert len(lines) == 2
    assert lines[0].startswith("xds transaction=TEST-1 endpoint=registry action=urn:test:Fail")
    assert f"message_id={MESSAGE_ID}" in lines[0]
    assert "status=Failure errors=1 warnings=0 http=200" in lines[0]
    assert "bytes_in=" in lines[0] and "duration_ms=" in lines[0]
    assert "transaction=- " in lines[1] and "status=Fault:Sender/wsa:ActionNotSupported" in lines[1]


# ----------------------------------------------------------------------------- MTOM


def test_mtom_request_and_streamed_mtom_response_clean_their_files(
        client: Client, operations: None, spool: Path) -> None:
    content = bytes(range(256)) * 4000  # > the in-memory threshold: spills
    body = payload("Retrieve")
    body.append(document_element(content_id="in@x"))
    content_type, data = mtom_request("urn:test:Retrieve", body, [OutgoingPart("in@x", "application/dicom", content)])
    response = post(client, data, content_type)
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("multipart/related")
    assert list(spool.iterdir()), "the request's attachment is spilled while the response streams"
    answer = b"".join(response.streaming_content)  # exhausting the body finishes the transaction
    assert int(response["Content-Length"]) == len(answer)
    assert list(spool.iterdir()) == []
    message = read_message(response["Content-Type"], io.BytesIO(answer), content_length=len(answer),
                           max_size=1 << 30, max_xml_size=1 << 20)
    assert message.attachments["back@x"].read_bytes() == content
    message.close()


def test_inline_base64_and_xop_are_handled_alike(client: Client, operations: None) -> None:
    body = payload("Submit")
    body.append(document_element(content_id="a@x"))
    body.append(document_element(inline=b"inline"))
    content_type, data = mtom_request(ECHO_ACTION, body, [OutgoingPart("a@x", "text/plain", b"attached")])
    seen = [el.text for el in envelope_body(post(client, data, content_type)).iter(f"{{{TEST_NS}}}Seen")]
    assert seen == [f"8:{hashlib.sha1(b'attached').hexdigest()}", f"6:{hashlib.sha1(b'inline').hexdigest()}"]


def test_chunked_request_without_content_length_is_read_to_eof(operations: None) -> None:
    request = RequestFactory().post("/xds/registry", b"", content_type=SOAP_CT)
    data = plain_request()
    request.META["wsgi.input"] = io.BytesIO(data)
    request.META.pop("CONTENT_LENGTH", None)
    request.META["HTTP_TRANSFER_ENCODING"] = "chunked"
    request.META["CONTENT_TYPE"] = SOAP_CT
    response = registry_operations.ENDPOINT(request)
    assert response.status_code == 200
    assert envelope_body(response).get("status").endswith(":Success")


def test_oversized_body_is_413_fault(client: Client, settings: object) -> None:
    settings.XDS_MAX_REQUEST_SIZE = 1000  # type: ignore[attr-defined]
    response = post(client, plain_request(body=payload("Big", "x" * 5000)))
    assert response.status_code == 413
    assert parse_fault(envelope_body(response)).code == "Sender"


def test_xml_with_too_many_elements_is_the_same_413_fault_as_too_large_xml(
        client: Client, settings: object, operations: None) -> None:
    settings.XDS_MAX_XML_NODES = 5000  # type: ignore[attr-defined]
    small_but_dense = payload("Dense")
    for _ in range(6000):
        etree.SubElement(small_but_dense, f"{{{TEST_NS}}}e")
    data = plain_request(body=small_but_dense)
    assert len(data) < settings.XDS_MAX_XML_SIZE  # type: ignore[attr-defined]  # refused for its markup alone
    response = post(client, data)
    assert response.status_code == 413
    fault = parse_fault(envelope_body(response))
    assert fault.code == "Sender"
    assert "5000 elements and attributes" in fault.reason
    settings.XDS_MAX_XML_SIZE = 1000  # type: ignore[attr-defined]
    too_large = post(client, plain_request(body=payload("Big", "x" * 5000)))
    assert (too_large.status_code, parse_fault(envelope_body(too_large)).code) == (413, "Sender")


def test_attributes_count_like_elements(client: Client, settings: object, operations: None) -> None:
    settings.XDS_MAX_XML_NODES = 5000  # type: ignore[attr-defined]
    element = payload("Wide")
    for index in range(6000):
        element.set(f"a{index}", "")
    assert post(client, plain_request(body=element)).status_code == 413


def test_xml_within_the_element_limit_is_served(client: Client, settings: object, operations: None) -> None:
    settings.XDS_MAX_XML_NODES = 5000  # type: ignore[attr-defined]
    element = payload("Moderate")
    for _ in range(1000):
        etree.SubElement(element, f"{{{TEST_NS}}}e")
    response = post(client, plain_request(body=element))
    assert response.status_code == 200
    assert envelope_body(response).get("status").endswith(":Success")


def test_soap_bodies_are_not_subject_to_djangos_form_upload_limit(
        client: Client, settings: object, operations: None, spool: Path) -> None:
    # DATA_UPLOAD_MAX_MEMORY_SIZE guards the forms; the endpoint reads wsgi.input itself, never request.body,
    # so a body far past it (and MTOM of any size up to XDS_MAX_REQUEST_SIZE) is still taken.
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000  # type: ignore[attr-defined]
    body = payload("Submit")
    body.append(document_element(content_id="big@x"))
    content = b"\x00\x01" * 1_500_000
    content_type, data = mtom_request(ECHO_ACTION, body, [OutgoingPart("big@x", "application/octet-stream", content)])
    response = post(client, data, content_type)
    assert response.status_code == 200
    assert envelope_body(response).find(f"{{{TEST_NS}}}Seen").text == \
        f"{len(content)}:{hashlib.sha1(content).hexdigest()}"
    plain = post(client, plain_request(body=payload("Text", "y" * 50_000)))
    assert plain.status_code == 200


def test_forms_past_the_upload_limit_are_refused_with_400(client: Client, settings: object) -> None:
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE == 2_621_440  # type: ignore[attr-defined]  # Django's default
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.get("/admin/login/")
    token = csrf_client.cookies[settings.CSRF_COOKIE_NAME].value  # type: ignore[attr-defined]
    big = "username=" + "a" * 3_000_000 + f"&csrfmiddlewaretoken={token}"
    response = csrf_client.post("/admin/login/", big, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400


# ----------------------------------------------------------------------------- in-process transport


def test_local_client_speaks_real_soap(operations: None) -> None:
    body = payload("Submit")
    body.append(document_element(content_id="a@x"))
    result = SoapClient("local:registry").call(ECHO_ACTION, body, parts=[OutgoingPart("a@x", "text/plain", b"1234")],
                                               message_id="urn:uuid:local-1")
    assert result.http_status == 200 and result.fault is None
    assert result.action == RESPONSE_ACTION and result.relates_to == "urn:uuid:local-1"
    assert result.body.findtext(f"{{{TEST_NS}}}Seen") == f"4:{hashlib.sha1(b'1234').hexdigest()}"

    fault = SoapClient("local:imaging-source").call("urn:nobody:Knows", payload()).fault
    assert fault is not None and fault.subcode == "wsa:ActionNotSupported" and fault.http_status == 400


def test_local_client_receives_mtom_attachments(operations: None) -> None:
    body = payload("Retrieve")
    body.append(document_element(content_id="in@x"))
    result = SoapClient("local:registry").call("urn:test:Retrieve", body,
                                               parts=[OutgoingPart("in@x", "x/y", b"payload")])
    document = result.body.find(f".//{q(ns.XDSB, 'Document')}")
    assert result.binary(document).read_bytes() == b"payload"
    result.close()


def test_dispatch_local_refuses_unknown_endpoint() -> None:
    with pytest.raises(KeyError):
        dispatch_local("pacs", SOAP_CT, b"")


# ----------------------------------------------------------------------------- GET: WSDL, XSD, info


@pytest.mark.parametrize(("name", "service"), [
    ("registry", "DocumentRegistry_Service"),
    ("repository", "DocumentRepository_Service"),
    ("imaging-source", "ImagingDocumentSource_Service"),
])
def test_wsdl_has_the_request_address_and_local_schema_links(client: Client, name: str, service: str) -> None:
    response = client.get(f"/xds/{name}?wsdl")
    assert response.status_code == 200
    wsdl = parse_xml(response.content)
    assert wsdl.find(f"{q(ns.WSDL, 'service')}").get("name") == service
    addresses = [el.get("location") for el in wsdl.iter(q(ns.WSDL_SOAP12, "address"))]
    assert addresses == [f"http://testserver/xds/{name}"]
    locations = [el.get("schemaLocation") for el in wsdl.iter(q(ns.XSD, "include"), q(ns.XSD, "import"))
                 if el.get("schemaLocation")]
    assert locations and all(loc.startswith(f"http://testserver/xds/{name}?xsd=") for loc in locations)
    for location in locations[:3]:
        schema = client.get(location.removeprefix("http://testserver"))
        assert schema.status_code == 200 and parse_xml(schema.content).tag == q(ns.XSD, "schema")


def test_xsd_imports_are_rewritten_too(client: Client) -> None:
    response = client.get("/xds/repository?xsd=IHE/XDS.b_DocumentRepository.xsd")
    imports = [el.get("schemaLocation") for el in parse_xml(response.content).iter(q(ns.XSD, "import"))]
    assert "http://testserver/xds/repository?xsd=ebRS/rs.xsd" in imports


@pytest.mark.parametrize("path", [
    "../../../../etc/passwd", "/etc/passwd", "wsdl/XDS.b_DocumentRegistry.wsdl", "ebRS/../../endpoint.py",
    "ebRS/missing.xsd", "..\\errors.py", "",
])
def test_xsd_serving_refuses_path_traversal(client: Client, path: str) -> None:
    assert client.get("/xds/registry", {"xsd": path}).status_code == 404


def test_plain_get_names_the_actor_and_its_actions(client: Client, operations: None) -> None:
    response = client.get("/xds/registry")
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert "Document Registry" in text and ECHO_ACTION in text and "?wsdl" in text


def test_other_methods_are_not_allowed(client: Client) -> None:
    assert client.put("/xds/registry", b"x").status_code == 405


def test_every_actor_registers_its_endpoint_for_in_process_calls() -> None:
    assert local_endpoints() == ["imaging-source", "registry", "repository"]
