"""The ATNA sink (atna/trail.py): every audit event stored as A.5 messages, one patient each, one INSERT."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from atna import trail, trail_jobs
from atna.models import AuditRecord
from portal import journal
from tests.atna.trail_helpers import PATIENT, SOURCE, files, query_event, submission_event  # noqa: F401
from xds_core import audit
from xds_core.audit_xml import schema_errors

pytestmark = pytest.mark.django_db


@pytest.fixture
def installed():  # type: ignore[no-untyped-def]
    """The trail installed as the audit sink (it is not under pytest by default), removed after."""
    sink = trail.install(SOURCE)
    yield sink
    trail.uninstall()


def test_an_event_is_stored_as_one_valid_a5_message_with_its_search_columns() -> None:
    event = submission_event(user_name="clinician-b")

    [row] = trail.store(event, SOURCE)

    row = AuditRecord.objects.get(pk=row.pk)
    assert (row.event_id, row.action, row.outcome, row.transaction) == ("110107", "C", 0, "ITI-42")
    assert row.patient_id == PATIENT
    assert (row.user_id, row.user_name) == ("http://www.w3.org/2005/08/addressing/anonymous", "clinician-b")
    assert row.event_time == event.time and row.chain_seq is None and row.chain_hmac == ""
    assert schema_errors(row.message.encode()) == []
    root = etree.fromstring(row.message.encode())
    assert root.find("AuditSourceIdentification").get("AuditSourceID") == SOURCE.source_id


def test_an_event_naming_two_patients_is_two_messages_written_by_one_insert(django_assert_num_queries) -> None:
    event = query_event("A-1^^^&1.2.3&ISO", "B-2^^^&1.2.3&ISO")

    with django_assert_num_queries(1):
        rows = trail.store(event, SOURCE)

    assert sorted(r.patient_id for r in AuditRecord.objects.all()) == ["A-1^^^&1.2.3&ISO", "B-2^^^&1.2.3&ISO"]
    for row in rows:
        assert schema_errors(row.message.encode()) == []
        ids = etree.fromstring(row.message.encode()).xpath(
            "ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='1']/@ParticipantObjectID")
        assert ids == [row.patient_id]  # ITI TF-2a 3.20.7.1: one patient per message


def test_a_multi_patient_query_stays_one_message_searchable_by_its_first_patient() -> None:
    trail.store(query_event("A-1^^^&1.2.3&ISO", "B-2^^^&1.2.3&ISO", transaction=audit.Transaction.ITI_51), SOURCE)

    [row] = AuditRecord.objects.all()
    assert row.patient_id == "A-1^^^&1.2.3&ISO" and "ITI-51" in row.message


def test_events_recorded_through_the_seam_are_stored_and_still_reach_the_journal(installed, tmp_path: Path) -> None:
    trail.uninstall()
    journal.install(tmp_path / "journal")
    try:
        trail.install(SOURCE)
        audit.record(submission_event())
        audit.record(lambda: query_event(PATIENT))
    finally:
        trail.uninstall()
        journal.uninstall()

    assert [r.event_id for r in AuditRecord.objects.order_by("id")] == ["110107", "110112"]
    assert [e["transaction"] for e in journal.Journal(tmp_path / "journal").last(5)] == ["ITI-18", "ITI-42"]
    assert not audit.enabled()  # both sinks removed: the seam's default is back


def test_a_failing_store_never_breaks_the_transaction_and_logs_no_patient_data(installed, caplog,
                                                                                 monkeypatch) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError(f"cannot store {PATIENT}")

    monkeypatch.setattr(trail, "store", broken)
    audit.record(submission_event())  # must not raise

    assert AuditRecord.objects.count() == 0
    assert "RuntimeError" in caplog.text and "TRAIL-1" not in caplog.text


def test_recording_events_queues_no_job_and_the_schedule_command_queues_each_kind_once(files, settings) -> None:  # noqa: F811
    import io

    from django.core.management import call_command

    from jobs.models import Job

    sink = trail.AuditTrail(SOURCE)
    sink(submission_event())
    assert Job.objects.count() == 0  # a process that records events never touches the job queue
    settings.XDS_AUDIT_SYSLOG = "tls://arr.example:6514"

    out = io.StringIO()
    call_command("xds_audit", "schedule", stdout=out)
    call_command("xds_audit", "schedule", stdout=out)

    assert sorted(Job.objects.values_list("kind", flat=True)) == [trail_jobs.CHAIN, trail_jobs.PRUNE, trail_jobs.SHIP]
    assert "audit jobs queued: atna.chain at" in out.getvalue()
    settings.XDS_AUDIT = False
    call_command("xds_audit", "schedule", stdout=out)
    assert out.getvalue().endswith("XDS_AUDIT is off: no audit jobs queued\n")


def test_under_pytest_the_seam_keeps_its_default_no_sink() -> None:
    trail_jobs.start_trail()
    assert trail.installed() is None and not audit.enabled()


def test_hostile_text_in_an_event_still_gives_a_valid_stored_message() -> None:
    patient = "X\x00\x1b]]><evil/>" + "9" * 2000 + "^^^&1.2&ISO"
    [row] = trail.store(submission_event(patient=patient), SOURCE)
    assert schema_errors(AuditRecord.objects.get(pk=row.pk).message.encode()) == []
    assert len(row.patient_id) <= 255
