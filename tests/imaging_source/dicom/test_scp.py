"""Our DICOM listener over real DICOM on loopback: C-STORE from dcmtk, C-ECHO, MPPS N-CREATE / N-SET.

MPPS steps are database rows and the N-SET handler runs on pynetdicom's association thread, so the MPPS
tests use committed transactions (``django_db(transaction=True)``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading

import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import generate_uid
from pynetdicom.sop_class import ModalityPerformedProcedureStep

from imaging_source.dicom.ae import associate, make_ae
from imaging_source.dicom.config import DicomConfig, Peer
from imaging_source.dicom.scp import DicomListener, ReceivedInstance
from imaging_source.models import PerformedProcedureStep, Publication
from imaging_source.publication_jobs import PUBLISH_STUDY, enqueue_publications
from jobs.models import Job
from jobs.worker import run_pending

from ..conftest import AFFINITY_PATIENT
from ..pacs_fixtures import NIST_STUDY_UID

MPPS = ModalityPerformedProcedureStep


@pytest.fixture
def listener(tmp_path):
    received: list[ReceivedInstance] = []
    completed: list[tuple[list[str], str]] = []
    done = threading.Event()

    def on_completed(studies: list[str], mpps_uid: str) -> None:
        completed.append((studies, mpps_uid))
        done.set()

    config = DicomConfig("XDSI_IDS", Peer("ORTHANC", "127.0.0.1", 1), spool_dir=tmp_path / "spool")
    server = DicomListener(config, on_instance=received.append, on_mpps_completed=on_completed,
                           host="127.0.0.1", port=0)
    host, port = server.start()
    server.peer = Peer("XDSI_IDS", host, port)
    server.received, server.completed, server.done = received, completed, done
    yield server
    server.stop()


def _mpps(listener):
    ae = make_ae("MODALITY")
    ae.add_requested_context(MPPS)
    return associate(ae, listener.peer)


def _in_progress(study_uid: str) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepID = "PPS1"
    item = Dataset()
    item.StudyInstanceUID = study_uid
    item.AccessionNumber = "ACC1"
    ds.ScheduledStepAttributesSequence = [item]
    return ds


def _status(state: str) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = state
    return ds


def test_dcmtk_storescu_into_our_c_store_scp_records_the_instances(listener) -> None:
    files = [get_testdata_file("CT_small.dcm"), get_testdata_file("MR_small.dcm")]
    run = subprocess.run(["storescu", "-aet", "MODALITY", "-aec", "XDSI_IDS", listener.peer.host,
                          str(listener.peer.port), *files],
                         env={**os.environ, "TCP_NODELAY": "1"}, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert [r.sop_instance_uid for r in listener.received] == [
        "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322", "1.3.6.1.4.1.5962.1.1.4.1.1.20040826185059.5457"]
    assert listener.received[0].study_instance_uid == "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
    assert listener.received[0].calling_ae_title == "MODALITY"


def test_dcmtk_echoscu_is_answered_and_a_wrong_called_ae_is_rejected(listener) -> None:
    env = {**os.environ, "TCP_NODELAY": "1"}
    ok = subprocess.run(["echoscu", "-aet", "MODALITY", "-aec", "XDSI_IDS", listener.peer.host,
                         str(listener.peer.port)], env=env, capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(["echoscu", "-aet", "MODALITY", "-aec", "SOMEONE_ELSE", listener.peer.host,
                          str(listener.peer.port)], env=env, capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "Rejected" in bad.stderr


@pytest.mark.django_db(transaction=True)
def test_mpps_in_progress_then_completed_triggers_publication(listener) -> None:
    assoc = _mpps(listener)
    uid, study = generate_uid(), generate_uid()
    status, _ = assoc.send_n_create(_in_progress(study), MPPS, uid)
    assert status.Status == 0x0000
    assert not listener.done.is_set()
    status, _ = assoc.send_n_set(_status("IN PROGRESS"), MPPS, uid)
    assert status.Status == 0x0000
    status, _ = assoc.send_n_set(_status("COMPLETED"), MPPS, uid)
    assert status.Status == 0x0000
    assoc.release()
    assert listener.done.is_set()  # called within the N-SET, before its answer
    assert listener.completed == [([study], uid)]
    assert PerformedProcedureStep.objects.get(sop_instance_uid=uid).status == "COMPLETED"


@pytest.mark.django_db(transaction=True)
def test_mpps_errors_carry_the_ps3_4_statuses(listener) -> None:
    assoc = _mpps(listener)
    uid = generate_uid()
    assert assoc.send_n_create(_in_progress(generate_uid()), MPPS, uid)[0].Status == 0x0000
    assert assoc.send_n_create(_in_progress(generate_uid()), MPPS, uid)[0].Status == 0x0111  # duplicate
    completed_at_create = _in_progress(generate_uid())
    completed_at_create.PerformedProcedureStepStatus = "COMPLETED"
    assert assoc.send_n_create(completed_at_create, MPPS, generate_uid())[0].Status == 0x0106
    assert assoc.send_n_set(_status("COMPLETED"), MPPS, generate_uid())[0].Status == 0x0112  # no such instance
    assert assoc.send_n_set(_status("FINISHED"), MPPS, uid)[0].Status == 0x0106
    assert assoc.send_n_set(_status("DISCONTINUED"), MPPS, uid)[0].Status == 0x0000
    assert assoc.send_n_set(_status("COMPLETED"), MPPS, uid)[0].Status == 0xA710  # final state
    assoc.release()
    assert listener.completed == []  # DISCONTINUED publishes nothing


@pytest.mark.django_db(transaction=True)
@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # pydicom's, on the malformed UID we send
def test_an_n_create_whose_sop_instance_uid_is_not_a_uid_is_refused_and_nothing_is_written(listener, tmp_path,
                                                                                          monkeypatch) -> None:
    """The steps used to be files named by their UID: a path in the UID must not reach any file system."""
    monkeypatch.chdir(tmp_path)
    assoc = _mpps(listener)
    assert assoc.send_n_create(_in_progress(generate_uid()), MPPS, "../../mpps/evil")[0].Status == 0x0117
    assert assoc.send_n_set(_status("COMPLETED"), MPPS, "../../mpps/evil")[0].Status == 0x0117
    assoc.release()
    assert not PerformedProcedureStep.objects.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spool"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # pydicom's, on the malformed UID we send
def test_a_completed_step_naming_a_malformed_study_uid_is_refused_and_stays_in_progress(listener) -> None:
    assoc = _mpps(listener)
    uid = generate_uid()
    assert assoc.send_n_create(_in_progress("1.2.3.04"), MPPS, uid)[0].Status == 0x0000
    assert assoc.send_n_set(_status("COMPLETED"), MPPS, uid)[0].Status == 0x0106
    assoc.release()
    assert listener.completed == []
    assert PerformedProcedureStep.objects.get(sop_instance_uid=uid).status == "IN PROGRESS"


@pytest.mark.django_db(transaction=True)
def test_when_queueing_the_publication_fails_the_n_set_fails_and_the_step_can_be_completed_again(tmp_path) -> None:
    config = DicomConfig("XDSI_IDS", Peer("ORTHANC", "127.0.0.1", 1), spool_dir=tmp_path / "spool")
    calls: list[str] = []

    def flaky(studies: list[str], mpps_uid: str) -> None:
        calls.append(mpps_uid)
        if len(calls) == 1:
            raise RuntimeError("database unavailable")

    server = DicomListener(config, on_mpps_completed=flaky, host="127.0.0.1", port=0)
    host, port = server.start()
    server.peer = Peer("XDSI_IDS", host, port)
    try:
        assoc = _mpps(server)
        uid = generate_uid()
        assert assoc.send_n_create(_in_progress(generate_uid()), MPPS, uid)[0].Status == 0x0000
        assert assoc.send_n_set(_status("COMPLETED"), MPPS, uid)[0].Status == 0x0110  # processing failure
        assert PerformedProcedureStep.objects.get(sop_instance_uid=uid).status == "IN PROGRESS"
        assert assoc.send_n_set(_status("COMPLETED"), MPPS, uid)[0].Status == 0x0000  # the modality retries
        assoc.release()
    finally:
        server.stop()
    assert calls == [uid, uid]
    assert PerformedProcedureStep.objects.get(sop_instance_uid=uid).status == "COMPLETED"


@pytest.mark.django_db(transaction=True)
def test_an_mpps_survives_a_listener_restart(tmp_path) -> None:
    config = DicomConfig("XDSI_IDS", Peer("ORTHANC", "127.0.0.1", 1), spool_dir=tmp_path / "spool")
    completed: list[tuple[list[str], str]] = []
    first = DicomListener(config, host="127.0.0.1", port=0)
    host, port = first.start()
    first.peer = Peer("XDSI_IDS", host, port)
    uid, study = generate_uid(), generate_uid()
    assoc = _mpps(first)
    assert assoc.send_n_create(_in_progress(study), MPPS, uid)[0].Status == 0x0000
    assoc.release()
    first.stop()

    second = DicomListener(config, host="127.0.0.1", port=0,
                           on_mpps_completed=lambda s, u: completed.append((s, u)))
    host, port = second.start()
    second.peer = Peer("XDSI_IDS", host, port)
    try:
        assoc = _mpps(second)
        assert assoc.send_n_set(_status("COMPLETED"), MPPS, uid)[0].Status == 0x0000
        assoc.release()
    finally:
        second.stop()
    assert completed == [([study], uid)]


@pytest.mark.pacs
@pytest.mark.django_db(transaction=True)
def test_mpps_completed_queues_one_publication_job_that_the_worker_publishes(pacs, publishing) -> None:
    recording_repository = publishing
    # Wired as manage.py xds_dicom_listener wires it.
    server = DicomListener(pacs.config(), host="127.0.0.1", port=0,
                           on_mpps_completed=lambda studies, _uid: enqueue_publications(
                               studies, trigger="mpps", max_attempts=3))
    host, port = server.start()
    server.peer = Peer(pacs.ae_title, host, port)
    try:
        assoc = _mpps(server)
        for mpps_uid in (generate_uid(), generate_uid()):  # two steps of one study, e.g. two modalities
            assert assoc.send_n_create(_in_progress(NIST_STUDY_UID), MPPS, mpps_uid)[0].Status == 0x0000
            assert assoc.send_n_set(_status("COMPLETED"), MPPS, mpps_uid)[0].Status == 0x0000
        assoc.release()
    finally:
        server.stop()

    [job] = Job.objects.all()  # the second COMPLETED found the first one's job still queued
    assert (job.kind, job.key, job.state) == (PUBLISH_STUDY, NIST_STUDY_UID, Job.State.QUEUED)
    assert job.payload == {"study_instance_uid": NIST_STUDY_UID, "trigger": "mpps"}
    assert recording_repository.received == []  # the N-SET answers did not wait on RAD-68

    [ran] = run_pending()
    assert ran.pk == job.pk and ran.state == Job.State.SUCCEEDED, ran.last_error
    [received] = recording_repository.received
    assert received.pnr.submission.document_entries[0].patient_id == AFFINITY_PATIENT
    publication = Publication.objects.get()
    assert (publication.status, publication.trigger) == (Publication.Status.PUBLISHED, "mpps")
    assert publication.study_instance_uid == NIST_STUDY_UID


def test_our_sockets_have_tcp_nodelay(listener) -> None:
    """pynetdicom does not set TCP_NODELAY; our AE factory does, on both ends (measured on this project's
    machine: a C-STORE of 100 instances took 5.5 s without it, 1.4 s with it)."""
    accepted: list[int] = []
    original = type(listener.server).get_request

    def spy(self):
        sock, address = original(self)
        accepted.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        return sock, address

    type(listener.server).get_request = spy
    try:
        assoc = _mpps(listener)
        requestor = assoc.dul.socket.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assoc.release()
    finally:
        type(listener.server).get_request = original
    assert requestor == 1
    assert accepted and accepted[0] == 1


@pytest.mark.django_db(transaction=True)
def test_open_associations_do_not_keep_database_connections_between_their_requests(tmp_path) -> None:
    """Each DIMSE handler's database work gives its connection back when it ends (connection hygiene,
    issue 15).  On PostgreSQL the process shares a pool of XDS_DB_POOL_SIZE connections: an association
    thread that kept its connection until the association ended would starve every other thread once
    that many associations are open (each later request waiting out the pool's timeout, then failing)."""
    from django.conf import settings
    from django.db import connection

    pool = settings.DATABASES["default"].get("OPTIONS", {}).get("pool", {}).get("max_size", 4)
    associations = pool + 4
    counted: list[int] = []
    failures: list[str] = []

    def on_instance(received: ReceivedInstance) -> None:
        try:
            counted.append(Job.objects.count())  # database work on the association's thread
        except Exception as exc:  # noqa: BLE001 - reported by the test
            failures.append(f"{type(exc).__name__}: {exc}")

    config = DicomConfig("XDSI_IDS", Peer("ORTHANC", "127.0.0.1", 1), spool_dir=tmp_path / "spool")
    server = DicomListener(config, on_instance=on_instance, host="127.0.0.1", port=0)
    host, port = server.start()
    connection.close()  # the test's own connection goes back too
    ae = make_ae("MODALITY")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", ["1.2.840.10008.1.2.1"])
    held = []
    try:
        for _ in range(associations):  # all held open at once, each stores one instance
            assoc = associate(ae, Peer("XDSI_IDS", host, port))
            held.append(assoc)
            ds = Dataset()
            ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", generate_uid()
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "CT"
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
            assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        for assoc in held:
            assoc.release()
        server.stop()
    assert failures == []
    assert len(counted) == associations
