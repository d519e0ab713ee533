"""Real parts for the consumer tests.

* ``domain``: this process's own Document Registry and Document Repository, reached by the consumer
  only through ITI-41 / ITI-18 / ITI-43 SOAP bytes on ``local:`` URLs; :meth:`Domain.publish` puts a
  KOS (the NIST reference manifest, re-identified) into them as an Imaging Document Source would.
* ``VendorRegistry``: a real SOAP/HTTP registry on an ephemeral loopback port that knows only
  FindDocuments (answers XDSUnknownStoredQuery to anything else) and ignores its filters -- a
  sloppy vendor whose extra entries the consumer must weed out itself.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pydicom
import pytest

from tests.conftest import CORPUS_DIR
from tests.gunicorn_server import Server, run_gunicorn
from tests.soap_peer import SoapPeer
from xds_core.ebxml import parse as ebxml_parse
from xds_core.ebxml import serialize as ebxml_serialize
from xds_core.ebxml.responses import adhoc_query_response, parse_registry_response
from xds_core.errors import ErrorCode, RegistryError
from xds_core.metadata.objects import Association, DocumentEntry, Submission, SubmissionSet
from xds_core.metadata.values import Code
from xds_core.soap.client import SoapClient
from xds_core.soap.envelope import SoapRequest, SoapResponse
from xds_core.soap.mtom import OutgoingPart
from xds_core.vocabulary import (
    DICOM_MIME_TYPE,
    DICOM_UID_REGISTRY,
    KOS_FORMAT_CODE,
    Action,
    AssociationType,
    ReferenceIdType,
    ResponseStatus,
    StoredQuery,
)

NIST_KOS = CORPUS_DIR / "nist" / "_imagecache" / "std" / "IDS-DEPT002-a" / "kos" / "kos.dcm"
NIST_STUDY = "1.3.6.1.4.1.21367.201599.1.201604020954059"
REPOSITORY_ID = "1.3.6.1.4.1.21367.13.70.201"
LOCATION_UID = "1.3.6.1.4.1.21367.13.80.110"  # the NIST KOS's Retrieve Location UID
AUTHORITY = "1.3.6.1.4.1.21367.2005.13.20.1000"
KOS_CODE = Code(KOS_FORMAT_CODE, DICOM_UID_REGISTRY, "Key Object Selection")
KOS_FORMAT = str(KOS_CODE)


def new_oid() -> str:
    return "2.25." + str(uuid.uuid4().int)


def kos_part10(unique_id: str, study_uid: str = NIST_STUDY) -> bytes:
    """The NIST reference KOS with SOP Instance UID ``unique_id`` (= the DocumentEntry uniqueId) and its
    evidence pointing at study ``study_uid``."""
    ds = pydicom.dcmread(NIST_KOS)
    ds.SOPInstanceUID = unique_id
    ds.file_meta.MediaStorageSOPInstanceUID = unique_id
    ds.StudyInstanceUID = study_uid
    for item in ds.CurrentRequestedProcedureEvidenceSequence:
        item.StudyInstanceUID = study_uid
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def entry_for(patient_id: str, unique_id: str, *, study_uid: str = NIST_STUDY, creation_time: str = "20261127120000",
              mime_type: str = DICOM_MIME_TYPE, format_code: Code = KOS_CODE, hash: str | None = None,
              size: int | None = None, event_codes: tuple[Code, ...] = (),
              service_start_time: str | None = None) -> DocumentEntry:
    """A complete DocumentEntry of an XDS-I.b manifest (ITI TF-3 Table 4.2.3.2-1; RAD TF-3 4.68.4.1.2.3.2)."""
    return DocumentEntry.build(
        patient_id=patient_id, unique_id=unique_id, mime_type=mime_type,
        class_code=Code("IMAGES", "1.3.6.1.4.1.19376.1.2.6.1", "Images"),
        type_code=Code("18748-4", "2.16.840.1.113883.6.1", "Diagnostic imaging study"),
        format_code=format_code,
        healthcare_facility_type_code=Code("225732001", "2.16.840.1.113883.6.96", "Hospital"),
        practice_setting_code=Code("394914008", "2.16.840.1.113883.6.96", "Radiology"),
        confidentiality_codes=[Code("N", "2.16.840.1.113883.5.25", "normal")],
        creation_time=creation_time, language_code="en-US", source_patient_id=patient_id,
        reference_ids=[f"{study_uid}^^^^{ReferenceIdType.STUDY_INSTANCE_UID}"], hash=hash, size=size,
        title="imaging manifest", event_codes=event_codes, service_start_time=service_start_time)


@dataclass
class Published:
    unique_id: str
    entry_uuid: str
    study_uid: str
    content: bytes


@dataclass
class Domain:
    """This process's registry and repository, reached over ``local:`` SOAP URLs only."""

    registry_url: str = "local:registry"
    repository_url: str = "local:repository"
    repository_id: str = REPOSITORY_ID

    def patient(self) -> str:
        """A patient the registry knows (what an ITI-8 feed leaves behind)."""
        from xds_registry.patient_identity_feed.patients import add_or_update_patient

        patient_id = f"C{uuid.uuid4().hex[:10]}^^^&{AUTHORITY}&ISO"
        add_or_update_patient(patient_id)
        return patient_id

    def publish(self, patient_id: str, *, study_uid: str | None = None, creation_time: str = "20261127120000",
                replaces: str | None = None, content: bytes | None = None, mime_type: str = DICOM_MIME_TYPE,
                format_code: Code = KOS_CODE, unique_id: str | None = None, event_codes: tuple[Code, ...] = (),
                service_start_time: str | None = None) -> Published:
        """ITI-41 of one manifest (``replaces``: the entryUUID it deprecates with RPLC, ITI TF-3 4.2.2.2)."""
        study_uid = study_uid or new_oid()
        unique_id = unique_id or new_oid()
        data = content if content is not None else kos_part10(unique_id, study_uid)
        entry = entry_for(patient_id, unique_id, study_uid=study_uid, creation_time=creation_time,
                          mime_type=mime_type, format_code=format_code, event_codes=event_codes,
                          service_start_time=service_start_time)
        ss = SubmissionSet.build(
            patient_id=patient_id, unique_id=new_oid(), source_id="1.3.6.1.4.1.21367.13.80.110",
            submission_time="20261127120000",
            content_type_code=Code("18748-4", "2.16.840.1.113883.6.1", "Diagnostic imaging study"))
        associations = [Association.has_member(ss.id, entry.id)]
        if replaces:
            associations.append(Association.build(AssociationType.RPLC, entry.id, replaces))
        submission = Submission(submission_set=ss, document_entries=[entry], associations=associations)
        cid = f"{uuid.uuid4().hex}@test"
        body = ebxml_serialize.provide_and_register_request(submission, [(entry.id, cid)])
        result = SoapClient(self.repository_url).call(
            Action.ProvideAndRegisterDocumentSet, body, parts=[OutgoingPart(cid, mime_type, data)])
        assert result.fault is None, result.fault
        status, errors = parse_registry_response(result.body)
        assert status == ResponseStatus.SUCCESS, errors
        return Published(unique_id, entry.id, study_uid, data)


@pytest.fixture
def domain(db, settings, tmp_path) -> Domain:  # type: ignore[no-untyped-def]
    settings.STORAGES = {**settings.STORAGES, "xds_documents": {
        "BACKEND": "xds_repository.storage.ContentAddressedStorage",
        "OPTIONS": {"location": str(tmp_path / "documents")}}}
    settings.XDS_REGISTRY_URL = ""  # the repository registers in this process's registry
    settings.XDS_REPOSITORY_UNIQUE_ID = REPOSITORY_ID
    settings.XDS_CONSUMER_REGISTRY_URL = ""
    return Domain()


# ----------------------------------------------------------------------------- a vendor's registry

@dataclass
class VendorRegistry:
    """FindDocuments only; returns every entry it holds whatever the filters say."""

    entries: list[DocumentEntry] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.peer = SoapPeer("/registry", self._answer, max_size=1 << 26)
        self.url = self.peer.url

    def _answer(self, request: SoapRequest, _content_type: str) -> SoapResponse:
        query = ebxml_parse.parse_adhoc_query_request(request.body)
        self.asked.append(query.query_id)
        if query.query_id == StoredQuery.FindDocuments:
            body = adhoc_query_response([], [ebxml_serialize.registry_object(e) for e in self.entries])
        else:
            body = adhoc_query_response([RegistryError(
                ErrorCode.XDSUnknownStoredQuery, f"unknown stored query {query.query_id}")], [])
        return SoapResponse(Action.RegistryStoredQueryResponse, body)

    def stop(self) -> None:
        self.peer.stop()


@pytest.fixture
def vendor_registry() -> Iterator[VendorRegistry]:
    registry = VendorRegistry()
    yield registry
    registry.stop()


# ----------------------------------------------------------------------------- an imaging source (PACS)

@pytest.fixture(scope="module")
def ids(pacs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Another site's Imaging Document Source: gunicorn serving RAD-69 for LOCATION_UID from the test PACS."""
    work = tmp_path_factory.mktemp("fetch-ids")
    env = {"XDS_VAR_DIR": str(work / "var"), "DATABASE_URL": f"sqlite:///{work / 'xds.sqlite3'}",
           "XDS_IMAGING_SOURCE_ID": LOCATION_UID, "DICOM_AE_TITLE": pacs.ae_title,
           "DICOM_PACS": f"ORTHANC@127.0.0.1:{pacs.dicom_port}", "DICOMWEB_URL": pacs.dicomweb_url,
           "DICOM_FETCH_METHOD": "wado-rs"}
    with run_gunicorn(env, spool=work) as running:
        yield running


