"""A real job-worker process for tests/jobs/management/test_xds_jobs_worker.py.

``python -m tests.jobs.worker_process JOBS SECONDS [worker options...]``: migrates the database named by
DATABASE_URL (a fresh SQLite file of the test), queues JOBS ``tests.slow`` jobs whose handler prints
``handler started <n>`` then takes SECONDS, runs ``manage.py xds_jobs_worker`` with the options, and once
the worker returns prints ``states <n>=<state> ...``.  The handler is registered here, as an actor's
AppConfig.ready() would: it is a test kind, and a worker knows the kinds its process registered.
"""

from __future__ import annotations

import os
import sys
import time


def main(argv: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from jobs.api import enqueue
    from jobs.models import Job
    from jobs.registry import register

    count, seconds = int(argv[0]), float(argv[1])

    def slow(job: Job) -> None:
        print(f"handler started {job.payload['n']}", flush=True)
        time.sleep(seconds)

    register("tests.slow", slow)
    call_command("migrate", verbosity=0)
    for n in range(count):
        enqueue("tests.slow", {"n": n})
    call_command("xds_jobs_worker", *argv[2:])
    print("states " + " ".join(f"{j.payload['n']}={j.state}" for j in Job.objects.order_by("id")), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
