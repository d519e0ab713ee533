"""An :class:`~xds_core.audit.AuditEvent` as a DICOM audit message (PS3.15 A.5.1, as profiled by ITI TF-2a 3.20.7).

* :func:`to_xml` writes one ``<AuditMessage>`` -- UTF-8, no BOM, no XML declaration (ITI TF-2a
  3.20.4.1.2 item 5 asks for the minimal encoding) -- with the elements in the order of the DICOM
  audit schema (``xds_core/data/audit/dicom2017c.xsd``, the IHE-extended 2017c XSD): EventIdentification,
  ActiveParticipant (1..n), AuditSourceIdentification, ParticipantObjectIdentification (0..n).
  Coded values are ``csd-code`` / ``codeSystemName`` / ``originalText`` attributes (the XSD's
  CodedValueType); ParticipantObjectQuery and every ParticipantObjectDetail/@value are base64
  (``xs:base64Binary``: the schema keeps hostile text out of the markup that way).
* :func:`split_by_patient` applies ITI TF-2a 3.20.7.1 "one patient per message".
* :func:`validator` is the XSD as a cached ``lxml.etree.XMLSchema`` (tests, ``xds_audit verify --schema``).

Text from the wire (a patient id, a peer's claimed AE title, a URL) is hostile: characters XML 1.0
cannot carry (§2.2: C0 controls but TAB/LF/CR, lone surrogates, U+FFFE/U+FFFF) are dropped and each
value -- a detail's too -- is cut at :data:`MAX_TEXT` characters, so every event gives a well-formed,
schema-valid message (markup characters such as ``]]>`` are escaped by lxml).  The audit source (this deployment's own
identity) is not part of the event: the sink passes it in.

Plain Python + lxml, no Django; runs once per audited transaction (~30 µs for an ITI-42 event).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import IntEnum
from functools import cache
from pathlib import Path

from lxml import etree

from xds_core.audit import AuditEvent, ObjectIdType, ObjectRole, ParticipantObject, Transaction, _Coded

#: The DICOM audit message schema, IHE-extended (oehf/ipf ``dicom2017c.xsd``; see ``data/audit/ORIGIN.md``).
SCHEMA_PATH = Path(__file__).parent / "data" / "audit" / "dicom2017c.xsd"

#: Longest text value written (characters); longer ones are cut and end in "...".  Nothing in a
#: legitimate event comes near it (ids, URLs, AE titles); it bounds what a hostile peer can make us store
#: and ship (RFC 5425 receivers need only accept 2 KiB messages, SHOULD accept 8 KiB).
MAX_TEXT = 1024
#: Largest ParticipantObjectQuery written (bytes, before base64).  A stored query's request is
#: already bounded by the SOAP size limits; this bounds the audit copy separately.
MAX_QUERY = 64 * 1024

#: XML 1.0 §2.2 Char: what a document cannot carry at all (lxml refuses it).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


class AuditSourceType(IntEnum):
    """AuditSourceTypeCode (PS3.15 A.5.1, from RFC 3881 5.4; the values of the XSD's enumeration)."""

    END_USER_DEVICE = 1
    ACQUISITION_DEVICE = 2
    WEB_SERVER = 3
    APPLICATION_SERVER = 4
    DATABASE_SERVER = 5
    SECURITY_SERVER = 6
    NETWORK_COMPONENT = 7
    OPERATING_SOFTWARE = 8
    OTHER = 9


@dataclass(frozen=True, slots=True)
class AuditSource:
    """AuditSourceIdentification (PS3.15 A.5.1): who writes the message -- this deployment.

    ``source_id``: AuditSourceID (required by the XSD; ITI TF-2a 3.20.7 leaves the value to the
    deployment: the node's site key or host name); ``enterprise_site_id``: AuditEnterpriseSiteID, the
    hospital / domain, optional; ``type_code``: AuditSourceTypeCode, 4 "Application Server process".
    """

    source_id: str
    enterprise_site_id: str = ""
    type_code: int = AuditSourceType.APPLICATION_SERVER


def clean(value: str, limit: int = MAX_TEXT) -> str:
    """``value`` without the characters XML 1.0 cannot carry, cut at ``limit`` characters."""
    if _NOT_XML.search(value) is not None:
        value = _NOT_XML.sub("", value)
    if len(value) > limit:
        value = value[: limit - 3] + "..."
    return value


def _b64(value: str | bytes) -> str:
    raw = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    return base64.b64encode(raw).decode("ascii")


@cache
def _coded_attributes(value: _Coded) -> dict[str, str]:
    # The code tables are enum members: their attributes are built once per process.
    return {"csd-code": value.code, "codeSystemName": value.system, "originalText": value.display}


def _coded(parent: etree._Element, tag: str, value: _Coded) -> None:
    etree.SubElement(parent, tag, _coded_attributes(value))


def _time(when: datetime) -> str:
    # xs:dateTime with its offset; a naive time is UTC (AuditEvent.time is documented as UTC).
    return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).isoformat()


def _object(root: etree._Element, obj: ParticipantObject) -> None:
    attributes = {"ParticipantObjectTypeCode": str(int(obj.type_code)),
                  "ParticipantObjectTypeCodeRole": str(int(obj.role))}
    if obj.object_id:
        attributes = {"ParticipantObjectID": clean(obj.object_id), **attributes}
    element = etree.SubElement(root, "ParticipantObjectIdentification", attributes)
    _coded(element, "ParticipantObjectIDTypeCode", obj.id_type)
    # ParticipantObjectName | ParticipantObjectQuery: an xs:choice, never both (oehf/ipf#265).
    if obj.query:
        etree.SubElement(element, "ParticipantObjectQuery").text = _b64(obj.query[:MAX_QUERY])
    elif obj.name:
        etree.SubElement(element, "ParticipantObjectName").text = clean(obj.name)
    for detail_type, value in obj.details:
        # The value's exact characters (base64 keeps even controls), but bounded like any text.
        etree.SubElement(element, "ParticipantObjectDetail", {"type": clean(detail_type),
                                                              "value": _b64(value[:MAX_TEXT])})
    if obj.id_type is not ObjectIdType.STUDY_INSTANCE_UID:
        return
    # PS3.15 A.5.3.7: a study's SOP instances (grouped by SOP Class, whose UID is optional in the XSD
    # and unknown here) and ParticipantObjectContainsStudy, which Gazelle's validator expects of
    # RAD-69 records (oehf/ipf#295).
    description = etree.SubElement(element, "ParticipantObjectDescription")
    if obj.instances:
        sop_class = etree.SubElement(description, "SOPClass", NumberOfInstances=str(len(obj.instances)))
        for uid in obj.instances:
            etree.SubElement(sop_class, "Instance", UID=clean(uid))
    contains = etree.SubElement(description, "ParticipantObjectContainsStudy")
    etree.SubElement(contains, "StudyIDs", UID=clean(obj.object_id))


def to_xml(event: AuditEvent, source: AuditSource) -> bytes:
    """``event`` as one DICOM PS3.15 A.5 ``<AuditMessage>``, UTF-8 bytes without an XML declaration.

    EventTypeCode: the transaction's ``EV(<tx>, "IHE Transactions", <name>)`` then ``event.event_types``.
    ActiveParticipant: UserIsRequestor, NetworkAccessPointID/TypeCode when the address is known,
    RoleIDCode when the participant has a role.  Never raises for hostile text in the event.
    """
    root = etree.Element("AuditMessage")
    identification = etree.SubElement(root, "EventIdentification", {
        "EventActionCode": event.action.value, "EventDateTime": _time(event.time),
        "EventOutcomeIndicator": str(int(event.outcome))})
    _coded(identification, "EventID", event.event_id)
    for event_type in ((event.transaction,) if event.transaction is not None else ()) + event.event_types:
        _coded(identification, "EventTypeCode", event_type)
    if event.outcome_description:
        etree.SubElement(identification, "EventOutcomeDescription").text = clean(event.outcome_description)
    for participant in event.participants:
        attributes = {"UserID": clean(participant.user_id)}
        if participant.alternative_user_id:
            attributes["AlternativeUserID"] = clean(participant.alternative_user_id)
        if participant.user_name:
            attributes["UserName"] = clean(participant.user_name)
        attributes["UserIsRequestor"] = "true" if participant.is_requestor else "false"
        access_point = participant.network_access_point_type
        if access_point is not None:
            attributes["NetworkAccessPointID"] = clean(participant.network_address)
            attributes["NetworkAccessPointTypeCode"] = str(int(access_point))
        element = etree.SubElement(root, "ActiveParticipant", attributes)
        for role in ((participant.role,) if participant.role is not None else ()) + participant.roles:
            _coded(element, "RoleIDCode", role)
    source_attributes = {"AuditSourceID": clean(source.source_id) or "unknown"}
    if source.enterprise_site_id:
        source_attributes["AuditEnterpriseSiteID"] = clean(source.enterprise_site_id)
    audit_source = etree.SubElement(root, "AuditSourceIdentification", source_attributes)
    etree.SubElement(audit_source, "AuditSourceTypeCode", {"csd-code": str(int(source.type_code))})
    for obj in event.objects:
        _object(root, obj)
    return etree.tostring(root, encoding="UTF-8", xml_declaration=False)


#: Transactions whose audit message names 0..n patients (ITI TF-2b 3.51.5.1: Multi-Patient Stored Query).
MULTI_PATIENT: frozenset[Transaction] = frozenset({Transaction.ITI_51})


def split_by_patient(event: AuditEvent) -> list[AuditEvent]:
    """ITI TF-2a 3.20.7.1: "an audit message shall name one patient" -- ``event`` as one event per patient.

    Each message keeps every participant and every object that is not a patient (the query, the
    documents, the studies); an event naming at most one patient, or of a transaction whose table
    allows 0..n patients (:data:`MULTI_PATIENT`), is returned as it is.
    """
    patients = [o for o in event.objects if o.role is ObjectRole.PATIENT]
    if len(patients) <= 1 or event.transaction in MULTI_PATIENT:
        return [event]
    others = tuple(o for o in event.objects if o.role is not ObjectRole.PATIENT)
    return [replace(event, objects=(one, *others)) for one in patients]


@cache
def validator() -> etree.XMLSchema:
    """The DICOM audit schema (:data:`SCHEMA_PATH`) as an lxml XMLSchema, built once per process.

    ``XMLSchema.validate`` is not documented thread-safe: callers validating from several threads
    serialize their calls (the tests and ``xds_audit verify`` validate from one thread).
    """
    return etree.XMLSchema(etree.parse(str(SCHEMA_PATH)))


def schema_errors(message: bytes) -> list[str]:
    """Why ``message`` is not a valid audit message (empty when it is); parsed with the hardened parser."""
    from xds_core.safe_xml import XmlParseError, parse_xml

    try:
        root = parse_xml(message, max_size=16 * 1024 * 1024)
    except XmlParseError as exc:
        return [str(exc)]
    schema = validator()
    if schema.validate(root):
        return []
    return [f"line {e.line}: {e.message}" for e in schema.error_log]  # type: ignore[attr-defined]
