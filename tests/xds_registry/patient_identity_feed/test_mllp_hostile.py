"""ITI-8 listener against hostile peers, in process over real sockets: oversized frames answered AR where
their MSH can be read and closed, garbage answered AR on a connection that keeps working, caps per peer
address with the log line free of patient data."""

from __future__ import annotations

import logging
import socket
import threading
import uuid

import pytest

from tests.xds_registry.registry_helpers import AUTHORITY
from xds_core.mllp import ServerLimits, frame, read_frames
from xds_registry import models as m
from xds_registry.patient_identity_feed.hl7v2 import parse_message
from xds_registry.patient_identity_feed.mllp import serve_in_thread

pytestmark = pytest.mark.django_db(transaction=True)

FAMILY = "Hostilefamily"


def adt(pid: str, control: str, *, padding: int = 0) -> bytes:
    return ("MSH|^~\\&|SRC|FAC|REG|AFF|20261127120000||ADT^A04^ADT_A01|" + control + "|P|2.5\r"
            f"PID|||{pid}^^^&{AUTHORITY}&ISO||{FAMILY}^Jane\r" + "NTE|||" + "x" * padding + "\r").encode()


@pytest.fixture
def feed(request):
    limits: ServerLimits = getattr(request, "param", ServerLimits(max_message=10_000, rate_window=5))
    server, thread = serve_in_thread("127.0.0.1", 0, None, limits)
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def connect(server, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(server.server_address[:2], timeout=10, source_address=(source, 0))


def received_until_closed(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass  # closed with our bytes unread
    return data


def send_in_background(sock: socket.socket, data: bytes) -> threading.Thread:
    def send() -> None:
        try:
            sock.sendall(data)
        except OSError:
            pass
    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_an_oversized_adt_is_rejected_ar_unapplied_and_the_connection_closed(feed, caplog):
    caplog.set_level(logging.INFO, "xds.transaction")
    pid = f"O{uuid.uuid4().hex[:10]}"
    with connect(feed) as sock:
        sender = send_in_background(sock, frame(adt(pid, "BIG1", padding=2_000_000)))
        ack = parse_message(next(read_frames(sock)).decode())
        assert (ack.field("MSA", 1), ack.field("MSA", 2)) == ("AR", "BIG1")
        assert ack.component("ERR", 3, 1) == "207" and "longer than 10000 bytes" in ack.field("MSA", 3)
        assert received_until_closed(sock) == b""
        sender.join(5)
    assert not m.Patient.objects.filter(patient_id__startswith=pid).exists()
    assert "control=BIG1 ack=AR" in caplog.text and pid not in caplog.text and FAMILY not in caplog.text


@pytest.mark.parametrize("body", [b"\x00garbage" * 300_000, b"MSH|^~\\&|" + b"x" * 2_000_000],
                         ids=["garbage", "msh-never-ending"])
def test_an_oversized_frame_without_a_readable_msh_is_closed_without_an_answer(feed, body: bytes):
    with connect(feed) as sock:
        sender = send_in_background(sock, b"\x0b" + body)
        assert received_until_closed(sock) == b""
        sender.join(5)


def test_garbage_frames_are_answered_ar_and_the_connection_keeps_working(feed):
    pid = f"G{uuid.uuid4().hex[:10]}"
    with connect(feed) as sock:
        answers = read_frames(sock)
        for junk in (b"hello", b"\xff\xfe\x00\x01" * 100, b"MSH", b"MSH|^~\\&|" + b"|" * 5000, b""):
            sock.sendall(frame(junk))
            assert parse_message(next(answers).decode("iso-8859-1")).field("MSA", 1) == "AR"
        sock.sendall(b"noise between frames\r\n" + frame(adt(pid, "OK1")))
        ack = parse_message(next(answers).decode())
        assert (ack.field("MSA", 1), ack.field("MSA", 2)) == ("AA", "OK1")
    assert m.Patient.objects.filter(patient_id=f"{pid}^^^&{AUTHORITY}&ISO").exists()


@pytest.mark.parametrize("feed", [ServerLimits(max_connections=10, max_connections_per_peer=2)], indirect=True)
def test_a_peer_over_its_cap_is_closed_while_another_peer_is_answered(feed, caplog):
    caplog.set_level(logging.INFO, "xds.transaction")
    held = [connect(feed) for _ in range(2)]
    try:
        for sock in held:
            sock.sendall(b"\x0bMSH|^~\\&|")  # a frame begun and left hanging
        with connect(feed) as third:
            assert received_until_closed(third) == b""
        pid = f"P{uuid.uuid4().hex[:10]}"
        with connect(feed, "127.0.0.2") as other:
            other.sendall(frame(adt(pid, "C2")))
            assert parse_message(next(read_frames(other)).decode()).field("MSA", 1) == "AA"
    finally:
        for sock in held:
            sock.close()
    assert "ITI-8 peer=127.0.0.1:" in caplog.text and "2 connections per peer" in caplog.text
