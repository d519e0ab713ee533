"""The bounded MLLP server (xds_core.mllp.MllpListener) over real loopback sockets: caps in total and per
peer address, a fixed number of threads whatever the connections, the idle / minimum-rate / frame-deadline
rules (short windows here), oversized frames refused before they are held, peers that stop reading."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from xds_core.mllp import FrameBuffer, MllpError, MllpListener, Peer, ServerLimits, frame, read_frames

BIG_ANSWER = b"A" * (4 * 1024 * 1024)


class Echo(MllpListener):
    """Answers ``ACK <message>``; ``boom`` raises, ``big`` answers 4 MiB (to fill a peer's buffers)."""

    label = "TEST"

    def __init__(self, address: tuple[str, int], limits: ServerLimits) -> None:
        super().__init__(address, limits)
        self.finished = 0
        self.peak_threads = 0

    def respond(self, message: bytes, peer: Peer) -> bytes:
        self.peak_threads = max(self.peak_threads, threading.active_count())
        if message == b"boom":
            raise RuntimeError("patient Doe^Jane")  # the text must not reach the log
        if message == b"big":
            return BIG_ANSWER
        return b"ACK " + message

    def refusal(self, head: bytes, peer: Peer, reason: str) -> bytes | None:
        return b"AR " + head[:8] if head.startswith(b"MSH") else None

    def worker_finished(self) -> None:
        self.finished += 1


@contextmanager
def serving(**limits: float) -> Iterator[Echo]:
    server = Echo(("127.0.0.1", 0), ServerLimits(**limits))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def connect(server: MllpListener, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(server.server_address[:2], timeout=10, source_address=(source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def ask(sock: socket.socket, message: bytes) -> bytes:
    sock.sendall(frame(message))
    return next(read_frames(sock))


def closed_after(sock: socket.socket, timeout: float = 10) -> float:
    """Seconds until the server closes ``sock`` (EOF or reset), reading and discarding whatever comes."""
    started = time.monotonic()
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - started


def wait_until(condition, timeout: float = 5) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


# --- the deframer ---------------------------------------------------------------------------------

def test_the_frame_buffer_never_asks_for_more_than_one_frame_can_hold() -> None:
    frames = FrameBuffer(max_message=100)
    assert frames.room() == 104 and not frames.in_frame
    frames.feed(b"noise without a start block" * 1000)
    assert frames.room() == 104 and not frames.in_frame  # noise is dropped, not kept
    frames.feed(b"junk\x0bMSH|" + b"x" * 50)
    assert frames.in_frame and frames.head(4) == b"MSH|" and frames.next_frame() is None
    assert frames.room() == 104 - 55
    frames.feed(b"y" * frames.room())
    with pytest.raises(MllpError, match="longer than 100 bytes"):
        frames.next_frame()
    frames.clear()
    frames.feed(frame(b"one") + b"\r\n" + frame(b"two") + b"\x0bthr")
    assert (frames.next_frame(), frames.next_frame(), frames.next_frame()) == (b"one", b"two", None)
    assert frames.in_frame and frames.head(3) == b"thr"


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        ServerLimits(max_connections=0)
    with pytest.raises(ValueError):
        ServerLimits(rate_window=0)


# --- messages and connections -----------------------------------------------------------------------

def test_messages_sent_ahead_are_answered_one_by_one_in_order() -> None:
    with serving() as server, connect(server) as sock:
        sock.sendall(b"".join(frame(f"m{i}".encode()) for i in range(20)))
        answers = read_frames(sock)
        assert [next(answers) for _ in range(20)] == [f"ACK m{i}".encode() for i in range(20)]
        assert ask(sock, b"later") == b"ACK later"


def test_connections_beyond_the_total_cap_are_closed_at_once_and_a_freed_place_is_reused(caplog) -> None:
    caplog.set_level(logging.INFO, "xds.transaction")
    with serving(max_connections=3, max_connections_per_peer=3) as server:
        held = [connect(server) for _ in range(3)]
        for sock in held:
            assert ask(sock, b"hi") == b"ACK hi"
        with connect(server) as extra:
            assert closed_after(extra) < 2
        assert server.connection_count == 3
        assert "refused: limit of 3 connections in total reached" in caplog.text
        held.pop().close()
        assert wait_until(lambda: server.connection_count == 2)
        with connect(server) as again:
            assert ask(again, b"back") == b"ACK back"
        for sock in held:
            sock.close()


def test_the_per_peer_cap_leaves_other_addresses_served(caplog) -> None:
    caplog.set_level(logging.INFO, "xds.transaction")
    with serving(max_connections=10, max_connections_per_peer=2) as server:
        held = [connect(server, "127.0.0.1") for _ in range(2)]
        for sock in held:
            sock.sendall(b"\x0bMSH|partial")
        with connect(server, "127.0.0.1") as third:
            assert closed_after(third) < 2
        with connect(server, "127.0.0.2") as other:
            assert ask(other, b"hello") == b"ACK hello"
        assert "peer=127.0.0.1:" in caplog.text and "2 connections per peer" in caplog.text
        for sock in held:
            sock.close()


def test_held_connections_cost_no_thread() -> None:
    with serving(max_connections=100, max_connections_per_peer=100, workers=2) as server:
        with connect(server) as first:
            assert ask(first, b"warm") == b"ACK warm"
        baseline = threading.active_count()
        held = [connect(server) for _ in range(80)]
        for i, sock in enumerate(held):
            sock.sendall(b"\x0bMSH|partial" if i % 2 else frame(b"m"))
        assert wait_until(lambda: server.connection_count == 80)
        for sock in held[::2]:
            assert next(read_frames(sock)) == b"ACK m"
        # <=: a thread another test left behind may end meanwhile; none is started for a connection
        assert threading.active_count() <= baseline
        assert server.peak_threads <= baseline
        for sock in held:
            sock.close()


def test_a_failing_answer_closes_that_connection_only_and_logs_no_message_text(caplog) -> None:
    caplog.set_level(logging.INFO, "xds.transaction")
    with serving(workers=1) as server:
        with connect(server) as sock:
            sock.sendall(frame(b"boom"))
            assert closed_after(sock) < 5
        with connect(server) as sock:
            assert ask(sock, b"still") == b"ACK still"  # the one worker survived
    assert "internal error (RuntimeError)" in caplog.text and "Doe" not in caplog.text


def test_shutdown_closes_connections_and_ends_every_worker() -> None:
    with serving(workers=3) as server:
        sock = connect(server)
        assert ask(sock, b"x") == b"ACK x"
    assert server.finished == 3
    assert closed_after(sock) < 2
    sock.close()


# --- time rules ---------------------------------------------------------------------------------------

def test_an_idle_connection_is_closed_after_the_idle_timeout_and_each_message_restarts_it() -> None:
    with serving(idle_timeout=1.0) as server, connect(server) as sock:
        for i in range(5):  # 5 x 0.3 s: longer than the idle timeout in all, never idle that long
            assert ask(sock, f"m{i}".encode()) == f"ACK m{i}".encode()
            time.sleep(0.3)
        waited = closed_after(sock)
        assert 0.1 < waited < 3, waited


def test_noise_between_frames_does_not_start_a_frame() -> None:
    # Only the idle rule applies to noise (a frame is what starts at <SB>): with a tiny rate window and
    # a long idle timeout the connection outlives the window.
    with serving(idle_timeout=30, rate_window=0.2, min_rate=1000, max_message=1000) as server, \
            connect(server) as sock:
        sock.sendall(b"\r\n" * 200_000)  # 400 kB of noise, past the 1000-byte frame limit
        time.sleep(0.6)
        assert ask(sock, b"after noise") == b"ACK after noise"


def test_a_frame_dripping_below_the_minimum_rate_is_dropped_after_the_window(caplog) -> None:
    caplog.set_level(logging.INFO, "xds.transaction")
    with serving(rate_window=0.5, min_rate=400, frame_deadline=30) as server, connect(server) as sock:
        started = time.monotonic()
        sock.sendall(b"\x0bMSH|")
        try:
            for _ in range(100):  # 10 bytes / 0.1 s = 100 B/s, below 400 B/s
                sock.sendall(b"x" * 10)
                time.sleep(0.1)
        except OSError:
            pass
        closed_after(sock)
        assert time.monotonic() - started < 3
    assert "below 400 B/s over 0.5s" in caplog.text


def test_a_frame_with_no_byte_for_the_window_is_dropped_even_without_a_minimum_rate(caplog) -> None:
    caplog.set_level(logging.INFO, "xds.transaction")
    with serving(rate_window=0.5, min_rate=0, frame_deadline=30) as server, connect(server) as sock:
        sock.sendall(b"\x0bMSH|^~\\&|")
        waited = closed_after(sock)
        assert 0.3 < waited < 3, waited
    assert "no byte for 0.5s inside a frame" in caplog.text


def test_a_slow_frame_above_the_minimum_rate_is_answered_across_many_windows() -> None:
    # Not a total deadline per window: 1.2 kB at ~600 B/s takes ~2 s, four windows of 0.5 s.
    with serving(rate_window=0.5, min_rate=100, frame_deadline=30) as server, connect(server) as sock:
        body = b"MSH|" + b"s" * 1196
        sock.sendall(frame(body)[:1])
        for i in range(0, len(body), 30):
            sock.sendall(body[i:i + 30])
            time.sleep(0.05)
        sock.sendall(b"\x1c\x0d")
        assert next(read_frames(sock)) == b"ACK " + body


def test_a_frame_fast_enough_but_never_ending_is_dropped_at_the_frame_deadline(caplog) -> None:
    caplog.set_level(logging.INFO, "xds.transaction")
    with serving(rate_window=0.3, min_rate=100, frame_deadline=1.0) as server, connect(server) as sock:
        started = time.monotonic()
        sock.sendall(b"\x0bMSH|")
        try:
            while time.monotonic() - started < 5:
                sock.sendall(b"y" * 60)  # 1.2 kB/s, well above the minimum rate
                time.sleep(0.05)
        except OSError:
            pass
        closed_after(sock)
        assert time.monotonic() - started < 4
    assert "frame not complete within 1s" in caplog.text


def test_a_peer_that_stops_reading_its_answers_is_dropped() -> None:
    with serving(rate_window=0.5) as server:
        sock = connect(server)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        for _ in range(4):  # 16 MiB of answers the peer never reads: far beyond the socket buffers
            sock.sendall(frame(b"big"))
        assert wait_until(lambda: server.connection_count == 1, 2)
        assert wait_until(lambda: server.connection_count == 0, 5)
        sock.close()


# --- oversized frames ---------------------------------------------------------------------------------

def _send_in_background(sock: socket.socket, data: bytes) -> threading.Thread:
    def send() -> None:
        try:
            sock.sendall(data)
        except OSError:
            pass  # the server may close before it has all
    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_an_oversized_frame_is_answered_from_its_head_then_the_connection_is_closed(caplog) -> None:
    caplog.set_level(logging.INFO, "xds.transaction")
    with serving(max_message=1000, rate_window=2) as server, connect(server) as sock:
        sender = _send_in_background(sock, frame(b"MSH|^~\\&|" + b"z" * 3_000_000))
        assert next(read_frames(sock)) == b"AR MSH|^~\\&"
        assert closed_after(sock) < 3
        sender.join(5)
        assert wait_until(lambda: server.connection_count == 0)
    assert "MLLP frame longer than 1000 bytes" in caplog.text


def test_an_oversized_frame_without_a_readable_head_is_closed_without_an_answer() -> None:
    with serving(max_message=1000) as server, connect(server) as sock:
        sender = _send_in_background(sock, b"\x0b" + b"\xff" * 3_000_000)
        sock.settimeout(5)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass  # the server closed with our bytes unread: a reset, as good as an EOF here
        assert received == b""
        sender.join(5)
        assert wait_until(lambda: server.connection_count == 0)
