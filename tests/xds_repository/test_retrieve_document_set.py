"""ITI-43 Retrieve Document Set through the repository's SOAP endpoint (real SOAP/MTOM bytes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.xds_repository.conftest import (
    REPOSITORY_ID,
    Doc,
    StandInRegistry,
    kos_doc,
    new_oid,
    provide_and_register_parts,
    send,
)
from xds_core.ebxml import serialize as ebxml_serialize
from xds_core.ebxml.messages import DocumentRequest
from xds_core.ebxml.parse import parse_retrieve_document_set_response
from xds_core.errors import ErrorCode
from xds_core.soap.client import SoapClient
from xds_core.vocabulary import Action, ResponseStatus
from xds_repository.models import StoredDocument

pytestmark = pytest.mark.django_db


def store(*docs: Doc) -> None:
    status, errors = send(*provide_and_register_parts(list(docs))[:2])
    assert (status, errors) == (ResponseStatus.SUCCESS, [])


def retrieve(*requests: tuple[str, str]) -> tuple[str, list, dict[str, tuple[str, bytes]]]:  # type: ignore[type-arg]
    body = ebxml_serialize.retrieve_document_set_request([DocumentRequest(repo, uid) for repo, uid in requests])
    result = SoapClient("local:repository").call(Action.RetrieveDocumentSet, body)
    assert result.fault is None, result.fault
    assert result.action == Action.RetrieveDocumentSetResponse
    status, errors, documents = parse_retrieve_document_set_response(result.body)
    contents = {}
    for document in documents:
        assert document.repository_unique_id == REPOSITORY_ID
        attachment = result.binary(document.element)
        contents[document.document_unique_id] = (document.mime_type, attachment.read_bytes())
    result.close()
    return status, errors, contents


def test_several_documents_are_returned_as_mtom_parts_with_their_mime_types(doc_dir: Path) -> None:
    text, manifest = Doc(content=b"report text " * 40_000), kos_doc()
    store(text, manifest)
    status, errors, contents = retrieve((REPOSITORY_ID, text.unique_id), (REPOSITORY_ID, manifest.unique_id))
    assert (status, errors) == (ResponseStatus.SUCCESS, [])
    assert contents == {text.unique_id: ("text/plain", text.content),
                        manifest.unique_id: ("application/dicom", manifest.content)}


def test_some_unknown_is_partial_success_with_xds_document_unique_id_error(doc_dir: Path) -> None:
    known = Doc(content=b"known")
    store(known)
    unknown = new_oid()
    status, errors, contents = retrieve((REPOSITORY_ID, known.unique_id), (REPOSITORY_ID, unknown))
    assert status == ResponseStatus.PARTIAL_SUCCESS
    assert [(e.error_code, e.location) for e in errors] == [(ErrorCode.XDSDocumentUniqueIdError, unknown)]
    assert contents == {known.unique_id: ("text/plain", b"known")}


def test_none_found_is_failure(doc_dir: Path) -> None:
    status, errors, contents = retrieve((REPOSITORY_ID, new_oid()), (REPOSITORY_ID, new_oid()))
    assert status == ResponseStatus.FAILURE
    assert [e.error_code for e in errors] == [ErrorCode.XDSDocumentUniqueIdError] * 2
    assert contents == {}


def test_other_repository_is_xds_unknown_repository_id(doc_dir: Path) -> None:
    doc = Doc(content=b"here")
    store(doc)
    status, errors, contents = retrieve(("1.2.3.4.5", doc.unique_id), (REPOSITORY_ID, doc.unique_id))
    assert status == ResponseStatus.PARTIAL_SUCCESS
    assert [(e.error_code, e.location) for e in errors] == [(ErrorCode.XDSUnknownRepositoryId, "1.2.3.4.5")]
    assert list(contents) == [doc.unique_id]


def test_corrupted_stored_file_is_an_error_never_wrong_bytes(doc_dir: Path) -> None:
    doc = Doc(content=b"precious bytes " * 1000)
    store(doc)
    path = doc_dir / StoredDocument.objects.get().storage_name
    path.chmod(0o600)
    path.write_bytes(b"PRECIOUS bytes " * 1000)
    status, errors, contents = retrieve((REPOSITORY_ID, doc.unique_id))
    assert status == ResponseStatus.FAILURE
    assert [(e.error_code, e.location) for e in errors] == [(ErrorCode.XDSRepositoryError, doc.unique_id)]
    assert contents == {}


def test_document_still_pending_registration_is_not_served(doc_dir: Path, stand_in_registry: StandInRegistry) -> None:
    doc = Doc(content=b"pending")
    store(doc)
    StoredDocument.objects.update(state=StoredDocument.State.PENDING)
    status, errors, _ = retrieve((REPOSITORY_ID, doc.unique_id))
    assert status == ResponseStatus.FAILURE
    assert [e.error_code for e in errors] == [ErrorCode.XDSDocumentUniqueIdError]


def test_another_django_storage_backend_serves_both_transactions(doc_dir: Path, settings) -> None:  # type: ignore[no-untyped-def]
    settings.STORAGES = {**settings.STORAGES, "xds_documents": {
        "BACKEND": "django.core.files.storage.InMemoryStorage"}}
    doc = Doc(content=b"kept in another storage " * 50_000)
    store(doc)
    assert not doc_dir.exists()  # nothing went to the content-addressed directory
    status, errors, contents = retrieve((REPOSITORY_ID, doc.unique_id))
    assert (status, errors, contents) == (ResponseStatus.SUCCESS, [], {doc.unique_id: ("text/plain", doc.content)})
