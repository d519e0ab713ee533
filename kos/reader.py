"""Read an XDS-I.b manifest (KOS) back into study -> series -> instances with retrieve locations.

The source of truth is the Current Requested Procedure Evidence Sequence (0040,A375): XDS-I.b
requires it to list every referenced instance, with Retrieve AE Title / Retrieve Location UID /
Retrieve URL on each Referenced Series item (RAD TF-3 4.68.4.1.2.2; DICOM PS3.3 A.35.4). An Imaging
Document Consumer turns each instance into a RAD-69 DocumentRequest with RepositoryUniqueId =
the series' Retrieve Location UID and DocumentUniqueId = the SOP Instance UID.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset


class ManifestReadError(ValueError):
    """Not a DICOM file, or no evidence sequence to read."""


@dataclass
class ManifestInstance:
    sop_class_uid: str
    sop_instance_uid: str


@dataclass
class ManifestSeries:
    series_instance_uid: str
    retrieve_ae_title: str | None = None
    retrieve_location_uid: str | None = None
    retrieve_url: str | None = None
    instances: list[ManifestInstance] = field(default_factory=list)


@dataclass
class ManifestStudy:
    study_instance_uid: str
    series: list[ManifestSeries] = field(default_factory=list)


@dataclass
class Manifest:
    sop_instance_uid: str
    sop_class_uid: str
    patient_id: str
    issuer_of_patient_id: str | None
    patient_name: str
    study_instance_uid: str
    accession_number: str
    document_title: tuple[str, str, str] | None
    studies: list[ManifestStudy] = field(default_factory=list)

    def instances(self) -> list[tuple[str, str, ManifestInstance, ManifestSeries]]:
        """Flat list of (study UID, series UID, instance, series) in manifest order."""
        return [(st.study_instance_uid, se.series_instance_uid, inst, se)
                for st in self.studies for se in st.series for inst in se.instances]

    @property
    def instance_count(self) -> int:
        return sum(len(se.instances) for st in self.studies for se in st.series)


def load_dataset(source: bytes | str | Path | Dataset) -> Dataset:
    """A Dataset from Part 10 bytes, a path, or an already parsed Dataset."""
    if isinstance(source, Dataset):
        return source
    try:
        if isinstance(source, bytes):
            return dcmread(io.BytesIO(source), force=True)
        return dcmread(str(source), force=True)
    except Exception as exc:  # pydicom raises several types for garbage input
        raise ManifestReadError(f"not a readable DICOM object: {exc}") from exc


def read_manifest(source: bytes | str | Path | Dataset) -> Manifest:
    ds = load_dataset(source)
    evidence = ds.get("CurrentRequestedProcedureEvidenceSequence")
    if evidence is None:
        raise ManifestReadError("no Current Requested Procedure Evidence Sequence (0040,A375)")
    studies: list[ManifestStudy] = []
    for study_item in evidence:
        study = ManifestStudy(_text(study_item, "StudyInstanceUID"))
        for series_item in study_item.get("ReferencedSeriesSequence") or []:
            series = ManifestSeries(
                series_instance_uid=_text(series_item, "SeriesInstanceUID"),
                retrieve_ae_title=_text(series_item, "RetrieveAETitle") or None,
                retrieve_location_uid=_text(series_item, "RetrieveLocationUID") or None,
                retrieve_url=_text(series_item, "RetrieveURL") or None,
            )
            for sop in series_item.get("ReferencedSOPSequence") or []:
                series.instances.append(ManifestInstance(_uid(sop, _REFERENCED_SOP_CLASS_UID),
                                                         _uid(sop, _REFERENCED_SOP_INSTANCE_UID)))
            study.series.append(series)
        studies.append(study)
    title_seq = ds.get("ConceptNameCodeSequence")
    title = None
    if title_seq:
        item = title_seq[0]
        title = (_text(item, "CodeValue"), _text(item, "CodingSchemeDesignator"), _text(item, "CodeMeaning"))
    return Manifest(
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        sop_class_uid=_text(ds, "SOPClassUID"),
        patient_id=_text(ds, "PatientID"),
        issuer_of_patient_id=_text(ds, "IssuerOfPatientID") or None,
        patient_name=_text(ds, "PatientName"),
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        accession_number=_text(ds, "AccessionNumber"),
        document_title=title,
        studies=studies,
    )


#: Referenced SOP Class UID (0008,1150) and Referenced SOP Instance UID (0008,1155): read once per instance.
_REFERENCED_SOP_CLASS_UID, _REFERENCED_SOP_INSTANCE_UID = 0x00081150, 0x00081155


def _uid(ds: Dataset, tag: int) -> str:
    """A UI value straight from the element as read (``Dataset.get_item``: no conversion to a DataElement;
    a manifest of thousands of instances converts two elements per instance otherwise)."""
    element = ds.get_item(tag)
    if element is None:
        return ""
    value = element.value
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip("\x00 ")
    return "" if value is None else str(value).strip()


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    return str(value).strip()
