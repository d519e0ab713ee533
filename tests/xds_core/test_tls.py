"""The ITI-19 TLS profile over real sockets: floor, suites, mutual authentication, CA and pinned trust."""

from __future__ import annotations

import http.server
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.tls_files import PkiFiles, issue_files
from xds_core import pki
from xds_core.identity import PeerCertificate, normalize_fingerprint
from xds_core.tls import (
    TlsConfigurationError,
    TlsSettings,
    client_context,
    peer_certificate,
    requests_adapter,
    server_context,
)


@pytest.fixture(scope="module")
def domain(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    """A CA, a server node, a client signed by the CA, a stranger CA's client, a self-signed pinned client."""
    root = tmp_path_factory.mktemp("pki")
    paths = issue_files(root, nodes={"server": "server.test"}, clients={"client": ("consumer", "consumer")},
                        strangers={"stranger": ("intruder", "")})
    pinned = pki.self_signed("pinned-peer")
    paths["pinned"], paths["pinned_key"] = pinned.write(root, "pinned")
    (root / "pinned.der").write_bytes(pinned.der)
    paths["pinned_der"] = root / "pinned.der"
    return paths


def _server_settings(domain: dict[str, Path], **overrides: object) -> TlsSettings:
    values: dict[str, object] = {"enabled": True, "cert": str(domain["server"]), "key": str(domain["server_key"]),
                                 "ca": (str(domain["ca"]),), "pinned": ()}
    values.update(overrides)
    return TlsSettings(**values)  # type: ignore[arg-type]


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        peer = peer_certificate(self.connection)  # type: ignore[arg-type]
        body = (peer.subject if peer else "none").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def https_server(domain: dict[str, Path]) -> Iterator[tuple[str, int]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    context = server_context(_server_settings(domain, pinned=(str(domain["pinned_der"]),)))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[:2]  # type: ignore[misc]
    server.shutdown()
    server.server_close()


def _client(domain: dict[str, Path], cert: str, key: str) -> requests.Session:
    session = requests.Session()
    session.mount("https://", requests_adapter(TlsSettings(enabled=True, cert=str(domain[cert]),
                                                           key=str(domain[key]), ca=(str(domain["ca"]),))))
    return session


def test_a_client_certificate_of_the_ca_is_accepted_and_reaches_the_application(domain, https_server) -> None:
    host, port = https_server
    answer = _client(domain, "client", "client_key").get(f"https://{host}:{port}/", timeout=10)
    assert answer.status_code == 200
    assert answer.text == "CN=consumer,OU=consumer,O=XDS-I.b demo affinity domain"


def test_a_pinned_self_signed_certificate_is_accepted(domain, https_server) -> None:
    host, port = https_server
    answer = _client(domain, "pinned", "pinned_key").get(f"https://{host}:{port}/", timeout=10)
    assert answer.text == "CN=pinned-peer,O=XDS-I.b"


def test_a_certificate_of_another_ca_is_refused(domain, https_server) -> None:
    host, port = https_server
    with pytest.raises(requests.exceptions.ConnectionError):
        _client(domain, "stranger", "stranger_key").get(f"https://{host}:{port}/", timeout=10)


def test_a_client_without_a_certificate_is_refused(domain, https_server) -> None:
    host, port = https_server
    context = ssl.create_default_context(cafile=str(domain["ca"]))
    context.check_hostname = False
    with socket.create_connection((host, port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=host) as sock:
        # TLS 1.3 reports a missing client certificate after the handshake, at the first read.
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert sock.recv(100) == b""  # nothing answered either
            raise ConnectionResetError


@pytest.mark.parametrize("flag", ["-tls1_1", "-tls1"])
def test_tls_1_1_and_1_0_are_refused(domain, https_server, flag: str) -> None:
    host, port = https_server
    result = subprocess.run(["openssl", "s_client", "-connect", f"{host}:{port}", flag, "-cert", str(domain["client"]),
                             "-key", str(domain["client_key"]), "-CAfile", str(domain["ca"])],
                            input=b"", capture_output=True, timeout=20)
    assert result.returncode != 0
    assert b"Cipher is (NONE)" in result.stdout or b"no protocols available" in result.stderr


@pytest.mark.parametrize("cipher", ["DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384",
                                    "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384"])
def test_each_suite_ihe_requires_is_negotiated_over_tls_1_2(domain, https_server, cipher: str) -> None:
    host, port = https_server
    result = subprocess.run(["openssl", "s_client", "-connect", f"{host}:{port}", "-tls1_2", "-cipher", cipher,
                             "-cert", str(domain["client"]), "-key", str(domain["client_key"]),
                             "-CAfile", str(domain["ca"])],
                            input=b"GET / HTTP/1.0\r\n\r\n", capture_output=True, timeout=20)
    assert f"Cipher is {cipher}".encode() in result.stdout, result.stdout[-500:]


def test_a_weak_suite_is_refused(domain, https_server) -> None:
    host, port = https_server
    result = subprocess.run(["openssl", "s_client", "-connect", f"{host}:{port}", "-tls1_2", "-cipher", "AES128-SHA",
                             "-cert", str(domain["client"]), "-key", str(domain["client_key"])],
                            input=b"", capture_output=True, timeout=20)
    assert b"Cipher is (NONE)" in result.stdout or result.returncode != 0


def test_the_client_refuses_a_server_it_does_not_trust(domain, tmp_path: Path) -> None:
    rogue = pki.issue(pki.issue_ca("Rogue"), "rogue", addresses=("127.0.0.1",))
    cert, key = rogue.write(tmp_path, "rogue")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    context = server_context(_server_settings(domain, cert=str(cert), key=str(key)))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(requests.exceptions.SSLError):
            _client(domain, "client", "client_key").get(f"https://127.0.0.1:{server.server_address[1]}/", timeout=10)
    finally:
        server.shutdown()
        server.server_close()


def test_requests_does_not_add_public_cas_to_the_trust(domain, https_server) -> None:
    host, port = https_server
    session = _client(domain, "client", "client_key")
    session.get(f"https://{host}:{port}/", timeout=10)
    context = session.get_adapter("https://x")._context  # type: ignore[attr-defined]
    assert context.cert_store_stats()["x509_ca"] <= 1  # our CA only, no certifi bundle


def test_settings_report_every_problem_at_once(tmp_path: Path) -> None:
    problems = TlsSettings(enabled=True, cert=str(tmp_path / "no.crt")).problems()
    assert any("XDS_TLS_KEY" in p for p in problems)
    assert any("XDS_TLS_CA" in p for p in problems)
    assert any("no.crt" in p for p in problems)
    assert TlsSettings(enabled=False).problems() == []


def test_a_key_that_does_not_match_is_a_configuration_error(domain) -> None:
    with pytest.raises(TlsConfigurationError):
        client_context(TlsSettings(enabled=True, cert=str(domain["client"]), key=str(domain["server_key"]),
                                   ca=(str(domain["ca"]),)))


def test_a_garbage_trust_file_is_a_configuration_error(domain, tmp_path: Path) -> None:
    junk = tmp_path / "junk.der"
    junk.write_bytes(b"\x30\x03junk")
    with pytest.raises(TlsConfigurationError):
        server_context(_server_settings(domain, ca=(str(junk),)))


def test_fingerprints_are_normalized_and_validated(domain) -> None:
    peer = PeerCertificate.from_der(ssl.PEM_cert_to_DER_cert(domain["client"].read_text()))
    assert normalize_fingerprint(peer.colon_fingerprint) == peer.sha256
    with pytest.raises(ValueError):
        normalize_fingerprint("abc")
