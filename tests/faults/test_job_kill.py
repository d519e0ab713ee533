"""The job queue under SIGKILL: a publication (RAD-68) and a prior import (prefetch) are neither lost nor doubled.

Everything is real and runs as in ``make run``: gunicorn serving the registry, the repository and the Imaging
Document Source (tests/xds_repository/servers.py), ``manage.py xds_jobs_worker`` processes, two private Orthancs
(tests/faults/orthanc.py: the source PACS the studies are published from, and the PACS of the importing site),
and a private PostgreSQL cluster when the suite runs on PostgreSQL (else one SQLite file all processes share).
Between the job worker and the repository (and the imaging source it imports from) sits a TCP gate that can
hold a request, hold an answer, or pass it slowly, so the worker can be killed (-9) at the worst moments:

1. publication, the RAD-68 held at the gate (the repository never saw it): the worker is killed; a new worker
   (short lease) runs the job again;
2. publication, the RAD-68 registered (ITI-18 shows the manifest) but its answer held at the gate: the worker is
   killed before it records the outcome; a new worker runs the job again once the lease expires;
2b. (no kill, during 2's lease) the RAD-68 registered and the connection broken before the answer came back;
3. prefetch (meanwhile, at the importing site: its own worker, PACS and AE title), ``consumer.import_prior`` killed
   while the prior's instances are being stored into its PACS; a new worker runs the job again.

With the Imaging Document Source as it was (a PENDING row abandoned after a timeout, then a new KOS built), 2 and
2b published a second Approved manifest for the study: the first one had been registered.

Afterwards: every job SUCCEEDED; one Approved manifest per study in the registry (ITI-18 FindDocuments), each the
study's one PUBLISHED Publication row; one PriorImport, IMPORTED with every instance present, and the PACS holding
exactly the prior's instances.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid

from tests.faults.figures import report
from tests.faults.orthanc import PrivateOrthanc
from tests.faults.postgres import NoPostgres, private_cluster
from tests.faults.processes import LoggedProcess
from tests.imaging_source.conftest import AFFINITY_PATIENT, IDS_DIR, NIST_LOCATION_UID
from tests.imaging_source.pacs_fixtures import NIST_STUDY_UID
from tests.xds_repository.servers import BASE_DIR, Server, manage, start_server
from xds_core.ebxml import serialize as ebxml_serialize
from xds_core.ebxml.parse import parse_adhoc_query_response
from xds_core.soap.client import SoapClient
from xds_core.vocabulary import Action, ReturnType, StoredQuery

pytestmark = [pytest.mark.slow, pytest.mark.fault]

REPOSITORY_ID = "1.3.6.1.4.1.21367.13.70.201"
SITE_B_LOCATION = "1.3.6.1.4.1.21367.13.80.112"  # the importing site's own imaging source
SOURCE_AE, IMPORT_AE = "XDSI_IDS", "XDSI_CONS"
LOCAL_AUTHORITY = "1.2.826.0.1.3680043.10.1042"
LEASE = 10  # XDS_JOBS_LEASE's minimum: a killed worker's job is claimed again 10 s after it was claimed
WAIT = 90.0  # longest wait for one step on a loaded machine
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"


# --------------------------------------------------------------------------- the gate

class Gate:
    """A loopback TCP relay to ``upstream`` whose ``mode`` decides what happens to each new connection:

    - ``pass``: both ways, as they come;
    - ``hold-request``: the request is read and kept; nothing reaches upstream (``request_seen`` is set);
    - ``hold-answer``: the request reaches upstream, its answer is read and kept from the client
      (``answer_seen`` is set when the first bytes come back: upstream has finished the transaction);
    - ``drop-answer``: the same, then the client's connection is closed (a broken connection, a proxy's
      timeout: the client never learns what happened);
    - ``slow``: the answer is passed on at ``rate`` bytes/s.
    """

    def __init__(self, upstream_port: int, *, rate: int = 400_000) -> None:
        self.upstream_port = upstream_port
        self.rate = rate
        self.mode = "pass"
        self.request_seen = threading.Event()
        self.answer_seen = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self._sockets.append(client)
            threading.Thread(target=self._relay, args=(client, self.mode), daemon=True).start()

    def _relay(self, client: socket.socket, mode: str) -> None:
        if mode == "hold-request":
            try:
                while client.recv(65536):
                    self.request_seen.set()
            except OSError:
                pass
            client.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        self._sockets.append(upstream)
        threading.Thread(target=self._pipe, args=(client, upstream, None), daemon=True).start()
        self._pipe(upstream, client, mode)

    def _pipe(self, source: socket.socket, target: socket.socket, answer_mode: str | None) -> None:
        try:
            while data := source.recv(16384):
                if answer_mode == "hold-answer":
                    self.answer_seen.set()
                    continue
                if answer_mode == "drop-answer":
                    self.answer_seen.set()
                    break  # both connections closed below: the client sees the connection end
                if answer_mode == "slow":
                    time.sleep(len(data) / self.rate)
                target.sendall(data)
        except OSError:
            pass
        finally:
            # hold-answer: the client waits on, for an answer that never comes (until it is killed).
            for s in (source,) if answer_mode == "hold-answer" else (source, target):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()
        for s in self._sockets:
            s.close()


# --------------------------------------------------------------------------- the site's database, seen from outside

class Database:
    """SQL on the database the server and workers share (PostgreSQL, or the SQLite file); ``?`` placeholders."""

    def __init__(self, url: str) -> None:
        self.url = url

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        if self.url.startswith("postgres"):
            import psycopg

            with psycopg.connect(self.url) as db:
                return list(db.execute(sql.replace("?", "%s"), params).fetchall())
        with sqlite3.connect(self.url.removeprefix("sqlite:///"), timeout=30) as db:
            return list(db.execute(sql, params).fetchall())

    def job(self, kind: str, key: str) -> tuple[str, int] | None:
        found = self.rows("SELECT state, attempts FROM jobs_job WHERE kind = ? AND key = ? ORDER BY id", kind, key)
        assert len(found) <= 1, f"{len(found)} jobs of {kind} for one key"
        return (found[0][0], found[0][1]) if found else None

    def wait_for_job(self, kind: str, key: str, state: str, timeout: float = WAIT) -> tuple[str, int]:
        deadline = time.monotonic() + timeout
        while (job := self.job(kind, key)) is None or job[0] != state:
            assert time.monotonic() < deadline, f"job {kind} is {job}, not {state}, after {timeout:.0f}s"
            time.sleep(0.3)
        return job

    def publications(self, study_uid: str) -> list[tuple[str, str]]:
        return [(status, kos) for status, kos in self.rows(
            "SELECT status, kos_sop_instance_uid FROM imaging_source_publication WHERE study_instance_uid = ?",
            study_uid)]


@contextmanager
def site_database(tmp_path: Path) -> Iterator[str]:
    """A private PostgreSQL cluster when the suite runs on PostgreSQL, else a SQLite file."""
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        yield f"sqlite:///{tmp_path / 'site.sqlite3'}"
        return
    try:
        cluster = private_cluster()
        pg = cluster.__enter__()
    except NoPostgres as exc:
        pytest.skip(str(exc))
    try:
        yield pg.database_url("xdsi_fault_job_kill")
    finally:
        cluster.__exit__(None, None, None)


# --------------------------------------------------------------------------- helpers

def _copy_of_nist(target: Path) -> str:
    """Four instances of the NIST study under new Study/Series/SOP Instance UIDs (same patient): another study."""
    target.mkdir()
    study_uid = generate_uid()
    series: dict[str, str] = {}
    for n, path in enumerate(sorted((IDS_DIR / "images").glob("*.dcm"))[:4]):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series.setdefault(ds.SeriesInstanceUID, generate_uid())
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyDate = ds.SeriesDate = "20100101"  # older than the original: never the prior prefetch chooses
        ds.save_as(target / f"{n:03d}.dcm", enforce_file_format=True)
    return study_uid


def _manifests(server: Server) -> list[str]:
    """uniqueIds of the patient's Approved DocumentEntries (ITI-18 FindDocuments)."""
    query = ebxml_serialize.adhoc_query_request(StoredQuery.FindDocuments, [
        ("$XDSDocumentEntryPatientId", [f"'{AFFINITY_PATIENT}'"]),
        ("$XDSDocumentEntryStatus", [f"('{APPROVED}')"])], return_type=ReturnType.LeafClass)
    result = SoapClient(server.url + "/xds/registry", timeout=60).call(Action.RegistryStoredQuery, query)
    assert result.fault is None, result.fault
    return sorted(entry.unique_id for entry in parse_adhoc_query_response(result.body).objects)


def _instances(pacs: PrivateOrthanc, study_uid: str) -> int:
    found = requests.post(f"{pacs.rest_url}/tools/find", json={
        "Level": "Instance", "Query": {"StudyInstanceUID": study_uid}}, timeout=30).json()
    return len(found)


def _shell(server: Server, code: str) -> None:
    manage(server.env, "shell", "-c", code)


class Workers:
    """``manage.py xds_jobs_worker`` processes with one environment; killed (-9) or stopped by the test."""

    def __init__(self, env: dict[str, str], *, kinds: tuple[str, ...]) -> None:
        self.env = env
        self.kinds = kinds
        self.started: list[LoggedProcess] = []
        self.kills = 0

    def start(self) -> LoggedProcess:
        kinds = [arg for kind in self.kinds for arg in ("--kind", kind)]
        worker = LoggedProcess.start(
            [sys.executable, str(BASE_DIR / "manage.py"), "xds_jobs_worker", "--poll", "1", *kinds], self.env)
        self.started.append(worker)
        return worker

    def kill(self, worker: LoggedProcess) -> None:
        assert worker.process.poll() is None, "the worker ended before it could be killed:\n" + worker.text
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(10)
        self.kills += 1

    def stop_all(self) -> None:
        for worker in self.started:
            worker.stop()


def _wait(event: threading.Event, what: str, worker: LoggedProcess) -> None:
    assert event.wait(WAIT), f"{what} not seen:\n{worker.text[-3000:]}"


# --------------------------------------------------------------------------- the test

PUBLISH, PREFETCH, IMPORT = "imaging_source.publish_study", "consumer.prefetch_priors", "consumer.import_prior"


def test_a_killed_job_worker_neither_loses_nor_doubles_a_publication_or_an_import(tmp_path: Path) -> None:
    started = time.monotonic()
    with ExitStack() as stack:
        source = PrivateOrthanc(tmp_path / "source-pacs", xdsi_aet=SOURCE_AE)
        destination = PrivateOrthanc(tmp_path / "import-pacs", xdsi_aet=IMPORT_AE)
        starting = [threading.Thread(target=pacs.start) for pacs in (source, destination)]
        for pacs, thread in zip((source, destination), starting, strict=True):
            stack.callback(pacs.stop)
            thread.start()
        second_uid = _copy_of_nist(tmp_path / "second")
        third_uid = _copy_of_nist(tmp_path / "third")
        database_url = stack.enter_context(site_database(tmp_path))
        db = Database(database_url)
        for thread in starting:
            thread.join()
        source.load(IDS_DIR / "images", tmp_path / "second", tmp_path / "third")

        server = start_server(
            tmp_path / "node", workers=2, DATABASE_URL=database_url, XDS_REPOSITORY_UNIQUE_ID=REPOSITORY_ID,
            XDS_IMAGING_SOURCE_ID=NIST_LOCATION_UID, DICOM_AE_TITLE=SOURCE_AE, DICOM_PACS=source.dicom_pacs_setting,
            DICOMWEB_URL=source.dicomweb_url, DICOM_FETCH_METHOD="wado-rs", XDS_AFFINITY_DOMAIN_CODES="",
            XDS_JOBS_LEASE=str(LEASE), XDS_JOBS_BACKOFF_BASE="1", XDS_JOBS_BACKOFF_CAP="2",
            XDS_JOBS_POLL_INTERVAL="1", XDS_IMAGING_PENDING_TIMEOUT="5", XDS_PREFETCH_MATCH="any",
            XDS_PREFETCH_LOOKBACK_DAYS="36500", XDS_PREFETCH_MAX_STUDIES="1",
            XDS_SITE_CONSUMER_IDENTITY="XDSI_CONSUMER@SITE_B")
        stack.callback(server.stop)
        port = int(server.url.rsplit(":", 1)[1])
        gate, slow_gate = Gate(port), Gate(port)  # before the repository; before the imaging source (RAD-69)
        stack.callback(gate.close)
        stack.callback(slow_gate.close)
        publishers = Workers({**server.env, "XDS_REPOSITORY_URL": gate.url("/xds/repository")}, kinds=(PUBLISH,))
        stack.callback(publishers.stop_all)
        # The importing site (its own PACS, AE title and imaging source id), reading the other site's imaging source
        # through the slow gate.
        importers = Workers({**server.env, "DICOM_PACS": destination.dicom_pacs_setting, "DICOM_AE_TITLE": IMPORT_AE,
                             "DICOMWEB_URL": destination.dicomweb_url, "XDS_IMAGING_SOURCE_ID": SITE_B_LOCATION},
                            kinds=(PREFETCH, IMPORT))
        stack.callback(importers.stop_all)
        _shell(server, "from xds_registry.patient_identity_feed.patients import add_or_update_patient; "
                       "from imaging_source.patient_mapping import set_mapping; "
                       "from imaging_source.publication_jobs import enqueue_publication; "
                       "from consumer.models import Endpoint, EndpointKind; "
                       f"add_or_update_patient({AFFINITY_PATIENT!r}); "
                       f"set_mapping('IDS-DEPT002-a', {AFFINITY_PATIENT!r}); "
                       "Endpoint.objects.create(kind=EndpointKind.IMAGING_SOURCE, "
                       f"unique_id={NIST_LOCATION_UID!r}, url={slow_gate.url('/xds/imaging-source')!r}); "
                       f"enqueue_publication({NIST_STUDY_UID!r}, trigger='stable', max_attempts=5)")

        # 1. Killed while the RAD-68 is on its way: the repository never saw it.
        gate.mode = "hold-request"
        first = publishers.start()
        _wait(gate.request_seen, "the RAD-68 request", first)
        [(status, held_uid)] = db.publications(NIST_STUDY_UID)
        assert status == "pending"
        publishers.kill(first)
        killed_at = time.monotonic()
        assert _manifests(server) == []
        gate.mode = "pass"
        publishers.start()
        db.wait_for_job(PUBLISH, NIST_STUDY_UID, "succeeded")
        recovered_unsent = time.monotonic() - killed_at
        publishers.stop_all()
        assert db.publications(NIST_STUDY_UID) == [("published", held_uid)]
        assert _manifests(server) == [held_uid]

        # 2. Killed after the registry accepted the RAD-68, before the worker heard (and recorded) it;
        # 2b. (meanwhile, no kill) the registry accepted the RAD-68 and the connection broke before the answer;
        # 3. the importing site's prefetch imports the prior published in 1 (the copies are older studies: the
        #    most recent is the one) into its own PACS, and is killed while the instances are being stored.
        gate.mode = "hold-answer"
        slow_gate.mode = "slow"
        _shell(server, "from imaging_source.publication_jobs import enqueue_publication; from jobs.api import enqueue; "
                       f"enqueue_publication({second_uid!r}, trigger='stable', max_attempts=5); "
                       f"enqueue_publication({third_uid!r}, trigger='stable', max_attempts=12); "
                       f"enqueue({PREFETCH!r}, {{'trigger': '1.2.3.4.5', 'local_patient_id': 'HOSPB-7', "
                       f"'local_issuer': {LOCAL_AUTHORITY!r}, 'affinity_patient_id': {AFFINITY_PATIENT!r}, "
                       "'event_codes': []}, key='1.2.3.4.5')")
        third = publishers.start()  # claims the second study first (queued first)
        importer = importers.start()
        _wait(gate.answer_seen, "the repository's answer", third)
        [(status, sent_uid)] = db.publications(second_uid)
        assert status == "pending" and sorted(_manifests(server)) == sorted([held_uid, sent_uid])
        publishers.kill(third)
        killed_registered_at = time.monotonic()
        gate.answer_seen.clear()
        gate.mode = "drop-answer"
        fourth = publishers.start()  # the second study's job is leased by the dead worker: it claims the third
        _wait(gate.answer_seen, "the repository's answer", fourth)
        dropped_at = time.monotonic()
        gate.mode = "pass"

        deadline = time.monotonic() + WAIT
        running: list[tuple[Any, ...]] = []
        while not running or not 0 < _instances(destination, running[0][1]) < 36:
            assert time.monotonic() < deadline, "the import did not begin:\n" + importer.text[-3000:]
            time.sleep(0.1)
            running = [(key, _first_study(studies)) for key, studies in db.rows(
                "SELECT j.key, p.study_instance_uids FROM jobs_job j JOIN consumer_priorimport p "
                "ON p.manifest_unique_id = j.key WHERE j.kind = ? AND j.state = 'running'", IMPORT)]
        [(manifest_uid, prior_study)] = running
        importers.kill(importer)
        present_at_kill = _instances(destination, prior_study)
        killed_import_at = time.monotonic()
        slow_gate.mode = "pass"
        importers.start()

        db.wait_for_job(PUBLISH, third_uid, "succeeded")
        recovered_dropped = time.monotonic() - dropped_at
        db.wait_for_job(PUBLISH, second_uid, "succeeded")
        recovered_registered = time.monotonic() - killed_registered_at
        db.wait_for_job(IMPORT, manifest_uid, "succeeded")
        recovered_import = time.monotonic() - killed_import_at
        publishers.stop_all()
        importers.stop_all()

        assert db.publications(second_uid) == [("published", sent_uid)]
        [(_, dropped_uid)] = db.publications(third_uid)
        assert db.publications(third_uid) == [("published", dropped_uid)]
        assert sorted(_manifests(server)) == sorted([held_uid, sent_uid, dropped_uid]), "a manifest was doubled"
        publication_jobs = {key: (state, attempts) for key, state, attempts in db.rows(
            "SELECT key, state, attempts FROM jobs_job WHERE kind = ?", PUBLISH)}
        assert publication_jobs.pop(third_uid)[0] == "succeeded"
        assert publication_jobs == {NIST_STUDY_UID: ("succeeded", 2), second_uid: ("succeeded", 2)}

        assert prior_study == NIST_STUDY_UID
        prior_imports = db.rows("SELECT manifest_unique_id, state, present, requested FROM consumer_priorimport")
        assert prior_imports == [(manifest_uid, "imported", 36, 36)]
        assert db.job(IMPORT, manifest_uid) == ("succeeded", 2)
        assert db.rows("SELECT state FROM jobs_job WHERE kind = ?", PREFETCH) == [("succeeded",)]
        assert _instances(destination, prior_study) == 36
        assert requests.get(f"{destination.rest_url}/statistics", timeout=30).json()["CountInstances"] == 36

        lost = doubled = 0  # asserted above: every job succeeded, one manifest per study, one import
        report("job-kill", kills=publishers.kills + importers.kills, jobs=len(publication_jobs) + 3, lost=lost,
               doubled=doubled, manifests=len(_manifests(server)), imported=36, present_at_kill=present_at_kill,
               lease_s=LEASE, recover_unsent_s=round(recovered_unsent, 1),
               recover_registered_s=round(recovered_registered, 1), recover_dropped_s=round(recovered_dropped, 1),
               recover_import_s=round(recovered_import, 1), seconds=round(time.monotonic() - started, 1))


def _first_study(value: Any) -> str:
    import json

    studies = json.loads(value) if isinstance(value, str) else value
    return str(studies[0]) if studies else ""
