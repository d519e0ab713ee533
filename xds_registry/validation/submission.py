"""Metadata validation of a Register Document Set-b submission, without the database.

:func:`validate_submission` checks everything that can be decided from the message and the
affinity-domain configuration alone (ITI TF-3 4.1-4.2, ITI TF-2b 3.42.4.1.3): object kinds and
objectTypes, required and single-valued slots, classifications and external identifiers, value
formats (CX, XCN, XON, XTN, DTM, OIDs, sizes, hashes), the affinity-domain value sets, one patient
per submission, the HasMember rules and the structure of the document relationships, duplicate
uniqueIds inside the message.  Rules that need the registry's content (known patient, uniqueIds
already registered, association targets) live in :mod:`xds_registry.validation.registry_content`.

Every finding is collected (never only the first); ``location`` is the id of the object as
submitted (symbolic or urn:uuid), so the submitter can find it in its own message.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from xds_core.affinity_domain import AffinityDomain
from xds_core.errors import ErrorCode, RegistryError
from xds_core.identifiers import any_root_oid_problems, iso_oid_problems, xds_unique_id_problems
from xds_core.metadata.objects import (
    Association,
    Classification,
    DocumentEntry,
    Folder,
    RegistryObject,
    Submission,
    SubmissionSet,
)
from xds_core.metadata.values import CX, DTM, XCN, XON, XTN
from xds_core.vocabulary import (
    REFERENCE_ID_LIST_SLOT,
    RELATIONSHIP_TYPES,
    AssociationType,
    AvailabilityStatus,
    ClassificationNode,
    ClassificationScheme,
    DocumentAvailability,
    IdentificationScheme,
    ObjectType,
    SubmissionSetStatus,
)
from xds_registry.validation import values as fmt

META = ErrorCode.XDSRegistryMetadataError

#: DocumentEntry coded attributes: scheme -> (attribute name, affinity CodeType, min, max) (ITI TF-3 Table 4.2.3.2-1).
DE_CODES: dict[str, tuple[str, str, int, int | None]] = {
    ClassificationScheme.DocumentEntry_classCode: ("classCode", "classCode", 1, 1),
    ClassificationScheme.DocumentEntry_typeCode: ("typeCode", "typeCode", 1, 1),
    ClassificationScheme.DocumentEntry_formatCode: ("formatCode", "formatCode", 1, 1),
    ClassificationScheme.DocumentEntry_healthcareFacilityTypeCode:
        ("healthcareFacilityTypeCode", "healthcareFacilityTypeCode", 1, 1),
    ClassificationScheme.DocumentEntry_practiceSettingCode: ("practiceSettingCode", "practiceSettingCode", 1, 1),
    ClassificationScheme.DocumentEntry_confidentialityCode: ("confidentialityCode", "confidentialityCode", 1, None),
    ClassificationScheme.DocumentEntry_eventCodeList: ("eventCodeList", "eventCodeList", 0, None),
}
SS_CODES: dict[str, tuple[str, str, int, int | None]] = {
    ClassificationScheme.SubmissionSet_contentTypeCode: ("contentTypeCode", "contentTypeCode", 1, 1),
}
FOLDER_CODES: dict[str, tuple[str, str, int, int | None]] = {
    ClassificationScheme.Folder_codeList: ("codeList", "folderCodeList", 1, None),
}

#: Slots: name -> (required for a stable entry, single-valued) (ITI TF-3 Table 4.2.3.2-1, 4.1-5).
DE_SLOTS: dict[str, tuple[bool, bool]] = {
    "creationTime": (True, True),
    "languageCode": (True, True),
    "sourcePatientId": (True, True),
    "hash": (True, True),
    "size": (True, True),
    "repositoryUniqueId": (True, True),
    "serviceStartTime": (False, True),
    "serviceStopTime": (False, True),
    "legalAuthenticator": (False, True),
    "documentAvailability": (False, True),
    "URI": (False, False),
    "sourcePatientInfo": (False, False),
    REFERENCE_ID_LIST_SLOT: (False, False),
}
#: On-Demand entries carry no hash/size/creationTime (ITI TF-3 4.2.3.2, On-Demand Documents option).
ON_DEMAND_NOT_REQUIRED = frozenset({"hash", "size", "creationTime"})

SS_SLOTS: dict[str, tuple[bool, bool]] = {
    "submissionTime": (True, True),
    "intendedRecipient": (False, False),
}
FOLDER_SLOTS: dict[str, tuple[bool, bool]] = {
    "lastUpdateTime": (False, True),  # registry-owned; overwritten
}

AUTHOR_SLOTS = {"authorPerson", "authorInstitution", "authorRole", "authorSpecialty", "authorTelecommunication"}
LIMITED_MARKERS = {
    ClassificationNode.LIMITED_DOCUMENT_ENTRY, ClassificationNode.LIMITED_SUBMISSION_SET,
    ClassificationNode.LIMITED_FOLDER,
}
#: Associations that may carry the association-documentation classification (ITI TF-3 4.2.2.2.9).
DOCUMENTED_TYPES = frozenset({AssociationType.RPLC, AssociationType.XFRM, AssociationType.APND,
                              AssociationType.XFRM_RPLC})


@dataclass
class Findings:
    errors: list[RegistryError] = field(default_factory=list)

    def error(self, code: str, context: str, location: str = "") -> None:
        self.errors.append(RegistryError(code, context, location=location))

    def meta(self, context: str, location: str = "") -> None:
        self.error(META, context, location)


def attach_top_level_parts(submission: Submission) -> list[RegistryError]:
    """Move top-level Classifications / ExternalIdentifiers into the object they describe.

    ebRIM allows both nested and top-level forms (the SubmissionSet marker Classification is
    usually top-level); the registry stores the nested form so each stored fragment is complete.
    """
    findings = Findings()
    by_id = submission.by_id()
    for c in submission.classifications:
        target = by_id.get(c.classified_object)
        if target is None:
            findings.meta(f"Classification {c.id or c.classification_node or c.classification_scheme} "
                          f"classifies {c.classified_object!r}, which is not an object of this submission",
                          c.id or c.classified_object)
        elif c not in target.classifications:
            target.classifications.append(c)
    for e in submission.external_identifiers:
        target = by_id.get(e.registry_object)
        if target is None:
            findings.meta(f"ExternalIdentifier {e.id or e.identification_scheme} refers to {e.registry_object!r}, "
                          "which is not an object of this submission", e.id or e.registry_object)
        elif e not in target.external_identifiers:
            target.external_identifiers.append(e)
    submission.classifications = []
    submission.external_identifiers = []
    return findings.errors


def validate_submission(submission: Submission, affinity_domain: AffinityDomain | None) -> list[RegistryError]:
    """All message-level findings of an ITI-42 submission ([] = valid so far).

    Expects :func:`attach_top_level_parts` to have run.
    """
    f = Findings()
    ss = submission.submission_set
    if ss is None:
        f.meta("SubmitObjectsRequest carries no SubmissionSet (RegistryPackage classified "
               f"{ClassificationNode.SUBMISSION_SET}) (ITI TF-3 4.1.4)")
    for extra in submission.extra_submission_sets:
        f.meta("more than one SubmissionSet in one SubmitObjectsRequest (ITI TF-3 4.1.4)", extra.id)
    for package in submission.unknown_packages:
        f.meta("RegistryPackage is neither a SubmissionSet nor a Folder (no classification node "
               f"{ClassificationNode.SUBMISSION_SET} or {ClassificationNode.FOLDER})", package.id)

    _check_ids(submission, f)
    for obj in submission.all_objects():
        _check_limited_metadata(obj, f)
        _check_parts_belong(obj, f)
    if ss is not None:
        _check_submission_set(ss, affinity_domain, f)
    for de in submission.document_entries:
        _check_document_entry(de, affinity_domain, f)
    for folder in submission.folders:
        _check_folder(folder, affinity_domain, f)
    _check_same_patient(submission, f)
    _check_unique_ids_in_message(submission, f)
    _check_associations(submission, affinity_domain, f)
    return f.errors


# --- generic -------------------------------------------------------------------------------------

def _check_ids(submission: Submission, f: Findings) -> None:
    counts = Counter(o.id for o in submission.all_objects() if o.id)
    for oid, n in counts.items():
        if n > 1:
            f.meta(f"id {oid!r} is used by {n} objects of the submission", oid)
    for o in submission.all_objects():
        if not o.id and not isinstance(o, Association):
            f.meta(f"{type(o).__name__} without an id", type(o).__name__)


def _check_limited_metadata(obj: RegistryObject, f: Findings) -> None:
    # Limited Metadata is for XDR/XDM only; an XDS registry refuses it (ITI TF-3 4.1.1).
    for c in obj.classifications:
        if c.classification_node in LIMITED_MARKERS:
            f.meta(f"limited-metadata marker {c.classification_node} is not acceptable in XDS (ITI TF-3 4.1.1)",
                   obj.id)


def _check_parts_belong(obj: RegistryObject, f: Findings) -> None:
    for c in obj.classifications:
        if c.classified_object and c.classified_object != obj.id:
            f.meta(f"nested Classification {c.id} has classifiedObject {c.classified_object!r}, "
                   f"not its parent {obj.id!r}", obj.id)
    for e in obj.external_identifiers:
        if e.registry_object and e.registry_object != obj.id:
            f.meta(f"nested ExternalIdentifier {e.id} has registryObject {e.registry_object!r}, "
                   f"not its parent {obj.id!r}", obj.id)


def _check_slots(obj: RegistryObject, spec: dict[str, tuple[bool, bool]], kind: str, f: Findings,
                 not_required: frozenset[str] = frozenset()) -> None:
    for name, (required, single) in spec.items():
        # A slot name repeated (NIST 12346 sends languageCode twice) is tolerated when it does not
        # make a single-valued attribute ambiguous.
        values = [v for s in obj.slots if s.name == name for v in s.values]
        if required and name not in not_required and not any(v.strip() for v in values):
            f.meta(f"{kind} is missing required slot {name} (ITI TF-3 4.2.3)", obj.id)
        if single and len(set(values)) > 1:
            f.meta(f"{kind} slot {name} must have a single value, has {len(values)}", obj.id)


def _dtm(obj: RegistryObject, name: str, kind: str, f: Findings) -> None:
    for value in obj.slot_values(name):
        for problem in DTM.problems(value):
            f.meta(f"{kind} {name}: {problem} (ITI TF-3 Table 4.2.3.1.7-2)", obj.id)


def _check_codes(obj: RegistryObject, spec: dict[str, tuple[str, str, int, int | None]], kind: str,
                 domain: AffinityDomain | None, f: Findings) -> None:
    for scheme, (attribute, code_type, minimum, maximum) in spec.items():
        found = obj.classifications_of(scheme)
        if len(found) < minimum:
            f.meta(f"{kind} is missing {attribute} (Classification scheme {scheme}) (ITI TF-3 4.2.3)", obj.id)
        if maximum is not None and len(found) > maximum:
            f.meta(f"{kind} has {len(found)} {attribute} classifications; at most {maximum} allowed", obj.id)
        for c in found:
            _check_code(obj, c, attribute, code_type, kind, domain, f)


def _check_code(obj: RegistryObject, c: Classification, attribute: str, code_type: str, kind: str,
                domain: AffinityDomain | None, f: Findings) -> None:
    # Coded value: nodeRepresentation = code, one codingScheme slot value, a display name
    # (ITI TF-3 4.2.3.1.7 / 4.1.7 "Coded attributes").
    code = c.node_representation or ""
    schemes = c.slot_values("codingScheme")
    if not code:
        f.meta(f"{kind} {attribute}: Classification has no nodeRepresentation (the code)", obj.id)
    if len(schemes) != 1 or not schemes[0]:
        f.meta(f"{kind} {attribute} {code!r}: codingScheme slot must have exactly one value", obj.id)
    if not c.name.text:
        f.meta(f"{kind} {attribute} {code!r}: display name (rim:Name) is required", obj.id)
    if domain is not None and code and len(schemes) == 1:
        if not domain.accepts_code(code_type, code, schemes[0]):
            f.meta(f"{kind} {attribute} {code}^^{schemes[0]} is not in the affinity domain's {code_type} value set",
                   obj.id)


def _check_external_ids(obj: RegistryObject, patient_scheme: str, unique_scheme: str, kind: str, f: Findings,
                        extra: dict[str, str] | None = None) -> None:
    wanted = {patient_scheme: f"{kind}.patientId", unique_scheme: f"{kind}.uniqueId", **(extra or {})}
    counts = Counter(e.identification_scheme for e in obj.external_identifiers)
    for scheme, name in wanted.items():
        if counts[scheme] == 0:
            f.meta(f"{kind} is missing ExternalIdentifier {name} (identificationScheme {scheme})", obj.id)
        elif counts[scheme] > 1:
            f.meta(f"{kind} has {counts[scheme]} ExternalIdentifiers {name}; exactly one allowed", obj.id)
    for e in obj.external_identifiers:
        if e.identification_scheme in wanted and not e.value:
            f.meta(f"{kind} ExternalIdentifier {wanted[e.identification_scheme]} has an empty value", obj.id)
    patient_id = obj.external_id(patient_scheme)
    if patient_id:
        for problem in CX.problems(patient_id):
            f.meta(f"{kind}.patientId {patient_id!r}: {problem} (ITI TF-3 4.2.3.1.7 CX)", obj.id)


def _check_authors(obj: RegistryObject, scheme: str, kind: str, f: Findings) -> None:
    # Author: nodeRepresentation "", authorPerson 0..1, at least one of person/institution
    # (ITI TF-3 4.2.3.1.4).
    for c in obj.classifications_of(scheme):
        if c.node_representation:
            f.meta(f"{kind} author Classification must have an empty nodeRepresentation", obj.id)
        persons = c.slot_values("authorPerson")
        institutions = c.slot_values("authorInstitution")
        if len(persons) > 1:
            f.meta(f"{kind} author: authorPerson must have a single value", obj.id)
        if not persons and not institutions and not c.slot_values("authorTelecommunication"):
            f.meta(f"{kind} author needs authorPerson, authorInstitution or authorTelecommunication", obj.id)
        for p in persons:
            for problem in XCN.problems(p):
                f.meta(f"{kind} authorPerson {p!r}: {problem}", obj.id)
        for i in institutions:
            for problem in XON.problems(i):
                f.meta(f"{kind} authorInstitution {i!r}: {problem}", obj.id)
        for t in c.slot_values("authorTelecommunication"):
            for problem in XTN.problems(t):
                f.meta(f"{kind} authorTelecommunication {t!r}: {problem}", obj.id)


def _check_patient_authority(obj: RegistryObject, patient_id: str | None, kind: str,
                             domain: AffinityDomain | None, f: Findings) -> None:
    if domain is not None and patient_id and not CX.problems(patient_id) and not domain.accepts_patient_id(patient_id):
        f.error(ErrorCode.XDSUnknownPatientId,
                f"{kind}.patientId {patient_id} is not of an assigning authority of this affinity domain", obj.id)


# --- object kinds --------------------------------------------------------------------------------

def _check_document_entry(de: DocumentEntry, domain: AffinityDomain | None, f: Findings) -> None:
    kind = "DocumentEntry"
    if de.object_type not in (ObjectType.STABLE_DOCUMENT_ENTRY, ObjectType.ON_DEMAND_DOCUMENT_ENTRY):
        f.meta(f"ExtrinsicObject objectType {de.object_type!r} is not a DocumentEntry type "
               f"({ObjectType.STABLE_DOCUMENT_ENTRY} or {ObjectType.ON_DEMAND_DOCUMENT_ENTRY}) (ITI TF-3 4.2.5.2)",
               de.id)
    if not de.mime_type:
        f.meta("DocumentEntry mimeType is required (ITI TF-3 4.2.3.2.14)", de.id)
    else:
        for problem in fmt.mime_problems(de.mime_type):
            f.meta(f"DocumentEntry {problem}", de.id)
        if domain is not None and not domain.accepts_code("mimeType", de.mime_type):
            f.meta(f"DocumentEntry mimeType {de.mime_type} is not in the affinity domain's mimeType value set", de.id)
    _check_external_ids(de, IdentificationScheme.DocumentEntry_patientId, IdentificationScheme.DocumentEntry_uniqueId,
                        kind, f)
    if de.unique_id:
        for problem in xds_unique_id_problems(de.unique_id, allow_extension=True):
            f.meta(f"DocumentEntry {problem} (ITI TF-3 4.2.3.2.26)", de.id)
    _check_patient_authority(de, de.patient_id, kind, domain, f)
    _check_slots(de, DE_SLOTS, kind, f, ON_DEMAND_NOT_REQUIRED if de.is_on_demand else frozenset())
    for name in ("creationTime", "serviceStartTime", "serviceStopTime"):
        _dtm(de, name, kind, f)
    start, stop = de.service_start_time, de.service_stop_time
    if start and stop and not DTM.problems(start) and not DTM.problems(stop) \
            and DTM.lower_bound(stop) < DTM.lower_bound(start):
        f.meta(f"DocumentEntry serviceStopTime {stop} is before serviceStartTime {start}", de.id)
    if de.hash:
        for problem in fmt.hash_problems(de.hash):
            f.meta(f"DocumentEntry {problem} (ITI TF-3 4.2.3.2.9)", de.id)
    if de.size:
        for problem in fmt.size_problems(de.size):
            f.meta(f"DocumentEntry {problem} (ITI TF-3 4.2.3.2.21)", de.id)
    if de.repository_unique_id:
        for problem in iso_oid_problems(de.repository_unique_id, "repositoryUniqueId"):
            f.meta(f"DocumentEntry {problem}", de.id)
    if de.language_code:
        for problem in fmt.language_problems(de.language_code):
            f.meta(f"DocumentEntry {problem}", de.id)
    if de.source_patient_id:
        # The source's local id: CX.1 and an assigning authority (CX.4), which need not be an ISO OID
        # (ITI TF-3 4.2.3.2.23).
        parts = de.source_patient_id.split("^")
        if not parts[0] or len(parts) < 4 or not parts[3]:
            f.meta(f"DocumentEntry sourcePatientId {de.source_patient_id!r}: CX.1 (id) and CX.4 (assigning "
                   "authority) are required (ITI TF-3 4.2.3.2.23)", de.id)
    for value in de.source_patient_info:
        for problem in fmt.source_patient_info_problems(value):
            f.meta(f"DocumentEntry {problem}", de.id)
    if de.legal_authenticator:
        for problem in XCN.problems(de.legal_authenticator):
            f.meta(f"DocumentEntry legalAuthenticator {de.legal_authenticator!r}: {problem}", de.id)
    for value in de.reference_id_list:
        for problem in fmt.cxi_problems(value):
            f.meta(f"DocumentEntry {problem}", de.id)
    availability = de.document_availability
    if availability and availability not in set(DocumentAvailability):
        f.meta(f"DocumentEntry documentAvailability {availability!r} is not "
               f"{DocumentAvailability.ONLINE} or {DocumentAvailability.OFFLINE}", de.id)
    if de.status and de.status != AvailabilityStatus.APPROVED:
        # ITI-42 submits new objects; the registry owns availabilityStatus (it stores Approved).
        f.meta(f"DocumentEntry status {de.status!r}: a submitted entry cannot carry another status than Approved",
               de.id)
    _check_codes(de, DE_CODES, kind, domain, f)
    _check_authors(de, ClassificationScheme.DocumentEntry_author, kind, f)


def _check_submission_set(ss: SubmissionSet, domain: AffinityDomain | None, f: Findings) -> None:
    kind = "SubmissionSet"
    _check_external_ids(ss, IdentificationScheme.SubmissionSet_patientId, IdentificationScheme.SubmissionSet_uniqueId,
                        kind, f, {IdentificationScheme.SubmissionSet_sourceId: "SubmissionSet.sourceId"})
    if ss.unique_id:
        for problem in iso_oid_problems(ss.unique_id, "uniqueId"):
            f.meta(f"SubmissionSet {problem} (ITI TF-3 4.2.3.3.12)", ss.id)
    if ss.source_id:
        # Any root arc: the NIST testkit submits sourceId 129.6.58.92.1.1 (see is_any_root_oid).
        for problem in any_root_oid_problems(ss.source_id, "sourceId"):
            f.meta(f"SubmissionSet {problem} (ITI TF-3 4.2.3.3.9)", ss.id)
    _check_patient_authority(ss, ss.patient_id, kind, domain, f)
    _check_slots(ss, SS_SLOTS, kind, f)
    _dtm(ss, "submissionTime", kind, f)
    _check_codes(ss, SS_CODES, kind, domain, f)
    _check_authors(ss, ClassificationScheme.SubmissionSet_author, kind, f)


def _check_folder(folder: Folder, domain: AffinityDomain | None, f: Findings) -> None:
    kind = "Folder"
    _check_external_ids(folder, IdentificationScheme.Folder_patientId, IdentificationScheme.Folder_uniqueId, kind, f)
    if folder.unique_id:
        for problem in iso_oid_problems(folder.unique_id, "uniqueId"):
            f.meta(f"Folder {problem} (ITI TF-3 4.2.3.4.7)", folder.id)
    _check_patient_authority(folder, folder.patient_id, kind, domain, f)
    _check_slots(folder, FOLDER_SLOTS, kind, f)
    _check_codes(folder, FOLDER_CODES, kind, domain, f)


# --- cross-object rules --------------------------------------------------------------------------

def _check_same_patient(submission: Submission, f: Findings) -> None:
    # One patient per submission (ITI TF-3 4.1.4.1): every DocumentEntry and Folder carries the
    # SubmissionSet's patientId.
    ss = submission.submission_set
    if ss is None or not ss.patient_id:
        return
    for obj in [*submission.document_entries, *submission.folders]:
        pid = obj.patient_id  # type: ignore[attr-defined]
        if pid and pid != ss.patient_id:
            f.error(ErrorCode.XDSPatientIdDoesNotMatch,
                    f"{type(obj).__name__} patientId {pid} does not match SubmissionSet patientId {ss.patient_id}",
                    obj.id)


def _check_unique_ids_in_message(submission: Submission, f: Findings) -> None:
    # ITI TF-3 4.2.3.2.26 / Table 4.2.4.1-2 XDSRegistryDuplicateUniqueIdInMessage.
    seen: dict[str, str] = {}
    objects: list[RegistryObject] = [*submission.document_entries, *submission.folders]
    if submission.submission_set:
        objects.append(submission.submission_set)
    for obj in objects:
        uid = obj.unique_id  # type: ignore[attr-defined]
        if not uid:
            continue
        if uid in seen:
            f.error(ErrorCode.XDSRegistryDuplicateUniqueIdInMessage,
                    f"uniqueId {uid} is used by both {seen[uid]} and {obj.id}", obj.id)
        else:
            seen[uid] = obj.id


def _check_associations(submission: Submission, domain: AffinityDomain | None, f: Findings) -> None:
    ss = submission.submission_set
    des = {d.id: d for d in submission.document_entries}
    folders = {x.id: x for x in submission.folders}
    assocs = {a.id: a for a in submission.associations if a.id}
    members_of_ss: set[str] = set()
    documented_folder_assocs: set[str] = set()
    replaced: Counter[str] = Counter()

    for a in submission.associations:
        loc = a.id or f"{a.source_object}->{a.target_object}"
        atype = a.type
        if atype is None:
            f.meta(f"Association associationType {a.association_type!r} is not an XDS association type "
                   "(ITI TF-3 4.2.2)", loc)
            continue
        if atype in (AssociationType.UpdateAvailabilityStatus, AssociationType.SubmitAssociation):
            f.meta(f"Association type {atype.value} belongs to Metadata Update (ITI-57), not ITI-42", loc)
            continue
        if not a.source_object or not a.target_object:
            f.meta("Association needs sourceObject and targetObject", loc)
            continue
        for end in (a.source_object, a.target_object):
            if end not in des and end not in folders and end not in assocs and (ss is None or end != ss.id) \
                    and not end.startswith("urn:uuid:"):
                f.meta(f"Association end {end!r} is a symbolic id that names no object of this submission "
                       "(an object already in the registry is referenced by its urn:uuid entryUUID)", loc)
        for c in a.classifications:
            # The documentation code itself is not checked against the affinity domain: the issue's
            # value sets do not include it and the NIST samples use another codingScheme than codes.xml.
            if c.classification_scheme == ClassificationScheme.Association_documentation \
                    and atype not in DOCUMENTED_TYPES:
                f.meta("association-documentation Classification is allowed only on RPLC, XFRM, APND and "
                       f"XFRM_RPLC associations, not on {atype.name} (ITI TF-3 4.2.2.2.9)", loc)

        if atype == AssociationType.HasMember:
            _check_has_member(a, loc, ss, des, folders, assocs, members_of_ss, documented_folder_assocs, f)
        elif atype in RELATIONSHIP_TYPES:
            # Document relationships: source = new DE of this submission, target = existing object
            # (ITI TF-3 4.2.2.2).
            if a.source_object not in des:
                f.meta(f"{atype.name} association: sourceObject {a.source_object} must be a DocumentEntry of "
                       "this submission (ITI TF-3 4.2.2.2)", loc)
            if a.target_object in des or a.target_object in folders or a.target_object in assocs:
                f.meta(f"{atype.name} association: targetObject {a.target_object} must be an object already in "
                       "the registry, not one of this submission (ITI TF-3 4.2.2.2)", loc)
            if ss is not None and a.target_object == ss.id and atype != AssociationType.signs:
                f.meta(f"{atype.name} association cannot target the SubmissionSet", loc)
            if atype in (AssociationType.RPLC, AssociationType.XFRM_RPLC):
                replaced[a.target_object] += 1
            if atype == AssociationType.IsSnapshotOf and a.source_object in des \
                    and des[a.source_object].is_on_demand:
                f.meta("IsSnapshotOf: the source must be a stable DocumentEntry (ITI TF-3 4.2.2.2.6)", loc)

    for target, n in replaced.items():
        if n > 1:
            f.meta(f"DocumentEntry {target} is replaced {n} times in one submission", target)
    # Every DocumentEntry and Folder of the submission is a member of its SubmissionSet
    # (ITI TF-3 4.1.4, 4.2.2.1.1).
    if ss is not None:
        for oid in [*des, *folders]:
            if oid not in members_of_ss:
                f.meta(f"{oid} is not linked to the SubmissionSet by a HasMember association (ITI TF-3 4.2.2.1)",
                       oid)
        # Folder->DocumentEntry HasMember submitted in this submission must itself be a member of the
        # SubmissionSet (ITI TF-3 4.2.2.1.3).
        for a in submission.associations:
            if a.type == AssociationType.HasMember and a.source_object != ss.id \
                    and (a.source_object in folders or a.source_object.startswith("urn:uuid:")) \
                    and a.id not in documented_folder_assocs:
                f.meta(f"Folder membership association {a.id or a.source_object + '->' + a.target_object} is not "
                       "linked to the SubmissionSet by a HasMember association (ITI TF-3 4.2.2.1.3)",
                       a.id or a.source_object)


def _check_has_member(a: Association, loc: str, ss: SubmissionSet | None, des: dict[str, DocumentEntry],
                      folders: dict[str, Folder], assocs: dict[str, Association], members_of_ss: set[str],
                      documented_folder_assocs: set[str], f: Findings) -> None:
    source, target = a.source_object, a.target_object
    status = a.submission_set_status
    if ss is not None and source == ss.id:
        if target in des or (target not in folders and target not in assocs and status):
            # SS -> DocumentEntry: SubmissionSetStatus is required (ITI TF-3 4.2.2.1.2).
            if status not in (SubmissionSetStatus.ORIGINAL, SubmissionSetStatus.REFERENCE):
                f.meta("SubmissionSet-DocumentEntry HasMember needs slot SubmissionSetStatus = Original or Reference "
                       "(ITI TF-3 4.2.2.1.2)", loc)
            elif status == SubmissionSetStatus.ORIGINAL and target not in des:
                f.meta(f"HasMember SubmissionSetStatus=Original but {target} is not a DocumentEntry of this "
                       "submission", loc)
            elif status == SubmissionSetStatus.REFERENCE and target in des:
                f.meta(f"HasMember SubmissionSetStatus=Reference but {target} is submitted in this submission "
                       "(use Original)", loc)
            members_of_ss.add(target)
        elif target in folders:
            members_of_ss.add(target)
        elif target in assocs:
            inner = assocs[target]
            if inner.type != AssociationType.HasMember or inner.source_object == ss.id:
                f.meta(f"SubmissionSet HasMember targets association {target}, which is not a Folder-DocumentEntry "
                       "HasMember (ITI TF-3 4.2.2.1.3)", loc)
            documented_folder_assocs.add(target)
        # else: an existing object (urn:uuid) -- DocumentEntry (needs SubmissionSetStatus=Reference) or
        # Folder, resolved against the registry at registration.
        return
    if source in folders or source.startswith("urn:uuid:"):
        # Folder -> DocumentEntry (ITI TF-3 4.2.2.1.3); an existing source must be a Folder (checked
        # at registration).
        if target in folders or target in assocs or (ss is not None and target == ss.id):
            f.meta(f"Folder HasMember target {target} must be a DocumentEntry (ITI TF-3 4.2.2.1.3)", loc)
        return
    if source in des:
        f.meta(f"HasMember source {source} is a DocumentEntry; only a SubmissionSet or Folder has members", loc)
