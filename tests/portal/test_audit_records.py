"""The portal's audit records, as DICOM PS3.15 A.5 messages valid against the audit XSD: logins, failed logins
and logouts through the real login view (User Authentication, A.5.3.12, from Django's auth signals --
atna.activity), a patient page (Patient Record read, with the ITI-18 it ran) and a download (Export)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import Client, RequestFactory
from django.urls import reverse

from portal import audit as portal_audit
from tests.audit_messages import SOURCE, keep_captured, valid_messages
from tests.consumer.conftest import AUTHORITY
from tests.consumer.test_browse import fed_patient, register
from xds_core import audit
from xds_core.audit_xml import to_xml

pytestmark = pytest.mark.django_db

PASSWORD = "pw-for-audit-tests"  # noqa: S105 - a test user's password, which no audit message may carry


@pytest.fixture(autouse=True)
def _every_recorded_event_is_a_valid_audit_message(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each event a test here captures is also written as its A.5 message(s) and checked against the XSD."""
    captured = keep_captured(monkeypatch)
    yield
    valid_messages(captured)


@pytest.fixture
def user(django_user_model, settings):  # type: ignore[no-untyped-def]
    settings.XDS_PORTAL_PEERS, settings.DICOM_PACS, settings.DICOMWEB_URL = [], None, ""
    settings.XDS_CONSUMER_REGISTRY_URL = ""
    settings.XDS_AFFINITY_DOMAIN_AUTHORITY = AUTHORITY
    return django_user_model.objects.create_user("dr-audit", password=PASSWORD, first_name="Ada", last_name="Audit")


def _authentication(events: list[audit.AuditEvent]) -> list[tuple[str, int, str]]:
    return [(e.event_types[0].display, int(e.outcome), e.participants[0].user_id) for e in events
            if e.event_id is audit.EventId.USER_AUTHENTICATION]


def test_login_failure_login_and_logout_are_user_authentication_events_without_the_password(user) -> None:  # type: ignore[no-untyped-def]
    client = Client(REMOTE_ADDR="10.9.8.7")
    with audit.capture() as events:
        client.post(reverse("portal:login"), {"username": "dr-audit", "password": "wrong-" + PASSWORD})
        assert client.post(reverse("portal:login"), {"username": "dr-audit", "password": PASSWORD}).status_code == 302
        client.post(reverse("portal:logout"))
    assert _authentication(events) == [("Login", 4, "dr-audit"), ("Login", 0, "dr-audit"), ("Logout", 0, "dr-audit")]
    for event in events:
        message = to_xml(event, SOURCE)
        assert PASSWORD.encode() not in message
        assert event.participants[0].network_address == "10.9.8.7"
    login = next(e for e in events if e.outcome is audit.EventOutcome.SUCCESS)
    assert login.participants[0].user_name == "Ada Audit" and login.participants[0].is_requestor


def test_a_patient_page_records_the_patient_record_read_and_its_query(user) -> None:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    pid = fed_patient()
    register(pid)
    with audit.capture() as events:
        assert client.get(reverse("portal:patient"), {"id": pid}).status_code == 200
    kinds = {(e.event_id.display, e.transaction.code if e.transaction else "") for e in events}
    assert {("Patient Record", ""), ("Query", "ITI-18")} <= kinds
    [read] = [e for e in events if e.event_id is audit.EventId.PATIENT_RECORD]
    [root] = valid_messages([read])
    assert root.find("EventIdentification").get("EventActionCode") == "R"
    assert root.find("ActiveParticipant").get("UserID") == "dr-audit"


def test_a_download_is_an_export_naming_the_user_and_the_patient(user) -> None:  # type: ignore[no-untyped-def]
    request = RequestFactory().get("/manifests/x/y/zip", REMOTE_ADDR="10.9.8.7")
    request.user = user
    with audit.capture() as events:
        portal_audit.exported(request, [audit.patient(f"P1^^^&{AUTHORITY}&ISO"), audit.study("1.2.3.4")])
    [root] = valid_messages(events)
    assert root.find("EventIdentification/EventID").get("csd-code") == "110106"
    user_participant = root.find("ActiveParticipant")
    assert (user_participant.get("UserID"), user_participant.get("UserIsRequestor")) == ("dr-audit", "true")


def test_an_import_refused_to_a_user_of_another_hospital_is_a_security_alert(user) -> None:  # type: ignore[no-untyped-def]
    client = Client(REMOTE_ADDR="10.9.8.7")
    client.force_login(user)  # a user of no hospital: not this node's
    url = reverse("portal:import", args=["1.2.3", "1.2.3.4"])
    with audit.capture() as events:
        assert client.post(url).status_code == 403
    [alert] = events
    [root] = valid_messages([alert])
    identification = root.find("EventIdentification")
    assert (identification.find("EventID").get("csd-code"), identification.get("EventOutcomeIndicator")) == (
        "110113", "4")
    assert identification.find("EventTypeCode").get("originalText") == "Use of Restricted Function"
    reporter, performer = root.findall("ActiveParticipant")
    assert (performer.get("UserID"), performer.get("NetworkAccessPointID")) == ("dr-audit", "10.9.8.7")
    assert root.find("ParticipantObjectIdentification").get("ParticipantObjectID") == url
