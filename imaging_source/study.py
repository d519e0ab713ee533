"""Plain description of a study as found in the PACS.

This is the contract between the DICOM side (``imaging_source.dicom``: C-FIND / QIDO-RS study
finder) and the publication side (``imaging_source.publish``, ``kos``): the finder returns a
``StudyRef``; publication builds the KOS manifest and XDS metadata from it. Values are kept as
DICOM strings (DA ``YYYYMMDD``, TM ``HHMMSS[.f]``, PN ``Family^Given``) so nothing is lost.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class InstanceRef:
    sop_class_uid: str
    sop_instance_uid: str
    instance_number: int | None = None


@dataclass
class SeriesRef:
    series_instance_uid: str
    modality: str
    series_number: int | None = None
    body_part_examined: str | None = None
    instances: list[InstanceRef] = field(default_factory=list)


@dataclass
class StudyRef:
    study_instance_uid: str
    patient_id: str
    issuer_of_patient_id: str | None = None
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    study_date: str = ""
    study_time: str = ""
    accession_number: str = ""
    issuer_of_accession_number: str | None = None
    study_id: str = ""
    study_description: str = ""
    referring_physician_name: str = ""
    series: list[SeriesRef] = field(default_factory=list)
    #: Modifying System (0400,0563) of every Original Attributes Sequence (0400,0561) item found on the
    #: study's instances (PS3.3 C.12.1.1.9): who changed them, e.g. a consumer's PACS import (import
    #: reconciliation).  The finders read one instance per series; empty when none was modified.
    modifying_systems: list[str] = field(default_factory=list)

    @property
    def instance_count(self) -> int:
        return sum(len(s.instances) for s in self.series)

    @property
    def modalities(self) -> list[str]:
        """Distinct series modalities, in first-seen order."""
        seen: dict[str, None] = {}
        for s in self.series:
            if s.modality:
                seen.setdefault(s.modality, None)
        return list(seen)

    def instance_set_hash(self) -> str:
        """SHA-256 over the sorted (series UID, SOP Instance UID) pairs.

        Used to tell whether a published study changed (instances added or removed) and so
        needs a replacement manifest (RPLC); order of discovery does not matter.
        """
        pairs = sorted(
            f"{s.series_instance_uid}/{i.sop_instance_uid}" for s in self.series for i in s.instances
        )
        return hashlib.sha256("\n".join(pairs).encode("ascii")).hexdigest()

    @classmethod
    def from_datasets(cls, datasets: Iterable[Any]) -> StudyRef:
        """Build a StudyRef from pydicom Datasets (full instances or C-FIND IMAGE-level identifiers).

        All datasets must belong to the same study. Study/patient attributes are taken from the
        first dataset; series keep first-seen order and instances are sorted by Instance Number
        (then UID) for a stable manifest.
        """
        items = list(datasets)
        if not items:
            raise ValueError("no datasets")
        first = items[0]
        study_uid = _s(first, "StudyInstanceUID")
        series_by_uid: dict[str, SeriesRef] = {}
        seen: set[str] = set()
        for ds in items:
            if _s(ds, "StudyInstanceUID") != study_uid:
                raise ValueError(
                    f"dataset {_s(ds, 'SOPInstanceUID')} belongs to study {_s(ds, 'StudyInstanceUID')},"
                    f" not {study_uid}"
                )
            suid = _s(ds, "SeriesInstanceUID")
            series = series_by_uid.get(suid)
            if series is None:
                series = SeriesRef(
                    series_instance_uid=suid,
                    modality=_s(ds, "Modality"),
                    series_number=_i(ds, "SeriesNumber"),
                    body_part_examined=_s(ds, "BodyPartExamined") or None,
                )
                series_by_uid[suid] = series
            sop_uid = _s(ds, "SOPInstanceUID")
            if sop_uid in seen:
                continue
            seen.add(sop_uid)
            series.instances.append(
                InstanceRef(
                    sop_class_uid=_s(ds, "SOPClassUID"),
                    sop_instance_uid=sop_uid,
                    instance_number=_i(ds, "InstanceNumber"),
                )
            )
        for series in series_by_uid.values():
            series.instances.sort(key=_instance_order)
        return cls(**_study_attributes(first), series=list(series_by_uid.values()),
                   modifying_systems=modifying_systems(items))

    @classmethod
    def from_query_levels(cls, study: Any, series: Iterable[tuple[Any, Iterable[Any]]]) -> StudyRef:
        """Build a StudyRef from query answers level by level (C-FIND or QIDO-RS).

        ``study`` is the STUDY-level identifier; ``series`` pairs each SERIES-level identifier
        with the IMAGE-level identifiers of its instances.  Same attribute mapping and instance
        order as :meth:`from_datasets`.
        """
        return cls(
            **_study_attributes(study),
            series=[
                SeriesRef(
                    series_instance_uid=_s(se, "SeriesInstanceUID"),
                    modality=_s(se, "Modality"),
                    series_number=_i(se, "SeriesNumber"),
                    body_part_examined=_s(se, "BodyPartExamined") or None,
                    instances=sorted(
                        (InstanceRef(_s(im, "SOPClassUID"), _s(im, "SOPInstanceUID"), _i(im, "InstanceNumber"))
                         for im in images),
                        key=_instance_order),
                )
                for se, images in series
            ],
        )


def modifying_systems(datasets: Iterable[Any]) -> list[str]:
    """Distinct Modifying System (0400,0563) values of the Original Attributes Sequence (0400,0561) items
    of ``datasets`` (pydicom Datasets), in first-seen order."""
    seen: dict[str, None] = {}
    for ds in datasets:
        for item in (ds.get("OriginalAttributesSequence") if hasattr(ds, "get") else None) or []:
            system = _s(item, "ModifyingSystem")
            if system:
                seen.setdefault(system, None)
    return list(seen)


def _instance_order(instance: InstanceRef) -> tuple[bool, int, str]:
    """Instance Number order (unnumbered last, then by UID): a stable manifest."""
    return (instance.instance_number is None, instance.instance_number or 0, instance.sop_instance_uid)


def _study_attributes(ds: Any) -> dict[str, Any]:
    """The patient/study attributes of a StudyRef from one dataset or STUDY-level identifier."""
    return {
        "study_instance_uid": _s(ds, "StudyInstanceUID"),
        "patient_id": _s(ds, "PatientID"),
        "issuer_of_patient_id": _s(ds, "IssuerOfPatientID") or None,
        "patient_name": _s(ds, "PatientName"),
        "patient_birth_date": _s(ds, "PatientBirthDate"),
        "patient_sex": _s(ds, "PatientSex"),
        "study_date": _s(ds, "StudyDate"),
        "study_time": _s(ds, "StudyTime"),
        "accession_number": _s(ds, "AccessionNumber"),
        "issuer_of_accession_number": _issuer_of_accession(ds),
        "study_id": _s(ds, "StudyID"),
        "study_description": _s(ds, "StudyDescription"),
        "referring_physician_name": _s(ds, "ReferringPhysicianName"),
    }


def _s(ds: Any, keyword: str) -> str:
    value = ds.get(keyword) if hasattr(ds, "get") else getattr(ds, keyword, None)
    if value is None:
        return ""
    if hasattr(value, "value"):  # a DataElement
        value = value.value
    if value is None:
        return ""
    return str(value).strip()


def _i(ds: Any, keyword: str) -> int | None:
    text = _s(ds, keyword)
    if not text:
        return None
    try:
        return int(float(text))
    except ValueError:
        return None


def _issuer_of_accession(ds: Any) -> str | None:
    """Issuer of Accession Number Sequence (0008,0051) -> Local Namespace Entity ID or Universal ID."""
    seq = ds.get("IssuerOfAccessionNumberSequence") if hasattr(ds, "get") else None
    if not seq:
        return None
    item = seq[0]
    return (
        _s(item, "LocalNamespaceEntityID") or _s(item, "UniversalEntityID") or None
    )
