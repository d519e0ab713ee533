"""Fault tests: ``manage.py xds_hl7_listener`` as its own process (as ``make run`` starts it), flooded and fed
hostile frames from outside; threads and memory read from /proc/<pid>/status.

Before issue 15 the listener ran one thread per connection with no cap: 100 held connections were +100
threads (measured 2 -> 102 on the same box).  Now a held connection costs a socket: the thread count is
constant (one I/O thread + HL7_WORKERS), connections beyond the caps are closed on accept, and a client
from another address is still answered at once.  All clients are on loopback: the flood comes from
127.0.0.1, the legitimate feed from 127.0.0.2 (the per-peer cap is per address).
"""

from __future__ import annotations

import os
import re
import select
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.faults.figures import report
from tests.faults.processes import BASE_DIR, LoggedProcess
from tests.xds_registry.registry_helpers import AUTHORITY
from xds_core.mllp import frame, read_frames
from xds_registry.patient_identity_feed.hl7v2 import parse_message

pytestmark = [pytest.mark.slow, pytest.mark.fault]


@pytest.fixture(scope="module")
def database(tmp_path_factory) -> str:
    """One migrated SQLite file for the listeners of this module (the feed needs the registry's tables)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('hl7') / 'feed.sqlite3'}"
    subprocess.run([sys.executable, str(BASE_DIR / "manage.py"), "migrate", "-v0"], cwd=BASE_DIR, check=True,
                   env={**os.environ, "DATABASE_URL": url}, timeout=180)
    return url


@contextmanager
def listener(database: str, **settings: int) -> Iterator[tuple[LoggedProcess, int]]:
    env = {**os.environ, "DATABASE_URL": database, "XDS_AFFINITY_DOMAIN_CODES": "", "PYTHONUNBUFFERED": "1",
           **{name: str(value) for name, value in settings.items()}}
    env.pop("XDS_ENV_FILE", None)
    process = LoggedProcess.start([sys.executable, str(BASE_DIR / "manage.py"), "xds_hl7_listener", "--port", "0"],
                                  env)
    try:
        port = int(re.search(r"127\.0\.0\.1:(\d+)", process.wait_for("ITI-8 MLLP listener on")).group(1))
        yield process, port
    finally:
        assert process.stop() in (0, -15), process.text


def status(pid: int) -> tuple[int, float]:
    """(threads, resident MiB) of a process."""
    text = Path(f"/proc/{pid}/status").read_text()
    return (int(re.search(r"^Threads:\s+(\d+)", text, re.M).group(1)),
            int(re.search(r"^VmRSS:\s+(\d+)", text, re.M).group(1)) / 1024)


class Peak:
    """Samples threads and RSS of ``pid`` every 20 ms until stopped: the peaks, not only the end state."""

    def __init__(self, pid: int) -> None:
        self.pid, self.threads, self.rss = pid, 0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            threads, rss = status(self.pid)
            self.threads, self.rss = max(self.threads, threads), max(self.rss, rss)

    def stop(self) -> Peak:
        self._stop.set()
        self._thread.join(2)
        return self


def connect(port: int, source: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))


def adt(control: str) -> bytes:
    return ("MSH|^~\\&|SRC|FAC|REG|AFF|20261127120000||ADT^A04^ADT_A01|" + control + "|P|2.5\r"
            f"PID|||F{control}^^^&{AUTHORITY}&ISO||Flood^Jane\r").encode()


def feed_from(port: int, source: str, control: str) -> tuple[str, float]:
    """One ADT^A04 from ``source``: (MSA-1, milliseconds from connect to ACK)."""
    started = time.monotonic()
    with connect(port, source) as sock:
        sock.sendall(frame(adt(control)))
        ack = parse_message(next(read_frames(sock)).decode())
    assert ack.field("MSA", 2) == control
    return ack.field("MSA", 1), (time.monotonic() - started) * 1000


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed ``sock`` (EOF or reset), None if it is still open after ``seconds``."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return None
    return time.monotonic() - started


def still_open(sock: socket.socket) -> bool:
    return not select.select([sock], [], [], 0)[0]


def test_a_flood_of_held_connections_costs_no_thread_and_a_legitimate_feed_is_still_answered(database):
    with listener(database, HL7_MAX_CONNECTIONS=128, HL7_MAX_CONNECTIONS_PER_PEER=100) as (process, port):
        pid = process.process.pid
        assert feed_from(port, "127.0.0.2", "WARM")[0] == "AA"
        threads_before, rss_before = status(pid)
        peak = Peak(pid)
        flood: list[socket.socket] = []
        try:
            for i in range(100):  # half sit idle, half leave a frame begun
                sock = connect(port, "127.0.0.1")
                if i % 2:
                    sock.sendall(b"\x0b" + adt(f"H{i}")[:1000])
                flood.append(sock)
            time.sleep(0.5)
            assert all(still_open(sock) for sock in flood)
            over_peer = [connect(port, "127.0.0.1") for _ in range(20)]
            refused_per_peer = sum(closed_within(sock, 3) is not None for sock in over_peer)
            acks = [feed_from(port, "127.0.0.2", f"L{i}") for i in range(5)]
            time.sleep(0.5)  # the listener has seen those five connections close
            over_total = [connect(port, "127.0.0.3") for _ in range(40)]
            time.sleep(0.5)
            refused_total = sum(not still_open(sock) for sock in over_total)
            held = sum(still_open(sock) for sock in flood + over_total)
        finally:
            peak.stop()
            for sock in flood + over_peer + over_total:
                sock.close()
        assert process.process.poll() is None
    ack_ms = [ms for _, ms in acks]
    report("mllp-flood", connections=100, held=held, refused_per_peer=refused_per_peer, refused_total=refused_total,
           threads_before=threads_before, threads_max=peak.threads,
           rss_growth_mb=round(peak.rss - rss_before, 1), ack_ms_p50=round(statistics.median(ack_ms), 1),
           ack_ms_max=round(max(ack_ms), 1))
    assert [code for code, _ in acks] == ["AA"] * 5
    assert statistics.median(ack_ms) < 1000, ack_ms
    assert refused_per_peer == 20 and refused_total == 12 and held == 128
    assert peak.threads <= threads_before  # no thread per connection: the pool was there before the flood
    assert peak.rss - rss_before < 30, (rss_before, peak.rss)
    assert "refused: limit of 100 connections per peer reached" in process.text
    assert "refused: limit of 128 connections in total reached" in process.text
    assert "Flood" not in process.text and "FH1^" not in process.text  # no patient data in the log


def test_hostile_frames_are_refused_and_slow_drips_dropped_with_memory_bounded(database):
    with listener(database, HL7_RATE_WINDOW=1, HL7_MIN_RATE=512, HL7_FRAME_DEADLINE=5,
                  HL7_IDLE_TIMEOUT=60) as (process, port):
        pid = process.process.pid
        assert feed_from(port, "127.0.0.2", "WARM")[0] == "AA"
        _, rss_before = status(pid)
        peak = Peak(pid)
        try:
            oversized = _oversized(port, with_msh=True, count=8) + _oversized(port, with_msh=False, count=8)
            with connect(port, "127.0.0.4") as sock:  # 200 garbage frames, each answered AR
                answers = read_frames(sock)
                for i in range(200):
                    sock.sendall(frame(bytes([i]) * (i * 50) + b"\xff\xfe"))
                    assert parse_message(next(answers).decode()).field("MSA", 1) == "AR"
            drips = [_drip(port, f"127.0.0.{10 + i}") for i in range(5)]
            stalled = connect(port, "127.0.0.20")
            stalled.sendall(b"\x0bMSH|^~\\&|")
            stall_s = closed_within(stalled, 10)
            stalled.close()
            drip_s = [drip.join() for drip in drips]
            code, ack_ms = feed_from(port, "127.0.0.2", "AFTER")
        finally:
            peak.stop()
        assert process.process.poll() is None
    report("mllp-hostile", oversized_frames=len(oversized), garbage_frames=200,
           oversized_answered_ar=sum(a == "AR" for a in oversized), drip_dropped_s_max=round(max(drip_s), 2),
           stall_dropped_s=round(stall_s or -1, 2), rss_growth_mb=round(peak.rss - rss_before, 1),
           ack_ms_after=round(ack_ms, 1))
    assert code == "AA"
    assert oversized == ["AR"] * 8 + [""] * 8  # AR where an MSH could be read, closed without answer otherwise
    assert stall_s is not None and stall_s < 5
    assert all(seconds < 6 for seconds in drip_s), drip_s  # window 1 s (slack for a loaded box)
    assert peak.rss - rss_before < 40, (rss_before, peak.rss)  # 16 frames of 2 MiB never held (x 1 MiB limit)
    assert process.text.count("MLLP frame longer than 1048576 bytes") == 16
    assert process.text.count("below 512 B/s over 1s") == 5


def _oversized(port: int, *, with_msh: bool, count: int) -> list[str]:
    """``count`` frames of 2 MiB (past the 1 MiB limit): MSA-1 of each answer ('' when none)."""
    body = (adt("BIG") if with_msh else b"\x00\x01") + b"z" * (2 * 1024 * 1024)
    codes = []
    for _ in range(count):
        with connect(port, "127.0.0.5") as sock:
            sender = threading.Thread(target=_send_quietly, args=(sock, frame(body)), daemon=True)
            sender.start()
            answer = b""
            try:
                while chunk := sock.recv(65536):
                    answer += chunk
            except ConnectionResetError:
                pass
            sender.join(10)
        codes.append(parse_message(next(iter(_frames(answer))).decode()).field("MSA", 1) if answer else "")
    return codes


def _frames(data: bytes) -> list[bytes]:
    left, right = socket.socketpair()
    with left, right:
        right.sendall(data)
        right.shutdown(socket.SHUT_WR)
        return list(read_frames(left))


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass  # the listener closes before it has all: the point


class _drip(threading.Thread):  # noqa: N801 - used as a function that runs in the background
    """A frame sent 10 bytes every 0.2 s (50 B/s, below the minimum rate) until the listener drops it."""

    def __init__(self, port: int, source: str) -> None:
        super().__init__(daemon=True)
        self.sock = connect(port, source)
        self.seconds = -1.0
        self.start()

    def run(self) -> None:
        started = time.monotonic()
        try:
            self.sock.sendall(b"\x0bMSH|^~\\&|")
            while time.monotonic() - started < 15:
                if not still_open(self.sock):
                    break
                self.sock.sendall(b"d" * 10)
                time.sleep(0.2)
            closed_within(self.sock, 5)
        except OSError:
            pass
        finally:
            self.seconds = time.monotonic() - started
            self.sock.close()

    def join(self, timeout: float | None = 20) -> float:  # type: ignore[override]
        super().join(timeout)
        return self.seconds
