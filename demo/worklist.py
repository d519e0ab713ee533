"""A scheduled procedure as a RIS leaves it for the demo's PACS to serve: one Modality Worklist item file
(PS3.4 Table K.6-1 attributes) in the folder Orthanc's ModalityWorklists plugin reads."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

#: The Modality Worklist Information Model - FIND SOP Class (PS3.4 K.6.1.2), named in the file meta.
WORKLIST_FIND = "1.2.840.10008.5.1.4.31"


def worklist_item(patient_id: str, issuer: str, name: str, modality: str, *, station_ae_title: str = "",
                  when: dt.datetime | None = None) -> Dataset:
    when = when or dt.datetime.now()
    step = Dataset()
    step.Modality = modality
    step.ScheduledStationAETitle = station_ae_title
    step.ScheduledProcedureStepStartDate = f"{when:%Y%m%d}"
    step.ScheduledProcedureStepStartTime = f"{when:%H%M%S}"
    step.ScheduledProcedureStepID = generate_uid()[-16:]
    step.ScheduledProcedureStepDescription = f"{modality} examination"
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName, ds.PatientID = name, patient_id
    if issuer:
        ds.IssuerOfPatientID = issuer
    ds.AccessionNumber = step.ScheduledProcedureStepID[-8:]
    ds.RequestedProcedureID = step.ScheduledProcedureStepID[-8:]
    ds.RequestedProcedureDescription = f"{modality} examination"
    ds.StudyInstanceUID = generate_uid()
    ds.ScheduledProcedureStepSequence = [step]
    return ds


def write_worklist_item(directory: Path, ds: Dataset) -> Path:
    """Write ``ds`` as ``<directory>/<study uid>.wl`` (Part 10, written whole then renamed: the PACS never
    reads half a file)."""
    directory.mkdir(parents=True, exist_ok=True)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = WORKLIST_FIND
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = directory / f"{ds.StudyInstanceUID}.wl"
    tmp = path.with_suffix(".tmp")
    ds.save_as(tmp, enforce_file_format=True)
    tmp.replace(path)
    return path
