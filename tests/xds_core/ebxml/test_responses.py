"""Response bodies: status rules and XSD validity (rs.xsd, query.xsd, XDS.b_DocumentRepository.xsd)."""

from __future__ import annotations

import base64
from functools import cache
from pathlib import Path

import pytest
from lxml import etree

from xds_core import ns
from xds_core.ebxml.responses import (
    DocumentResponse,
    adhoc_query_response,
    parse_registry_response,
    registry_response,
    retrieve_document_set_response,
    status_for,
)
from xds_core.errors import ErrorCode, RegistryError, Severity
from xds_core.ns import q
from xds_core.safe_xml import parse_xml, to_bytes
from xds_core.soap.mtom import OutgoingPart, normalize_cid
from xds_core.vocabulary import ResponseStatus

SCHEMAS = Path(__file__).resolve().parents[3] / "xds_core" / "ebxml" / "schemas"
ERROR = RegistryError(ErrorCode.XDSRegistryMetadataError, "bad slot", Severity.ERROR, "urn:uuid:1")
WARNING = RegistryError.warning(ErrorCode.XDSExtraMetadataNotSaved, "extra slot dropped")


@cache
def schema() -> etree.XMLSchema:
    """A wrapper schema importing the response schemas, resolved offline."""
    wrapper = f"""<xs:schema xmlns:xs="{ns.XSD}" targetNamespace="urn:test:wrapper">
      <xs:import namespace="{ns.RS}" schemaLocation="ebRS/rs.xsd"/>
      <xs:import namespace="{ns.QUERY}" schemaLocation="ebRS/query.xsd"/>
      <xs:import namespace="{ns.XDSB}" schemaLocation="IHE/XDS.b_DocumentRepository.xsd"/>
    </xs:schema>"""
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    document = etree.fromstring(wrapper.encode(), parser, base_url=str(SCHEMAS / "wrapper.xsd"))
    return etree.XMLSchema(document)


def assert_valid(element: etree._Element) -> None:
    document = parse_xml(to_bytes(element))  # what goes on the wire
    validator = schema()
    assert validator.validate(document), validator.error_log


@pytest.mark.parametrize(("errors", "succeeded", "expected"), [
    ([], None, ResponseStatus.SUCCESS),
    ([WARNING], None, ResponseStatus.SUCCESS),
    ([ERROR], None, ResponseStatus.FAILURE),
    ([ERROR, WARNING], 0, ResponseStatus.FAILURE),
    ([ERROR], 2, ResponseStatus.PARTIAL_SUCCESS),
])
def test_status_for(errors: list[RegistryError], succeeded: int | None, expected: ResponseStatus) -> None:
    assert status_for(errors, succeeded=succeeded) == expected


def test_success_registry_response_has_no_error_list() -> None:
    element = registry_response([])
    assert element.get("status") == ResponseStatus.SUCCESS.value and len(element) == 0
    assert_valid(element)


def test_failure_registry_response_lists_every_error() -> None:
    element = registry_response([ERROR, WARNING])
    assert_valid(element)
    error_list = element.find(q(ns.RS, "RegistryErrorList"))
    assert error_list.get("highestSeverity") == Severity.ERROR.value
    first, second = error_list
    assert first.attrib == {"errorCode": "XDSRegistryMetadataError", "codeContext": "bad slot",
                            "severity": Severity.ERROR.value, "location": "urn:uuid:1"}
    assert "location" not in second.attrib and second.get("severity") == Severity.WARNING.value
    assert first.text is None and len(first) == 0  # the element body is empty (ITI TF-3 4.2.4.1)
    assert parse_registry_response(element) == (ResponseStatus.FAILURE.value, [ERROR, WARNING])


def test_warning_only_response_is_success_with_warning_severity() -> None:
    element = registry_response([WARNING])
    assert element.get("status") == ResponseStatus.SUCCESS.value
    assert element.find(q(ns.RS, "RegistryErrorList")).get("highestSeverity") == Severity.WARNING.value
    assert_valid(element)


def test_adhoc_query_response_is_valid_with_and_without_objects() -> None:
    empty = adhoc_query_response([ERROR], [])
    assert_valid(empty)
    assert empty.get("status") == ResponseStatus.FAILURE.value
    ref = etree.Element(q(ns.RIM, "ObjectRef"), id="urn:uuid:2b5f2c3a-1111-4222-8333-444455556666")
    full = adhoc_query_response([], [ref])
    assert_valid(full)
    assert full.find(q(ns.RIM, "RegistryObjectList"))[0].get("id").startswith("urn:uuid:")
    assert parse_registry_response(full) == (ResponseStatus.SUCCESS.value, [])


def test_retrieve_document_set_response_partial_success() -> None:
    part = OutgoingPart("doc1@x", "application/dicom", b"DICM")
    documents = [DocumentResponse("1.2.3", "1.2.3.4", "application/dicom", part, "urn:oid:1.2")]
    missing = RegistryError(ErrorCode.XDSDocumentUniqueIdError, "unknown document", Severity.ERROR, "1.2.3.5")
    element, parts = retrieve_document_set_response([missing], documents)
    assert parts == [part]
    status, errors = parse_registry_response(element)
    assert status == ResponseStatus.PARTIAL_SUCCESS.value and errors == [missing]
    include = element.find(f".//{q(ns.XDSB, 'Document')}/{q(ns.XOP, 'Include')}")
    assert normalize_cid(include.get("href")) == "doc1@x"
    # The XSD types Document as base64Binary: validate the inlined (non-MTOM) form.
    include.getparent().text = base64.b64encode(b"DICM").decode()
    include.getparent().remove(include)
    assert_valid(element)


def test_retrieve_failure_without_documents_is_valid() -> None:
    element, parts = retrieve_document_set_response([ERROR], [])
    assert parts == []
    assert parse_registry_response(element)[0] == ResponseStatus.FAILURE.value
    assert_valid(element)


def test_spliced_retrieve_response_equals_the_lxml_one() -> None:
    from xds_core.ebxml.responses import retrieve_document_set_response_xml
    from xds_core.soap.envelope import build_envelope

    documents = [DocumentResponse("1.2.3", f"1.2.3.{i}<&\"'>", "application/dicom",
                                  OutgoingPart(f"{i}.x@y", "application/dicom", b""),
                                  home_community_id="urn:oid:1.2" if i % 2 else None) for i in range(5)]

    def serialize(body: etree._Element) -> bytes:
        return to_bytes(build_envelope("urn:ihe:iti:2007:RetrieveDocumentSetResponse", body, message_id="urn:uuid:1"))

    for errors in ([], [ERROR], [WARNING]):
        for docs in (documents, []):
            spliced = retrieve_document_set_response_xml(errors, docs, serialize)
            built = serialize(retrieve_document_set_response(errors, docs)[0])
            assert etree.tostring(parse_xml(spliced), method="c14n") == etree.tostring(parse_xml(built), method="c14n")
