"""Offline XSD validation of every message family we emit or accept."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.xds_core.ebxml.helpers import load
from xds_core import ns
from xds_core.ebxml.schema import SCHEMA_DIR, validate
from xds_core.safe_xml import parse_xml

SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
ERROR = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"

VALID = {
    "RegistryResponse": f'<rs:RegistryResponse xmlns:rs="{ns.RS}" status="{SUCCESS}"/>',
    "RegistryResponse with errors": (
        f'<rs:RegistryResponse xmlns:rs="{ns.RS}" status="{SUCCESS}"><rs:RegistryErrorList highestSeverity="{ERROR}">'
        f'<rs:RegistryError errorCode="XDSRegistryError" codeContext="x" severity="{ERROR}" location="l"/>'
        "</rs:RegistryErrorList></rs:RegistryResponse>"),
    "AdhocQueryResponse": (
        f'<query:AdhocQueryResponse xmlns:query="{ns.QUERY}" xmlns:rim="{ns.RIM}" status="{SUCCESS}">'
        '<rim:RegistryObjectList><rim:ObjectRef id="urn:uuid:1"/></rim:RegistryObjectList>'
        "</query:AdhocQueryResponse>"),
    "RetrieveDocumentSetResponse": (
        f'<b:RetrieveDocumentSetResponse xmlns:b="{ns.XDSB}" xmlns:rs="{ns.RS}">'
        f'<rs:RegistryResponse status="{SUCCESS}"/><b:DocumentResponse>'
        "<b:RepositoryUniqueId>1.2</b:RepositoryUniqueId><b:DocumentUniqueId>1.3</b:DocumentUniqueId>"
        "<b:mimeType>application/dicom</b:mimeType><b:Document>AAEC</b:Document></b:DocumentResponse>"
        "</b:RetrieveDocumentSetResponse>"),
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_messages_pass(name: str) -> None:
    assert validate(parse_xml(VALID[name].encode())) == []


@pytest.mark.parametrize("fixture", ["nist_idc_metadata_IDCDEPT001.xml", "openxds_submit_document.xml",
                                     "nist_11897_and_repeated_slot.xml", "nist_12360_retrieve_request.xml",
                                     "nist_ids4811_rad69_request.xml"])
def test_standard_samples_pass(fixture: str) -> None:
    assert validate(load(fixture)) == []


@pytest.mark.parametrize(("xml", "fragment"), [
    (f'<rs:RegistryResponse xmlns:rs="{ns.RS}"/>', "'status' is required"),
    (f'<b:RetrieveDocumentSetRequest xmlns:b="{ns.XDSB}"/>', "Missing child element"),
    ('<x:Unknown xmlns:x="urn:example"/>', "No matching global declaration"),
    (f'<i:RetrieveImagingDocumentSetRequest xmlns:i="{ns.XDSI}"><i:TransferSyntaxUIDList>'
     "<i:TransferSyntaxUID>1.2</i:TransferSyntaxUID></i:TransferSyntaxUIDList>"
     "</i:RetrieveImagingDocumentSetRequest>", "StudyRequest"),
])
def test_invalid_messages_are_reported_with_the_line(xml: str, fragment: str) -> None:
    problems = validate(parse_xml(xml.encode()))

    assert problems and problems[0].startswith("line 1: ")
    assert any(fragment in p for p in problems), problems


def test_non_standard_nist_root_is_not_schema_valid() -> None:
    assert validate(load("nist_ids4802_selftest_pnr_metadata.xml")) != []


def test_validation_is_consistent_across_threads() -> None:
    good = parse_xml(VALID["RegistryResponse"].encode())
    bad = parse_xml(f'<rs:RegistryResponse xmlns:rs="{ns.RS}"/>'.encode())
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda n: validate(good if n % 2 else bad), range(200)))

    assert all(r == [] for r in results[1::2])
    assert all(r and "'status' is required" in r[0] for r in results[0::2])


def test_schemas_are_local_files() -> None:
    for path in ("ebRS/rim.xsd", "ebRS/rs.xsd", "ebRS/lcm.xsd", "ebRS/query.xsd",
                 "IHE/XDS.b_DocumentRepository.xsd", "IHE/XDSI.b_ImagingDocumentSource.xsd", "w3/xml.xsd"):
        assert (SCHEMA_DIR / path).is_file(), path
