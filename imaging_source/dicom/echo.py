"""C-ECHO (Verification SOP Class, PS3.4 Annex A; PS3.7 9.1.5): is a DICOM peer there and answering?

Used by the portal's status page and ``/healthz`` for the local PACS and for our own listener.  The
answer is a word, never an exception: a peer that is down is a state, not an error.  A plain TCP
connect comes first so that "connection refused" / "timed out" / "unknown host" can be told apart
(pynetdicom only says that the association failed).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from pynetdicom.sop_class import Verification

from imaging_source.dicom.ae import make_ae
from imaging_source.dicom.config import Peer


@dataclass(frozen=True)
class EchoResult:
    ok: bool
    detail: str  # "C-ECHO Success" or what went wrong, in words
    seconds: float


def network_error(exc: OSError) -> str:
    """An OSError of a connect in words (no addresses beyond what the caller shows anyway)."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    return exc.strerror or type(exc).__name__


def echo(calling_ae: str, peer: Peer, timeout: float = 1.5) -> EchoResult:
    """Send one C-ECHO from ``calling_ae`` to ``peer``; every network step is bounded by ``timeout``."""
    started = time.monotonic()

    def result(ok: bool, detail: str) -> EchoResult:
        return EchoResult(ok, detail, time.monotonic() - started)

    try:
        socket.create_connection((peer.host, peer.port), timeout=timeout).close()
    except OSError as exc:
        return result(False, network_error(exc))
    ae = make_ae(calling_ae, timeouts={"connection": timeout, "acse": timeout, "dimse": timeout,
                                       "network": timeout})
    ae.add_requested_context(Verification)
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, tls_args=peer.tls_args)
    if not assoc.is_established:
        state = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "not established"
        return result(False, f"association {state}")
    try:
        status = assoc.send_c_echo()
        code = getattr(status, "Status", None)
        if code is None:
            return result(False, "no C-ECHO answer")
        if code != 0x0000:
            return result(False, f"C-ECHO status 0x{code:04X}")
        return result(True, "C-ECHO Success")
    finally:
        if assoc.is_established:
            assoc.release()
