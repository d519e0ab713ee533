"""Shared pieces of the repository tests: metadata builders, KOS bytes, a stand-in registry.

The stand-in registry is a real SOAP/HTTP peer on an ephemeral loopback port
(not a mock): it parses the repository's ITI-42 with the same ebXML code, keeps
the registered DocumentEntries, answers ITI-18 GetDocuments from them, and can
be told to reject, to hang or to answer with garbage.
"""

from __future__ import annotations

import base64
import io
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from lxml import etree
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from tests.soap_peer import RawAnswer, SoapPeer
from xds_core import ns
from xds_core.ebxml import parse as ebxml_parse
from xds_core.ebxml import serialize as ebxml_serialize
from xds_core.ebxml.responses import adhoc_query_response, parse_registry_response, registry_response
from xds_core.errors import ErrorCode, RegistryError
from xds_core.metadata.objects import Association, DocumentEntry, Submission, SubmissionSet
from xds_core.metadata.values import Code
from xds_core.soap.client import SoapClient
from xds_core.soap.envelope import SoapRequest, SoapResponse, render_fault
from xds_core.soap.faults import SoapFault
from xds_core.soap.mtom import OutgoingPart
from xds_core.vocabulary import (
    DICOM_MIME_TYPE,
    DICOM_UID_REGISTRY,
    KOS_FORMAT_CODE,
    Action,
)
from xds_repository.models import StoredDocument

PATIENT_ID = "REPO-1^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO"
SOURCE_ID = "1.3.6.1.4.1.21367.13.70.999"


def new_oid() -> str:
    return "2.25." + str(uuid.uuid4().int)


@dataclass
class Doc:
    """One document of a test submission."""

    content: bytes | Path
    mime_type: str = "text/plain"
    unique_id: str = field(default_factory=new_oid)
    format_code: Code | None = None
    hash: str | None = None
    size: int | None = None
    doc_id: str | None = None  # Document/@id; default = the entry id


def submission_for(docs: list[Doc], *, patient_id: str = PATIENT_ID) -> tuple[Submission, list[DocumentEntry]]:
    """A complete, valid XDS submission (ITI TF-3 Table 4.2.3.2-1 required attributes)."""
    ss = SubmissionSet.build(
        patient_id=patient_id, unique_id=new_oid(), source_id=SOURCE_ID, submission_time="20261127120000",
        content_type_code=Code("18748-4", "2.16.840.1.113883.6.1", "Diagnostic imaging study"))
    entries = []
    for doc in docs:
        entries.append(DocumentEntry.build(
            patient_id=patient_id, unique_id=doc.unique_id, mime_type=doc.mime_type,
            class_code=Code("REPORTS", "1.3.6.1.4.1.19376.1.2.6.1", "Reports"),
            type_code=Code("18748-4", "2.16.840.1.113883.6.1", "Diagnostic imaging study"),
            format_code=doc.format_code or Code("urn:ihe:iti:xds:2017:mimeTypeSufficient", "1.3.6.1.4.1.19376.1.2.3",
                                                "mimeType Sufficient"),
            healthcare_facility_type_code=Code("225732001", "2.16.840.1.113883.6.96", "Hospital"),
            practice_setting_code=Code("394914008", "2.16.840.1.113883.6.96", "Radiology"),
            confidentiality_codes=[Code("N", "2.16.840.1.113883.5.25", "normal")],
            creation_time="20261127120000", language_code="en-US",
            source_patient_id=patient_id, hash=doc.hash, size=doc.size, title="test document"))
    submission = Submission(submission_set=ss, document_entries=entries,
                            associations=[Association.has_member(ss.id, e.id) for e in entries])
    return submission, entries


def kos_bytes(sop_instance_uid: str, *, sop_class_uid: str = KOS_FORMAT_CODE) -> bytes:
    """A minimal DICOM Part 10 Key Object Selection (preamble + File Meta)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    ds.Modality = "KO"
    ds.PatientID = "REPO-1"
    ds.StudyInstanceUID = new_oid()
    ds.SeriesInstanceUID = new_oid()
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def kos_doc(unique_id: str | None = None, **kwargs: object) -> Doc:
    unique_id = unique_id or new_oid()
    content = kwargs.pop("content", None) or kos_bytes(unique_id)
    return Doc(content=content, unique_id=unique_id, mime_type=str(kwargs.pop("mime_type", DICOM_MIME_TYPE)),
               format_code=Code(KOS_FORMAT_CODE, DICOM_UID_REGISTRY, "Key Object Selection"))


def provide_and_register_parts(docs: list[Doc], *, patient_id: str = PATIENT_ID,
                               inline: bool = False) -> tuple[object, list[OutgoingPart], list[DocumentEntry]]:
    """(ITI-41 body element, MTOM parts, entries) for ``docs``; ``inline`` puts base64 in the XML."""
    submission, entries = submission_for(docs, patient_id=patient_id)
    references = []
    parts = []
    for doc, entry in zip(docs, entries, strict=True):
        cid = f"{uuid.uuid4().hex}@test"
        references.append((doc.doc_id or entry.id, cid))
        source: bytes | Path = doc.content
        parts.append(OutgoingPart(cid, doc.mime_type, source))
    body = ebxml_serialize.provide_and_register_request(submission, references)
    if inline:
        by_cid = {p.content_id: p for p in parts}
        for document in body.iter(f"{{{ns.XDSB}}}Document"):
            include = document[0]
            cid = include.get("href")[4:]
            document.remove(include)
            document.text = base64.b64encode(by_cid[cid].read_bytes()).decode()
        parts = []
    return body, parts, entries


# ----------------------------------------------------------------------------- stand-in registry

class StandInRegistry:
    """A minimal Document Registry over real SOAP/HTTP (ITI-42 + ITI-18 GetDocuments)."""

    def __init__(self) -> None:
        self.mode = "accept"  # accept | reject | hang | record-then-hang | garbage
        self.query_mode = "answer"  # answer | error (AdhocQueryResponse Failure) | fault (SOAP Receiver fault)
        self.queries: list[set[str]] = []  # the uniqueIds each GetDocuments asked for
        self.entries: dict[str, DocumentEntry] = {}
        self.received: list[str] = []
        self.got_register = threading.Event()
        self.release = threading.Event()
        self.url = ""

    def _answer(self, request: SoapRequest, _content_type: str) -> SoapResponse | RawAnswer:
        self.received.append(request.action)
        try:
            if request.action == Action.RegisterDocumentSet:
                response = self._register(request.body)
            elif request.action == Action.RegistryStoredQuery:
                response = self._query(request.body)
            else:
                return 500, "text/plain", b"stand-in registry: unsupported action"
        except SoapFault as fault:
            return 500, "application/soap+xml; charset=UTF-8", render_fault(fault, relates_to=request.message_id)
        return response if response is not None else (200, "text/html", b"<html></html>")  # no SOAP at all

    def _register(self, body: object) -> SoapResponse | None:
        mode = self.mode  # as it was when the request came in
        submission = ebxml_parse.parse_submit_objects_request(body)
        if mode == "record-then-hang":  # registered, but the answer never leaves
            self._record(submission)
        self.got_register.set()
        if mode in ("hang", "record-then-hang"):
            self.release.wait(60)
            return None
        if mode == "garbage":
            return None
        if mode == "reject":
            errors = [RegistryError(ErrorCode.XDSPatientIdDoesNotMatch, "stand-in registry says no",
                                    location=submission.document_entries[0].id)]
            return SoapResponse(Action.RegisterDocumentSetResponse, registry_response(errors))
        self._record(submission)
        return SoapResponse(Action.RegisterDocumentSetResponse, registry_response([]))

    def _record(self, submission: Submission) -> None:
        for entry in submission.document_entries:
            self.entries[entry.unique_id or ""] = entry

    def _query(self, body: object) -> SoapResponse:
        query = ebxml_parse.parse_adhoc_query_request(body)
        wanted: set[str] = set()
        for _name, values in query.parameters:
            for value in values:
                wanted |= {v.strip().strip("'") for v in value.strip("()").split(",")}
        self.queries.append(wanted)
        if self.query_mode == "fault":
            raise SoapFault("Receiver", "stand-in registry is down")
        if self.query_mode == "error":
            errors = [RegistryError(ErrorCode.XDSRegistryBusy, "stand-in registry is busy")]
            return SoapResponse(Action.RegistryStoredQueryResponse, adhoc_query_response(errors, []))
        objects = [ebxml_serialize.registry_object(e) for uid, e in self.entries.items() if uid in wanted]
        return SoapResponse(Action.RegistryStoredQueryResponse, adhoc_query_response([], objects))

    def start(self) -> StandInRegistry:
        self.peer = SoapPeer("/xds/registry", self._answer)
        self.url = self.peer.url
        return self

    def stop(self) -> None:
        self.release.set()
        self.peer.stop()


@pytest.fixture
def stand_in_registry() -> Iterator[StandInRegistry]:
    registry = StandInRegistry().start()
    yield registry
    registry.stop()


# ----------------------------------------------------------------------------- the repository under test

REPOSITORY_ID = "1.3.6.1.4.1.21367.13.70.201"


@pytest.fixture
def doc_dir(settings, tmp_path: Path, stand_in_registry: StandInRegistry) -> Path:  # type: ignore[no-untyped-def]
    directory = tmp_path / "documents"
    settings.STORAGES = {**settings.STORAGES, "xds_documents": {
        "BACKEND": "xds_repository.storage.ContentAddressedStorage", "OPTIONS": {"location": str(directory)}}}
    settings.XDS_REGISTRY_URL = stand_in_registry.url
    settings.XDS_REPOSITORY_UNIQUE_ID = REPOSITORY_ID
    return directory


def send(body: etree._Element, parts: list, *, mtom: bool | None = True) -> tuple[str, list]:  # type: ignore[type-arg]
    result = SoapClient("local:repository").call(Action.ProvideAndRegisterDocumentSet, body, parts=parts, mtom=mtom)
    assert result.fault is None, result.fault
    assert result.action == Action.ProvideAndRegisterDocumentSetResponse
    return parse_registry_response(result.body)


def stored_files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()] if directory.exists() else []


def codes(errors: list) -> list[str]:  # type: ignore[type-arg]
    return [e.error_code for e in errors]


def assert_nothing_stored(directory: Path) -> None:
    assert StoredDocument.objects.count() == 0
    assert stored_files(directory) == []


# --- the repository with this process's real registry (ITI-42 in process) -----------------------

@pytest.fixture
def local(settings, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    """Documents stored under ``tmp_path``, ITI-42 sent to this process's registry; the storage folder."""
    directory = tmp_path / "documents"
    settings.STORAGES = {**settings.STORAGES, "xds_documents": {
        "BACKEND": "xds_repository.storage.ContentAddressedStorage", "OPTIONS": {"location": str(directory)}}}
    settings.XDS_REGISTRY_URL = ""  # this process's registry
    settings.XDS_REPOSITORY_UNIQUE_ID = REPOSITORY_ID
    return directory


@pytest.fixture
def patient() -> str:
    """A patient the registry knows: what an ITI-8 feed leaves behind."""
    from xds_registry.patient_identity_feed.patients import add_or_update_patient

    patient_id = f"P{uuid.uuid4().hex[:10]}^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO"
    add_or_update_patient(patient_id)
    return patient_id
