"""Concurrent enqueues and claims: the database decides (one job per active key; a job to one worker).

Runs on PostgreSQL only, like tests/xds_registry/test_register_race.py: the in-memory shared-cache SQLite
test database answers a second writer with SQLITE_LOCKED at once, so two concurrent transactions cannot
be exercised there (production SQLite serialises writers with BEGIN IMMEDIATE + a busy timeout).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import pytest
from django.db import connection

from jobs.api import claim, enqueue
from jobs.models import Job

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql",
                       reason="needs a database with concurrent writers (see module docstring)"),
]
T = TypeVar("T")
ROUNDS = 8
THREADS = 6


def together(work: Callable[[int], T], threads: int = THREADS) -> list[T]:
    """Run ``work(i)`` in ``threads`` threads released at the same instant; their results."""
    barrier = threading.Barrier(threads)
    results: list[T] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        try:
            barrier.wait()
            result = work(i)
            with lock:
                results.append(result)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)
        finally:
            connection.close()

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(30)
    assert not errors, errors
    return results


def test_concurrent_enqueues_of_one_key_make_one_job() -> None:
    for round_ in range(ROUNDS):
        key = f"1.2.840.99.{round_}"
        ids = together(lambda i, key=key: enqueue("tests.record", {"by": i}, key=key).pk)
        assert len(ids) == THREADS and len(set(ids)) == 1, ids
    assert Job.objects.count() == ROUNDS


def test_concurrent_workers_never_claim_the_same_job() -> None:
    for n in range(30):
        enqueue("tests.record", {"n": n})

    def drain(i: int) -> list[int]:
        mine = []
        while (job := claim(f"worker-{i}")) is not None:
            mine.append(job.pk)
        return mine

    claimed = [pk for mine in together(drain) for pk in mine]
    assert sorted(claimed) == sorted(Job.objects.values_list("pk", flat=True))
    assert Job.objects.filter(state=Job.State.RUNNING, attempts=1).count() == 30
