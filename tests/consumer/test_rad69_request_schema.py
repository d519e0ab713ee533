"""The Imaging Document Consumer's RAD-69 request is valid against the XDS-I.b schema (RAD TF-3 4.69.4.1.2).

What is validated is what goes on the wire: the tests' SOAP stand-in (tests/soap_peer.py) serves as the
Imaging Document Source over real HTTP on loopback, records every request as read off the wire, and answers
each DocumentRequest with an XDSDocumentUniqueIdError.  The ``iherad:RetrieveImagingDocumentSetRequest``
element is validated with lxml's XMLSchema
against the conformance harness's own copy of ``XDSI.b_ImagingDocumentSource.xsd`` (which imports
XDS.b_DocumentRepository.xsd and ebRS by relative path, all offline).  That copy is the one kept apart
from the actors' schemas (conformance/schemas/ORIGIN.md), so an edit made for our own code cannot relax it.

The negative controls at the end show the validator does reject a request missing its
TransferSyntaxUIDList (and other required parts), so the positive tests can fail.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from io import StringIO
from pathlib import Path

import pytest
from lxml import etree

from consumer.files import FilesDestination
from consumer.models import Endpoint, EndpointKind
from consumer.retrieval import retrieve_manifest
from kos.reader import Manifest, ManifestInstance, ManifestSeries, ManifestStudy
from tests.consumer.conftest import Domain, new_oid
from tests.soap_peer import SoapPeer
from xds_core.ebxml.responses import retrieve_document_set_response
from xds_core.errors import ErrorCode, RegistryError
from xds_core.soap.envelope import SoapRequest, SoapResponse
from xds_core.vocabulary import Action

SCHEMA = (Path(__file__).resolve().parents[2] / "conformance" / "schemas" / "IHE"
          / "XDSI.b_ImagingDocumentSource.xsd")
XDSI = "urn:ihe:rad:xdsi-b:2009"
XDSB = "urn:ihe:iti:xds-b:2007"
REQUEST_TAG = f"{{{XDSI}}}RetrieveImagingDocumentSetRequest"
#: The Retrieve Location UID of the NIST reference KOS (tests/consumer/conftest.py kos_part10 keeps it).
LOCATION_UID = "1.3.6.1.4.1.21367.13.80.110"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"

#: What `xds_fetch` asks for (RAD TF-3 4.69.4.1.2; UIDs from DICOM PS3.6 Table A-1), spelled out here so a
#: change of the command's lists shows up as a failure: Explicit VR LE, Implicit VR LE ...
DEFAULT_SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]
#: ... and with --compress JPEG-LS Lossless, JPEG 2000 Lossless, JPEG Lossless SV1 first.
COMPRESS_SYNTAXES = ["1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.70",
                     *DEFAULT_SYNTAXES]
SYNTAX_LISTS = pytest.mark.parametrize("compress, syntaxes", [(False, DEFAULT_SYNTAXES),
                                                               (True, COMPRESS_SYNTAXES)], ids=["default", "compress"])


@cache
def schema() -> etree.XMLSchema:
    """The XDS-I.b schema compiled from disk; imports resolve relative to the file, never the network."""
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    return etree.XMLSchema(etree.parse(str(SCHEMA), parser))


def schema_errors(request: etree._Element) -> list[str]:
    validator = schema()
    document = etree.fromstring(etree.tostring(request))  # standalone: validate the element as a root
    if validator.validate(document):
        return []
    return [f"line {e.line}: {e.message}" for e in validator.error_log]


# ----------------------------------------------------------------------------- the stand-in IDS

@dataclass
class Recorded:
    content_type: str
    soap: SoapRequest  # what the consumer sent, as the stand-in's SOAP reader took it off the wire

    @property
    def request(self) -> etree._Element:
        return self.soap.body

    @property
    def action(self) -> str:
        return self.soap.action


@dataclass
class RecordingImagingSource:
    """RAD-69 responder over real HTTP on loopback (tests/soap_peer.py): records every request, answers
    "unknown document" for each DocumentRequest."""

    recorded: list[Recorded] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.peer = SoapPeer("/imaging-source", self._answer, max_size=1 << 26)
        self.url = self.peer.url

    def _answer(self, request: SoapRequest, content_type: str) -> SoapResponse:
        self.recorded.append(Recorded(content_type, request))
        errors = [RegistryError(ErrorCode.XDSDocumentUniqueIdError, "not held by this stand-in", location=el.text or "")
                  for el in request.body.iter(f"{{{XDSB}}}DocumentUniqueId")]
        body, _ = retrieve_document_set_response(errors, [])
        return SoapResponse(Action.RetrieveImagingDocumentSetResponse, body)

    @property
    def requests(self) -> list[etree._Element]:
        return [r.request for r in self.recorded]

    def stop(self) -> None:
        self.peer.stop()


@pytest.fixture
def imaging_source() -> Iterator[RecordingImagingSource]:
    source = RecordingImagingSource()
    yield source
    source.stop()


def summary(request: etree._Element) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(study UID, series UID, [(RepositoryUniqueId, DocumentUniqueId)]) of each SeriesRequest."""
    return [(study.get("studyInstanceUID"), series.get("seriesInstanceUID"),
             [(d.findtext(f"{{{XDSB}}}RepositoryUniqueId"), d.findtext(f"{{{XDSB}}}DocumentUniqueId"))
              for d in series.iterfind(f"{{{XDSB}}}DocumentRequest")])
            for study in request.iterfind(f"{{{XDSI}}}StudyRequest")
            for series in study.iterfind(f"{{{XDSI}}}SeriesRequest")]


def transfer_syntaxes(request: etree._Element) -> list[str]:
    return [el.text for el in request.iterfind(f"{{{XDSI}}}TransferSyntaxUIDList/{{{XDSI}}}TransferSyntaxUID")]


def assert_valid_rad69(recorded: Recorded, syntaxes: list[str]) -> None:
    assert recorded.action == Action.RetrieveImagingDocumentSet.value
    assert recorded.request.tag == REQUEST_TAG
    assert schema_errors(recorded.request) == []
    assert transfer_syntaxes(recorded.request) == syntaxes


# ----------------------------------------------------------------------------- retrieve_manifest directly

def uid() -> str:
    return new_oid()


def several_studies() -> Manifest:
    """Three studies, five series (1 to 4 instances), one instance listed twice in the evidence."""
    studies = []
    for series_counts in ((3, 1), (4,), (2, 2)):
        series = [ManifestSeries(uid(), retrieve_location_uid=LOCATION_UID,
                                 instances=[ManifestInstance(CT_IMAGE_STORAGE, uid()) for _ in range(count)])
                  for count in series_counts]
        studies.append(ManifestStudy(uid(), series))
    studies[0].series[0].instances.append(copy.copy(studies[0].series[0].instances[0]))
    return Manifest(uid(), "1.2.840.10008.5.1.4.1.1.88.59", "P1", None, "Test^Patient", studies[0].study_instance_uid,
                    "", None, studies)


@SYNTAX_LISTS
def test_every_rad69_request_for_several_studies_and_series_is_schema_valid(
        imaging_source: RecordingImagingSource, tmp_path: Path, compress: bool, syntaxes: list[str]) -> None:
    manifest = several_studies()

    def resolve(location_uid: str) -> str:
        assert location_uid == LOCATION_UID
        return imaging_source.url

    report = retrieve_manifest(manifest, FilesDestination(tmp_path), resolve_imaging_source=resolve,
                               transfer_syntaxes=syntaxes, backoff=0, timeout=10)

    assert len(imaging_source.recorded) == 5  # one RAD-69 per series (RAD TF-3 4.68.4.1.2.2)
    for recorded in imaging_source.recorded:
        assert_valid_rad69(recorded, syntaxes)
    expected = [(st.study_instance_uid, se.series_instance_uid,
                 [(LOCATION_UID, sop_uid) for sop_uid in dict.fromkeys(i.sop_instance_uid for i in se.instances)])
                for st in manifest.studies for se in st.series]
    assert [row for r in imaging_source.requests for row in summary(r)] == expected
    assert report.requested == 12 and report.failed_count == 12  # the stand-in holds nothing


# ----------------------------------------------------------------------------- through `xds_fetch`

@SYNTAX_LISTS
def test_xds_fetch_sends_schema_valid_rad69_requests_with_its_transfer_syntax_lists(
        domain: Domain, imaging_source: RecordingImagingSource, tmp_path: Path, settings,  # type: ignore[no-untyped-def]
        compress: bool, syntaxes: list[str]) -> None:
    """The whole consumer: ITI-18 finds two manifests (two studies, two series each, the NIST KOS
    re-identified), ITI-43 fetches them, and RAD-69 goes to the directory's Imaging Document Source."""
    from django.core.management import call_command

    settings.XDS_IMAGING_SOURCE_ID = "1.3.6.1.4.1.21367.13.80.1"  # not this process: the directory decides
    Endpoint.objects.create(kind=EndpointKind.IMAGING_SOURCE, unique_id=LOCATION_UID, url=imaging_source.url)
    patient = domain.patient()
    studies = [domain.publish(patient).study_uid for _ in range(2)]

    args = ["--patient", patient, "--out", str(tmp_path / "images"), "--timeout", "10"]
    out, err = StringIO(), StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("xds_fetch", *args, *(["--compress"] if compress else []), stdout=out, stderr=err)
    assert exited.value.code == 1, err.getvalue()  # the stand-in holds no instance

    assert len(imaging_source.recorded) == 4, err.getvalue()
    for recorded in imaging_source.recorded:
        assert_valid_rad69(recorded, syntaxes)
    rows = [row for r in imaging_source.requests for row in summary(r)]
    assert sorted({study for study, _, _ in rows}) == sorted(studies)
    assert sum(len(documents) for _, _, documents in rows) == 2 * 36


# ----------------------------------------------------------------------------- negative controls

def valid_request() -> etree._Element:
    return etree.fromstring(
        f'<iherad:RetrieveImagingDocumentSetRequest xmlns:iherad="{XDSI}" xmlns:xdsb="{XDSB}">'
        '<iherad:StudyRequest studyInstanceUID="1.2.3">'
        '<iherad:SeriesRequest seriesInstanceUID="1.2.3.4">'
        '<xdsb:DocumentRequest><xdsb:RepositoryUniqueId>1.3.6.1.4.1.21367.13.80.110</xdsb:RepositoryUniqueId>'
        '<xdsb:DocumentUniqueId>1.2.3.4.5</xdsb:DocumentUniqueId></xdsb:DocumentRequest>'
        '</iherad:SeriesRequest></iherad:StudyRequest>'
        '<iherad:TransferSyntaxUIDList><iherad:TransferSyntaxUID>1.2.840.10008.1.2.1</iherad:TransferSyntaxUID>'
        '</iherad:TransferSyntaxUIDList></iherad:RetrieveImagingDocumentSetRequest>')


def _remove(path: str) -> Callable[[etree._Element], None]:
    def mutate(root: etree._Element) -> None:
        for el in root.xpath(path, namespaces={"iherad": XDSI, "xdsb": XDSB}):
            el.getparent().remove(el)
    return mutate


def _drop_attribute(path: str, name: str) -> Callable[[etree._Element], None]:
    def mutate(root: etree._Element) -> None:
        for el in root.xpath(path, namespaces={"iherad": XDSI, "xdsb": XDSB}):
            del el.attrib[name]
    return mutate


def _wrong_namespace(root: etree._Element) -> None:
    # TransferSyntaxUIDList in the xdsb namespace: the element the schema wants is then missing.
    syntaxes = root.find(f"{{{XDSI}}}TransferSyntaxUIDList")
    syntaxes.tag = f"{{{XDSB}}}TransferSyntaxUIDList"


def test_the_validator_accepts_the_hand_written_control() -> None:
    assert schema_errors(valid_request()) == []


@pytest.mark.parametrize("mutate, finding", [
    (_remove("iherad:TransferSyntaxUIDList"), "TransferSyntaxUIDList"),
    (_remove("iherad:TransferSyntaxUIDList/iherad:TransferSyntaxUID"), "TransferSyntaxUID"),
    (_wrong_namespace, "TransferSyntaxUIDList"),
    (_remove("iherad:StudyRequest"), "StudyRequest"),
    (_remove("//xdsb:RepositoryUniqueId"), "RepositoryUniqueId"),
    (_drop_attribute("//iherad:SeriesRequest", "seriesInstanceUID"), "seriesInstanceUID"),
    (_drop_attribute("iherad:StudyRequest", "studyInstanceUID"), "studyInstanceUID"),
], ids=["no-TransferSyntaxUIDList", "empty-TransferSyntaxUIDList", "TransferSyntaxUIDList-in-xdsb",
        "no-StudyRequest", "no-RepositoryUniqueId", "no-seriesInstanceUID", "no-studyInstanceUID"])
def test_the_validator_rejects_an_invalid_request(mutate: Callable[[etree._Element], None], finding: str) -> None:
    request = valid_request()
    mutate(request)
    errors = schema_errors(request)
    assert errors and any(finding in e for e in errors), errors


def test_the_validator_rejects_a_captured_request_without_its_transfer_syntax_list(
        imaging_source: RecordingImagingSource, tmp_path: Path) -> None:
    """The negative control on real output: the consumer's own request, minus TransferSyntaxUIDList."""
    manifest = several_studies()
    retrieve_manifest(manifest, FilesDestination(tmp_path), resolve_imaging_source=lambda _: imaging_source.url,
                      transfer_syntaxes=DEFAULT_SYNTAXES, backoff=0, timeout=10)
    captured = copy.deepcopy(imaging_source.requests[0])
    assert schema_errors(captured) == []
    _remove("iherad:TransferSyntaxUIDList")(captured)
    errors = schema_errors(captured)
    assert errors and any("TransferSyntaxUIDList" in e for e in errors), errors
