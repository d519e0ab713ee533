"""MLLP over TLS (xds_core.mllp, ITI TF-2a 3.19.6) over real loopback sockets and real TLS: mutual
authentication, the verified certificate reaching the application, failed handshakes refused with a
(rate-limited) Security Alert, the handshake deadline, the time rules under TLS, and the client."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.tls_files import PkiFiles, issue_files
from xds_core import audit, pki
from xds_core.mllp import MllpError, MllpListener, Peer, ServerLimits, exchange, frame, read_frames
from xds_core.tls import TlsSettings, client_context, server_context

BIG_ANSWER = b"A" * (4 * 1024 * 1024)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    """A CA; the listener's node certificate; a feed client of the CA; a client of a stranger CA."""
    return issue_files(tmp_path_factory.mktemp("mllp-pki"), nodes={"server": "registry.test"},
                       clients={"client": ("feed", "feed")}, strangers={"stranger": ("intruder", "")})


def tls(certs: PkiFiles, who: str) -> TlsSettings:
    return certs.settings(who)


class Echo(MllpListener):
    """Answers ``ACK <message> from <certificate subject>``; ``big`` answers 4 MiB."""

    label = "TEST"

    def respond(self, message: bytes, peer: Peer) -> bytes:
        if message == b"big":
            return BIG_ANSWER
        subject = peer.certificate.subject if peer.certificate else "nobody"
        return b"ACK " + message + b" from " + subject.encode()


@contextmanager
def serving(certs: dict[str, Path], **limits: float) -> Iterator[Echo]:
    server = Echo(("127.0.0.1", 0), ServerLimits(**limits),  # type: ignore[arg-type]
                  ssl_context=server_context(tls(certs, "server")))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def connect(server: MllpListener, context: ssl.SSLContext, source: str = "127.0.0.1") -> ssl.SSLSocket:
    raw = socket.create_connection(server.server_address[:2], timeout=10, source_address=(source, 0))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def no_certificate(certs: dict[str, Path]) -> ssl.SSLContext:
    """A client that trusts the listener but presents no certificate of its own."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(str(certs["ca"]))
    return context


def alerts(events: list[audit.AuditEvent]) -> list[audit.AuditEvent]:
    return [e for e in events if audit.SecurityAlertType.NODE_AUTHENTICATION in e.event_types]


def wait_until(condition, timeout: float = 5) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def closed_after(sock: socket.socket, timeout: float = 10) -> float:
    """Seconds until the server closes ``sock`` (EOF, reset or a TLS alert), discarding whatever comes."""
    started = time.monotonic()
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except (ConnectionResetError, ssl.SSLError):
        pass
    return time.monotonic() - started


# --- accepted peers ---------------------------------------------------------------------------------

def test_a_client_certificate_of_the_ca_is_answered_and_reaches_the_application(certs) -> None:
    with serving(certs) as server, audit.capture() as events:
        answer = exchange("127.0.0.1", server.server_address[1], b"MSH|ADT", timeout=10,
                          ssl_context=client_context(tls(certs, "client")))
    assert answer == b"ACK MSH|ADT from CN=feed,OU=feed,O=XDS-I.b demo affinity domain"
    assert alerts(events) == []


def test_a_connection_carries_many_messages_under_tls(certs) -> None:
    with serving(certs) as server, connect(server, client_context(tls(certs, "client"))) as sock:
        frames = read_frames(sock)
        for n in range(20):
            sock.sendall(frame(b"m%d" % n))
            assert next(frames).startswith(b"m%d from CN=feed" % n, 4)


def test_messages_sent_ahead_and_held_inside_tls_are_all_answered_in_order(certs) -> None:
    """Five frames in one TLS record, a frame limit that lets a read take barely one: the rest waits decrypted
    inside TLS, where the socket does not signal it -- the listener must take it (ssl ``pending()``)."""
    with serving(certs, max_message=64, idle_timeout=30) as server, \
            connect(server, client_context(tls(certs, "client"))) as sock:
        sock.sendall(b"".join(frame(b"message-%02d-" % n + b"x" * 40) for n in range(5)))
        frames = read_frames(sock, deadline=time.monotonic() + 5)
        answers = [next(frames) for _ in range(5)]
    assert [a[4:14] for a in answers] == [b"message-%02d" % n for n in range(5)]


def test_a_large_answer_is_written_through_tls(certs) -> None:
    with serving(certs) as server, connect(server, client_context(tls(certs, "client"))) as sock:
        sock.sendall(frame(b"big"))
        assert next(read_frames(sock, max_message=len(BIG_ANSWER))) == BIG_ANSWER
        sock.sendall(frame(b"after"))
        assert next(read_frames(sock)).startswith(b"ACK after")


# --- refused peers ------------------------------------------------------------------------------------

def test_a_client_without_a_certificate_gets_no_answer_and_raises_a_security_alert(certs) -> None:
    with serving(certs) as server, audit.capture() as events:
        with pytest.raises((OSError, MllpError)):
            exchange("127.0.0.1", server.server_address[1], b"MSH|ADT", timeout=10,
                     ssl_context=no_certificate(certs))
        assert wait_until(lambda: len(alerts(events)) == 1)
    alert = alerts(events)[0]
    assert alert.event_id is audit.EventId.SECURITY_ALERT
    assert alert.requestor is not None and alert.requestor.network_address == "127.0.0.1"
    assert "CERTIFICATE" in alert.outcome_description.upper()
    assert alert.objects[0].object_id == server.uri


def test_a_certificate_of_another_ca_gets_no_answer_and_raises_a_security_alert(certs) -> None:
    with serving(certs) as server, audit.capture() as events:
        with pytest.raises((OSError, MllpError)):
            exchange("127.0.0.1", server.server_address[1], b"MSH|ADT", timeout=10,
                     ssl_context=client_context(TlsSettings(enabled=True, cert=str(certs["stranger"]),
                                                            key=str(certs["stranger_key"]), ca=(str(certs["ca"]),))))
        assert wait_until(lambda: len(alerts(events)) == 1)
    assert "certificate not accepted" in alerts(events)[0].outcome_description


@pytest.mark.parametrize("flag", ["-tls1_1", "-tls1"])
def test_tls_1_1_and_1_0_are_refused_with_a_security_alert(certs, flag: str) -> None:
    with serving(certs) as server, audit.capture() as events:
        # SECLEVEL=0: let this OpenSSL offer the old protocol at all, so it is our listener that refuses it.
        result = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{server.server_address[1]}", flag,
             "-cipher", "DEFAULT@SECLEVEL=0", "-cert", str(certs["client"]), "-key", str(certs["client_key"]),
             "-CAfile", str(certs["ca"])],
            input=frame(b"MSH|ADT"), capture_output=True, timeout=20)
        assert wait_until(lambda: len(alerts(events)) == 1)
    assert result.returncode != 0
    assert b"Cipher is (NONE)" in result.stdout or b"alert protocol version" in result.stderr
    assert b"ACK" not in result.stdout
    assert "UNSUPPORTED_PROTOCOL" in alerts(events)[0].outcome_description.upper()


def test_plain_mllp_on_a_tls_listener_gets_no_answer(certs) -> None:
    with serving(certs) as server, audit.capture() as events:
        with pytest.raises((OSError, MllpError)):
            exchange("127.0.0.1", server.server_address[1], b"MSH|ADT", timeout=10)
        assert wait_until(lambda: len(alerts(events)) == 1)


def test_security_alerts_are_at_most_one_per_peer_address_per_interval(certs) -> None:
    with serving(certs) as server, audit.capture() as events:
        for _ in range(5):
            with pytest.raises((OSError, MllpError)):
                exchange("127.0.0.1", server.server_address[1], b"MSH|ADT", timeout=10,
                         ssl_context=no_certificate(certs))
        try:  # TLS 1.3: the client may or may not see the refusal before its handshake returns
            with connect(server, no_certificate(certs), source="127.0.0.2") as other:
                other.sendall(frame(b"MSH|ADT"))
                closed_after(other)
        except OSError:
            pass
        assert wait_until(lambda: len(alerts(events)) == 2)
        time.sleep(0.3)  # no late third one
    assert sorted(a.requestor.network_address for a in alerts(events)) == ["127.0.0.1", "127.0.0.2"]  # type: ignore[union-attr]


# --- time rules under TLS -----------------------------------------------------------------------------

@pytest.mark.slow
def test_silent_tls_clients_cost_no_worker_and_are_dropped_at_the_handshake_deadline(certs) -> None:
    """50 peers connect and never finish (or never start) a handshake: each costs a socket until the deadline,
    no thread; a good client meanwhile is answered at once."""
    with serving(certs, max_connections=64, max_connections_per_peer=64, workers=2, handshake_timeout=2) as server, \
            audit.capture() as events:
        good = client_context(tls(certs, "client"))
        assert exchange("127.0.0.1", server.server_address[1], b"warm", timeout=10, ssl_context=good)
        threads = threading.active_count()  # the I/O thread and the workers are running by now
        silent = []
        for n in range(50):
            sock = socket.create_connection(server.server_address[:2], timeout=10)
            if n % 2:  # half send the first bytes of a ClientHello, then nothing
                sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
            silent.append(sock)
        assert wait_until(lambda: server.connection_count == 50)
        started = time.monotonic()
        answer = exchange("127.0.0.1", server.server_address[1], b"MSH|ADT", timeout=10, ssl_context=good)
        assert answer.startswith(b"ACK MSH|ADT") and time.monotonic() - started < 1.0
        assert threading.active_count() == threads
        dropped = [closed_after(sock) for sock in silent]
        assert max(dropped) < 4.0
        assert wait_until(lambda: server.connection_count == 0)
        for sock in silent:
            sock.close()
        assert wait_until(lambda: len(alerts(events)) == 1)  # one address: one alert
    assert "not complete within 2s" in alerts(events)[0].outcome_description


@pytest.mark.slow
def test_a_frame_dripped_slowly_under_tls_is_dropped_by_the_minimum_rate(certs) -> None:
    with serving(certs, min_rate=1000, rate_window=1) as server, \
            connect(server, client_context(tls(certs, "client"))) as sock:
        started = time.monotonic()
        sock.sendall(b"\x0bMSH|")
        try:
            for _ in range(40):  # 10 B/s, each byte its own TLS record
                sock.sendall(b"x")
                time.sleep(0.1)
        except OSError:
            pass
        closed_after(sock)
        assert time.monotonic() - started < 3.5
        assert wait_until(lambda: server.connection_count == 0)


# --- the client ---------------------------------------------------------------------------------------

def test_the_client_refuses_a_listener_it_does_not_trust(certs, tmp_path: Path) -> None:
    rogue_cert, rogue_key = pki.issue(pki.issue_ca("Rogue"), "rogue", addresses=("127.0.0.1",)).write(tmp_path, "rogue")
    context = server_context(TlsSettings(enabled=True, cert=str(rogue_cert), key=str(rogue_key),
                                         ca=(str(certs["ca"]),)))
    server = Echo(("127.0.0.1", 0), ssl_context=context)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            exchange("127.0.0.1", server.server_address[1], b"MSH|ADT", timeout=10,
                     ssl_context=client_context(tls(certs, "client")))
    finally:
        server.shutdown()
        server.server_close()
