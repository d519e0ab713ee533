"""The operator pages of the portal: the PACS's studies (the real Orthanc) with their publication state,
publish, the reconciliation queue (map, then publish to a real SOAP peer), jobs, MPPS; who may act."""

from __future__ import annotations

import re
import socket

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from pydicom.dataset import Dataset

from consumer.models import PriorImport
from imaging_source import operations
from imaging_source.dicom.config import DicomConfig
from imaging_source.models import PatientMapping, PerformedProcedureStep, Publication, ReconciliationItem
from imaging_source.publication_jobs import PUBLISH_STUDY
from imaging_source.publish import Outcome, publish
from jobs import api as jobs_api
from jobs.models import Job, JobState
from portal.models import Hospital, Membership
from tests.imaging_source.conftest import (  # noqa: F401 (fixtures)
    AFFINITY_PATIENT,
    ids_study,
    publish_config,
    recording_repository,
)
from tests.imaging_source.pacs_fixtures import NIST_STUDY_UID
from tests.imaging_source.test_operations import publication
from xds_core import audit

pytestmark = pytest.mark.django_db

PAGES = ["portal:operator", "portal:operator_studies", "portal:reconciliation", "portal:operator_jobs", "portal:mpps"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _user(name: str, hospital: Hospital | None = None, **extra):
    user = get_user_model().objects.create_user(name, password="pw-for-tests", **extra)
    if hospital is not None:
        Membership.objects.create(user=user, hospital=hospital)
    return user


@pytest.fixture
def hospitals(settings) -> tuple[Hospital, Hospital]:
    settings.XDS_SITE_KEY = "hospital-b"
    settings.XDS_SITE_NAME = "Hospital B"
    return (Hospital.objects.create(key="hospital-a", name="Hospital A"),
            Hospital.objects.create(key="hospital-b", name="Hospital B"))


@pytest.fixture
def home(hospitals) -> Client:
    client = Client()
    client.force_login(_user("bob", hospitals[1]))
    return client


@pytest.fixture
def stranger(hospitals) -> Client:
    client = Client()
    client.force_login(_user("alice", hospitals[0]))
    return client


@pytest.fixture
def pacs_down(settings) -> None:
    port = _closed_port()
    settings.DICOMWEB_URL = f"http://127.0.0.1:{port}/dicom-web"
    settings.DICOM_PACS = {"ae_title": "NOBODY", "host": "127.0.0.1", "port": port}


@pytest.fixture
def pacs_up(settings, pacs) -> None:
    settings.DICOMWEB_URL = pacs.dicomweb_url
    settings.DICOM_AE_TITLE = pacs.ae_title
    settings.DICOM_PACS = {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": pacs.dicom_port}


def _rows(content: bytes, row_class: str) -> list[str]:
    return re.findall(rf'<tr class="{row_class}"[^>]*>(.*?)</tr>', content.decode(), re.S)


# --- access -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PAGES)
def test_an_anonymous_visitor_is_sent_to_the_login_page(client, name) -> None:
    response = client.get(reverse(name))
    assert response.status_code == 302 and response["Location"].startswith(reverse("portal:login"))
    posted = client.post(reverse(name), {"study_uid": NIST_STUDY_UID})
    assert posted.status_code in (302, 405) and Job.objects.count() == 0


@pytest.mark.parametrize("name", PAGES)
def test_a_user_of_another_hospital_sees_the_pages_read_only_with_the_reason(stranger, pacs_down, name) -> None:
    page = stranger.get(reverse(name))
    assert page.status_code == 200
    assert b'id="read-only"' in page.content and b"You belong to Hospital A; this node is Hospital B" in page.content
    assert page.content.count(b'method="post"') == 1  # the logout form only: no action forms


def test_the_summary_counts_open_reconciliations_and_jobs_and_links_every_page(home) -> None:
    ReconciliationItem.objects.create(study_instance_uid="1.2.3.1", local_patient_id="L1", reason="x", study={})
    ReconciliationItem.objects.create(study_instance_uid="1.2.3.2", local_patient_id="L1", reason="x", study={},
                                      status=ReconciliationItem.Status.RESOLVED)
    jobs_api.enqueue(PUBLISH_STUDY, {}, key="1.2.3.1")
    failed = jobs_api.enqueue("consumer.import_prior", {}, key="m1")
    Job.objects.filter(pk=failed.pk).update(state=JobState.FAILED)
    jobs_api.enqueue("other.kind", {}, key="x")  # not this page's
    page = home.get(reverse("portal:operator"))
    assert page.status_code == 200 and b'id="read-only"' not in page.content
    cards = dict((label, int(n)) for n, label in re.findall(r'<div class="n">(\d+)</div><a [^>]*>([^<]+)</a>',
                                                             page.content.decode()))
    assert cards["open reconciliations"] == 1 and cards["queued jobs"] == 1 and cards["failed jobs (will retry)"] == 1
    for name in PAGES[1:]:
        assert f'href="{reverse(name)}"'.encode() in page.content


# --- studies ----------------------------------------------------------------------------------------

@pytest.mark.pacs
def test_the_studies_page_shows_each_publication_state(home, pacs_up, settings) -> None:
    uids = [s.study_instance_uid for s in operations.pacs_studies(
        DicomConfig.from_settings(settings), page=1, size=100).studies]
    assert len(uids) >= 6 and NIST_STUDY_UID in uids
    published, replaced, queued, failed, imported, never = uids[:6]
    publication(published, Publication.Status.PUBLISHED)
    publication(replaced, Publication.Status.PUBLISHED, replaces=publication(replaced, Publication.Status.PUBLISHED))
    jobs_api.enqueue(PUBLISH_STUDY, {"study_instance_uid": queued, "trigger": "admin"}, key=queued)
    dead = jobs_api.enqueue(PUBLISH_STUDY, {"study_instance_uid": failed, "trigger": "admin"}, key=failed)
    Job.objects.filter(pk=dead.pk).update(state=JobState.DEAD, last_error="PermanentJobError: RAD-68 refused")
    PriorImport.objects.create(manifest_unique_id="1.2.3.77", study_instance_uids=["1.2.3.0", imported],
                               trigger="t", state="imported")

    with audit.capture() as events:
        page = home.get(reverse("portal:operator_studies"), {"size": "100"})
    assert page.status_code == 200
    states = {uid: state for uid, state in re.findall(
        r'data-study-uid="([\d.]+)".*?state-(\w+)', page.content.decode(), re.S)}
    assert [states[u] for u in (published, replaced, queued, failed, imported, never)] == [
        "published", "replaced", "queued", "failed", "imported", "never"]
    assert b"RAD-68 refused" in page.content
    row = next(r for r in _rows(page.content, "study") if NIST_STUDY_UID in r)
    assert "IDS-DEPT002-a" in row and "2015-02-02" in row and ">36<" in row and ">MR<" in row
    # Re-publish for a published study, Publish for the others, none for an imported one.
    assert page.content.count(b">Re-publish</button>") == 2
    assert re.search(rf'data-study-uid="{re.escape(imported)}".*?not published here', page.content.decode(), re.S)
    # The patients shown were audited as read, by this user.
    [event] = [e for e in events if e.event_id == audit.EventId.PATIENT_RECORD]
    assert event.participants[0].user_id == "bob"
    assert any(o.object_id.startswith("IDS-DEPT002-a^^^") for o in event.objects)


@pytest.mark.pacs
def test_the_studies_page_is_paged_and_bounded(home, pacs_up) -> None:
    seen: list[str] = []
    for number in range(1, 50):
        page = home.get(reverse("portal:operator_studies"), {"page": str(number), "size": "3"})
        uids = re.findall(r'data-study-uid="([\d.]+)"', page.content.decode())
        assert page.status_code == 200 and len(uids) <= 3
        seen += uids
        if b'rel="next"' not in page.content:
            break
    # (Other tests may add or delete studies of the shared PACS meanwhile: the pages never repeat a study.)
    assert len(seen) == len(set(seen)) >= 6 and NIST_STUDY_UID in seen
    for hostile in ({"page": "-1"}, {"page": "abc"}, {"page": "9" * 30}, {"size": "100000"}, {"size": "0"}):
        response = home.get(reverse("portal:operator_studies"), hostile)
        assert response.status_code == 200 and len(re.findall(r'data-study-uid="', response.content.decode())) <= 25


@pytest.mark.pacs
def test_publish_queues_exactly_one_job_and_says_so(home, pacs_up, settings) -> None:
    settings.XDS_JOBS_MAX_ATTEMPTS = 4
    url = reverse("portal:operator_studies")
    page = home.post(url + "?page=1&size=5", {"study_uid": NIST_STUDY_UID}, follow=True)
    assert page.redirect_chain[-1][0] == url + "?page=1&size=5"
    assert b"Publication of study " + NIST_STUDY_UID.encode() + b" queued" in page.content
    again = home.post(url, {"study_uid": NIST_STUDY_UID}, follow=True)
    assert b"already queued" in again.content
    [job] = Job.objects.all()
    assert (job.kind, job.key, job.max_attempts, job.payload["study_instance_uid"]) == (
        PUBLISH_STUDY, NIST_STUDY_UID, 4, NIST_STUDY_UID)


@pytest.mark.pacs
@pytest.mark.parametrize("uid,says", [("1.2.3.4.5.6.7.8.9.10", b"The PACS does not know"),
                                      ("1.2.3' OR '1'='1", b"not a Study Instance UID"),
                                      ("*", b"not a Study Instance UID"), ("", b"not a Study Instance UID"),
                                      ("1" * 65, b"not a Study Instance UID")])
def test_publish_of_an_unknown_or_hostile_uid_queues_nothing(home, pacs_up, uid, says) -> None:
    page = home.post(reverse("portal:operator_studies"), {"study_uid": uid}, follow=True)
    assert page.status_code == 200 and says in page.content and Job.objects.count() == 0


def test_publish_is_refused_for_a_user_of_another_hospital(stranger, pacs_down) -> None:
    response = stranger.post(reverse("portal:operator_studies"), {"study_uid": NIST_STUDY_UID})
    assert response.status_code == 403 and b"You belong to Hospital A" in response.content
    assert Job.objects.count() == 0


def test_a_user_without_hospital_is_refused_and_a_superuser_may_act(hospitals, pacs_down) -> None:
    nobody, root = Client(), Client()
    nobody.force_login(_user("nobody"))
    root.force_login(_user("root", is_superuser=True, is_staff=True))
    refused = nobody.post(reverse("portal:operator_jobs"), {"job": "1", "action": "retry"})
    assert refused.status_code == 403 and b"belongs to no hospital" in refused.content
    job = jobs_api.enqueue(PUBLISH_STUDY, {}, key="1.2.3")
    done = root.post(reverse("portal:operator_jobs"), {"job": str(job.pk), "action": "cancel"}, follow=True)
    assert done.status_code == 200 and b"cancelled" in done.content
    job.refresh_from_db()
    assert job.state == JobState.DEAD


def test_a_pacs_that_is_down_is_a_message_not_an_error(home, pacs_down) -> None:
    page = home.get(reverse("portal:operator_studies"))
    assert page.status_code == 200
    assert b'class="error-box" role="alert" id="pacs-error"' in page.content and b"could not be queried" in page.content
    posted = home.post(reverse("portal:operator_studies"), {"study_uid": NIST_STUDY_UID}, follow=True)
    assert posted.status_code == 200 and b"could not be asked" in posted.content and Job.objects.count() == 0


def test_a_pacs_without_dicomweb_that_is_down_is_a_message_too(home, pacs_down, settings) -> None:
    settings.DICOMWEB_URL = ""
    page = home.get(reverse("portal:operator_studies"))
    assert page.status_code == 200 and b'id="pacs-error"' in page.content


def test_posts_need_the_csrf_token(hospitals, pacs_down) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(_user("bob", hospitals[1]))
    job = jobs_api.enqueue(PUBLISH_STUDY, {}, key="1.2.3")
    assert client.post(reverse("portal:operator_jobs"), {"job": str(job.pk), "action": "cancel"}).status_code == 403
    job.refresh_from_db()
    assert job.state == JobState.QUEUED
    page = client.get(reverse("portal:operator_jobs"))
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)
    done = client.post(reverse("portal:operator_jobs"), {"job": str(job.pk), "action": "cancel",
                                                         "csrfmiddlewaretoken": token})
    assert done.status_code == 302
    job.refresh_from_db()
    assert job.state == JobState.DEAD


# --- reconciliation ---------------------------------------------------------------------------------

@pytest.fixture
def queued(settings, ids_study, recording_repository) -> ReconciliationItem:  # noqa: F811
    settings.XDS_REPOSITORY_URL = recording_repository.url
    settings.XDS_IMAGING_PATIENT_REWRITE = ""
    settings.XDS_AFFINITY_DOMAIN_CODES = ""
    settings.DICOMWEB_URL = ""  # no PACS answers: the study snapshot kept in the queue is published
    settings.DICOM_PACS = {"ae_title": "NOBODY", "host": "127.0.0.1", "port": _closed_port()}
    assert publish(ids_study, publish_config(recording_repository.url)).outcome == Outcome.QUEUED
    return ReconciliationItem.objects.get()


def test_the_queue_lists_open_items_with_their_patient_and_audits_them(home, queued) -> None:
    with audit.capture() as events:
        page = home.get(reverse("portal:reconciliation"))
    [row] = _rows(page.content, "reconciliation-item")
    assert "IDS-DEPT002-a" in row and "no affinity-domain patient id" in row and 'for="affinity-' in row
    assert [o.object_id for e in events for o in e.objects] == [
        "IDS-DEPT002-a^^^&1.3.6.1.4.1.21367.1800.13.20.1000&ISO"]
    assert _rows(home.get(reverse("portal:reconciliation"), {"status": "resolved"}).content,
                 "reconciliation-item") == []
    # An unknown status is the open list, not an error.
    assert len(_rows(home.get(reverse("portal:reconciliation"), {"status": "' OR 1=1"}).content,
                     "reconciliation-item")) == 1


@pytest.mark.parametrize("value", [
    "IDS-AD002-a", "IDS-AD002-a^^^&1.2.3", "x' OR '1'='1", "1; DROP TABLE imaging_source_patientmapping; --",
    "<script>alert(1)</script>^^^&1.2.840.1&ISO", "A" * 300, "a\r\nb^^^&1.2.840.1&ISO", ""])
def test_a_hostile_affinity_id_maps_and_publishes_nothing(home, queued, recording_repository, value) -> None:  # noqa: F811
    page = home.post(reverse("portal:reconciliation"), {"item": str(queued.pk), "affinity_patient_id": value},
                     follow=True)
    assert page.status_code == 200 and b"is not valid" in page.content and b"<script>alert" not in page.content
    assert PatientMapping.objects.count() == 0 and recording_repository.received == []
    queued.refresh_from_db()
    assert queued.status == ReconciliationItem.Status.OPEN


@pytest.mark.parametrize("item", ["0", "-1", "abc", "99999", "1 OR 1=1", ""])
def test_an_unknown_item_changes_nothing(home, queued, item) -> None:
    page = home.post(reverse("portal:reconciliation"), {"item": item, "affinity_patient_id": AFFINITY_PATIENT},
                     follow=True)
    assert page.status_code == 200 and (b"no longer open" in page.content or b"No reconciliation item" in page.content)
    assert PatientMapping.objects.count() == 0


def test_mapping_a_patient_publishes_the_study_and_resolves_the_item(home, queued, recording_repository  # noqa: F811
                                                                     ) -> None:
    page = home.post(reverse("portal:reconciliation") + "?status=open",
                     {"item": str(queued.pk), "affinity_patient_id": AFFINITY_PATIENT}, follow=True)
    assert page.status_code == 200 and b"published" in page.content
    assert PatientMapping.objects.get().affinity_patient_id == AFFINITY_PATIENT
    [received] = recording_repository.received
    assert received.pnr.submission.document_entries[0].patient_id == AFFINITY_PATIENT
    queued.refresh_from_db()
    assert queued.status == ReconciliationItem.Status.RESOLVED
    assert queued.publication.status == Publication.Status.PUBLISHED
    assert _rows(page.content, "reconciliation-item") == []  # the open list is empty now


def test_a_user_of_another_hospital_cannot_map(stranger, queued, recording_repository) -> None:  # noqa: F811
    response = stranger.post(reverse("portal:reconciliation"),
                             {"item": str(queued.pk), "affinity_patient_id": AFFINITY_PATIENT})
    assert response.status_code == 403 and PatientMapping.objects.count() == 0 and recording_repository.received == []


def test_the_queue_is_paged_newest_first(home) -> None:
    for i in range(5):
        ReconciliationItem.objects.create(study_instance_uid=f"1.2.3.{i}", local_patient_id=f"L{i}", reason="x",
                                          study={})
    first = home.get(reverse("portal:reconciliation"), {"size": "2"})
    last = home.get(reverse("portal:reconciliation"), {"size": "2", "page": "3"})
    beyond = home.get(reverse("portal:reconciliation"), {"size": "2", "page": "99"})
    assert [re.search(r"L\d", r).group() for r in _rows(first.content, "reconciliation-item")] == ["L4", "L3"]
    assert [re.search(r"L\d", r).group() for r in _rows(last.content, "reconciliation-item")] == ["L0"]
    assert beyond.status_code == 200  # a page beyond the last is the last
    assert [re.search(r"L\d", r).group() for r in _rows(beyond.content, "reconciliation-item")] == ["L0"]


# --- jobs -------------------------------------------------------------------------------------------

def test_jobs_are_listed_filtered_and_retried_or_cancelled(home) -> None:
    dead = jobs_api.enqueue(PUBLISH_STUDY, {}, key="1.2.3.1")
    Job.objects.filter(pk=dead.pk).update(state=JobState.DEAD, last_error="JobError: the PACS does not know it")
    waiting = jobs_api.enqueue("consumer.prefetch_priors", {}, key="1.2.3.9")
    other = jobs_api.enqueue("other.kind", {}, key="x")
    PriorImport.objects.create(manifest_unique_id="1.2.3.77", study_instance_uids=["1.2.3.5"], trigger="t",
                               state="partial", requested=10, present=7)
    page = home.get(reverse("portal:operator_jobs"))
    ids = [int(i) for i in re.findall(r'<tr class="job" id="job-(\d+)"', page.content.decode())]
    assert ids == [waiting.pk, dead.pk]  # newest first; other kinds are not this page's
    assert b"the PACS does not know it" in page.content and b"7 / 10" in page.content
    assert b"Partly imported" in page.content
    filtered = home.get(reverse("portal:operator_jobs"), {"state": "dead", "kind": PUBLISH_STUDY})
    assert re.findall(r'id="job-(\d+)"', filtered.content.decode()) == [str(dead.pk)]

    retried = home.post(reverse("portal:operator_jobs"), {"job": str(dead.pk), "action": "retry"}, follow=True)
    assert b"queued to run now" in retried.content
    cancelled = home.post(reverse("portal:operator_jobs") + "?kind=consumer.prefetch_priors&state=queued&x=<b>",
                          {"job": str(waiting.pk), "action": "cancel"}, follow=True)
    assert cancelled.redirect_chain[-1][0].endswith("?kind=consumer.prefetch_priors&state=queued")
    assert b"cancelled" in cancelled.content
    refused = home.post(reverse("portal:operator_jobs"), {"job": str(other.pk), "action": "cancel"}, follow=True)
    assert b"cannot be cancelled" in refused.content
    bad = home.post(reverse("portal:operator_jobs"), {"job": "1; DROP TABLE jobs_job", "action": "retry"}, follow=True)
    assert bad.status_code == 200 and b"Choose a job" in bad.content
    dead.refresh_from_db(), waiting.refresh_from_db(), other.refresh_from_db()
    assert (dead.state, waiting.state, other.state) == (JobState.QUEUED, JobState.DEAD, JobState.QUEUED)
    assert "portal" in waiting.last_error and "bob" in waiting.last_error


# --- MPPS -------------------------------------------------------------------------------------------

def _mpps(uid: str, accession: str, status: str = "COMPLETED") -> PerformedProcedureStep:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PatientID = "L-MPPS"
    ds.Modality = "CT"
    item = Dataset()
    item.StudyInstanceUID = f"{uid}.9"
    item.AccessionNumber = accession
    ds.ScheduledStepAttributesSequence = [item]
    return PerformedProcedureStep.objects.create(sop_instance_uid=uid, status=status, attributes=ds.to_json_dict())


def test_mpps_are_shown_newest_first_paged_and_audited(home) -> None:
    for i in range(3):
        _mpps(f"1.2.840.99.{i}", f"ACC{i}")
    with audit.capture() as events:
        page = home.get(reverse("portal:mpps"), {"size": "2"})
    rows = _rows(page.content, "mpps")
    assert len(rows) == 2 and "ACC2" in rows[0] and "ACC1" in rows[1]
    assert "1.2.840.99.2.9" in rows[0] and "CT" in rows[0] and "COMPLETED" in rows[0] and "L-MPPS" in rows[0]
    assert [o.object_id for e in events for o in e.objects] == [
        "L-MPPS^^^&1.3.6.1.4.1.21367.1800.13.20.1000&ISO"]
    second = _rows(home.get(reverse("portal:mpps"), {"size": "2", "page": "2"}).content, "mpps")
    assert len(second) == 1 and "ACC0" in second[0]


def test_pages_are_accessible_markup(home, pacs_down) -> None:
    _mpps("1.2.840.99.1", "ACC1")
    ReconciliationItem.objects.create(study_instance_uid="1.2.3.1", local_patient_id="L1", reason="x", study={})
    jobs_api.enqueue(PUBLISH_STUDY, {}, key="1.2.3.1")
    for name in PAGES:
        content = home.get(reverse(name)).content.decode()
        assert content.count("<h1") == 1
        for table in re.findall(r"<table.*?</table>", content, re.S):
            assert "<caption>" in table and '<th scope="col"' in table
        for field_id in re.findall(r'<(?:input|select)(?![^>]*type="hidden")[^>]*\sid="([^"]+)"', content):
            assert f'<label for="{field_id}"' in content


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["portal:operator", "portal:operator_studies"])
def test_a_node_without_a_pacs_says_so_instead_of_failing(home, settings, name) -> None:
    """The demo's domain node has no PACS (DICOM_PACS and DICOMWEB_URL empty): words, not a 500."""
    settings.DICOM_PACS, settings.DICOMWEB_URL = None, ""
    response = home.get(reverse(name))
    assert response.status_code == 200
    if name == "portal:operator_studies":
        assert b'id="pacs-error"' in response.content
