"""A DICOM peer at the byte level: what a hostile or broken implementation can send that pynetdicom won't."""

from __future__ import annotations

import socket
import struct
import time

from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import Verification
from pynetdicom.transport import AddressInformation

A_ASSOCIATE_AC = 0x02

#: A-ABORT PDU (PS3.8 9.3.8): type 7, length 4, reserved x2, source 2 (service-provider), reason 6
#: (invalid-PDU-parameter value): what our listener answers to an oversized PDU.
EXPECTED_ABORT = bytes([0x07, 0x00, 0, 0, 0, 4, 0x00, 0x00, 0x02, 0x06])


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the listener sends until it closes the connection, and how long that took."""
    sock.settimeout(timeout)
    started, got = time.monotonic(), b""
    try:
        while chunk := sock.recv(4096):
            got += chunk
    except ConnectionResetError:
        pass  # unread bytes of ours on the listener's side: the kernel answers with RST
    return got, time.monotonic() - started


def read_until_abort_or_closed(sock: socket.socket, timeout: float) -> bytes:
    """What the listener sends until its first A-ABORT PDU (returned alone) or a close (what came before);
    b"?" if neither came within ``timeout``."""
    sock.settimeout(timeout)
    got = b""
    try:
        while chunk := sock.recv(4096):
            got += chunk
            if got[:1] == b"\x07" and len(got) >= 10:
                return got[:10]
    except ConnectionResetError:
        pass
    except TimeoutError:
        return b"?"
    return got


def associate_raw(sock: socket.socket, called: str, calling: str = "RAW") -> None:
    """Send an A-ASSOCIATE-RQ for Verification (built by pynetdicom) and read the A-ASSOCIATE-AC."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = calling
    primitive.called_ae_title = called
    primitive.calling_presentation_address = AddressInformation("127.0.0.1", 1)
    primitive.called_presentation_address = AddressInformation("127.0.0.1", 2)
    cx = build_context(Verification)
    cx.context_id = 1
    primitive.presentation_context_definition_list = [cx]
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 16384
    primitive.user_information = [max_length]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    sock.sendall(pdu.encode())
    header = sock.recv(6)
    assert header[:1] == bytes([A_ASSOCIATE_AC]), header.hex()
    left = struct.unpack(">L", header[2:6])[0]
    while left:
        left -= len(sock.recv(left))
