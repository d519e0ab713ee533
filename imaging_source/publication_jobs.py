"""The Imaging Document Source's job kind ``imaging_source.publish_study``: publish one study (RAD-68).

Triggers (MPPS COMPLETED, a stable study) only :func:`enqueue_publication` -- a quick insert, so the
DICOM N-SET answer never waits on a publication -- keyed by the Study Instance UID: while a publication
of a study is queued, running or waiting for a retry, another trigger for it adds nothing.  The job
worker (``manage.py xds_jobs_worker``) runs :func:`run_publish_study`, registered from
:meth:`imaging_source.apps.ImagingSourceConfig.ready`.

When a publication fails the job is retried with backoff (``XDS_JOBS_*``): the PACS does not know the
study yet (MPPS often comes before the last images reach the PACS), the repository cannot be reached,
another publisher is sending the same study.  A repository that answers with RegistryErrors will answer
the same again: the job is dead at once (the Publication row keeps the errors; the admin can retry).
Publishing is idempotent: an unchanged study is not sent again.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings

from imaging_source.dicom.config import DicomConfig
from imaging_source.publish import Outcome, PublishConfig, PublishResult
from imaging_source.stable import publish_study
from jobs.api import enqueue
from jobs.models import Job
from jobs.registry import JobError, PermanentJobError
from xds_core.identifiers import is_dicom_uid

PUBLISH_STUDY = "imaging_source.publish_study"
#: Publication.trigger values a job may carry (Publication.trigger is 32 characters).
TRIGGERS = ("mpps", "stable", "admin", "command", "portal")
#: RAD-68 outcomes (Publication.response_status) worth another attempt: the repository could not be reached
#: (transport-error), or did not answer (no-answer, no-response: the row stays PENDING and the next attempt
#: settles it, see imaging_source.publish).
_TRANSIENT_STATUSES = ("transport-error", "no-answer", "no-response")


def enqueue_publication(study_uid: str, *, trigger: str, max_attempts: int) -> Job:
    """Queue (or find the already active) publication job of ``study_uid``."""
    if not is_dicom_uid(study_uid):
        raise ValueError(f"{study_uid!r} is not a Study Instance UID")
    if trigger not in TRIGGERS:
        raise ValueError(f"unknown publication trigger {trigger!r}")
    return enqueue(PUBLISH_STUDY, {"study_instance_uid": study_uid, "trigger": trigger}, key=study_uid,
                   max_attempts=max_attempts)


def enqueue_publications(study_uids: Iterable[str], *, trigger: str, max_attempts: int) -> list[Job]:
    """:func:`enqueue_publication` for each study (e.g. the studies of one MPPS)."""
    return [enqueue_publication(uid, trigger=trigger, max_attempts=max_attempts) for uid in study_uids]


def run_publish_study(job: Job) -> PublishResult:
    """The handler: find the study in the PACS and publish it with this server's settings.

    Raises :class:`~jobs.registry.JobError` (retried) or :class:`~jobs.registry.PermanentJobError`; their
    messages name outcomes and XDS error codes only, never patient data.
    """
    study_uid = job.payload.get("study_instance_uid")
    trigger = job.payload.get("trigger")
    if not isinstance(study_uid, str) or not is_dicom_uid(study_uid) or trigger not in TRIGGERS:
        raise PermanentJobError("payload needs a study_instance_uid (a DICOM UID) and a known trigger")
    # Settings are read per job (not at registration): the worker may outlive an operator's change.
    result = publish_study(study_uid, DicomConfig.from_settings(settings), PublishConfig.from_settings(settings),
                           trigger=trigger)
    if result is None:
        raise JobError("the PACS does not know the study (yet)")
    if result.outcome == Outcome.IN_PROGRESS:
        raise JobError("another publication of the study is being sent")
    if result.outcome == Outcome.FAILED:
        publication = result.publication
        status = publication.response_status if publication else ""
        codes = sorted({e.get("error_code", "") for e in (publication.errors if publication else [])} - {""})
        if status in _TRANSIENT_STATUSES or (status == "soap-fault" and any("Receiver" in c for c in codes)):
            # Nobody answered, or the repository failed on its side (SOAP 1.2 Receiver fault): try again.
            raise JobError(f"RAD-68 {status}: {', '.join(codes) or 'no error code'}")
        raise PermanentJobError(f"RAD-68 refused ({status.rsplit(':', 1)[-1]}): {', '.join(codes) or 'no error code'}")
    return result
