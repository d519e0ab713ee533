"""The Imaging Document Source's audit records (xds_core.audit): RAD-69 and RAD-55 against the real
Orthanc, RAD-68 sent to a real SOAP peer, C-STORE and MPPS received over real DICOM associations.

RAD-69 / RAD-55 / C-STORE are DICOM Instances Transferred (PS3.15 A.5.3.7): one patient, the
studies with their instances; the streamed (root-last) RAD-69 answer records its real outcome at
the end, after the endpoint has long handed the answer over.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pydicom
import pytest
from django.test import Client
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom.sop_class import ModalityPerformedProcedureStep

from imaging_source.dicom.ae import associate, make_ae
from imaging_source.dicom.auditing import patient_id
from imaging_source.dicom.config import DicomConfig, FetchMethod, Peer
from imaging_source.dicom.find import find_study
from imaging_source.dicom.scp import DicomListener
from imaging_source.publish import Outcome, publish
from tests.audit_messages import keep_captured, valid_messages
from xds_core import audit
from xds_core.ebxml.messages import DocumentRequest, RetrieveImagingDocumentSetRequest, SeriesRequest, StudyRequest
from xds_core.ebxml.parse import parse_retrieve_document_set_response
from xds_core.ebxml.serialize import retrieve_imaging_document_set_request
from xds_core.soap.client import SoapClient
from xds_core.vocabulary import Action, ResponseStatus

from .conftest import IDS_DIR, publish_config
from .pacs_fixtures import NIST_STUDY_UID, configure_imaging_source

SOURCE_ID = "1.3.6.1.4.1.21367.13.80.110"
TRANSFERRED = audit.EventId.DICOM_INSTANCES_TRANSFERRED


@pytest.fixture(autouse=True)
def _every_recorded_event_is_a_valid_audit_message(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each event a test here captures is also written as its A.5 message(s) and checked against the XSD."""
    captured = keep_captured(monkeypatch)
    yield
    valid_messages(captured)


def _nist_patient() -> str:
    first = sorted((IDS_DIR / "images").glob("*.dcm"))[0]
    return patient_id(pydicom.dcmread(first, stop_before_pixels=True))


# --------------------------------------------------------------------------- RAD-69 / RAD-55 (the PACS)


@pytest.fixture(params=[(FetchMethod.WADO_RS, True), (FetchMethod.C_GET, False)],
                ids=["wado-rs-root-last", "c-get-root-first"])
def source(request, pacs, settings, spool_dir):  # type: ignore[no-untyped-def]
    method, root_last = request.param
    configure_imaging_source(settings, pacs, method, root_last=root_last, source_id=SOURCE_ID, spool_dir=spool_dir)
    return method


@pytest.fixture(scope="module")
def nist(pacs):  # type: ignore[no-untyped-def]
    return find_study(NIST_STUDY_UID, pacs.config())


def _rad69(study, extra_sop: str | None = None) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    series = [SeriesRequest(s.series_instance_uid, [DocumentRequest(SOURCE_ID, i.sop_instance_uid)
                                                    for i in s.instances]) for s in study.series]
    if extra_sop:
        series[0].documents.append(DocumentRequest(SOURCE_ID, extra_sop))
    body = retrieve_imaging_document_set_request(RetrieveImagingDocumentSetRequest(
        [StudyRequest(study.study_instance_uid, series)], [ExplicitVRLittleEndian]))
    result = SoapClient("local:imaging-source").call(Action.RetrieveImagingDocumentSet.value, body)
    status, _, documents = parse_retrieve_document_set_response(result.body)
    result.close()
    return status, len(documents)


@pytest.mark.pacs
def test_a_retrieve_imaging_document_set_records_the_instances_sent_and_their_patient(source, nist) -> None:
    sops = [i.sop_instance_uid for s in nist.series for i in s.instances]
    with audit.capture() as events:
        assert _rad69(nist) == (ResponseStatus.SUCCESS.value, len(sops))
    [event] = events
    assert (event.event_id, event.action, event.transaction, event.outcome) == (
        TRANSFERRED, audit.EventAction.READ, audit.Transaction.RAD_69, audit.EventOutcome.SUCCESS)
    assert event.patient_ids == (_nist_patient(),)
    [study] = [o for o in event.objects if o.id_type is audit.ObjectIdType.STUDY_INSTANCE_UID]
    assert study.object_id == NIST_STUDY_UID and sorted(study.instances) == sorted(sops)
    assert event.requestor.role is audit.ParticipantRole.DESTINATION  # the consumer pulls
    assert event.participant(audit.ParticipantRole.SOURCE).user_id == "local:imaging-source"


@pytest.mark.pacs
def test_a_partly_answered_retrieve_records_a_minor_failure_with_the_instances_sent(source, nist) -> None:
    sops = [i.sop_instance_uid for s in nist.series for i in s.instances]
    with audit.capture() as events:
        assert _rad69(nist, extra_sop="1.2.3.4.5.6.7.8.9.999") == (ResponseStatus.PARTIAL_SUCCESS.value, len(sops))
    [event] = events
    assert event.outcome is audit.EventOutcome.MINOR_FAILURE
    assert sorted(next(o for o in event.objects if o.instances).instances) == sorted(sops)


@pytest.mark.pacs
def test_a_failing_sink_does_not_break_a_retrieve(source, nist) -> None:
    def failing(event: audit.AuditEvent) -> None:
        raise OSError("audit record repository down")

    previous = audit.set_sink(failing)
    try:
        status, count = _rad69(nist)
    finally:
        audit.set_sink(previous)
    assert status == ResponseStatus.SUCCESS.value and count == sum(len(s.instances) for s in nist.series)


@pytest.mark.pacs
@pytest.mark.django_db
def test_a_wado_retrieve_records_the_instance_sent_or_the_failure(source, nist) -> None:
    series = nist.series[0]
    sop = series.instances[0].sop_instance_uid
    params = {"requestType": "WADO", "contentType": "application/dicom", "studyUID": NIST_STUDY_UID,
              "seriesUID": series.series_instance_uid}
    with audit.capture() as events:
        assert Client().get("/xds/imaging-source/wado", {**params, "objectUID": sop}).status_code == 200
        assert Client().get("/xds/imaging-source/wado", {**params, "objectUID": sop + ".9"}).status_code == 404
    sent, missing = events
    assert (sent.event_id, sent.action, sent.transaction, sent.outcome) == (
        TRANSFERRED, audit.EventAction.READ, audit.Transaction.RAD_55, audit.EventOutcome.SUCCESS)
    assert sent.patient_ids == (_nist_patient(),)
    assert [(o.object_id, o.instances) for o in sent.objects if o.role is audit.ObjectRole.REPORT] == [
        (NIST_STUDY_UID, (sop,))]
    assert sent.requestor.network_address == "127.0.0.1"
    assert (missing.outcome, missing.patient_ids) == (audit.EventOutcome.SERIOUS_FAILURE, ())


# --------------------------------------------------------------------------- RAD-68 (sent)


@pytest.mark.django_db
def test_a_publication_records_the_export_of_its_submission(ids_study, recording_repository) -> None:
    with audit.capture() as events:
        result = publish(ids_study, publish_config(recording_repository.url, rewrite=True))
    assert result.outcome is Outcome.PUBLISHED
    [event] = events
    assert (event.event_id, event.action, event.transaction, event.outcome) == (
        audit.EventId.EXPORT, audit.EventAction.READ, audit.Transaction.RAD_68, audit.EventOutcome.SUCCESS)
    assert event.patient_ids == (result.publication.patient_id,)
    assert [o.object_id for o in event.objects if o.id_type is audit.ObjectIdType.SUBMISSION_SET] == [
        result.publication.submission_set_unique_id]
    assert event.participant(audit.ParticipantRole.DESTINATION).user_id == recording_repository.url


@pytest.mark.django_db
def test_a_refused_or_undelivered_publication_records_its_failure(ids_study, recording_repository) -> None:
    recording_repository.answer_status = ResponseStatus.FAILURE
    with audit.capture() as events:
        refused = publish(ids_study, publish_config(recording_repository.url, rewrite=True))
        unreachable = publish(ids_study, publish_config("http://127.0.0.1:9/xds/repository", rewrite=True))
    assert refused.outcome is Outcome.FAILED and unreachable.outcome is Outcome.FAILED
    assert [e.outcome for e in events] == [audit.EventOutcome.SERIOUS_FAILURE, audit.EventOutcome.MAJOR_FAILURE]


# --------------------------------------------------------------------------- C-STORE and MPPS (received)


@pytest.fixture
def listener(tmp_path):  # type: ignore[no-untyped-def]
    config = DicomConfig("XDSI_IDS", Peer("ORTHANC", "127.0.0.1", 1), spool_dir=tmp_path / "spool")
    server = DicomListener(config, host="127.0.0.1", port=0)
    host, port = server.start()
    server.peer = Peer("XDSI_IDS", host, port)
    yield server
    server.stop()


def _wait_for(events: list[audit.AuditEvent], count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while len(events) < count and time.monotonic() < deadline:
        time.sleep(0.02)


def test_instances_stored_by_a_modality_are_recorded_per_study_when_the_association_ends(listener) -> None:
    files = [get_testdata_file("CT_small.dcm"), get_testdata_file("MR_small.dcm")]
    datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    with audit.capture() as events:
        run = subprocess.run(["storescu", "-aet", "MODALITY", "-aec", "XDSI_IDS", listener.peer.host,
                              str(listener.peer.port), *files],
                             env={**os.environ, "TCP_NODELAY": "1"}, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        _wait_for(events, len(datasets))
    assert len(events) == 2  # two studies, one patient each (PS3.15 A.5.3.7)
    by_study = {next(o.object_id for o in e.objects if o.id_type is audit.ObjectIdType.STUDY_INSTANCE_UID): e
                for e in events}
    for ds in datasets:
        event = by_study[ds.StudyInstanceUID]
        assert (event.event_id, event.action, event.transaction, event.outcome) == (
            TRANSFERRED, audit.EventAction.CREATE, None, audit.EventOutcome.SUCCESS)
        assert event.patient_ids == (patient_id(ds),)
        assert next(o for o in event.objects if o.instances).instances == (ds.SOPInstanceUID,)
        assert event.requestor.user_id == "MODALITY" and event.requestor.role is audit.ParticipantRole.SOURCE
        assert event.participant(audit.ParticipantRole.DESTINATION).alternative_user_id == "AETITLES=XDSI_IDS"


@pytest.mark.django_db(transaction=True)
def test_mpps_in_progress_and_completed_record_the_procedure_record(listener) -> None:
    study_uid, mpps_uid = generate_uid(), generate_uid()
    created = Dataset()
    created.PerformedProcedureStepStatus = "IN PROGRESS"
    created.PatientID = "MPPS-PAT-1"
    item = Dataset()
    item.StudyInstanceUID = study_uid
    created.ScheduledStepAttributesSequence = [item]
    done = Dataset()
    done.PerformedProcedureStepStatus = "COMPLETED"
    ae = make_ae("MODALITY")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    with audit.capture() as events:
        assoc = associate(ae, listener.peer)
        try:
            assert assoc.send_n_create(created, ModalityPerformedProcedureStep, mpps_uid)[0].Status == 0
            assert assoc.send_n_set(done, ModalityPerformedProcedureStep, mpps_uid)[0].Status == 0
            refused = assoc.send_n_set(done, ModalityPerformedProcedureStep, mpps_uid)[0].Status  # already final
        finally:
            assoc.release()
    assert refused == 0xA710
    assert [(e.transaction, e.action, e.outcome) for e in events] == [
        (audit.Transaction.RAD_6, audit.EventAction.CREATE, audit.EventOutcome.SUCCESS),
        (audit.Transaction.RAD_7, audit.EventAction.UPDATE, audit.EventOutcome.SUCCESS),
        (audit.Transaction.RAD_7, audit.EventAction.UPDATE, audit.EventOutcome.SERIOUS_FAILURE)]
    assert {e.event_id for e in events} == {audit.EventId.PROCEDURE_RECORD}
    assert {e.requestor.user_id for e in events} == {"MODALITY"}
    # The step as stored: its patient and study.  The refused N-SET names only what it tried to change.
    assert [(e.patient_ids, [o.object_id for o in e.objects if o.id_type is audit.ObjectIdType.STUDY_INSTANCE_UID])
            for e in events] == [(("MPPS-PAT-1",), [study_uid])] * 2 + [((), [])]
