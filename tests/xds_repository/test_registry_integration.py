"""The repository with this server's own Document Registry, in process ("local:registry"):
real ITI-42 and ITI-18 SOAP exchanges between the two actors of one process."""

from __future__ import annotations

import hashlib
import io
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from tests.xds_repository.conftest import (
    REPOSITORY_ID,
    Doc,
    kos_doc,
    new_oid,
    provide_and_register_parts,
    send,
    submission_for,
)
from xds_core.ebxml import serialize as ebxml_serialize
from xds_core.ebxml.parse import parse_adhoc_query_response
from xds_core.errors import ErrorCode
from xds_core.metadata.objects import Association, Folder, Submission
from xds_core.metadata.values import Code
from xds_core.soap.client import SoapClient
from xds_core.soap.mtom import OutgoingPart
from xds_core.vocabulary import Action, ResponseStatus, ReturnType, StoredQuery
from xds_registry.patient_identity_feed.patients import add_or_update_patient
from xds_repository import records
from xds_repository import storage as store
from xds_repository.conf import repository_config
from xds_repository.models import StoredDocument
from xds_repository.reconcile import reconcile

pytestmark = pytest.mark.django_db


def registry_knows(unique_id: str) -> list:  # type: ignore[type-arg]
    query = ebxml_serialize.adhoc_query_request(StoredQuery.GetDocuments, [
        ("$XDSDocumentEntryUniqueId", [f"('{unique_id}')"])], return_type=ReturnType.LeafClass)
    result = SoapClient("local:registry").call(Action.RegistryStoredQuery, query)
    return parse_adhoc_query_response(result.body).objects


def test_document_and_manifest_are_registered_with_our_registry(local: Path, patient: str) -> None:
    doc, manifest = Doc(content=b"a report"), kos_doc()
    body, parts, _ = provide_and_register_parts([doc, manifest], patient_id=patient)
    assert send(body, parts) == (ResponseStatus.SUCCESS, [])
    [entry] = registry_knows(doc.unique_id)
    assert (entry.hash, entry.size, entry.repository_unique_id) == (
        hashlib.sha1(b"a report").hexdigest(), "8", REPOSITORY_ID)
    assert registry_knows(manifest.unique_id)[0].mime_type == "application/dicom"


def test_registry_refusal_comes_back_and_nothing_is_stored(local: Path) -> None:
    body, parts, _ = provide_and_register_parts(
        [Doc(content=b"x" * 300_000)], patient_id="NOBODY^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO")
    status, errors = send(body, parts)
    assert status == ResponseStatus.FAILURE
    assert ErrorCode.XDSUnknownPatientId in [e.error_code for e in errors]
    assert StoredDocument.objects.count() == 0
    assert not [p for p in local.rglob("*") if p.is_file()]


def test_resubmitting_a_registered_unique_id_keeps_the_first_document(local: Path, patient: str) -> None:
    first = Doc(content=b"first version")
    assert send(*provide_and_register_parts([first], patient_id=patient)[:2])[0] == ResponseStatus.SUCCESS
    again = Doc(content=b"other content", unique_id=first.unique_id)
    status, errors = send(*provide_and_register_parts([again], patient_id=patient)[:2])
    assert status == ResponseStatus.FAILURE
    assert errors and all(e.is_error for e in errors)
    row = StoredDocument.objects.get()
    assert (row.hash, row.state) == (hashlib.sha1(b"first version").hexdigest(), StoredDocument.State.REGISTERED)


def test_reconcile_asks_our_registry_and_settles_pending_documents(local: Path, patient: str) -> None:
    registered = Doc(content=b"registered before the crash")
    assert send(*provide_and_register_parts([registered], patient_id=patient)[:2])[0] == ResponseStatus.SUCCESS
    # State after a crash that came after the registry's answer but before it was recorded:
    StoredDocument.objects.update(state=StoredDocument.State.PENDING, registered=None)
    # State after a crash between storing and registering:
    config = repository_config()
    orphan_content = b"stored, never registered"
    sha1 = hashlib.sha1(orphan_content).hexdigest()
    [orphan] = records.record_pending([records.NewDocument("1.2.3.999", "text/plain", sha1, len(orphan_content))],
                                      storage_alias="xds_documents")
    store.put(config.storage, sha1=sha1, size=len(orphan_content), path=None,
              open_stream=lambda: io.BytesIO(orphan_content))
    assert config.storage.exists(orphan.storage_name)

    # The ITI-41 that wrote ``registered`` is over (its in-flight marker is gone) and our registry answers in
    # process, so its answer can no longer change: settled at once.  The orphan names no request, and its
    # writer (this process) lives: too young, it may still be in flight.
    early = reconcile(repository_unique_id=REPOSITORY_ID, registry_url="", storage=config.storage,
                      grace=timedelta(hours=1))
    assert (early.examined, early.registered, early.removed) == (1, [registered.unique_id], [])
    report = reconcile(repository_unique_id=REPOSITORY_ID, registry_url="", storage=config.storage,
                       grace=timedelta(0))
    assert (report.registered, report.removed, report.error) == ([], ["1.2.3.999"], None)
    assert list(StoredDocument.objects.values_list("unique_id", "state")) == [
        (registered.unique_id, StoredDocument.State.REGISTERED)]
    assert not config.storage.exists(orphan.storage_name)


def test_reconcile_removes_nothing_when_the_registry_cannot_be_asked(local: Path, settings) -> None:  # type: ignore[no-untyped-def]
    config = repository_config()
    content = b"pending"
    sha1 = hashlib.sha1(content).hexdigest()
    [row] = records.record_pending([records.NewDocument("1.2.3.1000", "text/plain", sha1, len(content))],
                                   storage_alias="xds_documents")
    store.put(config.storage, sha1=sha1, size=len(content), path=None,
              open_stream=lambda: io.BytesIO(content))
    report = reconcile(repository_unique_id=REPOSITORY_ID, registry_url="http://127.0.0.1:9/xds/registry",
                       storage=config.storage, grace=timedelta(0), registry_timeout=2)
    assert report.error and report.removed == []
    assert StoredDocument.objects.get().state == StoredDocument.State.PENDING
    assert config.storage.exists(row.storage_name)


def test_document_patient_differing_from_the_submission_set_is_refused_through_the_repository(
        local: Path, patient: str) -> None:
    """NIST 11986: the registry's XDSPatientIdDoesNotMatch (ITI TF-3 4.2.2.1.1) reaches the source."""
    other = f"P{uuid.uuid4().hex[:10]}^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO"
    add_or_update_patient(other)
    doc = Doc(content=b"patient mismatch" * 1000)
    submission, [entry] = submission_for([doc], patient_id=patient)
    entry.patient_id = other
    body = ebxml_serialize.provide_and_register_request(submission, [(entry.id, "doc@test")])
    status, errors = send(body, [OutgoingPart("doc@test", "text/plain", doc.content)])
    assert status == ResponseStatus.FAILURE
    assert ErrorCode.XDSPatientIdDoesNotMatch in [e.error_code for e in errors]
    assert StoredDocument.objects.count() == 0
    assert not [p for p in local.rglob("*") if p.is_file()]
    assert registry_knows(doc.unique_id) == []


def _folder_only(patient: str) -> tuple[Submission, Folder]:
    submission, _ = submission_for([], patient_id=patient)
    folder = Folder.build(patient_id=patient, unique_id=new_oid(), title="folder",
                          code_list=[Code("REPORTS", "1.3.6.1.4.1.19376.1.2.6.1", "Reports")])
    submission.folders.append(folder)
    submission.associations.append(Association.has_member(submission.submission_set.id, folder.id,
                                                          submission_set_status=None))
    return submission, folder


def test_submission_with_a_folder_and_no_document_is_registered(local: Path, patient: str) -> None:
    """NIST ReposAcceptanceTest-1113 SubmitFolder: ITI-41 may carry no Document (ITI TF-2b 3.41.4.1.2)."""
    submission, folder = _folder_only(patient)
    body = ebxml_serialize.provide_and_register_request(submission, [])
    assert send(body, []) == (ResponseStatus.SUCCESS, [])
    query = ebxml_serialize.adhoc_query_request(StoredQuery.GetFolders, [
        ("$XDSFolderUniqueId", [f"('{folder.unique_id}')"])], return_type=ReturnType.ObjectRef)
    result = SoapClient("local:registry").call(Action.RegistryStoredQuery, query)
    assert parse_adhoc_query_response(result.body).object_refs == [folder.id]
    assert StoredDocument.objects.count() == 0


def test_existing_document_is_added_to_an_existing_folder_without_any_document(local: Path, patient: str) -> None:
    """NIST ReposAcceptanceTest-1113 AssociateExistingDEwithExistingFolder: associations only."""
    doc = Doc(content=b"already registered")
    _, _, [entry] = (parts := provide_and_register_parts([doc], patient_id=patient))
    assert send(*parts[:2])[0] == ResponseStatus.SUCCESS
    submission, folder = _folder_only(patient)
    assert send(ebxml_serialize.provide_and_register_request(submission, []), [])[0] == ResponseStatus.SUCCESS

    later, _ = submission_for([], patient_id=patient)
    member = Association.has_member(folder.id, entry.id, submission_set_status=None)
    later.associations += [member, Association.has_member(later.submission_set.id, member.id,
                                                          submission_set_status=None)]
    assert send(ebxml_serialize.provide_and_register_request(later, []), []) == (ResponseStatus.SUCCESS, [])
    query = ebxml_serialize.adhoc_query_request(StoredQuery.GetFolderAndContents, [
        ("$XDSFolderEntryUUID", [f"'{folder.id}'"])], return_type=ReturnType.ObjectRef)
    result = SoapClient("local:registry").call(Action.RegistryStoredQuery, query)
    assert entry.id in parse_adhoc_query_response(result.body).object_refs
