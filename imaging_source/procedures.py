"""A procedure is about to begin, or has begun, at this site: announce it, so that its patient's priors can
be prefetched.

Two ways a site learns it (RAD TF-2 predictive prefetch practice):

- a **scheduled** step on a Modality Worklist the site polls (:class:`WorklistPoller`, C-FIND PS3.4 K.6):
  :attr:`~jobs.registry.Event.PROCEDURE_SCHEDULED`, before the patient is on the table;
- an **MPPS IN PROGRESS** at its DICOM listener (PS3.4 F.7.2.1, RAD-6): the listener calls
  :func:`announce_procedure_in_progress`, :attr:`~jobs.registry.Event.PROCEDURE_IN_PROGRESS`.

Either maps the step's local patient to the affinity domain's id (the same table and rules publication
uses, :mod:`imaging_source.patient_mapping`) and announces the event; whoever subscribed (this site's
Imaging Document Consumer, when ``XDS_PREFETCH`` is on) gets a job.  The imaging source knows nothing of
prefetch.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
from collections.abc import Callable

from pydicom.dataset import Dataset

from imaging_source.dicom.config import Peer
from imaging_source.dicom.worklist import WorklistError, query_worklist, worklist_query
from imaging_source.metadata import ANATOMIC_REGIONS, NON_ACQUISITION_MODALITIES
from imaging_source.patient_mapping import RewriteRule, UnmappedPatient, map_patient
from jobs.api import announce
from jobs.models import Job
from jobs.registry import Event
from xds_core.log_ref import redact

logger = logging.getLogger(__name__)

#: Job keys and PriorImport.trigger hold at most 64 characters (a DICOM UID's length).
MAX_TRIGGER = 64


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value).strip()


def _steps(ds: Dataset) -> list[Dataset]:
    return list(ds.get("ScheduledProcedureStepSequence", None) or [])


def procedure_event_codes(ds: Dataset) -> list[str]:
    """``code^^scheme`` of what the step says it examines: its modality (CID 29, DCM; a worklist item has
    it in the Scheduled Procedure Step) and, when the step names one (Body Part Examined or an Anatomic
    Region Sequence), the body part in each scheme an eventCodeList may use (SCT, SRT, SNM3:
    RAD TF-3 4.68.4.1.2.3.2)."""
    codes: list[str] = []
    modalities = [_text(ds, "Modality").upper()] + [_text(s, "Modality").upper() for s in _steps(ds)]
    for modality in modalities:
        if modality and modality not in NON_ACQUISITION_MODALITIES:
            codes.append(f"{modality}^^DCM")
    parts = {_text(ds, "BodyPartExamined").upper()} - {""}
    for holder in [ds, *_steps(ds)]:
        for item in holder.get("AnatomicRegionSequence", None) or []:
            value, scheme = _text(item, "CodeValue"), _text(item, "CodingSchemeDesignator")
            if value and scheme:
                codes.append(f"{value}^^{scheme}")
    for part in sorted(parts):
        region = ANATOMIC_REGIONS.get(part)
        if region:
            sct, legacy, _ = region
            codes += [f"{sct}^^SCT", f"{legacy}^^SRT", f"{legacy}^^SNM3"]
    return list(dict.fromkeys(codes))


def announce_procedure(event: Event, ds: Dataset, trigger: str, rules: list[RewriteRule], *,
                       max_attempts: int) -> list[Job]:
    """Announce the procedure, keyed by ``trigger`` (an MPPS UID, a worklist item's key): the same
    procedure announced again adds nothing while its jobs are active.

    An unmapped local patient announces nothing: without an affinity-domain id there is nothing to
    look for (publication queues such studies for reconciliation).
    """
    if not trigger or len(trigger) > MAX_TRIGGER:
        raise ValueError(f"a procedure's trigger is 1-{MAX_TRIGGER} characters")
    patient_id, issuer = _text(ds, "PatientID"), _text(ds, "IssuerOfPatientID")
    try:
        affinity = map_patient(patient_id, issuer or None, rules)
    except UnmappedPatient:
        logger.info("procedure %s trigger=%s: local patient not mapped to the affinity domain; nothing announced",
                    event.value, trigger)
        return []
    jobs = announce(event, {
        "trigger": trigger, "local_patient_id": patient_id, "local_issuer": issuer,
        "affinity_patient_id": affinity, "event_codes": procedure_event_codes(ds),
    }, key=trigger, max_attempts=max_attempts)
    logger.info("procedure %s trigger=%s announced jobs=%s", event.value, trigger,
                ",".join(str(j.pk) for j in jobs) or "-")
    return jobs


def announce_procedure_in_progress(ds: Dataset, mpps_uid: str, rules: list[RewriteRule], *,
                                   max_attempts: int) -> list[Job]:
    """An MPPS N-CREATE (IN PROGRESS) was stored: announce it, keyed by the MPPS SOP Instance UID."""
    return announce_procedure(Event.PROCEDURE_IN_PROGRESS, ds, mpps_uid, rules, max_attempts=max_attempts)


def worklist_item_key(item: Dataset) -> str:
    """What identifies a scheduled step across polls: its Study Instance UID, else its accession number and
    step id (hashed when longer than a job key)."""
    study = _text(item, "StudyInstanceUID")
    if study and len(study) <= MAX_TRIGGER:
        return study
    steps = _steps(item)
    raw = "|".join([_text(item, "AccessionNumber"), _text(item, "RequestedProcedureID"),
                    _text(steps[0], "ScheduledProcedureStepID") if steps else "", _text(item, "PatientID")])
    return raw if len(raw) <= MAX_TRIGGER else hashlib.sha256(raw.encode()).hexdigest()


class WorklistPoller:
    """Polls a Modality Worklist SCP and announces each scheduled step once (per process: after a restart
    the day's steps are announced again, and the subscriber's own records keep that from importing twice).
    A step whose announcement failed is tried again at the next poll.

    ``announce(item, key)`` is called for each new step; ``days_ahead`` widens the date range beyond today.
    """

    def __init__(self, ae_title: str, peer: Peer, announce: Callable[[Dataset, str], object], *,
                 interval: float, days_ahead: int = 1, station_ae_title: str = "") -> None:
        self.ae_title, self.peer, self.announce = ae_title, peer, announce
        self.interval, self.days_ahead, self.station_ae_title = interval, days_ahead, station_ae_title
        self.seen: dict[str, dt.date] = {}

    def poll_once(self, today: dt.date | None = None) -> int:
        """One C-FIND; the number of steps announced.  :class:`WorklistError` if the SCP fails."""
        today = today or dt.date.today()
        last = today + dt.timedelta(days=self.days_ahead)
        items = query_worklist(self.ae_title, self.peer, worklist_query(
            f"{today:%Y%m%d}-{last:%Y%m%d}", station_ae_title=self.station_ae_title))
        announced = 0
        for item in items:
            key = worklist_item_key(item)
            if not key.strip("|") or key in self.seen:
                continue
            try:
                self.announce(item, key)
            except Exception:  # noqa: BLE001 - one bad item must not stop the others; tried again next poll
                logger.exception("worklist item %s could not be announced", key)
                continue
            self.seen[key] = today
            announced += 1
        # Forget what is older than the window, so a long-running poller's memory stays bounded.
        self.seen = {k: d for k, d in self.seen.items() if d >= today - dt.timedelta(days=1)}
        # One line per poll that found something new; the quiet polls (most of them) only at DEBUG.
        logger.log(logging.INFO if announced else logging.DEBUG, "worklist poll peer=%s items=%d announced=%d",
                   self.peer, len(items), announced)
        return announced

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.poll_once()
            except WorklistError as exc:
                logger.warning("worklist poll peer=%s failed: %s", self.peer, redact(exc))
            except Exception:  # noqa: BLE001 - the poller outlives a bad poll (e.g. a database hiccup)
                logger.exception("worklist poll peer=%s failed", self.peer)
            stop.wait(self.interval)
