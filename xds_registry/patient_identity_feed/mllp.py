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

Secure node (ITI TF-2a 3.19, issue 13): with a TLS context the listener takes only peers that completed a
mutually authenticated handshake (a failed one: no answer, a Security Alert, :mod:`xds_core.mllp`); the
verified certificate is then looked up in the node identity table (``atna.identities.for_certificate``) on
the connection's first message.  A certificate without an enabled entry, or whose identity lacks the
``feed`` role, gets an HL7 AR for every message of the connection (nothing is applied) and one Security Alert
per connection.  An accepted peer's identity name is the requestor's UserName in its ITI-8 audit events.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from django.db import close_old_connections, connection

from atna.identities import for_certificate
from xds_core import audit, mllp
from xds_core.affinity_domain import AffinityDomain
from xds_core.identity import Identity, PeerCertificate, Role
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

#: Who a verified certificate is: the node identity table's lookup (``atna.identities.for_certificate``).
IdentityLookup = Callable[[PeerCertificate], Identity | None]

#: The answer to every message of a peer the identity table does not let feed.  HL7 v2.5.1 2.9.2.1 (original
#: acknowledgment mode): MSA-1 ``AR``, the message is rejected unprocessed, for a reason that is not its
#: content.  HL7 table 0357 (v2.5.1, ERR-3) has no authorization code -- 100-103 and 200-206 all name a fault
#: of the message -- so ERR-3 is 207, the table's code for a refusal by the receiving application itself, and
#: ERR-8 (the user message) says why; the same answer whatever the reason, so a probe learns nothing.
NOT_AUTHORIZED = "sending node not authorized to feed patients (node identity table, ITI TF-2a 3.19.6.1)"


@dataclass(frozen=True, slots=True)
class _Refused:
    """The decision on a TLS peer the table does not let feed (kept in ``Peer.session``; why, for the log)."""

    reason: str


class MllpServer(mllp.MllpListener):
    """``MllpServer((host, port), affinity_domain, limits, ssl_context=..., identities=...)``;
    ``serve_forever()`` / ``shutdown()`` / ``server_close()``.

    ``ssl_context``: MLLP over TLS (``atna.tls.node_server_context()`` at the edge); ``identities``: the
    certificate -> identity lookup (default: the node identity table).
    """

    label = "ITI-8"

    def __init__(self, address: tuple[str, int], affinity_domain: AffinityDomain | None,
                 limits: mllp.ServerLimits | None = None, *, ssl_context: ssl.SSLContext | None = None,
                 identities: IdentityLookup = for_certificate) -> None:
        self.affinity_domain = affinity_domain
        self.identities = identities
        super().__init__(address, limits, ssl_context=ssl_context)

    def respond(self, message: bytes, peer: mllp.Peer) -> bytes:
        return self.process(message, peer).encode("utf-8")

    def process(self, data: bytes, peer: mllp.Peer) -> str:
        started = time.monotonic()
        text = _decode(data)
        # Connection hygiene around each message: a connection the database dropped (restart) or past
        # CONN_MAX_AGE is replaced before the message and released after it, as Django does per request.
        close_old_connections()
        try:
            decision = self._authorize(peer)
            if isinstance(decision, _Refused):
                return self._refuse(text, peer, started)
            ack, message, outcome = handle(text, self.affinity_domain)
        finally:
            close_old_connections()
        _log(peer, message, outcome, started)
        if message is not None:
            audit.record(lambda: audit_events(message, outcome, peer.address, identity=decision))
        return ack

    def _authorize(self, peer: mllp.Peer) -> Identity | _Refused | None:
        """The connection's identity (None on a plain listener: no node authentication there), decided on its
        first message and kept for the next ones; a refusal raises its Security Alert once."""
        if peer.certificate is None:
            return None
        if peer.session is None:
            peer.session = self._decide(peer, peer.certificate)
        decision: Identity | _Refused = peer.session
        return decision

    def _decide(self, peer: mllp.Peer, certificate: PeerCertificate) -> Identity | _Refused:
        identity = self.identities(certificate)
        if identity is None:
            reason = "certificate not in the node identity table (or its entry is disabled)"
            audit.record(audit.node_authentication_failure(listener=self.uri, peer_address=peer.address,
                                                            peer=certificate.subject, reason=reason))
        elif not identity.has(Role.FEED):  # authenticated, but ITI-8 is not among what it may do
            reason = f"identity {identity.name} lacks the role {Role.FEED.value}"
            performer = audit.Participant(certificate.subject, peer.address, user_name=identity.name,
                                          is_requestor=True)
            audit.record(audit.security_alert(
                audit.SecurityAlertType.USE_OF_RESTRICTED_FUNCTION, reporter=audit.this_node(self.uri),
                subject=self.uri, description=reason, outcome=audit.EventOutcome.MINOR_FAILURE,
                performers=(performer,)))
        else:
            return identity
        # The certificate's fingerprint names the node (no patient data); the subject is in the Security Alert.
        logger.warning("ITI-8 peer=%s:%s refused: %s (certificate sha256=%s)", peer.address, peer.port, reason,
                       certificate.sha256)
        return _Refused(reason)

    def _refuse(self, text: str, peer: mllp.Peer, started: float) -> str:
        """AR to a message of a refused peer: nothing applied, only its MSH read to address the ACK."""
        try:
            message: Message | None = parse_message(text)
        except Hl7ParseError:
            message = None
        outcome = FeedOutcome("AR", NOT_AUTHORIZED, "207", "")
        _log(peer, message, outcome, started)
        if message is not None:
            audit.record(lambda: audit_events(message, outcome, peer.address, refused=True))
        return build_ack(message, outcome)

    def refusal(self, head: bytes, peer: mllp.Peer, reason: str) -> bytes | None:
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

    def authentication_failed(self, peer: mllp.Peer, reason: str) -> None:
        """The Security Alert of a failed handshake, with the same database hygiene as a message (the audit
        trail may write it to the database)."""
        close_old_connections()
        try:
            super().authentication_failed(peer, reason)
        finally:
            close_old_connections()

    def worker_finished(self) -> None:
        connection.close()  # each worker thread has its own database connection


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("iso-8859-1")


def _log(peer: mllp.Peer, message: Message | None, outcome: FeedOutcome, started: float) -> None:
    logger.info("ITI-8 peer=%s:%s type=%s^%s control=%s ack=%s err=%s field=%s ms=%.1f",
                peer.address, peer.port, message.message_type if message else "-",
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


def audit_events(message: Message, outcome: FeedOutcome, address: str, *, identity: Identity | None = None,
                 refused: bool = False) -> list[audit.AuditEvent]:
    """The Document Registry's Patient Record events for one ITI-8 message (none for a message that is
    not one of the ADT events ITI-8 carries).  Source: the sending application ``MSH-3|MSH-4``, with the
    node identity its certificate maps to as UserName; ``refused``: the peer was not authorized (nothing
    applied)."""
    touched = _FEED_ACTIONS.get(message.trigger_event) if message.message_type == "ADT" else None
    if not touched:
        return []
    sender = audit.remote(f"{message.field('MSH', 3)}|{message.field('MSH', 4)}", address)
    if identity is not None:
        sender = replace(sender, user_name=identity.name)
    receiver = audit.this_node(f"{message.field('MSH', 5)}|{message.field('MSH', 6)}")
    if outcome.ack_code == "AA":
        result = audit.EventOutcome.SUCCESS
    elif refused:
        result = audit.EventOutcome.SERIOUS_FAILURE
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
                    limits: mllp.ServerLimits | None = None, *, ssl_context: ssl.SSLContext | None = None,
                    identities: IdentityLookup = for_certificate) -> tuple[MllpServer, threading.Thread]:
    """Start a server on a background thread (tests; port 0 = ephemeral).  Stop with ``server.shutdown()``."""
    server = MllpServer((host, port), affinity_domain, limits, ssl_context=ssl_context, identities=identities)
    thread = threading.Thread(target=server.serve_forever, name="mllp", daemon=True)
    thread.start()
    return server, thread


def send(host: str, port: int, message: str, *, timeout: float = 10.0,
         ssl_context: ssl.SSLContext | None = None) -> str:
    """Send one HL7 message (text) and return the ACK text: :func:`xds_core.mllp.exchange` in UTF-8.

    ``ssl_context``: MLLP over TLS with our certificate (``atna.tls.node_client_context()`` at the edge)."""
    return mllp.exchange(host, port, message.encode("utf-8"), timeout=timeout,
                         ssl_context=ssl_context).decode("utf-8")
