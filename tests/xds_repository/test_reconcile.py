"""Reconcile's safety matrix: which pending documents it confirms and which it removes.

A pending document is removed only when the registry positively does not hold it with *our*
repositoryUniqueId and the same hash; any doubt (the registry unreachable, an error answer, a fault)
removes nothing.  Removing a document the registry knows would lose data, so each way of "knowing"
is tested against the real reconcile over real SOAP/HTTP (a stand-in registry answering ITI-18).
"""

from __future__ import annotations

import hashlib
import io
from datetime import timedelta
from pathlib import Path

import pytest

from tests.xds_repository.conftest import REPOSITORY_ID, Doc, StandInRegistry, new_oid, submission_for
from xds_repository import records
from xds_repository import storage as store
from xds_repository.conf import repository_config
from xds_repository.models import StoredDocument
from xds_repository.reconcile import reconcile
from xds_repository.registry_client import QUERY_BATCH

pytestmark = pytest.mark.django_db


def _pending(content: bytes, unique_id: str | None = None) -> StoredDocument:
    """A document stored and recorded pending, as a crash between store and ITI-42 leaves it."""
    sha1 = hashlib.sha1(content).hexdigest()
    [row] = records.record_pending([records.NewDocument(unique_id or new_oid(), "text/plain", sha1, len(content))],
                                   storage_alias="xds_documents")
    store.put(repository_config().storage, sha1=sha1, size=len(content), path=None,
              open_stream=lambda: io.BytesIO(content))
    return row


def _registry_knows(registry: StandInRegistry, row: StoredDocument, **changes: str) -> None:
    """The stand-in registry holds a DocumentEntry for ``row`` (as ITI-42 left it), with ``changes``."""
    _submission, [entry] = submission_for([Doc(content=b"-", unique_id=row.unique_id)])
    values = {"hash": row.hash, "size": str(row.size), "repository_unique_id": REPOSITORY_ID, **changes}
    for name, value in values.items():  # the slots ITI-41 sets (ITI TF-3 Table 4.2.3.2-1)
        setattr(entry, name, value)
    registry.entries[row.unique_id] = entry


def _reconcile(registry: StandInRegistry):  # type: ignore[no-untyped-def]
    return reconcile(repository_unique_id=REPOSITORY_ID, registry_url=registry.url,
                     storage=repository_config().storage, grace=timedelta(0), registry_timeout=10)


def _state(row: StoredDocument) -> str | None:
    found = StoredDocument.objects.filter(pk=row.pk).first()
    return found.state if found else None


def test_same_unique_id_with_another_hash_is_removed(doc_dir: Path, stand_in_registry: StandInRegistry) -> None:
    row = _pending(b"our bytes")
    _registry_knows(stand_in_registry, row, hash=hashlib.sha1(b"someone else's bytes").hexdigest())
    report = _reconcile(stand_in_registry)
    assert (report.registered, report.removed) == ([], [row.unique_id])
    assert _state(row) is None and not repository_config().storage.exists(row.storage_name)


def test_same_document_in_another_repository_is_removed(doc_dir: Path, stand_in_registry: StandInRegistry) -> None:
    row = _pending(b"registered elsewhere")
    _registry_knows(stand_in_registry, row, repository_unique_id="1.3.6.1.4.1.21367.13.70.999")
    report = _reconcile(stand_in_registry)
    assert report.removed == [row.unique_id] and _state(row) is None


def test_the_registry_reporting_our_hash_in_upper_case_confirms_the_document(
        doc_dir: Path, stand_in_registry: StandInRegistry) -> None:
    row = _pending(b"hash case does not matter")
    _registry_knows(stand_in_registry, row, hash=row.hash.upper())
    report = _reconcile(stand_in_registry)
    assert (report.registered, report.removed) == ([row.unique_id], [])
    assert _state(row) == StoredDocument.State.REGISTERED
    assert repository_config().storage.exists(row.storage_name)


def test_more_pending_documents_than_one_query_holds_are_all_asked_for_and_confirmed(
        doc_dir: Path, stand_in_registry: StandInRegistry) -> None:
    rows = [_pending(f"document {n}".encode()) for n in range(QUERY_BATCH + 50)]
    for row in rows:
        _registry_knows(stand_in_registry, row)
    report = _reconcile(stand_in_registry)
    assert sorted(report.registered) == sorted(r.unique_id for r in rows) and report.removed == []
    assert [len(q) for q in stand_in_registry.queries] == [QUERY_BATCH, 50]
    assert set().union(*stand_in_registry.queries) == {r.unique_id for r in rows}


@pytest.mark.parametrize("query_mode", ["error", "fault"])
def test_an_error_answer_or_a_fault_from_the_registry_removes_nothing(
        doc_dir: Path, stand_in_registry: StandInRegistry, query_mode: str) -> None:
    row = _pending(b"unknown fate")
    stand_in_registry.query_mode = query_mode
    report = _reconcile(stand_in_registry)
    assert report.error and report.removed == [] and report.registered == []
    assert _state(row) == StoredDocument.State.PENDING
    assert repository_config().storage.exists(row.storage_name)
