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


# ----------------------------------------------------------------------------- per-transaction caps (issue 15)


def retrieve_all(*requests: tuple[str, str]) -> tuple[str, list, list[tuple[str, bytes]]]:  # type: ignore[type-arg]
    """Like :func:`retrieve`, keeping every DocumentResponse in order (one document may be named repeatedly)."""
    body = ebxml_serialize.retrieve_document_set_request([DocumentRequest(repo, uid) for repo, uid in requests])
    result = SoapClient("local:repository").call(Action.RetrieveDocumentSet, body)
    assert result.fault is None, result.fault
    status, errors, documents = parse_retrieve_document_set_response(result.body)
    answered = [(document.document_unique_id, result.binary(document.element).read_bytes()) for document in documents]
    result.close()
    return status, errors, answered


def test_the_same_4mb_document_named_50_times_is_served_up_to_the_byte_cap(doc_dir: Path, settings) -> None:  # type: ignore[no-untyped-def]
    settings.XDS_ITI43_MAX_BYTES = 10 * 4_000_000 + 123  # ten copies fit, the eleventh does not
    doc = Doc(content=bytes(range(250)) * 16_000)  # 4 MB
    store(doc)
    status, errors, answered = retrieve_all(*[(REPOSITORY_ID, doc.unique_id)] * 50)
    assert status == ResponseStatus.PARTIAL_SUCCESS
    # One answer per DocumentRequest: ten DocumentResponses (every copy counted), forty errors naming the document.
    assert [uid for uid, _ in answered] == [doc.unique_id] * 10
    assert all(content == doc.content for _, content in answered)
    assert [(e.error_code, e.location) for e in errors] == [(ErrorCode.XDSRepositoryError, doc.unique_id)] * 40
    assert all(e.is_error and "bytes" in e.code_context for e in errors)


def test_the_default_caps_serve_the_50_copies(doc_dir: Path, settings) -> None:  # type: ignore[no-untyped-def]
    assert (settings.XDS_ITI43_MAX_DOCUMENTS, settings.XDS_ITI43_MAX_BYTES) == (1000, 2 * 1024**3)
    doc = Doc(content=b"x" * 4_000_000)
    store(doc)
    status, errors, answered = retrieve_all(*[(REPOSITORY_ID, doc.unique_id)] * 50)
    assert (status, errors, len(answered)) == (ResponseStatus.SUCCESS, [], 50)


def test_document_requests_past_the_count_cap_get_xds_repository_error(doc_dir: Path, settings) -> None:  # type: ignore[no-untyped-def]
    settings.XDS_ITI43_MAX_DOCUMENTS = 3
    docs = [Doc(content=f"document {index}".encode()) for index in range(5)]
    store(*docs)
    unknown = new_oid()
    status, errors, answered = retrieve_all(*[(REPOSITORY_ID, d.unique_id) for d in docs[:2]],
                                            (REPOSITORY_ID, unknown),
                                            *[(REPOSITORY_ID, d.unique_id) for d in docs[2:]])
    assert status == ResponseStatus.PARTIAL_SUCCESS
    assert answered == [(d.unique_id, d.content) for d in docs[:2]]
    # The first three requests are judged (the unknown one among them); the three beyond the cap are declined.
    assert [(e.error_code, e.location) for e in errors] == [
        (ErrorCode.XDSDocumentUniqueIdError, unknown),
        *[(ErrorCode.XDSRepositoryError, d.unique_id) for d in docs[2:]]]
    assert "at most 3" in errors[-1].code_context


def test_nothing_fits_is_failure_and_a_large_document_does_not_block_smaller_ones(doc_dir: Path, settings) -> None:  # type: ignore[no-untyped-def]
    settings.XDS_ITI43_MAX_BYTES = 1000
    big, small = Doc(content=b"B" * 5000), Doc(content=b"s" * 600)
    store(big, small)
    status, errors, answered = retrieve_all((REPOSITORY_ID, big.unique_id))
    assert (status, [(e.error_code, e.location) for e in errors], answered) == (
        ResponseStatus.FAILURE, [(ErrorCode.XDSRepositoryError, big.unique_id)], [])
    status, errors, answered = retrieve_all((REPOSITORY_ID, big.unique_id), (REPOSITORY_ID, small.unique_id),
                                            (REPOSITORY_ID, small.unique_id))
    assert status == ResponseStatus.PARTIAL_SUCCESS
    assert answered == [(small.unique_id, small.content)]  # 600 fit, 600 more would not
    assert [(e.error_code, e.location) for e in errors] == [(ErrorCode.XDSRepositoryError, big.unique_id),
                                                             (ErrorCode.XDSRepositoryError, small.unique_id)]
