"""The web server's worker (config/http_worker.py) in a real gunicorn: slow clients cannot exhaust it.

The server runs one process with two threads, so that two held threads would be all of them: every
check below that "the server still answers" would fail with gunicorn's own workers.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from config.http_worker import GuardPolicy, _bytes_to_read_ahead
from tests.faults.figures import report
from tests.gunicorn_server import Server, run_gunicorn

WINDOW = 2  # seconds: XDS_HTTP_RATE_WINDOW of the test server (the default is 30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    var = tmp_path_factory.mktemp("http-worker")
    settings = {"XDS_VAR_DIR": str(var), "DATABASE_URL": f"sqlite:///{var / 'db.sqlite3'}",
                "XDS_HTTP_RATE_WINDOW": str(WINDOW), "XDS_HTTP_MIN_RATE": "1024", "XDS_HTTP_SEND_TIMEOUT": "3",
                "XDS_PORTAL_JOURNAL": "false"}
    with run_gunicorn(settings, spool=var / "spool", migrate=True, workers=1, threads=2) as running:
        yield running


def _address(server: Server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def _open(server: Server, first_bytes: bytes) -> socket.socket:
    sock = socket.create_connection(_address(server), timeout=10)
    sock.sendall(first_bytes)
    return sock


def _wsdl_seconds(server: Server) -> float:
    started = time.monotonic()
    response = requests.get(f"{server.url}/xds/registry?wsdl", timeout=10)
    assert response.status_code == 200
    return time.monotonic() - started


def _answer(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    try:
        return sock.recv(4096)
    except (TimeoutError, ConnectionResetError):
        return b""
    finally:
        sock.close()


def _drip(socks: list[socket.socket], seconds: float, every: float = 0.5) -> None:
    """One byte per connection every ``every`` seconds (far below 1 kB/s)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for sock in socks:
            try:
                sock.send(b"x")
            except OSError:
                pass
        time.sleep(every)


HEAD = b"POST /xds/registry HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/soap+xml\r\n"


@pytest.mark.slow
def test_slow_heads_and_small_bodies_hold_no_thread_and_are_dropped_with_408(server: Server) -> None:
    held = [_open(server, b"GET /xds/regi") for _ in range(25)]  # heads dripping
    held += [_open(server, HEAD + b"Content-Length: 100000\r\n\r\n<") for _ in range(25)]  # small bodies dripping
    time.sleep(0.3)
    latencies = [_wsdl_seconds(server) for _ in range(40)]  # 2 threads, 50 slow clients: still answered
    _drip(held, WINDOW * 2.5)
    answers = [_answer(sock, 2) for sock in held]
    dropped = sum(answer.startswith(b"HTTP/1.1 408 ") for answer in answers)
    report("http-slow-read-ahead", slow_clients=len(held), threads=2, max_ms=max(latencies) * 1000,
           dropped_408=dropped, window_s=WINDOW)
    assert max(latencies) < 1.0
    assert dropped == len(held)
    assert sum("phase=read-ahead" in line for line in server.log) >= len(held)


@pytest.mark.slow
def test_a_large_body_below_the_minimum_rate_frees_its_thread_within_a_window(server: Server) -> None:
    # Bodies too large to read ahead go to a thread: both threads are taken by dripping clients ...
    held = [_open(server, HEAD + b"Content-Length: 10000000\r\n\r\n<") for _ in range(2)]
    started = time.monotonic()
    _drip(held, WINDOW * 2)
    # ... and freed by the rate guard: the requests end (the SOAP layer answers a truncated body with 400),
    # and the server answers others.
    answers = [_answer(sock, 3) for sock in held]
    assert all(answer.startswith(b"HTTP/1.1 400 ") for answer in answers), answers
    assert _wsdl_seconds(server) < 1.0
    assert time.monotonic() - started < WINDOW * 4
    assert sum("phase=thread" in line for line in server.log) >= 2


@pytest.mark.slow
def test_a_fast_large_upload_and_keep_alive_requests_pass(server: Server) -> None:
    # 3 MB (past the read-ahead size) sent at full speed: read in the thread, answered by the SOAP layer.
    body = b"<x>" + b"a" * 3_000_000 + b"</x>"
    response = requests.post(f"{server.url}/xds/registry", data=body,
                             headers={"Content-Type": "application/soap+xml"}, timeout=30)
    assert response.status_code in (400, 500)
    assert b"Fault" in response.content
    with requests.Session() as session:  # several requests on one kept-alive connection
        for _ in range(5):
            assert session.get(f"{server.url}/xds/registry?wsdl", timeout=10).status_code == 200


def test_read_ahead_covers_small_bodies_of_known_length_only() -> None:
    policy = GuardPolicy(prebuffer=1000)
    head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10"
    assert _bytes_to_read_ahead(head, 100, policy) == 110
    assert _bytes_to_read_ahead(b"POST / HTTP/1.1\r\nContent-Length: 5000", 100, policy) == 100  # streams
    assert _bytes_to_read_ahead(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked", 100, policy) == 100
    # RFC 9110 10.1.1: the client waits for 100 Continue before its body: do not wait for the body.
    assert _bytes_to_read_ahead(head + b"\r\nExpect: 100-continue", 100, policy) == 100
    # Two lengths or a bad number: gunicorn's parser refuses the request; nothing is waited for.
    assert _bytes_to_read_ahead(head + b"\r\nContent-Length: 10", 100, policy) == 100
    assert _bytes_to_read_ahead(b"POST / HTTP/1.1\r\nContent-Length: -1", 100, policy) == 100


def test_policy_minimum_rate_is_per_window() -> None:
    policy = GuardPolicy(min_rate=1024, window=30)
    assert policy.too_slow(30 * 1024 - 1)
    assert not policy.too_slow(30 * 1024)


def test_the_worker_is_what_make_run_starts() -> None:
    from config import supervisor

    web = supervisor.node_services(8999, 2, [])[0].argv
    assert "config.http_worker.GuardedThreadWorker" in web
    assert "--threads" in web



@pytest.mark.slow
def test_a_client_that_stops_reading_its_answer_frees_the_thread(server: Server) -> None:
    from tests.xds_repository.conftest import PATIENT_ID, Doc, provide_and_register_parts
    from xds_core.ebxml import serialize as ebxml_serialize
    from xds_core.ebxml.messages import DocumentRequest
    from xds_core.safe_xml import to_bytes
    from xds_core.soap.client import SoapClient
    from xds_core.soap.envelope import build_envelope
    from xds_core.vocabulary import Action

    var = server.spool.parent  # the module's server: its XDS_VAR_DIR and database
    env = {**os.environ, "XDS_VAR_DIR": str(var), "DATABASE_URL": f"sqlite:///{var / 'db.sqlite3'}",
           "DJANGO_SETTINGS_MODULE": "config.settings", "SECRET_KEY": "end-to-end-test-key-not-secret-" + "x" * 20}
    subprocess.run([sys.executable, "manage.py", "shell", "-c", "from xds_registry.patient_identity_feed.patients "
                    f"import add_or_update_patient; add_or_update_patient({PATIENT_ID!r})"],
                   cwd=Path(__file__).resolve().parents[2], env=env, check=True, capture_output=True, timeout=120)
    doc = Doc(content=b"\x00" * 40_000_000)  # far more than the socket buffers hold
    body, parts, _ = provide_and_register_parts([doc])
    result = SoapClient(f"{server.url}/xds/repository", timeout=60).call(
        Action.ProvideAndRegisterDocumentSet, body, parts=parts, mtom=True)
    assert result.fault is None
    envelope = to_bytes(build_envelope(Action.RetrieveDocumentSet, ebxml_serialize.retrieve_document_set_request(
        [DocumentRequest("1.3.6.1.4.1.21367.13.70.201", doc.unique_id)])))
    held = []
    for _ in range(2):  # both threads: each writes an answer nobody reads
        sock = socket.create_connection(_address(server), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"POST /xds/repository HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/soap+xml; "
                     b'charset=UTF-8; action="urn:ihe:iti:2007:RetrieveDocumentSet"\r\n'
                     + f"Content-Length: {len(envelope)}\r\n\r\n".encode() + envelope)
        held.append(sock)
    started = time.monotonic()
    assert _wsdl_seconds(server) < 3 + 5  # XDS_HTTP_SEND_TIMEOUT of the test server, and a margin
    report("http-send-timeout", send_timeout_s=3, freed_after_s=time.monotonic() - started)
    for sock in held:
        sock.close()
