"""ITI-42 Register Document Set-b: validate a submission and register it wholly or not at all.

Flow (DEVELOPERS.md rule 2): the endpoint parses the SubmitObjectsRequest into a
:class:`~xds_core.metadata.objects.Submission`; :func:`register_document_set` then

1. attaches top-level Classifications/ExternalIdentifiers to their objects and runs the
   message-level validation (:mod:`xds_registry.validation.submission`) -- all findings;
2. replaces symbolic ids by registry-assigned ``urn:uuid`` entryUUIDs and rewrites every
   reference (ITI TF-3 4.2.3.1.5), sets the registry-owned values (status Approved, lid = id,
   version 1, Folder lastUpdateTime -- ITI TF-3 4.2.3.4.4);
3. in ONE ``transaction.atomic()``: serialises concurrent submissions touching the same uniqueIds
   (PostgreSQL transaction-level advisory locks keyed on each uniqueId; SQLite transactions are
   ``BEGIN IMMEDIATE`` so writers are serialised anyway), locks the existing DocumentEntries the
   submission points at (``SELECT ... FOR UPDATE``), checks the registry-level rules (patient known,
   uniqueIds, entryUUIDs, association ends, deprecated targets, cross-object patient ids), then
   deprecates replaced entries and their APND/XFRM descendants, propagates folder membership to
   replacements, updates folder lastUpdateTime and inserts the new rows with bulk statements.

Any Error finding raises :class:`~xds_core.errors.XdsError` before anything is written, or
rolls the whole transaction back.  Configuration (affinity domain) is an argument: this module
never reads settings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any
from xml.sax.saxutils import escape

from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import F, Value
from django.db.models.functions import Replace
from django.utils import timezone

from xds_core.affinity_domain import AffinityDomain
from xds_core.ebxml.serialize import registry_object_xml
from xds_core.errors import ErrorCode, RegistryError, XdsError
from xds_core.metadata.objects import (
    Association,
    DocumentEntry,
    RegistryObject,
    Submission,
    new_id,
)
from xds_core.metadata.values import DTM
from xds_core.vocabulary import (
    REFERENCE_ID_LIST_SLOT,
    RELATIONSHIP_TYPES,
    REPLACING_TYPES,
    AssociationType,
    AvailabilityStatus,
    ClassificationScheme,
    DocumentAvailability,
    ObjectType,
    SubmissionSetStatus,
)
from xds_registry import models as m
from xds_registry.validation.submission import attach_top_level_parts, validate_submission

META = ErrorCode.XDSRegistryMetadataError
APPROVED = AvailabilityStatus.APPROVED.value
DEPRECATED = AvailabilityStatus.DEPRECATED.value
UUID_PREFIX = "urn:uuid:"
_UUID_RE = re.compile(r"^urn:uuid:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass
class RegistrationResult:
    """What a successful registration did (for logging and callers such as the bulk loader)."""

    submission_set_uuid: str
    #: submitted id (symbolic or urn:uuid) -> stored entryUUID, for every top-level object.
    entry_uuids: dict[str, str] = field(default_factory=dict)
    document_count: int = 0
    deprecated: list[str] = field(default_factory=list)
    warnings: list[RegistryError] = field(default_factory=list)


def register_document_set(submission: Submission, *, affinity_domain: AffinityDomain | None = None,
                          now: datetime | None = None) -> RegistrationResult:
    """Register ``submission`` (ITI-42) or raise :class:`XdsError` carrying every finding."""
    return register_document_sets([submission], affinity_domain=affinity_domain, now=now)[0]


def register_document_sets(submissions: list[Submission], *, affinity_domain: AffinityDomain | None = None,
                           now: datetime | None = None) -> list[RegistrationResult]:
    """Register several submissions in ONE transaction: all of them, or none (bulk loading).

    Every submission goes through exactly the ITI-42 path of :func:`register_document_set`
    (message validation, id assignment, registry-level rules, lifecycle, persistence); only the
    round trips are shared: one advisory-lock statement, one lookup statement and one insert per
    table for a whole group of independent submissions.  Submissions that share a uniqueId or an
    entryUUID with, or reference an object of, an earlier submission of the batch start a new group,
    so they see that submission's rows exactly as if it had been registered before them.  Any
    finding raises :class:`XdsError` with the findings of every submission and writes nothing.
    """
    timestamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    errors: list[RegistryError] = []
    prepared: list[_Prepared] = []
    for submission in submissions:
        found = attach_top_level_parts(submission)
        found += validate_submission(submission, affinity_domain)
        errors += found
        if any(e.is_error for e in found):
            continue
        assert submission.submission_set is not None  # validated
        client_uuids = {o.id for o in submission.all_objects() if o.id.startswith(UUID_PREFIX)}
        id_map = _assign_ids(submission)
        _set_registry_values(submission, timestamp)
        prepared.append(_Prepared(submission, id_map, client_uuids, [e for e in found if not e.is_error]))
    if any(e.is_error for e in errors):
        raise XdsError(errors)
    if len(prepared) > 1:
        locks = sum(len(_unique_ids(p.submission)) for p in prepared)
        if locks > MAX_BATCH_UNIQUE_IDS:
            raise ValueError(f"a batch of {locks} uniqueIds is too large: each holds a PostgreSQL advisory lock until "
                             f"commit (shared lock table: max_locks_per_transaction x max_connections); register "
                             f"at most {MAX_BATCH_UNIQUE_IDS} per call")
    try:
        with transaction.atomic():
            # All of the batch's locks in ONE statement, in one global order: taking them group by
            # group could deadlock against a concurrent submission locking the same ids.
            _lock_unique_ids([u for p in prepared for u in _unique_ids(p.submission)])
            results: list[RegistrationResult] = []
            for group in _independent_groups(prepared):
                results += _register(group, timestamp)
    except IntegrityError as exc:
        # Lost a race the locks do not cover (two submissions with the same client-assigned
        # entryUUID or SubmissionSet/Folder uniqueId committing at once): the unique constraint
        # decided; report it like the pre-check would have.
        raise XdsError([f for p in prepared for f in _integrity_findings(p.submission, exc)]) from exc
    for p, result in zip(prepared, results, strict=True):
        result.warnings = p.warnings
    return results


@dataclass
class _Prepared:
    """A validated submission with registry-assigned ids, ready for the transaction."""

    submission: Submission
    id_map: dict[str, str]
    client_uuids: set[str]
    warnings: list[RegistryError]

    def keys(self) -> set[str]:
        """uniqueIds and entryUUIDs this submission creates."""
        sub = self.submission
        assert sub.submission_set is not None
        out = {sub.submission_set.unique_id, *(d.unique_id for d in sub.document_entries),
               *(f.unique_id for f in sub.folders)}
        out.update(o.id for o in sub.all_objects())
        return out

    def references(self) -> set[str]:
        """Association ends outside the submission (objects already in the registry)."""
        sub = self.submission
        local = {o.id for o in sub.all_objects()}
        return {end for a in sub.associations for end in (a.source_object, a.target_object) if end not in local}


#: Most uniqueIds one call of :func:`register_document_sets` with several submissions may lock.  The
#: advisory locks of a transaction live in PostgreSQL's shared lock table (64 x 100 slots by
#: default, shared by all sessions); 2000 leaves room for three parallel loaders and the web workers.
MAX_BATCH_UNIQUE_IDS = 2000

#: Most uniqueIds + entryUUIDs one group of :func:`register_document_sets` looks up at once.
MAX_GROUP_KEYS = 20_000


def _independent_groups(prepared: list[_Prepared]) -> Iterable[list[_Prepared]]:
    """Split a batch into runs whose submissions neither share keys nor reference each other."""
    group: list[_Prepared] = []
    seen: set[str] = set()
    for p in prepared:
        keys = p.keys()
        # The size cap keeps the lookup statement under SQLite's bind-parameter limit (32766).
        if group and (keys & seen or p.references() & seen or len(seen) + len(keys) > MAX_GROUP_KEYS):
            yield group
            group, seen = [], set()
        group.append(p)
        seen |= keys
    if group:
        yield group


# --- step 2: ids and registry-owned values ----------------------------------------------------------

def _err(code: str, context: str, location: str = "") -> RegistryError:
    return RegistryError(code, context, location=location)


def _assign_ids(submission: Submission) -> dict[str, str]:
    """Replace symbolic ids by urn:uuid entryUUIDs and rewrite all references (ITI TF-3 4.2.3.1.5)."""
    id_map: dict[str, str] = {}
    for obj in submission.all_objects():
        if obj.id.startswith(UUID_PREFIX) and _UUID_RE.match(obj.id):
            id_map[obj.id] = obj.id
        else:
            new = new_id()
            if obj.id:
                id_map[obj.id] = new
            obj.id = new
    for obj in submission.all_objects():
        for c in obj.classifications:
            if not _UUID_RE.match(c.id or ""):
                c.id = new_id()
            c.classified_object = obj.id
        for e in obj.external_identifiers:
            if not _UUID_RE.match(e.id or ""):
                e.id = new_id()
            e.registry_object = obj.id
        if isinstance(obj, Association):
            obj.source_object = id_map.get(obj.source_object, obj.source_object)
            obj.target_object = id_map.get(obj.target_object, obj.target_object)
    return id_map


def _set_registry_values(submission: Submission, timestamp: str) -> None:
    # ITI TF-3 4.1.x: the registry owns availabilityStatus, lid/version (version 1 on ITI-42) and
    # Folder lastUpdateTime (set on creation, 4.2.3.4.4).
    for obj in submission.all_objects():
        obj.status = APPROVED
        obj.lid = obj.id
        obj.version_name = "1"
    for folder in submission.folders:
        folder.last_update_time = timestamp


# --- step 3: the transaction ------------------------------------------------------------------------

@dataclass
class _Existing:
    """Rows already in the registry that the submission references, by entryUUID."""

    documents: dict[str, m.DocumentEntry] = field(default_factory=dict)
    folders: dict[str, m.Folder] = field(default_factory=dict)
    submission_sets: dict[str, m.SubmissionSet] = field(default_factory=dict)
    associations: dict[str, m.Association] = field(default_factory=dict)

    def kind(self, uuid_: str) -> str:
        if uuid_ in self.documents:
            return m.ObjectKind.DOCUMENT_ENTRY
        if uuid_ in self.folders:
            return m.ObjectKind.FOLDER
        if uuid_ in self.submission_sets:
            return m.ObjectKind.SUBMISSION_SET
        if uuid_ in self.associations:
            return m.ObjectKind.ASSOCIATION
        return ""


def _register(group: list[_Prepared], timestamp: str) -> list[RegistrationResult]:
    """Check and write a group of independent submissions (inside the caller's transaction, which
    already holds the advisory locks of their uniqueIds)."""
    subs = [p.submission for p in group]

    # One round trip for the registry state the rules need (patients, uniqueIds, client entryUUIDs)
    # and, on PostgreSQL, the primary keys of the new rows.
    found = _lookup(
        sorted({sub.submission_set.patient_id for sub in subs if sub.submission_set}),
        [d.unique_id for sub in subs for d in sub.document_entries],
        [sub.submission_set.unique_id for sub in subs if sub.submission_set],
        [f.unique_id for sub in subs for f in sub.folders],
        sorted({u for p in group for u in p.client_uuids}),
        {m.ObjectKind.SUBMISSION_SET: len(subs),
         m.ObjectKind.DOCUMENT_ENTRY: sum(len(s.document_entries) for s in subs),
         m.ObjectKind.FOLDER: sum(len(s.folders) for s in subs)})

    references = set().union(*(p.references() for p in group))
    existing = _load_existing(references)
    errors: list[RegistryError] = []
    for p in group:
        errors += _check_registry_rules(p, found, existing)
    if errors:
        raise XdsError(errors)

    results: list[RegistrationResult] = []
    propagated_all: list[list[Association]] = []
    for p in group:
        sub = p.submission
        ss = sub.submission_set
        assert ss is not None
        # Lifecycle: deprecations and folder propagation (ITI TF-3 4.2.2.2.3, 4.2.2.2.5).
        replaced = {a.target_object: a.source_object for a in sub.associations if a.type in REPLACING_TYPES}
        deprecated = _deprecate(set(replaced))
        propagated = _propagate_folders(replaced, ss.patient_id)
        touched_folders = {a.source_object for a in sub.associations
                           if a.type == AssociationType.HasMember and a.source_object in existing.folders}
        touched_folders |= {a.source_object for a in propagated}
        _touch_folders(touched_folders, timestamp)
        propagated_all.append(propagated)
        results.append(RegistrationResult(submission_set_uuid=ss.id, entry_uuids=dict(p.id_map),
                                          document_count=len(sub.document_entries), deprecated=sorted(deprecated)))
    _insert(subs, existing, propagated_all, found.get("I", {}))
    return results


def _unique_ids(sub: Submission) -> list[str]:
    assert sub.submission_set is not None
    return [sub.submission_set.unique_id, *(d.unique_id for d in sub.document_entries),
            *(f.unique_id for f in sub.folders)]


def _check_registry_rules(p: _Prepared, found: dict, existing: _Existing) -> list[RegistryError]:
    """The registry-level rules of one submission, against the looked-up registry state."""
    sub = p.submission
    ss = sub.submission_set
    assert ss is not None
    original_id = {v: k for k, v in p.id_map.items()}  # for error locations: what the submitter wrote
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
    for client_uuid in sorted(p.client_uuids):
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


def _lock_unique_ids(unique_ids: Iterable[str]) -> None:
    """Serialise submissions that share a uniqueId until this transaction ends.

    PostgreSQL: ``pg_advisory_xact_lock`` per uniqueId, taken in a fixed order (no deadlock between
    two submissions sharing several ids).  A later submission then sees the winner's committed rows
    (READ COMMITTED takes a new snapshot per statement).  SQLite: Django opens the transaction with
    BEGIN IMMEDIATE (config/settings.py), which already serialises writers.
    """
    keys = sorted({u for u in unique_ids if u})
    if not keys or connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_advisory_xact_lock(k)) FROM "
            "(SELECT hashtextextended('xds-uid:' || u, 0) AS k FROM unnest(%s::text[]) AS u ORDER BY 1) AS s",
            [keys])


def _size(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


_KIND_MODELS: dict[str, type[m.RegistryObjectRow]] = {
    m.ObjectKind.SUBMISSION_SET: m.SubmissionSet, m.ObjectKind.DOCUMENT_ENTRY: m.DocumentEntry,
    m.ObjectKind.FOLDER: m.Folder,
}


def _lookup(patient_ids: list[str], document_uids: list[str], submission_set_uids: list[str],
            folder_uids: list[str], entry_uuids: list[str], allocate: dict[str, int]) -> dict[str, Any]:
    """Rows the registry-level rules need, in ONE statement (round trips dominate a registration).

    Returns ``{"P": {patient_id: [(patient_id, merged_into_id, None)]}, "D": {uniqueId: [(uniqueId,
    hash, size)]}, "S"/"F": {uniqueId}, "U": {entryUUID: [(entryUUID, table, None)]}}`` for what exists,
    and on PostgreSQL ``"I": {ObjectKind: [new primary keys]}``: ``allocate`` rows' ids drawn from
    the tables' sequences in the same statement, so that the inserts need no ``RETURNING``
    round trip per table and the code rows can be written together with their objects.
    """
    def in_list(values: list[str]) -> tuple[str, list[str]]:
        return ", ".join(["%s"] * len(values)), values

    parts: list[str] = []
    params: list[object] = []
    patient_table = m.Patient._meta.db_table
    marks, values = in_list(patient_ids)
    parts.append(f"SELECT 'P', patient_id, CAST(merged_into_id AS TEXT), NULL FROM {patient_table} "
                 f"WHERE patient_id IN ({marks})")
    params += values
    if document_uids:
        marks, values = in_list(document_uids)
        parts.append(f"SELECT 'D', unique_id, hash, CAST(size AS TEXT) FROM {m.DocumentEntry._meta.db_table} "
                     f"WHERE unique_id IN ({marks})")
        params += values
    for key, model, uids in (("S", m.SubmissionSet, submission_set_uids), ("F", m.Folder, folder_uids)):
        if uids:
            marks, values = in_list(uids)
            parts.append(f"SELECT '{key}', unique_id, NULL, NULL FROM {model._meta.db_table} "
                         f"WHERE unique_id IN ({marks})")
            params += values
    if entry_uuids:
        marks, values = in_list(entry_uuids)
        for model in (m.DocumentEntry, m.SubmissionSet, m.Folder, m.Association):
            parts.append(f"SELECT 'U', entry_uuid, '{model._meta.verbose_name}', NULL FROM {model._meta.db_table} "
                         f"WHERE entry_uuid IN ({marks})")
            params += values
    postgresql = connection.vendor == "postgresql"
    if postgresql:
        for kind, count in allocate.items():
            if count:
                table = _KIND_MODELS[kind]._meta.db_table
                parts.append(f"SELECT 'I', '{kind}', CAST(nextval(pg_get_serial_sequence('{table}', 'id')) AS TEXT), "
                             "NULL FROM generate_series(1, %s)")
                params.append(count)
    found: dict[str, Any] = {"P": {}, "D": {}, "S": set(), "F": set(), "U": {}, "I": {}}
    with connection.cursor() as cursor:
        cursor.execute(" UNION ALL ".join(parts), params)
        for key, a, b, c in cursor.fetchall():
            if key in ("S", "F"):
                found[key].add(a)
            elif key == "I":
                found["I"].setdefault(a, []).append(int(b))
            else:
                found[key].setdefault(a, []).append((a, b, c) if key == "D" else (a, b, None))
    if not postgresql:
        found["I"] = _allocate_sqlite(allocate)
    return found


def _allocate_sqlite(allocate: dict[str, int]) -> dict[str, list[int]]:
    """New primary keys on SQLite: past both the highest id and the AUTOINCREMENT counter.

    Race-free because SQLite transactions here are ``BEGIN IMMEDIATE`` (config/settings.py): this
    writer holds the database's write lock until it commits.
    """
    out: dict[str, list[int]] = {}
    with connection.cursor() as cursor:
        for kind, count in allocate.items():
            if not count:
                continue
            table = _KIND_MODELS[kind]._meta.db_table
            cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}")
            top = cursor.fetchone()[0]
            try:
                cursor.execute("SELECT seq FROM sqlite_sequence WHERE name = %s", [table])
                row = cursor.fetchone()
            except DatabaseError:  # no AUTOINCREMENT table in this database
                row = None
            top = max(top, row[0] if row and row[0] is not None else 0)
            out[kind] = list(range(top + 1, top + 1 + count))
    return out


def _load_existing(uuids: set[str]) -> _Existing:
    found = _Existing()
    if not uuids:
        return found
    # Lock the referenced entries: two submissions replacing/appending to the same entry queue here
    # and the second sees the first's deprecation (design-notes "Races belong to the database").
    found.documents = {d.entry_uuid: d for d in m.DocumentEntry.objects.select_for_update().filter(
        entry_uuid__in=uuids).only("id", "entry_uuid", "patient_id", "status", "object_type")}
    rest = uuids - found.documents.keys()
    if rest:
        found.folders = {f.entry_uuid: f for f in m.Folder.objects.select_for_update().filter(
            entry_uuid__in=rest).only("id", "entry_uuid", "patient_id", "status", "last_update_time")}
        rest -= found.folders.keys()
    if rest:
        found.submission_sets = {s.entry_uuid: s for s in m.SubmissionSet.objects.filter(
            entry_uuid__in=rest).only("id", "entry_uuid", "patient_id", "status")}
        rest -= found.submission_sets.keys()
    if rest:
        found.associations = {a.entry_uuid: a for a in m.Association.objects.filter(entry_uuid__in=rest)}
    return found


def _check_association_ends(sub: Submission, existing: _Existing, loc) -> list[RegistryError]:  # noqa: C901
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


def _deprecate(targets: set[str]) -> set[str]:
    """Deprecate replaced entries and, recursively, their APND/XFRM descendants (ITI TF-3 4.2.2.2.3)."""
    if not targets:
        return set()
    all_deprecated = set(targets)
    frontier = set(targets)
    while frontier:
        children = set(m.Association.objects.filter(
            target_uuid__in=frontier,
            association_type__in=[AssociationType.APND.value, AssociationType.XFRM.value],
        ).values_list("source_uuid", flat=True))
        frontier = children - all_deprecated
        all_deprecated |= frontier
    approved = list(m.DocumentEntry.objects.filter(entry_uuid__in=all_deprecated, status=APPROVED)
                    .values_list("entry_uuid", flat=True))
    m.DocumentEntry.objects.filter(entry_uuid__in=approved).update(
        status=DEPRECATED,
        xml=Replace(F("xml"), Value(f'status="{APPROVED}"'), Value(f'status="{DEPRECATED}"')))
    return set(approved)


def _propagate_folders(replaced: dict[str, str], patient_id: str) -> list[Association]:
    """The replacement joins every Folder the replaced entry belonged to (ITI TF-3 4.2.2.2.3)."""
    if not replaced:
        return []
    memberships = m.Association.objects.filter(
        target_uuid__in=list(replaced), association_type=AssociationType.HasMember.value,
        source_kind=m.ObjectKind.FOLDER, status=APPROVED).values_list("source_uuid", "target_uuid")
    out: list[Association] = []
    seen: set[tuple[str, str]] = set()
    for folder_uuid, old in memberships:
        key = (folder_uuid, replaced[old])
        if key in seen:
            continue
        seen.add(key)
        a = Association(id=new_id(), association_type=AssociationType.HasMember.value,
                        source_object=folder_uuid, target_object=replaced[old],
                        object_type=ObjectType.ASSOCIATION.value)
        a.status, a.lid, a.version_name = APPROVED, a.id, "1"
        out.append(a)
    return out


_LUT_RE = r'(<(?:\w+:)?Slot\s+name="lastUpdateTime"[^>]*>\s*<(?:\w+:)?ValueList[^>]*>\s*<(?:\w+:)?Value>)[^<]*(<)'


def set_last_update_time_in_xml(xml: str, value: str) -> str:
    """Rewrite (or add) the lastUpdateTime slot of a stored Folder fragment."""
    new, n = re.subn(_LUT_RE, lambda mt: f"{mt.group(1)}{value}{mt.group(2)}", xml, count=1)
    if n:
        return new
    # No slot yet (cannot happen for folders stored by this registry): insert one as first child.
    match = re.match(r"^(<(\w+:)?RegistryPackage\b[^>]*?)(/?)>", xml)
    if not match:
        return xml
    prefix = match.group(2) or ""
    slot = (f'<{prefix}Slot name="lastUpdateTime"><{prefix}ValueList><{prefix}Value>{value}</{prefix}Value>'
            f"</{prefix}ValueList></{prefix}Slot>")
    if match.group(3):
        return f"{match.group(1)}>{slot}</{prefix}RegistryPackage>{xml[match.end():]}"
    return f"{match.group(1)}>{slot}{xml[match.end():]}"


def _touch_folders(folder_uuids: set[str], timestamp: str) -> None:
    # A Folder's lastUpdateTime changes whenever a member is added (ITI TF-3 4.2.3.4.4).
    if not folder_uuids:
        return
    rows = list(m.Folder.objects.select_for_update().filter(entry_uuid__in=folder_uuids).only("id", "xml"))
    for row in rows:
        row.xml = set_last_update_time_in_xml(row.xml, timestamp)
        row.last_update_time = timestamp
    m.Folder.objects.bulk_update(rows, ["xml", "last_update_time"])


def _xml(obj: RegistryObject) -> str:
    # The stored fragment (models.py "Stored XML"): same text as lxml's serialization, built directly.
    return registry_object_xml(obj)


def _dtm14(value: str | None) -> str | None:
    return DTM.lower_bound(value) if value else None


def _code(obj: RegistryObject, scheme: str) -> str:
    c = obj.code(scheme)
    return str(c) if c else ""


def _insert(subs: list[Submission], existing: _Existing, propagated: list[list[Association]],
            ids: dict[str, list[int]]) -> None:
    """Write the rows of ``subs`` (ids pre-allocated by :func:`_lookup`): one statement per table."""
    now = timezone.now()
    rows: dict[type, list[dict[str, object]]] = {m.SubmissionSet: [], m.DocumentEntry: [], m.Folder: [],
                                                 m.Association: [], m.RegistryCode: []}
    codes = rows[m.RegistryCode]
    next_id = {kind: iter(values) for kind, values in ids.items()}
    for sub, extra in zip(subs, propagated, strict=True):
        ss = sub.submission_set
        assert ss is not None
        ss_pk = next(next_id[m.ObjectKind.SUBMISSION_SET])
        rows[m.SubmissionSet].append(dict(
            id=ss_pk, entry_uuid=ss.id, lid=ss.lid or ss.id, version_name="1", status=APPROVED, xml=_xml(ss),
            registered=now, unique_id=ss.unique_id, patient_id=ss.patient_id, source_id=ss.source_id or "",
            submission_time=_dtm14(ss.submission_time),
            content_type_code=_code(ss, ClassificationScheme.SubmissionSet_contentTypeCode),
            title=(ss.title or "")[:256]))
        codes += [_code_row(m.ObjectKind.SUBMISSION_SET, ss_pk, m.CodeAttribute.AUTHOR_PERSON, a.person)
                  for a in ss.author if a.person]
        for d in sub.document_entries:
            pk = next(next_id[m.ObjectKind.DOCUMENT_ENTRY])
            rows[m.DocumentEntry].append(_document_row(d, pk, now))
            codes += _document_codes(d, pk)
        for f in sub.folders:
            pk = next(next_id[m.ObjectKind.FOLDER])
            rows[m.Folder].append(dict(
                id=pk, entry_uuid=f.id, lid=f.lid or f.id, version_name="1", status=APPROVED, xml=_xml(f),
                registered=now, unique_id=f.unique_id, patient_id=f.patient_id, last_update_time=f.last_update_time,
                title=(f.title or "")[:256]))
            codes += [_code_row(m.ObjectKind.FOLDER, pk, m.CodeAttribute.CODE_LIST, str(c)) for c in f.code_list]

        kinds: dict[str, str] = {ss.id: m.ObjectKind.SUBMISSION_SET}
        kinds.update({d.id: m.ObjectKind.DOCUMENT_ENTRY for d in sub.document_entries})
        kinds.update({f.id: m.ObjectKind.FOLDER for f in sub.folders})
        kinds.update({a.id: m.ObjectKind.ASSOCIATION for a in sub.associations})
        patients: dict[str, str] = {ss.id: ss.patient_id, **{d.id: d.patient_id for d in sub.document_entries},
                                    **{f.id: f.patient_id for f in sub.folders}}
        for a in [*sub.associations, *extra]:
            src_row = existing.folders.get(a.source_object)
            rows[m.Association].append(dict(
                entry_uuid=a.id, lid=a.lid or a.id, version_name="1", status=APPROVED, xml=_xml(a), registered=now,
                association_type=a.association_type, source_uuid=a.source_object, target_uuid=a.target_object,
                source_kind=kinds.get(a.source_object) or existing.kind(a.source_object),
                target_kind=kinds.get(a.target_object) or existing.kind(a.target_object),
                submission_set_status=a.submission_set_status or "",
                patient_id=patients.get(a.source_object) or (src_row.patient_id if src_row else ss.patient_id)))
    _write_rows(rows)


def _code_row(kind: str, pk: int, attribute: str, value: str) -> dict[str, object]:
    return {"object_kind": kind, "object_id": pk, "attribute": attribute, "value": value}


#: Above this many rows in one table PostgreSQL gets them by COPY (bulk loading), below by INSERT.
COPY_THRESHOLD = 200


def _write_rows(rows: dict[type, list[dict[str, object]]]) -> None:
    """Insert plain row dicts (keys = column names; missing columns take the field default).

    Registration is CPU-bound and round trips dominate it, so this bypasses model instances and
    ``bulk_create``: on PostgreSQL every small table goes into ONE multi-statement execute (the
    client-side cursor sends it with the simple query protocol: one round trip for all tables),
    large ones by COPY; on SQLite one multi-row INSERT per table and parameter-limit chunk.
    """
    statements: list[str] = []
    params: list[object] = []
    postgresql = connection.vendor == "postgresql"
    for model, table_rows in rows.items():
        if not table_rows:
            continue
        columns = _columns(model, with_id="id" in table_rows[0])
        defaults = _defaults(model)
        values = [tuple(row[c] if c in row else defaults[c] for c in columns) for row in table_rows]
        quote = connection.ops.quote_name
        table = quote(model._meta.db_table)
        column_sql = ", ".join(quote(c) for c in columns)
        if postgresql and len(values) > COPY_THRESHOLD:
            with connection.cursor() as cursor, cursor.cursor.copy(
                    f"COPY {table} ({column_sql}) FROM STDIN") as copy:
                for value in values:
                    copy.write_row(value)
            continue
        datetimes = _datetime_columns(model, columns)
        if not postgresql and datetimes:
            adapt = connection.ops.adapt_datetimefield_value
            values = [tuple(adapt(x) if i in datetimes else x for i, x in enumerate(v)) for v in values]
        row_sql = "(" + ", ".join(["%s"] * len(columns)) + ")"
        batch = len(values) if postgresql else max(1, 30000 // len(columns))
        for start in range(0, len(values), batch):
            chunk = values[start:start + batch]
            statements.append(f"INSERT INTO {table} ({column_sql}) VALUES {', '.join([row_sql] * len(chunk))}")
            params += [v for row_values in chunk for v in row_values]
            if not postgresql:
                with connection.cursor() as cursor:
                    cursor.execute(statements.pop(), params)
                params = []
    if statements:
        with connection.cursor() as cursor:
            cursor.execute("; ".join(statements), params)


@cache
def _columns(model: type, *, with_id: bool) -> tuple[str, ...]:
    return tuple(f.column for f in model._meta.concrete_fields if with_id or not f.primary_key)


@cache
def _datetime_columns(model: type, columns: tuple[str, ...]) -> frozenset[int]:
    kinds = {f.column: f.get_internal_type() for f in model._meta.concrete_fields}
    return frozenset(i for i, c in enumerate(columns) if kinds[c] == "DateTimeField")


@cache
def _defaults(model: type) -> dict[str, object]:
    return {f.column: f.get_default() for f in model._meta.concrete_fields if f.has_default()}


def _document_row(d: DocumentEntry, pk: int, now: datetime) -> dict[str, object]:
    return dict(
        id=pk, entry_uuid=d.id, lid=d.lid or d.id, version_name="1", status=APPROVED, xml=_xml(d), registered=now,
        unique_id=d.unique_id, patient_id=d.patient_id, object_type=d.object_type or "",
        creation_time=_dtm14(d.creation_time), service_start_time=_dtm14(d.service_start_time),
        service_stop_time=_dtm14(d.service_stop_time),
        class_code=_code(d, ClassificationScheme.DocumentEntry_classCode),
        type_code=_code(d, ClassificationScheme.DocumentEntry_typeCode),
        format_code=_code(d, ClassificationScheme.DocumentEntry_formatCode),
        practice_setting_code=_code(d, ClassificationScheme.DocumentEntry_practiceSettingCode),
        healthcare_facility_type_code=_code(d, ClassificationScheme.DocumentEntry_healthcareFacilityTypeCode),
        mime_type=d.mime_type, repository_unique_id=d.repository_unique_id or "",
        hash=(d.hash or "").lower(), size=int(d.size) if d.size else None,
        document_availability=d.document_availability or DocumentAvailability.ONLINE.value,
        title=(d.title or "")[:256])


def _document_codes(d: DocumentEntry, pk: int) -> list[dict[str, object]]:
    kind = m.ObjectKind.DOCUMENT_ENTRY
    out = [_code_row(kind, pk, m.CodeAttribute.CLASS_CODE, str(c))
           for c in d.codes(ClassificationScheme.DocumentEntry_classCode)]
    out += [_code_row(kind, pk, m.CodeAttribute.CONFIDENTIALITY_CODE, str(c)) for c in d.confidentiality_code]
    out += [_code_row(kind, pk, m.CodeAttribute.EVENT_CODE_LIST, str(c)) for c in d.event_code_list]
    out += [_code_row(kind, pk, m.CodeAttribute.REFERENCE_ID_LIST, v) for v in d.slot_values(REFERENCE_ID_LIST_SLOT)]
    out += [_code_row(kind, pk, m.CodeAttribute.AUTHOR_PERSON, a.person) for a in d.author if a.person]
    return out


def _integrity_findings(sub: Submission, exc: IntegrityError) -> list[RegistryError]:
    text = str(exc).lower()
    ss = sub.submission_set
    if "unique_id" in text and ss is not None:
        return [_err(ErrorCode.XDSDuplicateUniqueIdInRegistry,
                              "a SubmissionSet or Folder uniqueId of this submission was registered concurrently "
                              f"({ss.unique_id}{''.join(', ' + f.unique_id for f in sub.folders)})", ss.id)]
    return [_err(META, f"an entryUUID of this submission is already used in the registry ({exc})",
                          ss.id if ss else "")]


# --- patient merge support (used by the identity feed) --------------------------------------------

def repoint_patient(old: str, new: str) -> int:
    """Re-point every registry object of patient ``old`` to ``new`` (ITI TF-2a 3.8.4.1.3 merge).

    Rewrites the ``patient_id`` column and the patientId ExternalIdentifier value in the stored
    XML (the CX is attribute text there, so it is matched XML-escaped).  Returns the number of rows
    changed.  Must run inside the caller's transaction.
    """
    old_xml, new_xml = escape(old, {'"': "&quot;"}), escape(new, {'"': "&quot;"})
    changed = 0
    for model in (m.DocumentEntry, m.SubmissionSet, m.Folder):
        changed += model.objects.filter(patient_id=old).update(
            patient_id=new, xml=Replace(F("xml"), Value(f'value="{old_xml}"'), Value(f'value="{new_xml}"')))
    m.Association.objects.filter(patient_id=old).update(patient_id=new)
    return changed
