"""XDS-I checks on DICOM objects (conformance README §5 'RAD-69 checks', 'IDS output checks').

``sameDcmImgs`` compares retrieved images with the reference study on listed tags.
``sameKOSDcm`` judges a KOS an Imaging Document Source produced, through the project's KOS library
(no second KOS reader): first as an XDS-I.b manifest (:func:`kos.validate.validate_manifest`: Part 10,
KOS IOD, TID 2010, complete evidence, Retrieve AE Title / Location UID on every series), then against
the reference KOS the way the NIST XDS-I validator does (``DetailDcmKOSContent``: same
patient/study/accession and evidence, new Series/SOP Instance UIDs), the evidence and the Retrieve
Location UIDs read by :func:`kos.reader.read_manifest`.  Everything a vendor returns is size-checked
before it is parsed, by :func:`kos.reader.load_dataset`.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from kos.reader import Manifest as KosManifest
from kos.reader import ManifestReadError, load_dataset, read_manifest
from kos.validate import errors as kos_errors
from kos.validate import validate_manifest
from xds_core.vocabulary import KOS_SOP_CLASS_UID  # PS3.4 B.5; RAD TF-3 4.68.4.1.2.3.2

#: Largest returned object read: a KOS is kilobytes, an image at most some hundred megabytes.
MAX_KOS_BYTES = 16 * 1024 * 1024
MAX_IMAGE_BYTES = 1024 * 1024 * 1024


class DicomCheckError(ValueError):
    pass


def read_dataset(data: bytes, *, limit: int = MAX_IMAGE_BYTES) -> Dataset:
    """A returned (hostile) DICOM object, at most ``limit`` bytes."""
    if len(data) > limit:
        raise DicomCheckError(f"{len(data)} bytes, more than the {limit} this check reads")
    try:
        return load_dataset(data)
    except ManifestReadError as exc:
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


def _evidence(manifest: KosManifest) -> tuple[set[tuple[str, str, str]], set[str]]:
    """(study, series, SOP instance) triples and Retrieve Location UIDs of the evidence sequence."""
    refs = {(study, series, instance.sop_instance_uid) for study, series, instance, _se in manifest.instances()}
    locations = {se.retrieve_location_uid or "" for st in manifest.studies for se in st.series}
    return refs, locations


def check_same_kos(submitted: bytes, reference_path: Path, *, expected_location_uid: str | None = None) -> list[str]:
    """``sameKOSDcm`` (NIST ``DetailDcmKOSContent`` + README §5): a valid XDS-I.b manifest, equal to
    the reference where the NIST validator wants it equal, new where it wants it new.

    ``expected_location_uid``: the Imaging Document Source's repositoryUniqueId every series'
    Retrieve Location UID must name (default: the reference KOS's).
    """
    if len(submitted) > MAX_KOS_BYTES:
        return [f"KOS of {len(submitted)} bytes, more than the {MAX_KOS_BYTES} this check reads"]
    problems = [f"not a valid XDS-I.b manifest: {f.code}: {f.message}"
                for f in kos_errors(validate_manifest(submitted))]
    try:
        ds = load_dataset(submitted)
        kos = read_manifest(ds)
    except ManifestReadError as exc:
        return problems or [str(exc)]
    ref_ds = load_dataset(reference_path)
    ref = read_manifest(ref_ds)
    if kos.sop_class_uid != KOS_SOP_CLASS_UID and not problems:
        problems.append(f"SOPClassUID {kos.sop_class_uid} is not Key Object Selection")
    for tag in ("AccessionNumber", "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID"):
        if _value(ds, tag) != _value(ref_ds, tag):
            problems.append(f"{tag} {_value(ds, tag)!r} != reference {_value(ref_ds, tag)!r}")
    for tag in ("SeriesInstanceUID", "SOPInstanceUID"):
        # A new KOS is a new instance in a new series (NIST: TYPE.DIFFERENT).
        if _value(ds, tag) == _value(ref_ds, tag):
            problems.append(f"{tag} equals the reference KOS's; the IDS must mint its own")
    content, ref_content = ds.get("ContentSequence", []) or [], ref_ds.get("ContentSequence", []) or []
    if len(content) != len(ref_content):
        problems.append(f"ContentSequence has {len(content)} items, reference {len(ref_content)}")
    refs, locations = _evidence(kos)
    ref_refs, ref_locations = _evidence(ref)
    if refs != ref_refs:
        problems.append(f"evidence references {len(refs)} instances, reference {len(ref_refs)}"
                        f" ({len(refs ^ ref_refs)} differ)")
    wanted = {expected_location_uid} if expected_location_uid else ref_locations
    if locations != wanted:
        problems.append(f"RetrieveLocationUID {sorted(locations)} != expected {sorted(wanted)}")
    return problems


def sop_instance_uid(data: bytes) -> str:
    """SOP Instance UID of a KOS (raises :class:`DicomCheckError` when unreadable)."""
    try:
        return read_manifest(read_dataset(data, limit=MAX_KOS_BYTES)).sop_instance_uid
    except ManifestReadError as exc:
        raise DicomCheckError(str(exc)) from exc
