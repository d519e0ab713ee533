"""The operator's functions of the imaging source: the PACS's studies a page at a time (the real Orthanc),
their publication state from this site's records, publish / reconcile actions, jobs, MPPS summaries."""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from pydicom.dataset import Dataset

from imaging_source import operations
from imaging_source.dicom.config import DicomConfig, FetchMethod, Peer
from imaging_source.models import PatientMapping, Publication, ReconciliationItem
from imaging_source.operations import FindError, PublicationState
from imaging_source.publication_jobs import PUBLISH_STUDY
from imaging_source.publish import Outcome, publish
from jobs import api as jobs_api
from jobs.models import Job, JobState

from .conftest import AFFINITY_PATIENT, publish_config
from .pacs_fixtures import NIST_STUDY_UID

pytestmark = pytest.mark.django_db

STUDY = "1.2.826.0.1.3680043.2.1125.1"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nobody() -> DicomConfig:
    return DicomConfig(ae_title="XDSI_T", pacs=Peer("NOBODY", "127.0.0.1", _closed_port()))


_serial = iter(range(1, 10_000))


def publication(study_uid: str, status: str, *, replaces: Publication | None = None, **extra) -> Publication:
    """A Publication row as :func:`imaging_source.publish.publish` leaves it (no RAD-68 needed to set a state)."""
    n = next(_serial)
    return Publication.objects.create(
        study_instance_uid=study_uid, kos_sop_instance_uid=f"1.2.3.999.{n}", entry_uuid=f"urn:uuid:{n:032x}",
        submission_set_unique_id=f"1.2.3.998.{n}", patient_id=AFFINITY_PATIENT, source_patient_id="L^^^&1.2&ISO",
        instance_set_hash=f"{n:064x}", status=status, replaces=replaces, kos=b"", **extra)


# --- publication state ------------------------------------------------------------------------------

def test_each_publication_state_comes_from_the_records_in_three_queries() -> None:
    uids = [f"{STUDY}.{i}" for i in range(1, 11)]
    published, replaced, queued, failed, dead, imported, never, skipped, pending, reconciling = uids
    publication(published, Publication.Status.PUBLISHED)
    publication(replaced, Publication.Status.PUBLISHED,
                replaces=publication(replaced, Publication.Status.PUBLISHED))
    publication(queued, Publication.Status.PUBLISHED)
    jobs_api.enqueue(PUBLISH_STUDY, {"study_instance_uid": queued, "trigger": "admin"}, key=queued)
    publication(failed, Publication.Status.PUBLISHED)
    publication(failed, Publication.Status.FAILED, response_status="transport-error",
                errors=[{"error_code": "TransportError", "code_context": "refused"}])
    job = jobs_api.enqueue(PUBLISH_STUDY, {"study_instance_uid": dead, "trigger": "admin"}, key=dead)
    Job.objects.filter(pk=job.pk).update(state=JobState.DEAD, last_error="JobError: the PACS does not know the study")
    publication(skipped, Publication.Status.SKIPPED)
    publication(pending, Publication.Status.PENDING)
    ReconciliationItem.objects.create(study_instance_uid=reconciling, local_patient_id="L1", reason="unmapped",
                                      study={})

    with CaptureQueriesContext(connection) as queries:
        states = operations.publication_states(uids, imported={imported})
    assert len(queries) == 3  # publications, jobs, reconciliation items: never one per study

    assert {uid: s.state for uid, s in states.items()} == {
        published: PublicationState.PUBLISHED, replaced: PublicationState.REPLACED,
        queued: PublicationState.QUEUED, failed: PublicationState.FAILED, dead: PublicationState.FAILED,
        imported: PublicationState.IMPORTED, never: PublicationState.NEVER, skipped: PublicationState.IMPORTED,
        pending: PublicationState.QUEUED, reconciling: PublicationState.QUEUED}
    assert "TransportError" in states[failed].detail
    assert "does not know" in states[dead].detail
    assert states[queued].job is not None and "waiting" in states[queued].detail
    assert states[replaced].can_republish and states[published].can_republish
    assert not states[never].can_republish and states[never].publication is None


def test_a_publication_after_a_dead_job_counts_and_an_active_job_wins_over_a_dead_one() -> None:
    job = jobs_api.enqueue(PUBLISH_STUDY, {"study_instance_uid": STUDY, "trigger": "admin"}, key=STUDY)
    Job.objects.filter(pk=job.pk).update(state=JobState.DEAD, updated_at=timezone.now() - timedelta(hours=1))
    publication(STUDY, Publication.Status.PUBLISHED)
    assert operations.publication_states([STUDY])[STUDY].state == PublicationState.PUBLISHED
    again = jobs_api.enqueue(PUBLISH_STUDY, {"study_instance_uid": STUDY, "trigger": "admin"}, key=STUDY)
    state = operations.publication_states([STUDY])[STUDY]
    assert state.state == PublicationState.QUEUED and state.job == again


# --- the PACS's studies ----------------------------------------------------------------------------

def _all_pages(config: DicomConfig, size: int) -> list[str]:
    seen: list[str] = []
    for number in range(1, 100):
        page = operations.pacs_studies(config, page=number, size=size)
        assert len(page.studies) <= size
        seen += [s.study_instance_uid for s in page.studies]
        if not page.has_next:
            return seen
    raise AssertionError("paging never ended")


@pytest.mark.pacs
@pytest.mark.parametrize("dicomweb", [True, False], ids=["qido-rs", "c-find"])
def test_the_pacs_studies_page_through_every_study_once_in_a_stable_order(pacs, dicomweb) -> None:
    config = pacs.config(FetchMethod.C_GET, dicomweb=dicomweb)

    def listing() -> list[str]:
        page = operations.pacs_studies(config, page=1, size=operations.MAX_PAGE_SIZE)
        assert not page.has_next
        return [s.study_instance_uid for s in page.studies]

    # Other tests (xdist workers) add and delete studies of the shared PACS: a walk counts when the PACS
    # held the same studies before and after it.
    for _ in range(5):
        before = listing()
        paged, again = _all_pages(config, 2), _all_pages(config, 2)
        if listing() == before:
            break
    assert NIST_STUDY_UID in before and len(before) >= 5
    assert paged == before and again == paged  # same order, no study twice, none lost; and again the same
    everything = operations.pacs_studies(config, page=1, size=operations.MAX_PAGE_SIZE)
    uids = [s.study_instance_uid for s in everything.studies]

    nist = next(s for s in everything.studies if s.study_instance_uid == NIST_STUDY_UID)
    assert nist.patient_id == "IDS-DEPT002-a" and nist.instance_count == 36 and nist.series_count == 2
    assert nist.modalities == ("MR",) and nist.study_date == "20150202" and nist.date_display == "2015-02-02"
    beyond = operations.pacs_studies(config, page=len(uids) + 1, size=1)
    assert beyond.studies == [] and not beyond.has_next


@pytest.mark.parametrize("page,size", [(0, 10), (-1, 10), (1, 0), (1, operations.MAX_PAGE_SIZE + 1)])
def test_a_page_out_of_bounds_is_refused_before_asking(page, size) -> None:
    with pytest.raises(ValueError):
        operations.pacs_studies(_nobody(), page=page, size=size)


@pytest.mark.parametrize("dicomweb", [True, False], ids=["qido-rs", "c-find"])
def test_a_pacs_that_is_down_is_a_find_error(dicomweb) -> None:
    port = _closed_port()
    config = DicomConfig(ae_title="XDSI_T", pacs=Peer("NOBODY", "127.0.0.1", port),
                         dicomweb_url=f"http://127.0.0.1:{port}/dicom-web" if dicomweb else "")
    with pytest.raises(FindError):
        operations.pacs_studies(config, page=1, size=10)
    with pytest.raises(FindError):
        operations.study_in_pacs(STUDY, config)


# --- actions ----------------------------------------------------------------------------------------

@pytest.mark.pacs
def test_publishing_a_study_the_pacs_knows_queues_one_job_and_an_unknown_one_none(pacs) -> None:
    config = pacs.config(FetchMethod.WADO_RS)
    first = operations.request_publication(NIST_STUDY_UID, dicom=config, max_attempts=3)
    second = operations.request_publication(NIST_STUDY_UID, dicom=config, max_attempts=3)
    assert not first.already_active and second.already_active and first.job == second.job
    assert first.job.kind == PUBLISH_STUDY and first.job.key == NIST_STUDY_UID and first.job.max_attempts == 3
    with pytest.raises(LookupError):
        operations.request_publication("1.2.3.4.5.6.7.8.9", dicom=config, max_attempts=3)
    with pytest.raises(ValueError):
        operations.request_publication("1.2.3*", dicom=config, max_attempts=3)
    assert Job.objects.count() == 1


@pytest.mark.parametrize("value", [
    "", "IDS-AD002-a", "IDS-AD002-a^^^&1.2.3", "x' OR '1'='1", "'; DROP TABLE imaging_source_patientmapping; --",
    "a\n^^^&1.2.3&ISO", "a|b^^^&1.2.840.1&ISO", "A" * 250 + "^^^&1.2.840.1&ISO", "id^x^^&1.2.840.1&ISO",
    "id^^^&not-an-oid&ISO", "x' OR '1'='1^^^&1.2.840.1&ISO", "<b>x</b>^^^&1.2.840.1&ISO", "é^^^&1.2.840.1&ISO"])
def test_a_hostile_affinity_id_has_problems(value) -> None:
    assert operations.affinity_id_problems(value)


def test_a_well_formed_affinity_id_has_none() -> None:
    assert operations.affinity_id_problems(AFFINITY_PATIENT) == []


@pytest.fixture
def queued(settings, ids_study, recording_repository) -> ReconciliationItem:
    settings.XDS_AFFINITY_DOMAIN_CODES = ""
    assert publish(ids_study, publish_config(recording_repository.url)).outcome == Outcome.QUEUED
    return ReconciliationItem.objects.get()


def test_resolving_maps_the_patient_and_publishes_from_the_snapshot_when_the_pacs_is_down(
        queued, recording_repository) -> None:
    with pytest.raises(ValueError):
        operations.resolve_reconciliation(queued.pk, "IDS-AD002-a", publish_config=publish_config(
            recording_repository.url), dicom=_nobody())
    assert PatientMapping.objects.count() == 0 and recording_repository.received == []

    done = operations.resolve_reconciliation(queued.pk, f"  {AFFINITY_PATIENT} ", publish_config=publish_config(
        recording_repository.url), dicom=_nobody())
    assert done.mapping_created and [r.outcome for r in done.results] == [Outcome.PUBLISHED]
    assert PatientMapping.objects.get().affinity_patient_id == AFFINITY_PATIENT
    [received] = recording_repository.received
    assert received.pnr.submission.document_entries[0].patient_id == AFFINITY_PATIENT
    queued.refresh_from_db()
    assert queued.status == ReconciliationItem.Status.RESOLVED and queued.publication.trigger == "reconciliation"
    with pytest.raises(LookupError):  # resolved: not again
        operations.resolve_reconciliation(queued.pk, AFFINITY_PATIENT, publish_config=publish_config(
            recording_repository.url), dicom=_nobody())


def test_current_mappings_prefer_the_exact_issuer_in_one_query() -> None:
    PatientMapping.objects.create(local_patient_id="L1", local_issuer="", affinity_patient_id="A^^^&1.2&ISO")
    PatientMapping.objects.create(local_patient_id="L1", local_issuer="HOSP", affinity_patient_id="B^^^&1.2&ISO")
    with CaptureQueriesContext(connection) as queries:
        found = operations.current_mappings([("L1", "HOSP"), ("L1", "OTHER"), ("L2", "")])
    assert len(queries) == 1
    assert found == {("L1", "HOSP"): "B^^^&1.2&ISO", ("L1", "OTHER"): "A^^^&1.2&ISO"}


# --- jobs -------------------------------------------------------------------------------------------

def test_jobs_are_filtered_by_known_kinds_and_states_only_and_actions_stay_within_the_kinds() -> None:
    kinds = (PUBLISH_STUDY, "consumer.import_prior")
    mine = jobs_api.enqueue(PUBLISH_STUDY, {"study_instance_uid": STUDY, "trigger": "admin"}, key=STUDY)
    imp = jobs_api.enqueue("consumer.import_prior", {}, key="1.2.3.4")
    other = jobs_api.enqueue("other.kind", {}, key="x")
    Job.objects.filter(pk=imp.pk).update(state=JobState.DEAD)

    assert list(operations.jobs_of(kinds)) == [imp, mine]  # newest first, other kinds never
    assert list(operations.jobs_of(kinds, kind="other.kind")) == [imp, mine]  # an unknown filter is ignored
    assert list(operations.jobs_of(kinds, state="dead")) == [imp]
    assert list(operations.jobs_of(kinds, kind=PUBLISH_STUDY, state="' OR 1=1 --")) == [mine]
    assert operations.job_counts(kinds) == {"queued": 1, "running": 0, "succeeded": 0, "failed": 0, "dead": 1}

    assert operations.cancel_jobs([other.pk], kinds, reason="test") == 0
    assert operations.retry_jobs([imp.pk, other.pk], kinds) == (1, 0)
    assert operations.cancel_jobs([mine.pk], kinds, reason="by test") == 1
    mine.refresh_from_db(), imp.refresh_from_db(), other.refresh_from_db()
    assert (mine.state, imp.state, other.state) == (JobState.DEAD, JobState.QUEUED, JobState.QUEUED)
    assert mine.last_error == "Cancelled: by test"


# --- MPPS -------------------------------------------------------------------------------------------

def test_an_mpps_summary_reads_study_and_accession_from_the_scheduled_step_attributes() -> None:
    ds = Dataset()
    ds.PerformedProcedureStepID = "PPS1"
    ds.PatientID = "L1"
    ds.Modality = "CT"
    ds.PerformedProcedureStepStartDate = "20260102"
    ds.PerformedProcedureStepStartTime = "101500"
    ds.PerformedProcedureStepDescription = "CT HEAD"
    item1, item2 = Dataset(), Dataset()
    item1.StudyInstanceUID, item1.AccessionNumber = "1.2.3.1", "ACC1"
    item2.StudyInstanceUID, item2.AccessionNumber = "1.2.3.2", "ACC2"
    ds.ScheduledStepAttributesSequence = [item1, item2]
    attributes = ds.to_json_dict()
    # What a modality may send: a "UID" that is a path, an item that is not an object.
    attributes["00400270"]["Value"] += [{"0020000D": {"vr": "UI", "Value": ["../../etc"]}}, "junk"]
    summary = operations.mpps_summary(attributes)
    assert summary.study_instance_uids == ("1.2.3.1", "1.2.3.2") and summary.accession_numbers == ("ACC1", "ACC2")
    assert (summary.step_id, summary.patient_id, summary.modality, summary.start, summary.description) == (
        "PPS1", "L1", "CT", "2026-01-02 101500", "CT HEAD")


@pytest.mark.parametrize("attributes", [{}, {"00400270": "x"}, {"00400270": {"Value": ["x", 1]}},
                                        {"00100020": {"Value": [{"Alphabetic": "x"}]}}, []])
def test_an_mpps_summary_of_odd_json_is_empty_not_an_error(attributes) -> None:
    summary = operations.mpps_summary(attributes)
    assert summary.study_instance_uids == () and summary.modality == ""
