"""A real job-worker process with one extra job kind, ``tests.echo``, for tests that run the worker against a
database they break (tests/jobs/test_worker_database_outage.py, tests/faults/test_database_restart.py).

``python -m tests.jobs.echo_worker_process work [xds_jobs_worker options...]`` runs ``manage.py
xds_jobs_worker`` in this process with ``tests.echo`` registered, as an actor's AppConfig.ready() would register
its kinds (the worker runs only the kinds its process knows); the handler does nothing but succeed.
``python -m tests.jobs.echo_worker_process enqueue N`` queues N ``tests.echo`` jobs and prints their ids.
The database is DATABASE_URL's.
"""

from __future__ import annotations

import os
import sys

ECHO = "tests.echo"


def main(argv: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from jobs.api import enqueue
    from jobs.models import Job
    from jobs.registry import register

    def echo(job: Job) -> None:
        return None

    if argv[0] == "enqueue":
        ids = [enqueue(ECHO, {"n": n}).pk for n in range(int(argv[1]))]
        print("enqueued " + " ".join(map(str, ids)), flush=True)
    elif argv[0] == "work":
        register(ECHO, echo)
        call_command("xds_jobs_worker", *argv[1:])
    else:
        raise SystemExit(f"unknown command {argv[0]!r}: enqueue N | work [options]")


if __name__ == "__main__":
    main(sys.argv[1:])
