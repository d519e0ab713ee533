"""Settle documents left ``pending`` between store and ITI-42, and sweep dead writers' temporary files.

A document stays pending when its ITI-41 died between store and ITI-42 (a killed worker), or when the
ITI-42's outcome is unknown (a timeout or a reset after it was sent, an answer that is not a
RegistryResponse: the registry may have registered it, so the repository keeps it).

A pending row is settled

- when the process that wrote it no longer runs (processes of this host: pid, start time, boot id);
- with this server's own registry (called in process), as soon as the request that wrote it is over
  (its in-flight marker is no longer held, :class:`xds_repository.records.InFlight`): the in-process
  ITI-42 ended with the request, so the registry's answer can no longer change;
- otherwise once it is older than the grace period: a remote registry that timed out may still be
  working on the ITI-42, and rows of other hosts sharing the database cannot be checked.

The registry is asked, through ITI-18 GetDocuments by uniqueId, whether it knows the document with *our*
repositoryUniqueId and the same hash:

- it does  -> the registry accepted it: mark registered;
- it does not -> remove the row and any content no other row uses.

If the registry cannot be asked, nothing is removed (a document the registry may know must not
vanish); the next run tries again.

:func:`run` adds the sweep of temporary files (:mod:`xds_repository.sweep`) and logs one line; it is
what the command (at start-up) and the periodic job (:mod:`xds_repository.reconcile_jobs`) call.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta

from django.core.files.storage import Storage
from django.utils import timezone

from xds_repository import records
from xds_repository import storage as store
from xds_repository.models import StoredDocument
from xds_repository.provide_and_register import RepositoryConfig
from xds_repository.registry_client import LOCAL_REGISTRY, RegistryClient, RegistryUnavailable
from xds_repository.sweep import sweep

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReconcileConfig:
    """What a reconcile run needs (built from settings by :func:`xds_repository.conf.reconcile_config`)."""

    repository: RepositoryConfig
    #: Pending rows of a writer that may still run are settled once this old; temporary files whose name
    #: names no writer too.
    grace: timedelta
    #: Seconds between runs of the periodic job.
    interval: float
    #: Where MTOM spill files are (the SOAP endpoint's spool directory).
    spool_dirs: tuple[str, ...] = ()


@dataclass
class ReconcileReport:
    examined: int = 0
    registered: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    #: Temporary files of dead writers removed (spill files and storage temporaries).
    swept: int = 0
    error: str | None = None


def reconcile(*, repository_unique_id: str, registry_url: str, storage: Storage,
              grace: timedelta, registry_timeout: float = 60.0) -> ReconcileReport:
    """Settle the pending rows that are due (see the module docstring); no sweep, no log line."""
    report = ReconcileReport()
    cutoff = timezone.now() - grace
    in_process = registry_url in ("", LOCAL_REGISTRY)
    markers = store.inflight_dir(storage)
    pending = [row for row in StoredDocument.objects.filter(state=StoredDocument.State.PENDING)
               if row.created <= cutoff or records.owner_is_dead(row.owner)
               or (in_process and records.request_is_over(row.owner, markers))]
    report.examined = len(pending)
    if not pending:
        return report
    client = RegistryClient(registry_url, timeout=registry_timeout)
    try:
        known = client.get_documents(sorted({row.unique_id for row in pending}))
    except RegistryUnavailable as exc:
        report.error = str(exc)
        return report
    registered_keys = {(e.unique_id, (e.hash or "").lower()) for e in known
                       if e.repository_unique_id == repository_unique_id}
    confirmed = [row for row in pending if (row.unique_id, row.hash) in registered_keys]
    orphans = [row for row in pending if (row.unique_id, row.hash) not in registered_keys]
    records.mark_registered(confirmed)
    records.discard(orphans, storage)
    report.registered = [row.unique_id for row in confirmed]
    report.removed = [row.unique_id for row in orphans]
    return report


def run(config: ReconcileConfig, *, trigger: str) -> ReconcileReport:
    """Reconcile, then sweep; one log line with the counts (no uniqueIds: they identify a patient's
    documents).  The sweep runs even when the registry cannot be asked: it needs no registry."""
    started = time.monotonic()
    repository = config.repository
    report = reconcile(repository_unique_id=repository.repository_unique_id, registry_url=repository.registry_url,
                       storage=repository.storage, grace=config.grace,
                       registry_timeout=repository.registry_timeout)
    swept = sweep(spool_dirs=config.spool_dirs, storage=repository.storage, grace=config.grace.total_seconds())
    report.swept = swept.removed
    outcome = "registry-unavailable" if report.error else "success"
    log = logger.warning if report.error or swept.failed else logger.info
    log("transaction=reconcile trigger=%s outcome=%s examined=%d registered=%d removed=%d swept=%d "
        "sweep_failed=%d ms=%d%s", trigger, outcome, report.examined, len(report.registered), len(report.removed),
        report.swept, swept.failed, (time.monotonic() - started) * 1000,
        f' error="{report.error}"' if report.error else "")
    return report
