"""Events: one actor announces, the job kinds subscribed to the event get a job; neither imports the other."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jobs.api import announce
from jobs.models import Job
from jobs.registry import Event, subscribe, subscribers, unsubscribe

pytestmark = pytest.mark.django_db


@pytest.fixture
def subscribed() -> Iterator[None]:
    before = subscribers(Event.PROCEDURE_IN_PROGRESS)
    for kind in before:
        unsubscribe(Event.PROCEDURE_IN_PROGRESS, kind)
    subscribe(Event.PROCEDURE_IN_PROGRESS, "tests.record")
    subscribe(Event.PROCEDURE_IN_PROGRESS, "tests.record")  # twice: still one subscription
    subscribe(Event.PROCEDURE_IN_PROGRESS, "tests.unreachable")
    yield
    unsubscribe(Event.PROCEDURE_IN_PROGRESS, "tests.record")
    unsubscribe(Event.PROCEDURE_IN_PROGRESS, "tests.unreachable")
    for kind in before:
        subscribe(Event.PROCEDURE_IN_PROGRESS, kind)


def test_an_announcement_queues_one_job_per_subscribed_kind(subscribed: None) -> None:
    jobs = announce(Event.PROCEDURE_IN_PROGRESS, {"mpps_uid": "1.2.3"}, key="1.2.3")
    assert sorted(j.kind for j in jobs) == ["tests.record", "tests.unreachable"]
    assert all(j.payload == {"mpps_uid": "1.2.3"} and j.key == "1.2.3" for j in jobs)


def test_the_same_announcement_again_adds_nothing_while_its_jobs_are_active(subscribed: None) -> None:
    first = announce(Event.PROCEDURE_IN_PROGRESS, {"n": 1}, key="1.2.3")
    again = announce(Event.PROCEDURE_IN_PROGRESS, {"n": 2}, key="1.2.3")
    assert [j.pk for j in again] == [j.pk for j in first] and Job.objects.count() == 2


def test_without_subscribers_an_announcement_writes_nothing() -> None:
    before = subscribers(Event.PROCEDURE_IN_PROGRESS)
    for kind in before:
        unsubscribe(Event.PROCEDURE_IN_PROGRESS, kind)
    try:
        assert announce(Event.PROCEDURE_IN_PROGRESS, {"mpps_uid": "1.2.3"}) == []
        assert Job.objects.count() == 0
    finally:
        for kind in before:
            subscribe(Event.PROCEDURE_IN_PROGRESS, kind)


def test_a_malformed_kind_cannot_subscribe() -> None:
    with pytest.raises(ValueError, match="dotted lower-case"):
        subscribe(Event.PROCEDURE_IN_PROGRESS, "Not A Kind")
    with pytest.raises(ValueError):
        subscribe("no.such.event", "tests.record")  # type: ignore[arg-type]
