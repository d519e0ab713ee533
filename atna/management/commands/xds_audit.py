"""``manage.py xds_audit verify|search|status|chain|prune``: the ATNA audit trail (atna/chain.py, ITI-20).

- ``verify [--schema]``: walk the HMAC chain; exit 0 when it is whole, 1 naming the first bad record (seq and
  id) when a record was edited, removed, reordered, or the last ones truncated (against the anchor file), or
  when records wait unchained long past XDS_AUDIT_CHAIN_INTERVAL; ``--schema`` also validates every message
  against the DICOM audit XSD.  A failure records a Security Alert (tampering found) in the trail itself.
  A missing, unreadable or wrong key file exits 2.
- ``search [--patient ID] [--user TEXT] [--event CODE] [--since T] [--until T] [--limit N] [--xml]``: the
  matching records, newest first (records Audit Log Used).
- ``status``: the chain's head, anchors, unchained records, syslog cursors.
- ``chain``: chain (and anchor) now, as the ``atna.chain`` job does.
- ``schedule``: queue the trail's periodic jobs (chainer, syslog shipper, retention) if they are not queued;
  run at start-up (``make run`` does), like ``xds_repository_reconcile``.
- ``prune [--days N]``: apply the retention now (default XDS_AUDIT_RETENTION_DAYS).
"""

from __future__ import annotations

import getpass
import socket
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from atna import chain, trail
from atna.admin import patient_matches
from atna.models import AuditChainState, AuditRecord, SyslogCursor
from atna.trail_jobs import ensure_scheduled, trail_config
from xds_core import audit
from xds_core.audit_xml import schema_errors

EXIT_BAD_CHAIN = 1
EXIT_KEY = 2
MAX_LIMIT = 10000


def _when(value: str) -> datetime:
    """``2026-12-08`` or an ISO 8601 date-time (naive = UTC)."""
    parsed = parse_datetime(value)
    if parsed is None:
        day = parse_date(value)
        if day is None:
            raise CommandError(f"{value!r}: expected a date (YYYY-MM-DD) or an ISO 8601 date-time")
        parsed = datetime(day.year, day.month, day.day)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _operator() -> audit.Participant:
    """Who runs the command: the OS user on this host (the requestor of Audit Log Used / the alert's performer)."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "unknown"
    return audit.Participant(name, socket.gethostname(), alternative_user_id="manage.py xds_audit",
                             is_requestor=True)


class Command(BaseCommand):
    help = "Verify, search and maintain the ATNA audit trail (HMAC chain, anchors, retention)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        verify = sub.add_parser("verify", help="check the HMAC chain against the key and the anchor file")
        verify.add_argument("--schema", action="store_true", help="also validate every message against the XSD")
        search = sub.add_parser("search", help="records by patient, user, event and time (newest first)")
        search.add_argument("--patient", help="patient id: the CX, or its id part (every CX with that id)")
        search.add_argument("--user", help="requestor UserID or UserName (exact)")
        search.add_argument("--event", help="EventID code, e.g. 110112")
        search.add_argument("--since", type=_when)
        search.add_argument("--until", type=_when)
        search.add_argument("--limit", type=int, default=100)
        search.add_argument("--xml", action="store_true", help="print the messages")
        sub.add_parser("status", help="chain head, anchors, unchained records, syslog cursors")
        sub.add_parser("chain", help="chain and anchor the new records now")
        sub.add_parser("schedule", help="queue the chainer, shipper and retention jobs (start-up)")
        prune = sub.add_parser("prune", help="delete records past the retention now")
        prune.add_argument("--days", type=int, default=None, help="override XDS_AUDIT_RETENTION_DAYS")

    def handle(self, *args: Any, **options: Any) -> int | None:  # type: ignore[override]
        action = options["action"]
        return getattr(self, f"do_{action}")(options)

    # ------------------------------------------------------------------ verify

    def do_verify(self, options: dict[str, Any]) -> None:
        config = trail_config()
        try:
            key = chain.load_key(config.key_file)
        except chain.AuditKeyError as exc:
            self._alert(f"audit trail verification impossible: {exc}", config)
            self.stderr.write(f"FAIL {exc}")
            raise SystemExit(EXIT_KEY) from None
        report = chain.verify(key, config.anchor_file, unchained_grace=config.unchained_grace,
                              schema_errors=schema_errors if options["schema"] else None)
        summary = (f"{report.checked} records checked (seq {report.first_seq}..{report.last_seq}), "
                   f"{report.unchained} waiting to be chained")
        if report.ok:
            self.stdout.write(f"OK audit chain whole: {summary}")
            return
        for problem in report.problems:
            self.stderr.write(f"FAIL {problem}")
        self.stderr.write(f"audit chain NOT whole: {summary}")
        first = ("first bad record: " + (f"seq {report.first_bad_seq}" if report.first_bad_seq else "")
                 + (f" id {report.first_bad_id}" if report.first_bad_id else "")).strip()
        self._alert(f"audit trail tampering found: {report.problems[0]} ({first})", config)
        raise SystemExit(EXIT_BAD_CHAIN)

    def _alert(self, description: str, config: Any) -> None:
        """Security Alert (PS3.15 A.5.3.11), outcome 12 (the security system may have been compromised), written
        into the trail directly: the alert must land even where no sink is installed (pytest, XDS_AUDIT=off)."""
        # CID 403 has no "tampering detected" type: the nearest is 110135 Object Security Attributes Changed
        # (the trail's protected records changed).  The reporter is this process; who tampered is unknown.
        event = audit.security_alert(
            audit.SecurityAlertType.OBJECT_SECURITY_ATTRIBUTES_CHANGED,
            reporter=replace(audit.this_node("manage.py xds_audit verify"), is_requestor=True),
            subject="xdsi:audit-trail", description=description[:900], outcome=audit.EventOutcome.MAJOR_FAILURE)
        trail.store(event, config.source)

    # ------------------------------------------------------------------ search

    def do_search(self, options: dict[str, Any]) -> None:
        limit = options["limit"]
        if not 1 <= limit <= MAX_LIMIT:
            raise CommandError(f"--limit must be 1..{MAX_LIMIT}")
        found = AuditRecord.objects.all()
        said = []
        if options["patient"]:
            found = found.filter(patient_matches(options["patient"]))
            said.append(f"patient={options['patient']}")
        if options["user"]:
            found = found.filter(Q(user_id=options["user"]) | Q(user_name=options["user"]))
            said.append(f"user={options['user']}")
        if options["event"]:
            found = found.filter(event_id=options["event"])
            said.append(f"event={options['event']}")
        if options["since"]:
            found = found.filter(event_time__gte=options["since"])
            said.append(f"since={options['since'].isoformat()}")
        if options["until"]:
            found = found.filter(event_time__lt=options["until"])
            said.append(f"until={options['until'].isoformat()}")
        config = trail_config()
        # Audit Log Used (PS3.15 A.5.3.2): the search itself is audited, with what was searched for.
        trail.store(audit.audit_log_used(_operator(), "xds_audit search " + "; ".join(said),
                                         node=audit.this_node("manage.py xds_audit")), config.source)
        for row in found.order_by("-event_time", "-id")[:limit]:
            line = (f"{row.event_time.astimezone(UTC):%Y-%m-%dT%H:%M:%S}Z id={row.pk} seq={row.chain_seq or '-'} "
                    f"event={row.event_id}/{row.action} outcome={row.outcome} {row.transaction or '-'} "
                    f"patient={row.patient_id or '-'} user={row.user_id or '-'}"
                    + (f" ({row.user_name})" if row.user_name else ""))
            self.stdout.write(line)
            if options["xml"]:
                self.stdout.write(row.message)

    # ------------------------------------------------------------------ maintenance

    def do_status(self, options: dict[str, Any]) -> None:
        config = trail_config()
        state = AuditChainState.objects.filter(pk=1).first()
        unchained = AuditRecord.objects.filter(chain_seq__isnull=True)
        oldest = unchained.order_by("id").values_list("recorded_at", flat=True).first()
        self.stdout.write(f"records: {AuditRecord.objects.count()}, unchained: {unchained.count()}"
                          + (f" (oldest written {oldest:%Y-%m-%dT%H:%M:%S}Z)" if oldest else ""))
        if state is None:
            self.stdout.write("chain: nothing chained yet")
        else:
            self.stdout.write(f"chain: seq {state.start_seq}..{state.head_seq}, head hmac {state.head_hmac[:16]}..., "
                              f"last anchor seq {state.last_anchor_seq}"
                              + (f" at {state.last_anchor_at:%Y-%m-%dT%H:%M:%S}Z" if state.last_anchor_at else ""))
        self.stdout.write(f"key file: {config.key_file}; anchor file: {config.anchor_file}")
        self.stdout.write(f"syslog: {config.syslog or 'not configured (XDS_AUDIT_SYSLOG)'}")
        for cursor in SyslogCursor.objects.order_by("destination"):
            self.stdout.write(f"  {cursor.destination}: sent up to seq {cursor.last_seq} ({cursor.sent} messages)"
                              + (f"; failing since {cursor.failing_since:%Y-%m-%dT%H:%M:%S}Z: {cursor.last_error}"
                                 if cursor.failing_since else ""))

    def do_chain(self, options: dict[str, Any]) -> None:
        config = trail_config()
        try:
            key = chain.load_key(config.key_file, create=chain.state().head_seq == 0)
        except chain.AuditKeyError as exc:
            raise CommandError(str(exc)) from None
        result = chain.chain_pending(key)
        anchor = chain.anchor_if_due(config.anchor_file, config.anchor_interval, force=True)
        self.stdout.write(f"chained {result.chained} records; head seq {result.head_seq}"
                          + (f"; anchored seq {anchor.seq}" if anchor else ""))

    def do_schedule(self, options: dict[str, Any]) -> None:
        config = trail_config()
        if not config.enabled:
            self.stdout.write("XDS_AUDIT is off: no audit jobs queued")
            return
        jobs = ensure_scheduled(config)
        self.stdout.write("audit jobs queued: " + ", ".join(f"{j.kind} at {j.run_after:%H:%M:%S}" for j in jobs))

    def do_prune(self, options: dict[str, Any]) -> None:
        config = trail_config()
        days = options["days"]
        retention = config.retention if days is None else timedelta(days=days)
        if retention <= timedelta(0):
            raise CommandError("--days must be >= 1")
        try:
            result = chain.prune(config.anchor_file, older_than=timezone.now() - retention)
        except chain.PruneError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"pruned {result.deleted} records; the chain starts at seq {result.start_seq}")
