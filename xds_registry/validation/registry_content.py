"""Register Document Set-b rules that need the registry's content (ITI TF-2b 3.42.4.1.3, ITI TF-3 4.2.2).

:mod:`xds_registry.validation.submission` decides what the message alone can decide; these rules
judge a submission against the registry state :mod:`xds_registry.rows` looked up (inside the
registration transaction, under the locks) and return every finding with its IHE error code
(ITI TF-3 Table 4.2.4.1-2):

* the SubmissionSet patient is known and not merged away -- XDSUnknownPatientId (ITI TF-2a 3.8.4.1.3);
* client-assigned entryUUIDs are new -- XDSRegistryMetadataError;
* a DocumentEntry uniqueId is registered again only with the same hash and size -- XDSNonIdenticalHash,
  XDSNonIdenticalSize; SubmissionSet/Folder uniqueIds never -- XDSDuplicateUniqueIdInRegistry;
* association ends outside the submission exist and have the right kind and status: HasMember
  (ITI TF-3 4.2.2.1), the document relationships RPLC/APND/XFRM/XFRM_RPLC/signs on an Approved
  DocumentEntry of the same patient -- XDSRegistryDeprecatedDocumentError, XDSPatientIdDoesNotMatch
  (ITI TF-3 4.2.2.2), IsSnapshotOf on an Approved On-Demand entry (ITI TF-3 4.2.2.2.6).

:func:`integrity_findings` reports a unique-constraint race the locks do not cover the same way.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError

from xds_core.errors import ErrorCode, RegistryError
from xds_core.metadata.objects import Association, Submission
from xds_core.vocabulary import (
    RELATIONSHIP_TYPES,
    AssociationType,
    AvailabilityStatus,
    ObjectType,
    SubmissionSetStatus,
)
from xds_registry.rows import ExistingRows

META = ErrorCode.XDSRegistryMetadataError
APPROVED = AvailabilityStatus.APPROVED.value
DEPRECATED = AvailabilityStatus.DEPRECATED.value


def _err(code: str, context: str, location: str = "") -> RegistryError:
    return RegistryError(code, context, location=location)


def check_registry_rules(sub: Submission, id_map: dict[str, str], client_uuids: set[str], found: dict[str, Any],
                         existing: ExistingRows) -> list[RegistryError]:
    """The registry-level rules of one submission, against the looked-up registry state.

    ``id_map`` maps the ids as submitted to the assigned entryUUIDs (error locations name what the
    submitter wrote), ``client_uuids`` are the entryUUIDs the submitter assigned itself, ``found``
    and ``existing`` what :func:`~xds_registry.rows.lookup` and :func:`~xds_registry.rows.load_existing`
    returned.
    """
    ss = sub.submission_set
    assert ss is not None
    original_id = {v: k for k, v in id_map.items()}  # for error locations: what the submitter wrote
    loc = lambda uuid_: original_id.get(uuid_, uuid_)  # noqa: E731
    errors: list[RegistryError] = []

    # Rule: the SubmissionSet patient is known and not merged away (ITI TF-2b 3.42.4.1.3, TF-2a 3.8.4.1.3).
    patient = found["P"].get(ss.patient_id)
    if not patient:
        errors.append(_err(ErrorCode.XDSUnknownPatientId,
                           f"patient id {ss.patient_id} is not known to the registry "
                           "(not received by the Patient Identity Feed)", loc(ss.id)))
    elif patient[0][1] is not None:
        errors.append(_err(ErrorCode.XDSUnknownPatientId,
                           f"patient id {ss.patient_id} was merged into another id "
                           "and is no longer in use (ITI TF-2a 3.8.4.1.3)", loc(ss.id)))

    # Client-assigned entryUUIDs must be new (ebRIM: ids are unique in the registry).
    for client_uuid in sorted(client_uuids):
        for taken, kind, _ in found["U"].get(client_uuid, []):
            errors.append(_err(META, f"entryUUID {taken} is already used by a registry object ({kind})",
                               loc(taken)))

    # uniqueIds (ITI TF-2b 3.42.4.1.3.x, ITI TF-3 Table 4.2.4.1-2): a DocumentEntry uniqueId may be
    # registered again only for identical content; SubmissionSet/Folder uniqueIds never.
    new_des = {d.unique_id: d for d in sub.document_entries}
    for uid, de in new_des.items():
        for _, hash_, size in dict.fromkeys(found["D"].get(uid, [])):
            if (de.hash or "").lower() != (hash_ or ""):
                errors.append(_err(ErrorCode.XDSNonIdenticalHash,
                                   f"DocumentEntry uniqueId {uid} is already registered with hash {hash_}; "
                                   f"this submission has {de.hash}", loc(de.id)))
            if _size(size) != _size(de.size):
                errors.append(_err(ErrorCode.XDSNonIdenticalSize,
                                   f"DocumentEntry uniqueId {uid} is already registered with size {size}; "
                                   f"this submission has {de.size}", loc(de.id)))
    packages = {"S": {ss.unique_id: ss}, "F": {f.unique_id: f for f in sub.folders}}
    for key in ("S", "F"):
        for uid, obj in packages[key].items():
            if uid in found[key]:
                errors.append(_err(ErrorCode.XDSDuplicateUniqueIdInRegistry,
                                   f"{type(obj).__name__} uniqueId {uid} already exists in the registry",
                                   loc(obj.id)))

    # Association ends outside the submission.
    errors += _check_association_ends(sub, existing, loc)
    return errors


def _size(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def _check_association_ends(sub: Submission, existing: ExistingRows, loc) -> list[RegistryError]:  # noqa: C901
    ss = sub.submission_set
    assert ss is not None
    des = {d.id: d for d in sub.document_entries}
    folders = {f.id: f for f in sub.folders}
    errors: list[RegistryError] = []

    def patient_of(uuid_: str) -> str | None:
        obj = des.get(uuid_) or folders.get(uuid_)
        if obj is not None:
            return obj.patient_id
        row = existing.documents.get(uuid_) or existing.folders.get(uuid_) or existing.submission_sets.get(uuid_)
        return row.patient_id if row is not None else None

    def missing(a: Association, end: str, what: str) -> None:
        errors.append(_err(META, f"{a.type.name if a.type else 'Association'} {what} {end} is neither in "
                                          "the submission nor in the registry", loc(a.id)))

    for a in sub.associations:
        atype = a.type
        src, tgt = a.source_object, a.target_object
        if atype == AssociationType.HasMember:
            if src == ss.id:
                if tgt in existing.documents:
                    row = existing.documents[tgt]
                    if a.submission_set_status != SubmissionSetStatus.REFERENCE:
                        errors.append(_err(
                            META, f"HasMember to existing DocumentEntry {tgt} needs SubmissionSetStatus=Reference "
                                  "(ITI TF-3 4.2.2.1.2)", loc(a.id)))
                    if row.status == DEPRECATED:
                        errors.append(_err(ErrorCode.XDSRegistryDeprecatedDocumentError,
                                                    f"HasMember references deprecated DocumentEntry {tgt}", loc(a.id)))
                elif tgt in existing.folders:
                    pass
                elif tgt not in des and tgt not in folders and not any(x.id == tgt for x in sub.associations):
                    if tgt in existing.submission_sets or tgt in existing.associations:
                        errors.append(_err(META, f"SubmissionSet HasMember cannot target {tgt}", loc(a.id)))
                    else:
                        missing(a, tgt, "targetObject")
                continue
            # Folder -> DocumentEntry (ITI TF-3 4.2.2.1.3).
            if src not in folders:
                if src in existing.folders:
                    if existing.folders[src].status != APPROVED:
                        errors.append(_err(META, f"Folder {src} is not Approved", loc(a.id)))
                elif src in existing.documents or src in existing.submission_sets or src in existing.associations:
                    errors.append(_err(META, f"HasMember source {src} is not a Folder or the SubmissionSet",
                                                loc(a.id)))
                    continue
                else:
                    missing(a, src, "sourceObject (Folder)")
                    continue
            if tgt not in des:
                if tgt in existing.documents:
                    if existing.documents[tgt].status == DEPRECATED:
                        errors.append(_err(ErrorCode.XDSRegistryDeprecatedDocumentError,
                                                    f"Folder HasMember targets deprecated DocumentEntry {tgt}",
                                                    loc(a.id)))
                elif tgt in existing.folders or tgt in existing.submission_sets or tgt in existing.associations:
                    errors.append(_err(META, f"Folder HasMember target {tgt} is not a DocumentEntry",
                                                loc(a.id)))
                    continue
                else:
                    missing(a, tgt, "targetObject (DocumentEntry)")
                    continue
            ps, pt = patient_of(src), patient_of(tgt)
            if ps and pt and ps != pt:
                errors.append(_err(ErrorCode.XDSPatientIdDoesNotMatch,
                                            f"Folder {src} (patient {ps}) and DocumentEntry {tgt} (patient {pt}) "
                                            "belong to different patients (ITI TF-3 4.2.2.1.3)", loc(a.id)))
        elif atype in RELATIONSHIP_TYPES:
            if tgt in des or tgt in folders:
                continue  # reported by message validation
            row = existing.documents.get(tgt)
            if row is None:
                if atype == AssociationType.signs and (tgt in existing.submission_sets or tgt == ss.id):
                    continue
                if tgt in existing.folders or tgt in existing.submission_sets or tgt in existing.associations:
                    errors.append(_err(META, f"{atype.name} target {tgt} is not a DocumentEntry", loc(a.id)))
                else:
                    missing(a, tgt, "targetObject")
                continue
            if atype == AssociationType.IsSnapshotOf:
                # ITI TF-3 4.2.2.2.6: the target is an Approved On-Demand entry.
                if row.object_type != ObjectType.ON_DEMAND_DOCUMENT_ENTRY or row.status != APPROVED:
                    errors.append(_err(META, f"IsSnapshotOf target {tgt} must be an Approved On-Demand "
                                                      "DocumentEntry (ITI TF-3 4.2.2.2.6)", loc(a.id)))
            elif row.status != APPROVED:
                errors.append(_err(ErrorCode.XDSRegistryDeprecatedDocumentError,
                                            f"{atype.name} target DocumentEntry {tgt} is deprecated "
                                            "(ITI TF-3 4.2.2.2)", loc(a.id)))
            src_patient = patient_of(src)
            if src_patient and row.patient_id != src_patient:
                errors.append(_err(ErrorCode.XDSPatientIdDoesNotMatch,
                                            f"{atype.name}: new DocumentEntry patient {src_patient} differs from the "
                                            f"target's patient {row.patient_id} (ITI TF-3 4.2.2.2)", loc(a.id)))
    return errors


def integrity_findings(sub: Submission, exc: IntegrityError) -> list[RegistryError]:
    """The findings for a unique constraint that decided a race the advisory locks do not cover
    (a concurrent submission with the same client-assigned entryUUID or SubmissionSet/Folder uniqueId)."""
    text = str(exc).lower()
    ss = sub.submission_set
    if "unique_id" in text and ss is not None:
        return [_err(ErrorCode.XDSDuplicateUniqueIdInRegistry,
                              "a SubmissionSet or Folder uniqueId of this submission was registered concurrently "
                              f"({ss.unique_id}{''.join(', ' + f.unique_id for f in sub.folders)})", ss.id)]
    return [_err(META, f"an entryUUID of this submission is already used in the registry ({exc})",
                          ss.id if ss else "")]
