"""An MPPS IN PROGRESS at our DICOM listener announces the procedure (for prefetch), over real DICOM."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom.sop_class import ModalityPerformedProcedureStep

from imaging_source.dicom.ae import associate, make_ae
from imaging_source.dicom.config import DicomConfig, Peer
from imaging_source.dicom.scp import DicomListener
from imaging_source.models import PerformedProcedureStep
from imaging_source.patient_mapping import parse_rewrite_rules, set_mapping
from imaging_source.procedures import announce_procedure_in_progress, procedure_event_codes
from jobs.models import Job
from jobs.registry import Event, subscribe, subscribers, unsubscribe

MPPS = ModalityPerformedProcedureStep
AFFINITY = "IDS-AD002-a^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO"
KIND = "tests.prefetch"


def step(patient_id: str = "B-20417", issuer: str = "1.2.826.0.1.3680043.10.1042", modality: str = "MR",
         body_part: str = "") -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PatientID, ds.Modality = patient_id, modality
    if issuer:
        ds.IssuerOfPatientID = issuer
    if body_part:
        ds.BodyPartExamined = body_part
    item = Dataset()
    item.StudyInstanceUID = generate_uid()
    ds.ScheduledStepAttributesSequence = [item]
    return ds


@pytest.fixture
def subscribed() -> Iterator[None]:
    before = subscribers(Event.PROCEDURE_IN_PROGRESS)
    for kind in before:
        unsubscribe(Event.PROCEDURE_IN_PROGRESS, kind)
    subscribe(Event.PROCEDURE_IN_PROGRESS, KIND)
    yield
    unsubscribe(Event.PROCEDURE_IN_PROGRESS, KIND)
    for kind in before:
        subscribe(Event.PROCEDURE_IN_PROGRESS, kind)


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")  # "brain": a sloppy modality's lower case
def test_event_codes_are_the_modality_and_the_body_part_in_every_scheme() -> None:
    assert procedure_event_codes(step(modality="MR", body_part="brain")) == [
        "MR^^DCM", "12738006^^SCT", "T-A0100^^SRT", "T-A0100^^SNM3"]
    anatomic = step(modality="CT")
    region = Dataset()
    region.CodeValue, region.CodingSchemeDesignator = "51185008", "SCT"
    anatomic.AnatomicRegionSequence = [region]
    assert procedure_event_codes(anatomic) == ["CT^^DCM", "51185008^^SCT"]
    assert procedure_event_codes(step(modality="KO", body_part="NOSUCHPART")) == []


@pytest.mark.django_db
def test_a_mapped_patient_announces_the_procedure_with_both_ids(subscribed: None) -> None:
    set_mapping("B-20417", AFFINITY, issuer="1.2.826.0.1.3680043.10.1042")
    (job,) = announce_procedure_in_progress(step(), "1.2.3.4", [], max_attempts=3)
    assert job.kind == KIND and job.key == "1.2.3.4" and job.max_attempts == 3
    assert job.payload == {"trigger": "1.2.3.4", "local_patient_id": "B-20417",
                           "local_issuer": "1.2.826.0.1.3680043.10.1042", "affinity_patient_id": AFFINITY,
                           "event_codes": ["MR^^DCM"]}


@pytest.mark.django_db
def test_an_unmapped_patient_announces_nothing_but_a_rewrite_rule_maps_it(subscribed: None) -> None:
    assert announce_procedure_in_progress(step(patient_id="NOBODY"), "1.2.3.5", [], max_attempts=3) == []
    rules = parse_rewrite_rules("*=>1.3.6.1.4.1.21367.2005.13.20.1000")
    (job,) = announce_procedure_in_progress(step(patient_id="NOBODY"), "1.2.3.5", rules, max_attempts=3)
    assert job.payload["affinity_patient_id"] == "NOBODY^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO"


@pytest.fixture
def listener(tmp_path) -> Iterator[DicomListener]:  # type: ignore[no-untyped-def]
    calls: list[str] = []

    def on_in_progress(ds: Dataset, uid: str) -> None:
        calls.append(uid)
        if ds.PatientID == "EXPLODE":
            raise RuntimeError("the prefetch queue is down")
        announce_procedure_in_progress(ds, uid, [], max_attempts=3)

    config = DicomConfig("XDSI_IDS", Peer("ORTHANC", "127.0.0.1", 1), spool_dir=tmp_path / "spool")
    server = DicomListener(config, on_mpps_in_progress=on_in_progress, host="127.0.0.1", port=0)
    host, port = server.start()
    server.peer = Peer("XDSI_IDS", host, port)  # type: ignore[attr-defined]
    server.calls = calls  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest.mark.django_db(transaction=True)
def test_mpps_in_progress_over_dicom_queues_the_prefetch_job_once(listener: DicomListener, subscribed: None) -> None:
    set_mapping("B-20417", AFFINITY, issuer="1.2.826.0.1.3680043.10.1042")
    ae = make_ae("MODALITY")
    ae.add_requested_context(MPPS)
    assoc = associate(ae, listener.peer)  # type: ignore[attr-defined]
    uid = generate_uid()
    assert assoc.send_n_create(step(), MPPS, uid)[0].Status == 0x0000
    assert assoc.send_n_create(step(), MPPS, uid)[0].Status == 0x0111  # a duplicate announces nothing more
    in_progress = Dataset()
    in_progress.PerformedProcedureStepStatus = "IN PROGRESS"
    assert assoc.send_n_set(in_progress, MPPS, uid)[0].Status == 0x0000  # an N-SET is not a new procedure
    assoc.release()
    (job,) = Job.objects.filter(kind=KIND)
    assert job.key == uid and job.payload["affinity_patient_id"] == AFFINITY
    assert listener.calls == [uid]  # type: ignore[attr-defined]


@pytest.mark.django_db(transaction=True)
def test_a_failing_announcement_does_not_refuse_the_modalitys_mpps(listener: DicomListener,
                                                                  subscribed: None) -> None:
    ae = make_ae("MODALITY")
    ae.add_requested_context(MPPS)
    assoc = associate(ae, listener.peer)  # type: ignore[attr-defined]
    uid = generate_uid()
    assert assoc.send_n_create(step(patient_id="EXPLODE"), MPPS, uid)[0].Status == 0x0000
    assoc.release()
    assert PerformedProcedureStep.objects.filter(sop_instance_uid=uid).exists()
    assert not Job.objects.exists()
