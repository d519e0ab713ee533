"""The ATNA audit sink: every :class:`~xds_core.audit.AuditEvent` becomes stored DICOM PS3.15 A.5 messages.

:class:`AuditTrail` is the sink :func:`xds_core.audit.set_sink` calls for each recorded event.  It splits the
event into one message per patient (ITI TF-2a 3.20.7.1, :func:`xds_core.audit_xml.split_by_patient`),
serializes each (:func:`xds_core.audit_xml.to_xml`) and writes them with one INSERT (:func:`store`), at once,
in the thread that recorded the event -- so before the answer goes out.

Why synchronously, and not in the business transaction itself: the endpoints record their event when the
answer is complete (:meth:`xds_core.audit.Exchange.finish`), which is after the operation committed (or
rolled back: a refused or failed request must leave its record too, which a record written inside the rolled
back transaction would not).  Writing then, in autocommit, means a request whose answer went out has its row
committed, whatever the operation's own transaction did; the cost is one INSERT per event.  (Code that records
inside an ``atomic`` block -- none does today -- has its rows committed or rolled back with that block.)
ITI TF-2a 3.20.4.1.1 asks to store locally and send later: the rows are that store; the chainer
(:mod:`atna.chain`) and the syslog shipper (:mod:`atna.syslog_jobs`) work from them in the job worker.

The sink never raises into the transaction (:func:`xds_core.audit.record` swallows and logs failures without
details); an event that could not be stored is logged as lost (no patient data in the line).

:func:`install` puts the sink in place once per process, chained to the sink installed before it (the portal's
journal chains the same way).  The sink writes rows only: the trail's periodic jobs are queued at start-up by
``manage.py xds_audit schedule`` (``make run`` runs it), never by a process that merely records events.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.db import connection

from atna.models import AuditRecord
from xds_core import audit
from xds_core.audit_xml import AuditSource, clean, split_by_patient, to_xml

#: Column widths of :class:`~atna.models.AuditRecord` (values are cut to fit; the message keeps them whole).
_MAX_COLUMN = 255
_TABLE = connection.ops.quote_name(AuditRecord._meta.db_table)


def _fit(value: str) -> str:
    """A column value: what the message itself carries (no character XML cannot hold -- PostgreSQL refuses NUL
    in text), cut to the column."""
    return clean(value, _MAX_COLUMN)


def records_for(event: audit.AuditEvent, source: AuditSource, *, now: datetime | None = None
                ) -> list[AuditRecord]:
    """The unsaved :class:`~atna.models.AuditRecord` rows of ``event``: one per patient (ITI TF-2a 3.20.7.1)."""
    recorded_at = now or datetime.now(UTC)
    rows: list[AuditRecord] = []
    for one in split_by_patient(event):
        requestor = one.requestor
        patients = one.patient_ids
        rows.append(AuditRecord(
            recorded_at=recorded_at, event_time=one.time, event_id=one.event_id.code, action=one.action.value,
            outcome=int(one.outcome), transaction=one.transaction.code if one.transaction is not None else "",
            # ITI-51 keeps 0..n patients in one message: the first is the searchable one, all are in the XML.
            patient_id=_fit(patients[0]) if patients else "",
            user_id=_fit(requestor.user_id) if requestor is not None else "",
            user_name=_fit(requestor.user_name) if requestor is not None else "",
            message=to_xml(one, source).decode("utf-8")))
    return rows


#: The columns :func:`store` writes (chain_seq stays NULL: the chainer's).
_COLUMNS = ("recorded_at", "event_time", "event_id", "action", "outcome", "transaction", "patient_id", "user_id",
            "user_name", "message", "chain_hmac")


def store(event: audit.AuditEvent, source: AuditSource) -> list[AuditRecord]:
    """Write the rows of ``event`` now (one INSERT) and return them (their ids set).

    A plain parameterised ``INSERT ... RETURNING id`` rather than ``bulk_create``: this runs once per audited
    transaction, and the ORM's query compilation cost more than the statement itself (measured: the ITI-42
    CPU per request, see the issue's figures).
    """
    rows = records_for(event, source)
    ops = connection.ops
    params: list[object] = []
    for row in rows:
        params += [ops.adapt_datetimefield_value(row.recorded_at), ops.adapt_datetimefield_value(row.event_time),
                   row.event_id, row.action, row.outcome, row.transaction, row.patient_id, row.user_id,
                   row.user_name, row.message, row.chain_hmac]
    values = ", ".join(["(" + ", ".join(["%s"] * len(_COLUMNS)) + ")"] * len(rows))
    sql = (f"INSERT INTO {_TABLE} ({', '.join(ops.quote_name(c) for c in _COLUMNS)}) "  # noqa: S608 - our names
           f"VALUES {values} RETURNING {ops.quote_name('id')}")
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        ids = [found[0] for found in cursor.fetchall()]
    for row, pk in zip(rows, ids, strict=True):
        row.pk = pk
        row._state.adding = False
    return rows


class AuditTrail:
    """The audit sink: stores each event (:func:`store`)."""

    def __init__(self, source: AuditSource) -> None:
        self.source = source

    def __call__(self, event: audit.AuditEvent) -> None:
        store(event, self.source)


_slot: audit.SinkSlot[AuditTrail] = audit.SinkSlot()


def install(source: AuditSource) -> AuditTrail:
    """Install the trail as the audit sink, chained to the sink installed before it (once per process)."""
    return _slot.install(lambda: AuditTrail(source))


def installed() -> AuditTrail | None:
    return _slot.installed()


def uninstall() -> None:
    """Remove the trail's sink and put the one it chained to back (tests)."""
    _slot.uninstall()
