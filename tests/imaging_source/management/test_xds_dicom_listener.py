"""manage.py xds_dicom_listener as its own process: answers DICOM, logs one line per transaction, stops on SIGTERM;
an MPPS COMPLETED queues a publication job that manage.py xds_jobs_worker, another process, runs."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from imaging_source.dicom.ae import associate, make_ae
from imaging_source.dicom.config import Peer
from xds_core.log_ref import log_ref

BASE_DIR = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_listener_process_answers_echo_and_store_and_stops_cleanly(tmp_path) -> None:
    port = _free_port()
    env = {**os.environ, "XDS_VAR_DIR": str(tmp_path), "LOG_LEVEL": "INFO", "DICOM_STABLE_DELAY": "0",
           "PYTHONUNBUFFERED": "1", "TCP_NODELAY": "1", "DATABASE_URL": f"sqlite:///{tmp_path / 'node.sqlite3'}"}
    # The listener admits peers through the node identity table (issue 13): its database is migrated first, as
    # `make run` does.
    subprocess.run([sys.executable, str(BASE_DIR / "manage.py"), "migrate", "-v0"], cwd=BASE_DIR, env=env,
                   check=True, timeout=300)
    process = subprocess.Popen([sys.executable, str(BASE_DIR / "manage.py"), "xds_dicom_listener", "--port", str(port)],
                               cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        echo = subprocess.run(["echoscu", "-aet", "MODALITY", "-aec", "XDSI_IDS", "127.0.0.1", str(port)],
                              env=env, capture_output=True, text=True, timeout=30)
        store = subprocess.run(["storescu", "-aet", "MODALITY", "-aec", "XDSI_IDS", "127.0.0.1", str(port),
                                get_testdata_file("CT_small.dcm")], env=env, capture_output=True, text=True,
                               timeout=30)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert echo.returncode == 0, echo.stderr
    assert store.returncode == 0, store.stderr
    assert process.returncode == 0, output
    assert "dicom C-ECHO from=MODALITY@127.0.0.1 status=0x0000" in output
    # The SOP Instance UID as its log reference (issue 13: no UIDs in operational logs).
    sop = log_ref("1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322")
    assert f"dicom C-STORE from=MODALITY@127.0.0.1 kind=incoming sop={sop} status=0x0000" in output
    assert "dicom listener stopped" in output


def test_mpps_completed_sent_to_the_listener_process_queues_a_job_the_worker_process_runs(tmp_path) -> None:
    """The two processes `make run` starts, meeting only in the database (a fresh SQLite file here)."""
    port = _free_port()
    database = tmp_path / "xds.sqlite3"
    env = {**os.environ, "XDS_VAR_DIR": str(tmp_path), "DATABASE_URL": f"sqlite:///{database}", "LOG_LEVEL": "INFO",
           "DICOM_STABLE_DELAY": "0", "PYTHONUNBUFFERED": "1", "TCP_NODELAY": "1",
           "DICOM_PACS": f"NOBODY@127.0.0.1:{_free_port()}", "DICOMWEB_URL": ""}  # no PACS answers
    manage = [sys.executable, str(BASE_DIR / "manage.py")]
    subprocess.run([*manage, "migrate", "-v", "0"], cwd=BASE_DIR, env=env, check=True, timeout=120)
    process = subprocess.Popen([*manage, "xds_dicom_listener", "--port", str(port)], cwd=BASE_DIR, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    study, mpps_uid = generate_uid(), generate_uid()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        ae = make_ae("MODALITY")
        ae.add_requested_context("1.2.840.10008.3.1.2.3.3")  # Modality Performed Procedure Step SOP Class
        assoc = associate(ae, Peer("XDSI_IDS", "127.0.0.1", port))
        step, item = Dataset(), Dataset()
        step.PerformedProcedureStepStatus = "IN PROGRESS"
        item.StudyInstanceUID = study
        step.ScheduledStepAttributesSequence = [item]
        created = assoc.send_n_create(step, "1.2.840.10008.3.1.2.3.3", mpps_uid)[0].Status
        done = Dataset()
        done.PerformedProcedureStepStatus = "COMPLETED"
        completed = assoc.send_n_set(done, "1.2.840.10008.3.1.2.3.3", mpps_uid)[0].Status
        assoc.release()
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert (created, completed) == (0x0000, 0x0000), output
    query = "select kind, key, state, attempts, payload from jobs_job"
    with sqlite3.connect(database) as db:
        assert db.execute(query).fetchall() == [
            ("imaging_source.publish_study", study, "queued", 0, f'{{"study_instance_uid": "{study}", '
                                                                 '"trigger": "mpps"}')]

    worker = subprocess.run([*manage, "xds_jobs_worker", "--once"], cwd=BASE_DIR, env=env, capture_output=True,
                            text=True, timeout=120)
    assert worker.returncode == 0, worker.stdout + worker.stderr
    assert "job kind=imaging_source.publish_study id=1 state=failed attempt=1/8" in worker.stderr
    with sqlite3.connect(database) as db:
        [(state, attempts)] = db.execute("select state, attempts from jobs_job").fetchall()
    assert (state, attempts) == ("failed", 1)  # no PACS answered: retried after its backoff
