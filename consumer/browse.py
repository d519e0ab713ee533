"""A patient's record as the Imaging Document Consumer sees it: ITI-18 GetAll, read into plain objects.

* :func:`normalise_patient_id` turns what a person typed (a full CX ``id^^^&OID&ISO`` or a bare id, which
  gets the affinity domain's assigning authority) into a patient id, or says why not -- before anything
  is sent (ITI TF-3 4.2.3.1.7: an XDS patientId is a CX with only CX.1 and CX.4, CX.4 an ISO OID);
* :func:`count_documents`: FindDocuments (ITI TF-2a 3.18.4.1.2.3.7.1) of any format, ObjectRef, to tell
  whether the registry holds documents for the patient;
* :func:`patient_record`: one GetAll (ITI TF-2a 3.18.4.1.2.3.7.6) with ``$XDSDocumentEntryStatus``
  Approved + Deprecated, ``$XDSSubmissionSetStatus`` / ``$XDSFolderStatus`` Approved and
  ``$XDSDocumentEntryType`` stable + on-demand, turned by :func:`read_response` into submission sets,
  document entries (codes with their display names: the Name of each Classification, ITI TF-3
  4.2.3.1.2) and their lifecycle (RPLC, XFRM, APND, XFRM_RPLC, signs: ITI TF-3 4.2.2.2), grouped by
  source hospital, then submission set, newest first.  :func:`read_record` does the same from
  xds_core's ebRIM model (the reference the fast reader is tested against).

Every query is audited as the querying side of ITI-18 (ITI TF-2a 3.18.5.1.1).  Nothing here reads
settings: the caller passes the registry URL, the affinity domain authority and the manifest format codes.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from enum import StrEnum

from lxml import etree

from xds_core import audit, ns
from xds_core.ebxml import parse as ebxml_parse
from xds_core.ebxml import serialize as ebxml_serialize
from xds_core.ebxml.responses import parse_registry_errors
from xds_core.errors import ErrorCode
from xds_core.metadata.objects import (
    Association,
    DocumentEntry,
    RegistryObject,
    RegistryPackage,
    SubmissionSet,
    is_submission_set,
)
from xds_core.metadata.values import CX, Code
from xds_core.safe_xml import to_bytes
from xds_core.soap.client import SoapClient, TransportError
from xds_core.vocabulary import (
    REFERENCE_ID_LIST_SLOT,
    Action,
    AssociationType,
    AvailabilityStatus,
    ClassificationNode,
    ClassificationScheme,
    IdentificationScheme,
    ObjectType,
    QueryParameter,
    ReferenceIdType,
    ReturnType,
    StoredQuery,
    SubmissionSetStatus,
)

#: The in-process address of this server's Document Registry endpoint (as consumer.find).
LOCAL_REGISTRY = "local:registry"
#: Longest patient id accepted from a form (the registry's column holds 256).
MAX_PATIENT_ID = 256
#: HL7 v2 delimiters that may not appear inside CX.1 (ITI TF-3 4.2.3.1.7: component / repetition / escape).
_CX1_FORBIDDEN = frozenset("^&~\\|")
_CX1_MARKUP = frozenset("<>\"'")

# Stored query parameter names (ITI TF-2a Table 3.18.4.1.2.3.7.6-1, 3.18.4.1.2.3.7.1-1).
P_PATIENT_ID = QueryParameter.PATIENT_ID
P_DE_PATIENT_ID = QueryParameter.DE_PATIENT_ID
P_DE_STATUS = QueryParameter.DE_STATUS
P_SS_STATUS = QueryParameter.SS_STATUS
P_FOLDER_STATUS = QueryParameter.FOLDER_STATUS
P_DE_TYPE = QueryParameter.DE_TYPE


class BrowseError(Exception):
    """The registry could not be asked, or refused the query; the message says which and why, in words."""


class UnknownPatient(BrowseError):
    """The registry answered XDSUnknownPatientId (a registry may; ours answers an empty Success)."""


class Relation(StrEnum):
    """A document relationship seen from one end (ITI TF-3 4.2.2.2: source = the newer entry)."""

    REPLACES = "replaces"
    REPLACED_BY = "replaced by"
    TRANSFORMS = "transformation of"
    TRANSFORMED_BY = "transformed into"
    TRANSFORM_REPLACES = "transformation replacing"
    TRANSFORM_REPLACED_BY = "replaced by transformation"
    APPENDS = "appended to"
    APPENDED_BY = "has addendum"
    SIGNS = "signs"
    SIGNED_BY = "signed by"


#: (seen from the source, seen from the target) for each relationship association type.
_RELATIONS: dict[str, tuple[Relation, Relation]] = {
    AssociationType.RPLC.value: (Relation.REPLACES, Relation.REPLACED_BY),
    AssociationType.XFRM.value: (Relation.TRANSFORMS, Relation.TRANSFORMED_BY),
    AssociationType.XFRM_RPLC.value: (Relation.TRANSFORM_REPLACES, Relation.TRANSFORM_REPLACED_BY),
    AssociationType.APND.value: (Relation.APPENDS, Relation.APPENDED_BY),
    AssociationType.signs.value: (Relation.SIGNS, Relation.SIGNED_BY),
}


# --- patient ids ---------------------------------------------------------------------------------

def normalise_patient_id(text: str, default_authority: str) -> tuple[str, list[str]]:
    """(the CX patient id, problems): a bare id gets ``^^^&<default_authority>&ISO``.

    Hostile input is refused here, before it reaches a query: control characters, HL7 delimiters in
    CX.1, over-long ids, and anything :meth:`CX.problems` finds (the check consumer.find uses).
    """
    value = text.strip()
    if not value:
        return "", ["the patient id is empty"]
    if len(value) > MAX_PATIENT_ID:
        return "", [f"the patient id is longer than {MAX_PATIENT_ID} characters"]
    if "^" not in value:
        if any(ch in _CX1_FORBIDDEN for ch in value):
            return "", ["a bare patient id may not contain ^ & ~ \\ |"]
        value = f"{value}^^^&{default_authority}&ISO"
    problems = patient_id_problems(value)
    return (value if not problems else ""), problems


def patient_id_problems(value: str) -> list[str]:
    """Why ``value`` is not an acceptable XDS patientId CX (empty list: it is)."""
    if len(value) > MAX_PATIENT_ID:
        return [f"the patient id is longer than {MAX_PATIENT_ID} characters"]
    if any(unicodedata.category(ch)[0] in "CZ" and ch != " " for ch in value):
        return ["the patient id contains control or separator characters"]
    problems = list(CX.problems(value))
    cx1 = value.split("^", 1)[0]
    if any(ch in _CX1_FORBIDDEN for ch in cx1):
        problems.append("CX.1 (id) contains an HL7 delimiter")
    if any(ch in _CX1_MARKUP for ch in cx1):
        # no affinity domain issues ids with markup or quotes; one that has them is an attack or a typo
        problems.append("CX.1 (id) contains < > \" or '")
    if cx1 != cx1.strip():
        problems.append("CX.1 (id) has leading or trailing spaces")
    return problems


# --- the plain objects the pages show ------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CodeValue:
    """A coded attribute with its display name (the Classification's Name, ITI TF-3 4.2.3.1.2)."""

    code: str
    scheme: str
    display_name: str

    @property
    def label(self) -> str:
        return self.display_name or self.code

    @classmethod
    def of(cls, code: Code | None) -> CodeValue | None:
        if code is None:
            return None
        return cls(code.code, code.scheme, code.display_name or "")


@dataclass(frozen=True, slots=True)
class Link:
    """One lifecycle relationship of a document entry, seen from that entry."""

    relation: Relation
    #: The other entry's uniqueId (its entryUUID when the other entry is not in the answer).
    other: str
    other_entry_uuid: str


@dataclass(slots=True)
class DocumentView:
    """A DocumentEntry as the page shows it (ITI TF-3 Table 4.2.3.2-1 names)."""

    # What grouping, ordering and lifecycle need (the fast reader reads these for every entry) ...
    entry_uuid: str
    unique_id: str
    status: str  # "Approved" / "Deprecated" (the last part of the availabilityStatus URN)
    creation_time: str
    author_institutions: tuple[str, ...]
    # ... and what only a shown entry needs (read by PatientRecord.complete for the fast reader).
    repository_unique_id: str = ""
    home_community_id: str = ""
    title: str = ""
    on_demand: bool = False
    mime_type: str = ""
    size: int | None = None
    service_start_time: str = ""
    service_stop_time: str = ""
    class_code: CodeValue | None = None
    type_code: CodeValue | None = None
    format_code: CodeValue | None = None
    practice_setting_code: CodeValue | None = None
    healthcare_facility_type_code: CodeValue | None = None
    confidentiality_codes: tuple[CodeValue, ...] = ()
    event_codes: tuple[CodeValue, ...] = ()
    study_instance_uids: tuple[str, ...] = ()
    is_manifest: bool = False
    links: list[Link] = field(default_factory=list)
    #: Where a page links this entry (its manifest page, say): set by the caller, empty for none.
    href: str = ""

    @property
    def deprecated(self) -> bool:
        return self.status == "Deprecated"

    @property
    def created(self) -> str:
        return readable_dtm(self.creation_time)

    @property
    def service_start(self) -> str:
        return readable_dtm(self.service_start_time)

    @property
    def service_stop(self) -> str:
        return readable_dtm(self.service_stop_time)

    @property
    def event_labels(self) -> str:
        return ", ".join(c.label for c in self.event_codes)

    @property
    def confidentiality_labels(self) -> str:
        return ", ".join(c.label for c in self.confidentiality_codes)

    @property
    def studies(self) -> str:
        return ", ".join(self.study_instance_uids)


@dataclass(slots=True)
class SubmissionSetView:
    """A SubmissionSet (ITI TF-3 Table 4.2.3.3-1) with the entries it holds (HasMember)."""

    entry_uuid: str
    unique_id: str
    source_id: str
    submission_time: str
    title: str
    author_institutions: tuple[str, ...]
    documents: list[DocumentView] = field(default_factory=list)

    @property
    def submitted(self) -> str:
        return readable_dtm(self.submission_time)


@dataclass(slots=True)
class SourceGroup:
    """The submission sets of one source hospital, newest first."""

    name: str
    source_ids: tuple[str, ...]
    submission_sets: list[SubmissionSetView] = field(default_factory=list)

    @property
    def document_count(self) -> int:
        return sum(len(s.documents) for s in self.submission_sets)


@dataclass(slots=True)
class PatientRecord:
    """What GetAll returned for one patient, read and grouped."""

    patient_id: str
    sources: list[SourceGroup] = field(default_factory=list)
    documents: dict[str, DocumentView] = field(default_factory=dict)  # by entryUUID
    #: Warnings the registry sent with a Success / PartialSuccess (words for the page).
    warnings: list[str] = field(default_factory=list)
    #: Entries whose details the fast reader has not read yet: entryUUID -> (ExtrinsicObject, manifest codes).
    pending: dict[str, tuple[etree._Element, frozenset[str]]] = field(default_factory=dict, repr=False,
                                                                       compare=False)

    @property
    def submission_sets(self) -> list[SubmissionSetView]:
        """Every submission set in page order: by source hospital, then newest first."""
        return [s for group in self.sources for s in group.submission_sets]

    def complete(self, documents: Iterable[DocumentView]) -> None:
        """Read every attribute of ``documents`` (the fast reader leaves them to the entries a page shows)."""
        for doc in documents:
            pending = self.pending.pop(doc.entry_uuid, None)
            if pending is not None:
                _fill_details(doc, *pending)

    def release(self) -> None:
        """Drop the answer's XML: entries not completed by now stay as they are.  A page calls this once it
        has completed what it shows, so the (large) parsed answer is freed at once rather than by the
        garbage collector when the template context's reference cycle is collected."""
        self.pending.clear()


# --- reading values ------------------------------------------------------------------------------

def readable_dtm(value: str | None) -> str:
    """An XDS DTM (YYYY[MM[DD[hh[mm[ss]]]]], UTC: ITI TF-3 Table 4.2.3.1.7-2) for people: 2026-11-27 12:00 UTC."""
    if not value or not value.isascii() or not value.isdigit() or len(value) < 4:
        return value or ""
    parts = [value[0:4], value[4:6], value[6:8]]
    date = "-".join(p for p in parts if p)
    time = ":".join(p for p in (value[8:10], value[10:12], value[12:14]) if p)
    if len(value) == 10:
        time += ":00"
    return f"{date} {time} UTC" if time else date


def institution_name(xon: str) -> str:
    """XON.1, the organization name (ITI TF-3 Table 4.2.3.1.7-2), without HL7 escapes' noise."""
    return xon.split("^", 1)[0].strip()


def _status(value: str | None) -> str:
    return (value or "").rsplit(":", 1)[-1]


def _institutions(obj: RegistryObject, scheme: str) -> tuple[str, ...]:
    names: dict[str, None] = {}
    for author in obj.authors(scheme):
        for xon in author.institutions:
            name = institution_name(xon)
            if name:
                names.setdefault(name, None)
    return tuple(names)


def _submission_set(package: RegistryPackage) -> SubmissionSetView:
    S = ClassificationScheme  # noqa: N806
    ss = package if isinstance(package, SubmissionSet) else SubmissionSet(
        **{name: getattr(package, name) for name in package.__dataclass_fields__})
    return SubmissionSetView(
        entry_uuid=ss.id, unique_id=ss.unique_id or "", source_id=ss.source_id or "",
        submission_time=ss.submission_time or "", title=ss.name.text or "",
        author_institutions=_institutions(ss, S.SubmissionSet_author))


# --- the fast reader: GetAll's answer element, read in one pass ----------------------------------
#
# A patient page reads up to hundreds of entries per view; building the full ebRIM model
# (xds_core.ebxml.parse: every Slot, Classification and ExternalIdentifier as objects, kept for a
# faithful round trip) costs several times the registry's own work.  This reader takes from the
# elements only what the page shows.  An answer it does not expect (top-level Classifications or
# ExternalIdentifiers, which ebRIM allows: ITI TF-3 4.2.3.3.1) goes through xds_core's parser instead;
# tests check that both readers agree.

_RIM = f"{{{ns.RIM}}}"
R_SLOT, R_VALUE_LIST, R_VALUE = f"{_RIM}Slot", f"{_RIM}ValueList", f"{_RIM}Value"
R_NAME, R_LOCALIZED_STRING = f"{_RIM}Name", f"{_RIM}LocalizedString"
R_CLASSIFICATION, R_EXTERNAL_IDENTIFIER = f"{_RIM}Classification", f"{_RIM}ExternalIdentifier"
R_EXTRINSIC_OBJECT, R_REGISTRY_PACKAGE = f"{_RIM}ExtrinsicObject", f"{_RIM}RegistryPackage"
R_ASSOCIATION, R_OBJECT_REF, R_REGISTRY_OBJECT_LIST = f"{_RIM}Association", f"{_RIM}ObjectRef", \
    f"{_RIM}RegistryObjectList"
RS_REGISTRY_ERROR_LIST = f"{{{ns.RS}}}RegistryErrorList"
Q_ADHOC_QUERY_RESPONSE = f"{{{ns.QUERY}}}AdhocQueryResponse"

_AUTHOR_SCHEMES = frozenset({ClassificationScheme.DocumentEntry_author.value,
                             ClassificationScheme.SubmissionSet_author.value})
_SS_NODE = ClassificationNode.SUBMISSION_SET.value
_DE_UNIQUE_ID = IdentificationScheme.DocumentEntry_uniqueId.value
_SS_UNIQUE_ID = IdentificationScheme.SubmissionSet_uniqueId.value
_SS_SOURCE_ID = IdentificationScheme.SubmissionSet_sourceId.value


class _Unexpected(Exception):
    """The answer has a shape the fast reader leaves to xds_core's parser."""


def _slot_values(slot: etree._Element) -> list[str]:
    return [value.text or "" for value_list in slot if value_list.tag == R_VALUE_LIST
            for value in value_list if value.tag == R_VALUE]


def _name_text(name: etree._Element) -> str:
    for child in name:
        if child.tag == R_LOCALIZED_STRING:
            return child.get("value") or ""
    return ""


def _classification_parts(el: etree._Element) -> tuple[Code | None, list[str]]:
    """(the code, or None for an author or a marker; the author's institutions)."""
    if el.get("classificationNode"):
        return None, []
    scheme = el.get("classificationScheme") or ""
    coding_scheme = display = ""
    institutions: list[str] = []
    for child in el:
        tag = child.tag
        if tag == R_SLOT:
            name = child.get("name")
            if name == "codingScheme":
                values = _slot_values(child)
                coding_scheme = values[0] if values else ""
            elif name == "authorInstitution":
                institutions += _slot_values(child)
        elif tag == R_NAME:
            display = _name_text(child)
    if scheme in _AUTHOR_SCHEMES:
        return None, institutions
    return Code(el.get("nodeRepresentation") or "", coding_scheme, display or None), []


def _element_parts(el: etree._Element) -> tuple[dict[str, list[str]], dict[str, list[Code]], list[str],
                                                dict[str, str], str]:
    """(slots, codes by scheme, author institutions XON, external ids by scheme, title) of an ExtrinsicObject."""
    slots: dict[str, list[str]] = {}
    codes: dict[str, list[Code]] = {}
    institutions: list[str] = []
    external: dict[str, str] = {}
    title = ""
    for child in el:
        tag = child.tag
        if tag == R_SLOT:
            slots.setdefault(child.get("name") or "", _slot_values(child))
        elif tag == R_CLASSIFICATION:
            code, names = _classification_parts(child)
            if code is not None:
                codes.setdefault(child.get("classificationScheme") or "", []).append(code)
            institutions += names
        elif tag == R_EXTERNAL_IDENTIFIER:
            external.setdefault(child.get("identificationScheme") or "", child.get("value") or "")
        elif tag == R_NAME:
            title = _name_text(child)
    return slots, codes, institutions, external, title


def _unique_names(xons: list[str]) -> tuple[str, ...]:
    names: dict[str, None] = {}
    for xon in xons:
        name = institution_name(xon)
        if name:
            names.setdefault(name, None)
    return tuple(names)


def _document_view(entry_uuid: str, *, unique_id: str, home: str, status: str, object_type: str, mime_type: str,
                   title: str, slots: dict[str, list[str]], codes: dict[str, list[Code]],
                   institutions: tuple[str, ...], manifest_codes: frozenset[str]) -> DocumentView:
    S = ClassificationScheme  # noqa: N806

    def one(scheme: str) -> CodeValue | None:
        found = codes.get(scheme)
        return CodeValue.of(found[0]) if found else None

    def slot(name: str) -> str:
        values = slots.get(name)
        return values[0] if values else ""

    try:
        size: int | None = int(slot("size")) if slot("size") else None
    except ValueError:
        size = None
    studies = tuple(ref.split("^", 1)[0] for ref in slots.get(REFERENCE_ID_LIST_SLOT, [])
                    if "^" in ref and ref.rsplit("^", 1)[-1] == ReferenceIdType.STUDY_INSTANCE_UID)
    format_code = one(S.DocumentEntry_formatCode)
    return DocumentView(
        entry_uuid=entry_uuid, unique_id=unique_id, repository_unique_id=slot("repositoryUniqueId"),
        home_community_id=home, title=title, status=_status(status),
        on_demand=object_type == ObjectType.ON_DEMAND_DOCUMENT_ENTRY, mime_type=mime_type,
        size=size, creation_time=slot("creationTime"), service_start_time=slot("serviceStartTime"),
        service_stop_time=slot("serviceStopTime"), class_code=one(S.DocumentEntry_classCode),
        type_code=one(S.DocumentEntry_typeCode), format_code=format_code,
        practice_setting_code=one(S.DocumentEntry_practiceSettingCode),
        healthcare_facility_type_code=one(S.DocumentEntry_healthcareFacilityTypeCode),
        confidentiality_codes=tuple(CodeValue(c.code, c.scheme, c.display_name or "")
                                    for c in codes.get(S.DocumentEntry_confidentialityCode, [])),
        event_codes=tuple(CodeValue(c.code, c.scheme, c.display_name or "")
                          for c in codes.get(S.DocumentEntry_eventCodeList, [])),
        study_instance_uids=studies, author_institutions=institutions,
        is_manifest=format_code is not None and f"{format_code.code}^^{format_code.scheme}" in manifest_codes,
    )


_DE_AUTHOR = ClassificationScheme.DocumentEntry_author.value
_SS_AUTHOR = ClassificationScheme.SubmissionSet_author.value
#: DocumentView's attributes that only a shown entry needs.
_DETAILS = tuple(f.name for f in fields(DocumentView)
                 if f.name not in ("entry_uuid", "unique_id", "status", "creation_time", "author_institutions",
                                   "links", "href", "is_manifest")) + ("is_manifest",)


def _light_document(el: etree._Element) -> DocumentView:
    """An ExtrinsicObject's id, uniqueId, status, creationTime and author institutions only: one pass over
    its children, descending only into the two it needs (first occurrence wins, as in xds_core's model)."""
    unique_id = creation = ""
    seen_unique_id = seen_creation = False
    xons: list[str] = []
    for child in el:
        tag = child.tag
        if tag == R_SLOT:
            if not seen_creation and child.get("name") == "creationTime":
                values = _slot_values(child)
                creation, seen_creation = (values[0] if values else ""), True
        elif tag == R_EXTERNAL_IDENTIFIER:
            if not seen_unique_id and child.get("identificationScheme") == _DE_UNIQUE_ID:
                unique_id, seen_unique_id = child.get("value") or "", True
        elif tag == R_CLASSIFICATION and child.get("classificationScheme") == _DE_AUTHOR:
            for slot in child:
                if slot.tag == R_SLOT and slot.get("name") == "authorInstitution":
                    xons += _slot_values(slot)
    return DocumentView(entry_uuid=el.get("id") or "", unique_id=unique_id, status=_status(el.get("status")),
                        creation_time=creation, author_institutions=_unique_names(xons))


def _submission_set_element(el: etree._Element) -> SubmissionSetView | None:
    """A RegistryPackage with the SubmissionSet marker as a view (None for any other package)."""
    unique_id = source_id = submission_time = title = ""
    marker = False
    xons: list[str] = []
    for child in el:
        tag = child.tag
        if tag == R_CLASSIFICATION:
            if child.get("classificationNode") == _SS_NODE:
                marker = True
            elif child.get("classificationScheme") == _SS_AUTHOR:
                for slot in child:
                    if slot.tag == R_SLOT and slot.get("name") == "authorInstitution":
                        xons += _slot_values(slot)
        elif tag == R_EXTERNAL_IDENTIFIER:
            scheme = child.get("identificationScheme")
            if scheme == _SS_UNIQUE_ID and not unique_id:
                unique_id = child.get("value") or ""
            elif scheme == _SS_SOURCE_ID and not source_id:
                source_id = child.get("value") or ""
        elif tag == R_SLOT:
            if not submission_time and child.get("name") == "submissionTime":
                values = _slot_values(child)
                submission_time = values[0] if values else ""
        elif tag == R_NAME and not title:
            title = _name_text(child)
    if not marker:
        return None
    return SubmissionSetView(entry_uuid=el.get("id") or "", unique_id=unique_id, source_id=source_id,
                             submission_time=submission_time, title=title, author_institutions=_unique_names(xons))


def _full_document(el: etree._Element, manifest_codes: frozenset[str]) -> DocumentView:
    slots, codes, xons, external, title = _element_parts(el)
    uuid = el.get("id") or ""
    return _document_view(
        uuid, unique_id=external.get(_DE_UNIQUE_ID, ""), home=el.get("home") or "",
        status=el.get("status") or "", object_type=el.get("objectType") or "",
        mime_type=el.get("mimeType") or "", title=title, slots=slots, codes=codes,
        institutions=_unique_names(xons), manifest_codes=manifest_codes)


def _fill_details(doc: DocumentView, el: etree._Element, manifest_codes: frozenset[str]) -> None:
    full = _full_document(el, manifest_codes)
    for name in _DETAILS:
        setattr(doc, name, getattr(full, name))


@dataclass(slots=True)
class _Read:
    """What an answer holds, before grouping."""

    documents: dict[str, DocumentView] = field(default_factory=dict)
    sets: dict[str, SubmissionSetView] = field(default_factory=dict)
    #: (associationType, sourceObject, targetObject, SubmissionSetStatus)
    associations: list[tuple[str, str, str, str]] = field(default_factory=list)
    pending: dict[str, tuple[etree._Element, frozenset[str]]] = field(default_factory=dict)


def _read_elements(object_list: etree._Element, manifest_codes: frozenset[str]) -> _Read:
    out = _Read()
    for el in object_list:
        tag = el.tag
        if tag == R_EXTRINSIC_OBJECT:
            doc = _light_document(el)
            out.documents[doc.entry_uuid] = doc
            out.pending[doc.entry_uuid] = (el, manifest_codes)
        elif tag == R_ASSOCIATION:
            status = ""
            for child in el:
                if child.tag == R_SLOT and child.get("name") == "SubmissionSetStatus":
                    values = _slot_values(child)
                    status = values[0] if values else ""
            out.associations.append((el.get("associationType") or "", el.get("sourceObject") or "",
                                     el.get("targetObject") or "", status))
        elif tag == R_REGISTRY_PACKAGE:
            ss = _submission_set_element(el)
            if ss is not None:  # None: a Folder, not shown
                out.sets[ss.entry_uuid] = ss
        elif tag in (R_CLASSIFICATION, R_EXTERNAL_IDENTIFIER):
            raise _Unexpected
    return out


def _read_objects(objects: list[RegistryObject], manifest_codes: frozenset[str]) -> _Read:
    """The same from xds_core's model (the reference reader)."""
    S = ClassificationScheme  # noqa: N806
    out = _Read()
    for obj in objects:
        if isinstance(obj, DocumentEntry):
            codes: dict[str, list[Code]] = {}
            for c in obj.classifications:
                if c.classification_scheme and c.classification_scheme not in _AUTHOR_SCHEMES:
                    codes.setdefault(c.classification_scheme, []).append(c.code)
            slots: dict[str, list[str]] = {}
            for s in obj.slots:
                slots.setdefault(s.name, list(s.values))
            out.documents[obj.id] = _document_view(
                obj.id, unique_id=obj.unique_id or "", home=obj.home or "", status=obj.status or "",
                object_type=obj.object_type or "", mime_type=obj.mime_type, title=obj.name.text or "",
                slots=slots, codes=codes,
                institutions=_unique_names([x for a in obj.authors(S.DocumentEntry_author) for x in a.institutions]),
                manifest_codes=manifest_codes)
        elif isinstance(obj, Association):
            out.associations.append((obj.association_type, obj.source_object, obj.target_object,
                                     obj.submission_set_status or ""))
        elif isinstance(obj, RegistryPackage) and (isinstance(obj, SubmissionSet) or is_submission_set(obj)):
            out.sets[obj.id] = _submission_set(obj)
    return out


def read_record(patient_id: str, objects: list[RegistryObject], *, manifest_format_codes: frozenset[str] = frozenset(),
                source_names: dict[str, str] | None = None) -> PatientRecord:
    """GetAll's LeafClass objects (xds_core's model) as a :class:`PatientRecord`."""
    return _assemble(patient_id, _read_objects(objects, manifest_format_codes), source_names or {})


def read_response(patient_id: str, response: etree._Element, *,
                  manifest_format_codes: frozenset[str] = frozenset(),
                  source_names: dict[str, str] | None = None) -> PatientRecord:
    """An AdhocQueryResponse (LeafClass) as a :class:`PatientRecord`: the fast reader, or xds_core's
    parser for answers with top-level Classifications / ExternalIdentifiers.  The fast reader reads
    the details of an entry only when asked (:meth:`PatientRecord.complete`)."""
    object_list = next((c for c in response if c.tag == R_REGISTRY_OBJECT_LIST), None)
    if object_list is None:
        return PatientRecord(patient_id)
    try:
        read = _read_elements(object_list, manifest_format_codes)
    except _Unexpected:
        parsed = ebxml_parse.parse_adhoc_query_response(response)
        read = _read_objects(parsed.objects, manifest_format_codes)
    return _assemble(patient_id, read, source_names or {})


def _assemble(patient_id: str, read: _Read, source_names: dict[str, str]) -> PatientRecord:
    """Documents into their submission sets, lifecycle links both ways, sets into source hospitals.

    A document belongs to the submission set whose HasMember carries SubmissionSetStatus=Original
    (ITI TF-3 4.2.2.1.1); one only referenced (Reference) appears there when it has no original set in
    the answer.  The source hospital is the submission set's author institution (XON.1), else the
    documents' author institution, else ``source_names[sourceId]`` (e.g. the endpoint directory's
    name of that imaging source), else the sourceId OID itself.
    """
    record = PatientRecord(patient_id, pending=read.pending)
    docs = record.documents = read.documents
    sets = read.sets
    original: dict[str, str] = {}
    referenced: dict[str, str] = {}
    has_member = AssociationType.HasMember.value
    reference = SubmissionSetStatus.REFERENCE.value
    for kind, source, target, ss_status in read.associations:
        if kind == has_member:
            if source in sets and target in docs:
                (referenced if ss_status == reference else original).setdefault(target, source)
            continue
        pair = _RELATIONS.get(kind)
        if pair is None:
            continue
        new, old = docs.get(source), docs.get(target)
        if new is not None:
            new.links.append(Link(pair[0], old.unique_id if old else target, target))
        if old is not None:
            old.links.append(Link(pair[1], new.unique_id if new else source, source))
    orphans: list[DocumentView] = []
    for uuid, doc in docs.items():
        owner = original.get(uuid) or referenced.get(uuid)
        if owner is None:
            orphans.append(doc)
        else:
            sets[owner].documents.append(doc)
    newest_first = lambda d: (d.creation_time, d.unique_id)  # noqa: E731
    for ss in sets.values():
        ss.documents.sort(key=newest_first, reverse=True)
    if orphans:  # a registry that sent entries without their submission set: still shown
        holder = SubmissionSetView("", "", "", "", "(no submission set in the answer)", ())
        holder.documents = sorted(orphans, key=newest_first, reverse=True)
        sets[""] = holder
    groups: dict[str, SourceGroup] = {}
    for ss in sets.values():
        name = _source_name(ss, source_names)
        group = groups.get(name)
        if group is None:
            group = groups[name] = SourceGroup(name, ())
        group.submission_sets.append(ss)
        if ss.source_id and ss.source_id not in group.source_ids:
            group.source_ids = (*group.source_ids, ss.source_id)
    for group in groups.values():
        # newest first; uniqueId and entryUUID break ties so the order (and paging) is stable
        group.submission_sets.sort(key=lambda s: (s.submission_time, s.unique_id, s.entry_uuid), reverse=True)
    record.sources = sorted(groups.values(), key=lambda g: (g.name.casefold(), g.name))
    return record


def _source_name(ss: SubmissionSetView, source_names: dict[str, str]) -> str:
    if ss.author_institutions:
        return ss.author_institutions[0]
    for doc in ss.documents:
        if doc.author_institutions:
            return doc.author_institutions[0]
    if ss.source_id:
        return source_names.get(ss.source_id) or f"Source {ss.source_id}"
    return "Unknown source"


# --- ITI-18 --------------------------------------------------------------------------------------

def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _list(values: list[str]) -> str:
    return "(" + ",".join(_quoted(v) for v in values) + ")"


def _audited_query(query_id: StoredQuery, parameters: list[tuple[str, list[str]]],
                   request: etree._Element) -> list[audit.ParticipantObject]:
    patients = [v.strip("'").replace("''", "'") for name, values in parameters
                if name in (P_PATIENT_ID, P_DE_PATIENT_ID) for v in values]
    return [*(audit.patient(p) for p in patients),
            audit.query(audit.Transaction.ITI_18, query_id.value, to_bytes(request, xml_declaration=False))]


@dataclass(frozen=True, slots=True)
class QueryAnswer:
    """An AdhocQueryResponse that is not a Failure: the element, and the registry's warnings in words."""

    response: etree._Element
    warnings: list[str]


def stored_query(registry_url: str, query_id: StoredQuery, parameters: list[tuple[str, list[str]]], *,
                 return_type: ReturnType = ReturnType.LeafClass, timeout: float = 30.0) -> QueryAnswer:
    """One ITI-18 to ``registry_url`` (empty: this process's registry), audited; every failure in words."""
    url = registry_url or LOCAL_REGISTRY
    request = ebxml_serialize.adhoc_query_request(query_id, parameters, return_type=return_type)
    outcome = audit.EventOutcome.SERIOUS_FAILURE
    try:
        try:
            result = SoapClient(url, timeout=timeout).call(Action.RegistryStoredQuery, request)
        except TransportError as exc:
            outcome = audit.EventOutcome.MAJOR_FAILURE
            raise BrowseError(f"The registry at {url} is not reachable ({exc}).") from exc
        if result.fault is not None:
            raise BrowseError(f"The registry at {url} answered with a SOAP Fault: {result.fault.reason}")
        body = result.body
        if body is None or body.tag != Q_ADHOC_QUERY_RESPONSE:
            raise BrowseError(f"The registry at {url} sent no AdhocQueryResponse.")
        status = body.get("status") or ""
        errors = parse_registry_errors(next((c for c in body if c.tag == RS_REGISTRY_ERROR_LIST), None))
        outcome = audit.outcome_of_status(status, audit.EventOutcome.SUCCESS)  # type: ignore[assignment]
    finally:  # ITI TF-2a 3.18.5.1.1: the Document Consumer's side of ITI-18
        audit.record_sent(audit.Transaction.ITI_18, url, outcome, _audited_query, query_id, parameters, request)
    failures = [e for e in errors if e.is_error]
    if any(e.error_code == ErrorCode.XDSUnknownPatientId for e in failures):
        raise UnknownPatient(f"The registry at {url} does not know this patient (XDSUnknownPatientId).")
    if failures or status.endswith(":Failure"):
        raise BrowseError(f"The registry at {url} refused the query: " + ("; ".join(
            f"{e.error_code}: {e.code_context}" for e in failures) or "status Failure"))
    return QueryAnswer(body, [f"{e.error_code}: {e.code_context}" for e in errors if not e.is_error])


def count_documents(registry_url: str, patient_id: str, *, timeout: float = 30.0) -> int:
    """How many Approved or Deprecated entries of any format the registry holds for the patient
    (FindDocuments, ObjectRef: no metadata travels)."""
    _check(patient_id)
    statuses = [AvailabilityStatus.APPROVED.value, AvailabilityStatus.DEPRECATED.value]
    answer = stored_query(registry_url, StoredQuery.FindDocuments, [
        (P_DE_PATIENT_ID, [_quoted(patient_id)]), (P_DE_STATUS, [_list(statuses)]),
        (P_DE_TYPE, [_list([ObjectType.STABLE_DOCUMENT_ENTRY.value, ObjectType.ON_DEMAND_DOCUMENT_ENTRY.value])]),
    ], return_type=ReturnType.ObjectRef, timeout=timeout)
    object_list = next((c for c in answer.response if c.tag == R_REGISTRY_OBJECT_LIST), None)
    if object_list is None:
        return 0
    # a registry that answers LeafClass anyway: its ExtrinsicObjects count too
    return sum(1 for c in object_list if c.tag in (R_OBJECT_REF, R_EXTRINSIC_OBJECT))


def get_all_parameters(patient_id: str) -> list[tuple[str, list[str]]]:
    """GetAll's parameters (ITI TF-2a Table 3.18.4.1.2.3.7.6-1)."""
    return [
        (P_PATIENT_ID, [_quoted(patient_id)]),
        (P_DE_STATUS, [_list([AvailabilityStatus.APPROVED.value, AvailabilityStatus.DEPRECATED.value])]),
        (P_SS_STATUS, [_list([AvailabilityStatus.APPROVED.value])]),
        (P_FOLDER_STATUS, [_list([AvailabilityStatus.APPROVED.value])]),
        # On-Demand entries too (ITI TF-2a 3.18.4.1.2.3.6.2: absent means Stable only).
        (P_DE_TYPE, [_list([ObjectType.STABLE_DOCUMENT_ENTRY.value, ObjectType.ON_DEMAND_DOCUMENT_ENTRY.value])]),
    ]


def patient_record(registry_url: str, patient_id: str, *, manifest_format_codes: frozenset[str] = frozenset(),
                   source_names: dict[str, str] | None = None, timeout: float = 30.0) -> PatientRecord:
    """The patient's record from one GetAll (LeafClass)."""
    _check(patient_id)
    answer = stored_query(registry_url, StoredQuery.GetAll, get_all_parameters(patient_id), timeout=timeout)
    record = read_response(patient_id, answer.response, manifest_format_codes=manifest_format_codes,
                           source_names=source_names)
    record.warnings = answer.warnings
    return record


def _check(patient_id: str) -> None:
    """Refuse a hostile id before anything is sent."""
    problems = patient_id_problems(patient_id)
    if problems:
        raise BrowseError(f"Not a patient id: {'; '.join(problems)}.")
