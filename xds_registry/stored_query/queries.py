"""The stored queries as SQL: one statement per query (plus one for associations where returned).

Each function takes the validated :class:`~xds_registry.stored_query.parameters.QueryParameters`
and a :class:`Fetch` (result limit, LeafClass or ObjectRef) and returns a :class:`QueryResult`
of rows in response order.  The SQL is portable (PostgreSQL and SQLite) and reads only the typed
columns documented in :mod:`xds_registry.models`; LeafClass rows carry the stored canonical XML
fragment so that the answer is built without further queries (no N+1).

Every statement ends in ``LIMIT max+1``: more rows than the limit is XDSTooManyResults and
nothing is returned (ITI TF-2a 3.18.4.1.3; ITI TF-3 Table 4.2.4.1-2).

Time ranges: ``...From`` is inclusive and ``...To`` exclusive ("From <= value < To").  The TF
text of ITI TF-2a 3.18.4.1.2.3.6 is not in our reference corpus; the rule is stated in the
same terms by the Swiss EPR/CARA implementation guide
(https://cara-ch.github.io/emed-service-guide/transactions/date_processing: "Parameters
$XDSDocumentEntry(Creation|ServiceStart|ServiceStop)TimeFrom are inclusive, parameters
...TimeTo are exclusive", partial dates stand for their earliest instant) and the NIST test
11897/creationtime_right_edge expects no match when To equals the creationTime.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from django.db import connection

from xds_core.errors import ErrorCode, XdsError
from xds_core.vocabulary import AssociationType, AvailabilityStatus, ObjectType, StoredQuery
from xds_registry import models
from xds_registry.stored_query import parameters as prm
from xds_registry.stored_query.parameters import QueryParameters

DE = models.ObjectKind.DOCUMENT_ENTRY.value
SS = models.ObjectKind.SUBMISSION_SET.value
FD = models.ObjectKind.FOLDER.value
AS = models.ObjectKind.ASSOCIATION.value

_DE_TABLE = models.DocumentEntry._meta.db_table
_SS_TABLE = models.SubmissionSet._meta.db_table
_FD_TABLE = models.Folder._meta.db_table
_AS_TABLE = models.Association._meta.db_table
_CODE_TABLE = models.RegistryCode._meta.db_table

_TABLES = {DE: _DE_TABLE, SS: _SS_TABLE, FD: _FD_TABLE}
#: Sort key of each kind in a response: SubmissionSets, Folders, DocumentEntries, then Associations.
_KIND_ORDER = {SS: 0, FD: 1, DE: 2}
_KIND_BY_ORDER = {v: k for k, v in _KIND_ORDER.items()}

_HAS_MEMBER = AssociationType.HasMember.value
_DEFAULT_DOCUMENT_TYPES = [ObjectType.STABLE_DOCUMENT_ENTRY.value]
#: $XDSAssociationStatus defaults to Approved (ITI TF-2a 3.18.4.1.2.3.7, XDS Metadata Update).
_DEFAULT_ASSOCIATION_STATUS = [AvailabilityStatus.APPROVED.value]


@dataclass(frozen=True, slots=True)
class Fetch:
    """How much and what to fetch."""

    limit: int          # XDS_MAX_QUERY_RESULTS
    leaf_class: bool    # LeafClass: also fetch the stored XML


@dataclass(frozen=True, slots=True)
class Row:
    kind: str            # ObjectKind value
    pk: int
    entry_uuid: str
    patient_id: str
    xml: str | None      # None for ObjectRef fetches


@dataclass(frozen=True, slots=True)
class AssociationRow(Row):
    source_uuid: str = ""
    target_uuid: str = ""
    target_kind: str = ""


@dataclass
class QueryResult:
    """Rows in response order (registry objects first, then associations)."""

    objects: list[Row] = field(default_factory=list)
    associations: list[AssociationRow] = field(default_factory=list)

    @property
    def rows(self) -> list[Row]:
        return [*self.objects, *self.associations]

    def uuids(self) -> set[str]:
        return {r.entry_uuid for r in self.objects}


# --- SQL building ----------------------------------------------------------------------------------

class Where:
    """An AND of SQL conditions with their %s parameters."""

    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.params: list[object] = []

    def add(self, clause: str, *params: object) -> None:
        self.clauses.append(clause)
        self.params.extend(params)

    def in_(self, column: str, values: Sequence[object]) -> None:
        """``column IN (...)``; an empty list matches nothing (never emitted as ``IN ()``)."""
        if not values:
            self.clauses.append("1 = 0")
            return
        self.add(f"{column} IN ({', '.join(['%s'] * len(values))})", *values)

    def eq_or_in(self, column: str, values: Sequence[object]) -> None:
        if len(values) == 1:
            self.add(f"{column} = %s", values[0])
        else:
            self.in_(column, values)

    def range(self, column: str, low: object | None, high: object | None) -> None:
        # From inclusive, To exclusive (see module docstring).
        if low is not None:
            self.add(f"{column} >= %s", low)
        if high is not None:
            self.add(f"{column} < %s", high)

    def code_exists(self, kind: str, alias: str, attribute: str, values: Sequence[str]) -> None:
        """One OR-group of a multi-valued attribute: the object has at least one of ``values``."""
        inner = Where()
        inner.add("c.object_kind = %s", kind)
        inner.add(f"c.object_id = {alias}.id")
        inner.add("c.attribute = %s", attribute)
        inner.eq_or_in("c.value", values)
        self.add(f"EXISTS (SELECT 1 FROM {_CODE_TABLE} c WHERE {inner.sql()})", *inner.params)

    def like_exists(self, kind: str, alias: str, attribute: str, patterns: Sequence[str]) -> None:
        """The object has a value matching one of the SQL LIKE ``patterns`` (% and _ wildcards).

        Case-insensitive on both databases (SQLite LIKE is; PostgreSQL gets ILIKE), and no escape
        character, so that every other character of the pattern is literal.
        """
        if connection.vendor == "postgresql":
            test = "c.value ILIKE %s ESCAPE ''"
        else:
            test = "c.value LIKE %s"
        ors = " OR ".join([test] * len(patterns))
        self.add(f"EXISTS (SELECT 1 FROM {_CODE_TABLE} c WHERE c.object_kind = %s AND c.object_id = {alias}.id"
                 f" AND c.attribute = %s AND ({ors}))", kind, attribute, *patterns)

    def sql(self) -> str:
        return " AND ".join(self.clauses) if self.clauses else "1 = 1"


def _object_select(kind: str, alias: str, where: Where, fetch: Fetch) -> tuple[str, list[object]]:
    xml = f"{alias}.xml" if fetch.leaf_class else "NULL"
    sql = (f"SELECT {_KIND_ORDER[kind]} AS k, {alias}.id, {alias}.entry_uuid, {alias}.patient_id, {xml} AS xml"
           f" FROM {_TABLES[kind]} {alias} WHERE {where.sql()}")
    return sql, list(where.params)


def _run_objects(parts: list[tuple[str, list[object]]], fetch: Fetch) -> list[Row]:
    """Run one statement (a UNION ALL of ``parts``) ordered by kind then registration order."""
    sql = " UNION ALL ".join(part for part, _ in parts)
    params = [p for _, ps in parts for p in ps]
    sql += " ORDER BY 1, 2 LIMIT %s"
    params.append(fetch.limit + 1)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = [Row(_KIND_BY_ORDER[k], pk, uuid, pid, xml) for k, pk, uuid, pid, xml in cursor.fetchall()]
    _check_limit(len(rows), fetch)
    return rows


def _run_associations(where: Where, fetch: Fetch) -> list[AssociationRow]:
    xml = "a.xml" if fetch.leaf_class else "NULL"
    sql = (f"SELECT a.id, a.entry_uuid, a.patient_id, {xml}, a.source_uuid, a.target_uuid, a.target_kind"
           f" FROM {_AS_TABLE} a WHERE {where.sql()} ORDER BY a.id LIMIT %s")
    with connection.cursor() as cursor:
        cursor.execute(sql, [*where.params, fetch.limit + 1])
        rows = [AssociationRow(AS, pk, uuid, pid, x, source_uuid=s, target_uuid=t, target_kind=tk)
                for pk, uuid, pid, x, s, t, tk in cursor.fetchall()]
    _check_limit(len(rows), fetch)
    return rows


def _check_limit(count: int, fetch: Fetch) -> None:
    if count > fetch.limit:
        raise XdsError.of(ErrorCode.XDSTooManyResults,
                          f"The query matches more than {fetch.limit} objects; refine it")


def _finish(objects: list[Row], associations: list[AssociationRow], fetch: Fetch) -> QueryResult:
    _check_limit(len(objects) + len(associations), fetch)
    return QueryResult(objects, associations)


def _by_uuid_or_uid(params: QueryParameters, uuid_param: str, uid_param: str, alias: str,
                    lid_param: str | None = None) -> Where:
    """Selection by entryUUID, uniqueId or logicalID (the "exactly one of" parameters)."""
    where = Where()
    if uuid_param in params:
        where.eq_or_in(f"{alias}.entry_uuid", params.values(uuid_param) or [params.value(uuid_param)])
    elif uid_param in params:
        where.eq_or_in(f"{alias}.unique_id", params.values(uid_param) or [params.value(uid_param)])
    elif lid_param is not None and lid_param in params:
        where.eq_or_in(f"{alias}.lid", params.values(lid_param))
    return where


def _strings(values: Sequence[object]) -> list[str]:
    return [str(v) for v in values]


def _assoc_status(params: QueryParameters) -> list[str]:
    return _strings(params.values(prm.ASSOCIATION_STATUS)) or _DEFAULT_ASSOCIATION_STATUS


def _document_types(params: QueryParameters) -> list[str]:
    # $XDSDocumentEntryType absent: Stable entries only (ITI TF-2a 3.18.4.1.2.3.6.2, On-Demand Documents).
    return _strings(params.values(prm.DE_TYPE)) or _DEFAULT_DOCUMENT_TYPES


# --- filters ---------------------------------------------------------------------------------------

_DE_CODE_COLUMNS = (
    (prm.DE_CLASS_CODE, "class_code"),
    (prm.DE_TYPE_CODE, "type_code"),
    (prm.DE_PRACTICE_SETTING_CODE, "practice_setting_code"),
    (prm.DE_HCFT_CODE, "healthcare_facility_type_code"),
    (prm.DE_FORMAT_CODE, "format_code"),
)
_DE_TIME_COLUMNS = (
    (prm.DE_CREATION_FROM, prm.DE_CREATION_TO, "creation_time"),
    (prm.DE_SERVICE_START_FROM, prm.DE_SERVICE_START_TO, "service_start_time"),
    (prm.DE_SERVICE_STOP_FROM, prm.DE_SERVICE_STOP_TO, "service_stop_time"),
)


def _document_filters(params: QueryParameters, where: Where, a: str) -> None:
    """The FindDocuments attribute filters (everything but the patient)."""
    if prm.DE_STATUS in params:
        where.eq_or_in(f"{a}.status", _strings(params.values(prm.DE_STATUS)))
    where.eq_or_in(f"{a}.object_type", _document_types(params))
    for name, column in _DE_CODE_COLUMNS:
        if name in params:
            where.eq_or_in(f"{a}.{column}", _strings(params.values(name)))
    for low, high, column in _DE_TIME_COLUMNS:
        where.range(f"{a}.{column}", params.value(low), params.value(high))
    # AND of ORs: each repeated Slot is one group (ITI TF-2a 3.18.4.1.2.3.5).
    for group in params.and_groups(prm.DE_EVENT_CODE_LIST):
        where.code_exists(DE, a, models.CodeAttribute.EVENT_CODE_LIST, _strings(group))
    for group in params.and_groups(prm.DE_CONFIDENTIALITY_CODE):
        where.code_exists(DE, a, models.CodeAttribute.CONFIDENTIALITY_CODE, _strings(group))
    for group in params.and_groups(prm.DE_REFERENCE_ID_LIST):
        where.code_exists(DE, a, models.CodeAttribute.REFERENCE_ID_LIST, _strings(group))
    if prm.DE_AUTHOR_PERSON in params:
        where.like_exists(DE, a, models.CodeAttribute.AUTHOR_PERSON, _strings(params.values(prm.DE_AUTHOR_PERSON)))
    if prm.DE_DOCUMENT_AVAILABILITY in params:
        where.eq_or_in(f"{a}.document_availability", _strings(params.values(prm.DE_DOCUMENT_AVAILABILITY)))


def _content_filters(params: QueryParameters, where: Where, a: str) -> None:
    """The document filters of GetAll / Get*AndContents: formatCode, confidentialityCode, type."""
    where.eq_or_in(f"{a}.object_type", _document_types(params))
    if prm.DE_FORMAT_CODE in params:
        where.eq_or_in(f"{a}.format_code", _strings(params.values(prm.DE_FORMAT_CODE)))
    for group in params.and_groups(prm.DE_CONFIDENTIALITY_CODE):
        where.code_exists(DE, a, models.CodeAttribute.CONFIDENTIALITY_CODE, _strings(group))


def _folder_filters(params: QueryParameters, where: Where, a: str) -> None:
    where.eq_or_in(f"{a}.status", _strings(params.values(prm.FOLDER_STATUS)))
    where.range(f"{a}.last_update_time", params.value(prm.FOLDER_LAST_UPDATE_FROM),
                params.value(prm.FOLDER_LAST_UPDATE_TO))
    for group in params.and_groups(prm.FOLDER_CODE_LIST):
        where.code_exists(FD, a, models.CodeAttribute.CODE_LIST, _strings(group))


def _patients(params: QueryParameters, name: str) -> list[str]:
    return _strings(params.values(name)) if params.spec.params[name].multiple else [str(params.value(name))]


def _keep_linked(associations: list[AssociationRow], uuids: set[str],
                 sources: set[str] | None = None) -> list[AssociationRow]:
    """Associations whose ends are both in the answer.

    ``sources`` (default ``uuids``) are the allowed source objects.  A HasMember whose target is
    itself an association (SubmissionSet -> (Folder -> DocumentEntry), ITI TF-3 4.2.2.1.3) is kept
    when that association is kept.
    """
    sources = uuids if sources is None else sources
    kept = [a for a in associations if a.source_uuid in sources and a.target_uuid in uuids]
    kept_ids = {a.entry_uuid for a in kept}
    second = [a for a in associations if a.source_uuid in sources and a.target_uuid in kept_ids]
    chosen = kept_ids | {a.entry_uuid for a in second}
    return [a for a in associations if a.entry_uuid in chosen]


# --- the queries -----------------------------------------------------------------------------------

def find_documents(params: QueryParameters, fetch: Fetch) -> QueryResult:
    """FindDocuments / FindDocumentsByReferenceId / FindDocumentsForMultiplePatients."""
    where = Where()
    if prm.DE_PATIENT_ID in params:
        where.eq_or_in("d.patient_id", _patients(params, prm.DE_PATIENT_ID))
    _document_filters(params, where, "d")
    return _finish(_run_objects([_object_select(DE, "d", where, fetch)], fetch), [], fetch)


def find_submission_sets(params: QueryParameters, fetch: Fetch) -> QueryResult:
    where = Where()
    where.add("s.patient_id = %s", params.value(prm.SS_PATIENT_ID))
    where.eq_or_in("s.status", _strings(params.values(prm.SS_STATUS)))
    if prm.SS_SOURCE_ID in params:
        where.eq_or_in("s.source_id", _strings(params.values(prm.SS_SOURCE_ID)))
    where.range("s.submission_time", params.value(prm.SS_SUBMISSION_TIME_FROM), params.value(prm.SS_SUBMISSION_TIME_TO))
    if prm.SS_CONTENT_TYPE in params:
        where.eq_or_in("s.content_type_code", _strings(params.values(prm.SS_CONTENT_TYPE)))
    if prm.SS_AUTHOR_PERSON in params:
        where.like_exists(SS, "s", models.CodeAttribute.AUTHOR_PERSON, [str(params.value(prm.SS_AUTHOR_PERSON))])
    return _finish(_run_objects([_object_select(SS, "s", where, fetch)], fetch), [], fetch)


def find_folders(params: QueryParameters, fetch: Fetch) -> QueryResult:
    """FindFolders / FindFoldersForMultiplePatients."""
    where = Where()
    if prm.FOLDER_PATIENT_ID in params:
        where.eq_or_in("f.patient_id", _patients(params, prm.FOLDER_PATIENT_ID))
    _folder_filters(params, where, "f")
    return _finish(_run_objects([_object_select(FD, "f", where, fetch)], fetch), [], fetch)


def get_all(params: QueryParameters, fetch: Fetch) -> QueryResult:
    """Everything of one patient: SubmissionSets, Folders, DocumentEntries and their Associations."""
    patient = str(params.value(prm.PATIENT_ID))
    ss, fd, de = Where(), Where(), Where()
    ss.add("s.patient_id = %s", patient)
    ss.eq_or_in("s.status", _strings(params.values(prm.SS_STATUS)))
    fd.add("f.patient_id = %s", patient)
    fd.eq_or_in("f.status", _strings(params.values(prm.FOLDER_STATUS)))
    de.add("d.patient_id = %s", patient)
    de.eq_or_in("d.status", _strings(params.values(prm.DE_STATUS)))
    _content_filters(params, de, "d")
    objects = _run_objects([_object_select(SS, "s", ss, fetch), _object_select(FD, "f", fd, fetch),
                            _object_select(DE, "d", de, fetch)], fetch)
    if not objects:
        return QueryResult()
    assoc = Where()
    assoc.add("a.patient_id = %s", patient)
    assoc.eq_or_in("a.status", _assoc_status(params))
    associations = _keep_linked(_run_associations(assoc, fetch), {r.entry_uuid for r in objects})
    return _finish(objects, associations, fetch)


def get_documents(params: QueryParameters, fetch: Fetch) -> QueryResult:
    where = _by_uuid_or_uid(params, prm.DE_ENTRY_UUID, prm.DE_UNIQUE_ID, "d", prm.DE_LOGICAL_ID)
    return _finish(_run_objects([_object_select(DE, "d", where, fetch)], fetch), [], fetch)


def get_folders(params: QueryParameters, fetch: Fetch) -> QueryResult:
    where = _by_uuid_or_uid(params, prm.FOLDER_ENTRY_UUID, prm.FOLDER_UNIQUE_ID, "f", prm.FOLDER_LOGICAL_ID)
    return _finish(_run_objects([_object_select(FD, "f", where, fetch)], fetch), [], fetch)


def get_associations(params: QueryParameters, fetch: Fetch) -> QueryResult:
    uuids = _strings(params.values(prm.UUID))
    ends = Where()
    ends.eq_or_in("a.source_uuid", uuids)
    targets = Where()
    targets.eq_or_in("a.target_uuid", uuids)
    where = Where()
    where.add(f"(({ends.sql()}) OR ({targets.sql()}))", *ends.params, *targets.params)
    where.eq_or_in("a.status", _assoc_status(params))
    return _finish([], _run_associations(where, fetch), fetch)


def get_documents_and_associations(params: QueryParameters, fetch: Fetch) -> QueryResult:
    documents = _run_objects(
        [_object_select(DE, "d", _by_uuid_or_uid(params, prm.DE_ENTRY_UUID, prm.DE_UNIQUE_ID, "d"), fetch)], fetch)
    if not documents:
        return QueryResult()
    uuids = [r.entry_uuid for r in documents]
    ends, targets, where = Where(), Where(), Where()
    ends.eq_or_in("a.source_uuid", uuids)
    targets.eq_or_in("a.target_uuid", uuids)
    where.add(f"(({ends.sql()}) OR ({targets.sql()}))", *ends.params, *targets.params)
    where.eq_or_in("a.status", _assoc_status(params))
    return _finish(documents, _run_associations(where, fetch), fetch)


def get_submission_sets(params: QueryParameters, fetch: Fetch) -> QueryResult:
    """The SubmissionSets holding the given DocumentEntries/Folders, plus those HasMembers."""
    uuids = _strings(params.values(prm.UUID))
    members = Where()
    members.add("a.association_type = %s", _HAS_MEMBER)
    members.add("a.source_kind = %s", SS)
    members.eq_or_in("a.target_uuid", uuids)
    members.eq_or_in("a.status", _assoc_status(params))
    where = Where()
    where.add(f"s.entry_uuid IN (SELECT a.source_uuid FROM {_AS_TABLE} a WHERE {members.sql()})", *members.params)
    sets = _run_objects([_object_select(SS, "s", where, fetch)], fetch)
    if not sets:
        return QueryResult()
    associations = _run_associations(members, fetch)
    set_uuids = {r.entry_uuid for r in sets}
    return _finish(sets, [a for a in associations if a.source_uuid in set_uuids], fetch)


def _members_of(container_kind: str, container: Where) -> str:
    """SQL for the entryUUIDs that a SubmissionSet/Folder selected by ``container`` HasMember-holds."""
    return (f"SELECT m.target_uuid FROM {_AS_TABLE} m WHERE m.association_type = %s AND m.target_kind = %s"
            f" AND m.source_uuid IN (SELECT c.entry_uuid FROM {_TABLES[container_kind]} c WHERE {container.sql()})")


def _package_and_contents(kind: str, params: QueryParameters, fetch: Fetch, container: Where,
                          member_kinds: tuple[str, ...]) -> QueryResult:
    """GetSubmissionSetAndContents / GetFolderAndContents: the package, its members, the HasMembers."""
    parts = [_object_select(kind, "p", _rebase(container, "c", "p"), fetch)]
    for member_kind in member_kinds:
        where = Where()
        where.add(f"x.entry_uuid IN ({_members_of(kind, container)})",
                  _HAS_MEMBER, member_kind, *container.params)
        if member_kind == DE:
            _content_filters(params, where, "x")
        parts.append(_object_select(member_kind, "x", where, fetch))
    objects = _run_objects(parts, fetch)
    packages = [r for r in objects if r.kind == kind]
    if not packages:
        return QueryResult()
    package_uuids = {r.entry_uuid for r in packages}
    uuids = {r.entry_uuid for r in objects}
    # The package's own HasMembers and, for a SubmissionSet, the Folder->DocumentEntry HasMembers
    # between returned Folders and Documents; which of the latter belong to the package is decided
    # below from its SubmissionSet->Association HasMembers (ITI TF-3 4.2.2.1.3).  Two indexed
    # lookups in a UNION (an OR across columns would defeat the indexes on PostgreSQL).
    own_where = Where()
    own_where.eq_or_in("e.source_uuid", sorted(package_uuids))
    lookups = [f"SELECT e.id FROM {_AS_TABLE} e WHERE {own_where.sql()}"]
    lookup_params = list(own_where.params)
    folders = sorted(r.entry_uuid for r in objects if r.kind == FD and r.entry_uuid not in package_uuids)
    documents = sorted(r.entry_uuid for r in objects if r.kind == DE)
    if folders and documents:
        inner = Where()
        inner.eq_or_in("e.source_uuid", folders)
        inner.eq_or_in("e.target_uuid", documents)
        lookups.append(f"SELECT e.id FROM {_AS_TABLE} e WHERE {inner.sql()}")
        lookup_params += inner.params
    where = Where()
    where.add(f"a.id IN ({' UNION '.join(lookups)})", *lookup_params)
    where.add("a.association_type = %s", _HAS_MEMBER)
    where.eq_or_in("a.status", _assoc_status(params))
    candidates = _run_associations(where, fetch)
    own = [a for a in candidates if a.source_uuid in package_uuids]
    nested_ids = {a.target_uuid for a in own if a.target_kind == AS}
    nested = {a.entry_uuid for a in candidates
              if a.entry_uuid in nested_ids and a.source_uuid in uuids and a.target_uuid in uuids}
    chosen = {a.entry_uuid for a in own if a.target_uuid in uuids or a.target_uuid in nested} | nested
    return _finish(objects, [a for a in candidates if a.entry_uuid in chosen], fetch)


def _rebase(where: Where, old: str, new: str) -> Where:
    out = Where()
    out.clauses = [c.replace(f"{old}.", f"{new}.") for c in where.clauses]
    out.params = list(where.params)
    return out


def get_submission_set_and_contents(params: QueryParameters, fetch: Fetch) -> QueryResult:
    container = _single_selector(params, prm.SS_ENTRY_UUID, prm.SS_UNIQUE_ID)
    return _package_and_contents(SS, params, fetch, container, (FD, DE))


def get_folder_and_contents(params: QueryParameters, fetch: Fetch) -> QueryResult:
    container = _single_selector(params, prm.FOLDER_ENTRY_UUID, prm.FOLDER_UNIQUE_ID)
    return _package_and_contents(FD, params, fetch, container, (DE,))


def _single_selector(params: QueryParameters, uuid_param: str, uid_param: str, alias: str = "c") -> Where:
    where = Where()
    if uuid_param in params:
        where.add(f"{alias}.entry_uuid = %s", params.value(uuid_param))
    else:
        where.add(f"{alias}.unique_id = %s", params.value(uid_param))
    return where


def get_folders_for_document(params: QueryParameters, fetch: Fetch) -> QueryResult:
    document = _single_selector(params, prm.DE_ENTRY_UUID, prm.DE_UNIQUE_ID)
    where = Where()
    where.add(f"f.entry_uuid IN (SELECT m.source_uuid FROM {_AS_TABLE} m WHERE m.association_type = %s"
              f" AND m.source_kind = %s AND m.target_uuid IN (SELECT c.entry_uuid FROM {_DE_TABLE} c"
              f" WHERE {document.sql()}))", _HAS_MEMBER, FD, *document.params)
    return _finish(_run_objects([_object_select(FD, "f", where, fetch)], fetch), [], fetch)


def get_related_documents(params: QueryParameters, fetch: Fetch) -> QueryResult:
    """The document, the documents related to it by $AssociationTypes, and those associations.

    Only DocumentEntry-to-DocumentEntry associations count (a Folder's HasMember is no document
    relationship: NIST 11909/near_folder); no related document means an empty answer (11909).
    """
    document = _single_selector(params, prm.DE_ENTRY_UUID, prm.DE_UNIQUE_ID)
    original = f"SELECT c.entry_uuid FROM {_DE_TABLE} c WHERE {document.sql()}"
    where = Where()
    where.in_("a.association_type", _strings(params.values(prm.ASSOCIATION_TYPES)))
    where.add("a.source_kind = %s AND a.target_kind = %s", DE, DE)
    # An OR across two columns with subqueries defeats the indexes (PostgreSQL falls back to a
    # scan); a UNION of two indexed lookups does not.
    where.add(f"a.id IN (SELECT e.id FROM {_AS_TABLE} e WHERE e.source_uuid IN ({original})"
              f" UNION SELECT e.id FROM {_AS_TABLE} e WHERE e.target_uuid IN ({original}))",
              *document.params, *document.params)
    where.eq_or_in("a.status", _assoc_status(params))
    associations = _run_associations(where, fetch)
    if not associations:
        return QueryResult()
    ends = sorted({a.source_uuid for a in associations} | {a.target_uuid for a in associations})
    docs = Where()
    docs.in_("d.entry_uuid", ends)
    types = _document_types(params)
    type_clause = Where()
    type_clause.eq_or_in("d.object_type", types)
    own = _rebase(document, "c", "d")
    docs.add(f"({type_clause.sql()} OR ({own.sql()}))", *type_clause.params, *own.params)
    documents = _run_objects([_object_select(DE, "d", docs, fetch)], fetch)
    uuids = {r.entry_uuid for r in documents}
    kept = [a for a in associations if a.source_uuid in uuids and a.target_uuid in uuids]
    if not kept:
        return QueryResult()
    return _finish(documents, kept, fetch)


QUERIES: dict[StoredQuery, Callable[[QueryParameters, Fetch], QueryResult]] = {
    StoredQuery.FindDocuments: find_documents,
    StoredQuery.FindDocumentsByReferenceId: find_documents,
    StoredQuery.FindSubmissionSets: find_submission_sets,
    StoredQuery.FindFolders: find_folders,
    StoredQuery.GetAll: get_all,
    StoredQuery.GetDocuments: get_documents,
    StoredQuery.GetFolders: get_folders,
    StoredQuery.GetAssociations: get_associations,
    StoredQuery.GetDocumentsAndAssociations: get_documents_and_associations,
    StoredQuery.GetSubmissionSets: get_submission_sets,
    StoredQuery.GetSubmissionSetAndContents: get_submission_set_and_contents,
    StoredQuery.GetFolderAndContents: get_folder_and_contents,
    StoredQuery.GetFoldersForDocument: get_folders_for_document,
    StoredQuery.GetRelatedDocuments: get_related_documents,
    StoredQuery.FindDocumentsForMultiplePatients: find_documents,
    StoredQuery.FindFoldersForMultiplePatients: find_folders,
}
