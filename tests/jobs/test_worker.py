"""Running jobs through their handlers: success, failures recorded without patient data, unknown kinds."""

from __future__ import annotations

import logging

import pytest

from jobs.api import enqueue
from jobs.models import Job
from jobs.registry import handler_for, register
from jobs.worker import WorkerConfig, run_one, run_pending

from .conftest import PATIENT_NAME, record

pytestmark = pytest.mark.django_db


def test_run_pending_runs_the_due_jobs_in_order_and_logs_one_line_each(ran, caplog) -> None:
    caplog.set_level(logging.INFO, logger="jobs")
    first = enqueue("tests.record", {"n": 1})
    enqueue("tests.record", {"n": 2})
    enqueue("tests.record", {"n": 3}, delay=3600)
    done = run_pending(WorkerConfig(worker_id="w1"))
    assert [j.payload for j in done] == [{"n": 1}, {"n": 2}] == ran
    assert all(j.state == Job.State.SUCCEEDED and j.attempts == 1 for j in done)
    lines = [r.getMessage() for r in caplog.records if r.name == "jobs"]
    assert len(lines) == 2
    assert lines[0].startswith(f"job kind=tests.record id={first.pk} state=succeeded attempt=1/8 ms=")
    assert lines[0].endswith(" worker=w1")


def test_a_handler_exception_is_recorded_by_class_and_place_never_by_its_message(caplog) -> None:
    caplog.set_level(logging.INFO, logger="jobs")
    job = enqueue("tests.leak_patient_data", {})
    [ran] = run_pending()
    assert ran.pk == job.pk and ran.state == Job.State.FAILED
    assert ran.last_error.startswith("ValueError at conftest.py:") and ran.last_error.endswith("in leak_patient_data")
    assert PATIENT_NAME not in ran.last_error and "4711" not in ran.last_error
    assert PATIENT_NAME not in caplog.text and "4711" not in caplog.text
    assert 'state=failed attempt=1/8' in caplog.text and 'error="ValueError at conftest.py:' in caplog.text


def test_a_job_error_keeps_its_message_and_is_retried_later() -> None:
    enqueue("tests.unreachable", {}, max_attempts=2)
    [ran] = run_pending()
    assert (ran.state, ran.last_error) == (Job.State.FAILED, "JobError: repository unreachable")
    assert run_pending() == []  # not due before its backoff


def test_a_permanent_job_error_makes_the_job_dead_at_once() -> None:
    enqueue("tests.refused", {}, max_attempts=5)
    [ran] = run_pending()
    assert (ran.state, ran.attempts) == (Job.State.DEAD, 1)
    assert ran.last_error == "PermanentJobError: payload without a study"


def test_a_job_of_an_unknown_kind_is_dead_and_says_so() -> None:
    enqueue("tests.nobody_handles_this", {"x": 1}, max_attempts=5)
    [ran] = run_pending()
    assert (ran.state, ran.attempts) == (Job.State.DEAD, 1)
    assert ran.last_error == ("UnknownJobKind: unknown kind 'tests.nobody_handles_this': "
                              "no handler is registered for it")


def test_a_worker_limited_to_some_kinds_leaves_the_others(ran) -> None:
    other = enqueue("tests.unreachable", {})
    enqueue("tests.record", {"n": 1})
    assert run_one(WorkerConfig(kinds=("tests.record",))).state == Job.State.SUCCEEDED
    assert run_one(WorkerConfig(kinds=("tests.record",))) is None
    other.refresh_from_db()
    assert other.state == Job.State.QUEUED


def test_a_kind_has_one_handler() -> None:
    register("tests.record", record)  # again, the same: fine
    with pytest.raises(ValueError, match="already has a handler"):
        register("tests.record", lambda job: None)
    with pytest.raises(ValueError, match="dotted lower-case"):
        register("Tests Record", record)
    assert handler_for("tests.record") is record


def test_the_imaging_source_registers_its_publication_kind() -> None:
    from imaging_source.publication_jobs import PUBLISH_STUDY, run_publish_study

    assert handler_for(PUBLISH_STUDY) is run_publish_study
