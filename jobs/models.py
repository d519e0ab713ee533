"""The job table: one row per task to run (and, once run, its outcome)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class JobState(models.TextChoices):
    """Life cycle: QUEUED -> RUNNING (claimed under a lease) -> SUCCEEDED, or -> FAILED (the attempt
    failed; claimed again at ``run_after``, after a backoff) ... -> DEAD (no attempt left, an unknown kind,
    a permanent error, or cancelled).  A RUNNING job whose lease expired (its worker died) is claimed again.
    """

    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"
    DEAD = "dead", "dead"


#: Jobs that will still run: at most one of them per (kind, key).  FAILED counts: a job waiting for its
#: retry is still *the* job of its key; a second one would run the same task twice.
ACTIVE_STATES = (JobState.QUEUED, JobState.RUNNING, JobState.FAILED)
#: Jobs a worker may claim once ``run_after`` has passed (and RUNNING ones whose lease expired).
WAITING_STATES = (JobState.QUEUED, JobState.FAILED)


class Job(models.Model):
    """A unit of work of a registered ``kind``, run by a worker (``manage.py xds_jobs_worker``)."""

    State = JobState

    kind = models.CharField(max_length=100, help_text="registered job kind, e.g. imaging_source.publish_study")
    key = models.CharField(max_length=255, null=True, blank=True,
                           help_text="de-duplication key: at most one active job per (kind, key); "
                                     "empty: no de-duplication")
    payload = models.JSONField(default=dict, blank=True, help_text="the handler's arguments")
    state = models.CharField(max_length=16, choices=JobState.choices, default=JobState.QUEUED)
    attempts = models.PositiveIntegerField(default=0, help_text="attempts started so far")
    max_attempts = models.PositiveIntegerField(default=1)
    run_after = models.DateTimeField(default=timezone.now, help_text="not claimed before this time")
    last_error = models.CharField(max_length=500, blank=True, default="",
                                  help_text="error class and a message free of patient data")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    locked_by = models.CharField(max_length=200, blank=True, default="", help_text="worker running the job")
    locked_until = models.DateTimeField(null=True, blank=True,
                                        help_text="lease: after this a RUNNING job is claimed again")

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["state", "run_after"], name="jobs_claim_idx")]
        constraints = [
            # A partial unique index (PostgreSQL and SQLite): enqueue's de-duplication relies on it under
            # concurrency.  NULL keys are distinct in a unique index: keyless jobs are never de-duplicated.
            models.UniqueConstraint(fields=["kind", "key"], condition=models.Q(state__in=ACTIVE_STATES),
                                    name="jobs_one_active_job_per_kind_key"),
            models.CheckConstraint(condition=models.Q(max_attempts__gte=1), name="jobs_max_attempts_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk} [{self.state}]"

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES
