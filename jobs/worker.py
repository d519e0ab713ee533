"""Run claimed jobs through their handlers: :func:`run_one` (one step), :func:`run_forever` (the worker
command's loop: connection hygiene, and it outlives a database outage) and :func:`run_pending` (everything
due now; tests and ``xds_jobs_worker --once``).

Each job logs one line (logger ``jobs``)::

    job kind=imaging_source.publish_study id=12 state=failed attempt=1/8 ms=35 worker=host:123 error="..."

with no patient data: the payload and key are not logged, and the error is :func:`describe_error`'s.
The full traceback of a failure (whose message may quote patient data) is logged at DEBUG only.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from django.db import Error as DjangoDatabaseError
from django.db import close_old_connections

from jobs.api import DEFAULT_LEASE, Backoff, claim, complete, fail
from jobs.models import Job
from jobs.registry import JobError, PermanentJobError, handler_for

logger = logging.getLogger("jobs")

#: Waits between looks while the database is unreachable (restart, failover): 1 s doubling to 10 s, with
#: jitter, so a restarted PostgreSQL is not met by every worker at once, and the worker is back within
#: seconds of the database however long the outage was.
OUTAGE_BACKOFF = Backoff(base=1.0, cap=10.0)


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker claims and how it retries (built from settings by the command)."""

    worker_id: str = field(default_factory=default_worker_id)
    kinds: tuple[str, ...] | None = None  # None: every kind
    lease: timedelta = DEFAULT_LEASE
    backoff: Backoff = Backoff()


def describe_error(exc: BaseException) -> str:
    """The text ``Job.last_error`` keeps for ``exc``, free of patient data.

    A :class:`~jobs.registry.JobError`'s message is written for it; an OSError's ``strerror`` is the
    system's ("Connection refused").  Any other message may quote a patient's name or identifier, so
    only the class and the place it was raised (innermost frame) are kept.
    """
    name = type(exc).__name__
    if isinstance(exc, JobError):
        return f"{name}: {exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{name}: {exc.strerror}"
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        where = frames[-1]
        return f"{name} at {Path(where.filename).name}:{where.lineno} in {where.name}"
    return name


def run_one(config: WorkerConfig, *, now: datetime | None = None) -> Job | None:
    """Claim one due job and run it; returns the job as it ended (None if nothing was due).

    The handler's success completes the job; a failure is recorded by :func:`jobs.api.fail` (retried
    with backoff, or dead).  BaseExceptions other than Exception (KeyboardInterrupt, SystemExit) are not
    caught: the job stays RUNNING and is claimed again when its lease expires.
    """
    job = claim(config.worker_id, config.kinds, lease=config.lease, now=now)
    if job is None:
        return None
    started = time.monotonic()
    error = ""
    try:
        handler_for(job.kind)(job)
    except Exception as exc:  # noqa: BLE001 - every failure of a handler is recorded on its job
        error = describe_error(exc)
        logger.debug("job id=%d traceback", job.pk, exc_info=exc)
        state = fail(job, error, backoff=config.backoff, permanent=isinstance(exc, PermanentJobError), now=now)
    else:
        state = Job.State.SUCCEEDED if complete(job, now=now) else None
    if state is None:
        logger.warning("job kind=%s id=%d lost its claim (lease expired, claimed again): outcome not recorded",
                       job.kind, job.pk)
    logger.info('job kind=%s id=%d state=%s attempt=%d/%d ms=%d worker=%s%s', job.kind, job.pk,
                state or "lost", job.attempts, job.max_attempts, (time.monotonic() - started) * 1000,
                config.worker_id, f' error="{error}"' if error else "")
    job.refresh_from_db()
    return job


def run_pending(config: WorkerConfig | None = None, *, max_jobs: int | None = None) -> list[Job]:
    """Run jobs until none is due (or ``max_jobs`` ran); returns them in the order they ran.

    A failed job is due again only after its backoff, so this ends.
    """
    config = config or WorkerConfig()
    ran: list[Job] = []
    while max_jobs is None or len(ran) < max_jobs:
        job = run_one(config)
        if job is None:
            break
        ran.append(job)
    return ran


def run_forever(config: WorkerConfig, stop: threading.Event, *, poll: float, max_jobs: int | None = None,
                outage_backoff: Backoff = OUTAGE_BACKOFF) -> int:
    """The long-running worker's loop, until ``stop`` is set (or ``max_jobs`` ran); returns the jobs run.

    Connection hygiene around every claim and job: :func:`django.db.close_old_connections` before (drops a
    connection the database closed, or one past ``CONN_MAX_AGE``; with ``CONN_HEALTH_CHECKS`` the next
    query checks it first) and after (a connection a failure left unusable is not kept).  A database error
    (the server restarting, unreachable) does not end the process, which would only make ``make run``'s
    supervisor restart it: one line is logged when the outage begins and one when it ends, and the loop
    waits :data:`OUTAGE_BACKOFF` between attempts.  A job whose outcome could not be recorded stays
    RUNNING and is claimed again when its lease expires.

    Must run in autocommit mode (a process of its own, or a transactional test): closing connections
    inside a test's transaction would end it.
    """
    processed = 0
    outage_since: float | None = None
    failures = 0
    while not stop.is_set() and (max_jobs is None or processed < max_jobs):
        close_old_connections()
        try:
            job = run_one(config)
        except DjangoDatabaseError as exc:
            failures += 1
            if outage_since is None:
                outage_since = time.monotonic()
                logger.warning("jobs worker=%s database unavailable (%s); retrying with backoff up to %gs",
                               config.worker_id, describe_error(exc), outage_backoff.cap)
            stop.wait(outage_backoff.delay(failures))
            continue
        finally:
            close_old_connections()
        if outage_since is not None:
            logger.warning("jobs worker=%s database available again after %.1fs (%d failed attempts)",
                           config.worker_id, time.monotonic() - outage_since, failures)
            outage_since, failures = None, 0
        if job is None:
            stop.wait(poll)
            continue
        processed += 1
    return processed
