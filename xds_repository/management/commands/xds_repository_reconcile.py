"""Settle documents left pending between store and ITI-42 registration, sweep dead writers' temporary
files, and make sure the periodic reconcile job is queued.

Run at start-up by ``make run``'s supervisor and whenever an operator wants:
``manage.py xds_repository_reconcile [--grace SECONDS]``.  Pending rows (and temporary files) of
processes of this host that no longer run are settled at once, so with the services stopped one run
settles everything.  Prints the counts: examined / registered / removed / swept.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from xds_repository import reconcile
from xds_repository.conf import reconcile_config
from xds_repository.reconcile_jobs import ensure_scheduled


class Command(BaseCommand):
    help = ("Settle pending repository documents (stored, ITI-42 never confirmed): ask the registry (ITI-18 "
            "GetDocuments), mark registered those it knows, remove the others; remove the temporary and MTOM "
            "spill files of dead processes. Rows and files of processes of this host that no longer run are "
            "settled at once; others once older than --grace seconds. Also queues the periodic reconcile job "
            "(XDS_REPOSITORY_RECONCILE_INTERVAL) if none is queued.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--grace", type=float, default=900.0,
            help="Pending documents whose writing process cannot be checked (another host) are settled once "
                 "older than this many seconds (default 900: longer than a live ITI-41 takes to store and "
                 "register). 0 is safe only when no repository process is running anywhere.")

    def handle(self, *args: Any, grace: float, **options: Any) -> None:
        if grace < 0:
            raise CommandError("--grace must be >= 0")
        config = reconcile_config(grace=grace)
        report = reconcile.run(config, trigger="command")
        counts = (f"pending examined: {report.examined}; confirmed registered: {len(report.registered)}; "
                  f"removed: {len(report.removed)}; temporary files swept: {report.swept}")
        try:
            ensure_scheduled(config.interval)
        except DatabaseError as exc:  # not fatal: the next start (or run of this command) queues it
            self.stderr.write(f"could not queue the periodic reconcile job: {type(exc).__name__}")
        if report.error:
            # Not fatal (make run calls this before starting the web server): nothing was
            # removed, the pending documents wait for the next run.
            self.stderr.write(f"registry not available, nothing removed ({counts}): {report.error}")
            return
        self.stdout.write(counts)
