"""Real server processes for the repository tests: gunicorn on an ephemeral loopback port.

Each server gets its own SQLite file and document directory under a temporary
directory (so the test process can inspect them after killing the server),
and listens on a socket the test binds to port 0 and hands over as
``fd://N``: no port race, no fixed port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from config.http_worker import worker_arguments

BASE_DIR = Path(__file__).resolve().parents[2]


def server_env(workdir: Path, **overrides: str) -> dict[str, str]:
    workdir.mkdir(parents=True, exist_ok=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("XDS_", "DATABASE_URL"))}
    env.update({
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "PYTHONPATH": str(BASE_DIR),
        "SECRET_KEY": "repository-tests",
        "XDS_VAR_DIR": str(workdir),
        "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
        "XDS_DOCUMENT_DIR": str(workdir / "documents"),
        "LOG_LEVEL": "WARNING",
    })
    env.update(overrides)
    return env


def manage(env: dict[str, str], *args: str, check: bool = True,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, str(BASE_DIR / "manage.py"), *args], env=env, cwd=BASE_DIR,
                            capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"manage.py {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


@dataclass
class Server:
    url: str
    env: dict[str, str]
    workdir: Path
    process: subprocess.Popen[bytes]
    log: Path
    killed: bool = field(default=False)

    @property
    def db_path(self) -> Path:
        return self.workdir / "db.sqlite3"

    @property
    def document_dir(self) -> Path:
        return self.workdir / "documents"

    def worker_pids(self) -> list[int]:
        """The gunicorn master's children (the workers)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()] if children.exists() else []

    def _signal(self, signum: int) -> None:
        try:
            os.killpg(self.process.pid, signum)  # the group this test started (start_new_session)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the master and its workers: no cleanup code runs anywhere."""
        if not self.killed:
            self._signal(signal.SIGKILL)
            self.process.wait(10)
            self.killed = True

    def stop(self) -> None:
        if not self.killed:
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.process.wait(10)
            self.killed = True


def start_server(workdir: Path, *, workers: int = 1, session: requests.Session | None = None, setup: str = "",
                 audit_file: Path | None = None, **settings: str) -> Server:
    """Migrate a fresh database and start gunicorn serving the whole suite.

    ``XDS_TLS`` in ``settings`` (not ``off``): the server speaks HTTPS (the worker reads XDS_TLS* itself) and
    ``session`` -- a client certificate the server's identity table knows -- checks that it answers.
    ``setup``: Python for ``manage.py shell`` after ``migrate`` (identity rows...).  ``audit_file``: the
    server's audit events as JSON lines (tests/gunicorn_audit_capture.py).
    """
    env = server_env(workdir, **settings)
    manage(env, "migrate", "--noinput")
    if setup:
        manage(env, "shell", "-c", setup)
    capture: list[str] = []
    if audit_file is not None:
        env["XDS_TEST_AUDIT_FILE"] = str(audit_file)
        capture = ["--config", str(BASE_DIR / "tests" / "gunicorn_audit_capture.py")]
    scheme = "https" if env.get("XDS_TLS", "off") != "off" else "http"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    log = workdir / "gunicorn.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"fd://{listener.fileno()}",
             *worker_arguments(workers, 4), "--timeout", "600", "--no-control-socket", *capture],
            env=env, cwd=BASE_DIR, stdout=out, stderr=subprocess.STDOUT, pass_fds=(listener.fileno(),),
            start_new_session=True)
    listener.close()
    server = Server(f"{scheme}://127.0.0.1:{port}", env, workdir, process, log)
    try:
        _wait_until_ready(server, session)
    except BaseException:
        server.stop()  # never leave a server behind
        raise
    return server


def _wait_until_ready(server: Server, session: requests.Session | None = None) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            answer = (session or requests).get(server.url + "/xds/repository", timeout=10)
            if answer.status_code == 200 and server.worker_pids():
                return
        except (requests.ConnectionError, requests.Timeout):
            pass
        if server.process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"gunicorn did not start:\n{server.log.read_text(errors='replace')}")
        time.sleep(0.1)
