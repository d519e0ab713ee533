"""After a PostgreSQL restart every long-running service does its next unit of work (issue 15, dependencies).

One private cluster (tests/faults/postgres.py) serves a real gunicorn, the job worker, the ITI-8 MLLP listener
and the DICOM listener, each its own process as `make run` starts them.  Each does one unit of work (so it holds
a database connection), then PostgreSQL is restarted twice: ``pg_ctl stop -m fast`` + start, and ``kill -9`` of
the postmaster + start (crash recovery).  After each, the *first* attempt of every service must succeed - no
retry by the client:

- web: a burst of ITI-18 FindDocuments, as many as the server has threads, every one answered with a Success
  AdhocQueryResponse (each thread's persistent connection is health-checked before reuse: CONN_HEALTH_CHECKS);
- job worker: a job queued after the restart runs (the worker logged the outage once and backed off);
- ITI-8: an ADT A01 gets AA, over a connection held open across the restart and over a new one;
- DICOM: an MPPS N-CREATE gets 0x0000, over an association held open across the restart and a new one.

Figures: the seconds each service took for that first unit of work after the database was back.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from imaging_source.dicom.ae import associate, make_ae
from imaging_source.dicom.config import Peer
from tests.faults.figures import report
from tests.faults.postgres import PrivateCluster, free_port, postgres_cluster_fixture  # noqa: F401 - the fixture
from tests.faults.processes import BASE_DIR, LoggedProcess
from tests.gunicorn_server import Server, run_gunicorn
from tests.test_end_to_end_http import stored_query_body
from tests.xds_registry.patient_identity_feed.test_mllp import adt
from tests.xds_registry.registry_helpers import AUTHORITY
from xds_core import mllp, ns
from xds_core.ns import q
from xds_core.soap.client import SoapClient
from xds_core.vocabulary import Action
from xds_registry.patient_identity_feed.hl7v2 import parse_message

pytestmark = [pytest.mark.slow, pytest.mark.fault]

#: PS3.4 F.7: Modality Performed Procedure Step SOP Class.
MPPS_SOP_CLASS = "1.2.840.10008.3.1.2.3.3"
#: ebRS 3.0: the status of an AdhocQueryResponse that found (or found nothing) without error.
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
#: gunicorn threads of the test server (tests/gunicorn_server.py: 2 workers x 4 threads): the burst is larger.
WEB_BURST = 12


class Services:
    """The four services against the private cluster, and one unit of work of each."""

    web: Server

    def __init__(self, env: dict[str, str], hl7_port: int, dicom_port: int) -> None:
        """Start the three processes (they boot while gunicorn does); :meth:`ready` waits for them."""
        self.env = env
        self.hl7_port, self.dicom_port = hl7_port, dicom_port
        manage = [sys.executable, str(BASE_DIR / "manage.py")]
        self.worker = LoggedProcess.start([sys.executable, "-m", "tests.jobs.echo_worker_process", "work",
                                           "--worker-id", "restart-worker", "--poll", "0.2"], env)
        self.hl7 = LoggedProcess.start([*manage, "xds_hl7_listener", "--port", str(hl7_port)], env)
        self.dicom = LoggedProcess.start([*manage, "xds_dicom_listener", "--port", str(dicom_port)], env)
        self.held_hl7: socket.socket | None = None
        self.held_frames: Any = None
        self.held_association: Any = None

    def ready(self, web: Server) -> None:
        self.web = web
        self.worker.wait_for("jobs worker restart-worker;", timeout=120)
        self.hl7.wait_for("ITI-8 MLLP listener on", timeout=120)
        self.dicom.wait_for("dicom listener", timeout=120)

    def processes(self) -> list[LoggedProcess]:
        return [self.worker, self.hl7, self.dicom]

    # --- web --------------------------------------------------------------------------------------------------
    def iti18_burst(self) -> float:
        """WEB_BURST concurrent ITI-18s; all must succeed.  Returns the seconds the burst took."""
        began = time.monotonic()

        def one(n: int) -> str:
            result = SoapClient(self.web.endpoint("registry"), timeout=60).call(
                Action.RegistryStoredQuery, stored_query_body(), message_id=f"urn:uuid:{uuid.uuid4()}")
            assert result.http_status == 200 and result.fault is None, (result.http_status, result.fault)
            assert result.body.tag == q(ns.QUERY, "AdhocQueryResponse")
            return str(result.body.get("status"))

        with ThreadPoolExecutor(WEB_BURST) as pool:
            statuses = list(pool.map(one, range(WEB_BURST)))
        assert statuses == [SUCCESS] * WEB_BURST, statuses
        return time.monotonic() - began

    # --- job worker -------------------------------------------------------------------------------------------
    def job(self) -> float:
        """Queue one job (another process, as a listener would) and wait until the worker ran it."""
        began = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "tests.jobs.echo_worker_process", "enqueue", "1"],
                              cwd=BASE_DIR, env=self.env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        job_id = int(done.stdout.split()[-1])
        self.worker.wait_for(f"job kind=tests.echo id={job_id} state=succeeded", timeout=90)
        return time.monotonic() - began

    # --- ITI-8 ------------------------------------------------------------------------------------------------
    def adt(self, *, held: bool) -> float:
        """One ADT A01; AA expected.  ``held``: over the connection kept open since the first call."""
        message = adt("A01", f"P{uuid.uuid4().hex[:10]}^^^IHEFACILITY&{AUTHORITY}&ISO",
                      control=f"R-{uuid.uuid4().hex[:8]}").encode("utf-8")
        began = time.monotonic()
        if held:
            if self.held_hl7 is None:
                self.held_hl7 = socket.create_connection(("127.0.0.1", self.hl7_port), timeout=60)
                self.held_frames = mllp.read_frames(self.held_hl7, max_message=mllp.MAX_MESSAGE)
            self.held_hl7.sendall(mllp.frame(message))
            answer = next(self.held_frames)
        else:
            answer = mllp.exchange("127.0.0.1", self.hl7_port, message, timeout=60)
        ack = parse_message(answer.decode("utf-8"))
        assert ack.field("MSA", 1) == "AA", answer
        return time.monotonic() - began

    # --- DICOM ------------------------------------------------------------------------------------------------
    def mpps(self, *, held: bool) -> float:
        """One MPPS N-CREATE (IN PROGRESS); 0x0000 expected.  ``held``: on the association kept open."""
        began = time.monotonic()
        if held and self.held_association is not None:
            assoc = self.held_association
        else:
            ae = make_ae("MODALITY")
            ae.add_requested_context(MPPS_SOP_CLASS)
            assoc = associate(ae, Peer("XDSI_IDS", "127.0.0.1", self.dicom_port))
            if held:
                self.held_association = assoc
        step, item = Dataset(), Dataset()
        step.PerformedProcedureStepStatus = "IN PROGRESS"
        item.StudyInstanceUID = generate_uid()
        step.ScheduledStepAttributesSequence = [item]
        try:
            status, _ = assoc.send_n_create(step, MPPS_SOP_CLASS, generate_uid())
        finally:
            if not held:
                assoc.release()
        assert status is not None and "Status" in status, "no N-CREATE answer (association aborted?)"
        assert status.Status == 0x0000, f"N-CREATE status 0x{status.Status:04X}\n" + "\n".join(self.dicom.lines[-30:])
        return time.monotonic() - began

    def every_unit(self) -> dict[str, float]:
        """One unit of work of each service, in turn: the first attempt of each must succeed."""
        return {"web_iti18_s": self.iti18_burst(), "jobs_s": self.job(), "hl7_held_s": self.adt(held=True),
                "hl7_new_s": self.adt(held=False), "dicom_held_s": self.mpps(held=True),
                "dicom_new_s": self.mpps(held=False)}

    def close(self) -> list[int]:
        """Stop the three processes; their exit statuses."""
        if self.held_hl7 is not None:
            self.held_hl7.close()
        if self.held_association is not None and self.held_association.is_established:
            self.held_association.release()
        return [process.stop() for process in self.processes()]


def test_every_service_does_its_next_unit_of_work_after_a_postgresql_restart(postgres_cluster: PrivateCluster,
                                                                             tmp_path: Path) -> None:
    pg = postgres_cluster
    spool = tmp_path / "spool"
    spool.mkdir()
    settings = {"DATABASE_URL": pg.database_url("xdsi_restart"), "XDS_VAR_DIR": str(tmp_path / "var"),
                "XDS_DOCUMENT_DIR": str(tmp_path / "documents"), "TMPDIR": str(spool)}
    env = {**os.environ, "PYTHONPATH": str(BASE_DIR), "DJANGO_SETTINGS_MODULE": "config.settings",
           "LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1", "DICOM_STABLE_DELAY": "0", "DICOM_STABLE_POLL": "0",
           "DICOM_PACS": f"NOBODY@127.0.0.1:{free_port()}", "DICOMWEB_URL": "", **settings}
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=BASE_DIR, env=env,
                   check=True, timeout=300)
    services = Services(env, free_port(), free_port())
    try:
        with run_gunicorn(settings, spool=spool) as web:
            services.ready(web)
            services.every_unit()  # each holds its connection now (the web: one per thread of the burst)
            figures: dict[str, float] = {}
            for how in ("restart", "kill9"):
                if how == "restart":
                    pg.restart()
                else:
                    pg.kill()
                    pg.start()
                for name, seconds in services.every_unit().items():
                    figures[f"{how}_{name}"] = seconds
                for process in services.processes():
                    assert process.process.poll() is None, process.text
            outages = services.worker.count("database unavailable")
            assert outages <= 2 and services.worker.count("database available again") == outages
            # No request failed inside the server either (Django logs a 500's traceback).
            assert not any("Traceback" in line or "Internal Server Error" in line for line in web.log), \
                "\n".join(web.log[-60:])
    finally:
        codes = services.close()
    # The worker and the DICOM listener stop cleanly on SIGTERM; the MLLP listener has no handler for it.
    assert codes[0] == 0 and codes[2] == 0 and codes[1] in (0, -15), "\n\n".join(p.text for p in services.processes())
    report("database-restart", restarts=2, worker_outage_lines=outages, web_burst=WEB_BURST,
           **{key: round(value, 3) for key, value in figures.items()})
