"""MLLP server for the ITI-8 Patient Identity Feed (HL7 v2 over TCP, ITI TF-2x C.2 / HL7 MLLP R2).

Framing and the client: :mod:`xds_core.mllp` (``<SB 0x0b> message <EB 0x1c><CR 0x0d>``, at most
:data:`~xds_core.mllp.MAX_MESSAGE` bytes).  One thread per connection; a connection may carry
any number of messages, each answered with its ACK before the next is read.  One log line per
message on ``xds.transaction``, without patient data: that goes to the audit trail, one Patient
Record event per patient the message touched (:func:`audit_events`).  Messages are decoded as
UTF-8, falling back to ISO-8859-1 (the HL7 v2 default character set) when the bytes are not UTF-8.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
import time

from django.db import close_old_connections, connection

from xds_core import audit, mllp
from xds_core.affinity_domain import AffinityDomain
from xds_registry.patient_identity_feed.hl7v2 import FeedOutcome, Message, handle, xds_patient_ids

logger = logging.getLogger("xds.transaction")

IDLE_TIMEOUT = 300.0


class MllpHandler(socketserver.BaseRequestHandler):
    server: MllpServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(IDLE_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for message in mllp.read_frames(sock, max_message=mllp.MAX_MESSAGE):
                sock.sendall(mllp.frame(self.server.process(message, self.client_address).encode("utf-8")))
        except mllp.MllpError as exc:
            logger.warning("ITI-8 peer=%s:%s %s; closing", *self.client_address[:2], exc)
        except (TimeoutError, ConnectionError, OSError):
            return
        finally:
            connection.close()


class MllpServer(socketserver.ThreadingTCPServer):
    """``MllpServer((host, port), affinity_domain)``; ``serve_forever()`` / ``shutdown()``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], affinity_domain: AffinityDomain | None) -> None:
        self.affinity_domain = affinity_domain
        super().__init__(address, MllpHandler)

    def process(self, data: bytes, peer: tuple[str, int]) -> str:
        started = time.monotonic()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("iso-8859-1")
        close_old_connections()
        ack, message, outcome = handle(text, self.affinity_domain)
        logger.info("ITI-8 peer=%s:%s type=%s^%s control=%s ack=%s err=%s field=%s ms=%.1f",
                    peer[0], peer[1], message.message_type if message else "-",
                    message.trigger_event if message else "-", message.control_id if message else "-",
                    outcome.ack_code, outcome.error_code or "-", outcome.error_field or "-",
                    (time.monotonic() - started) * 1000)
        if message is not None:
            audit.record(lambda: audit_events(message, outcome, peer[0]))
        return ack


#: ITI TF-2a 3.8.5.1: which patient fields an ADT event touches, and how (A40: the surviving
#: patient is updated, the merged one deleted).
_FEED_ACTIONS: dict[str, tuple[tuple[str, int, audit.EventAction], ...]] = {
    **dict.fromkeys(("A01", "A04", "A05"), (("PID", 3, audit.EventAction.CREATE),)),
    "A08": (("PID", 3, audit.EventAction.UPDATE),),
    "A40": (("PID", 3, audit.EventAction.UPDATE), ("MRG", 1, audit.EventAction.DELETE)),
}


def audit_events(message: Message, outcome: FeedOutcome, address: str) -> list[audit.AuditEvent]:
    """The Document Registry's Patient Record events for one ITI-8 message (none for a message that is
    not one of the ADT events ITI-8 carries).  Source: the sending application ``MSH-3|MSH-4``."""
    touched = _FEED_ACTIONS.get(message.trigger_event) if message.message_type == "ADT" else None
    if not touched:
        return []
    sender = audit.remote(f"{message.field('MSH', 3)}|{message.field('MSH', 4)}", address)
    receiver = audit.this_node(f"{message.field('MSH', 5)}|{message.field('MSH', 6)}")
    if outcome.ack_code == "AA":
        result = audit.EventOutcome.SUCCESS
    elif outcome.error_code == "207":  # HL7 table 0357: application internal error (ours)
        result = audit.EventOutcome.MAJOR_FAILURE
    else:
        result = audit.EventOutcome.SERIOUS_FAILURE
    description = " ".join(filter(None, (outcome.ack_code, outcome.error_code)))
    events = []
    for segment, number, action in touched:
        patient_id = _patient_id(message, outcome, segment, number)
        objects = [audit.patient(patient_id, details=(("MSH-10", message.control_id),))] if patient_id else []
        events.append(audit.transaction_event(
            audit.Transaction.ITI_8, audit.Side.RESPONDER, requestor=sender, responder=receiver, objects=objects,
            outcome=result, action=action, description=description))
    return events


def _patient_id(message: Message, outcome: FeedOutcome, segment: str, number: int) -> str:
    """The id the registry used (PID-3), else the field's affinity-domain form, else its first repetition."""
    if (segment, number) == ("PID", 3) and outcome.patient_id:
        return outcome.patient_id
    ids = xds_patient_ids(message, segment, number)
    return ids[0] if ids else message.field(segment, number).split(message.repetition_sep)[0]


def serve_in_thread(host: str, port: int,
                    affinity_domain: AffinityDomain | None) -> tuple[MllpServer, threading.Thread]:
    """Start a server on a background thread (tests; port 0 = ephemeral).  Stop with ``server.shutdown()``."""
    server = MllpServer((host, port), affinity_domain)
    thread = threading.Thread(target=server.serve_forever, name="mllp", daemon=True)
    thread.start()
    return server, thread


def send(host: str, port: int, message: str, *, timeout: float = 10.0) -> str:
    """Send one HL7 message (text) and return the ACK text: :func:`xds_core.mllp.exchange` in UTF-8."""
    return mllp.exchange(host, port, message.encode("utf-8"), timeout=timeout).decode("utf-8")
