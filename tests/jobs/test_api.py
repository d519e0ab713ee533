"""The job queue's operations on the real database: de-duplication, claim order, leases, retries."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from django.db import IntegrityError, transaction

from jobs.api import Backoff, cancel, claim, complete, enqueue, fail, retry_now
from jobs.models import Job

pytestmark = pytest.mark.django_db

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


def test_enqueue_with_an_active_key_returns_that_job_instead_of_adding_a_second() -> None:
    first = enqueue("tests.record", {"n": 1}, key="1.2.3")
    again = enqueue("tests.record", {"n": 2}, key="1.2.3")
    assert again.pk == first.pk and again.payload == {"n": 1}
    assert enqueue("tests.unreachable", {}, key="1.2.3").pk != first.pk  # the key is per kind
    assert enqueue("tests.record", {}, key="1.2.4").pk != first.pk
    assert enqueue("tests.record", {}).pk != enqueue("tests.record", {}).pk  # keyless: never de-duplicated
    assert Job.objects.count() == 5


def test_a_job_waiting_for_its_retry_still_holds_its_key_but_a_finished_one_does_not() -> None:
    enqueue("tests.record", key="k", max_attempts=3, now=T0)
    job = claim("w", now=T0)
    assert fail(job, "JobError: x", now=T0) == Job.State.FAILED
    assert enqueue("tests.record", key="k").pk == job.pk
    again = claim("w", now=T0 + seconds(3600))
    assert complete(again)
    assert enqueue("tests.record", key="k").pk != job.pk


def test_the_database_itself_refuses_a_second_active_job_of_a_kind_and_key() -> None:
    enqueue("tests.record", key="k")
    with pytest.raises(IntegrityError), transaction.atomic():
        Job.objects.create(kind="tests.record", key="k", max_attempts=1)
    Job.objects.create(kind="tests.record", key="k", max_attempts=1, state=Job.State.SUCCEEDED)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kind": "Not A Kind"}, "dotted lower-case"),
    ({"kind": "nodots"}, "dotted lower-case"),
    ({"payload": {"when": datetime(2030, 1, 1)}}, "not JSON"),
    ({"payload": ["a", "list"]}, "JSON object"),
    ({"key": ""}, "non-empty"),
    ({"key": "k" * 256}, "at most 255"),
    ({"max_attempts": 0}, "max_attempts"),
    ({"delay": -1}, "delay"),
])
def test_a_bad_enqueue_is_refused_clearly_and_writes_nothing(kwargs, message) -> None:
    arguments = {"kind": "tests.record", "payload": {}, **kwargs}
    with pytest.raises(ValueError, match=message):
        enqueue(arguments.pop("kind"), **arguments)
    assert not Job.objects.exists()


def test_claim_takes_the_oldest_due_job_first_and_none_before_its_run_after() -> None:
    later = enqueue("tests.record", {"n": "later"}, delay=60, now=T0)
    first = enqueue("tests.record", {"n": "first"}, now=T0)
    second = enqueue("tests.record", {"n": "second"}, now=T0 + seconds(1))
    now = T0 + seconds(2)
    claimed = claim("worker-a", lease=seconds(300), now=now)
    assert claimed.pk == first.pk
    assert (claimed.state, claimed.attempts, claimed.locked_by) == (Job.State.RUNNING, 1, "worker-a")
    assert claimed.locked_until == now + seconds(300)
    assert claim("worker-a", now=now).pk == second.pk
    assert claim("worker-a", now=now) is None  # "later" is not due
    assert claim("worker-a", now=T0 + seconds(60)).pk == later.pk


def test_claim_can_be_limited_to_some_kinds() -> None:
    enqueue("tests.record", now=T0)
    other = enqueue("tests.unreachable", now=T0)
    assert claim("w", kinds=["tests.unreachable"], now=T0).pk == other.pk
    assert claim("w", kinds=["tests.unreachable"], now=T0) is None


def test_a_job_whose_lease_expired_is_claimed_again_and_its_first_worker_can_no_longer_finish_it() -> None:
    enqueue("tests.record", now=T0)
    first = claim("worker-a", lease=seconds(30), now=T0)
    assert claim("worker-b", now=T0 + seconds(29)) is None  # worker-a still owns it
    second = claim("worker-b", lease=seconds(30), now=T0 + seconds(31))  # worker-a died
    assert second.pk == first.pk and second.attempts == 2 and second.locked_by == "worker-b"
    assert complete(first) is False  # the late worker-a records nothing
    assert fail(first, "JobError: late") is None
    assert complete(second) is True
    second.refresh_from_db()
    assert second.state == Job.State.SUCCEEDED and second.finished_at is not None


def test_a_lease_that_expires_on_the_last_attempt_makes_the_job_dead() -> None:
    job = enqueue("tests.record", max_attempts=1, now=T0)
    claim("worker-a", lease=seconds(30), now=T0)
    assert claim("worker-b", now=T0 + seconds(31)) is None
    job.refresh_from_db()
    assert job.state == Job.State.DEAD and job.last_error.startswith("LeaseExpired")


def test_failed_attempts_come_back_after_a_growing_backoff_then_the_job_is_dead() -> None:
    job = enqueue("tests.unreachable", max_attempts=3, now=T0)
    backoff = Backoff(base=10, cap=15)
    attempt = claim("w", now=T0)
    assert fail(attempt, "JobError: unreachable", backoff=backoff, now=T0) == Job.State.FAILED
    job.refresh_from_db()
    assert T0 + seconds(5) <= job.run_after <= T0 + seconds(10)
    assert claim("w", now=T0 + seconds(4.9)) is None

    attempt = claim("w", now=T0 + seconds(10))
    assert attempt.attempts == 2
    assert fail(attempt, "JobError: unreachable", backoff=backoff, now=T0 + seconds(10)) == Job.State.FAILED
    job.refresh_from_db()
    assert T0 + seconds(10 + 7.5) <= job.run_after <= T0 + seconds(10 + 15)  # 20 s, capped at 15

    attempt = claim("w", now=T0 + seconds(60))
    assert fail(attempt, "JobError: unreachable", backoff=backoff, now=T0 + seconds(60)) == Job.State.DEAD
    job.refresh_from_db()
    assert (job.state, job.attempts, job.last_error) == (Job.State.DEAD, 3, "JobError: unreachable")
    assert job.finished_at == T0 + seconds(60) and job.locked_until is None
    assert claim("w", now=T0 + seconds(100000)) is None


def test_backoff_doubles_per_attempt_up_to_its_cap_with_jitter() -> None:
    backoff, rng = Backoff(base=10, cap=100), random.Random(7)
    for attempt, full in [(1, 10), (2, 20), (3, 40), (4, 80), (5, 100), (500, 100)]:
        assert full / 2 <= backoff.delay(attempt, rng) <= full
    assert len({round(backoff.delay(3, rng), 6) for _ in range(5)}) > 1  # jitter


def test_a_permanent_failure_makes_the_job_dead_at_once() -> None:
    enqueue("tests.refused", max_attempts=5, now=T0)
    attempt = claim("w", now=T0)
    assert fail(attempt, "PermanentJobError: bad payload", permanent=True, now=T0) == Job.State.DEAD


def test_retry_now_queues_failed_and_dead_jobs_at_once_unless_their_key_is_active_again() -> None:
    failed = enqueue("tests.unreachable", key="a", max_attempts=5, now=T0)
    fail(claim("w", now=T0), "JobError: x", now=T0)
    dead = enqueue("tests.unreachable", key="b", max_attempts=1, now=T0)
    fail(claim("w", now=T0), "JobError: x", now=T0)
    superseded = enqueue("tests.unreachable", key="c", max_attempts=1, now=T0)
    fail(claim("w", now=T0), "JobError: x", now=T0)
    successor = enqueue("tests.unreachable", key="c", now=T0)
    done = enqueue("tests.record", now=T0)
    complete(claim("w", kinds=["tests.record"], now=T0))

    later = T0 + seconds(1)
    assert retry_now([failed.pk, dead.pk, superseded.pk, successor.pk, done.pk], now=later) == (2, 1)
    states = {j.pk: (j.state, j.attempts, j.run_after) for j in Job.objects.all()}
    assert states[failed.pk] == (Job.State.QUEUED, 1, later)  # keeps its attempts: it was mid-retry
    assert states[dead.pk] == (Job.State.QUEUED, 0, later)  # a fresh set of attempts
    assert states[superseded.pk][0] == Job.State.DEAD
    assert states[successor.pk][0] == Job.State.QUEUED and states[done.pk][0] == Job.State.SUCCEEDED


def test_cancel_makes_waiting_jobs_dead_and_leaves_running_ones_to_their_worker() -> None:
    queued = enqueue("tests.record", now=T0 + seconds(1))
    running = enqueue("tests.record", now=T0)
    claim("w", now=T0)
    assert cancel([queued.pk, running.pk], reason="by alice (admin)") == 1
    queued.refresh_from_db()
    running.refresh_from_db()
    assert (queued.state, queued.last_error) == (Job.State.DEAD, "Cancelled: by alice (admin)")
    assert running.state == Job.State.RUNNING
