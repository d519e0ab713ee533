"""Hostile peers that hold a server's connections without doing anything useful, for the flood tests.

- :class:`SlowHttpClients`: raw TCP clients on a web port, each with a request it never finishes, dripping
  one byte every ``interval`` seconds (a "slowloris" on the headers, or a request body announced with a
  large ``Content-Length`` and sent at a trickle, RFC 9112 §6.2).  They notice when the server gives up on
  them (EOF or reset), which is what a server with inactivity / minimum-rate rules eventually does, and
  (while asked to) reconnect, so the flood keeps its strength.
- :class:`IdleAssociations`: DICOM associations that are negotiated (PS3.8 §7.1, A-ASSOCIATE) and then
  carry no DIMSE message at all, all from one calling AE title, held by another process.
- :func:`dicom_listener`: ``manage.py xds_dicom_listener`` as its own process on a free port, as
  ``make run`` starts it.
- :func:`cpu_seconds`: CPU time used so far by processes (to show what a flood costs the server).

All of them are real network peers (no mocks) with bounded socket timeouts, so a test that uses them
reports a failure instead of hanging.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from imaging_source.dicom.config import Peer

BASE_DIR = Path(__file__).resolve().parents[2]


class SlowKind(StrEnum):
    """What a slow client leaves unfinished."""

    BODY = "body"        # complete headers announcing Content-Length, then the body at a trickle
    HEADERS = "headers"  # the request line, then a header field that never ends


@dataclass
class SlowClient:
    kind: SlowKind
    sock: socket.socket
    opened_at: float
    sent: int = 0
    #: When the server closed (EOF / reset / refused a send); None while it still holds the connection.
    dropped_after: float | None = None
    #: The first bytes the server answered with, if any (e.g. ``HTTP/1.1 408``).
    answer: bytes = b""


@dataclass
class SlowHttpClients:
    """``body + headers`` connections to ``host:port`` that never complete their POST to ``path``.

    While :attr:`replace` is true, a client the server drops is replaced by a new one of the same kind at the
    next drip, as a determined attacker would: the flood stays at full strength for as long as it is wanted.
    """

    host: str
    port: int
    body: int = 40
    headers: int = 10
    path: str = "/xds/repository"
    declared_length: int = 100_000
    interval: float = 2.0
    replace: bool = True
    #: Every client opened, the dropped ones included (each keeps when and how the server dropped it).
    clients: list[SlowClient] = field(default_factory=list)
    connect_failures: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def open(self) -> None:
        for index in range(self.body + self.headers):
            self._connect(SlowKind.BODY if index < self.body else SlowKind.HEADERS)
        self._thread = threading.Thread(target=self._drip, name="slow-http-clients", daemon=True)
        self._thread.start()

    def _connect(self, kind: SlowKind) -> None:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=10)
            sock.settimeout(5)
            sock.sendall(self._head(kind))
        except OSError:
            self.connect_failures += 1
            return
        self.clients.append(SlowClient(kind, sock, time.monotonic()))

    def _head(self, kind: SlowKind) -> bytes:
        line = f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if kind is SlowKind.HEADERS:
            return (line + "Content-Type: application/soap+xml\r\nX-Slow: ").encode()
        return (line + "Content-Type: application/soap+xml; charset=UTF-8\r\n"
                f"Content-Length: {self.declared_length}\r\n\r\n").encode()

    def _drip(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                for client in list(self.clients):
                    if client.dropped_after is None:
                        self._poke(client, send=True)
                        if client.dropped_after is not None and self.replace:
                            client.sock.close()
                            self._connect(client.kind)

    def _poke(self, client: SlowClient, *, send: bool) -> None:
        """Notice a server that gave up (EOF, reset, an answer), else (``send``) drip one more byte."""
        try:
            readable, _, _ = select.select([client.sock], [], [], 0)
            if readable:
                data = client.sock.recv(4096)
                if not data:
                    raise ConnectionResetError("EOF")
                client.answer = (client.answer + data)[:64]
            if send and client.sent < self.declared_length - 1:  # never complete the body
                client.sock.send(b"a" if client.kind is SlowKind.HEADERS else b" ")
                client.sent += 1
        except OSError:
            client.dropped_after = time.monotonic() - client.opened_at

    def connected(self) -> list[SlowClient]:
        """The clients the server still holds (it has neither closed nor reset them)."""
        with self._lock:
            for client in self.clients:
                if client.dropped_after is None:
                    self._poke(client, send=False)
            return [client for client in self.clients if client.dropped_after is None]

    def dropped(self) -> list[SlowClient]:
        with self._lock:
            return [client for client in self.clients if client.dropped_after is not None]

    def answers(self) -> set[str]:
        """The status lines the server answered slow clients with (first line, shortened)."""
        with self._lock:
            return {c.answer.split(b"\r\n", 1)[0].decode("latin-1")[:40] for c in self.clients if c.answer}

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        with self._lock:
            for client in self.clients:
                client.sock.close()


class IdleAssociations:
    """``count`` associations from ``calling_ae`` to ``peer`` that stay open and silent (held by another
    process, :mod:`tests.faults.idle_associations`)."""

    def __init__(self, peer: Peer, calling_ae: str, count: int = 20) -> None:
        self.peer, self.calling_ae, self.count = peer, calling_ae, count
        self.opened = self.refused = 0
        self._process: subprocess.Popen[str] | None = None

    def open(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.idle_associations", self.peer.host, str(self.peer.port),
             self.peer.ae_title, self.calling_ae, str(self.count)],
            cwd=BASE_DIR, env={**os.environ, "PYTHONPATH": str(BASE_DIR)}, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        answer = self._ask(None, timeout=120)  # twenty negotiations, each bounded by its ACSE timeout
        self.opened, self.refused = int(answer["held"]), int(answer["refused"])

    def established(self) -> int:
        """How many of them the listener still keeps."""
        return int(self._ask("count")["held"])

    def _ask(self, command: str | None, *, timeout: float = 30) -> dict[str, str]:
        process = self._process
        assert process is not None and process.stdin is not None and process.stdout is not None
        if command is not None:
            process.stdin.write(command + "\n")
            process.stdin.flush()
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        line = process.stdout.readline() if ready else ""
        if not line:
            raise AssertionError(f"the idle-association holder did not answer {command or 'its start'}")
        return dict(item.split("=", 1) for item in line.split())

    def close(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        try:
            assert process.stdin is not None
            process.stdin.close()  # end of input: it aborts its associations and exits
            process.wait(15)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@dataclass
class ListenerProcess:
    peer: Peer
    process: subprocess.Popen[str]
    log: list[str]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _pump(stream: Any, sink: list[str]) -> None:
    for line in iter(stream.readline, ""):
        sink.append(line.rstrip("\n"))


@contextmanager
def dicom_listener(settings: dict[str, str], *, ae_title: str = "XDSI_IDS") -> Iterator[ListenerProcess]:
    """``manage.py xds_dicom_listener`` on a free loopback port, with ``settings`` over the environment."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(BASE_DIR), "DJANGO_SETTINGS_MODULE": "config.settings",
           "PYTHONUNBUFFERED": "1", "DICOM_AE_TITLE": ae_title, "DICOM_PORT": str(port), "DICOM_HOST": "127.0.0.1",
           "DICOM_STABLE_DELAY": "0", "DICOMWEB_URL": "", **settings}
    # The listener admits peers through the node identity table (issue 13): its database is migrated, as make run does.
    subprocess.run([sys.executable, str(BASE_DIR / "manage.py"), "migrate", "-v0"], cwd=BASE_DIR, env=env, check=True,
                   timeout=300)
    process = subprocess.Popen([sys.executable, str(BASE_DIR / "manage.py"), "xds_dicom_listener", "--port", str(port)],
                               cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    log: list[str] = []
    threading.Thread(target=_pump, args=(process.stdout, log), daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        while not any(line.startswith("dicom listener ") for line in list(log)):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("the DICOM listener did not start:\n" + "\n".join(log))
            time.sleep(0.1)
        yield ListenerProcess(Peer(ae_title, "127.0.0.1", port), process, log)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes ``pids`` have used so far (proc(5) ``stat`` fields 14, 15)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # a process that ended in between
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (e.g. a gunicorn master's workers)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []
