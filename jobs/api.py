"""The job queue's operations: plain functions, one transaction per write, no settings read here.

Callers (the worker command, actors' triggers, the admin) pass what the settings say: attempts, lease,
backoff.  ``now`` parameters exist so that tests (and callers with their own clock) need not sleep.

Concurrency:

- :func:`enqueue` de-duplicates on the partial unique index ``jobs_one_active_job_per_kind_key``: two
  concurrent enqueues of one (kind, key) insert at most one row, the loser reads the winner's job;
- :func:`claim` takes the oldest due job with ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL (workers
  never wait for each other); on SQLite, whose writers are serialised anyway, a conditional UPDATE
  (``... WHERE id = ? AND <still claimable>``) is the claim;
- :func:`complete` / :func:`fail` only change a job still held by the same claim (worker id and attempt
  number): a worker whose lease expired and whose job was claimed again cannot overwrite the new run.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from jobs.models import ACTIVE_STATES, WAITING_STATES, Job, JobState
from jobs.registry import Event, check_kind, subscribers

DEFAULT_MAX_ATTEMPTS = 8
DEFAULT_LEASE = timedelta(minutes=15)
MAX_KEY_LENGTH = 255
MAX_ERROR_LENGTH = 500
#: enqueue / claim race a concurrent writer at most this many times before giving up.
_RACE_TRIES = 5


@dataclass(frozen=True)
class Backoff:
    """Delay before the retry that follows failed attempt ``n``: ``base * 2**(n-1)`` seconds, at most ``cap``.

    "Equal jitter": half the delay is fixed, half random, so jobs that failed together (a repository
    outage) do not all come back at the same instant, and none comes back sooner than half the delay.
    """

    base: float = 30.0
    cap: float = 3600.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        exponential = min(self.cap, self.base * 2 ** max(0, min(attempt - 1, 62)))
        return exponential / 2 + (rng or random).uniform(0, exponential / 2)


def _check_enqueue(kind: str, payload: dict[str, Any], key: str | None, max_attempts: int, delay: float) -> None:
    check_kind(kind)
    if key is not None and (not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH):
        raise ValueError(f"job key must be None or a non-empty string of at most {MAX_KEY_LENGTH} characters")
    if not isinstance(payload, dict):
        raise ValueError("job payload must be a JSON object (a dict)")
    try:
        json.dumps(payload, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"job payload is not JSON: {exc}") from None
    if not isinstance(max_attempts, int) or max_attempts < 1:
        raise ValueError("max_attempts must be an integer >= 1")
    if delay < 0:
        raise ValueError("delay must be >= 0 seconds")


def active_job(kind: str, key: str) -> Job | None:
    """The queued, running or failed-awaiting-retry job of (kind, key), if any."""
    return Job.objects.filter(kind=kind, key=key, state__in=ACTIVE_STATES).first()


def enqueue(kind: str, payload: dict[str, Any] | None = None, key: str | None = None, *,
            max_attempts: int = DEFAULT_MAX_ATTEMPTS, delay: float = 0.0, now: datetime | None = None) -> Job:
    """Queue a job of ``kind`` (a dotted name; need not be registered in this process) to run after ``delay`` s.

    With a ``key``, at most one job per (kind, key) is active: if one is queued, running or waiting for
    a retry, that job is returned and nothing is added (its payload is kept).  A bad argument raises
    ValueError before anything is written.
    """
    payload = {} if payload is None else payload
    _check_enqueue(kind, payload, key, max_attempts, delay)
    run_after = (now or timezone.now()) + timedelta(seconds=delay)
    for _ in range(_RACE_TRIES):
        with transaction.atomic():
            if key is not None and (existing := active_job(kind, key)) is not None:
                return existing
            try:
                with transaction.atomic():  # a savepoint: the IntegrityError below leaves the outer one usable
                    return Job.objects.create(kind=kind, key=key, payload=payload, max_attempts=max_attempts,
                                              run_after=run_after)
            except IntegrityError:
                # A concurrent enqueue of the same (kind, key) committed first: its job is the one.
                if key is None:
                    raise
                if (existing := active_job(kind, key)) is not None:
                    return existing
                # ... and already finished: try again.
    raise RuntimeError(f"could not enqueue a {kind} job: (kind, key) kept changing under concurrent writers")


def announce(event: Event, payload: dict[str, Any], key: str | None = None, *,
             max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> list[Job]:
    """Queue a job of every kind subscribed to ``event``, with ``payload`` (one transaction).

    With a ``key`` (e.g. the MPPS SOP Instance UID), a second announcement of the same thing while its
    jobs are active adds nothing.  Nobody subscribed: nothing is written.
    """
    with transaction.atomic():
        return [enqueue(kind, payload, key, max_attempts=max_attempts) for kind in subscribers(event)]


def _claimable(now: datetime) -> Q:
    due = Q(state__in=WAITING_STATES, run_after__lte=now)
    orphaned = Q(state=JobState.RUNNING, locked_until__lt=now, attempts__lt=F("max_attempts"))
    return due | orphaned


def _bury_orphans_without_attempts(now: datetime) -> None:
    """A job whose worker died during its last attempt will not run again: dead, saying why."""
    Job.objects.filter(state=JobState.RUNNING, locked_until__lt=now, attempts__gte=F("max_attempts")).update(
        state=JobState.DEAD, finished_at=now, updated_at=now, locked_until=None,
        last_error="LeaseExpired: the worker did not finish the last attempt within its lease")


def claim(worker_id: str, kinds: Iterable[str] | None = None, *, lease: timedelta = DEFAULT_LEASE,
          now: datetime | None = None) -> Job | None:
    """Take the oldest due job (of ``kinds``, if given) for ``worker_id``, for ``lease``; None if none is due.

    Due: QUEUED or FAILED with ``run_after`` passed, or RUNNING with an expired lease (its worker died)
    and an attempt left.  Claiming counts an attempt.
    """
    if not worker_id:
        raise ValueError("claim needs a worker id")
    now = now or timezone.now()
    _bury_orphans_without_attempts(now)
    candidates = Job.objects.filter(_claimable(now))
    if kinds is not None:
        candidates = candidates.filter(kind__in=list(kinds))
    candidates = candidates.order_by("run_after", "id")
    if connection.features.has_select_for_update_skip_locked:
        candidates = candidates.select_for_update(skip_locked=True)
    for _ in range(_RACE_TRIES):
        with transaction.atomic():
            pk = candidates.values_list("pk", flat=True).first()
            if pk is None:
                return None
            taken = Job.objects.filter(_claimable(now), pk=pk).update(
                state=JobState.RUNNING, attempts=F("attempts") + 1, locked_by=worker_id[:200],
                locked_until=now + lease, updated_at=now)
            if taken:
                return Job.objects.get(pk=pk)
        # Another worker claimed that row between our SELECT and UPDATE (SQLite without IMMEDIATE): next one.
    return None


def _held(job: Job) -> Any:
    """The row of ``job`` if it is still held by the claim that returned ``job``."""
    return Job.objects.filter(pk=job.pk, state=JobState.RUNNING, locked_by=job.locked_by, attempts=job.attempts)


def complete(job: Job, *, now: datetime | None = None) -> bool:
    """Mark a claimed job SUCCEEDED.  False if the claim was lost (lease expired and claimed again)."""
    now = now or timezone.now()
    return bool(_held(job).update(state=JobState.SUCCEEDED, finished_at=now, updated_at=now, locked_until=None,
                                  last_error=""))


def fail(job: Job, error: str, *, backoff: Backoff = Backoff(), permanent: bool = False,
         now: datetime | None = None, rng: random.Random | None = None) -> JobState | None:
    """Record a failed attempt of a claimed job: FAILED (retried after a backoff) while attempts remain,
    else (or when ``permanent``) DEAD.  ``error`` must hold no patient data (see jobs.worker.describe_error).

    Returns the new state, or None if the claim was lost.
    """
    now = now or timezone.now()
    fields: dict[str, Any] = {"last_error": error[:MAX_ERROR_LENGTH], "updated_at": now, "locked_until": None}
    if permanent or job.attempts >= job.max_attempts:
        state = JobState.DEAD
        fields["finished_at"] = now
    else:
        state = JobState.FAILED
        fields["run_after"] = now + timedelta(seconds=backoff.delay(job.attempts, rng))
    return state if _held(job).update(state=state, **fields) else None


def retry_now(job_ids: Iterable[int], *, now: datetime | None = None) -> tuple[int, int]:
    """Queue FAILED and DEAD jobs to run at once (a DEAD job gets its attempts back).

    Returns (retried, skipped): a job is skipped when its (kind, key) already has another active job,
    which does the same work.
    """
    now = now or timezone.now()
    retried = skipped = 0
    for pk, state in Job.objects.filter(pk__in=list(job_ids), state__in=[JobState.FAILED, JobState.DEAD]
                                        ).values_list("pk", "state"):
        fields: dict[str, Any] = {"state": JobState.QUEUED, "run_after": now, "updated_at": now,
                                  "finished_at": None, "locked_until": None}
        if state == JobState.DEAD:
            fields["attempts"] = 0
        try:
            with transaction.atomic():
                retried += Job.objects.filter(pk=pk, state=state).update(**fields)
        except IntegrityError:
            skipped += 1
    return retried, skipped


def cancel(job_ids: Iterable[int], *, reason: str, now: datetime | None = None) -> int:
    """Make waiting jobs (QUEUED, or FAILED awaiting a retry) DEAD without running them; running jobs
    are left alone (their worker holds them).  ``reason`` (e.g. who cancelled) goes into last_error."""
    now = now or timezone.now()
    return Job.objects.filter(pk__in=list(job_ids), state__in=WAITING_STATES).update(
        state=JobState.DEAD, finished_at=now, updated_at=now, last_error=f"Cancelled: {reason}"[:MAX_ERROR_LENGTH])
