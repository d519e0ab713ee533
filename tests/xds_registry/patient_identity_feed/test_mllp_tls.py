"""ITI-8 over MLLP over TLS (ITI TF-2a 3.19.6) with the node identity table, over real sockets, real TLS and
the real database: a certificate of the table with the ``feed`` role feeds; no certificate, TLS 1.1 or an
unknown CA get no ACK; a certificate not in the table (or disabled, or without ``feed``) gets an AR -- and in
every refused case nothing is stored and a Security Alert is recorded.  Each recorded event is also checked
against the DICOM audit XSD."""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from atna.models import NodeIdentity
from tests.audit_messages import keep_captured, valid_messages
from tests.tls_files import PkiFiles, issue_files
from tests.xds_registry.registry_helpers import AUTHORITY
from xds_core import audit
from xds_core.affinity_domain import load_affinity_domain
from xds_core.identity import PeerCertificate
from xds_core.mllp import MllpError, frame, read_frames
from xds_core.tls import TlsSettings, client_context, server_context
from xds_registry import models as m
from xds_registry.patient_identity_feed.hl7v2 import Message, parse_message
from xds_registry.patient_identity_feed.mllp import MllpServer, send, serve_in_thread

pytestmark = pytest.mark.django_db(transaction=True)

BASE_DIR = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    """A CA; the registry's node certificate; clients by role (feed, consumer, unlisted); a stranger CA's
    client with the feed's very name."""
    return issue_files(tmp_path_factory.mktemp("feed-pki"), nodes={"server": "registry.test"},
                       clients={role: (role, role) for role in ("feed", "consumer", "unlisted")},
                       strangers={"stranger": ("feed", "feed")})


def settings_of(certs: PkiFiles, who: str) -> TlsSettings:
    return certs.settings(who)


def fingerprint(path: Path) -> str:
    return PeerCertificate.from_der(ssl.PEM_cert_to_DER_cert(path.read_text())).sha256


@pytest.fixture
def identities(certs: dict[str, Path]) -> None:
    NodeIdentity.objects.create(name="hospital-feed", cert_sha256=fingerprint(certs["feed"]), roles="feed")
    NodeIdentity.objects.create(name="hospital-consumer", cert_subject=PeerCertificate.from_der(
        ssl.PEM_cert_to_DER_cert(certs["consumer"].read_text())).subject, roles="consumer")


@pytest.fixture(autouse=True)
def _every_recorded_event_is_a_valid_audit_message(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    captured = keep_captured(monkeypatch)
    yield
    valid_messages(captured)


@pytest.fixture
def feed(certs: dict[str, Path], corpus_dir: Path, identities: None) -> Iterator[MllpServer]:
    domain = load_affinity_domain(corpus_dir / "affinity-domain" / "codes.xml")
    server, thread = serve_in_thread("127.0.0.1", 0, domain, ssl_context=server_context(settings_of(certs, "server")))
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def adt(pid: str, control: str = "TLS1") -> str:
    return ("MSH|^~\\&|PAT_IDENTITY_X_REF_MGR|ORG|XDS_REGISTRY|AFFINITY|20261127120000||ADT^A04^ADT_A01"
            f"|{control}|P|2.5\rEVN||20261127120000\rPID|||{pid}^^^IHEFACILITY&{AUTHORITY}&ISO||Doe^Jane||19800101|F\r"
            "PV1||O\r")


def new_pid() -> str:
    return f"T{uuid.uuid4().hex[:10]}"


def stored(pid: str) -> bool:
    return m.Patient.objects.filter(patient_id=f"{pid}^^^&{AUTHORITY}&ISO").exists()


def alerts(events: list[audit.AuditEvent], kind: audit.SecurityAlertType = audit.SecurityAlertType.NODE_AUTHENTICATION
           ) -> list[audit.AuditEvent]:
    return [e for e in events if kind in e.event_types]


def wait_until(condition, timeout: float = 5) -> bool:  # noqa: ANN001
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def ask(server: MllpServer, client: ssl.SSLContext | None, text: str) -> Message:
    return parse_message(send("127.0.0.1", server.server_address[1], text, ssl_context=client))


# --- accepted ---------------------------------------------------------------------------------------

def test_a_certificate_of_the_table_with_the_feed_role_feeds_and_is_named_in_the_audit_event(certs, feed) -> None:
    pid = new_pid()
    with audit.capture() as events:
        ack = ask(feed, client_context(settings_of(certs, "feed")), adt(pid))
    assert (ack.field("MSA", 1), ack.field("MSA", 2)) == ("AA", "TLS1")
    assert stored(pid)
    [event] = events
    assert event.transaction is audit.Transaction.ITI_8 and event.outcome is audit.EventOutcome.SUCCESS
    assert event.requestor is not None and event.requestor.user_name == "hospital-feed"
    assert event.requestor.user_id == "PAT_IDENTITY_X_REF_MGR|ORG"


# --- no ACK: the handshake fails ----------------------------------------------------------------------

def no_certificate(certs: dict[str, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(str(certs["ca"]))
    return context


@pytest.mark.parametrize("client", ["none", "stranger", "plain"])
def test_no_certificate_an_unknown_ca_or_plain_text_get_no_ack_store_nothing_and_raise_an_alert(
        certs, feed, client: str) -> None:
    context = {"none": no_certificate(certs), "stranger": client_context(settings_of(certs, "stranger")),
               "plain": None}[client]
    pid = new_pid()
    with audit.capture() as events:
        with pytest.raises((OSError, MllpError)):
            ask(feed, context, adt(pid))
        assert wait_until(lambda: len(alerts(events)) == 1)
    assert not stored(pid)
    assert [e.transaction for e in events] == [None]  # the alert, no ITI-8 event
    assert alerts(events)[0].objects[0].object_id == feed.uri


def test_tls_1_1_gets_no_ack_stores_nothing_and_raises_an_alert(certs, feed) -> None:
    pid = new_pid()
    with audit.capture() as events:
        result = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{feed.server_address[1]}", "-tls1_1",
             "-cipher", "DEFAULT@SECLEVEL=0", "-cert", str(certs["feed"]), "-key", str(certs["feed_key"]),
             "-CAfile", str(certs["ca"])],
            input=frame(adt(pid).encode()), capture_output=True, timeout=20)
        assert wait_until(lambda: len(alerts(events)) == 1)
    assert result.returncode != 0 and b"MSA" not in result.stdout
    assert not stored(pid)


# --- AR: authenticated, not authorized ----------------------------------------------------------------

def test_a_certificate_not_in_the_table_gets_ar_on_every_message_stores_nothing_and_raises_one_alert(
        certs, feed) -> None:
    first, second = new_pid(), new_pid()
    with audit.capture() as events:
        raw = socket.create_connection(feed.server_address[:2], timeout=10)
        with client_context(settings_of(certs, "unlisted")).wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            answers = read_frames(sock)
            acks = []
            for pid, control in ((first, "U1"), (second, "U2")):
                sock.sendall(frame(adt(pid, control).encode()))
                acks.append(parse_message(next(answers).decode()))
    for ack, control in zip(acks, ("U1", "U2"), strict=True):
        assert (ack.field("MSA", 1), ack.field("MSA", 2)) == ("AR", control)
        assert ack.component("ERR", 3, 1) == "207" and "not authorized" in ack.field("ERR", 8)
    assert not stored(first) and not stored(second)
    [alert] = alerts(events)
    assert alert.requestor is not None
    assert alert.requestor.user_id == "CN=unlisted,OU=unlisted,O=XDS-I.b demo affinity domain"
    refused = [e for e in events if e.transaction is audit.Transaction.ITI_8]
    assert [e.outcome for e in refused] == [audit.EventOutcome.SERIOUS_FAILURE] * 2
    assert all(e.requestor is not None and e.requestor.user_name == "" for e in refused)


def test_a_disabled_entry_gets_ar(certs, feed) -> None:
    NodeIdentity.objects.filter(name="hospital-feed").update(enabled=False)
    from atna.identities import forget

    forget()  # .update() sends no signal; the cache would otherwise keep the entry for its 30 s
    pid = new_pid()
    with audit.capture() as events:
        ack = ask(feed, client_context(settings_of(certs, "feed")), adt(pid))
    assert ack.field("MSA", 1) == "AR" and not stored(pid)
    assert len(alerts(events)) == 1


def test_an_identity_without_the_feed_role_gets_ar_and_a_restricted_function_alert(certs, feed) -> None:
    pid = new_pid()
    with audit.capture() as events:
        ack = ask(feed, client_context(settings_of(certs, "consumer")), adt(pid))
    assert ack.field("MSA", 1) == "AR" and not stored(pid)
    [alert] = alerts(events, audit.SecurityAlertType.USE_OF_RESTRICTED_FUNCTION)
    assert alert.requestor is not None and alert.requestor.user_name == "hospital-consumer"
    assert "lacks the role feed" in alert.outcome_description
    assert alerts(events) == []


# --- the command ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_the_listener_command_serves_tls_when_xds_tls_is_on(certs, tmp_path: Path) -> None:
    """The real command in its own process (own SQLite database): its start line says TLS on; a listed feed
    certificate feeds, a plain client gets nothing."""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'feed.sqlite3'}", "XDS_AFFINITY_DOMAIN_CODES": "",
           "PYTHONUNBUFFERED": "1", "XDS_TLS": "on", "XDS_TLS_CERT": str(certs["server"]),
           "XDS_TLS_KEY": str(certs["server_key"]), "XDS_TLS_CA": str(certs["ca"])}
    env.pop("XDS_ENV_FILE", None)
    manage = [sys.executable, str(BASE_DIR / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], env=env, check=True, cwd=BASE_DIR, timeout=180)
    subprocess.run([*manage, "shell", "-c", "from atna.models import NodeIdentity; NodeIdentity.objects.create("
                    f"name='feed', cert_sha256='{fingerprint(certs['feed'])}', roles='feed')"],
                   env=env, check=True, cwd=BASE_DIR, timeout=120)
    proc = subprocess.Popen([*manage, "xds_hl7_listener", "--port", "0"], env=env, cwd=BASE_DIR,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = next(text for text in iter(proc.stdout.readline, "") if "MLLP listener on" in text)
        assert "TLS on" in line
        port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))  # type: ignore[union-attr]
        pid = new_pid()
        ack = parse_message(send("127.0.0.1", port, adt(pid), ssl_context=client_context(settings_of(certs, "feed"))))
        assert ack.field("MSA", 1) == "AA"
        with pytest.raises((OSError, MllpError)):
            send("127.0.0.1", port, adt(new_pid()), timeout=5)
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
