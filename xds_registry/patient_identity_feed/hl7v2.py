"""ITI-8 Patient Identity Feed (HL7 v2.3.1 / v2.5 ADT): parse a message, apply it, build the ACK.

Supported (ITI TF-2a 3.8.4): ADT^A01, A04, A05 (create), A08 (update) and A40 (merge: PID-3 is the
surviving id, MRG-1 the merged-away id).  The answer is an ``ACK`` with MSA-1:

* ``AA`` -- applied;
* ``AE`` -- well-formed but refused by the application (no patient id of the affinity domain,
  malformed id, unknown merge source); an ERR segment says which field and why;
* ``AR`` -- rejected: not an HL7 v2 message we process (bad MSH, unsupported version, message
  type or trigger event).

ERR is written in the form of the message's version: v2.5 ``ERR||<segment>^1^<field>|<code>^<text>^HL70357|E``,
v2.3.1 ``ERR|<segment>^1^<field>^<code>&<text>&HL70357``.

The small parser here handles exactly what ITI-8 needs (field, component, repetition and
subcomponent separators from MSH-1/MSH-2; escape sequences are left as received, since patient
identifiers and names do not use them).  It is the suite's one HL7 v2 parser: the ``hl7`` (python-hl7)
pin, never imported, was dropped from requirements.txt; switching to python-hl7 or hl7apy would have
to keep every MLLP test, ITI-8 corpus case and hostile-input test passing unchanged, for no gain.
Framing is :mod:`xds_core.mllp`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import DatabaseError

from xds_core.affinity_domain import AffinityDomain
from xds_registry.patient_identity_feed.patients import (
    Demographics,
    PatientFeedError,
    add_or_update_patient,
    merge_patients,
)

logger = logging.getLogger("xds.transaction")

ADD_EVENTS = frozenset({"A01", "A04", "A05", "A08"})
MERGE_EVENTS = frozenset({"A40"})
SUPPORTED_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1")

#: HL7 table 0357 texts of the codes we send.
ERROR_TEXT = {
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "207": "Application internal error",
}


class Hl7ParseError(ValueError):
    """Not an HL7 v2 message (no usable MSH)."""


@dataclass
class Message:
    """An HL7 v2 message as segments of fields (``segments[i][0]`` is the segment name).

    Field numbering follows HL7: ``field("PID", 3)`` is PID-3; for MSH, MSH-1 is the field separator.
    """

    segments: list[list[str]]
    field_sep: str = "|"
    component_sep: str = "^"
    repetition_sep: str = "~"
    escape_char: str = "\\"
    subcomponent_sep: str = "&"

    def segment(self, name: str) -> list[str] | None:
        return next((s for s in self.segments if s[0] == name), None)

    def field(self, segment: str, number: int) -> str:
        seg = self.segment(segment)
        if seg is None:
            return ""
        # MSH keeps MSH-1 (the field separator) as element 1, so numbering is uniform.
        return seg[number] if 0 < number < len(seg) else ""

    def components(self, value: str) -> list[str]:
        return value.split(self.component_sep)

    def component(self, segment: str, number: int, component: int) -> str:
        parts = self.components(self.field(segment, number))
        return parts[component - 1] if len(parts) >= component else ""

    @property
    def message_type(self) -> str:
        return self.component("MSH", 9, 1)

    @property
    def trigger_event(self) -> str:
        return self.component("MSH", 9, 2)

    @property
    def control_id(self) -> str:
        return self.field("MSH", 10)

    @property
    def version(self) -> str:
        return self.component("MSH", 12, 1)


def parse_message(text: str) -> Message:
    """Split an ER7-encoded message into segments and fields."""
    lines = [line for line in text.replace("\r\n", "\r").replace("\n", "\r").split("\r") if line.strip()]
    if not lines or not lines[0].startswith("MSH") or len(lines[0]) < 8:
        raise Hl7ParseError("message does not start with an MSH segment")
    msh = lines[0]
    field_sep = msh[3]
    encoding = msh[4:8] if len(msh) >= 8 else "^~\\&"
    if field_sep.isalnum() or len(set(encoding[:4])) < 4 or field_sep in encoding[:4]:
        raise Hl7ParseError("MSH-1/MSH-2 do not define usable separators")
    message = Message([], field_sep, encoding[0], encoding[1], encoding[2], encoding[3])
    for line in lines:
        fields = line.split(field_sep)
        if fields[0] == "MSH":
            # MSH-1 is the separator itself; MSH-2 the encoding characters.
            fields = ["MSH", field_sep, *fields[1:]]
        message.segments.append(fields)
    return message


def xds_patient_ids(message: Message, segment: str, number: int) -> list[str]:
    """The CX repetitions of a field (PID-3, MRG-1) in XDS form ``id^^^&OID&ISO`` (universal ids only)."""
    out: list[str] = []
    for rep in message.field(segment, number).split(message.repetition_sep):
        parts = rep.split(message.component_sep)
        if not parts or not parts[0]:
            continue
        authority = parts[3].split(message.subcomponent_sep) if len(parts) > 3 else []
        if len(authority) >= 3 and authority[1] and authority[2].upper() == "ISO":
            out.append(f"{parts[0]}^^^&{authority[1]}&ISO")
    return out


def _pick(ids: list[str], affinity_domain: AffinityDomain | None, field: str) -> str:
    if not ids:
        raise PatientFeedError(f"{field.replace('^', '-')} carries no identifier with an ISO universal id "
                               "(id^^^namespace&OID&ISO)", hl7_error="101", field=field)
    if affinity_domain is None:
        return ids[0]
    for pid in ids:
        if affinity_domain.accepts_patient_id(pid):
            return pid
    raise PatientFeedError(
        f"{field.replace('^', '-')} has no identifier of an assigning authority of this affinity domain "
        f"({', '.join(sorted(affinity_domain.assigning_authorities))}); received {', '.join(ids)}",
        hl7_error="103", field=field)


def _demographics(message: Message) -> Demographics:
    name = message.components(message.field("PID", 5).split(message.repetition_sep)[0])
    pid_segment = message.segment("PID") or []
    return Demographics(
        family_name=name[0][:128] if name else "",
        given_name=name[1][:128] if len(name) > 1 else "",
        birth_date=message.field("PID", 7)[:16],
        sex=message.field("PID", 8)[:8],
        address=message.field("PID", 11).split(message.repetition_sep)[0][:256],
        pid_segment=message.field_sep.join(pid_segment),
    )


@dataclass
class FeedOutcome:
    ack_code: str           # AA / AE / AR
    text: str
    error_code: str = ""    # HL7 table 0357
    error_field: str = ""   # segment^field, e.g. PID^3
    patient_id: str = ""


def apply_message(message: Message, affinity_domain: AffinityDomain | None) -> FeedOutcome:
    """Apply one ADT message to the registry (each in its own transaction)."""
    if message.message_type != "ADT":
        return FeedOutcome("AR", f"message type {message.message_type or '(none)'} is not processed by ITI-8",
                           "200", "MSH^9")
    event = message.trigger_event
    if event not in ADD_EVENTS | MERGE_EVENTS:
        return FeedOutcome("AR", f"trigger event {event or '(none)'} is not supported "
                                 "(A01, A04, A05, A08, A40)", "201", "MSH^9")
    if message.version not in SUPPORTED_VERSIONS:
        return FeedOutcome("AR", f"HL7 version {message.version or '(none)'} is not supported "
                                 f"({', '.join(SUPPORTED_VERSIONS)})", "203", "MSH^12")
    if message.segment("PID") is None:
        return FeedOutcome("AE", "PID segment is missing", "100", "PID")
    try:
        patient_id = _pick(xds_patient_ids(message, "PID", 3), affinity_domain, "PID^3")
        if event in ADD_EVENTS:
            _, created = add_or_update_patient(patient_id, _demographics(message), affinity_domain=affinity_domain)
            return FeedOutcome("AA", f"patient {'added' if created else 'updated'}", patient_id=patient_id)
        if message.segment("MRG") is None:
            return FeedOutcome("AE", "A40 without MRG segment", "100", "MRG", patient_id)
        merged_id = _pick(xds_patient_ids(message, "MRG", 1), affinity_domain, "MRG^1")
        moved = merge_patients(patient_id, merged_id, affinity_domain=affinity_domain,
                               demographics=_demographics(message))
        return FeedOutcome("AA", f"patient {merged_id} merged into {patient_id}; {moved} registry objects re-pointed",
                           patient_id=patient_id)
    except PatientFeedError as exc:
        return FeedOutcome(exc.code, str(exc), exc.hl7_error, exc.field)
    except DatabaseError:
        logger.exception("ITI-8 database error")
        return FeedOutcome("AE", "internal error while storing the patient; see the server log", "207", "")


def build_ack(message: Message | None, outcome: FeedOutcome, *, now: datetime | None = None) -> str:
    """The ACK for ``message`` (MSH sender/receiver swapped, MSA, ERR when not AA)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    fs = message.field_sep if message else "|"
    cs = message.component_sep if message else "^"
    ss = message.subcomponent_sep if message else "&"
    encoding = "".join((cs, message.repetition_sep, message.escape_char, ss)) if message else "^~\\&"
    version = (message.version if message and message.version in SUPPORTED_VERSIONS else "2.5")
    event = message.trigger_event if message else ""
    control_id = message.control_id if message else ""
    msh = [
        "MSH", encoding,
        message.field("MSH", 5) if message else "",
        message.field("MSH", 6) if message else "",
        message.field("MSH", 3) if message else "",
        message.field("MSH", 4) if message else "",
        stamp, "", f"ACK{cs}{event}{cs}ACK" if event else "ACK",
        f"ACK{stamp}{control_id}"[:50], message.field("MSH", 11) if message and message.field("MSH", 11) else "P",
        version,
    ]
    text = _clean(outcome.text, fs, cs, message)[:80]
    segments = [fs.join(msh), fs.join(["MSA", outcome.ack_code, control_id, text])]
    if outcome.ack_code != "AA":
        code = outcome.error_code or "207"
        seg, _, field = outcome.error_field.partition("^")
        label = ERROR_TEXT.get(code, "")
        if version.startswith("2.5"):
            location = cs.join([seg, "1", field]) if seg else ""
            segments.append(fs.join(["ERR", "", location, cs.join([code, label, "HL70357"]), "E", "", "", "",
                                     _clean(outcome.text, fs, cs, message)]))
        else:
            segments.append(fs.join(["ERR", cs.join([seg, "1", field, ss.join([code, label, "HL70357"])])]))
    return "\r".join(segments) + "\r"


def _clean(text: str, fs: str, cs: str, message: Message | None) -> str:
    # Delimiters inside free text would break the ACK's structure; HL7 escape them.
    esc = message.escape_char if message else "\\"
    rs = message.repetition_sep if message else "~"
    ss = message.subcomponent_sep if message else "&"
    out = text.replace(esc, f"{esc}E{esc}")
    for char, code in ((fs, "F"), (cs, "S"), (rs, "R"), (ss, "T")):
        out = out.replace(char, f"{esc}{code}{esc}")
    return out.replace("\r", " ").replace("\n", " ")


def handle(text: str, affinity_domain: AffinityDomain | None) -> tuple[str, Message | None, FeedOutcome]:
    """Parse, apply and answer one message: (ACK text, parsed message or None, outcome)."""
    try:
        message = parse_message(text)
    except Hl7ParseError as exc:
        outcome = FeedOutcome("AR", str(exc), "100", "MSH")
        return build_ack(None, outcome), None, outcome
    outcome = apply_message(message, affinity_domain)
    return build_ack(message, outcome), message, outcome
