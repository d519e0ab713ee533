"""Predictive prefetch: the rules, the planning job against this process's registry and repository, and the
import job into a real second PACS through a real imaging source (marked ``pacs``)."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pydicom
import pytest

from consumer.find import FoundManifest
from consumer.models import Endpoint, EndpointKind, PriorImport, PriorImportState
from consumer.prefetch import IMPORT_PRIOR, PrefetchConfig, PrefetchRules, import_prior, plan_prefetch
from jobs.api import enqueue
from jobs.models import Job
from jobs.registry import JobError, PermanentJobError
from tests.consumer.conftest import LOCATION_UID, NIST_STUDY, Domain, kos_part10, new_oid
from tests.consumer.import_pacs import ImportPacs
from tests.gunicorn_server import Server
from xds_core.metadata.values import Code

NOW = datetime(2026, 12, 7, tzinfo=UTC)
OWN_LOCATION = "1.3.6.1.4.1.21367.13.80.112"
MR = Code("MR", "DCM", "Magnetic Resonance")
CT = Code("CT", "DCM", "Computed Tomography")
BRAIN = Code("12738006", "SCT", "Brain")
LOCAL_AUTHORITY = "1.2.826.0.1.3680043.10.1042"


def found(*, start: str = "20250101", codes: tuple[str, ...] = ("MR^^DCM",), created: str = "20261127120000"
          ) -> FoundManifest:
    return FoundManifest(new_oid(), "1.2.3", "", None, "application/dicom", (), created, "Approved", "urn:uuid:x",
                         None, "P^^^&1.2.3&ISO", event_codes=codes, service_start_time=start)


@pytest.mark.parametrize(("match", "codes", "relevant"), [
    ("modality-or-anatomy", ("MR^^DCM",), True),
    ("modality-or-anatomy", ("CT^^DCM", "12738006^^SCT"), True),   # same body part
    ("modality-or-anatomy", ("CT^^DCM", "51185008^^SCT"), False),
    ("modality", ("CT^^DCM", "12738006^^SCT"), False),
    ("anatomy", ("MR^^DCM",), False),
    ("anatomy", ("CT^^DCM", "12738006^^SCT"), True),
    ("any", ("US^^DCM",), True),
])
def test_rules_match_modality_or_body_part_from_the_event_codes(match: str, codes: tuple[str, ...],
                                                                relevant: bool) -> None:
    rules = PrefetchRules(lookback_days=3650, max_studies=3, match=match)
    assert rules.relevant(found(codes=codes), ["MR^^DCM", "12738006^^SCT"], NOW) is relevant


def test_the_look_back_window_is_on_the_study_date_then_the_creation_time() -> None:
    rules = PrefetchRules(lookback_days=365, max_studies=3, match="any")
    assert rules.relevant(found(start="20260101"), [], NOW)
    assert not rules.relevant(found(start="20150202"), [], NOW)
    assert not rules.relevant(found(start="", created="20200101120000"), [], NOW)
    assert not rules.relevant(found(start="garbage", created=""), [], NOW)


# ----------------------------------------------------------------------------- planning

def config(settings, **rules: object) -> PrefetchConfig:  # type: ignore[no-untyped-def]
    settings.XDS_IMAGING_SOURCE_ID = OWN_LOCATION
    settings.DICOM_PACS = {"ae_title": "NOBODY", "host": "127.0.0.1", "port": 1}
    settings.XDS_SITE_CONSUMER_IDENTITY = "XDSI_CONSUMER@HOSPITAL_B"
    base = PrefetchConfig.from_settings(settings)
    return PrefetchConfig(**{**base.__dict__, "rules": PrefetchRules(**{**base.rules.__dict__, **rules}),
                             "timeout": 30.0})


def kos_at(unique_id: str, study_uid: str, location: str) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(kos_part10(unique_id, study_uid)))
    for study in ds.CurrentRequestedProcedureEvidenceSequence:
        for series in study.ReferencedSeriesSequence:
            series.RetrieveLocationUID = location
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def procedure(patient: str, *, codes: tuple[str, ...] = ("MR^^DCM",), mpps: str | None = None) -> Job:
    return enqueue("consumer.prefetch_priors", {
        "trigger": mpps or new_oid(), "local_patient_id": "HOSPB-7", "local_issuer": LOCAL_AUTHORITY,
        "affinity_patient_id": patient, "event_codes": list(codes)})


def test_plan_queues_other_sites_relevant_priors_most_recent_first_and_skips_its_own(
        domain: Domain, settings) -> None:  # type: ignore[no-untyped-def]
    patient = domain.patient()
    other_recent = domain.publish(patient, event_codes=(MR,), service_start_time="20250301")
    other_older = domain.publish(patient, event_codes=(MR, BRAIN), service_start_time="20230301")
    other_oldest = domain.publish(patient, event_codes=(MR,), service_start_time="20210301")
    uid = new_oid()
    domain.publish(patient, event_codes=(MR,), service_start_time="20260101", unique_id=uid,
                   content=kos_at(uid, new_oid(), OWN_LOCATION))  # our own study: never imported
    domain.publish(patient, event_codes=(CT,), service_start_time="20260201")  # another modality
    domain.publish(patient, event_codes=(MR,), service_start_time="20100101")  # outside the window

    queued = plan_prefetch(procedure(patient), config(settings, lookback_days=3650, max_studies=2), now=NOW)

    assert [j.kind for j in queued] == [IMPORT_PRIOR, IMPORT_PRIOR]
    assert [j.key for j in queued] == [other_recent.unique_id, other_older.unique_id]
    assert queued[0].payload["local_patient_id"] == "HOSPB-7" and queued[0].payload["found"]["patient_id"] == patient
    assert set(PriorImport.objects.values_list("manifest_unique_id", flat=True)) == {
        other_recent.unique_id, other_older.unique_id}
    assert not PriorImport.objects.filter(manifest_unique_id=other_oldest.unique_id).exists()


def test_a_second_procedure_does_not_import_the_same_prior_again(domain: Domain, settings) -> None:  # type: ignore[no-untyped-def]
    patient = domain.patient()
    prior = domain.publish(patient, event_codes=(MR,), service_start_time="20250301")
    cfg = config(settings)
    (first,) = plan_prefetch(procedure(patient), cfg, now=NOW)
    (again,) = plan_prefetch(procedure(patient), cfg, now=NOW)  # still queued: the same job
    assert again.pk == first.pk
    PriorImport.objects.filter(manifest_unique_id=prior.unique_id).update(state=PriorImportState.IMPORTED)
    assert plan_prefetch(procedure(patient), cfg, now=NOW) == []
    assert Job.objects.filter(kind=IMPORT_PRIOR).count() == 1


def test_plan_refuses_a_payload_without_a_valid_affinity_patient(domain: Domain, settings) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PermanentJobError, match="affinity_patient_id"):
        plan_prefetch(procedure("x' OR 1=1"), config(settings), now=NOW)
    job = enqueue("consumer.prefetch_priors", {"affinity_patient_id": "P^^^&1.2.3&ISO"})
    with pytest.raises(PermanentJobError, match="local_patient_id"):
        plan_prefetch(job, config(settings), now=NOW)


def test_an_unreachable_registry_is_retried_without_patient_data_in_the_error(domain: Domain, settings) -> None:  # type: ignore[no-untyped-def]
    settings.XDS_CONSUMER_REGISTRY_URL = "http://127.0.0.1:9/xds/registry"
    patient = domain.patient()
    with pytest.raises(JobError) as raised:
        plan_prefetch(procedure(patient), config(settings), now=NOW)
    assert patient.split("^")[0] not in str(raised.value)


# ----------------------------------------------------------------------------- importing (PACS)

@pytest.mark.pacs
def test_the_import_job_puts_the_prior_into_the_pacs_under_the_local_patient_and_resumes(
        domain: Domain, ids: Server, import_pacs: ImportPacs, settings) -> None:  # type: ignore[no-untyped-def]
    Endpoint.objects.create(kind=EndpointKind.IMAGING_SOURCE, unique_id=LOCATION_UID,
                            url=ids.endpoint("imaging-source"))
    import_pacs.wipe_studies()
    patient = domain.patient()
    domain.publish(patient, study_uid=NIST_STUDY, event_codes=(MR,), service_start_time="20250301")
    cfg = config(settings)
    cfg = PrefetchConfig(**{**cfg.__dict__, "pacs": {"ae_title": import_pacs.ae_title, "host": "127.0.0.1",
                                                     "port": import_pacs.dicom_port},
                            "calling_ae_title": import_pacs.calling_ae_title})
    (job,) = plan_prefetch(procedure(patient), cfg, now=NOW)

    record = import_prior(job, cfg, LOCAL_AUTHORITY)

    assert (record.state, record.present, record.requested) == (PriorImportState.IMPORTED, 36, 36)
    assert import_pacs.study_patient_ids(NIST_STUDY) == ["HOSPB-7"]
    stored = import_pacs.instance_files(NIST_STUDY)
    ds = pydicom.dcmread(io.BytesIO(next(iter(stored.values()))))
    assert ds.IssuerOfPatientID == LOCAL_AUTHORITY
    assert ds.OriginalAttributesSequence[-1].ModifyingSystem == "XDSI_CONSUMER@HOSPITAL_B"
    # Lost instances are brought back by the next attempt; what is there is not sent again.
    victim = next(iter(stored))
    import_pacs.delete_instance(victim)
    record = import_prior(job, cfg, LOCAL_AUTHORITY)
    assert (record.state, record.present) == (PriorImportState.IMPORTED, 36)
    assert len(import_pacs.instance_files(NIST_STUDY)) == 36


@pytest.mark.pacs
def test_an_import_into_a_pacs_that_refuses_is_retried_and_recorded(
        domain: Domain, ids: Server, import_pacs: ImportPacs, settings) -> None:  # type: ignore[no-untyped-def]
    Endpoint.objects.create(kind=EndpointKind.IMAGING_SOURCE, unique_id=LOCATION_UID,
                            url=ids.endpoint("imaging-source"))
    patient = domain.patient()
    domain.publish(patient, study_uid=NIST_STUDY, event_codes=(MR,), service_start_time="20250301")
    cfg = config(settings)
    cfg = PrefetchConfig(**{**cfg.__dict__, "pacs": {"ae_title": import_pacs.ae_title, "host": "127.0.0.1",
                                                     "port": import_pacs.dicom_port},
                            "calling_ae_title": "NOT_ALLOWED"})  # the PACS knows no such AE
    (job,) = plan_prefetch(procedure(patient), cfg, now=NOW)
    with pytest.raises(JobError, match="failed"):
        import_prior(job, cfg, LOCAL_AUTHORITY)
    record = PriorImport.objects.get(manifest_unique_id=job.key)
    assert record.state == PriorImportState.FAILED and record.present == 0 and record.detail
    assert patient.split("^")[0] not in record.detail
