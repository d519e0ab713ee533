"""MLLP server for the ITI-8 Patient Identity Feed (HL7 v2 over TCP, ITI TF-2x C.2 / HL7 MLLP R2).

Framing, the client and the bounded server: :mod:`xds_core.mllp` (``<SB 0x0b> message <EB 0x1c><CR 0x0d>``,
at most :data:`~xds_core.mllp.MAX_MESSAGE` bytes).  One I/O thread holds every connection and a fixed
pool of workers applies the messages, so a flood of held connections costs sockets, not threads; the caps
(in total, per peer address) and the time rules (idle wait, minimum rate, frame deadline) are
:class:`~xds_core.mllp.ServerLimits`, from settings ``HL7_*`` (the command passes them).  A connection
may carry any number of messages, each answered with its ACK before the next is read.  One log line per
message on ``xds.transaction``, without patient data: that goes to the audit trail, one Patient Record
event per patient the message touched (:func:`audit_events`).  Messages are decoded as UTF-8, falling
back to ISO-8859-1 (the HL7 v2 default character set) when the bytes are not UTF-8.
"""

from __future__ import annotations

import logging
import threading
import time

from django.db import close_old_connections, connection

from xds_core import audit, mllp
from xds_core.affinity_domain import AffinityDomain
from xds_registry.patient_identity_feed.hl7v2 import (
    FeedOutcome,
    Hl7ParseError,
    Message,
    build_ack,
    handle,
    parse_message,
    xds_patient_ids,
)

logger = logging.getLogger("xds.transaction")


class MllpServer(mllp.MllpListener):
    """``MllpServer((host, port), affinity_domain, limits)``; ``serve_forever()`` / ``shutdown()`` /
    ``server_close()``."""

    label = "ITI-8"

    def __init__(self, address: tuple[str, int], affinity_domain: AffinityDomain | None,
                 limits: mllp.ServerLimits | None = None) -> None:
        self.affinity_domain = affinity_domain
        super().__init__(address, limits)

    def respond(self, message: bytes, peer: tuple[str, int]) -> bytes:
        return self.process(message, peer).encode("utf-8")

    def process(self, data: bytes, peer: tuple[str, int]) -> str:
        started = time.monotonic()
        text = _decode(data)
        # Connection hygiene around each message: a connection the database dropped (restart) or past
        # CONN_MAX_AGE is replaced before the message and released after it, as Django does per request.
        close_old_connections()
        try:
            ack, message, outcome = handle(text, self.affinity_domain)
        finally:
            close_old_connections()
        _log(peer, message, outcome, started)
        if message is not None:
            audit.record(lambda: audit_events(message, outcome, peer[0]))
        return ack

    def refusal(self, head: bytes, peer: tuple[str, int], reason: str) -> bytes | None:
        """A frame over the size limit: AR when its MSH segment can be read (HL7 v2.5.1 2.9.2: the message
        is rejected, not processed), else no answer; the listener closes the connection either way."""
        started = time.monotonic()
        first_segment, end, _ = head.replace(b"\n", b"\r").partition(b"\r")
        if not end:  # no whole MSH segment within the head: nothing to answer reliably
            return None
        try:
            message = parse_message(_decode(first_segment))
        except Hl7ParseError:
            return None
        outcome = FeedOutcome("AR", f"message longer than {self.limits.max_message} bytes, not processed",
                              "207", "MSH")
        _log(peer, message, outcome, started)
        return build_ack(message, outcome).encode("utf-8")

    def worker_finished(self) -> None:
        connection.close()  # each worker thread has its own database connection


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("iso-8859-1")


def _log(peer: tuple[str, int], message: Message | None, outcome: FeedOutcome, started: float) -> None:
    logger.info("ITI-8 peer=%s:%s type=%s^%s control=%s ack=%s err=%s field=%s ms=%.1f",
                peer[0], peer[1], message.message_type if message else "-",
                message.trigger_event if message else "-", message.control_id if message else "-",
                outcome.ack_code, outcome.error_code or "-", outcome.error_field or "-",
                (time.monotonic() - started) * 1000)


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


def serve_in_thread(host: str, port: int, affinity_domain: AffinityDomain | None,
                    limits: mllp.ServerLimits | None = None) -> tuple[MllpServer, threading.Thread]:
    """Start a server on a background thread (tests; port 0 = ephemeral).  Stop with ``server.shutdown()``."""
    server = MllpServer((host, port), affinity_domain, limits)
    thread = threading.Thread(target=server.serve_forever, name="mllp", daemon=True)
    thread.start()
    return server, thread


def send(host: str, port: int, message: str, *, timeout: float = 10.0) -> str:
    """Send one HL7 message (text) and return the ACK text: :func:`xds_core.mllp.exchange` in UTF-8."""
    return mllp.exchange(host, port, message.encode("utf-8"), timeout=timeout).decode("utf-8")
