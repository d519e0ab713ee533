"""The repository's periodic job ``xds_repository.reconcile``: reconcile pending documents and sweep
temporary files every ``XDS_REPOSITORY_RECONCILE_INTERVAL`` seconds, run by the job worker.

The job reschedules itself: each run queues the next one for the start of the next period
(``floor(now / interval) + 1``, on the wall clock), keyed by that start time.  Aligning runs on the
clock makes the key of "the next run" the same for everyone who computes it, so the queue's
(kind, key) de-duplication keeps a single chain even when two processes start one at once or a
retried run and the regular one both reschedule.

:func:`ensure_scheduled` starts the chain when no run is queued (a fresh database, a chain broken by
a run that failed to reschedule on every attempt); it is called at start-up by
``manage.py xds_repository_reconcile``, which ``make run``'s supervisor runs before it starts the web
server and the job worker (deployments without ``make run`` run that command at start-up too).
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime

from django.utils import timezone

from jobs.api import enqueue
from jobs.models import ACTIVE_STATES, Job
from jobs.registry import JobError
from xds_repository import reconcile

logger = logging.getLogger(__name__)

RECONCILE = "xds_repository.reconcile"
#: Each attempt reschedules the chain, so the chain ends only if every attempt fails to (the database
#: away for the whole backoff sequence); a run killed with its worker is claimed again after its lease.
MAX_ATTEMPTS = 8


def next_run(now: datetime, interval: float) -> datetime:
    """Start of the period after the one ``now`` falls in (UTC, aligned on the epoch)."""
    if interval <= 0:
        raise ValueError("the reconcile interval must be > 0 seconds")
    slot = math.floor(now.timestamp() / interval) + 1
    return datetime.fromtimestamp(slot * interval, tz=UTC)


def schedule_next(interval: float, *, now: datetime | None = None) -> Job:
    """Queue the run of the next period (or return the one already queued for it)."""
    now = now or timezone.now()
    when = next_run(now, interval)
    return enqueue(RECONCILE, {}, key=when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), max_attempts=MAX_ATTEMPTS,
                   delay=max(0.0, (when - now).total_seconds()), now=now)


def ensure_scheduled(interval: float, *, now: datetime | None = None) -> Job:
    """The active reconcile job, queued for the next period if there is none."""
    existing = Job.objects.filter(kind=RECONCILE, state__in=ACTIVE_STATES).order_by("run_after").first()
    return existing if existing is not None else schedule_next(interval, now=now)


def run_reconcile(job: Job) -> reconcile.ReconcileReport:
    """The handler: one reconcile + sweep with the current settings, then the next run is queued.

    The next run is queued even when this one fails (in ``finally``), so the chain outlives errors; a
    registry that cannot be asked is no failure of the job (nothing is removed, the next run asks again).
    """
    from xds_repository.conf import reconcile_config  # settings read per run: the worker outlives changes

    config = reconcile_config()
    try:
        return reconcile.run(config, trigger="job")
    except Exception as exc:
        raise JobError(f"reconcile failed: {type(exc).__name__}") from exc
    finally:
        schedule_next(config.interval)
