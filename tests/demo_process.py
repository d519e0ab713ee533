"""``make run``'s two-hospital demo affinity domain, started for end-to-end tests.

The real supervisor (``python -m config.supervisor``, XDS_DEMO=true) starts the domain node and both hospitals
(their Orthancs, imaging sources, DICOM listeners, job workers) on free loopback ports, with its own VAR dir
and, on the PostgreSQL pass, its own databases (``xdsi_<label>_<pid>_<site>``, dropped after).  Used by
tests/config/test_two_hospital_demo.py and the browser tests (tests/portal/browser).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

BASE_DIR = Path(__file__).resolve().parent.parent
START_TIMEOUT = 180
#: The supervisor's port variables (config.supervisor / demo.sites): each gets a free port.
PORT_NAMES = ["PORT", "HL7_PORT", "HOSPITAL_A_HTTP_PORT", "HOSPITAL_A_DICOM_PORT", "HOSPITAL_A_PACS_DICOM_PORT",
              "HOSPITAL_A_PACS_HTTP_PORT", "HOSPITAL_B_HTTP_PORT", "HOSPITAL_B_DICOM_PORT",
              "HOSPITAL_B_PACS_DICOM_PORT", "HOSPITAL_B_PACS_HTTP_PORT"]


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports free now (all bound at once, so no two are the same)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class Demo:
    """A running two-hospital demo: its supervisor process, environment, ports and output so far."""

    process: subprocess.Popen[str]
    env: dict[str, str]
    ports: dict[str, int]
    output: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "\n".join(self.output)

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output[-lines:])

    def line(self, needle: str) -> str:
        """The one command line of the banner (``XDS_ENV_FILE=... python manage.py ...``) containing ``needle``."""
        (line,) = [x for x in self.output if needle in x and "XDS_ENV_FILE=" in x]
        return line.strip()

    def run_printed(self, line: str) -> subprocess.CompletedProcess[str]:
        """Run a line the supervisor printed (``VAR=value python manage.py ...``) as a shell would."""
        words = shlex.split(line)
        assignments = {}
        while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
            key, _, value = words.pop(0).partition("=")
            assignments[key] = value
        return subprocess.run(words, cwd=BASE_DIR, env={**self.env, **assignments}, capture_output=True, text=True,
                              timeout=300)

    def portal(self, hospital: str) -> str:
        """A hospital node's portal (its web server), ``hospital`` "A" or "B"."""
        return f"http://127.0.0.1:{self.ports[f'HOSPITAL_{hospital}_HTTP_PORT']}"

    def orthanc(self, hospital: str) -> str:
        """A hospital's Orthanc (REST API and DICOMweb root), ``hospital`` "A" or "B"."""
        return f"http://127.0.0.1:{self.ports[f'HOSPITAL_{hospital}_PACS_HTTP_PORT']}"


def delete_study(orthanc: str, study_uid: str) -> None:
    """Remove a study from an Orthanc (its REST API), so that an import must bring it back."""
    for hit in requests.post(f"{orthanc}/tools/lookup", data=study_uid, timeout=30).json():
        if hit["Type"] == "Study":
            requests.delete(f"{orthanc}/studies/{hit['ID']}", timeout=60).raise_for_status()


def _pump(stream: IO[str], sink: list[str]) -> None:
    for line in iter(stream.readline, ""):
        sink.append(line.rstrip("\n"))


def _database_url(label: str) -> tuple[str, str | None]:
    """On the PostgreSQL pass the sites' databases are the test's own (``<name>_<site>``, dropped after)."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        return "", None
    name = f"xdsi_{label}_{os.getpid()}"
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}")), name


def _drop_databases(url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    admin = urlunsplit(urlsplit(url)._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as connection:
        for (db,) in connection.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{name}_%",)):
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))


def _stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM to the supervisor's process group (as Ctrl-C), SIGKILL if it is still there a minute later."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@contextmanager
def running_demo(var_dir: Path, label: str, extra_env: dict[str, str] | None = None) -> Iterator[Demo]:
    """The demo affinity domain on free ports until the block ends.

    ``label`` names the test's PostgreSQL databases and secret key; ``extra_env`` goes over the supervisor's
    environment (e.g. ``DEMO_PASSWORD``).  The caller's XDS_*, DICOM*, HOSPITAL_*, DATABASE_URL and PORT are
    not passed on: the demo gets its own.
    """
    ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
    database_url, database_name = _database_url(label)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("XDS_", "DICOM", "HOSPITAL_")) and key not in ("DATABASE_URL", "PORT")}
    env.update({key: str(value) for key, value in ports.items()})
    env.update({"XDS_DEMO": "true", "XDS_VAR_DIR": str(var_dir), "WEB_CONCURRENCY": "2",
                "SECRET_KEY": f"{label}-demo-test-key-" + "x" * 30, "PYTHONUNBUFFERED": "1", **(extra_env or {})})
    if database_url:
        env["DATABASE_URL"] = database_url
    process = subprocess.Popen([sys.executable, "-m", "config.supervisor"], cwd=BASE_DIR, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    demo = Demo(process, env, ports)
    threading.Thread(target=_pump, args=(process.stdout, demo.output), daemon=True).start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not any("demo affinity domain serving" in line for line in demo.output):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the demo did not start:\n" + demo.tail())
            time.sleep(0.2)
        time.sleep(0.5)  # the rest of the banner
        yield demo
    finally:
        _stop(process)
        if database_url and database_name:
            _drop_databases(database_url, database_name)
