"""A real gunicorn (the web worker of `make run`, config/http_worker.py) serving config.wsgi on an ephemeral
loopback port, for end-to-end tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from config.http_worker import worker_arguments

BASE_DIR = Path(__file__).resolve().parent.parent


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    spool: Path
    log: list[str] = field(default_factory=list)

    def endpoint(self, name: str) -> str:
        return f"{self.url}/xds/{name}"

    def transaction_lines(self) -> list[str]:
        return [line for line in list(self.log) if " xds transaction=" in line]


def _pump(stream, sink: list[str]) -> None:  # noqa: ANN001
    for line in iter(stream.readline, ""):
        sink.append(line.rstrip("\n"))


#: A gunicorn config file whose worker hook writes every audit event of the server to XDS_TEST_AUDIT_FILE.
AUDIT_CAPTURE_CONFIG = BASE_DIR / "tests" / "gunicorn_audit_capture.py"


@contextmanager
def run_gunicorn(settings: dict[str, str], *, spool: Path, migrate: bool = False, workers: int = 2,
                 threads: int = 4, session: requests.Session | None = None, setup: str = "",
                 audit_file: Path | None = None) -> Iterator[Server]:
    """gunicorn as ``make run`` starts it (its worker class; ``workers`` processes x ``threads``), with
    ``settings`` over the environment.

    ``XDS_TLS`` in ``settings`` (not ``off``): the worker serves HTTPS (config/http_worker.py reads XDS_TLS*
    itself) and the server's URL is ``https://``; ``session`` (with a client certificate the server's
    identity table knows) is then what checks that the server answers.  ``setup``: Python run by
    ``manage.py shell`` after ``migrate`` (e.g. rows of the node identity table).  ``audit_file``: every
    audit event of the server is appended there as a JSON line (:mod:`tests.gunicorn_audit_capture`).
    """
    env = {
        **os.environ,
        "PYTHONPATH": str(BASE_DIR),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "SECRET_KEY": "end-to-end-test-key-not-secret-" + "x" * 20,
        "DEBUG": "false",
        "LOG_LEVEL": "INFO",
        **settings,
    }
    if migrate:
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=BASE_DIR, env=env, check=True,
                       capture_output=True, timeout=300)
    if setup:
        subprocess.run([sys.executable, "manage.py", "shell", "-c", setup], cwd=BASE_DIR, env=env, check=True,
                       capture_output=True, timeout=120)
    capture: list[str] = []
    if audit_file is not None:
        env["XDS_TEST_AUDIT_FILE"] = str(audit_file)
        capture = ["--config", str(AUDIT_CAPTURE_CONFIG)]
    tls = env.get("XDS_TLS", "off") != "off"
    gunicorn = Path(sys.executable).with_name("gunicorn")
    process = subprocess.Popen(
        [str(gunicorn), "config.wsgi:application", "--bind", "127.0.0.1:0", *worker_arguments(workers, threads),
         "--timeout", "120", "--graceful-timeout", "5",
         # gunicorn 27 opens a control socket at a fixed per-user path; a test
         # server must not collide with `make run` or a parallel test worker.
         "--no-control-socket", *capture],
        cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log: list[str] = []
    threading.Thread(target=_pump, args=(process.stdout, log), daemon=True).start()
    url = None
    deadline = time.monotonic() + 60
    while url is None and time.monotonic() < deadline:
        for line in list(log):
            if match := re.search(r"Listening at: http://(127\.0\.0\.1:\d+)", line):
                # gunicorn names its own scheme; TLS is the worker's (XDS_TLS), so the URL is https then.
                url = f"{'https' if tls else 'http'}://{match.group(1)}"
        if process.poll() is not None:
            break
        time.sleep(0.05)
    if url is None:
        process.kill()
        pytest.fail("gunicorn did not start:\n" + "\n".join(log))
    # Wait until a worker answers (booting Django can be slow on a busy machine).
    deadline = time.monotonic() + 120
    while True:
        try:
            (session or requests).get(f"{url}/xds/registry", timeout=30).raise_for_status()
            break
        except requests.RequestException:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail("gunicorn workers did not answer:\n" + "\n".join(log))
            time.sleep(0.2)
    try:
        yield Server(url, process, spool, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
