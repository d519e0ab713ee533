"""A small PKI and TLS clients for the HTTPS tests of the web worker and the identity middleware.

Certificates are issued by ``xds_core.pki`` (real RSA keys, real X.509); clients are real ``ssl`` sockets and
``requests`` sessions with ``xds_core.tls``'s adapter.  Each raw client may bind its own loopback source
address (127.0.0.N): Security Alerts are rate-limited per peer address, so tests that each expect an alert
come from different addresses.
"""

from __future__ import annotations

import json
import socket
import ssl
import warnings
from dataclasses import dataclass
from pathlib import Path

import requests

from xds_core import pki
from xds_core.identity import PeerCertificate
from xds_core.tls import TlsSettings, requests_adapter

#: Security Alert (PS3.15 A.5.3.11) and its Node Authentication type (ITI TF-2a Table 3.20.4.1.1.1-1).
SECURITY_ALERT = "110113"
NODE_AUTHENTICATION = "110126"


@dataclass
class Pki:
    """Files of a test affinity domain: one CA; node certificates (server + client) and client ones."""

    root: Path
    ca: Path
    ca_issued: pki.Issued

    def issue(self, name: str, *, node: bool = False, unit: str = "") -> None:
        issued = pki.issue(self.ca_issued, name, unit=unit, server=node,
                           **({"dns_names": ("localhost",), "addresses": ("127.0.0.1",)} if node else {}))
        issued.write(self.root, name)

    def cert(self, name: str) -> Path:
        return self.root / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.root / f"{name}.key"

    def peer(self, name: str) -> PeerCertificate:
        return PeerCertificate.from_der(ssl.PEM_cert_to_DER_cert(self.cert(name).read_text()))

    def node_settings(self, name: str) -> dict[str, str]:
        """The XDS_TLS* settings of a node serving with certificate ``name`` and trusting the CA."""
        return {"XDS_TLS": "on", "XDS_TLS_CERT": str(self.cert(name)), "XDS_TLS_KEY": str(self.key(name)),
                "XDS_TLS_CA": str(self.ca)}

    def session(self, name: str) -> requests.Session:
        """A requests session presenting certificate ``name`` (and trusting the CA)."""
        session = requests.Session()
        session.mount("https://", requests_adapter(TlsSettings(enabled=True, cert=str(self.cert(name)),
                                                               key=str(self.key(name)), ca=(str(self.ca),))))
        return session

    def context(self, name: str | None, *, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        """A client context presenting ``name`` (None: no certificate), trusting the CA; no hostname check."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.load_verify_locations(str(self.ca))
        if name is not None:
            context.load_cert_chain(str(self.cert(name)), str(self.key(name)))
        if maximum is not None:  # an outdated client, on purpose (TLS 1.0/1.1 are deprecated in Python)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                context.minimum_version = ssl.TLSVersion.TLSv1
                context.maximum_version = maximum
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
        return context


def build_pki(root: Path, *, nodes: tuple[str, ...] = ("node",),
              clients: tuple[str, ...] = ("consumer", "unlisted")) -> Pki:
    """A CA under ``root``, node certificates ``nodes``, client certificates ``clients`` and ``stranger``
    (a client certificate of another CA)."""
    ca = pki.issue_ca("Test affinity domain CA")
    (root / "ca.crt").write_bytes(ca.cert_pem)
    found = Pki(root, root / "ca.crt", ca)
    for name in nodes:
        found.issue(name, node=True)
    for name in clients:
        found.issue(name, unit=name)
    pki.issue(pki.issue_ca("Stranger CA"), "stranger", server=False).write(root, "stranger")
    return found


def identity_rows(rows: dict[str, tuple[str, str]]) -> str:
    """Python for ``manage.py shell``: node identity rows ``name -> (sha256, roles)``."""
    lines = ["from atna.models import NodeIdentity"]
    for name, (sha256, roles) in rows.items():
        lines.append(f"NodeIdentity.objects.create(name={name!r}, cert_sha256={sha256!r}, roles={roles!r})")
    return "\n".join(lines)


def tls_request(address: tuple[str, int], context: ssl.SSLContext, request: bytes, *,
                source: str = "127.0.0.1", timeout: float = 10) -> bytes:
    """Connect from ``source``, handshake, send ``request``, read until the server closes or times out.
    Whatever the server answered (b"" if nothing); a failed handshake or an alert also gives what came."""
    raw = socket.create_connection(address, timeout=timeout, source_address=(source, 0))
    received = b""
    try:
        with context.wrap_socket(raw) as sock:
            sock.sendall(request)
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                received += data
                if b"\r\n\r\n" in received and b"Connection: close" not in received:
                    break
    except (ssl.SSLError, OSError):
        pass
    finally:
        raw.close()
    return received


def audit_events(path: Path) -> list[dict]:  # type: ignore[type-arg]
    """The JSON lines the server's capture hook wrote (tests/gunicorn_audit_capture.py)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def node_authentication_alerts(path: Path, address: str) -> list[dict]:  # type: ignore[type-arg]
    """Security Alerts (Node Authentication) whose refused peer came from ``address``."""
    return [e for e in audit_events(path)
            if e["event_id"] == SECURITY_ALERT and NODE_AUTHENTICATION in e["event_types"]
            and any(p["is_requestor"] and p["network_address"] == address for p in e["participants"])]
