"""ITI-42 Register Document Set-b: validate a submission and register it wholly or not at all.

Flow (DEVELOPERS.md rule 2): the endpoint parses the SubmitObjectsRequest into a
:class:`~xds_core.metadata.objects.Submission`; :func:`register_document_set` then

1. attaches top-level Classifications/ExternalIdentifiers to their objects and runs the
   message-level validation (:mod:`xds_registry.validation.submission`) -- all findings;
2. replaces symbolic ids by registry-assigned ``urn:uuid`` entryUUIDs and rewrites every
   reference (ITI TF-3 4.2.3.1.5), sets the registry-owned values (status Approved, lid = id,
   version 1, Folder lastUpdateTime -- ITI TF-3 4.2.3.4.4);
3. in ONE ``transaction.atomic()``, one module per job:

   * :mod:`xds_registry.rows` serialises concurrent submissions touching the same uniqueIds
     (PostgreSQL transaction-level advisory locks keyed on each uniqueId; SQLite transactions are
     ``BEGIN IMMEDIATE`` so writers are serialised anyway), looks up the registry state in one
     statement and locks the existing entries the submission points at (``SELECT ... FOR UPDATE``);
   * :mod:`xds_registry.validation.registry_content` checks the registry-level rules (patient known,
     uniqueIds, entryUUIDs, association ends, deprecated targets, cross-object patient ids);
   * :mod:`xds_registry.lifecycle` deprecates replaced entries and their APND/XFRM descendants,
     propagates folder membership to replacements and updates folder lastUpdateTime (the stored
     fragments through :mod:`xds_registry.stored_xml`);
   * :mod:`xds_registry.rows` inserts the new rows with bulk statements.

Any Error finding raises :class:`~xds_core.errors.XdsError` before anything is written, or
rolls the whole transaction back.  Configuration (affinity domain) is an argument: this module
never reads settings.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.db import IntegrityError, transaction

from xds_core.affinity_domain import AffinityDomain
from xds_core.errors import RegistryError, XdsError
from xds_core.identifiers import is_urn_uuid  # RFC 4122 §3
from xds_core.metadata.objects import Association, Submission, new_id
from xds_core.vocabulary import REPLACING_TYPES, AssociationType, AvailabilityStatus
from xds_registry import models as m
from xds_registry.lifecycle import deprecate, propagate_folders, touch_folders
from xds_registry.rows import insert_rows, load_existing, lock_unique_ids, lookup
from xds_registry.validation.registry_content import check_registry_rules, integrity_findings
from xds_registry.validation.submission import attach_top_level_parts, validate_submission

APPROVED = AvailabilityStatus.APPROVED.value
UUID_PREFIX = "urn:uuid:"


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
            lock_unique_ids([u for p in prepared for u in _unique_ids(p.submission)])
            results: list[RegistrationResult] = []
            for group in _independent_groups(prepared):
                results += _register(group, timestamp)
    except IntegrityError as exc:
        # Lost a race the locks do not cover (two submissions with the same client-assigned
        # entryUUID or SubmissionSet/Folder uniqueId committing at once): the unique constraint
        # decided; report it like the pre-check would have.
        raise XdsError([f for p in prepared for f in integrity_findings(p.submission, exc)]) from exc
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

def _assign_ids(submission: Submission) -> dict[str, str]:
    """Replace symbolic ids by urn:uuid entryUUIDs and rewrite all references (ITI TF-3 4.2.3.1.5)."""
    id_map: dict[str, str] = {}
    for obj in submission.all_objects():
        if is_urn_uuid(obj.id):
            id_map[obj.id] = obj.id
        else:
            new = new_id()
            if obj.id:
                id_map[obj.id] = new
            obj.id = new
    for obj in submission.all_objects():
        for c in obj.classifications:
            if not is_urn_uuid(c.id or ""):
                c.id = new_id()
            c.classified_object = obj.id
        for e in obj.external_identifiers:
            if not is_urn_uuid(e.id or ""):
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

def _register(group: list[_Prepared], timestamp: str) -> list[RegistrationResult]:
    """Check and write a group of independent submissions (inside the caller's transaction, which
    already holds the advisory locks of their uniqueIds)."""
    subs = [p.submission for p in group]

    # One round trip for the registry state the rules need (patients, uniqueIds, client entryUUIDs)
    # and, on PostgreSQL, the primary keys of the new rows.
    found = lookup(
        sorted({sub.submission_set.patient_id for sub in subs if sub.submission_set}),
        [d.unique_id for sub in subs for d in sub.document_entries],
        [sub.submission_set.unique_id for sub in subs if sub.submission_set],
        [f.unique_id for sub in subs for f in sub.folders],
        sorted({u for p in group for u in p.client_uuids}),
        {m.ObjectKind.SUBMISSION_SET: len(subs),
         m.ObjectKind.DOCUMENT_ENTRY: sum(len(s.document_entries) for s in subs),
         m.ObjectKind.FOLDER: sum(len(s.folders) for s in subs)})

    references = set().union(*(p.references() for p in group))
    existing = load_existing(references)
    errors: list[RegistryError] = []
    for p in group:
        errors += check_registry_rules(p.submission, p.id_map, p.client_uuids, found, existing)
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
        deprecated = deprecate(set(replaced))
        propagated = propagate_folders(replaced, ss.patient_id)
        touched_folders = {a.source_object for a in sub.associations
                           if a.type == AssociationType.HasMember and a.source_object in existing.folders}
        touched_folders |= {a.source_object for a in propagated}
        touch_folders(touched_folders, timestamp)
        propagated_all.append(propagated)
        results.append(RegistrationResult(submission_set_uuid=ss.id, entry_uuids=dict(p.id_map),
                                          document_count=len(sub.document_entries), deprecated=sorted(deprecated)))
    insert_rows(subs, existing, propagated_all, found.get("I", {}))
    return results


def _unique_ids(sub: Submission) -> list[str]:
    assert sub.submission_set is not None
    return [sub.submission_set.unique_id, *(d.unique_id for d in sub.document_entries),
            *(f.unique_id for f in sub.folders)]


