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


@contextmanager
def run_gunicorn(settings: dict[str, str], *, spool: Path, migrate: bool = False, workers: int = 2,
                 threads: int = 4) -> Iterator[Server]:
    """gunicorn as ``make run`` starts it (its worker class; ``workers`` processes x ``threads``), with
    ``settings`` over the environment."""
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
    gunicorn = Path(sys.executable).with_name("gunicorn")
    process = subprocess.Popen(
        [str(gunicorn), "config.wsgi:application", "--bind", "127.0.0.1:0", *worker_arguments(workers, threads),
         "--timeout", "120", "--graceful-timeout", "5",
         # gunicorn 27 opens a control socket at a fixed per-user path; a test
         # server must not collide with `make run` or a parallel test worker.
         "--no-control-socket"],
        cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log: list[str] = []
    threading.Thread(target=_pump, args=(process.stdout, log), daemon=True).start()
    url = None
    deadline = time.monotonic() + 60
    while url is None and time.monotonic() < deadline:
        for line in list(log):
            if match := re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", line):
                url = match.group(1)
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
            requests.get(f"{url}/xds/registry", timeout=30).raise_for_status()
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
