"""Finding a patient's imaging manifests: ITI-18 Registry Stored Query as the Document Consumer.

* FindDocuments (ITI TF-2a 3.18.4.1.2.3.7.1) for the patient, with ``$XDSDocumentEntryFormatCode`` =
  the affinity domain's KOS format codes (RAD TF-3 4.68.4.1.2.3.2: formatCode of a manifest is the
  KOS SOP Class UID) unless any format is asked for, ``$XDSDocumentEntryStatus`` Approved (and
  Deprecated when asked) and ``$XDSDocumentEntryCreationTimeFrom`` / ``To`` (From inclusive, To
  exclusive: ITI TF-2a 3.18.4.1.2.3.6);
* with a study: FindDocumentsByReferenceId (ITI TF-2a 3.18.4.1.2.3.7.14), ``$XDSDocumentEntryReferenceIdList``
  = ``UID^^^^urn:ihe:iti:xds:2016:studyInstanceUID`` (ITI TF-3 Table 4.2.3.2-1 referenceIdList, CXi).
  A registry that does not offer it (XDSUnknownStoredQuery, ITI TF-2a 3.18.4.1.2.3.7) is asked
  FindDocuments instead and the study is matched here on each entry's referenceIdList;
* XDSTooManyResults (ITI TF-2a 3.18.4.1.3.x / ITI TF-3 Table 4.2.4.1-2) is answered by halving the
  creationTime range, at most :data:`MAX_SPLIT_DEPTH` times deep.

Every entry is checked here too: a manifest is ``application/dicom`` (RAD TF-3 4.68.4.1.2.3.2); a
registry that ignored a filter does not get its extra entries through.  Each query is audited as
the querying side of ITI-18 (ITI TF-2a 3.18.5.1.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from lxml import etree

from xds_core import audit
from xds_core.ebxml import parse as ebxml_parse
from xds_core.ebxml import serialize as ebxml_serialize
from xds_core.errors import ErrorCode, RegistryError
from xds_core.identifiers import is_dicom_uid
from xds_core.metadata.objects import DocumentEntry
from xds_core.metadata.values import CX
from xds_core.safe_xml import to_bytes
from xds_core.soap.client import SoapClient, TransportError
from xds_core.vocabulary import (
    DICOM_MIME_TYPE,
    Action,
    AvailabilityStatus,
    QueryParameter,
    ReferenceIdType,
    ReturnType,
    StoredQuery,
)

#: The in-process address of this server's Document Registry endpoint.
LOCAL_REGISTRY = "local:registry"
#: How many times a creationTime range is halved on XDSTooManyResults (2**10 sub-ranges at most).
MAX_SPLIT_DEPTH = 10
#: The range searched when no date is given and the registry says too many results.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)

# Stored query parameter names (ITI TF-2a Table 3.18.4.1.2.3.7.1-1, 3.18.4.1.2.3.7.14-1).
P_PATIENT_ID = QueryParameter.DE_PATIENT_ID
P_STATUS = QueryParameter.DE_STATUS
P_FORMAT_CODE = QueryParameter.DE_FORMAT_CODE
P_CREATION_FROM = QueryParameter.DE_CREATION_FROM
P_CREATION_TO = QueryParameter.DE_CREATION_TO
P_REFERENCE_ID_LIST = QueryParameter.DE_REFERENCE_ID_LIST


class FindError(Exception):
    """The registry could not be asked, or refused the query; the message says which and why."""


class TooManyResults(FindError):
    """XDSTooManyResults even on the narrowest creationTime range tried."""


@dataclass(frozen=True, slots=True)
class FoundManifest:
    """A DocumentEntry of an imaging manifest, as the registry described it (ITI TF-3 Table 4.2.3.2-1)."""

    unique_id: str
    repository_unique_id: str
    hash: str
    size: int | None
    mime_type: str
    study_instance_uids: tuple[str, ...]
    creation_time: str
    status: str
    entry_uuid: str
    home_community_id: str | None
    patient_id: str
    #: eventCodeList as ``code^^scheme`` (XDS-I: the modalities and anatomic regions, RAD TF-3 4.68.4.1.2.3.2).
    event_codes: tuple[str, ...] = ()
    #: serviceStartTime (DTM, UTC): when the imaging study began.
    service_start_time: str = ""


@dataclass(frozen=True, slots=True)
class FindQuery:
    """What to look for.  ``since`` / ``until`` are DTM (YYYYMMDD[HHMM[SS]]), ``until`` exclusive."""

    patient_id: str
    format_codes: tuple[str, ...] = ()  # code^^scheme; empty: any format
    study_instance_uid: str | None = None
    include_deprecated: bool = False
    since: str | None = None
    until: str | None = None


@dataclass
class FindResult:
    manifests: list[FoundManifest] = field(default_factory=list)
    #: Entries the registry returned that are not manifests we can use: (uniqueId or entryUUID, why).
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: What the search had to do on the way (fallbacks, splits), for the operator.
    notes: list[str] = field(default_factory=list)
    queries: int = 0


def query_problems(query: FindQuery) -> list[str]:
    """Hostile or mistyped input, before anything is sent."""
    out = [f"patient id {query.patient_id!r}: {p}" for p in CX.problems(query.patient_id)]
    for code in query.format_codes:
        value, sep, scheme = code.partition("^^")
        if not sep or not value or not scheme or "'" in code or "," in code:
            out.append(f"format code {code!r} is not code^^scheme")
    uid = query.study_instance_uid
    if uid is not None and not is_dicom_uid(uid):
        out.append(f"study {uid!r} is not a DICOM UID")
    for name, dtm in (("since", query.since), ("until", query.until)):
        if dtm is not None and _parse_dtm(dtm) is None:
            out.append(f"{name} {dtm!r} is not a date/time YYYYMMDD[HHMM[SS]]")
    return out


def _parse_dtm(value: str) -> datetime | None:
    formats = {8: "%Y%m%d", 10: "%Y%m%d%H", 12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}
    fmt = formats.get(len(value))
    if fmt is None or not value.isascii() or not value.isdigit():
        return None
    try:
        return datetime.strptime(value, fmt).replace(tzinfo=UTC)
    except ValueError:
        return None


def _dtm(value: datetime) -> str:
    return value.strftime("%Y%m%d%H%M%S")


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _list(values: list[str]) -> str:
    return "(" + ",".join(_quoted(v) for v in values) + ")"


def study_reference_id(study_instance_uid: str) -> str:
    """The CXi of a study in referenceIdList (ITI TF-3 Table 4.2.3.2-1; XDS-I.b RAD TF-3 4.68.4.1.2.3.2)."""
    return f"{study_instance_uid}^^^^{ReferenceIdType.STUDY_INSTANCE_UID}"


class RegistryQuery:
    """ITI-18 to one registry, audited; one instance per search."""

    def __init__(self, registry_url: str, *, timeout: float = 120.0) -> None:
        self.url = registry_url or LOCAL_REGISTRY
        self.timeout = timeout

    def ask(self, query_id: StoredQuery, parameters: list[tuple[str, list[str]]]
            ) -> tuple[list[DocumentEntry], list[RegistryError]]:
        """(the DocumentEntries, the RegistryErrors and warnings) of one stored query."""
        request = ebxml_serialize.adhoc_query_request(query_id, parameters, return_type=ReturnType.LeafClass)
        outcome = audit.EventOutcome.SERIOUS_FAILURE
        try:
            try:
                result = SoapClient(self.url, timeout=self.timeout).call(Action.RegistryStoredQuery, request)
            except TransportError as exc:
                outcome = audit.EventOutcome.MAJOR_FAILURE
                raise FindError(f"registry at {self.url} not reachable: {exc}") from exc
            if result.fault is not None:
                raise FindError(f"registry at {self.url} answered ITI-18 with a SOAP Fault: {result.fault.reason}")
            if result.body is None:
                raise FindError(f"registry at {self.url} answered ITI-18 with no SOAP body")
            try:
                parsed = ebxml_parse.parse_adhoc_query_response(result.body)
            except Exception as exc:  # not an AdhocQueryResponse: nothing to use
                raise FindError(f"registry at {self.url} sent no usable AdhocQueryResponse: {exc}") from exc
            outcome = audit.outcome_of_status(parsed.status, audit.EventOutcome.SUCCESS)  # type: ignore[assignment]
            return [o for o in parsed.objects if isinstance(o, DocumentEntry)], parsed.errors
        finally:  # ITI TF-2a 3.18.5.1.1: the Document Consumer's side of ITI-18
            audit.record_sent(audit.Transaction.ITI_18, self.url, outcome, _audited_query, query_id, parameters,
                              request)


def _audited_query(query_id: StoredQuery, parameters: list[tuple[str, list[str]]],
                   request: etree._Element) -> list[audit.ParticipantObject]:
    patients = [v.strip("'").replace("''", "'") for name, values in parameters if name == P_PATIENT_ID
                for v in values]
    return [*(audit.patient(p) for p in patients),
            audit.query(audit.Transaction.ITI_18, query_id.value, to_bytes(request, xml_declaration=False))]


def _error_codes(errors: list[RegistryError]) -> set[str]:
    return {e.error_code for e in errors if e.is_error}


def find_manifests(registry_url: str, query: FindQuery, *, timeout: float = 120.0) -> FindResult:
    """The patient's manifests matching ``query``, oldest first (by creationTime)."""
    problems = query_problems(query)
    if problems:
        raise FindError("; ".join(problems))
    registry = RegistryQuery(registry_url, timeout=timeout)
    result = FindResult()
    by_reference = query.study_instance_uid is not None
    since = _parse_dtm(query.since) if query.since else None
    until = _parse_dtm(query.until) if query.until else None
    entries: dict[str, DocumentEntry] = {}
    try:
        _search(registry, query, by_reference, since, until, 0, entries, result)
    except _Unsupported:
        result.notes.append(f"registry at {registry.url} does not offer FindDocumentsByReferenceId "
                            "(XDSUnknownStoredQuery): asked FindDocuments and matched the study on referenceIdList")
        entries.clear()
        _search(registry, query, False, since, until, 0, entries, result)
    for entry in entries.values():
        found, why = _check(entry, query)
        if found is None:
            result.skipped.append((entry.unique_id or entry.id, why))
        else:
            result.manifests.append(found)
    result.manifests.sort(key=lambda m: (m.creation_time, m.unique_id))
    return result


class _Unsupported(Exception):
    pass


def _parameters(query: FindQuery, by_reference: bool, since: datetime | None, until: datetime | None
                ) -> list[tuple[str, list[str]]]:
    statuses = [AvailabilityStatus.APPROVED.value]
    if query.include_deprecated:
        statuses.append(AvailabilityStatus.DEPRECATED.value)
    parameters: list[tuple[str, list[str]]] = [(P_PATIENT_ID, [_quoted(query.patient_id)]),
                                               (P_STATUS, [_list(statuses)])]
    if query.format_codes:
        parameters.append((P_FORMAT_CODE, [_list(list(query.format_codes))]))
    if since is not None:
        parameters.append((P_CREATION_FROM, [_dtm(since)]))
    if until is not None:
        parameters.append((P_CREATION_TO, [_dtm(until)]))
    if by_reference and query.study_instance_uid:
        parameters.append((P_REFERENCE_ID_LIST, [_list([study_reference_id(query.study_instance_uid)])]))
    return parameters


def _search(registry: RegistryQuery, query: FindQuery, by_reference: bool, since: datetime | None,
            until: datetime | None, depth: int, entries: dict[str, DocumentEntry], result: FindResult) -> None:
    query_id = StoredQuery.FindDocumentsByReferenceId if by_reference else StoredQuery.FindDocuments
    found, errors = registry.ask(query_id, _parameters(query, by_reference, since, until))
    result.queries += 1
    codes = _error_codes(errors)
    if by_reference and ErrorCode.XDSUnknownStoredQuery in codes:
        raise _Unsupported
    if ErrorCode.XDSTooManyResults in codes:
        low = since or EARLIEST
        high = until or datetime.now(UTC) + timedelta(days=1)
        if depth >= MAX_SPLIT_DEPTH or high - low < timedelta(seconds=2):
            raise TooManyResults(f"registry at {registry.url} says XDSTooManyResults even for creationTime "
                                 f"{_dtm(low)}..{_dtm(high)} (split {depth} times); narrow --since/--until")
        if depth == 0:
            result.notes.append("registry answered XDSTooManyResults: the creationTime range was split")
        middle = (low + (high - low) / 2).replace(microsecond=0)
        _search(registry, query, by_reference, low, middle, depth + 1, entries, result)
        _search(registry, query, by_reference, middle, high, depth + 1, entries, result)
        return
    if codes:
        raise FindError(f"registry at {registry.url} refused {query_id.name}: " + "; ".join(
            f"{e.error_code}: {e.code_context}" for e in errors if e.is_error))
    for entry in found:
        entries.setdefault(entry.id, entry)


def _check(entry: DocumentEntry, query: FindQuery) -> tuple[FoundManifest | None, str]:
    """Client-side checks of what the registry returned (it may have ignored a filter)."""
    unique_id = entry.unique_id or ""
    if entry.mime_type != DICOM_MIME_TYPE:
        return None, f"mimeType {entry.mime_type!r} is not {DICOM_MIME_TYPE} (not an imaging manifest)"
    if entry.patient_id and entry.patient_id != query.patient_id:
        return None, f"belongs to patient {entry.patient_id}, not {query.patient_id}"
    allowed = {AvailabilityStatus.APPROVED.value}
    if query.include_deprecated:
        allowed.add(AvailabilityStatus.DEPRECATED.value)
    if entry.status not in allowed:
        return None, f"availabilityStatus {entry.status} not asked for"
    if query.format_codes:
        code = entry.format_code
        if code is None or str(code) not in query.format_codes:
            return None, f"formatCode {code} is not a manifest format code"
    studies = tuple(ref.split("^", 1)[0] for ref in entry.reference_id_list
                    if ref.rsplit("^", 1)[-1] == ReferenceIdType.STUDY_INSTANCE_UID and "^" in ref)
    if query.study_instance_uid and query.study_instance_uid not in studies:
        return None, f"references no study {query.study_instance_uid}"
    if not unique_id or not entry.repository_unique_id:
        return None, "no uniqueId or repositoryUniqueId"
    try:
        size = int(entry.size) if entry.size is not None else None
    except ValueError:
        return None, f"size {entry.size!r} is not a number"
    creation = entry.creation_time or ""
    if query.since and creation and creation[:14] < query.since[:14]:
        return None, f"creationTime {creation} before {query.since}"
    if query.until and creation and creation[:14] >= query.until[:14]:
        return None, f"creationTime {creation} not before {query.until}"
    return FoundManifest(
        unique_id=unique_id, repository_unique_id=entry.repository_unique_id or "", hash=(entry.hash or "").lower(),
        size=size, mime_type=entry.mime_type, study_instance_uids=studies, creation_time=creation,
        status=entry.status or "", entry_uuid=entry.id, home_community_id=entry.home, patient_id=entry.patient_id or "",
        event_codes=tuple(str(code) for code in entry.event_code_list),
        service_start_time=entry.service_start_time or "",
    ), ""
