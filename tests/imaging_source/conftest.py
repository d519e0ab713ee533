"""Fixtures for the Imaging Document Source publication tests.

``recording_repository`` is a real SOAP/HTTP peer on an ephemeral loopback port (not a mock): it
reads each RAD-68 request with the real MTOM reader and SOAP/ebXML parsers, keeps it, and answers
with a RegistryResponse it is told to give (Success by default).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pydicom
import pytest

from imaging_source.metadata import MetadataConfig
from imaging_source.patient_mapping import RewriteRule, set_mapping
from imaging_source.publish import PublishConfig
from imaging_source.study import StudyRef
from kos.builder import RetrieveLocation
from tests.conftest import CORPUS_DIR
from tests.soap_peer import SoapPeer
from xds_core.ebxml.messages import ProvideAndRegisterRequest
from xds_core.ebxml.parse import parse_provide_and_register_request
from xds_core.ebxml.responses import registry_response
from xds_core.errors import RegistryError
from xds_core.metadata.values import Code
from xds_core.soap.envelope import SoapRequest, SoapResponse
from xds_core.vocabulary import Action, ResponseStatus

IDS_DIR = (CORPUS_DIR / "nist" / "_imagecache" / "std"
           / "IDS-DEPT002-a")
NIST_LOCATION_UID = "1.3.6.1.4.1.21367.13.80.110"
AFFINITY_OID = "1.3.6.1.4.1.21367.2005.13.20.1000"
AFFINITY_PATIENT = f"IDS-AD002-a^^^&{AFFINITY_OID}&ISO"


@pytest.fixture(scope="session")
def ids_study() -> StudyRef:
    files = sorted((IDS_DIR / "images").glob("*.dcm"))
    assert len(files) == 36, f"IDS-DEPT002-a images missing under {IDS_DIR}"
    return StudyRef.from_datasets(pydicom.dcmread(f, stop_before_pixels=True) for f in files)


def metadata_config() -> MetadataConfig:
    return MetadataConfig(
        source_id=NIST_LOCATION_UID,
        class_code=Code("DEMO-Index", "1.3.6.1.4.1.21367.100.1", "Document Index"),
        type_code=Code("18748-4", "2.16.840.1.113883.6.1", "Diagnostic Imaging Report"),
        confidentiality_code=Code("R", "2.16.840.1.113883.5.25", "Restricted"),
        facility_type_code=Code("Outpatient", "Connect-a-thon healthcareFacilityTypeCodes 2", "Outpatient"),
        practice_setting_code=Code("309964003", "SRT", "Radiology department (environment)"),
        content_type_code=Code("18748-4", "2.16.840.1.113883.6.1", "Diagnostic Imaging Report"),
        source_patient_authority="1.3.6.1.4.1.21367.1800.13.20.1000",
        local_timezone="UTC",
    )


def publish_config(url: str, *, rewrite: bool = False) -> PublishConfig:
    return PublishConfig(
        repository_url=url, location=RetrieveLocation(NIST_LOCATION_UID, "XDSI_IDS"),
        metadata=metadata_config(),
        rewrite_rules=[RewriteRule("*", AFFINITY_OID)] if rewrite else [], timeout=10)


@dataclass
class Received:
    request: SoapRequest
    pnr: ProvideAndRegisterRequest
    documents: dict[str, bytes]  # Document/@id -> bytes
    content_type: str


@dataclass
class RecordingRepository:
    received: list[Received] = field(default_factory=list)
    answer_errors: list[RegistryError] = field(default_factory=list)
    answer_status: ResponseStatus | None = None

    def __post_init__(self) -> None:
        self.peer = SoapPeer("/xds/repository", self._answer)
        self.url = self.peer.url

    def _answer(self, request: SoapRequest, content_type: str) -> SoapResponse:
        pnr = parse_provide_and_register_request(request.body)
        documents = {doc_id: request.binary(el).read_bytes() for doc_id, el in pnr.documents}
        self.received.append(Received(request, pnr, documents, content_type))
        return SoapResponse(Action.ProvideAndRegisterDocumentSetResponse,
                            registry_response(self.answer_errors, status=self.answer_status))

    def stop(self) -> None:
        self.peer.stop()


@pytest.fixture
def recording_repository() -> Iterator[RecordingRepository]:
    repo = RecordingRepository()
    yield repo
    repo.stop()


# The real local PACS (Orthanc) fixtures for the DICOM / RAD-69 tests (DICOM engineer).
# The real local PACS fixtures (pacs, spool_dir) are defined once, in tests/conftest.py.


@pytest.fixture
def publishing(settings, pacs, recording_repository):  # type: ignore[no-untyped-def]  # noqa: F811 (pacs is the fixture)
    """The Imaging Document Source publishing the test PACS's studies (C-GET) to a recording repository,
    with the NIST study's patient mapped to the affinity domain."""
    settings.XDS_REPOSITORY_URL = recording_repository.url
    settings.XDS_IMAGING_SOURCE_ID = NIST_LOCATION_UID
    settings.XDS_AFFINITY_DOMAIN_CODES = ""
    settings.DICOM_AE_TITLE = pacs.ae_title
    settings.DICOM_PACS = {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": pacs.dicom_port}
    settings.DICOMWEB_URL = ""
    settings.DICOM_FETCH_METHOD = "c-get"
    set_mapping("IDS-DEPT002-a", AFFINITY_PATIENT)
    return recording_repository
