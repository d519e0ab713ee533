"""The audit trail's periodic jobs, run by the job worker, and the settings they read (the edge).

* ``atna.chain`` every XDS_AUDIT_CHAIN_INTERVAL seconds: chain the new records, anchor the head when
  XDS_AUDIT_ANCHOR_INTERVAL has passed (:mod:`atna.chain`);
* ``atna.ship_syslog`` at the same pace, when XDS_AUDIT_SYSLOG is set: send them (:mod:`atna.syslog_jobs`);
* ``atna.prune`` daily: delete records older than XDS_AUDIT_RETENTION_DAYS (prune anchor), and this app's own
  finished jobs older than a day (a job every few seconds would otherwise fill the job table).

Each job queues its next run on the wall clock's next period, keyed by that time (as
``xds_repository.reconcile_jobs``): the queue's (kind, key) de-duplication keeps one chain per kind however
many processes start one.  :func:`ensure_scheduled` starts the chains: ``manage.py xds_audit schedule`` at
start-up (``make run``'s supervisor runs it for every site; a deployment without ``make run`` runs it once per
start, as ``xds_repository_reconcile``), and every chain run after its own, so that a kind whose chain broke
(every attempt failed) or that was switched on later (XDS_AUDIT_SYSLOG) is queued again within seconds.
"""

from __future__ import annotations

import logging
import math
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.utils import timezone

from atna import chain
from atna.syslog_jobs import ship_pending
from jobs.api import enqueue
from jobs.models import ACTIVE_STATES, Job, JobState
from jobs.registry import JobError, register
from xds_core import syslog
from xds_core.audit_xml import AuditSource

logger = logging.getLogger(__name__)

CHAIN = "atna.chain"
SHIP = "atna.ship_syslog"
PRUNE = "atna.prune"
KINDS = (CHAIN, SHIP, PRUNE)
MAX_ATTEMPTS = 8
PRUNE_INTERVAL = 86400.0
#: Finished jobs of this app older than this are deleted by the daily prune.
KEEP_FINISHED_JOBS = timedelta(days=1)


@dataclass(frozen=True)
class TrailConfig:
    """XDS_AUDIT_* as the trail's code needs them."""

    enabled: bool
    source: AuditSource
    key_file: Path
    anchor_file: Path
    chain_interval: float
    anchor_interval: timedelta
    syslog: str
    retention: timedelta

    @property
    def unchained_grace(self) -> timedelta:
        """How long a record may wait for the chainer before ``verify`` reports it (many missed runs)."""
        return timedelta(seconds=max(300.0, 20 * self.chain_interval))


def trail_config() -> TrailConfig:
    """The settings (read per call: the worker outlives changes of the environment file)."""
    from django.conf import settings

    source_id = settings.XDS_AUDIT_SOURCE_ID or f"{settings.XDS_SITE_KEY}@{socket.gethostname()}"
    return TrailConfig(
        enabled=settings.XDS_AUDIT, source=AuditSource(source_id, settings.XDS_AUDIT_ENTERPRISE_SITE_ID),
        key_file=Path(settings.XDS_AUDIT_KEY_FILE), anchor_file=Path(settings.XDS_AUDIT_ANCHOR_FILE),
        chain_interval=float(settings.XDS_AUDIT_CHAIN_INTERVAL),
        anchor_interval=timedelta(seconds=settings.XDS_AUDIT_ANCHOR_INTERVAL), syslog=settings.XDS_AUDIT_SYSLOG,
        retention=timedelta(days=settings.XDS_AUDIT_RETENTION_DAYS))


def syslog_sender(url: str) -> syslog.Sender:
    """The sender to ``url``; TLS with this node's client context (mutual TLS, ITI-19)."""
    destination = syslog.Destination.parse(url)
    context = None
    if destination.transport is syslog.Transport.TLS:
        from atna.tls import node_client_context

        context = node_client_context()
    return syslog.Sender(destination, context=context)


# ---------------------------------------------------------------------------------- scheduling


def next_run(now: datetime, interval: float) -> datetime:
    slot = math.floor(now.timestamp() / interval) + 1
    return datetime.fromtimestamp(slot * interval, tz=UTC)


def _key(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def schedule_next(kind: str, interval: float, *, now: datetime | None = None, current: Job | None = None) -> Job:
    """Queue the run of the next period (or return the one already queued for it).  ``current``: the job
    that is running -- a run that started early in its own period (retried, or moved by hand) queues the
    period after, not itself."""
    now = now or timezone.now()
    when = next_run(now, interval)
    if current is not None and current.key == _key(when):
        when += timedelta(seconds=interval)
    return enqueue(kind, {}, key=_key(when), max_attempts=MAX_ATTEMPTS,
                   delay=max(0.0, (when - now).total_seconds()), now=now)


def _interval(kind: str, config: TrailConfig) -> float:
    return PRUNE_INTERVAL if kind == PRUNE else config.chain_interval


def ensure_scheduled(config: TrailConfig | None = None) -> list[Job]:
    """The active job of each of the trail's kinds, queued for its next period where there is none."""
    config = config or trail_config()
    kinds = [CHAIN, PRUNE] + ([SHIP] if config.syslog else [])
    out = []
    for kind in kinds:
        existing = Job.objects.filter(kind=kind, state__in=ACTIVE_STATES).order_by("run_after").first()
        out.append(existing if existing is not None else schedule_next(kind, _interval(kind, config)))
    return out


# ---------------------------------------------------------------------------------- handlers


def run_chain(job: Job) -> chain.ChainResult:
    """Chain the new records, anchor the head when due; the next run is queued whatever happens."""
    config = trail_config()
    try:
        key = chain.load_key(config.key_file, create=chain.state().head_seq == 0)
        result = chain.chain_pending(key)
        chain.anchor_if_due(config.anchor_file, config.anchor_interval)
        return result
    except chain.AuditKeyError as exc:
        logger.error("audit trail: %s", exc)  # loud, every run, until someone puts the key back
        raise JobError(str(exc)) from exc
    except chain.ChainRaced as exc:
        raise JobError(str(exc)) from exc
    finally:
        schedule_next(CHAIN, config.chain_interval, current=job)
        ensure_scheduled(config)


def run_ship(job: Job) -> object:
    """Send the trail to XDS_AUDIT_SYSLOG; an unreachable collector is recorded on the cursor, not a failure."""
    config = trail_config()
    if not config.syslog:
        return None  # syslog switched off since the job was queued: the chain of this kind ends here
    try:
        return ship_pending(syslog_sender(config.syslog))
    except syslog.SyslogError as exc:
        raise JobError(str(exc)) from exc
    finally:
        schedule_next(SHIP, config.chain_interval, current=job)


def run_prune(job: Job) -> chain.PruneResult:
    """Delete records past the retention (prune anchor), and this app's finished jobs older than a day."""
    config = trail_config()
    now = timezone.now()
    try:
        result = chain.prune(config.anchor_file, older_than=now - config.retention, now=now)
        if result.deleted:
            logger.info("audit trail: retention pruned %d records; the chain now starts at seq %d",
                        result.deleted, result.start_seq)
        Job.objects.filter(kind__in=KINDS, state=JobState.SUCCEEDED,
                           finished_at__lt=now - KEEP_FINISHED_JOBS).delete()
        return result
    except chain.PruneError as exc:
        raise JobError(str(exc)) from exc
    finally:
        schedule_next(PRUNE, PRUNE_INTERVAL, current=job)


def register_kinds() -> None:
    register(CHAIN, run_chain)
    register(SHIP, run_ship)
    register(PRUNE, run_prune)


def start_trail() -> None:
    """At start-up of every process (``AtnaConfig.ready``): register the job kinds, and install the audit sink
    when XDS_AUDIT is on -- not under pytest, where the audit seam keeps its default (no sink; tests install
    the trail themselves), as for the portal's journal."""
    import sys

    from atna import trail

    register_kinds()
    config = trail_config()
    if config.enabled and "pytest" not in sys.modules:
        trail.install(config.source)
