"""MLLP framing and client (xds_core.mllp) over real sockets: frames split, joined, noisy, too long, too slow."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from xds_core.mllp import END_BLOCK, START_BLOCK, MllpError, exchange, frame, read_frames

ACK = b"MSH|^~\\&|REG|X|SRC|Y|20260101||ACK^A04|A1|P|2.5\rMSA|AA|C1\r"


def _feed(chunks: list[bytes], **kwargs: object) -> list[bytes]:
    """What read_frames yields when the peer sends ``chunks`` (one send each) and closes."""
    left, right = socket.socketpair()
    with left, right:
        def send() -> None:
            for chunk in chunks:
                right.sendall(chunk)
                time.sleep(0.001)  # separate reads, as a slow peer would
            right.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        left.settimeout(5)
        try:
            return list(read_frames(left, **kwargs))
        finally:
            sender.join(5)


def test_a_frame_is_the_message_between_start_and_end_block() -> None:
    assert frame(b"MSH|x") == b"\x0bMSH|x\x1c\x0d"
    assert (START_BLOCK, END_BLOCK) == (b"\x0b", b"\x1c\r")


def test_frames_are_found_whole_split_byte_by_byte_and_several_per_read() -> None:
    stream = frame(b"one") + frame(b"two\rthree") + frame(b"")
    assert _feed([stream]) == [b"one", b"two\rthree", b""]
    assert _feed([bytes([b]) for b in stream]) == [b"one", b"two\rthree", b""]
    # the end block split between two reads
    assert _feed([b"\x0bone\x1c", b"\x0d\x0btwo\x1c", b"\x0d"]) == [b"one", b"two"]


def test_bytes_outside_frames_are_ignored() -> None:
    assert _feed([b"noise\x1c\x0d", b"garbage\x0bone\x1c\x0d\r\n", frame(b"two")]) == [b"one", b"two"]


def test_a_connection_closed_inside_a_frame_ends_the_messages() -> None:
    assert _feed([frame(b"one"), b"\x0bhalf a mess"]) == [b"one"]


def test_a_frame_longer_than_the_limit_is_refused_before_it_is_all_read() -> None:
    with pytest.raises(MllpError, match="longer than 100 bytes"):
        _feed([b"\x0b" + b"x" * 1000, b"\x1c\x0d"], max_message=100)
    with pytest.raises(MllpError, match="longer than 100 bytes"):  # the whole frame in one read
        _feed([frame(b"x" * 101)], max_message=100)
    assert _feed([frame(b"x" * 100)], max_message=100) == [b"x" * 100]


@contextmanager
def _server(answer: Callable[[socket.socket], None]) -> Iterator[int]:
    """A loopback peer running ``answer(conn)`` for one connection."""
    listener = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        conn, _ = listener.accept()
        with conn:
            try:
                answer(conn)
            except OSError:
                pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(5)


def _answering(data: bytes) -> Callable[[socket.socket], None]:
    """A peer that reads the request (closing with it unread would reset the connection), then sends ``data``."""
    def answer(conn: socket.socket) -> None:
        assert next(read_frames(conn)) == b"MSH|ADT"
        conn.sendall(data)
    return answer


def test_exchange_sends_one_framed_message_and_returns_the_framed_answer() -> None:
    with _server(_answering(b"leading noise" + frame(ACK))) as port:
        assert exchange("127.0.0.1", port, b"MSH|ADT", timeout=5) == ACK


def test_exchange_gives_up_at_its_deadline_even_when_the_peer_keeps_dribbling() -> None:
    def dribble(conn: socket.socket) -> None:
        for _ in range(100):  # one byte every 50 ms, never an end block: each read alone would succeed
            conn.sendall(b"x")
            time.sleep(0.05)

    started = time.monotonic()
    with _server(dribble) as port, pytest.raises(TimeoutError):
        exchange("127.0.0.1", port, b"MSH|ADT", timeout=0.5)
    assert time.monotonic() - started < 3


def test_exchange_refuses_an_answer_that_is_too_long_or_missing() -> None:
    with _server(_answering(frame(b"x" * 5000))) as port, pytest.raises(MllpError, match="longer"):
        exchange("127.0.0.1", port, b"MSH|ADT", timeout=5, max_message=1000)
    with _server(_answering(b"\x0bno end")) as port, pytest.raises(MllpError, match="closed"):
        exchange("127.0.0.1", port, b"MSH|ADT", timeout=5)


def test_exchange_to_a_closed_port_is_an_os_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OSError):
        exchange("127.0.0.1", port, b"MSH|ADT", timeout=2)
