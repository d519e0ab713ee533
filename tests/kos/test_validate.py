"""The manifest validator: every finding collected, each tied to its rule."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from kos.builder import RetrieveLocation, build_manifest, to_part10
from kos.validate import ERROR, WARNING, errors, validate_manifest

from .conftest import IDS_DIR, NIST_LOCATION_UID

LOCATION = RetrieveLocation(NIST_LOCATION_UID, "XDSI_IDS")


def _codes(findings) -> set[str]:
    return {f.code for f in findings}


def test_reference_manifest_and_our_manifest_are_valid(ids_study) -> None:
    assert validate_manifest(IDS_DIR / "kos" / "kos.dcm", expected_location_uid=NIST_LOCATION_UID) == []
    assert validate_manifest(to_part10(build_manifest(ids_study, LOCATION))) == []


def test_a_manifest_broken_in_many_ways_reports_every_problem(ids_study) -> None:
    ds = build_manifest(ids_study, LOCATION)
    ds.Modality = "SR"
    ds.ConceptNameCodeSequence[0].CodeValue = "113000"  # "Of Interest": a KOS, not a manifest
    ds.ContinuityOfContent = "CONTINUOUS"
    del ds.PatientID
    evidence_series = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    del evidence_series[0].RetrieveLocationUID
    del evidence_series[1].RetrieveAETitle
    removed = evidence_series[1].ReferencedSOPSequence.pop(0)  # content references it, evidence not
    findings = validate_manifest(to_part10(ds))
    codes = _codes(findings)
    assert {"iod.modality", "xdsi.title", "xdsi.continuity", "iod.absent.PatientID",
            "xdsi.no-retrieve-location", "xdsi.no-retrieve-ae", "evidence.incomplete"} <= codes
    incomplete = [f for f in findings if f.code == "evidence.incomplete"]
    assert len(incomplete) == 1 and removed.ReferencedSOPInstanceUID in incomplete[0].message
    assert next(f for f in findings if f.code == "xdsi.continuity").severity == WARNING
    assert all(f.rule for f in findings)  # every finding names its rule
    assert "RetrieveLocationUID" not in str(evidence_series[0])


def test_wrong_sop_class_and_missing_evidence_are_errors(ids_study) -> None:
    ds = build_manifest(ids_study, LOCATION)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    del ds.CurrentRequestedProcedureEvidenceSequence
    found = errors(validate_manifest(ds))
    assert {"iod.sop-class", "evidence.missing"} <= _codes(found)
    assert all(f.severity == ERROR for f in found)


def test_retrieve_location_other_than_expected_is_reported(ids_study) -> None:
    ds = build_manifest(ids_study, RetrieveLocation("1.2.3.4", "AE"))
    assert _codes(validate_manifest(ds, expected_location_uid=NIST_LOCATION_UID)) == {"xdsi.wrong-retrieve-location"}


def test_invalid_uids_and_bad_content_items_are_reported(ids_study) -> None:
    ds = build_manifest(ids_study, LOCATION)
    with pytest.warns(UserWarning, match="Invalid value for VR UI"):
        ds.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID = "1.2.abc"
    odd = Dataset()
    odd.RelationshipType = "CONTAINS"
    odd.ValueType = "NUM"
    ds.ContentSequence.append(odd)
    codes = _codes(validate_manifest(ds))
    assert "uid.invalid.ReferencedSOPInstanceUID" in codes
    assert "sr.item" in codes


def test_bytes_that_are_not_part10_are_reported() -> None:
    findings = validate_manifest(b"not dicom at all")
    assert findings[0].code == "part10.no-preamble"
    assert len(errors(findings)) > 1  # and everything else that is then missing


def test_findings_render_readably(ids_study) -> None:
    ds = build_manifest(ids_study, LOCATION)
    ds.Modality = "OT"
    text = str(validate_manifest(ds)[0])
    assert text.startswith("ERROR iod.modality") and "PS3.3 C.17.6.1" in text
