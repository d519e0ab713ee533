"""The web worker terminating TLS (ITI-19) in a real gunicorn: who completes a request, who is refused and alerted,
and the issue-15 slow-client properties under TLS.

One server process with two threads (as tests/config/test_http_worker.py): two held threads would be all of
them.  Clients are real TLS sockets and ``openssl s_client``; refusals are read back from the server's audit
events (tests/gunicorn_audit_capture.py).  Raw clients expecting an alert each use their own loopback source
address, since alerts are rate-limited per peer address.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from tests.atna.https_peers import Pki, audit_events, build_pki, identity_rows, node_authentication_alerts, tls_request
from tests.gunicorn_server import Server, run_gunicorn
from xds_core import ns
from xds_core.ebxml import serialize as ebxml_serialize
from xds_core.soap.client import SoapClient
from xds_core.vocabulary import Action, ReturnType, StoredQuery

WINDOW = 2  # seconds: XDS_HTTP_RATE_WINDOW of the test server
GET = b"GET /xds/registry HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@pytest.fixture(scope="module")
def domain(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return build_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def audit_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audit") / "events.jsonl"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, domain: Pki, audit_file: Path) -> Iterator[Server]:
    var = tmp_path_factory.mktemp("https-worker")
    settings = {"XDS_VAR_DIR": str(var), "DATABASE_URL": f"sqlite:///{var / 'db.sqlite3'}",
                "XDS_HTTP_RATE_WINDOW": str(WINDOW), "XDS_HTTP_MIN_RATE": "1024", "XDS_HTTP_SEND_TIMEOUT": "3",
                "XDS_PORTAL_JOURNAL": "false", **domain.node_settings("node")}
    # The consumer certificate is in the identity table; "unlisted" is of the same CA but is not.
    setup = identity_rows({"consumer-b": (domain.peer("consumer").sha256, "consumer")})
    with run_gunicorn(settings, spool=var / "spool", migrate=True, workers=1, threads=2,
                      session=domain.session("consumer"), setup=setup, audit_file=audit_file) as running:
        yield running


def _address(server: Server) -> tuple[str, int]:
    host, port = server.url.removeprefix("https://").split(":")
    return host, int(port)


def _alerts(audit_file: Path, address: str, *, within: float = 5.0) -> list[dict]:  # type: ignore[type-arg]
    deadline = time.monotonic() + within
    while not (found := node_authentication_alerts(audit_file, address)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


def test_the_consumer_certificate_is_answered_over_https(server: Server, domain: Pki) -> None:
    assert server.url.startswith("https://")
    answer = domain.session("consumer").get(f"{server.url}/xds/registry?wsdl", timeout=10)
    assert answer.status_code == 200 and b"<definitions" in answer.content
    # The WSDL names the endpoint as the client reached it: https (wsgi.url_scheme from the worker).
    assert f'location="{server.url}/xds/registry"'.encode() in answer.content


def test_a_client_without_a_certificate_completes_no_request_and_is_alerted(
        server: Server, domain: Pki, audit_file: Path) -> None:
    assert tls_request(_address(server), domain.context(None), GET, source="127.0.0.2") == b""
    [alert] = _alerts(audit_file, "127.0.0.2")
    assert "CERTIFICATE" in alert["description"].upper()
    assert alert["outcome"] == 4  # mitigated: refused


def test_a_certificate_of_another_ca_completes_no_request_and_is_alerted(
        server: Server, domain: Pki, audit_file: Path) -> None:
    assert tls_request(_address(server), domain.context("stranger"), GET, source="127.0.0.3") == b""
    [alert] = _alerts(audit_file, "127.0.0.3")
    assert "not trusted" in alert["description"]
    requestor = next(p for p in alert["participants"] if p["is_requestor"])
    assert requestor["user_id"] == "unauthenticated peer"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is a test requirement (README)")
def test_tls_1_1_completes_no_request_with_openssl_s_client_and_is_alerted(
        server: Server, domain: Pki, audit_file: Path) -> None:
    host, port = _address(server)
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"{host}:{port}", "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0",
         "-cert", str(domain.cert("consumer")), "-key", str(domain.key("consumer")), "-CAfile", str(domain.ca),
         "-ign_eof"], input=GET, capture_output=True, timeout=30)
    assert result.returncode != 0
    assert b"HTTP/1.1" not in result.stdout
    assert tls_request((host, port), domain.context("consumer", maximum=ssl.TLSVersion.TLSv1_1), GET,
                       source="127.0.0.4") == b""
    [alert] = _alerts(audit_file, "127.0.0.4")
    assert "PROTOCOL" in alert["description"].upper()


def test_a_certificate_not_in_the_identity_table_gets_403_and_soap_gets_failed_authentication(
        server: Server, domain: Pki, audit_file: Path) -> None:
    session = domain.session("unlisted")
    page = session.get(f"{server.url}/xds/registry", timeout=10)
    assert page.status_code == 403 and page.headers["Content-Type"].startswith("text/plain")
    query = ebxml_serialize.adhoc_query_request(StoredQuery.FindDocuments, [
        ("$XDSDocumentEntryPatientId", ["'P1^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO'"]),
        ("$XDSDocumentEntryStatus", ["('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"])],
        return_type=ReturnType.ObjectRef)
    result = SoapClient(f"{server.url}/xds/registry", session=session, timeout=10).call(
        Action.RegistryStoredQuery, query)
    assert result.http_status == 403 and result.fault is not None
    assert result.fault.code == "Sender"
    assert result.fault.subcode == f"{{{ns.WSSE}}}FailedAuthentication"
    alerts = [a for a in _alerts(audit_file, "127.0.0.1") if "identity table" in a["description"]]
    assert alerts, audit_events(audit_file)
    requestor = next(p for p in alerts[0]["participants"] if p["is_requestor"])
    assert requestor["user_id"] == domain.peer("unlisted").subject


def test_iti18_over_https_is_audited_with_the_requestor_node_identity(
        server: Server, domain: Pki, audit_file: Path) -> None:
    query = ebxml_serialize.adhoc_query_request(StoredQuery.FindDocuments, [
        ("$XDSDocumentEntryPatientId", ["'P1^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO'"]),
        ("$XDSDocumentEntryStatus", ["('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"])],
        return_type=ReturnType.ObjectRef)
    result = SoapClient(f"{server.url}/xds/registry", session=domain.session("consumer"), timeout=10).call(
        Action.RegistryStoredQuery, query)
    assert result.http_status == 200 and result.fault is None
    assert etree.QName(result.body).localname == "AdhocQueryResponse"
    deadline = time.monotonic() + 5
    while not (found := [e for e in audit_events(audit_file) if e["transaction"] == "ITI-18"]):
        assert time.monotonic() < deadline, audit_events(audit_file)
        time.sleep(0.1)
    requestor = next(p for p in found[0]["participants"] if p["is_requestor"])
    assert requestor["user_name"] == "consumer-b"
    assert requestor["alternative_user_id"] == domain.peer("consumer").subject
    assert requestor["network_address"] == "127.0.0.1"


def test_keep_alive_works_under_tls(server: Server, domain: Pki) -> None:
    raw = socket.create_connection(_address(server), timeout=10)
    with domain.context("consumer").wrap_socket(raw) as sock:
        for _ in range(3):  # three requests, one connection
            sock.sendall(GET)
            answer = b""
            while b"endpoint (registry)" not in answer:
                data = sock.recv(65536)
                assert data, answer
                answer += data
            assert answer.startswith(b"HTTP/1.1 200")


@pytest.mark.slow
def test_silent_tls_clients_hold_no_thread_and_are_closed_at_the_handshake_deadline(
        server: Server, domain: Pki) -> None:
    """50 connections that never send a ClientHello, 2 threads: a good client is still answered at once."""
    silent = [socket.create_connection(_address(server), timeout=20) for _ in range(50)]
    try:
        session = domain.session("consumer")
        for _ in range(5):
            started = time.monotonic()
            assert session.get(f"{server.url}/xds/registry", timeout=10).status_code == 200
            assert time.monotonic() - started < 1.0
            time.sleep(0.5)
        # HANDSHAKE_SECONDS (10 s) after connecting, the server closes them.
        silent[0].settimeout(15)
        started = time.monotonic()
        assert silent[0].recv(1) == b""
        assert time.monotonic() - started < 12
    finally:
        for sock in silent:
            sock.close()


@pytest.mark.slow
def test_a_slow_drip_body_under_tls_is_dropped_by_the_minimum_rate(server: Server, domain: Pki) -> None:
    raw = socket.create_connection(_address(server), timeout=20)
    with domain.context("consumer").wrap_socket(raw) as sock:
        sock.sendall(b"POST /xds/registry HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/soap+xml\r\n"
                     b"Content-Length: 10000\r\n\r\n")
        started = time.monotonic()
        answer = b""
        sock.settimeout(0.5)
        while time.monotonic() - started < 4 * WINDOW + 4:
            try:
                sock.send(b"x")
            except OSError:
                break
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            answer += data
        assert time.monotonic() - started < 4 * WINDOW + 4, "the dripping client was never dropped"
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408")
    # The server still answers.
    assert domain.session("consumer").get(f"{server.url}/xds/registry", timeout=10).status_code == 200
