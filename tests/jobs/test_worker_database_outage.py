"""The job worker process outlives a PostgreSQL outage: it logs the outage once, backs off, and runs the next job
once the database is back (a private cluster: tests/faults/postgres.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.faults.figures import report
from tests.faults.postgres import PrivateCluster, postgres_cluster_fixture  # noqa: F401 - the fixture
from tests.faults.processes import BASE_DIR, LoggedProcess

pytestmark = [pytest.mark.slow, pytest.mark.fault]

SUCCEEDED = "job kind=tests.echo id={} state=succeeded"


def _enqueue(env: dict[str, str]) -> int:
    done = subprocess.run([sys.executable, "-m", "tests.jobs.echo_worker_process", "enqueue", "1"], cwd=BASE_DIR,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return int(done.stdout.split()[-1])


def test_the_worker_survives_a_database_outage_and_runs_the_next_job(postgres_cluster: PrivateCluster,
                                                                     tmp_path) -> None:
    pg = postgres_cluster
    env = {**os.environ, "DATABASE_URL": pg.database_url("xdsi_jobs_outage"), "XDS_VAR_DIR": str(tmp_path),
           "LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=BASE_DIR, env=env,
                   check=True, timeout=300)
    worker = LoggedProcess.start([sys.executable, "-m", "tests.jobs.echo_worker_process", "work",
                                  "--worker-id", "outage-worker", "--poll", "0.2"], env)
    try:
        worker.wait_for(SUCCEEDED.format(_enqueue(env)), timeout=60)

        down = worker.mark()  # before the stop: the worker may notice while the server is still shutting down
        pg.stop()
        # A claim fails at once (a persistent connection) or after the pool's timeout (XDS_DB_POOL_SIZE).
        line = worker.wait_for("database unavailable", since=down, timeout=60)
        assert "worker=outage-worker" in line and "retrying with backoff" in line
        # Several failed looks (and the pool's series of connection attempts ending): still one line, the
        # process alive.
        time.sleep(12)
        assert worker.process.poll() is None, worker.text
        assert worker.count("database unavailable", since=down) == 1, worker.text
        assert "Traceback" not in worker.text
        assert "psycopg.pool" not in worker.text  # its per-attempt warnings are kept out (settings.LOGGING)

        pg.start()
        back = time.monotonic()
        job = _enqueue(env)
        worker.wait_for(SUCCEEDED.format(job), since=down, timeout=60)
        recovered = time.monotonic() - back
        assert "database available again after" in worker.wait_for("database available again", since=down)
    finally:
        code = worker.stop()
    assert code == 0, worker.text
    assert worker.lines[-1].endswith("jobs worker stopped after 2 job(s)"), worker.text
    report("jobs-worker-database-outage", outage_lines=1, seconds_to_next_job_after_restart=recovered)
