"""The audit seam: one typed :class:`AuditEvent` per transaction, handed to a sink.

Every transaction and listener of the three actors says here what happened -- which event, who
took part, which patient(s) and objects, how it ended -- in the terms of an ATNA audit message
(DICOM PS3.15 A.5 "Audit Message Format", sent by IHE ITI TF-2a 3.20 Record Audit Event).
Turning an event into the PS3.15 A.5 XML is :mod:`xds_core.audit_xml`'s business and storing and
sending it over syslog/TLS the ATNA sink's (``atna.trail``), not this module's: the event carries
what the message needs, except the AuditSourceIdentification, which is the deployment's own
identity and belongs to the sink.

* :func:`record` is the one call that emits an event.  The default sink is none: ``record``
  then returns at once (a factory passed instead of an event is never called), so the hot paths
  pay one global read.  :func:`set_sink` installs a sink, :func:`capture` collects events in a
  test.  A sink (or an event factory) that raises never breaks the transaction: the failure is
  logged -- exception type and place only, never its text, which may carry patient data -- and
  swallowed.
* A SOAP exchange is audited by the endpoint that answers it: it knows the peer's address, the
  transaction and how the answer ended, and holds an :class:`Exchange` while the operation runs.
  The operation only adds what it learned (patient, submission set, documents, query) with
  :func:`describe`; code that finishes later (a streamed RAD-69 answer) keeps the exchange from
  :func:`current` and adds to it then.  The event is recorded once, when the answer is complete.
* Listeners (MLLP, DICOM), the WADO view and the actors' own SOAP clients record directly.
* The node's own events have builders here too: Security Alert (:func:`security_alert`,
  :func:`node_authentication_failure`), Application Activity (:func:`application_activity`), User
  Authentication (:func:`user_authentication`), Audit Log Used (:func:`audit_log_used`) and a
  consumer's Import into its archive (:func:`data_import`); ``atna.activity`` and the portal call them.

Nothing here reads settings or touches Django.  One module (~800 lines) on purpose: the
vocabularies, the event and its builders are the one concept an ATNA sink implements against;
most of its length is the PS3.15 / IHE code tables.
"""

from __future__ import annotations

import contextvars
import ipaddress
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import Enum, IntEnum, StrEnum
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import urlsplit

from xds_core import ns
from xds_core.safe_xml import to_bytes

if TYPE_CHECKING:
    from lxml import etree

    from xds_core.ebxml.messages import AdhocQueryRequest, DocumentRequest
    from xds_core.metadata.objects import Submission

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------- vocabularies


class _Coded(Enum):
    """A coded value ``EV(code, codeSystemName, displayName)`` of an audit message (PS3.15 A.5.1)."""

    @property
    def code(self) -> str:
        return self.value[0]

    @property
    def display(self) -> str:
        return self.value[1]

    @property
    def system(self) -> str:
        return self.value[2]


class EventId(_Coded):
    """EventID (PS3.16 CID 400 "Audit Event ID"; the messages of PS3.15 A.5.3)."""

    APPLICATION_ACTIVITY = ("110100", "Application Activity", "DCM")  # A.5.3.1
    AUDIT_LOG_USED = ("110101", "Audit Log Used", "DCM")  # A.5.3.2
    DICOM_INSTANCES_TRANSFERRED = ("110104", "DICOM Instances Transferred", "DCM")  # A.5.3.7
    EXPORT = ("110106", "Export", "DCM")  # A.5.3.4 Data Export
    IMPORT = ("110107", "Import", "DCM")  # A.5.3.5 Data Import
    PATIENT_RECORD = ("110110", "Patient Record", "DCM")  # A.5.3.14
    PROCEDURE_RECORD = ("110111", "Procedure Record", "DCM")  # A.5.3.15
    QUERY = ("110112", "Query", "DCM")  # A.5.3.10
    SECURITY_ALERT = ("110113", "Security Alert", "DCM")  # A.5.3.11
    USER_AUTHENTICATION = ("110114", "User Authentication", "DCM")  # A.5.3.12


class EventAction(StrEnum):
    """EventActionCode (PS3.15 A.5.1; each message of A.5.3 restricts it)."""

    CREATE = "C"
    READ = "R"
    UPDATE = "U"
    DELETE = "D"
    EXECUTE = "E"


class EventOutcome(IntEnum):
    """EventOutcomeIndicator (PS3.15 A.5.1, from RFC 3881 5.1).

    How this suite maps its answers (one rule everywhere): a Success -- with warnings or not -- is
    0; a PartialSuccess (some documents or instances, not all) is 4; a Failure, a refusal or a
    fault the requestor caused is 8; our own internal error, or a peer we could not reach at all,
    is 12 ("the action was made unavailable").
    """

    SUCCESS = 0
    MINOR_FAILURE = 4
    SERIOUS_FAILURE = 8
    MAJOR_FAILURE = 12


class Transaction(_Coded):
    """EventTypeCode ``EV(<transaction>, "IHE Transactions", <name>)`` of the transactions audited here.

    The event each side records is in :data:`AUDITED`; sections: ITI TF-2a 3.8.5.1 (ITI-8),
    3.18.5.1 (ITI-18); ITI TF-2b 3.41.5.1, 3.42.5.1, 3.43.6.1, 3.51.5.1; RAD TF-3 4.6 / 4.7
    (MPPS), 4.55, 4.68, 4.69 "Audit Record Considerations" with RAD TF-3 5.1 (ATNA trigger events).
    """

    ITI_8 = ("ITI-8", "Patient Identity Feed", "IHE Transactions")
    ITI_18 = ("ITI-18", "Registry Stored Query", "IHE Transactions")
    ITI_41 = ("ITI-41", "Provide and Register Document Set-b", "IHE Transactions")
    ITI_42 = ("ITI-42", "Register Document Set-b", "IHE Transactions")
    ITI_43 = ("ITI-43", "Retrieve Document Set", "IHE Transactions")
    ITI_51 = ("ITI-51", "Multi-Patient Stored Query", "IHE Transactions")
    RAD_6 = ("RAD-6", "Modality Procedure Step In Progress", "IHE Transactions")
    RAD_7 = ("RAD-7", "Modality Procedure Step Completed", "IHE Transactions")
    RAD_55 = ("RAD-55", "WADO Retrieve", "IHE Transactions")
    RAD_68 = ("RAD-68", "Provide and Register Imaging Document Set – MTOM/XOP", "IHE Transactions")
    RAD_69 = ("RAD-69", "Retrieve Imaging Document Set", "IHE Transactions")

    @classmethod
    def of(cls, code: str) -> Transaction | None:
        """The transaction named ``code`` ("ITI-42"), or None for one this module does not audit."""
        return _TRANSACTIONS_BY_CODE.get(code)


_TRANSACTIONS_BY_CODE: dict[str, Transaction] = {t.code: t for t in Transaction}


class ParticipantRole(_Coded):
    """RoleIDCode of an ActiveParticipant (PS3.16 CID 402 "Audit Active Participant Role ID Code")."""

    APPLICATION = ("110150", "Application", "DCM")
    APPLICATION_LAUNCHER = ("110151", "Application Launcher", "DCM")
    DESTINATION = ("110152", "Destination Role ID", "DCM")
    SOURCE = ("110153", "Source Role ID", "DCM")


class NetworkAccessPointType(IntEnum):
    """NetworkAccessPointTypeCode (PS3.15 A.5.1, from RFC 3881 5.3)."""

    MACHINE_NAME = 1
    IP_ADDRESS = 2
    URI = 5


class ObjectType(IntEnum):
    """ParticipantObjectTypeCode (PS3.15 A.5.1, from RFC 3881 5.5)."""

    PERSON = 1
    SYSTEM_OBJECT = 2


class ObjectRole(IntEnum):
    """ParticipantObjectTypeCodeRole (PS3.15 A.5.1, from RFC 3881 5.5)."""

    PATIENT = 1
    REPORT = 3
    MASTER_FILE = 5
    SECURITY_RESOURCE = 13
    JOB = 20
    QUERY = 24


class ObjectIdType(_Coded):
    """ParticipantObjectIDTypeCode (PS3.16 CID 404; IHE XDS adds the SubmissionSet's classification node).

    A stored query's id type is its transaction (``Transaction.ITI_18`` ...), ITI TF-2a 3.18.5.1.
    """

    PATIENT_NUMBER = ("2", "Patient Number", "RFC-3881")
    REPORT_NUMBER = ("9", "Report Number", "RFC-3881")  # an XDS document uniqueId (ITI TF-2b 3.43.6.1)
    URI = ("12", "URI", "RFC-3881")
    STUDY_INSTANCE_UID = ("110180", "Study Instance UID", "DCM")
    NODE_ID = ("110182", "Node ID", "DCM")
    SUBMISSION_SET = ("urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd", "submission set classificationNode",
                      "IHE XDS Metadata")  # ITI TF-2b 3.41.5.1 / 3.42.5.1


class Side(Enum):
    """Which end of a transaction records the event."""

    REQUESTOR = "requestor"  # SOAP client, DICOM SCU, HL7 sender
    RESPONDER = "responder"  # the endpoint or listener that answers


class Flow(Enum):
    """Which way the data goes, which decides the Source / Destination roles (PS3.15 A.5.3.4 / A.5.3.5)."""

    PUSH = "push"  # requestor -> responder: the requestor is the Source
    PULL = "pull"  # responder -> requestor: the requestor is the Destination
    QUERY = "query"  # A.5.3.10: the process issuing the query is the Source


@dataclass(frozen=True, slots=True)
class Audited:
    """How each side of one transaction records it: (EventID, EventActionCode) per side."""

    flow: Flow
    responder: tuple[EventId, EventAction]
    requestor: tuple[EventId, EventAction]


_PUSH_DOCUMENTS = Audited(Flow.PUSH, (EventId.IMPORT, EventAction.CREATE), (EventId.EXPORT, EventAction.READ))
_QUERY = Audited(Flow.QUERY, (EventId.QUERY, EventAction.EXECUTE), (EventId.QUERY, EventAction.EXECUTE))
_PULL_INSTANCES = Audited(Flow.PULL, (EventId.DICOM_INSTANCES_TRANSFERRED, EventAction.READ),
                          (EventId.DICOM_INSTANCES_TRANSFERRED, EventAction.CREATE))

#: The one table of what each side records (sections in :class:`Transaction`).
AUDITED: Mapping[Transaction, Audited] = {
    # ITI-8: create for A01/A04/A05, update for A08; A40 is an update of the surviving patient
    # and a delete of the merged one -- the caller passes the action.
    Transaction.ITI_8: Audited(Flow.PUSH, (EventId.PATIENT_RECORD, EventAction.CREATE),
                               (EventId.PATIENT_RECORD, EventAction.CREATE)),
    Transaction.ITI_18: _QUERY,
    Transaction.ITI_41: _PUSH_DOCUMENTS,
    Transaction.ITI_42: _PUSH_DOCUMENTS,
    Transaction.ITI_43: Audited(Flow.PULL, (EventId.EXPORT, EventAction.READ), (EventId.IMPORT, EventAction.CREATE)),
    Transaction.ITI_51: _QUERY,
    Transaction.RAD_6: Audited(Flow.PUSH, (EventId.PROCEDURE_RECORD, EventAction.CREATE),
                               (EventId.PROCEDURE_RECORD, EventAction.CREATE)),
    Transaction.RAD_7: Audited(Flow.PUSH, (EventId.PROCEDURE_RECORD, EventAction.UPDATE),
                               (EventId.PROCEDURE_RECORD, EventAction.UPDATE)),
    Transaction.RAD_55: _PULL_INSTANCES,
    Transaction.RAD_68: _PUSH_DOCUMENTS,
    Transaction.RAD_69: _PULL_INSTANCES,
}

#: A C-STORE outside any IHE transaction (a modality or PACS sending us images): DICOM Instances
#: Transferred, "C" at the receiver (PS3.15 A.5.3.7; EventTypeCode is optional there).
DICOM_STORE = Audited(Flow.PUSH, (EventId.DICOM_INSTANCES_TRANSFERRED, EventAction.CREATE),
                      (EventId.DICOM_INSTANCES_TRANSFERRED, EventAction.READ))


class SecurityAlertType(_Coded):
    """EventTypeCode of a Security Alert (PS3.16 CID 403 "Audit Event Type Code"; ITI TF-2a 3.20.4.1.1.1)."""

    NODE_AUTHENTICATION = ("110126", "Node Authentication", "DCM")
    SECURITY_CONFIGURATION = ("110129", "Security Configuration", "DCM")
    USE_OF_RESTRICTED_FUNCTION = ("110132", "Use of Restricted Function", "DCM")
    AUDIT_RECORDING_STOPPED = ("110133", "Audit Recording Stopped", "DCM")
    AUDIT_RECORDING_STARTED = ("110134", "Audit Recording Started", "DCM")
    OBJECT_SECURITY_ATTRIBUTES_CHANGED = ("110135", "Object Security Attributes Changed", "DCM")


class ApplicationActivityType(_Coded):
    """EventTypeCode of Application Activity (PS3.16 CID 401 "Audit Event Type Code"; PS3.15 A.5.3.1)."""

    APPLICATION_START = ("110120", "Application Start", "DCM")
    APPLICATION_STOP = ("110121", "Application Stop", "DCM")


class AuthenticationType(_Coded):
    """EventTypeCode of User Authentication (PS3.16 CID 401; PS3.15 A.5.3.12)."""

    LOGIN = ("110122", "Login", "DCM")
    LOGOUT = ("110123", "Logout", "DCM")


# ---------------------------------------------------------------------------------- the event


@dataclass(frozen=True, slots=True)
class Participant:
    """An ActiveParticipant (PS3.15 A.5.1, A.5.2).

    ``user_id``: a SOAP requestor's wsa:ReplyTo, an endpoint's URL, an HL7 application
    (``MSH-3|MSH-4``) or a DICOM AE title; ``alternative_user_id``: our process id, or
    ``AETITLES=<title>`` for a DICOM application (A.5.2.2); ``network_address``: IP address or
    machine name; ``role``: the participant's part in the exchange (Source, Destination, Application...);
    ``roles``: further RoleIDCodes -- for a human user, the access-control roles that authorized the
    event (ITI TF-2a 3.20.7.1.1).
    """

    user_id: str
    network_address: str = ""
    alternative_user_id: str = ""
    user_name: str = ""
    is_requestor: bool = False
    role: ParticipantRole | None = None
    roles: tuple[_Coded, ...] = ()

    @property
    def network_access_point_type(self) -> NetworkAccessPointType | None:
        return _access_point_type(self.network_address) if self.network_address else None


@lru_cache(maxsize=1024)
def _access_point_type(address: str) -> NetworkAccessPointType:
    # Cached: the same few peers come back on every transaction, and parsing an address costs ~5 µs.
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return NetworkAccessPointType.MACHINE_NAME
    return NetworkAccessPointType.IP_ADDRESS


@dataclass(frozen=True, slots=True)
class ParticipantObject:
    """A ParticipantObjectIdentification (PS3.15 A.5.1): a patient, a document, a study, a query...

    ``details`` are ParticipantObjectDetail (type, value) pairs; ``instances`` the SOP Instance
    UIDs of a study (ParticipantObjectDescription, A.5.3.7); ``query`` the query as received;
    ``name`` a ParticipantObjectName (never with a query: the schema makes them a choice).
    """

    id_type: ObjectIdType | Transaction
    object_id: str
    type_code: ObjectType
    role: ObjectRole
    query: bytes = b""
    details: tuple[tuple[str, str], ...] = ()
    instances: tuple[str, ...] = ()
    name: str = ""


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One auditable event, immutable: what an ATNA message needs but the audit source."""

    event_id: EventId
    action: EventAction
    outcome: EventOutcome
    transaction: Transaction | None
    time: datetime  # EventDateTime, UTC
    participants: tuple[Participant, ...]
    objects: tuple[ParticipantObject, ...] = ()
    outcome_description: str = ""
    #: EventTypeCodes besides the transaction's (a Security Alert's type, Login / Logout ...).
    event_types: tuple[_Coded, ...] = ()

    @property
    def patient_ids(self) -> tuple[str, ...]:
        return tuple(o.object_id for o in self.objects if o.role is ObjectRole.PATIENT)

    def participant(self, role: ParticipantRole) -> Participant | None:
        return next((p for p in self.participants if p.role is role), None)

    @property
    def requestor(self) -> Participant | None:
        return next((p for p in self.participants if p.is_requestor), None)


# ---------------------------------------------------------------------------------- building events


@cache
def _hostname() -> str:
    return socket.gethostname()


def this_node(user_id: str, *, ae_title: str = "") -> Participant:
    """This process as a participant: ``user_id`` (our endpoint URL, our HL7 application, our
    AE title); AlternativeUserID is the process id, or ``AETITLES=`` for a DICOM AE (A.5.2.2)."""
    return Participant(user_id, _hostname(), f"AETITLES={ae_title}" if ae_title else str(os.getpid()))


def remote(user_id: str, address: str, *, ae_title: str = "") -> Participant:
    """The other end of an exchange, as seen on the network."""
    return Participant(user_id, address, f"AETITLES={ae_title}" if ae_title else "")


def soap_server(url: str) -> Participant:
    """A SOAP endpoint we call: its URL, and its host (ours for a ``local:`` endpoint)."""
    return Participant(url, urlsplit(url).hostname or _hostname())


def soap_client(address: str = "") -> Participant:
    """A SOAP requestor: UserID is its wsa:ReplyTo, always anonymous here (synchronous exchanges;
    ITI TF-2b 3.42.5.1); ``address`` empty = this process."""
    if address:
        return Participant(ns.WSA_ANONYMOUS, address)
    return Participant(ns.WSA_ANONYMOUS, _hostname(), str(os.getpid()))


def transaction_event(transaction: Transaction | None, side: Side, *, requestor: Participant, responder: Participant,
                      objects: Iterable[ParticipantObject] = (), outcome: EventOutcome = EventOutcome.SUCCESS,
                      action: EventAction | None = None, audited: Audited | None = None, description: str = "",
                      others: Iterable[Participant] = (), time: datetime | None = None) -> AuditEvent:
    """The event ``side`` records for one exchange of ``transaction`` (its EventID, action and roles
    from :data:`AUDITED`, or ``audited`` for an exchange outside any IHE transaction)."""
    rule = audited or AUDITED[transaction]  # type: ignore[index]
    event_id, default_action = rule.responder if side is Side.RESPONDER else rule.requestor
    requestor_role = ParticipantRole.DESTINATION if rule.flow is Flow.PULL else ParticipantRole.SOURCE
    responder_role = ParticipantRole.SOURCE if rule.flow is Flow.PULL else ParticipantRole.DESTINATION
    return AuditEvent(
        event_id=event_id, action=action or default_action, outcome=outcome, transaction=transaction,
        time=time or datetime.now(UTC),
        participants=(replace(requestor, is_requestor=True, role=requestor_role),
                      replace(responder, is_requestor=False, role=responder_role), *others),
        objects=tuple(objects), outcome_description=description)


def patient(patient_id: str, *, details: tuple[tuple[str, str], ...] = ()) -> ParticipantObject:
    """A patient (PS3.15 A.5.1: Person / Patient / "Patient Number"), id as an HL7 CX string."""
    return ParticipantObject(ObjectIdType.PATIENT_NUMBER, patient_id, ObjectType.PERSON, ObjectRole.PATIENT,
                             details=details)


def submission_set(unique_id: str) -> ParticipantObject:
    """A SubmissionSet (ITI TF-2b 3.41.5.1 / 3.42.5.1: System Object / Job, its uniqueId)."""
    return ParticipantObject(ObjectIdType.SUBMISSION_SET, unique_id, ObjectType.SYSTEM_OBJECT, ObjectRole.JOB)


def document(unique_id: str, repository_unique_id: str = "", home_community_id: str | None = None
             ) -> ParticipantObject:
    """A document (ITI TF-2b 3.43.6.1: System Object / Report, its uniqueId, repository and community)."""
    details = [("Repository Unique Id", repository_unique_id)] if repository_unique_id else []
    if home_community_id:
        details.append(("ihe:homeCommunityID", home_community_id))
    return ParticipantObject(ObjectIdType.REPORT_NUMBER, unique_id, ObjectType.SYSTEM_OBJECT, ObjectRole.REPORT,
                             details=tuple(details))


def study(study_instance_uid: str, instances: Iterable[str] = ()) -> ParticipantObject:
    """A study (PS3.15 A.5.3.7: System Object / Report, Study Instance UID, the SOP Instance UIDs)."""
    return ParticipantObject(ObjectIdType.STUDY_INSTANCE_UID, study_instance_uid, ObjectType.SYSTEM_OBJECT,
                             ObjectRole.REPORT, instances=tuple(instances))


def query(transaction: Transaction, query_id: str, query_bytes: bytes, home_community_id: str | None = None
          ) -> ParticipantObject:
    """A stored query (ITI TF-2a 3.18.5.1: System Object / Query, id type = the transaction, the
    stored query id, the AdhocQueryRequest itself, its encoding and homeCommunityId)."""
    details = [("QueryEncoding", "UTF-8")]
    if home_community_id:
        details.append(("urn:ihe:iti:xca:2010:homeCommunityId", home_community_id))
    return ParticipantObject(transaction, query_id, ObjectType.SYSTEM_OBJECT, ObjectRole.QUERY, query=query_bytes,
                             details=tuple(details))


# What an operation describes, from the messages it already parsed (called only while audited).

def submission_objects(submission: Submission) -> list[ParticipantObject]:
    """ITI-41 / ITI-42 / RAD-68: the patient (1) and the SubmissionSet (1)."""
    ss = submission.submission_set
    objects = [patient(ss.patient_id)] if ss.patient_id else []
    return objects + ([submission_set(ss.unique_id)] if ss.unique_id else [])


_QUOTED = re.compile(r"'((?:[^']|'')*)'")


def query_objects(transaction: Transaction, request: AdhocQueryRequest, body: etree._Element
                  ) -> list[ParticipantObject]:
    """ITI-18 / ITI-51: the patient(s) the query names (0..n) and the query itself."""
    ids: dict[str, None] = {}
    for name, values in request.parameters:
        if name.lower().endswith("patientid"):  # $XDSDocumentEntryPatientId, $XDSFolderPatientId, $patientId...
            for value in values:
                for found in _QUOTED.findall(value):
                    ids[found.replace("''", "'")] = None
    return [*(patient(pid) for pid in ids),
            query(transaction, request.query_id, to_bytes(body, xml_declaration=False), request.home_community_id)]


def document_objects(requests: Iterable[DocumentRequest]) -> list[ParticipantObject]:
    """ITI-43: the requested documents (1..n)."""
    return [document(r.document_unique_id, r.repository_unique_id, r.home_community_id) for r in requests]


def imaging_objects(patient_id: str | None, studies: Mapping[str, Iterable[str]]) -> list[ParticipantObject]:
    """RAD-55 / RAD-69 / C-STORE (DICOM Instances Transferred, A.5.3.7): the studies with their instances
    and the patient (1), when known."""
    return [*([patient(patient_id)] if patient_id else []),
            *(study(uid, instances) for uid, instances in studies.items())]


def node_authentication_failure(*, listener: str, peer_address: str, reason: str, peer: str = "",
                                time: datetime | None = None) -> AuditEvent:
    """Security Alert, Node Authentication (PS3.15 A.5.3.11; ITI TF-2a Table 3.20.4.1.1.1-1): a peer failed
    TLS authentication or is not in the node identity table, and was refused.

    ``listener``: our listener (its URL, ``mllp://host:port``, ``dicom://AE@host:port``) -- the reporting
    process; ``peer``: what the peer claimed (certificate subject, calling AE title), if anything;
    ``reason``: free text without patient data.  Outcome 4: the attempt was mitigated (refused).
    """
    reporter = replace(this_node(listener), is_requestor=False, role=None)
    performer = Participant(peer or "unauthenticated peer", peer_address, is_requestor=True)
    subject = ParticipantObject(ObjectIdType.URI, listener, ObjectType.SYSTEM_OBJECT, ObjectRole.SECURITY_RESOURCE,
                                details=(("Alert Description", reason),))
    return AuditEvent(event_id=EventId.SECURITY_ALERT, action=EventAction.EXECUTE,
                      outcome=EventOutcome.MINOR_FAILURE, transaction=None, time=time or datetime.now(UTC),
                      participants=(reporter, performer), objects=(subject,), outcome_description=reason,
                      event_types=(SecurityAlertType.NODE_AUTHENTICATION,))


def security_alert(alert: SecurityAlertType, *, reporter: Participant, subject: str, description: str,
                   outcome: EventOutcome = EventOutcome.SUCCESS, performers: Iterable[Participant] = (),
                   subject_type: ObjectIdType = ObjectIdType.URI, time: datetime | None = None) -> AuditEvent:
    """Any other Security Alert (PS3.15 A.5.3.11): tampering found, audit started/stopped, configuration
    changed.  ``subject`` is the alert subject (a URI or node id), ``description`` its Alert Description."""
    obj = ParticipantObject(subject_type, subject, ObjectType.SYSTEM_OBJECT, ObjectRole.SECURITY_RESOURCE,
                            details=(("Alert Description", description),))
    return AuditEvent(event_id=EventId.SECURITY_ALERT, action=EventAction.EXECUTE, outcome=outcome,
                      transaction=None, time=time or datetime.now(UTC),
                      participants=(reporter, *performers), objects=(obj,), outcome_description=description,
                      event_types=(alert,))


def application_activity(started: bool, app: str, *, launcher: Participant | None = None,
                         time: datetime | None = None) -> AuditEvent:
    """Application Activity (PS3.15 A.5.3.1; ITI TF-2a Table 3.20.4.1.1.1-1 "Actor-start-stop"): the service
    ``app`` (``xdsi-web:<site>``, ``xdsi-hl7:<site>`` ...) started or stopped.

    One participant with RoleIDCode 110150 Application -- this process: UserID ``app``, AlternativeUserID
    its process id, UserIsRequestor false -- and, when known, who launched it (110151 Application Launcher,
    the requestor).  No participant objects (A.5.3.1 has none).
    """
    application = replace(this_node(app), is_requestor=False, role=ParticipantRole.APPLICATION)
    launchers = (replace(launcher, is_requestor=True, role=ParticipantRole.APPLICATION_LAUNCHER),) if launcher else ()
    kind = ApplicationActivityType.APPLICATION_START if started else ApplicationActivityType.APPLICATION_STOP
    return AuditEvent(event_id=EventId.APPLICATION_ACTIVITY, action=EventAction.EXECUTE,
                      outcome=EventOutcome.SUCCESS, transaction=None, time=time or datetime.now(UTC),
                      participants=(application, *launchers), event_types=(kind,))


def user_authentication(login: bool, user: Participant, *, node: Participant | None = None,
                        outcome: EventOutcome = EventOutcome.SUCCESS, description: str = "",
                        time: datetime | None = None) -> AuditEvent:
    """User Authentication (PS3.15 A.5.3.12): ``user`` logged in (``login``) or out, or failed to.

    ``user``: the person authenticated or claimed -- UserID the (claimed) user name, the browser's
    address (NetworkAccessPoint is M); UserIsRequestor true, except for a logout the system made
    (inactivity), where the caller passes ``is_requestor=False``.  ``node``: the process that performed
    the authentication (0..1).  A failed login: outcome 4 or 8.  No participant objects; never a password.
    """
    performing = (replace(node, is_requestor=False),) if node is not None else ()
    kind = AuthenticationType.LOGIN if login else AuthenticationType.LOGOUT
    return AuditEvent(event_id=EventId.USER_AUTHENTICATION, action=EventAction.EXECUTE, outcome=outcome,
                      transaction=None, time=time or datetime.now(UTC), participants=(user, *performing),
                      outcome_description=description, event_types=(kind,))


def data_import(*, importer: Participant, origins: Iterable[Participant], patient_id: str,
                studies: Mapping[str, Iterable[str]], into: Participant | None = None,
                humans: Iterable[Participant] = (), outcome: EventOutcome = EventOutcome.SUCCESS,
                description: str = "", time: datetime | None = None) -> AuditEvent:
    """Import (PS3.15 A.5.3.5): data from outside this organization entered it -- another site's study
    imported into this hospital's archive under the local patient (IHE RAD IRWF.b import reconciliation).

    ``importer``: this process, the requestor (110152 Destination Role ID, as the importing side of an
    ITI-43); ``origins``: where the data came from (110153 Source Role ID: the other sites' imaging
    sources); ``into``: the local archive it was stored in (a further Destination); ``humans``: the
    person(s) who asked for it, when known (Human Requestor, as ITI TF-2b 3.43.6.1.1).  Objects: the
    patient the data now belongs to (the local id) and the studies with their SOP instances.
    """
    parties = [replace(importer, is_requestor=True, role=ParticipantRole.DESTINATION),
               *(replace(o, is_requestor=False, role=ParticipantRole.SOURCE) for o in origins)]
    if into is not None:
        parties.append(replace(into, is_requestor=False, role=ParticipantRole.DESTINATION))
    parties.extend(replace(h, is_requestor=True) for h in humans)
    return AuditEvent(event_id=EventId.IMPORT, action=EventAction.CREATE, outcome=outcome, transaction=None,
                      time=time or datetime.now(UTC), participants=tuple(parties),
                      objects=tuple(imaging_objects(patient_id, studies)), outcome_description=description)


#: ParticipantObjectName of the audit trail (PS3.15 A.5.3.2).
SECURITY_AUDIT_LOG = "Security Audit Log"


def audit_log_used(user: Participant, query_description: str, *, log_uri: str = "xdsi:audit-trail",
                   outcome: EventOutcome = EventOutcome.SUCCESS, node: Participant | None = None,
                   time: datetime | None = None) -> AuditEvent:
    """Audit Log Used (PS3.15 A.5.3.2): ``user`` (a person or process: the requestor) read or searched the trail.

    The object is the trail: System Object / Security Resource, IDTypeCode 12 URI (``log_uri``), name
    "Security Audit Log"; what was searched for (``query_description``: "patient=..., since=...") goes in
    its ParticipantObjectDetail "QueryDescription" and the EventOutcomeDescription.  ``node``: the
    process serving the search (the second participant A.5.3.2 allows).
    """
    trail = ParticipantObject(ObjectIdType.URI, log_uri, ObjectType.SYSTEM_OBJECT, ObjectRole.SECURITY_RESOURCE,
                              details=(("QueryDescription", query_description),) if query_description else (),
                              name=SECURITY_AUDIT_LOG)
    serving = (replace(node, is_requestor=False),) if node is not None else ()
    return AuditEvent(event_id=EventId.AUDIT_LOG_USED, action=EventAction.READ, outcome=outcome, transaction=None,
                      time=time or datetime.now(UTC), participants=(replace(user, is_requestor=True), *serving),
                      objects=(trail,), outcome_description=query_description)


# ---------------------------------------------------------------------------------- outcomes


def outcome_of_status(status: str | None, default: EventOutcome | None = None) -> EventOutcome | None:
    """A RegistryResponse status (URN or local name) as an outcome; ``default`` for anything else.
    (Compare with None, not truth: SUCCESS is 0.)"""
    return _STATUS_OUTCOMES.get((status or "").rsplit(":", 1)[-1], default)


_STATUS_OUTCOMES = {"Success": EventOutcome.SUCCESS, "PartialSuccess": EventOutcome.MINOR_FAILURE,
                    "Failure": EventOutcome.SERIOUS_FAILURE}


def partial(succeeded: int, failed: int) -> EventOutcome:
    """All went through: success; some: minor failure; none: serious failure."""
    if not failed:
        return EventOutcome.SUCCESS
    return EventOutcome.MINOR_FAILURE if succeeded else EventOutcome.SERIOUS_FAILURE


def worst(*outcomes: EventOutcome | None) -> EventOutcome | None:
    known = [o for o in outcomes if o is not None]
    return max(known) if known else None


# ---------------------------------------------------------------------------------- sinks

#: Receives each event; must be thread-safe (events come from request threads and listeners).
Sink = Callable[[AuditEvent], None]

_sink: Sink | None = None
_sink_lock = threading.Lock()


def set_sink(sink: Sink | None) -> Sink | None:
    """Install ``sink`` (None: record nothing, the default); returns the previous one."""
    global _sink
    with _sink_lock:
        previous, _sink = _sink, sink
    return previous


def chain_sink(sink: Sink) -> Sink | None:
    """Install ``sink`` in front of the sink installed now, which still receives every event -- even one
    ``sink`` failed on; returns that previous sink (``set_sink(previous)`` takes ``sink`` out again)."""
    global _sink
    with _sink_lock:
        previous = _sink

        def chained(event: AuditEvent) -> None:
            try:
                sink(event)
            finally:
                if previous is not None:
                    previous(event)

        _sink = chained
    return previous


_S = TypeVar("_S", bound=Callable[["AuditEvent"], None])


class SinkSlot(Generic[_S]):
    """Where one kind of sink (the ATNA trail, the portal's journal) is installed once per process, chained in
    front of the sink installed before it (:func:`chain_sink`), and taken out again (tests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._installed: _S | None = None
        self._previous: Sink | None = None

    def install(self, make: Callable[[], _S]) -> _S:
        """Install ``make()``, once: a second call returns the sink installed by the first."""
        with self._lock:
            if self._installed is None:
                sink = make()
                self._previous = chain_sink(sink)
                self._installed = sink
            return self._installed

    def installed(self) -> _S | None:
        return self._installed

    def uninstall(self, close: Callable[[_S], None] | None = None) -> None:
        """Put the previous sink back (``close`` the removed one first, if given)."""
        with self._lock:
            if self._installed is None:
                return
            if close is not None:
                close(self._installed)
            set_sink(self._previous)
            self._installed, self._previous = None, None


def enabled() -> bool:
    """Whether events are recorded at all (a sink is installed)."""
    return _sink is not None


@contextmanager
def capture() -> Iterator[list[AuditEvent]]:
    """Collect the events recorded inside the block (tests); the previous sink comes back after."""
    events: list[AuditEvent] = []
    previous = set_sink(events.append)
    try:
        yield events
    finally:
        set_sink(previous)


def record(event: AuditEvent | Callable[[], AuditEvent | Iterable[AuditEvent]]) -> None:
    """Record an event: give it to the sink.  ``event`` may be a factory -- of one event, or of
    several (an ITI-8 merge) -- called only when a sink is installed.  Never raises."""
    sink = _sink
    if sink is None:
        return
    try:
        made = event if isinstance(event, AuditEvent) else event()
        for one in (made,) if isinstance(made, AuditEvent) else made:
            sink(one)
    except Exception as exc:  # noqa: BLE001 - auditing must never break the transaction
        _log_failure(exc, "recording an audit event")


def safely(bookkeeping: Callable[..., object], *args: Any) -> None:
    """Run audit bookkeeping that is not an event yet (a listener collecting what to record); never raises."""
    try:
        bookkeeping(*args)
    except Exception as exc:  # noqa: BLE001 - auditing must never break the transaction
        _log_failure(exc, "audit bookkeeping")


def _log_failure(exc: BaseException, doing: str) -> None:
    """Log a failure of the audit path without its message or locals (they may carry patient data)."""
    tb, where = exc.__traceback__, "?"
    while tb is not None:
        where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    logger.error("%s failed: %s at %s (the event is lost; details withheld: they may carry patient data)",
                 doing, type(exc).__name__, where)


# ---------------------------------------------------------------------------------- exchanges


@dataclass(slots=True, eq=False)
class Exchange:
    """The responder's audit record of one exchange, filled as the exchange goes.

    Whoever answers the exchange (the SOAP endpoint) creates it with the two parties, sets the
    ``transaction`` once known and calls :meth:`finish` with the outcome it saw; the operation
    adds the objects (:func:`describe`) and, when only it knows the real outcome, :meth:`worsen`.
    An operation that returns some of the documents asked for says which (:meth:`deliver`): the
    exchange then records a success for those and a failure for the rest (ITI TF-2b 3.43.6.1.2).
    """

    requestor: Participant
    responder: Participant
    transaction: Transaction | None = None
    objects: list[ParticipantObject] = field(default_factory=list)
    outcome: EventOutcome | None = None
    description: str = ""
    #: The ids of the documents returned, when the operation told (None: it did not).
    delivered: set[str] | None = None
    _finished: bool = False

    def add(self, objects: Iterable[ParticipantObject]) -> None:
        self.objects.extend(objects)

    def describe(self, build: Callable[..., Iterable[ParticipantObject]], *args: Any) -> None:
        """Add ``build(*args)``; never raises (a failure is logged without details)."""
        try:
            self.objects.extend(build(*args))
        except Exception as exc:  # noqa: BLE001 - auditing must never break the transaction
            _log_failure(exc, "describing an audited exchange")

    def worsen(self, outcome: EventOutcome, description: str = "") -> None:
        """The outcome is at least ``outcome`` (the worst one told wins)."""
        if self.outcome is None or outcome > self.outcome:
            self.outcome = outcome
            self.description = description or self.description

    def deliver(self, document_ids: Iterable[str]) -> None:
        """The documents (uniqueIds) the answer returns; the others asked for were not."""
        self.delivered = (self.delivered or set()) | set(document_ids)

    def finish(self, outcome: EventOutcome | None) -> None:
        """Record the event(s), once; an exchange that never reached a transaction records nothing."""
        if self._finished or self.transaction is None:
            return
        self._finished = True
        final = worst(outcome, self.outcome)
        record(lambda: self._events(EventOutcome.SUCCESS if final is None else final))

    def _events(self, outcome: EventOutcome) -> list[AuditEvent]:
        def event(objects: Iterable[ParticipantObject], result: EventOutcome) -> AuditEvent:
            return transaction_event(self.transaction, Side.RESPONDER, requestor=self.requestor,
                                     responder=self.responder, objects=objects, outcome=result,
                                     description=self.description)

        documents = [o for o in self.objects if o.id_type is ObjectIdType.REPORT_NUMBER]
        returned = [o for o in documents if self.delivered is not None and o.object_id in self.delivered]
        if self.delivered is None or not returned or len(returned) == len(documents):
            return [event(self.objects, outcome)]
        # ITI TF-2b 3.43.6.1.2: mixed results -- a success event for the documents returned, a failure
        # event for the rest (each with the other objects, e.g. the patient).
        others = [o for o in self.objects if o.id_type is not ObjectIdType.REPORT_NUMBER]
        missing = [o for o in documents if o.object_id not in self.delivered]
        return [event([*others, *returned], EventOutcome.SUCCESS),
                event([*others, *missing], max(outcome, EventOutcome.SERIOUS_FAILURE))]


_current: contextvars.ContextVar[Exchange | None] = contextvars.ContextVar("xds_audit_exchange", default=None)


def soap_exchange(remote_address: str, endpoint_url: str) -> Exchange:
    """The record of one SOAP request received from ``remote_address`` at our ``endpoint_url``."""
    return Exchange(soap_client(remote_address), this_node(endpoint_url))


def current() -> Exchange | None:
    """The exchange being answered in this context, if it is audited."""
    return _current.get()


class active:  # noqa: N801 - used as ``with audit.active(exchange):``
    """Make ``exchange`` (or None: no exchange) the current one inside the block."""

    __slots__ = ("_exchange", "_token")

    def __init__(self, exchange: Exchange | None) -> None:
        self._exchange = exchange

    def __enter__(self) -> Exchange | None:
        self._token = _current.set(self._exchange)
        return self._exchange

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)


def describe(build: Callable[..., Iterable[ParticipantObject]], *args: Any) -> None:
    """Add ``build(*args)`` to the current exchange; ``build`` runs only when there is one. Never raises."""
    exchange = _current.get()
    if exchange is not None:
        exchange.describe(build, *args)


def delivered(document_ids: Iterable[str]) -> None:
    """The current exchange returns these documents (:meth:`Exchange.deliver`); no exchange: nothing,
    and ``document_ids`` (a generator may be passed) is not even read."""
    exchange = _current.get()
    if exchange is not None:
        exchange.deliver(document_ids)


def worsen(outcome: EventOutcome, description: str = "") -> None:
    """The current exchange's outcome is at least ``outcome`` (no exchange: nothing)."""
    exchange = _current.get()
    if exchange is not None:
        exchange.worsen(outcome, description)


def record_sent(transaction: Transaction, url: str, outcome: EventOutcome,
                build: Callable[..., Iterable[ParticipantObject]], *args: Any, description: str = "") -> None:
    """Record the requestor's side of a SOAP transaction this process sent to ``url``; ``build(*args)``
    gives the objects and runs only when a sink is installed."""
    if _sink is None:
        return
    record(lambda: transaction_event(transaction, Side.REQUESTOR, requestor=soap_client(),
                                     responder=soap_server(url), objects=build(*args), outcome=outcome,
                                     description=description))
