"""The node's own activity as audit events (atna.activity): Application Start / Stop of each service
(PS3.15 A.5.3.1), in this process and in real service processes stopped by SIGTERM, and the job worker
command recording its start; every message valid against the DICOM audit XSD.  (Logins and logouts:
tests/portal/test_audit_records.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from lxml import etree

from atna import activity
from tests.audit_messages import valid_messages
from tests.gunicorn_server import run_gunicorn
from xds_core import audit
from xds_core.audit_xml import schema_errors

BASE_DIR = Path(__file__).resolve().parent.parent.parent

#: A service process: Django set up, a sink appending each event's A.5 message (one per line) to a file,
#: then the body -- a real listener command, or a bare ``started`` with SIGTERM left at its default.
SERVICE = """
import os, sys, django
django.setup()
from xds_core import audit
from xds_core.audit_xml import AuditSource, to_xml
out = open(sys.argv[1], "ab", buffering=0)
audit.set_sink(lambda event: out.write(to_xml(event, AuditSource("test")) + b"\\n"))
{body}
"""


@pytest.fixture
def fresh_process_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """As in a new process: no service started yet; SIGTERM's handler put back after the test."""
    monkeypatch.setattr(activity, "_stops", {})
    handler = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, handler)


def _activity(events: list[audit.AuditEvent]) -> list[tuple[str, str]]:
    return [(e.event_types[0].display, e.participants[0].user_id) for e in events
            if e.event_id is audit.EventId.APPLICATION_ACTIVITY]


def test_a_service_records_its_start_once_and_its_stop_once(fresh_process_state: None, settings) -> None:  # type: ignore[no-untyped-def]
    settings.XDS_SITE_KEY = "hospital-a"
    with audit.capture() as events:
        stop = activity.started("dicom-listener")
        assert activity.started("dicom-listener") is stop  # a second call in the same process: nothing new
        stop()
        stop()
    app = "xdsi-dicom-listener:hospital-a"
    assert _activity(events) == [("Application Start", app), ("Application Stop", app)]
    start = events[0]
    assert start.participants[0].role is audit.ParticipantRole.APPLICATION
    assert start.participants[0].alternative_user_id == str(os.getpid())
    valid_messages(events)


def test_sigterm_left_at_its_default_becomes_an_ordinary_exit(fresh_process_state: None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    activity.started("web")
    assert signal.getsignal(signal.SIGTERM) is activity._terminate
    with pytest.raises(SystemExit) as ended:
        activity._terminate(signal.SIGTERM, None)
    assert ended.value.code == 128 + signal.SIGTERM


@pytest.mark.django_db
def test_the_job_worker_records_its_start(fresh_process_state: None, settings) -> None:  # type: ignore[no-untyped-def]
    settings.XDS_SITE_KEY = "hospital-b"
    with audit.capture() as events:
        call_command("xds_jobs_worker", "--once", "--max-jobs", "1", stdout=StringIO())
    assert ("Application Start", "xdsi-jobs-worker:hospital-b") in _activity(events)
    valid_messages(events)


def _run_until_sigterm(tmp_path: Path, body: str) -> tuple[int, list[etree._Element]]:
    """Start a service process, wait for its Application Start, SIGTERM it; its exit status and messages."""
    messages = tmp_path / "audit.xml-lines"
    messages.touch()
    env = {**os.environ, "PYTHONPATH": str(BASE_DIR), "DJANGO_SETTINGS_MODULE": "config.settings",
           "XDS_SITE_KEY": "hospital-a", "XDS_VAR_DIR": str(tmp_path / "var"),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    process = subprocess.Popen([sys.executable, "-c", SERVICE.format(body=textwrap.dedent(body)), str(messages)],
                               cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while b'csd-code="110120"' not in messages.read_bytes():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no Application Start within 30 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines = [line for line in messages.read_bytes().splitlines() if line]
    for line in lines:
        assert not schema_errors(line), line
    return code, [etree.fromstring(line) for line in lines]


def _kinds(roots: list[etree._Element]) -> list[tuple[str, str]]:
    return [(r.find("EventIdentification/EventTypeCode").get("originalText"),
             r.find("ActiveParticipant").get("UserID")) for r in roots]


@pytest.mark.slow
def test_the_hl7_listener_stopped_by_sigterm_records_its_start_and_stop(tmp_path: Path) -> None:
    code, roots = _run_until_sigterm(tmp_path, """
        from django.core.management import call_command
        call_command("xds_hl7_listener", "--port", "0")
    """)
    assert code == 0
    app = "xdsi-hl7-listener:hospital-a"
    assert _kinds(roots) == [("Application Start", app), ("Application Stop", app)]


@pytest.mark.slow
def test_a_service_that_leaves_sigterm_alone_still_records_its_stop(tmp_path: Path) -> None:
    code, roots = _run_until_sigterm(tmp_path, """
        import time
        from atna.activity import started
        started("jobs-worker")
        time.sleep(60)
    """)
    assert code == 128 + signal.SIGTERM  # ended by the signal, but through the interpreter's exit
    app = "xdsi-jobs-worker:hospital-a"
    assert _kinds(roots) == [("Application Start", app), ("Application Stop", app)]


@pytest.mark.slow
def test_each_web_worker_records_its_stop_when_gunicorn_stops(tmp_path: Path) -> None:
    """The worker class (config/http_worker.py) starts the service; gunicorn's SIGTERM ends each worker
    through the interpreter's exit, which records Application Stop.  (The test's audit hook is installed
    after the worker booted, so it sees the stop; a start is what ``started`` records, tested above.)"""
    audit_file = tmp_path / "audit.jsonl"
    env = {"XDS_VAR_DIR": str(tmp_path / "var"), "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
           "XDS_SITE_KEY": "hospital-a"}
    with run_gunicorn(env, spool=tmp_path / "spool", migrate=True, workers=2, threads=2, audit_file=audit_file):
        pass
    stops = [json.loads(line) for line in audit_file.read_text().splitlines()
             if json.loads(line)["event_types"] == ["110121"]]
    assert [s["participants"][0]["user_id"] for s in stops] == ["xdsi-web:hospital-a"] * 2
    assert len({s["participants"][0]["alternative_user_id"] for s in stops}) == 2  # one per worker process
