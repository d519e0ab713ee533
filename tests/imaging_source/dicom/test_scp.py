"""Our DICOM listener over real DICOM on loopback: C-STORE from dcmtk, C-ECHO, MPPS N-CREATE / N-SET."""

from __future__ import annotations

import os
import socket
import subprocess
import threading

import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom.sop_class import ModalityPerformedProcedureStep

from imaging_source.dicom.ae import associate, make_ae
from imaging_source.dicom.config import DicomConfig, Peer
from imaging_source.dicom.scp import DicomListener, ReceivedInstance

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
    server = DicomListener(config, state_dir=tmp_path / "state", on_instance=received.append,
                           on_mpps_completed=on_completed, host="127.0.0.1", port=0)
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
    assert listener.done.wait(10)
    assert listener.completed == [([study], uid)]


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
    listener.wait_idle()
    assert listener.completed == []  # DISCONTINUED publishes nothing


def test_an_mpps_survives_a_listener_restart(tmp_path) -> None:
    config = DicomConfig("XDSI_IDS", Peer("ORTHANC", "127.0.0.1", 1), spool_dir=tmp_path / "spool")
    completed: list[tuple[list[str], str]] = []
    first = DicomListener(config, state_dir=tmp_path / "state", host="127.0.0.1", port=0)
    host, port = first.start()
    first.peer = Peer("XDSI_IDS", host, port)
    uid, study = generate_uid(), generate_uid()
    assoc = _mpps(first)
    assert assoc.send_n_create(_in_progress(study), MPPS, uid)[0].Status == 0x0000
    assoc.release()
    first.stop()

    second = DicomListener(config, state_dir=tmp_path / "state", host="127.0.0.1", port=0,
                           on_mpps_completed=lambda s, u: completed.append((s, u)))
    host, port = second.start()
    second.peer = Peer("XDSI_IDS", host, port)
    try:
        assoc = _mpps(second)
        assert assoc.send_n_set(_status("COMPLETED"), MPPS, uid)[0].Status == 0x0000
        assoc.release()
        second.wait_idle()
    finally:
        second.stop()
    assert completed == [([study], uid)]


def test_our_sockets_have_tcp_nodelay(listener) -> None:
    """env-notes §3.3: pynetdicom does not set TCP_NODELAY; our AE factory does, on both ends."""
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
