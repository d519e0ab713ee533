"""The audit trail in the admin: read-only, searchable, and every look at it is itself audited (Audit Log Used)."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils.html import escape

from atna import trail
from atna.models import AuditRecord
from tests.atna.trail_helpers import PATIENT, SOURCE, write
from xds_core import audit
from xds_core.audit_xml import schema_errors

pytestmark = pytest.mark.django_db
CHANGELIST = "admin:atna_auditrecord_changelist"


@pytest.fixture
def installed():  # type: ignore[no-untyped-def]
    sink = trail.install(SOURCE)
    yield sink
    trail.uninstall()


def _log_used() -> list[AuditRecord]:
    return list(AuditRecord.objects.filter(event_id=audit.EventId.AUDIT_LOG_USED.code).order_by("id"))


def test_searching_the_trail_by_patient_finds_its_records_and_records_audit_log_used(admin_client, admin_user,
                                                                                   installed) -> None:
    write(1)
    write(1, patient="OTHER-7^^^&1.2&ISO")

    page = admin_client.get(reverse(CHANGELIST), {"q": "TRAIL-1"})

    assert page.status_code == 200
    shown = list(page.context["cl"].result_list)
    assert [r.patient_id for r in shown] == [PATIENT]
    [used] = _log_used()
    assert used.user_id == admin_user.get_username() and used.action == "R"
    assert audit_description(used) == "admin list q=TRAIL-1"
    assert schema_errors(used.message.encode()) == []


def audit_description(row: AuditRecord) -> str:
    from lxml import etree

    return etree.fromstring(row.message.encode()).findtext("EventIdentification/EventOutcomeDescription") or ""


def test_the_list_filters_by_event_and_outcome_and_opening_a_record_is_audited(admin_client, installed) -> None:
    [record] = write(1)
    page = admin_client.get(reverse(CHANGELIST), {"event_id": "110107", "outcome": "0"})
    assert page.status_code == 200 and [r.pk for r in page.context["cl"].result_list] == [record.pk]

    detail = admin_client.get(reverse("admin:atna_auditrecord_change", args=[record.pk]))

    assert detail.status_code == 200 and escape(PATIENT).encode() in detail.content
    assert [audit_description(r) for r in _log_used()] == [
        "admin list event_id=110107; outcome=0", f"admin record id={record.pk}"]


def test_records_cannot_be_added_changed_or_deleted_through_the_admin(admin_client) -> None:
    [record] = write(1)
    change = reverse("admin:atna_auditrecord_change", args=[record.pk])
    assert admin_client.get(reverse("admin:atna_auditrecord_add")).status_code == 403
    admin_client.post(change, {"patient_id": "EDITED"})
    assert admin_client.post(reverse("admin:atna_auditrecord_delete", args=[record.pk]),
                             {"post": "yes"}).status_code == 403
    assert AuditRecord.objects.get(pk=record.pk).patient_id == PATIENT
    page = admin_client.get(reverse(CHANGELIST))
    assert page.status_code == 200 and b"delete_selected" not in page.content


def _command(*args: str) -> str:
    import io

    from django.core.management import call_command

    out = io.StringIO()
    call_command("xds_audit", *args, stdout=out)
    return out.getvalue()


def test_the_search_command_finds_by_patient_user_and_time_and_is_audited(settings, tmp_path) -> None:
    settings.XDS_AUDIT_KEY_FILE = tmp_path / "hmac.key"
    settings.XDS_AUDIT_ANCHOR_FILE = tmp_path / "anchors.log"
    write(1)
    write(1, patient="OTHER-7^^^&1.2&ISO")

    anonymous = "http://www.w3.org/2005/08/addressing/anonymous"
    found = _command("search", "--patient", "OTHER-7", "--since", "2000-01-01")
    assert found.count("\n") == 1 and "patient=OTHER-7^^^&1.2&ISO" in found and "event=110107/C" in found
    assert _command("search", "--user", anonymous, "--until", "2000-01-01") == ""
    assert _command("search", "--user", anonymous).count("\n") == 2
    assert "<AuditMessage" in _command("search", "--event", "110107", "--xml", "--limit", "1")
    assert [audit_description(r) for r in _log_used()] == [
        "xds_audit search patient=OTHER-7; since=2000-01-01T00:00:00+00:00",
        f"xds_audit search user={anonymous}; until=2000-01-01T00:00:00+00:00", f"xds_audit search user={anonymous}",
        "xds_audit search event=110107"]

    chained = _command("chain")
    assert "chained 6 records; head seq 6; anchored seq 6" in chained  # the 4 Audit Log Used records too
    status = _command("status")
    assert "records: 6, unchained: 0" in status and "chain: seq 1..6" in status and "last anchor seq 6" in status
