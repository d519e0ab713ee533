"""A bound on the PDU length a peer may declare, checked before pynetdicom reads the PDU.

pynetdicom 3.0.4 reads a PDU in ``DULServiceProvider._read_pdu_data`` (dul.py): six header bytes
(PDU type, reserved, 32-bit length; PS3.8 9.3.1), then ``socket.recv(length)``, which loops until
``length`` bytes have arrived and appends them to one ``bytearray``.  Whatever length the peer
declares (up to 4 GiB) is read into memory, then copied again to decode it (issue 15).

PS3.8 D.1 (Maximum Length Sub-Item): the receiver of an association states the largest variable
field of a P-DATA-TF PDU it will accept; a P-DATA-TF PDU longer than that is a protocol violation.
The other PDUs are small: an A-ASSOCIATE-RQ/AC carries presentation contexts and user identity
(each identity field at most 65535 bytes, PS3.7 D.3.3.7), the rest have a 4-byte variable field
(PS3.8 9.3.4 - 9.3.8).

:func:`guard_pdu_reader` wraps the reader of one association's DUL: it reads the header itself,
and a declared length past :meth:`PduLimits.cap` gets an A-ABORT (source: service-provider, reason:
invalid-PDU-parameter value, PS3.8 Table 9-26) and the transport is closed - nothing more is read
from the socket, nothing allocated.  A header within the limit is handed back to pynetdicom's own
reader, which reads and decodes the PDU as before.  ``tests/imaging_source/dicom/test_pdu_limits.py``
pins the wrapped function (its source) and checks the behaviour on a real socket, so an upgrade of
pynetdicom that changes the reader fails the suite instead of silently dropping the check.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from enum import IntEnum
from functools import partial
from typing import Any

from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ

logger = logging.getLogger(__name__)

#: PS3.8 9.3.1: every PDU starts with PDU-type (1), reserved (1), PDU-length (4, big endian).
PDU_HEADER = struct.Struct(">BBL")


class PduType(IntEnum):
    """PDU types (PS3.8 Table 9-11 and 9.3.2 - 9.3.8)."""

    A_ASSOCIATE_RQ = 0x01
    A_ASSOCIATE_AC = 0x02
    A_ASSOCIATE_RJ = 0x03
    P_DATA_TF = 0x04
    A_RELEASE_RQ = 0x05
    A_RELEASE_RP = 0x06
    A_ABORT = 0x07


#: A-ABORT reason/diag for source 0x02 (service-provider), PS3.8 Table 9-26.
ABORT_SOURCE_PROVIDER = 0x02
ABORT_INVALID_PDU_PARAMETER_VALUE = 0x06

#: Largest A-ASSOCIATE-RQ/AC we read: 256 KiB.  A real one is a few kB (128 presentation contexts
#: with a dozen transfer syntaxes each is ~40 kB); user identity adds at most 2 x 65535 bytes.
ASSOCIATION_PDU_CAP = 256 * 1024
#: A-ASSOCIATE-RJ, A-RELEASE-RQ/RP and A-ABORT have a 4-byte variable field; a little room for sloppy peers.
FIXED_PDU_CAP = 64
#: Tolerance above the Maximum Length we advertise for P-DATA-TF (implementations that count the
#: PDV item header into it or round up); far below anything that costs memory.
P_DATA_SLACK = 1024


@dataclass(frozen=True)
class PduLimits:
    """Largest variable field (PDU-length) accepted per PDU type.

    ``max_p_data``: the Maximum Length we advertise (PS3.8 D.1); 0 means unlimited there, and then
    P-DATA-TF is not capped (only an association we requested with no limit does that).
    """

    max_p_data: int

    def cap(self, pdu_type: int) -> int | None:
        """The largest declared length accepted for ``pdu_type``; None: no cap (unknown types are
        pynetdicom's to refuse, with an A-ABORT "unrecognized PDU")."""
        if pdu_type == PduType.P_DATA_TF:
            return self.max_p_data + P_DATA_SLACK if self.max_p_data else None
        if pdu_type in (PduType.A_ASSOCIATE_RQ, PduType.A_ASSOCIATE_AC):
            return ASSOCIATION_PDU_CAP
        if pdu_type in (PduType.A_ASSOCIATE_RJ, PduType.A_RELEASE_RQ, PduType.A_RELEASE_RP, PduType.A_ABORT):
            return FIXED_PDU_CAP
        return None


class _Prefixed:
    """The association socket with ``head`` (already read) put back in front of its stream."""

    def __init__(self, sock: Any, head: bytes) -> None:
        self._sock = sock
        self._head = head

    def recv(self, nr_bytes: int) -> bytearray:
        out = bytearray(self._head[:nr_bytes])
        self._head = self._head[nr_bytes:]
        if len(out) < nr_bytes:
            try:
                out += self._sock.recv(nr_bytes - len(out))
            except TimeoutError:
                # A peer silent for the network timeout in the middle of a PDU: a short read, which
                # pynetdicom turns into Evt17 (transport closed) with one log line, not a traceback.
                logger.warning("dicom PDU stalled: nothing received for the network timeout; closing")
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


#: The function we wrap (pynetdicom 3.0.4, dul.py); the regression test pins its source.
UPSTREAM_READER = DULServiceProvider._read_pdu_data


def _read_pdu_bounded(dul: DULServiceProvider, limits: PduLimits) -> None:
    sock = dul.socket
    if sock is None:
        return
    try:
        header = bytes(sock.recv(PDU_HEADER.size))
    except (OSError, TimeoutError):
        # As pynetdicom's READ_PDU_EXC_A: Evt17, transport connection closed (a network timeout too)
        dul.event_queue.put("Evt17")
        return
    if len(header) == PDU_HEADER.size:
        pdu_type, _, length = PDU_HEADER.unpack(header)
        cap = limits.cap(pdu_type)
        if cap is not None and length > cap:
            _abort_oversized(dul, pdu_type, length, cap)
            return
    # Within limits (or a short header, which pynetdicom turns into Evt17): pynetdicom reads it.
    dul.socket = _Prefixed(sock, header)  # type: ignore[assignment]
    try:
        UPSTREAM_READER(dul)
    finally:
        if dul.socket is not None:
            dul.socket = sock


def _abort_oversized(dul: DULServiceProvider, pdu_type: int, length: int, cap: int) -> None:
    assoc = dul.assoc
    requestor = getattr(assoc, "requestor", None)
    logger.warning("dicom PDU refused from=%s@%s type=0x%02X declared=%d limit=%d: A-ABORT",
                   getattr(requestor, "ae_title", "") or "-", getattr(requestor, "address", "") or "-",
                   pdu_type, length, cap)
    pdu = A_ABORT_RQ()
    pdu.source = ABORT_SOURCE_PROVIDER
    pdu.reason_diagnostic = ABORT_INVALID_PDU_PARAMETER_VALUE
    try:
        dul._send(pdu)
    except OSError:
        pass  # the peer went away already: closing is all that is left
    # Closing puts Evt17 (transport closed) on the state machine: A-P-ABORT indication, Sta1.  The
    # declared body is never read; unread bytes make the kernel reset the connection.
    dul.socket.close()  # type: ignore[union-attr]


def guard_pdu_reader(dul: DULServiceProvider, limits: PduLimits) -> None:
    """Make ``dul`` check every PDU header against ``limits`` before reading the PDU."""
    dul._read_pdu_data = partial(_read_pdu_bounded, dul, limits)  # type: ignore[method-assign]


__all__ = ["ASSOCIATION_PDU_CAP", "P_DATA_SLACK", "PduLimits", "PduType", "UPSTREAM_READER", "guard_pdu_reader"]
