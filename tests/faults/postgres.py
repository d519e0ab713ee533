"""A private PostgreSQL cluster for fault tests: restarted and killed without touching the suite's server.

API::

    from tests.faults.postgres import PrivateCluster, private_cluster

    with private_cluster() as pg:              # initdb in a fresh temporary directory, started
        url = pg.database_url("xdsi_fault")    # postgres://postgres@127.0.0.1:<port>/xdsi_fault (created)
        pg.restart()                           # stop (-m fast: backends are ended) + start
        pg.kill()                              # kill -9 of the postmaster; its backends exit on their own
        pg.start()                             # after kill(): crash recovery, then accepting connections
        pg.stop(mode="immediate")              # pg_ctl stop modes: smart | fast | immediate
        pg.running                             # the postmaster accepts connections (pg_isready)
        pg.log_text()                          # the server log, for a failing test's message
    # on exit: stopped (immediate) and the directory removed

- ``postgres_cluster``: the same as a function-scoped pytest fixture (the cluster of one test).  A test
  module imports it as ``from tests.faults.postgres import postgres_cluster_fixture  # noqa: F401`` and takes
  a parameter ``postgres_cluster: PrivateCluster`` (the fixture's name differs from the imported one, so the
  parameter does not shadow an import).  It skips the test when no ``initdb`` is installed
  (``/usr/lib/postgresql/<ver>/bin``, or ``pg_config --bindir``); :func:`private_cluster` raises
  :class:`NoPostgres` instead.
- ``private_cluster(settings={"max_connections": "300"})``: extra ``postgresql.conf`` lines (strings).
- ``pg.port``, ``pg.host`` (127.0.0.1, TCP), ``pg.socket_dir`` (unix socket, in the cluster's directory),
  ``pg.postmaster_pid()``.

Authentication is ``trust`` for the superuser ``postgres`` on loopback only; the cluster listens on
127.0.0.1 on a free port.  PostgreSQL refuses to run as root: under root the directory is given to the
``postgres`` system user and every server command runs through ``runuser -u postgres``.  The directory is
made with :func:`tempfile.mkdtemp` rather than pytest's ``tmp_path`` (``/tmp/pytest-of-root`` is mode 0700,
which the postgres user could not enter).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

#: The system account PostgreSQL runs as when the tests run as root.
SERVER_USER = "postgres"
#: Start-up (or crash recovery) on a loaded two-core machine: generous.
START_TIMEOUT = 60


class NoPostgres(RuntimeError):
    """No PostgreSQL server binaries (initdb, pg_ctl) on this machine."""


def find_bindir() -> Path:
    """The directory holding initdb and pg_ctl: the newest ``/usr/lib/postgresql/<ver>/bin``, else
    ``pg_config --bindir``."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda path: int(Path(path).parent.parent.name) if Path(path).parent.parent.name.isdigit()
                        else 0)
    if candidates:
        return Path(candidates[-1]).parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = Path(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout.strip())
        if (bindir / "initdb").exists():
            return bindir
    raise NoPostgres("no initdb found (/usr/lib/postgresql/<ver>/bin or pg_config --bindir)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateCluster:
    """One initdb'd cluster in its own directory (see the module docstring)."""

    host = "127.0.0.1"

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        self.bindir = find_bindir()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            try:
                pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise NoPostgres(f"running as root and no {SERVER_USER!r} user to run PostgreSQL as") from None
            if shutil.which("runuser") is None:
                raise NoPostgres("running as root and no runuser to drop to the postgres user")
        self.root = Path(tempfile.mkdtemp(prefix="xdsi-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sockets"
        self.logfile = self.root / "server.log"
        self.port = free_port()
        try:
            self._init(settings or {})
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    def _init(self, settings: dict[str, str]) -> None:
        self.socket_dir.mkdir()
        if self.as_root:
            account = pwd.getpwnam(SERVER_USER)
            for path in (self.root, self.socket_dir):
                os.chown(path, account.pw_uid, account.pw_gid)
        self._server(["initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
                      "--no-sync", "--no-instructions"])
        lines = {
            "listen_addresses": "'127.0.0.1'", "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "max_connections": "200", "shared_buffers": "32MB",
            # Fast shutdowns and restarts; durability of committed transactions is untouched (fsync stays on).
            "checkpoint_timeout": "30s", "logging_collector": "off",
            **{key: str(value) for key, value in settings.items()},
        }
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# tests.faults.postgres\n" + "".join(f"{k} = {v}\n" for k, v in lines.items()))

    # --- running server commands as the right user ----------------------------------------------------------
    def _server(self, argv: list[str], *, check: bool = True, timeout: float = START_TIMEOUT,
                ) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if self.as_root:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if check and result.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({result.returncode}): {result.stdout}{result.stderr}\n"
                               f"{self.log_text()[-4000:]}")
        return result

    # --- life cycle -------------------------------------------------------------------------------------------
    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start and wait until connections are accepted (after a kill: once crash recovery is done).

        After :meth:`kill` the old backends may hold the shared memory for a moment ("pre-existing shared
        memory block is still in use"): the start is retried until ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while True:
            result = self._server(["pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-w", "-t",
                                   str(int(max(5, deadline - time.monotonic()))), "start"], check=False,
                                  timeout=timeout + 10)
            if result.returncode == 0 and self.running:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start: {result.stdout}{result.stderr}\n"
                                   f"{self.log_text()[-4000:]}")
            time.sleep(0.5)

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m mode``; a no-op when it is not running."""
        if self.postmaster_pid() is None:
            return
        self._server(["pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", str(START_TIMEOUT), "stop"],
                     check=False)

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def kill(self, timeout: float = 30) -> None:
        """``kill -9`` of the postmaster, then wait until it and its backends are gone."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (_alive(pid) or self._backends()):
            time.sleep(0.1)

    @property
    def running(self) -> bool:
        result = self._server(["pg_isready", "-h", self.host, "-p", str(self.port), "-t", "2"], check=False)
        return result.returncode == 0

    def postmaster_pid(self) -> int | None:
        """The postmaster's pid from ``postmaster.pid``, when that process is alive."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def _backends(self) -> list[int]:
        """Processes still running from this cluster's data directory (backends outliving a killed postmaster)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if str(self.data) in (entry / "cmdline").read_bytes().decode("utf-8", "replace") or \
                        os.readlink(entry / "cwd") == str(self.data):
                    if _alive(int(entry.name)):
                        found.append(int(entry.name))
            except OSError:
                continue
        return found

    # --- using it ---------------------------------------------------------------------------------------------
    def url(self, name: str = "postgres") -> str:
        return f"postgres://postgres@{self.host}:{self.port}/{name}"

    def database_url(self, name: str) -> str:
        """Create database ``name`` (if missing) and return its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as connection:
            if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def log_text(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def remove(self) -> None:
        """Stop (immediate) and delete the directory."""
        try:
            self.stop("immediate")
        finally:
            pid = self.postmaster_pid()
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
            shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@contextmanager
def private_cluster(settings: dict[str, str] | None = None) -> Iterator[PrivateCluster]:
    """A started private cluster for the ``with`` block; removed afterwards."""
    cluster = PrivateCluster(settings)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture(name="postgres_cluster")
def postgres_cluster_fixture() -> Iterator[PrivateCluster]:
    """A private cluster for one test; skips the test when PostgreSQL is not installed."""
    try:
        find_bindir()
    except NoPostgres as exc:
        pytest.skip(str(exc))
    with private_cluster() as cluster:
        yield cluster
