"""Settle documents left ``pending`` by a crash between store and ITI-42.

A pending row belongs to a request that died when the process that wrote it
no longer runs (checked for processes of this host: pid, start time, boot id),
or, for rows of other hosts sharing the database, when it is older than the
grace period (a live request registers within its registry timeout).  The
registry is asked, through ITI-18 GetDocuments by uniqueId, whether it knows
the document with *our* repositoryUniqueId and the same hash:

- it does  -> the crash came after the registry accepted: mark registered;
- it does not -> remove the row and any content no other row uses.

If the registry cannot be asked, nothing is removed (a document the registry
may know must not vanish); the next run tries again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.core.files.storage import Storage
from django.utils import timezone

from xds_repository import records
from xds_repository.models import StoredDocument
from xds_repository.registry_client import RegistryClient, RegistryUnavailable

logger = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    examined: int = 0
    registered: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    error: str | None = None


def reconcile(*, repository_unique_id: str, registry_url: str, storage: Storage,
              grace: timedelta, registry_timeout: float = 60.0) -> ReconcileReport:
    report = ReconcileReport()
    cutoff = timezone.now() - grace
    pending = [row for row in StoredDocument.objects.filter(state=StoredDocument.State.PENDING)
               if row.created <= cutoff or records.owner_is_dead(row.owner)]
    report.examined = len(pending)
    if not pending:
        return report
    client = RegistryClient(registry_url, timeout=registry_timeout)
    try:
        known = client.get_documents(sorted({row.unique_id for row in pending}))
    except RegistryUnavailable as exc:
        report.error = str(exc)
        logger.warning("transaction=reconcile outcome=registry-unavailable pending=%d error=%s", len(pending), exc)
        return report
    registered_keys = {(e.unique_id, (e.hash or "").lower()) for e in known
                       if e.repository_unique_id == repository_unique_id}
    confirmed = [row for row in pending if (row.unique_id, row.hash) in registered_keys]
    orphans = [row for row in pending if (row.unique_id, row.hash) not in registered_keys]
    records.mark_registered(confirmed)
    records.discard(orphans, storage)
    report.registered = [row.unique_id for row in confirmed]
    report.removed = [row.unique_id for row in orphans]
    logger.info("transaction=reconcile outcome=success pending=%d registered=%d removed=%d",
                len(pending), len(confirmed), len(orphans))
    return report
