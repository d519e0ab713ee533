"""A test affinity domain's certificates on disk, for every TLS test (HTTP, MLLP, DICOM, the profile itself).

Real RSA keys and X.509 certificates from ``xds_core.pki``: one CA; node certificates (server and client,
subjectAltName localhost / 127.0.0.1); client certificates named by role; and clients of a CA nobody trusts.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from xds_core import pki
from xds_core.identity import PeerCertificate
from xds_core.tls import TlsSettings


class PkiFiles(dict[str, Path]):
    """``files["ca"]``, ``files[stem]`` (certificate) and ``files[f"{stem}_key"]`` (its key)."""

    def settings(self, stem: str) -> TlsSettings:
        """TLS settings presenting ``stem``'s certificate and trusting the CA."""
        return TlsSettings(enabled=True, cert=str(self[stem]), key=str(self[f"{stem}_key"]), ca=(str(self["ca"]),))

    def peer(self, stem: str) -> PeerCertificate:
        return PeerCertificate.from_der(ssl.PEM_cert_to_DER_cert(self[stem].read_text()))

    def fingerprint(self, stem: str) -> str:
        return self.peer(stem).sha256


def issue_files(root: Path, *, nodes: dict[str, str] | None = None,
                clients: dict[str, tuple[str, str]] | None = None,
                strangers: dict[str, tuple[str, str]] | None = None) -> PkiFiles:
    """Write a CA and the certificates asked for under ``root``.

    ``nodes``: stem -> common name; ``clients``: stem -> (common name, OU); ``strangers``: the same, signed by
    another CA (a peer that must be refused).
    """
    ca = pki.issue_ca()
    (root / "ca.crt").write_bytes(ca.cert_pem)
    files = PkiFiles(ca=root / "ca.crt")
    issued = {stem: pki.issue(ca, name, dns_names=("localhost",), addresses=("127.0.0.1",))
              for stem, name in (nodes or {}).items()}
    issued |= {stem: pki.issue(ca, name, unit=unit) for stem, (name, unit) in (clients or {}).items()}
    if strangers:
        other = pki.issue_ca("Stranger CA")
        issued |= {stem: pki.issue(other, name, unit=unit) for stem, (name, unit) in strangers.items()}
    for stem, one in issued.items():
        files[stem], files[f"{stem}_key"] = one.write(root, stem)
    return files
