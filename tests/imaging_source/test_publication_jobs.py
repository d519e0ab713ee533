"""The ``imaging_source.publish_study`` job: one per study while pending; retried or dead by outcome."""

from __future__ import annotations

import socket

import pytest

from imaging_source.models import Publication
from imaging_source.publication_jobs import PUBLISH_STUDY, enqueue_publication
from jobs.api import enqueue
from jobs.models import Job
from jobs.worker import run_pending
from xds_core.errors import ErrorCode, RegistryError, Severity

from .conftest import AFFINITY_PATIENT
from .pacs_fixtures import NIST_STUDY_UID

pytestmark = pytest.mark.django_db


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mpps_and_stable_triggers_of_one_study_make_one_job() -> None:
    job = enqueue_publication("1.2.840.99.7", trigger="mpps", max_attempts=3)
    assert enqueue_publication("1.2.840.99.7", trigger="stable", max_attempts=3).pk == job.pk
    assert enqueue_publication("1.2.840.99.8", trigger="stable", max_attempts=3).pk != job.pk


@pytest.mark.parametrize(("study", "trigger", "message"), [
    ("../1.2.3", "mpps", "not a Study Instance UID"),
    ("1.2.840.99.7", "cron", "unknown publication trigger"),
])
def test_a_bad_publication_request_is_refused_and_queues_nothing(study, trigger, message) -> None:
    with pytest.raises(ValueError, match=message):
        enqueue_publication(study, trigger=trigger, max_attempts=3)
    assert not Job.objects.exists()


def test_a_job_with_a_malformed_payload_is_dead_at_once() -> None:
    enqueue(PUBLISH_STUDY, {"trigger": "mpps"}, max_attempts=5)
    [job] = run_pending()
    assert job.state == Job.State.DEAD
    assert job.last_error.startswith("PermanentJobError: payload needs a study_instance_uid")


@pytest.mark.pacs
def test_a_study_the_pacs_does_not_know_yet_is_retried_later(publishing) -> None:
    enqueue_publication("1.2.840.99.404", trigger="mpps", max_attempts=3)
    [job] = run_pending()
    assert (job.state, job.last_error) == (Job.State.FAILED, "JobError: the PACS does not know the study (yet)")
    assert job.run_after > job.updated_at and publishing.received == []


@pytest.mark.pacs
def test_an_unreachable_repository_is_retried_later(publishing, settings) -> None:
    settings.XDS_REPOSITORY_URL = f"http://127.0.0.1:{_closed_port()}/xds/repository"
    enqueue_publication(NIST_STUDY_UID, trigger="stable", max_attempts=3)
    [job] = run_pending()
    assert job.state == Job.State.FAILED
    assert job.last_error.startswith("JobError: RAD-68 transport-error")


@pytest.mark.pacs
def test_a_repository_refusal_makes_the_job_dead_with_the_error_codes_only(publishing) -> None:
    publishing.answer_errors = [RegistryError(ErrorCode.XDSRepositoryError, f"patient {AFFINITY_PATIENT} refused",
                                              Severity.ERROR, "")]
    enqueue_publication(NIST_STUDY_UID, trigger="mpps", max_attempts=3)
    [job] = run_pending()
    assert job.state == Job.State.DEAD
    assert job.last_error == "PermanentJobError: RAD-68 refused (Failure): XDSRepositoryError"
    assert Publication.objects.get().status == Publication.Status.FAILED  # its row keeps the full errors
