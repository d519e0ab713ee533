"""A procedure begins at this site: announce it so that its patient's priors can be prefetched.

The DICOM listener calls :func:`announce_procedure_in_progress` when an MPPS N-CREATE (IN PROGRESS,
PS3.4 F.7.2.1, RAD-6) is stored.  It maps the step's local patient to the affinity domain's id (the
same table and rules publication uses, :mod:`imaging_source.patient_mapping`) and announces
:attr:`jobs.registry.Event.PROCEDURE_IN_PROGRESS`; whoever subscribed (this site's Imaging Document
Consumer, when ``XDS_PREFETCH`` is on) gets a job.  The imaging source knows nothing of prefetch.
"""

from __future__ import annotations

import logging

from pydicom.dataset import Dataset

from imaging_source.metadata import ANATOMIC_REGIONS, NON_ACQUISITION_MODALITIES
from imaging_source.patient_mapping import RewriteRule, UnmappedPatient, map_patient
from jobs.api import announce
from jobs.models import Job
from jobs.registry import Event

logger = logging.getLogger(__name__)


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value).strip()


def procedure_event_codes(ds: Dataset) -> list[str]:
    """``code^^scheme`` of what the step says it examines: its modality (CID 29, DCM) and, when the step
    names one (Body Part Examined or the Anatomic Region Sequence), the body part in each scheme an
    eventCodeList may use (SCT, SRT, SNM3: RAD TF-3 4.68.4.1.2.3.2)."""
    codes: list[str] = []
    modality = _text(ds, "Modality").upper()
    if modality and modality not in NON_ACQUISITION_MODALITIES:
        codes.append(f"{modality}^^DCM")
    parts = {_text(ds, "BodyPartExamined").upper()} - {""}
    for item in ds.get("AnatomicRegionSequence", None) or []:
        value, scheme = _text(item, "CodeValue"), _text(item, "CodingSchemeDesignator")
        if value and scheme:
            codes.append(f"{value}^^{scheme}")
    for part in sorted(parts):
        region = ANATOMIC_REGIONS.get(part)
        if region:
            sct, legacy, _ = region
            codes += [f"{sct}^^SCT", f"{legacy}^^SRT", f"{legacy}^^SNM3"]
    return list(dict.fromkeys(codes))


def announce_procedure_in_progress(ds: Dataset, mpps_uid: str, rules: list[RewriteRule], *,
                                   max_attempts: int) -> list[Job]:
    """Announce the step (keyed by its MPPS UID: a repeated N-CREATE adds nothing while its jobs run).

    An unmapped local patient announces nothing: without an affinity-domain id there is nothing to
    look for (publication queues such studies for reconciliation).
    """
    patient_id, issuer = _text(ds, "PatientID"), _text(ds, "IssuerOfPatientID")
    try:
        affinity = map_patient(patient_id, issuer or None, rules)
    except UnmappedPatient:
        logger.info("procedure in-progress mpps=%s: local patient not mapped to the affinity domain; "
                    "nothing announced", mpps_uid)
        return []
    jobs = announce(Event.PROCEDURE_IN_PROGRESS, {
        "mpps_uid": mpps_uid, "local_patient_id": patient_id, "local_issuer": issuer,
        "affinity_patient_id": affinity, "event_codes": procedure_event_codes(ds),
    }, key=mpps_uid, max_attempts=max_attempts)
    logger.info("procedure in-progress mpps=%s announced jobs=%s", mpps_uid, ",".join(str(j.pk) for j in jobs) or "-")
    return jobs
