"""Run the job worker: claim due jobs, run their handlers, retry failures with backoff (one process).

A database outage does not end it (one log line when it begins, one when it ends; see
:func:`jobs.worker.run_forever`).  SIGTERM / SIGINT stop it after the job in hand is finished (a job cut
short by SIGKILL is claimed again once its lease, ``XDS_JOBS_LEASE``, expires).  ``--once`` runs what is due
and exits; ``--max-jobs N`` stops after N jobs.  Several workers may run at once, on one or several hosts.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from atna.activity import started
from jobs.api import Backoff
from jobs.registry import check_kind, registered_kinds
from jobs.worker import WorkerConfig, default_worker_id, run_forever, run_one

logger = logging.getLogger("jobs")


class Command(BaseCommand):
    help = "Run the job worker (publication jobs and every other queued task); stops cleanly on SIGTERM."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--once", action="store_true", help="run the jobs due now, then exit")
        parser.add_argument("--max-jobs", type=int, default=None, help="exit after this many jobs")
        parser.add_argument("--kind", action="append", default=[], help="only jobs of this kind (repeatable)")
        parser.add_argument("--poll", type=float, default=None,
                            help="override XDS_JOBS_POLL_INTERVAL (seconds between looks when idle)")
        parser.add_argument("--worker-id", default=None, help="name in Job.locked_by (default host:pid)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            kinds = tuple(check_kind(k) for k in options["kind"]) or None
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if options["max_jobs"] is not None and options["max_jobs"] < 1:
            raise CommandError("--max-jobs must be >= 1")
        poll = settings.XDS_JOBS_POLL_INTERVAL if options["poll"] is None else options["poll"]
        config = WorkerConfig(worker_id=options["worker_id"] or default_worker_id(), kinds=kinds,
                              lease=timedelta(seconds=settings.XDS_JOBS_LEASE),
                              backoff=Backoff(settings.XDS_JOBS_BACKOFF_BASE, settings.XDS_JOBS_BACKOFF_CAP))
        once, max_jobs = options["once"], options["max_jobs"]

        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
        self.stdout.write(f"jobs worker {config.worker_id}; kinds {', '.join(kinds or registered_kinds())}; "
                          f"poll {poll}s; lease {settings.XDS_JOBS_LEASE}s")
        self.stdout.flush()
        started("jobs-worker")  # Application Activity start/stop (atna.activity)
        processed = 0
        try:
            if once:
                # Inside one call (tests, cron): a database error is the caller's to see.
                while max_jobs is None or processed < max_jobs:
                    if stop.is_set() or run_one(config) is None:
                        break
                    processed += 1
            else:
                processed = run_forever(config, stop, poll=poll, max_jobs=max_jobs)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.stdout.write(f"jobs worker stopped after {processed} job(s)")
