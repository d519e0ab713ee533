"""Modality Worklist C-FIND (PS3.4 Annex K.6, the Modality Worklist Information Model - FIND): what a
worklist SCP (the RIS, or a PACS serving worklists) has scheduled, so that a site can act before the
examination - e.g. prefetch the patient's priors (RAD TF-2 predictive prefetch practice).
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pynetdicom.sop_class import ModalityWorklistInformationFind

from imaging_source.dicom.ae import AssociationError, associate, make_ae
from imaging_source.dicom.config import Peer

PENDING = (0xFF00, 0xFF01)
#: At most this many answers are kept from one query (a hostile or broken SCP cannot flood us).
MAX_ENTRIES = 5000


class WorklistError(RuntimeError):
    """The worklist SCP could not be asked, or answered with a failure status."""


def worklist_query(date_range: str, modality: str = "", station_ae_title: str = "") -> Dataset:
    """The query identifier (PS3.4 Table K.6-1): the scheduled steps in ``date_range`` (DA range), with
    the return keys a prefetch needs (patient, issuer, accession, study, modality, procedure codes)."""
    step = Dataset()
    step.Modality = modality
    step.ScheduledStationAETitle = station_ae_title
    step.ScheduledProcedureStepStartDate = date_range
    step.ScheduledProcedureStepStartTime = ""
    step.ScheduledProcedureStepID = ""
    step.ScheduledProcedureStepDescription = ""
    q = Dataset()
    q.ScheduledProcedureStepSequence = [step]
    for keyword in ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
                    "AccessionNumber", "RequestedProcedureID", "RequestedProcedureDescription", "StudyInstanceUID"):
        setattr(q, keyword, "")
    q.RequestedProcedureCodeSequence = []
    return q


def query_worklist(ae_title: str, peer: Peer, query: Dataset, *, timeouts: dict[str, float] | None = None
                   ) -> list[Dataset]:
    """The worklist items ``peer`` answers to ``query`` (C-FIND, one association)."""
    ae = make_ae(ae_title, timeouts=timeouts)
    ae.add_requested_context(ModalityWorklistInformationFind)
    try:
        assoc = associate(ae, peer)
    except AssociationError as exc:
        raise WorklistError(str(exc)) from exc
    out: list[Dataset] = []
    final = None
    try:
        for status, identifier in assoc.send_c_find(query, ModalityWorklistInformationFind):
            if not status:
                raise WorklistError(f"worklist C-FIND to {peer}: no response (aborted or timed out)")
            if status.Status in PENDING and identifier is not None:
                if len(out) >= MAX_ENTRIES:
                    assoc.abort()
                    raise WorklistError(f"worklist C-FIND to {peer}: more than {MAX_ENTRIES} answers")
                out.append(identifier)
            else:
                final = status.Status
    finally:
        if assoc.is_established:
            assoc.release()
    if final not in (0x0000, None):
        raise WorklistError(f"worklist C-FIND to {peer} ended with status 0x{final:04X}")
    return out
