"""Syslog (xds_core/syslog.py) and shipping the trail (atna/syslog_jobs.py) to a real TLS collector (RFC 5425)."""

from __future__ import annotations

import re
import socket
import ssl
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from atna import chain, trail_jobs
from atna.models import AuditRecord, SyslogCursor
from atna.syslog_jobs import ANCHOR_MSGID, ship_pending
from jobs.models import Job
from jobs.worker import run_pending
from tests.atna.trail_helpers import Files, files, write  # noqa: F401
from xds_core import pki, syslog
from xds_core.audit_xml import schema_errors
from xds_core.tls import TlsSettings, client_context, server_context

HEADER = re.compile(rb"<85>1 (\S+) (\S+) (\S+) (\S+) IHE\+RFC-3881 - ")


# ---------------------------------------------------------------------------------- message and framing


def test_a_message_has_the_iti20_header_and_the_xml_as_it_is() -> None:
    xml = "<AuditMessage><x>Müller</x></AuditMessage>".encode()
    when = datetime(2026, 12, 8, 1, 2, 3, 456789, tzinfo=UTC)
    msg = syslog.message(xml, when=when, hostname="node a.example", app_name="x" * 60, procid="42")
    assert msg == (b"<85>1 2026-12-08T01:02:03.456Z node_a.example " + b"x" * 48 + b" 42 IHE+RFC-3881 - " + xml)
    empty = syslog.message(b"<a/>", when=when, hostname="", app_name="")
    assert empty == b"<85>1 2026-12-08T01:02:03.456Z - - - IHE+RFC-3881 - <a/>"


def test_octet_counting_counts_the_bytes_of_the_utf8_message() -> None:
    msg = syslog.message("<a>é€</a>".encode(), when=datetime.now(UTC), hostname="h", app_name="a")
    framed = syslog.frame(msg)
    count, _, rest = framed.partition(b" ")
    assert int(count) == len(msg) == len(rest) and rest == msg and not framed.endswith(b"\n")


def test_the_frame_reader_parses_a_stream_cut_anywhere_and_refuses_hostile_lengths() -> None:
    messages = [b"<85>1 one", "<85>1 twó".encode(), b"<85>1 " + b"3" * 5000]
    stream = b"".join(syslog.frame(m) for m in messages)
    for cut in (1, 2, 7, 100, len(stream)):
        reader = syslog.FrameReader()
        got = [m for i in range(0, len(stream), cut) for m in reader.feed(stream[i:i + cut])]
        assert got == messages and reader.pending == 0
    with pytest.raises(syslog.SyslogError, match="exceeds"):
        syslog.FrameReader(max_frame=100).feed(b"101 ")
    with pytest.raises(syslog.SyslogError, match="MSG-LEN"):
        syslog.FrameReader().feed(b"123456789012 x")
    with pytest.raises(syslog.SyslogError, match="positive decimal"):
        syslog.FrameReader().feed(b"0x1 y")


def test_destinations_parse_with_their_default_ports() -> None:
    tls = syslog.Destination.parse("tls://arr.example")
    assert tls == syslog.Destination(syslog.Transport.TLS, "arr.example", 6514)
    assert str(syslog.Destination.parse("udp://10.0.0.1")) == "udp://10.0.0.1:514"
    assert str(syslog.Destination.parse("tcp://[::1]:1514")) == "tcp://[::1]:1514"
    for bad in ("http://x", "tls://", "tls://x:99999", "tls://x/path"):
        with pytest.raises(syslog.SyslogError):
            syslog.Destination.parse(bad)
    with pytest.raises(syslog.SyslogError, match="XDS_TLS"):
        syslog.Sender(syslog.Destination.parse("tls://x"))


# ---------------------------------------------------------------------------------- a real collector


class Collector:
    """An Audit Record Repository's syslog receiver: RFC 5425 over TLS (mutual) or plain TCP, on one port
    that can be taken down and brought back."""

    def __init__(self, context: ssl.SSLContext | None) -> None:
        self.context = context
        self.messages: list[bytes] = []
        self.peers: list[str] = []
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def up(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(8)
        self._server = server
        self._thread = threading.Thread(target=self._serve, args=(server,), daemon=True)
        self._thread.start()

    def down(self) -> None:
        if self._server is not None:
            try:
                self._server.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the serving thread
            except OSError:
                pass
            self._server.close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)

    def _serve(self, server: socket.socket) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        reader = syslog.FrameReader()
        try:
            stream = conn
            if self.context is not None:
                stream = self.context.wrap_socket(conn, server_side=True)
                cert = stream.getpeercert()
                self.peers.append(dict(x[0] for x in cert["subject"])["commonName"])
            while data := stream.recv(65536):
                got = reader.feed(data)
                with self._lock:
                    self.messages += got
        except (OSError, syslog.SyslogError):
            pass
        finally:
            conn.close()

    def wait_for(self, n: int, timeout: float = 10.0) -> list[bytes]:
        deadline = datetime.now(UTC) + timedelta(seconds=timeout)
        while datetime.now(UTC) < deadline:
            with self._lock:
                if len(self.messages) >= n:
                    return list(self.messages)
            threading.Event().wait(0.02)
        return list(self.messages)


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(the collector's server context, our node's client context): one CA, mutual TLS (xds_core.tls profile)."""
    directory: Path = tmp_path_factory.mktemp("pki")
    ca = pki.issue_ca()
    ca_path = directory / "ca.crt"
    ca_path.write_bytes(ca.cert_pem)
    arr_cert, arr_key = pki.issue(ca, "arr", addresses=("127.0.0.1",)).write(directory, "arr")
    node_cert, node_key = pki.issue(ca, "node-a", addresses=("127.0.0.1",)).write(directory, "node")
    server = server_context(TlsSettings(True, str(arr_cert), str(arr_key), ca=(str(ca_path),)))
    client = client_context(TlsSettings(True, str(node_cert), str(node_key), ca=(str(ca_path),)))
    return server, client


@pytest.mark.django_db
def test_records_wait_while_the_tls_collector_is_down_and_arrive_once_in_order_when_it_is_back(
        files: Files, tls_pair, caplog) -> None:  # noqa: F811
    server, client = tls_pair
    collector = Collector(server)
    write(7)
    chain.chain_pending(files.key_bytes())
    sender = syslog.Sender(syslog.Destination.parse(f"tls://127.0.0.1:{collector.port}"), context=client, timeout=5)

    down = ship_pending(sender, batch=3)

    assert down.sent == 0 and down.cursor == 0 and down.error
    cursor = SyslogCursor.objects.get()
    assert cursor.failing_since is not None and cursor.last_error.startswith("ConnectionRefusedError")
    assert caplog.text.count("cannot send") == 1
    assert ship_pending(sender).error and caplog.text.count("cannot send") == 1  # logged once per outage

    collector.up()
    try:
        up = ship_pending(sender, batch=3)
        write(2)
        chain.chain_pending(files.key_bytes())
        chain.anchor_if_due(files.anchors, timedelta(0), force=True)
        again = ship_pending(sender, batch=3)
        got = collector.wait_for(10)
    finally:
        collector.down()

    assert (up.sent, up.cursor, again.sent, again.cursor) == (7, 7, 2, 9)
    audit_messages = [m for m in got if b" IHE+RFC-3881 - " in m]
    anchors = [m for m in got if f" {ANCHOR_MSGID} - ".encode() in m]
    assert len(audit_messages) == 9 and len(anchors) == 1
    stored = [r.message.encode() for r in AuditRecord.objects.order_by("chain_seq")]
    assert [HEADER.sub(b"", m, count=1) for m in audit_messages] == stored  # each once, in seq order
    assert all(schema_errors(m) == [] for m in stored)
    assert anchors[0].endswith(f"head seq=9 hmac={AuditRecord.objects.get(chain_seq=9).chain_hmac}".encode())
    assert set(collector.peers) == {"node-a"}  # our certificate presented: mutual TLS
    cursor = SyslogCursor.objects.get()
    assert (cursor.last_seq, cursor.sent, cursor.failing_since, cursor.last_error) == (9, 9, None, "")
    assert "reachable again" in caplog.text
    assert ship_pending(sender).sent == 0  # nothing twice


@pytest.mark.django_db
def test_a_collector_that_does_not_trust_us_gets_nothing_and_the_cursor_stays(files: Files, tls_pair) -> None:  # noqa: F811
    server, _ = tls_pair
    stranger = pki.self_signed("stranger")
    directory = files.key.parent
    cert, key = stranger.write(directory, "stranger")
    untrusted = client_context(TlsSettings(True, str(cert), str(key), pinned=(str(cert),)))
    collector = Collector(server)
    collector.up()
    try:
        write(2)
        chain.chain_pending(files.key_bytes())
        result = ship_pending(syslog.Sender(syslog.Destination.parse(f"tls://127.0.0.1:{collector.port}"),
                                            context=untrusted, timeout=5))
    finally:
        collector.down()
    assert result.sent == 0 and result.cursor == 0 and "SSL" in result.error
    assert collector.messages == []


@pytest.mark.django_db
def test_only_chained_records_are_shipped(files: Files) -> None:  # noqa: F811
    collector = Collector(None)
    collector.up()
    try:
        write(2)
        chain.chain_pending(files.key_bytes())
        write(1)  # not chained yet: no seq, so it waits for the chainer
        sender = syslog.Sender(syslog.Destination.parse(f"tcp://127.0.0.1:{collector.port}"))
        assert ship_pending(sender).sent == 2
        assert len(collector.wait_for(2)) == 2
    finally:
        collector.down()


@pytest.mark.django_db
def test_the_ship_job_sends_over_the_queue_and_queues_its_next_run(files: Files, settings) -> None:  # noqa: F811
    collector = Collector(None)
    settings.XDS_AUDIT_SYSLOG = f"tcp://127.0.0.1:{collector.port}"
    write(3)
    chain.chain_pending(files.key_bytes())
    past = datetime.now(UTC) - timedelta(seconds=10)
    trail_jobs.schedule_next(trail_jobs.SHIP, 5, now=past)

    [down] = run_pending(max_jobs=1)  # collector down: the job itself succeeds, the cursor says why
    assert down.state == Job.State.SUCCEEDED and SyslogCursor.objects.get().failing_since is not None
    Job.objects.filter(kind=trail_jobs.SHIP, state=Job.State.QUEUED).update(run_after=past)
    collector.up()
    try:
        [up] = run_pending(max_jobs=1)
        got = collector.wait_for(3)
    finally:
        collector.down()
    assert up.state == Job.State.SUCCEEDED and len(got) == 3
    assert Job.objects.filter(kind=trail_jobs.SHIP, state=Job.State.QUEUED).count() == 1


def test_udp_sends_one_message_per_datagram() -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    try:
        sender = syslog.Sender(syslog.Destination.parse(f"udp://127.0.0.1:{receiver.getsockname()[1]}"))
        messages = [syslog.message(f"<m>{i}</m>".encode(), when=datetime.now(UTC), hostname="h", app_name="a")
                    for i in range(3)]
        assert sender.send(messages) == 3
        assert [receiver.recv(65535) for _ in range(3)] == messages
    finally:
        receiver.close()
