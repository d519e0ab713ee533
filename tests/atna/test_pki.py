"""``manage.py xds_pki`` and the demo PKI (atna.pki_demo): idempotent, private keys private, usable by TLS."""

from __future__ import annotations

import io
import os
import ssl
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, pkcs12
from django.core.management import CommandError, call_command

from atna import identities
from atna.models import NodeIdentity
from atna.pki_demo import DEMO_NODES, DEMO_ROLES, RENEW_WITHIN, DemoPki, ensure_demo_pki
from xds_core.identity import PeerCertificate, Role
from xds_core.tls import TlsSettings, client_context, server_context


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _fingerprints(pki: DemoPki) -> dict[str, str]:
    return {str(f.cert): f.peer().sha256 for f in pki.all_files()}


def test_the_demo_pki_has_a_ca_a_node_per_site_and_a_client_per_role_with_private_keys_private(tmp_path: Path) -> None:
    pki, issued = ensure_demo_pki(tmp_path / "pki")

    assert issued == ["CA", *(f"node {n}" for n in DEMO_NODES), *(f"client {r.value}" for r in DEMO_ROLES)]
    assert _mode(pki.directory) == 0o700
    for files in pki.all_files():
        assert _mode(files.key) == 0o600, files.key
        assert _mode(files.cert.parent) == 0o700
    node = pki.node("hospital-a").certificate()
    names = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    usages = node.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {u.dotted_string for u in usages} == {"1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"}  # server + client
    consumer = pki.client(Role.CONSUMER)
    assert consumer.peer().subject == "CN=consumer,OU=consumer,O=XDS-I.b demo affinity domain"
    assert _mode(consumer.p12) == _mode(consumer.p12_password_file) == 0o600


def test_a_second_run_keeps_everything_and_only_the_missing_or_expiring_is_issued_again(tmp_path: Path) -> None:
    pki, _ = ensure_demo_pki(tmp_path / "pki")
    before = _fingerprints(pki)

    assert ensure_demo_pki(tmp_path / "pki")[1] == []
    assert _fingerprints(pki) == before

    pki.client(Role.FEED).cert.unlink()
    assert ensure_demo_pki(tmp_path / "pki")[1] == ["client feed"]
    # A year and 11 months on, every end-entity certificate (two years) is within RENEW_WITHIN of its end.
    later = datetime.now(UTC) + timedelta(days=730) - RENEW_WITHIN + timedelta(days=1)
    again = ensure_demo_pki(tmp_path / "pki", now=later)[1]
    assert again == [*(f"node {n}" for n in DEMO_NODES), *(f"client {r.value}" for r in DEMO_ROLES)]
    assert _fingerprints(pki)[str(pki.ca.cert)] == before[str(pki.ca.cert)]  # the CA (ten years) is kept


def test_a_new_ca_reissues_everything_under_it(tmp_path: Path) -> None:
    pki, _ = ensure_demo_pki(tmp_path / "pki")
    pki.ca.key.unlink()
    issued = ensure_demo_pki(tmp_path / "pki")[1]
    assert issued[0] == "CA" and len(issued) == 1 + len(DEMO_NODES) + len(DEMO_ROLES)
    ca = pki.ca.certificate()
    for files in pki.all_files()[1:]:
        files.certificate().verify_directly_issued_by(ca)


def test_node_and_client_certificates_complete_a_mutual_tls_handshake(tmp_path: Path) -> None:
    import socket
    import threading

    pki, _ = ensure_demo_pki(tmp_path / "pki")
    node, client = pki.node("domain"), pki.client(Role.CONSUMER)
    server = server_context(TlsSettings(True, str(node.cert), str(node.key), (str(pki.ca.cert),)))
    outbound = client_context(TlsSettings(True, str(client.cert), str(client.key), (str(pki.ca.cert),)))
    seen: list[PeerCertificate | None] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def serve() -> None:
            conn, _ = listener.accept()
            with server.wrap_socket(conn, server_side=True) as tls:
                from xds_core.tls import peer_certificate

                seen.append(peer_certificate(tls))
                tls.sendall(b"ok")

        thread = threading.Thread(target=serve)
        thread.start()
        with socket.create_connection(listener.getsockname()) as raw, outbound.wrap_socket(raw) as tls:
            assert tls.recv(2) == b"ok"
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
        thread.join(5)
    assert seen == [client.peer()]


@pytest.mark.django_db
def test_issue_writes_the_files_prints_the_fingerprint_and_register_adds_the_identity(tmp_path: Path,
                                                                                     settings) -> None:  # type: ignore[no-untyped-def]
    settings.XDS_PKI_DIR = tmp_path / "pki"
    ensure_demo_pki(settings.XDS_PKI_DIR)
    out = io.StringIO()

    call_command("xds_pki", "issue", "--role", "consumer", "--name", "ris-7", "--out", str(tmp_path / "out"),
                 "--p12", "--register", stdout=out)

    cert, key, p12 = (tmp_path / "out" / f"ris-7.{ext}" for ext in ("crt", "key", "p12"))
    assert _mode(key) == _mode(p12) == 0o600
    certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    fingerprint = certificate.fingerprint(hashes.SHA256()).hex()
    text = out.getvalue()
    assert PeerCertificate(fingerprint, "").colon_fingerprint in text  # as openssl x509 -fingerprint prints it
    assert "CN=ris-7,OU=consumer,O=XDS-I.b demo affinity domain" in text
    password = next(line.split("password: ")[1] for line in text.splitlines() if "password: " in line)
    loaded_key, loaded_cert, chain = pkcs12.load_key_and_certificates(p12.read_bytes(), password.encode())
    assert loaded_cert == certificate and loaded_key is not None
    assert [c.subject for c in chain] == [DemoPki(settings.XDS_PKI_DIR).ca.certificate().subject]
    row = NodeIdentity.objects.get(name="ris-7")
    assert (row.cert_sha256, row.roles, row.enabled) == (fingerprint, "consumer", True)
    identities.forget()
    found = identities.for_certificate(PeerCertificate.from_der(certificate.public_bytes(Encoding.DER)))
    assert found is not None and found.roles == frozenset({Role.CONSUMER})


@pytest.mark.django_db
def test_issuing_again_under_the_same_name_rotates_the_identity_to_the_new_certificate(tmp_path: Path,
                                                                                     settings) -> None:  # type: ignore[no-untyped-def]
    settings.XDS_PKI_DIR = tmp_path / "pki"
    ensure_demo_pki(settings.XDS_PKI_DIR)
    args = ["xds_pki", "issue", "--role", "source", "--name", "modality-1", "--out", str(tmp_path / "out"),
            "--register", "--source-id", "1.3.6.1.4.1.21367.13.80.111"]
    call_command(*args, stdout=io.StringIO())
    first = NodeIdentity.objects.get(name="modality-1").cert_sha256
    call_command(*args, stdout=io.StringIO())
    rows = NodeIdentity.objects.filter(name="modality-1")
    assert rows.count() == 1 and rows[0].cert_sha256 != first
    assert rows[0].identity().source_ids == ("1.3.6.1.4.1.21367.13.80.111",)


def test_issue_uses_the_ca_of_ca_dir_and_refuses_what_it_cannot_do(tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    settings.XDS_PKI_DIR = tmp_path / "nowhere"
    with pytest.raises(CommandError, match="no CA here"):
        call_command("xds_pki", "issue", "--role", "feed", "--name", "ris", "--out", str(tmp_path / "o"))
    other, _ = ensure_demo_pki(tmp_path / "other-ca", nodes=(), roles=())
    call_command("xds_pki", "issue", "--role", "feed", "--name", "ris", "--out", str(tmp_path / "o"),
                 "--ca-dir", str(other.directory), stdout=io.StringIO())
    x509.load_pem_x509_certificate((tmp_path / "o" / "ris.crt").read_bytes()).verify_directly_issued_by(
        other.ca.certificate())
    with pytest.raises(CommandError, match="at most 730 days"):
        call_command("xds_pki", "issue", "--role", "feed", "--name", "ris", "--out", str(tmp_path / "o"),
                     "--ca-dir", str(other.directory), "--days", "731")
    with pytest.raises(CommandError, match="letters, digits"):
        call_command("xds_pki", "issue", "--role", "feed", "--name", "../x", "--out", str(tmp_path / "o"),
                     "--ca-dir", str(other.directory))


@pytest.mark.django_db
def test_demo_list_and_show_describe_the_pki_and_the_rows_a_certificate_matches(tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    settings.XDS_PKI_DIR = tmp_path / "pki"
    out = io.StringIO()
    call_command("xds_pki", "demo", stdout=out)
    assert "issued CA, node domain" in out.getvalue()
    out = io.StringIO()
    call_command("xds_pki", "demo", stdout=out)
    assert "nothing issued" in out.getvalue()
    listed = io.StringIO()
    call_command("xds_pki", "list", stdout=listed)
    pki = DemoPki(settings.XDS_PKI_DIR)
    for files in pki.all_files():
        assert files.peer().sha256 in listed.getvalue()
    shown = io.StringIO()
    call_command("xds_pki", "show", "consumer", stdout=shown)
    assert "none on this node" in shown.getvalue()
    from atna.pki_demo import register

    register("demo-consumer", pki.client(Role.CONSUMER).peer(), [Role.CONSUMER])
    shown = io.StringIO()
    call_command("xds_pki", "show", str(pki.client(Role.CONSUMER).cert), stdout=shown)
    assert "identity    demo-consumer: roles consumer" in shown.getvalue()
    assert os.access(pki.ca.cert, os.R_OK)
    assert ssl.PEM_cert_to_DER_cert(pki.ca.cert.read_text())  # PEM, as XDS_TLS_CA reads it
