"""manage.py xds_jobs_worker: runs due jobs, stops on SIGTERM after finishing the job in hand."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from jobs.api import enqueue
from jobs.models import Job

BASE_DIR = Path(__file__).resolve().parents[3]


@pytest.mark.django_db
def test_once_runs_the_due_jobs_and_exits(ran) -> None:
    enqueue("tests.record", {"n": 1})
    enqueue("tests.unreachable", {})
    enqueue("tests.record", {"n": 2}, delay=3600)
    out = StringIO()
    call_command("xds_jobs_worker", "--once", "--worker-id", "test-worker", stdout=out)
    assert ran == [{"n": 1}]
    assert sorted(Job.objects.values_list("state", flat=True)) == ["failed", "queued", "succeeded"]
    assert "jobs worker test-worker;" in out.getvalue()
    assert out.getvalue().rstrip().endswith("jobs worker stopped after 2 job(s)")


# The polling loop refreshes stale connections between jobs, as a long-lived process must: it runs in
# autocommit mode, not inside a test transaction.
@pytest.mark.django_db(transaction=True)
def test_max_jobs_stops_after_that_many(ran) -> None:
    for n in range(3):
        enqueue("tests.record", {"n": n})
    call_command("xds_jobs_worker", "--max-jobs", "2", stdout=StringIO())
    assert ran == [{"n": 0}, {"n": 1}]


def test_a_malformed_kind_option_is_refused() -> None:
    with pytest.raises(CommandError, match="dotted lower-case"):
        call_command("xds_jobs_worker", "--once", "--kind", "Not A Kind", stdout=StringIO())


def test_the_worker_process_finishes_the_job_in_hand_on_sigterm_and_takes_no_other(tmp_path) -> None:
    env = {**os.environ, "XDS_VAR_DIR": str(tmp_path), "DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.sqlite3'}",
           "LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1", "XDS_JOBS_POLL_INTERVAL": "1"}
    process = subprocess.Popen([sys.executable, "-m", "tests.jobs.worker_process", "2", "1.5", "--worker-id", "w9"],
                               cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(60, process.kill)
    watchdog.start()
    try:
        seen = []
        for line in process.stdout:
            seen.append(line)
            if line.startswith("handler started 0"):
                process.send_signal(signal.SIGTERM)  # while job 0 runs
                break
        output, _ = process.communicate(timeout=30)
    finally:
        watchdog.cancel()
    output = "".join(seen) + output
    assert process.returncode == 0, output
    assert "job kind=tests.slow id=1 state=succeeded attempt=1/8" in output
    assert "handler started 1" not in output
    assert "jobs worker stopped after 1 job(s)" in output
    assert "states 0=succeeded 1=queued" in output
