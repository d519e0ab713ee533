"""Shipping the audit trail to the Audit Record Repository (ITI-20 Record Audit Event over syslog).

:func:`ship_pending` sends the chained records after the destination's cursor (:class:`~atna.models.SyslogCursor`),
in seq order, in batches over one connection each, and moves the cursor only after a batch was sent whole:
while the collector is down the records wait in the table (ITI TF-2a 3.20.4.1.1 "store locally and send
later"), and are sent, in order, when it is back.  A batch cut by a failure is sent again from its start
(at-least-once: a collector may see a message twice, never miss one).  Anchors (the chain head at a time,
:mod:`atna.chain`) follow the records, as RFC 5424 messages with MSGID ``XDS-AUDIT-ANCHOR`` -- an off-host copy.

Run by the job ``atna.ship_syslog`` (:mod:`atna.trail_jobs`) every XDS_AUDIT_CHAIN_INTERVAL seconds; a
collector that cannot be reached is no failure of the job (the cursor says so: ``failing_since``,
``last_error``), so that an outage does not pile up retried jobs.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import transaction

from atna.models import AuditAnchor, AuditRecord, SyslogCursor
from xds_core import syslog

logger = logging.getLogger(__name__)

ANCHOR_MSGID = "XDS-AUDIT-ANCHOR"
DEFAULT_BATCH = 200
APP_NAME = "xdsi"


@dataclass(frozen=True)
class ShipResult:
    sent: int
    cursor: int
    error: str = ""


def _error_text(exc: BaseException) -> str:
    """The failure as logged and kept on the cursor: the class and the system's text, no message content."""
    return f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or getattr(exc, 'reason', None) or ''}".rstrip(": ")


def ship_pending(sender: syslog.Sender, *, batch: int = DEFAULT_BATCH, limit: int | None = None,
                 hostname: str | None = None, now: datetime | None = None) -> ShipResult:
    """Send what the destination has not received yet (records, then anchors); see the module docstring."""
    destination = str(sender.destination)
    cursor, _ = SyslogCursor.objects.get_or_create(destination=destination)
    host = hostname or socket.getfqdn()
    procid = str(os.getpid())
    sent = 0
    try:
        while limit is None or sent < limit:
            size = batch if limit is None else min(batch, limit - sent)
            rows = list(AuditRecord.objects.filter(chain_seq__gt=cursor.last_seq).order_by("chain_seq")
                        .values_list("chain_seq", "recorded_at", "message")[:size])
            if not rows:
                break
            sender.send(syslog.message(msg.encode("utf-8"), when=at, hostname=host, app_name=APP_NAME,
                                       procid=procid) for _, at, msg in rows)
            cursor.last_seq = rows[-1][0]
            cursor.sent += len(rows)
            sent += len(rows)
            SyslogCursor.objects.filter(pk=cursor.pk).update(last_seq=cursor.last_seq, sent=cursor.sent,
                                                             updated_at=now or datetime.now(UTC))
        anchors = list(AuditAnchor.objects.filter(pk__gt=cursor.last_anchor_id).order_by("pk")[:batch])
        if anchors:
            sender.send(syslog.message(f"{a.kind} seq={a.seq} hmac={a.hmac}".encode("ascii"), when=a.created_at,
                                       hostname=host, app_name=APP_NAME, procid=procid, msgid=ANCHOR_MSGID)
                        for a in anchors)
            cursor.last_anchor_id = anchors[-1].pk
            SyslogCursor.objects.filter(pk=cursor.pk).update(last_anchor_id=cursor.last_anchor_id)
    except (OSError, syslog.SyslogError) as exc:
        error = _error_text(exc)
        with transaction.atomic():
            fresh = SyslogCursor.objects.select_for_update().get(pk=cursor.pk)
            if fresh.failing_since is None:
                logger.warning("audit syslog %s: cannot send (%s); records wait and are sent when it is back",
                               destination, error)
                fresh.failing_since = now or datetime.now(UTC)
            fresh.last_error = error[:300]
            fresh.save(update_fields=["failing_since", "last_error", "updated_at"])
        return ShipResult(sent, cursor.last_seq, error)
    if cursor.failing_since is not None:
        logger.warning("audit syslog %s: reachable again; sending resumed", destination)
        SyslogCursor.objects.filter(pk=cursor.pk).update(failing_since=None, last_error="")
    return ShipResult(sent, cursor.last_seq)
