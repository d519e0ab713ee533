"""The SQL of an ITI-42 registration: locks, the one-statement lookup, row building and bulk writes.

Round trips dominate a registration, so this works below the ORM where it pays:

* :func:`lock_unique_ids` -- PostgreSQL transaction-level advisory locks on the submission's uniqueIds
  (SQLite: ``BEGIN IMMEDIATE`` already serialises writers);
* :func:`lookup` -- in ONE statement, the registry state the rules need (patients, uniqueIds, client
  entryUUIDs) and, on PostgreSQL, the new rows' primary keys (``nextval``);
* :func:`load_existing` -- the rows the submission's associations point at, locked
  (``SELECT ... FOR UPDATE``) as :class:`ExistingRows`;
* :func:`insert_rows` -- the rows of the new objects (columns per models.py "Value encodings", the
  stored fragment, the :class:`~xds_registry.models.RegistryCode` rows), one statement per table, by
  ``COPY`` on PostgreSQL for large batches.

Everything runs inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

from django.db import DatabaseError, connection
from django.utils import timezone

from xds_core.metadata.objects import Association, DocumentEntry, RegistryObject, Submission
from xds_core.metadata.values import DTM
from xds_core.vocabulary import (
    REFERENCE_ID_LIST_SLOT,
    AvailabilityStatus,
    ClassificationScheme,
    DocumentAvailability,
)
from xds_registry import models as m
from xds_registry.stored_xml import stored_fragment

APPROVED = AvailabilityStatus.APPROVED.value


# --- reading: locks, lookup, referenced rows --------------------------------------------------------

def lock_unique_ids(unique_ids: Iterable[str]) -> None:
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


_KIND_MODELS: dict[str, type[m.RegistryObjectRow]] = {
    m.ObjectKind.SUBMISSION_SET: m.SubmissionSet, m.ObjectKind.DOCUMENT_ENTRY: m.DocumentEntry,
    m.ObjectKind.FOLDER: m.Folder,
}


def lookup(patient_ids: list[str], document_uids: list[str], submission_set_uids: list[str],
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


@dataclass
class ExistingRows:
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


def load_existing(uuids: set[str]) -> ExistingRows:
    """The rows ``uuids`` name (DocumentEntries and Folders locked ``FOR UPDATE``), by kind."""
    found = ExistingRows()
    if not uuids:
        return found
    # Lock the referenced entries: two submissions replacing/appending to the same entry queue here
    # and the second sees the first's deprecation (the database, not Python, settles the race).
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


# --- writing: the new rows ----------------------------------------------------------------------------

def _dtm14(value: str | None) -> str | None:
    return DTM.lower_bound(value) if value else None


def _code(obj: RegistryObject, scheme: str) -> str:
    c = obj.code(scheme)
    return str(c) if c else ""


def insert_rows(subs: list[Submission], existing: ExistingRows, propagated: list[list[Association]],
                ids: dict[str, list[int]]) -> None:
    """Write the rows of ``subs`` (ids pre-allocated by :func:`lookup`): one statement per table."""
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
            id=ss_pk, entry_uuid=ss.id, lid=ss.lid or ss.id, version_name="1", status=APPROVED, xml=stored_fragment(ss),
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
                id=pk, entry_uuid=f.id, lid=f.lid or f.id, version_name="1", status=APPROVED, xml=stored_fragment(f),
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
                entry_uuid=a.id, lid=a.lid or a.id, version_name="1", status=APPROVED, xml=stored_fragment(a),
                registered=now,
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
        id=pk, entry_uuid=d.id, lid=d.lid or d.id, version_name="1", status=APPROVED, xml=stored_fragment(d),
        registered=now,
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
