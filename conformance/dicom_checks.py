"""XDS-I checks on DICOM objects (conformance README §5 'RAD-69 checks', 'IDS output checks').

``sameDcmImgs`` compares retrieved images with the reference study on listed tags;
``sameKOSDcm`` compares a KOS an Imaging Document Source produced with the
reference KOS the way the NIST XDS-I validator does (same patient/study/accession,
new Series/SOP Instance UIDs, same evidence).
"""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

KOS_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"


class DicomCheckError(ValueError):
    pass


def read_dataset(data: bytes) -> Dataset:
    try:
        return pydicom.dcmread(io.BytesIO(data), force=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError) as exc:
        raise DicomCheckError(f"not a DICOM object: {exc}") from exc


def reference_images(folder: Path) -> dict[str, Path]:
    """SOP Instance UID -> file of a reference image folder (headers only are read)."""
    out: dict[str, Path] = {}
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        out[str(ds.get("SOPInstanceUID", ""))] = path
    return out


def _value(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def check_same_images(returned: list[tuple[str, bytes]], references: dict[str, Path], tags: list[str]) -> list[str]:
    """Each returned object (document uid, bytes) equals its reference image on ``tags``."""
    problems: list[str] = []
    if not returned:
        return ["no image returned"]
    for uid, data in returned:
        try:
            ds = read_dataset(data)
        except DicomCheckError as exc:
            problems.append(f"{uid}: {exc}")
            continue
        sop = _value(ds, "SOPInstanceUID")
        ref_path = references.get(sop) or references.get(uid)
        if ref_path is None:
            problems.append(f"{uid}: SOP Instance UID {sop or '?'} is not a reference image")
            continue
        ref = pydicom.dcmread(ref_path, stop_before_pixels=True, force=True)
        for tag in tags:
            if _value(ds, tag) != _value(ref, tag):
                problems.append(f"{uid}: {tag} {_value(ds, tag)!r} != reference {_value(ref, tag)!r}")
    return problems


def _evidence(ds: Dataset) -> tuple[set[tuple[str, str, str]], set[str]]:
    """(study, series, sop instance) triples and RetrieveLocationUIDs of CurrentRequestedProcedureEvidence."""
    refs: set[tuple[str, str, str]] = set()
    locations: set[str] = set()
    for study in ds.get("CurrentRequestedProcedureEvidenceSequence", []) or []:
        for series in study.get("ReferencedSeriesSequence", []) or []:
            if series.get("RetrieveLocationUID"):
                locations.add(str(series.RetrieveLocationUID))
            for sop in series.get("ReferencedSOPSequence", []) or []:
                refs.add((_value(study, "StudyInstanceUID"), _value(series, "SeriesInstanceUID"),
                          _value(sop, "ReferencedSOPInstanceUID")))
    return refs, locations


def check_same_kos(submitted: bytes, reference_path: Path) -> list[str]:
    """``sameKOSDcm`` (NIST ``DetailDcmKOSContent`` + README §5): what must match and what must differ."""
    try:
        kos = read_dataset(submitted)
    except DicomCheckError as exc:
        return [str(exc)]
    ref = pydicom.dcmread(reference_path, force=True)
    problems: list[str] = []
    if _value(kos, "SOPClassUID") != KOS_SOP_CLASS:
        problems.append(f"SOPClassUID {_value(kos, 'SOPClassUID')} is not Key Object Selection")
    if _value(kos, "Modality") != "KO":
        problems.append(f"Modality {_value(kos, 'Modality')!r}, expected KO")
    for tag in ("AccessionNumber", "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID"):
        if _value(kos, tag) != _value(ref, tag):
            problems.append(f"{tag} {_value(kos, tag)!r} != reference {_value(ref, tag)!r}")
    for tag in ("SeriesInstanceUID", "SOPInstanceUID"):
        # A new KOS is a new instance in a new series (NIST: TYPE.DIFFERENT).
        if _value(kos, tag) == _value(ref, tag):
            problems.append(f"{tag} equals the reference KOS's; the IDS must mint its own")
    content, ref_content = kos.get("ContentSequence", []) or [], ref.get("ContentSequence", []) or []
    if len(content) != len(ref_content):
        problems.append(f"ContentSequence has {len(content)} items, reference {len(ref_content)}")
    refs, locations = _evidence(kos)
    ref_refs, ref_locations = _evidence(ref)
    if refs != ref_refs:
        problems.append(f"evidence references {len(refs)} instances, reference {len(ref_refs)}"
                        f" ({len(refs ^ ref_refs)} differ)")
    if locations != ref_locations:
        problems.append(f"RetrieveLocationUID {sorted(locations)} != reference {sorted(ref_locations)}")
    return problems


def sop_instance_uid(data: bytes) -> str:
    return _value(read_dataset(data), "SOPInstanceUID")
