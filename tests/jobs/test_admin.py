"""Admin: jobs listed by state and kind, searched by key, read-only; "retry now" and "cancel" actions."""

from __future__ import annotations

import pytest
from django.urls import reverse

from jobs.api import claim, enqueue, fail
from jobs.models import Job

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:jobs_job_changelist"


def _dead(key: str) -> Job:
    job = enqueue("tests.unreachable", key=key, max_attempts=1)
    fail(claim("w", kinds=["tests.unreachable"]), "JobError: repository unreachable")
    job.refresh_from_db()
    assert job.state == Job.State.DEAD
    return job


def _action(admin_client, action: str, jobs: list[Job]):
    return admin_client.post(reverse(CHANGELIST), {"action": action, "_selected_action": [j.pk for j in jobs]},
                             follow=True)


def test_the_list_filters_by_state_and_kind_and_searches_by_key(admin_client) -> None:
    _dead("1.2.840.99.1")
    enqueue("tests.record", key="1.2.840.99.2")
    page = admin_client.get(reverse(CHANGELIST), {"state__exact": "dead", "kind": "tests.unreachable"})
    assert page.status_code == 200
    assert b"1.2.840.99.1" in page.content and b"1.2.840.99.2" not in page.content
    assert b"JobError: repository unreachable" in page.content
    found = admin_client.get(reverse(CHANGELIST), {"q": "99.2"})
    assert b"1.2.840.99.2" in found.content and b"1.2.840.99.1" not in found.content


def test_a_job_cannot_be_added_or_edited_in_the_admin(admin_client) -> None:
    job = enqueue("tests.record", {"n": 1}, key="k")
    assert admin_client.get(reverse("admin:jobs_job_add")).status_code == 403
    admin_client.post(reverse("admin:jobs_job_change", args=[job.pk]), {"kind": "tests.other", "state": "dead"})
    job.refresh_from_db()
    assert (job.kind, job.state) == ("tests.record", Job.State.QUEUED)


def test_retry_now_queues_a_dead_job_and_skips_one_whose_key_has_an_active_job(admin_client) -> None:
    dead = _dead("a")
    superseded = _dead("b")
    enqueue("tests.unreachable", key="b")
    page = _action(admin_client, "retry_now", [dead, superseded])
    assert b"1 job(s) queued to run now" in page.content
    assert b"1 job(s) not retried: another job with the same kind and key" in page.content
    dead.refresh_from_db()
    superseded.refresh_from_db()
    assert (dead.state, dead.attempts, dead.finished_at) == (Job.State.QUEUED, 0, None)
    assert superseded.state == Job.State.DEAD


def test_cancel_kills_queued_jobs_but_not_running_ones(admin_client, admin_user) -> None:
    running = enqueue("tests.record", {"n": 1})
    claim("w")
    queued = enqueue("tests.record", {"n": 2})
    page = _action(admin_client, "cancel", [queued, running])
    assert b"1 job(s) cancelled" in page.content
    queued.refresh_from_db()
    running.refresh_from_db()
    assert queued.state == Job.State.DEAD
    assert queued.last_error == f"Cancelled: by {admin_user.username} (admin)"
    assert running.state == Job.State.RUNNING
