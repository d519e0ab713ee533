"""Remove documents left pending by a crash between store and ITI-42 registration.

Run at start-up by ``make run``'s supervisor and whenever an operator wants:
``manage.py xds_repository_reconcile [--grace SECONDS]``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from xds_repository.conf import repository_config
from xds_repository.reconcile import reconcile


class Command(BaseCommand):
    help = ("Settle pending repository documents (stored, ITI-42 never confirmed): ask the registry (ITI-18 "
            "GetDocuments), mark registered those it knows, remove the others. Rows of processes of this host "
            "that no longer run are settled at once; other rows once older than --grace seconds.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--grace", type=float, default=900.0,
            help="Pending documents whose writing process cannot be checked (another host) are settled once "
                 "older than this many seconds (default 900: longer than a live ITI-41 takes to store and "
                 "register). 0 is safe only when no repository process is running anywhere.")

    def handle(self, *args: Any, grace: float, **options: Any) -> None:
        if grace < 0:
            raise CommandError("--grace must be >= 0")
        config = repository_config()
        report = reconcile(repository_unique_id=config.repository_unique_id, registry_url=config.registry_url,
                           storage=config.storage, grace=timedelta(seconds=grace))
        if report.error:
            # Not fatal (make run calls this before starting the web server): nothing was
            # removed, the pending documents wait for the next run.
            self.stderr.write(f"registry not available, nothing removed ({report.examined} pending): {report.error}")
            return
        self.stdout.write(f"pending examined: {report.examined}; confirmed registered: {len(report.registered)}; "
                          f"removed: {len(report.removed)}")
