"""xds_core.wan_emulator: delay, bandwidth, integrity, half-close and shutdown measured with real sockets.

Everything runs on loopback: a small threaded TCP server (echo, or sink-then-report) behind a
:class:`DelayingProxy`; times are wall-clock, with lower bounds from the link model and generous upper
bounds so a loaded CI machine does not flake.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from xds_core.wan_emulator import (
    CHUNK_SIZE,
    THREAD_PREFIX,
    DelayingProxy,
    WanLink,
    _Direction,
    parse_address,
    parse_delay,
    parse_rate,
)

BASE_DIR = Path(__file__).resolve().parents[2]
Handler = Callable[[socket.socket], None]


class LoopbackServer:
    """A TCP server on an ephemeral loopback port running ``handler(connection)`` per connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.address: tuple[str, int] = self.listener.getsockname()[:2]
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.accept_thread = threading.Thread(target=self._accept, daemon=True, name="test-server-accept")
        self.accept_thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(10)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True, name="test-server-conn")
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                self.handler(conn)
            except OSError:
                pass

    def stop(self) -> None:
        self.stopping.set()
        self.accept_thread.join(2)
        self.listener.close()
        for thread in self.threads:
            thread.join(2)


def echo(conn: socket.socket) -> None:
    """Echo everything as it comes; at EOF, half-close back."""
    while data := conn.recv(CHUNK_SIZE):
        conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)


def sink_then_report(conn: socket.socket) -> None:
    """Read until EOF (the client's half-close), then answer ``b"<size> <sha256>"``: the answer can only
    come after the whole upload, and it proves the server saw EOF while its own side was still open."""
    digest, size = hashlib.sha256(), 0
    while data := conn.recv(CHUNK_SIZE):
        digest.update(data)
        size += len(data)
    conn.sendall(f"{size} {digest.hexdigest()}".encode())


@pytest.fixture
def echo_server() -> Iterator[LoopbackServer]:
    server = LoopbackServer(echo)
    yield server
    server.stop()


@pytest.fixture
def sink_server() -> Iterator[LoopbackServer]:
    server = LoopbackServer(sink_then_report)
    yield server
    server.stop()


def connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"EOF after {len(data)} of {size} bytes"
        data += chunk
    return bytes(data)


def recv_all(sock: socket.socket) -> bytes:
    data = bytearray()
    while chunk := sock.recv(CHUNK_SIZE):
        data += chunk
    return bytes(data)


def proxy_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


# ----------------------------------------------------------------------------- (a) latency

def test_a_round_trip_costs_two_one_way_delays(echo_server: LoopbackServer) -> None:
    with DelayingProxy(echo_server.address, WanLink(delay=0.020)) as proxy, connect(proxy.address) as client:
        client.sendall(b"warm-up")  # the first exchange also pays the handshake's round trip
        assert recv_exactly(client, 7) == b"warm-up"
        started = time.perf_counter()
        client.sendall(b"ping")
        assert recv_exactly(client, 4) == b"ping"
        elapsed = time.perf_counter() - started
    assert 0.040 <= elapsed < 0.200, elapsed


def test_a_a_new_connection_also_pays_the_handshake_round_trip(echo_server: LoopbackServer) -> None:
    with DelayingProxy(echo_server.address, WanLink(delay=0.020)) as proxy:
        started = time.perf_counter()
        with connect(proxy.address) as client:
            client.sendall(b"ping")
            assert recv_exactly(client, 4) == b"ping"
        elapsed = time.perf_counter() - started
    assert 0.080 <= elapsed < 0.300, elapsed  # SYN/SYN-ACK + request + response: 4 one-way delays


def test_a_without_handshake_emulation_a_new_connection_costs_one_round_trip(echo_server: LoopbackServer) -> None:
    with DelayingProxy(echo_server.address, WanLink(delay=0.020), handshake=False) as proxy:
        started = time.perf_counter()
        with connect(proxy.address) as client:
            client.sendall(b"ping")
            assert recv_exactly(client, 4) == b"ping"
        elapsed = time.perf_counter() - started
    assert 0.040 <= elapsed < 0.200, elapsed  # not the 4 delays above


# ----------------------------------------------------------------------------- (b) bandwidth

def test_b_4_mb_at_50_mbit_takes_its_serialisation_time(sink_server: LoopbackServer) -> None:
    payload = os.urandom(4_000_000)
    with DelayingProxy(sink_server.address, WanLink(rate=50e6, delay=0.005)) as proxy, \
            connect(proxy.address) as client:
        started = time.perf_counter()
        client.sendall(payload)
        client.shutdown(socket.SHUT_WR)
        answer = recv_all(client)
        elapsed = time.perf_counter() - started
    assert answer == f"{len(payload)} {hashlib.sha256(payload).hexdigest()}".encode()
    assert 0.64 <= elapsed < 3.0, elapsed  # 4e6 * 8 / 50e6 = 0.64 s, plus the delays
    assert proxy.bytes_up == len(payload) and proxy.bytes_down == len(answer)


def test_b_latency_and_bandwidth_compose_per_chunk() -> None:
    """The pacing clock itself: departure = max(arrival, link_free_at) + size*8/rate; delivery = + delay."""
    direction = _Direction("up", WanLink(rate=8e6, delay=0.010), 1 << 20)  # 1 byte per microsecond
    assert direction.schedule(b"x" * 1000, 100.0) == pytest.approx(100.011)
    assert direction.schedule(b"x" * 1000, 100.0) == pytest.approx(100.012)  # queued behind the first
    assert direction.schedule(b"x" * 1000, 200.0) == pytest.approx(200.011)  # the link was idle again
    assert WanLink().serialisation_time(10**9) == 0  # rate 0: unlimited


# ----------------------------------------------------------------------------- (c) integrity

@pytest.mark.parametrize("link, max_queued", [
    (WanLink(), 4 << 20),
    # Rate-limited with a two-chunk queue: readers block, back-pressure reaches the sender, order must hold.
    (WanLink(rate=400e6, delay=0.002), 2 * CHUNK_SIZE),
])
def test_c_a_3_mb_random_payload_arrives_unchanged_both_ways(echo_server: LoopbackServer, link: WanLink,
                                                             max_queued: int) -> None:
    payload = os.urandom(3_000_000)
    with DelayingProxy(echo_server.address, link, max_queued_bytes=max_queued) as proxy, \
            connect(proxy.address) as client:

        def upload() -> None:  # full duplex: send while the echo comes back
            client.sendall(payload)
            client.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=upload)
        sender.start()
        echoed = recv_all(client)
        sender.join(10)
    assert len(echoed) == len(payload)
    assert hashlib.sha256(echoed).hexdigest() == hashlib.sha256(payload).hexdigest()
    assert proxy.bytes_up == proxy.bytes_down == len(payload)


def test_c_a_direction_never_queues_more_than_its_bound() -> None:
    """A target that does not read: the proxy holds at most ``max_queued_bytes`` of the upload."""
    release = threading.Event()
    server = LoopbackServer(lambda conn: release.wait(10))
    peak = 0
    try:
        with DelayingProxy(server.address, WanLink(), max_queued_bytes=4 * CHUNK_SIZE) as proxy, \
                connect(proxy.address) as client:
            client.settimeout(0.05)
            block = b"\0" * CHUNK_SIZE
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                try:
                    client.send(block)
                except TimeoutError:
                    pass  # the sender is blocked: back-pressure reached it
                for connection in list(proxy._connections):
                    peak = max(peak, connection.up.queued_bytes)
            release.set()
    finally:
        release.set()
        server.stop()
    assert 0 < peak <= 4 * CHUNK_SIZE


# ----------------------------------------------------------------------------- (d) half-close

def test_d_half_close_reaches_the_server_which_can_still_answer(sink_server: LoopbackServer) -> None:
    with DelayingProxy(sink_server.address, WanLink(rate=100e6, delay=0.010)) as proxy, \
            connect(proxy.address) as client:
        client.sendall(b"question")
        client.shutdown(socket.SHUT_WR)  # the server answers only after it saw EOF
        answer = recv_all(client)
    assert answer == f"8 {hashlib.sha256(b'question').hexdigest()}".encode()


# ----------------------------------------------------------------------------- (e) stop()

def test_e_stop_closes_open_connections_and_ends_every_thread() -> None:
    baseline = threading.active_count()
    server = LoopbackServer(echo)
    proxy = DelayingProxy(server.address, WanLink(rate=10e6, delay=0.005)).start()
    clients = [connect(proxy.address) for _ in range(3)]
    for client in clients:
        client.sendall(b"hello")
        assert recv_exactly(client, 5) == b"hello"
    clients[0].sendall(b"x" * 200_000)  # data still queued in the proxy when it stops
    assert proxy.open_connections == 3 and len(proxy_threads()) >= 12

    listening = proxy.address
    started = time.perf_counter()
    proxy.stop()
    for client in clients:
        client.settimeout(2)
        try:
            while client.recv(CHUNK_SIZE):  # whatever was in flight, then EOF
                pass
        except ConnectionResetError:
            pass
        client.close()
    assert time.perf_counter() - started < 2.0
    assert proxy_threads() == []
    assert proxy.open_connections == 0
    server.stop()
    deadline = time.monotonic() + 2.0
    while threading.active_count() > baseline and time.monotonic() < deadline:
        time.sleep(0.02)
    assert threading.active_count() <= baseline, [t.name for t in threading.enumerate()]
    with pytest.raises(OSError):
        connect(listening)  # no longer listening


def test_e_a_refused_target_closes_the_client() -> None:
    unused = socket.create_server(("127.0.0.1", 0))
    port = unused.getsockname()[1]
    unused.close()
    with DelayingProxy(("127.0.0.1", port), WanLink()) as proxy, connect(proxy.address) as client:
        client.settimeout(2)
        try:
            assert client.recv(10) == b""
        except ConnectionResetError:
            pass
        deadline = time.monotonic() + 2
        while proxy.open_connections and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proxy.open_connections == 0


# ----------------------------------------------------------------------------- (f) units and CLI

@pytest.mark.parametrize("text, expected", [
    ("100mbit", 100e6), ("100Mbit", 100e6), ("1.5gbit", 1.5e9), ("500kbit", 500e3), ("64000bit", 64e3),
    (" 10 mbit ", 10e6), ("0", 0.0), ("unlimited", 0.0),
])
def test_f_parse_rate(text: str, expected: float) -> None:
    assert parse_rate(text) == pytest.approx(expected)


@pytest.mark.parametrize("text, expected", [
    ("20ms", 0.020), ("0.5s", 0.5), ("2s", 2.0), ("250us", 250e-6), ("0", 0.0), ("0ms", 0.0),
])
def test_f_parse_delay(text: str, expected: float) -> None:
    assert parse_delay(text) == pytest.approx(expected)


@pytest.mark.parametrize("parse, text, message", [
    (parse_rate, "100", "has no unit"),
    (parse_rate, "100mbps", "ambiguous"),
    (parse_rate, "fast", "expected a number with a unit"),
    (parse_rate, "", "expected a number with a unit"),
    (parse_rate, "-5mbit", "expected a number with a unit"),
    (parse_rate, "10 furlongs", "unknown unit 'furlongs'"),
    (parse_delay, "20", "has no unit"),
    (parse_delay, "20 minutes", "unknown unit 'minutes'"),
    (parse_delay, "-1ms", "expected a number with a unit"),
    (parse_delay, "1e400s", "too large"),
    (parse_address, "127.0.0.1", "expected HOST:PORT"),
    (parse_address, "127.0.0.1:http", "expected HOST:PORT"),
    (parse_address, "127.0.0.1:70000", "expected HOST:PORT"),
])
def test_f_bad_values_raise_value_error_naming_them(parse: Callable[[str], object], text: str,
                                                     message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse(text)
    assert repr(text) in str(caught.value)


def test_f_parse_address() -> None:
    assert parse_address("127.0.0.1:9001") == ("127.0.0.1", 9001)
    assert parse_address("[::1]:8080") == ("::1", 8080)


@pytest.mark.parametrize("kwargs", [{"rate": -1.0}, {"delay": -0.001}, {"delay": float("inf")},
                                    {"rate": float("nan")}])
def test_f_wan_link_rejects_impossible_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be a finite number >= 0"):
        WanLink(**kwargs)


def test_f_cli_forwards_until_interrupted(echo_server: LoopbackServer) -> None:
    host, port = echo_server.address
    process = subprocess.Popen(
        [sys.executable, "-m", "xds_core.wan_emulator", "--listen", "127.0.0.1:0", "--to", f"{host}:{port}",
         "--rate", "100mbit", "--delay", "20ms"],
        cwd=BASE_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert f"-> {host}:{port}" in line and "100 Mbit/s" in line and "20 ms one-way" in line, line
        listen_port = int(line.split("forwarding ", 1)[1].split(" ", 1)[0].rsplit(":", 1)[1])
        with connect(("127.0.0.1", listen_port)) as client:
            client.sendall(b"through the CLI")
            assert recv_exactly(client, 15) == b"through the CLI"
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0 and "15 bytes up, 15 bytes down" in err, err


def test_f_cli_rejects_a_bad_rate(capsys: pytest.CaptureFixture[str]) -> None:
    from xds_core.wan_emulator import main

    with pytest.raises(SystemExit) as exited:
        main(["--to", "127.0.0.1:1", "--rate", "100mbps"])
    assert exited.value.code == 2 and "ambiguous" in capsys.readouterr().err
