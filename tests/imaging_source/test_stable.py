"""Automatic publication: "study stable" detection and MPPS COMPLETED -> published -> retrievable."""

from __future__ import annotations

import io
import os
import subprocess
import threading
import time

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from imaging_source.dicom.ae import associate, make_ae
from imaging_source.dicom.config import DicomConfig, FetchMethod, Peer
from imaging_source.dicom.scp import DicomListener
from imaging_source.models import Publication
from imaging_source.patient_mapping import set_mapping
from imaging_source.publication_jobs import enqueue_publications
from imaging_source.stable import StableStudyWatcher, pacs_poller
from jobs.models import Job
from jobs.worker import run_pending
from xds_core.ebxml.messages import (
    DocumentRequest,
    RetrieveImagingDocumentSetRequest,
    SeriesRequest,
    StudyRequest,
)
from xds_core.ebxml.parse import parse_retrieve_document_set_response
from xds_core.ebxml.serialize import retrieve_document_set_request, retrieve_imaging_document_set_request
from xds_core.soap.client import SoapClient
from xds_core.vocabulary import Action, ResponseStatus

from .conftest import AFFINITY_PATIENT, NIST_LOCATION_UID
from .pacs_fixtures import NIST_STUDY_UID


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_study_is_published_once_quiet_for_the_delay() -> None:
    clock, published = Clock(), []
    watcher = StableStudyWatcher(60, published.append, clock=clock)
    watcher.seen("1.2.3")
    clock.now += 59
    watcher.seen("1.2.4")
    assert watcher.run_once() == []
    clock.now += 1
    assert watcher.run_once() == ["1.2.3"]
    watcher.seen("1.2.4")  # a new instance restarts its quiet period
    clock.now += 59
    assert watcher.run_once() == []
    clock.now += 1
    assert watcher.run_once() == ["1.2.4"] and published == ["1.2.3", "1.2.4"]
    assert watcher.pending() == {}


def test_the_first_poll_is_a_baseline_and_later_changes_count_as_activity() -> None:
    clock = Clock()
    watcher = StableStudyWatcher(10, lambda uid: None, clock=clock)
    assert watcher.observe_counts({"1.2.3": 5, "1.2.4": 1}) == []
    assert watcher.pending() == {}
    assert sorted(watcher.observe_counts({"1.2.3": 6, "1.2.4": 1, "1.2.5": 2})) == ["1.2.3", "1.2.5"]
    assert set(watcher.pending()) == {"1.2.3", "1.2.5"}


def test_a_failing_publication_does_not_stop_the_others() -> None:
    clock, published = Clock(), []

    def publish(uid: str) -> None:
        if uid == "bad":
            raise RuntimeError("repository down")
        published.append(uid)

    watcher = StableStudyWatcher(0, publish, clock=clock)
    watcher.seen("bad")
    watcher.seen("good")
    assert sorted(watcher.run_once()) == ["bad", "good"] and published == ["good"]


@pytest.mark.pacs
def test_instances_sent_to_our_scp_by_dcmtk_make_the_study_stable_after_the_delay(tmp_path) -> None:
    published: list[str] = []
    watcher = StableStudyWatcher(0.5, published.append)
    config = DicomConfig("XDSI_IDS", Peer("ORTHANC", "127.0.0.1", 1), spool_dir=tmp_path / "spool")
    listener = DicomListener(config, host="127.0.0.1", port=0,
                             on_instance=lambda r: watcher.seen(r.study_instance_uid))
    host, port = listener.start()
    stop = threading.Event()
    loop = threading.Thread(target=watcher.run, args=(stop,), kwargs={"tick": 0.05}, daemon=True)
    loop.start()
    try:
        run = subprocess.run(["storescu", "-aet", "MODALITY", "-aec", "XDSI_IDS", host, str(port),
                              get_testdata_file("CT_small.dcm")], env={**os.environ, "TCP_NODELAY": "1"},
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        assert published == []  # not yet quiet long enough
        deadline = time.monotonic() + 10
        while not published and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        loop.join(5)
        listener.stop()
    assert published == ["1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"]


@pytest.mark.pacs
def test_polling_the_pacs_sees_a_study_that_grew(pacs) -> None:
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ct.file_meta.MediaStorageSOPInstanceUID = ct.SOPInstanceUID
    ct.StudyDate = time.strftime("%Y%m%d")
    poll = pacs_poller(pacs.config())
    watcher = StableStudyWatcher(0, lambda uid: None)
    watcher.observe_counts(poll())

    buffer = io.BytesIO()
    ct.save_as(buffer, enforce_file_format=True)
    assert requests.post(f"{pacs.rest_url}/instances", data=buffer.getvalue(), timeout=30).status_code == 200
    assert watcher.observe_counts(poll()) == [ct.StudyInstanceUID]
    assert watcher.due() == [ct.StudyInstanceUID]


# --- MPPS COMPLETED -> a publication job -> the job worker publishes (RAD-68 through this server's
# repository + registry) -> retrievable --------------------------------------------------------------

@pytest.fixture
def local_affinity_domain(settings, tmp_path, pacs, spool_dir):
    from xds_registry.patient_identity_feed.patients import add_or_update_patient

    settings.STORAGES = {**settings.STORAGES, "xds_documents": {
        "BACKEND": "xds_repository.storage.ContentAddressedStorage", "OPTIONS": {"location": str(tmp_path / "docs")}}}
    settings.XDS_REGISTRY_URL = ""
    settings.XDS_AFFINITY_DOMAIN_CODES = ""
    # The imaging source (RAD-69) reads the test PACS.
    settings.XDS_IMAGING_SOURCE_ID = NIST_LOCATION_UID
    settings.DICOM_AE_TITLE = pacs.ae_title
    settings.DICOM_PACS = {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": pacs.dicom_port}
    settings.DICOMWEB_URL = ""
    settings.DICOM_FETCH_METHOD = FetchMethod.C_GET.value
    settings.DICOM_SPOOL_DIR = str(spool_dir)
    add_or_update_patient(AFFINITY_PATIENT)
    set_mapping("IDS-DEPT002-a", AFFINITY_PATIENT)
    return settings


@pytest.mark.pacs
@pytest.mark.django_db(transaction=True)
def test_mpps_completed_publishes_the_study_and_its_images_are_retrievable(pacs, local_affinity_domain) -> None:
    dicom = pacs.config(FetchMethod.C_GET)
    listener = DicomListener(dicom, host="127.0.0.1", port=0,
                             on_mpps_completed=lambda studies, _uid: enqueue_publications(
                                 studies, trigger="mpps", max_attempts=3))
    host, port = listener.start()
    try:
        ae = make_ae("MODALITY")
        ae.add_requested_context("1.2.840.10008.3.1.2.3.3")  # Modality Performed Procedure Step SOP Class
        assoc = associate(ae, Peer(dicom.ae_title, host, port))
        mpps_uid = generate_uid()
        step = Dataset()
        step.PerformedProcedureStepStatus = "IN PROGRESS"
        item = Dataset()
        item.StudyInstanceUID = NIST_STUDY_UID
        step.ScheduledStepAttributesSequence = [item]
        assert assoc.send_n_create(step, "1.2.840.10008.3.1.2.3.3", mpps_uid)[0].Status == 0x0000
        assert not Publication.objects.exists()  # IN PROGRESS publishes nothing
        done = Dataset()
        done.PerformedProcedureStepStatus = "COMPLETED"
        assert assoc.send_n_set(done, "1.2.840.10008.3.1.2.3.3", mpps_uid)[0].Status == 0x0000
        assoc.release()
    finally:
        listener.stop()
    assert not Publication.objects.exists()  # queued, not yet published
    [job] = run_pending()
    assert job.state == Job.State.SUCCEEDED, job.last_error

    [publication] = Publication.objects.all()
    assert publication.status == Publication.Status.PUBLISHED, publication.errors
    assert publication.trigger == "mpps" and publication.study_instance_uid == NIST_STUDY_UID

    # The manifest is retrievable from the repository (ITI-43) ...
    body = retrieve_document_set_request([DocumentRequest(local_affinity_domain.XDS_REPOSITORY_UNIQUE_ID,
                                                          publication.kos_sop_instance_uid)])
    result = SoapClient("local:repository").call(Action.RetrieveDocumentSet, body)
    status, errors, documents = parse_retrieve_document_set_response(result.body)
    assert status == ResponseStatus.SUCCESS, errors
    kos = pydicom.dcmread(io.BytesIO(result.binary(documents[0].element).read_bytes()))

    # ... and every image it references from our Imaging Document Source (RAD-69).
    [evidence] = kos.CurrentRequestedProcedureEvidenceSequence
    request = RetrieveImagingDocumentSetRequest([StudyRequest(evidence.StudyInstanceUID, [
        SeriesRequest(series.SeriesInstanceUID, [
            DocumentRequest(series.RetrieveLocationUID, ref.ReferencedSOPInstanceUID)
            for ref in series.ReferencedSOPSequence])
        for series in evidence.ReferencedSeriesSequence])], [ExplicitVRLittleEndian])
    answer = SoapClient("local:imaging-source").call(Action.RetrieveImagingDocumentSet.value,
                                                     retrieve_imaging_document_set_request(request))
    status, errors, images = parse_retrieve_document_set_response(answer.body)
    assert status == ResponseStatus.SUCCESS, errors
    assert len(images) == 36
    first = pydicom.dcmread(io.BytesIO(answer.binary(images[0].element).read_bytes()))
    assert first.StudyInstanceUID == NIST_STUDY_UID
