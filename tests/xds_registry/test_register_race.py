"""Concurrent ITI-42 submissions: the database decides, exactly one of two racing submissions wins.

Runs on PostgreSQL only.  On SQLite the test database is an in-memory shared-cache database, where a
second writer gets SQLITE_LOCKED at once (busy_timeout does not apply to shared-cache table locks),
so two concurrent transactions cannot be exercised there; the production SQLite configuration
serialises writers with BEGIN IMMEDIATE + busy timeout (config/settings.py) instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.db import connection

from tests.xds_registry.registry_helpers import fed_patient, load_submission, new_oid
from xds_core.errors import ErrorCode, XdsError
from xds_core.metadata.objects import Submission
from xds_registry import models as m
from xds_registry.register_document_set import register_document_set

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql",
                       reason="needs a database with concurrent writers (see module docstring)"),
]
ROUNDS = 8


def race(submissions: list[Submission]) -> list[str | list[str]]:
    """Register the submissions from parallel threads released at the same instant."""
    barrier = threading.Barrier(len(submissions))
    outcomes: list[str | list[str]] = []
    lock = threading.Lock()

    def run(sub: Submission) -> None:
        try:
            barrier.wait()
            register_document_set(sub)
            outcome: str | list[str] = "ok"
        except XdsError as exc:
            outcome = [e.error_code for e in exc.errors]
        finally:
            connection.close()
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=run, args=(s,)) for s in submissions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return outcomes


def rounds(make: Callable[[], list[Submission]], loser: list[str]) -> None:
    for _ in range(ROUNDS):
        outcomes = race(make())
        assert sorted(outcomes, key=str) == sorted(["ok", loser], key=str), outcomes


def test_same_document_uniqueid_with_different_hash():
    pid = fed_patient()

    def make() -> list[Submission]:
        uid = new_oid()
        a = load_submission("single_doc.xml", pid, keep_unique_ids={"Document01": uid})[0]
        b = load_submission("single_doc.xml", pid, keep_unique_ids={"Document01": uid})[0]
        b.document_entries[0].hash = "0" * 40
        return [a, b]

    rounds(make, [ErrorCode.XDSNonIdenticalHash])
    # Every winner left exactly one entry per uniqueId.
    assert m.DocumentEntry.objects.count() == ROUNDS


def test_same_submission_set_uniqueid():
    pid = fed_patient()

    def make() -> list[Submission]:
        uid = new_oid()
        return [load_submission("single_doc.xml", pid, keep_unique_ids={"SubmissionSet01": uid})[0]
                for _ in range(2)]

    rounds(make, [ErrorCode.XDSDuplicateUniqueIdInRegistry])
    assert m.SubmissionSet.objects.count() == ROUNDS == m.DocumentEntry.objects.count()


def test_two_replacements_of_one_document():
    pid = fed_patient()

    def make() -> list[Submission]:
        original = register_document_set(load_submission("single_doc.xml", pid)[0]).entry_uuids["Document01"]
        return [load_submission("rplc.xml", pid, rplc_doc_uuid=original)[0] for _ in range(2)]

    rounds(make, [ErrorCode.XDSRegistryDeprecatedDocumentError])
    # Each original was replaced exactly once.
    assert m.Association.objects.filter(association_type__endswith=":RPLC").count() == ROUNDS
