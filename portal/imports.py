"""Importing a manifest's study into this node's PACS from the portal: one ``consumer.import_prior`` job.

The job is the prefetch's (:mod:`consumer.prefetch`): ITI-43 + RAD-69 into DICOM_PACS by C-STORE, with
import reconciliation to this site's local patient (PS3.3 C.12.1.1.9 Original Attributes).  The local
patient is this site's patient mapping for the manifest's affinity-domain patient, else the id the user
types.  Keyed by the manifest's uniqueId: a second request while one is active gets that job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction

from consumer.models import PriorImport
from consumer.prefetch import IMPORT_PRIOR
from imaging_source.models import PatientMapping
from jobs.api import enqueue
from jobs.models import Job, JobState
from portal.models import ManifestCache
from xds_core.identifiers import is_iso_oid
from xds_core.metadata.values import CX

#: DICOM LO (Patient ID, PS3.5 6.2): at most 64 characters, no backslash or control characters.
_MAX_PATIENT_ID = 64


@dataclass(frozen=True)
class LocalPatient:
    patient_id: str
    issuer: str  # Issuer of Patient ID: the mapping's, or the OID typed with the id ("" = the site's authority)
    from_mapping: bool


def mapped_patient(affinity_patient_id: str) -> LocalPatient | None:
    """This site's patient mapping for the affinity-domain patient, if any (the first by id, then issuer)."""
    row = (PatientMapping.objects.filter(affinity_patient_id=affinity_patient_id)
           .order_by("local_patient_id", "local_issuer", "pk").first())
    return LocalPatient(row.local_patient_id, row.local_issuer, True) if row is not None else None


def typed_patient(value: str, site_authority: str) -> tuple[LocalPatient | None, list[str]]:
    """The local patient a user typed: a bare id (this site's assigning authority) or ``id^^^&OID&ISO``.
    (None, problems) when it is not usable."""
    value = value.strip()
    if not value:
        return None, ["Enter this hospital's patient id for the study."]
    if len(value) > 256 or any(ord(c) < 32 or c == "\\" for c in value):
        return None, ["The patient id has characters a DICOM Patient ID cannot hold."]
    if "^" in value:
        problems = CX.problems(value)
        if problems:
            return None, [f"The patient id is not id^^^&OID&ISO: {'; '.join(problems)}."]
        cx = CX.from_str(value)
        patient_id, issuer = cx.id, cx.assigning_authority_oid
    else:
        patient_id, issuer = value, ""
        problems = CX.problems(str(CX(value, site_authority)))
        if problems:
            return None, [f"The patient id is not usable: {'; '.join(problems)}."]
    if len(patient_id) > _MAX_PATIENT_ID:
        return None, [f"A DICOM Patient ID has at most {_MAX_PATIENT_ID} characters."]
    if issuer and not is_iso_oid(issuer):
        return None, ["The assigning authority is not an OID."]
    return LocalPatient(patient_id, issuer, False), []


def queue_import(row: ManifestCache, patient: LocalPatient, username: str, *, max_attempts: int) -> Job:
    """The import job of the manifest (the active one if there is one) and its PriorImport row."""
    trigger = f"portal:{username}"[:64]
    with transaction.atomic():
        job = enqueue(IMPORT_PRIOR, {"found": dict(row.entry), "local_patient_id": patient.patient_id,
                                     "local_issuer": patient.issuer, "trigger": trigger},
                      key=row.document_uid, max_attempts=max_attempts)
        PriorImport.objects.get_or_create(
            manifest_unique_id=row.document_uid,
            defaults={"study_instance_uids": list(row.study_uids), "trigger": trigger,
                      "requested": row.instance_count})
    return job


@dataclass(frozen=True)
class ImportStatus:
    state: str  # queued / running / done / failed
    active: bool
    present: int
    requested: int
    detail: str  # in words: why it failed, or that it waits for a retry
    repository_uid: str
    document_uid: str


def import_status(job: Job) -> ImportStatus:
    """What the status page shows of an import job (the job's state, the PriorImport's counts)."""
    record = PriorImport.objects.filter(manifest_unique_id=job.key or "").first()
    found: Any = job.payload.get("found") if isinstance(job.payload, dict) else None
    found = found if isinstance(found, dict) else {}
    repository_uid = str(found.get("repository_unique_id", ""))
    document_uid = str(found.get("unique_id", ""))
    if not (is_iso_oid(repository_uid) and is_iso_oid(document_uid)):
        repository_uid = document_uid = ""
    requested = record.requested if record is not None else 0
    present = min(record.present, requested) if record is not None and requested else 0
    detail = ""
    if job.state == JobState.SUCCEEDED:
        state = "done"
        present = requested
    elif job.state == JobState.DEAD:
        state = "failed"
        detail = job.last_error or "The import failed."
    elif job.state == JobState.FAILED:
        state = "queued"
        detail = (f"Attempt {job.attempts} of {job.max_attempts} failed ({job.last_error or 'no reason given'}); "
                  f"it is tried again at {job.run_after:%H:%M:%S} UTC.")
    elif job.state == JobState.RUNNING:
        state = "running"
    else:
        state = "queued"
        # Not started yet: the manifest's record may hold the counts of an earlier import of it.
        present = 0 if job.attempts == 0 else present
    return ImportStatus(state, job.is_active, present, requested, detail, repository_uid, document_uid)
