"""XDS-I DICOM comparisons on the corpus's real images and KOS."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from conformance import dicom_checks

TAGS = ["SOPClassUID", "SOPInstanceUID", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
        "SeriesInstanceUID"]


@pytest.fixture(scope="module")
def images(corpus_dir: Path) -> Path:
    return corpus_dir / "nist" / "_imagecache" / "std" / "IDS-DEPT002-a" / "images"


@pytest.fixture(scope="module")
def reference_kos(corpus_dir: Path) -> Path:
    return corpus_dir / "nist" / "ids_4802" / "ValidateKOS" / "kos.dcm"


def _bytes(ds: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_same_images_pass_for_the_reference_and_fail_on_a_changed_tag(images: Path) -> None:
    references = dicom_checks.reference_images(images)
    assert len(references) == 36
    first = sorted(images.glob("*.dcm"))[0]
    assert dicom_checks.check_same_images([("uid", first.read_bytes())], references, TAGS) == []
    ds = pydicom.dcmread(first)
    ds.PatientID = "SOMEONE-ELSE"
    problems = dicom_checks.check_same_images([("uid", _bytes(ds))], references, TAGS)
    assert len(problems) == 1 and "PatientID" in problems[0]
    assert dicom_checks.check_same_images([("x", b"garbage")], references, TAGS) != []
    assert dicom_checks.check_same_images([], references, TAGS) == ["no image returned"]


def test_kos_from_an_ids_must_match_the_reference_but_be_a_new_instance(reference_kos: Path) -> None:
    same = dicom_checks.check_same_kos(reference_kos.read_bytes(), reference_kos)
    assert any("SOPInstanceUID" in p for p in same)  # a copy of the reference is not the IDS's own KOS
    ds = pydicom.dcmread(reference_kos)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    assert dicom_checks.check_same_kos(_bytes(ds), reference_kos) == []
    ds.AccessionNumber = "OTHER"
    ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].RetrieveLocationUID = "1.2.3"
    problems = dicom_checks.check_same_kos(_bytes(ds), reference_kos)
    assert any("AccessionNumber" in p for p in problems)
    assert any("RetrieveLocationUID" in p for p in problems)
    assert dicom_checks.check_same_kos(b"not dicom at all", reference_kos) != []


def _new_kos(reference_kos: Path) -> pydicom.Dataset:
    """The reference KOS as an IDS would re-issue it: same content, its own Series / SOP Instance UIDs."""
    ds = pydicom.dcmread(reference_kos)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    return ds


def test_kos_is_judged_as_an_xdsi_manifest_by_the_kos_library(reference_kos: Path) -> None:
    ds = _new_kos(reference_kos)
    del ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].RetrieveAETitle
    ds.ContentSequence[0].RelationshipType = "HAS PROPERTIES"
    problems = dicom_checks.check_same_kos(_bytes(ds), reference_kos)
    assert any("xdsi.no-retrieve-ae" in p for p in problems), problems    # kos.validate: RAD TF-3 4.68.4.1.2.2
    assert any("sr.relationship" in p for p in problems), problems        # kos.validate: TID 2010
    assert all(p.startswith("not a valid XDS-I.b manifest") for p in problems)


def test_retrieve_location_must_be_the_imaging_source_unique_id(reference_kos: Path) -> None:
    ds = _new_kos(reference_kos)
    for series in ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence:
        series.RetrieveLocationUID = "1.2.840.5"
    data = _bytes(ds)
    assert dicom_checks.check_same_kos(data, reference_kos, expected_location_uid="1.2.840.5") == []
    default = dicom_checks.check_same_kos(data, reference_kos)  # the reference's 1.3.6.1.4.1.21367.13.80.110
    assert default == ["RetrieveLocationUID ['1.2.840.5'] != expected ['1.3.6.1.4.1.21367.13.80.110']"]
    unchanged = _bytes(_new_kos(reference_kos))
    assert dicom_checks.check_same_kos(unchanged, reference_kos, expected_location_uid="1.2.840.5") != []


def test_returned_objects_are_bounded_and_read_through_kos(reference_kos: Path) -> None:
    too_big = b"\0" * (dicom_checks.MAX_KOS_BYTES + 1)
    assert dicom_checks.check_same_kos(too_big, reference_kos)[0].startswith("KOS of ")
    with pytest.raises(dicom_checks.DicomCheckError, match="more than"):
        dicom_checks.read_dataset(b"\0" * 10, limit=5)
    expected = str(pydicom.dcmread(reference_kos, stop_before_pixels=True).SOPInstanceUID)
    assert dicom_checks.sop_instance_uid(reference_kos.read_bytes()) == expected
    with pytest.raises(dicom_checks.DicomCheckError):
        dicom_checks.sop_instance_uid(b"not a KOS")
