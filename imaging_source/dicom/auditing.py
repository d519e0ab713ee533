"""The DICOM pieces of the Imaging Document Source's audit records (:mod:`xds_core.audit`).

The patient an instance belongs to (DICOM Instances Transferred carries one patient, PS3.15
A.5.3.7), a DIMSE status as an EventOutcomeIndicator, and a DICOM peer as a participant.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field, replace
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from imaging_source.dicom.status import DimseStatus
from xds_core import audit

_PATIENT_TAGS = ["PatientID", "IssuerOfPatientID"]


def patient_id(ds: Dataset) -> str | None:
    """Patient ID (0010,0020), qualified by Issuer of Patient ID (0010,0021) as an HL7 CX string."""
    pid = str(ds.get("PatientID", "") or "").strip()
    if not pid:
        return None
    issuer = str(ds.get("IssuerOfPatientID", "") or "").strip()
    return f"{pid}^^^{issuer}" if issuer else pid


def patient_id_of_part10(source: bytes | memoryview | Path) -> str | None:
    """The patient of a Part 10 instance (in memory or a file); None when it cannot be read."""
    try:
        fp = source if isinstance(source, Path) else io.BytesIO(source)
        return patient_id(pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=_PATIENT_TAGS))
    except Exception:  # noqa: BLE001 - auditing never breaks the transfer
        return None


#: PS3.7 Annex C: Warning statuses (the operation was performed).
_WARNINGS = frozenset({0x0001, 0x0107, 0x0116})
#: Failures of ours, not of the request (status.status_for): PS3.7 Annex C 0110, PS3.4 Table B.2-1 A7xx.
_OURS = frozenset({DimseStatus.PROCESSING_FAILURE, DimseStatus.OUT_OF_RESOURCES})


def dimse_outcome(status: int) -> audit.EventOutcome:
    """Success (with warnings or not) 0; our own failure 12; a request we refused 8."""
    if status == DimseStatus.SUCCESS or status in _WARNINGS or 0xB000 <= status <= 0xBFFF:
        return audit.EventOutcome.SUCCESS
    return audit.EventOutcome.MAJOR_FAILURE if status in _OURS else audit.EventOutcome.SERIOUS_FAILURE


def peer(ae_title: str, address: str, *, identity: str = "") -> audit.Participant:
    """A remote DICOM application: its AE title, also as AETITLES= (PS3.15 A.5.2.2); ``identity``, the name of
    the node identity it authenticated as (issue 13: by certificate, or AE title + address), is its UserName
    (A.5.2.3: "a human-meaningful name")."""
    participant = audit.remote(ae_title, address, ae_title=ae_title)
    return replace(participant, user_name=identity) if identity else participant


@dataclass
class _StudyTransfer:
    patient_id: str | None = None
    stored: list[str] = field(default_factory=list)
    failed: int = 0


@dataclass
class StoreTransfer:
    """The C-STOREs one association brought us, recorded when it closes: DICOM Instances Transferred,
    one event per study (one patient each, PS3.15 A.5.3.7), "C" at us the receiver."""

    sender: audit.Participant
    receiver: audit.Participant
    studies: dict[str, _StudyTransfer] = field(default_factory=dict)

    def add(self, ds: Dataset | None, sop_instance_uid: str, status: int) -> None:
        """One C-STORE: its data set (None when it could not be read) and the status we answered."""
        study_uid = str(ds.get("StudyInstanceUID", "") or "") if ds is not None else ""
        study = self.studies.setdefault(study_uid, _StudyTransfer())
        if study.patient_id is None and ds is not None:
            study.patient_id = patient_id(ds)
        if dimse_outcome(status) is audit.EventOutcome.SUCCESS:
            study.stored.append(sop_instance_uid)
        else:
            study.failed += 1

    def events(self) -> list[audit.AuditEvent]:
        return [audit.transaction_event(
            None, audit.Side.RESPONDER, requestor=self.sender, responder=self.receiver, audited=audit.DICOM_STORE,
            objects=audit.imaging_objects(study.patient_id, {uid: study.stored} if uid else {}),
            outcome=audit.partial(len(study.stored), study.failed)) for uid, study in self.studies.items()]


def mpps_event(transaction: audit.Transaction, sender: audit.Participant, receiver: audit.Participant,
               ds: Dataset | None, study_uids: list[str], status: int) -> audit.AuditEvent:
    """RAD-6 (N-CREATE) / RAD-7 (N-SET) at us: Procedure Record (PS3.15 A.5.3.15), the step's studies and patient."""
    return audit.transaction_event(
        transaction, audit.Side.RESPONDER, requestor=sender, responder=receiver,
        objects=audit.imaging_objects(patient_id(ds) if ds is not None else None, dict.fromkeys(study_uids, ())),
        outcome=dimse_outcome(status), description=f"0x{status:04X}")
