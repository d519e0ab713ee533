"""Reading a manifest back into study -> series -> instances with retrieve locations."""

from __future__ import annotations

import pytest

from kos.builder import RetrieveLocation, build_manifest, to_part10
from kos.reader import ManifestReadError, read_manifest

from .conftest import IDS_DIR, NIST_LOCATION_UID


def test_round_trip_gives_back_every_instance_with_its_retrieve_location(ids_study) -> None:
    location = RetrieveLocation(NIST_LOCATION_UID, "XDSI_IDS", "http://pacs.example/dicom-web")
    manifest = read_manifest(to_part10(build_manifest(ids_study, location)))
    assert manifest.study_instance_uid == ids_study.study_instance_uid
    assert manifest.patient_id == "IDS-DEPT002-a"
    assert manifest.document_title == ("113030", "DCM", "Manifest")
    assert [s.study_instance_uid for s in manifest.studies] == [ids_study.study_instance_uid]
    got = {se.series_instance_uid: {(i.sop_class_uid, i.sop_instance_uid) for i in se.instances}
           for se in manifest.studies[0].series}
    want = {se.series_instance_uid: {(i.sop_class_uid, i.sop_instance_uid) for i in se.instances}
            for se in ids_study.series}
    assert got == want
    for se in manifest.studies[0].series:
        assert se.retrieve_location_uid == NIST_LOCATION_UID
        assert se.retrieve_ae_title == "XDSI_IDS"
        assert se.retrieve_url == f"http://pacs.example/dicom-web/studies/{ids_study.study_instance_uid}" \
                                  f"/series/{se.series_instance_uid}"
    assert manifest.instance_count == 36 == len(manifest.instances())


def test_reads_the_nist_reference_manifest() -> None:
    manifest = read_manifest(IDS_DIR / "kos" / "kos.dcm")
    assert manifest.instance_count == 36
    assert {se.retrieve_ae_title for se in manifest.studies[0].series} == {"DCM4CHEE"}
    assert {se.retrieve_location_uid for se in manifest.studies[0].series} == {NIST_LOCATION_UID}
    assert all(se.retrieve_url is None for se in manifest.studies[0].series)


def test_garbage_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ManifestReadError):
        read_manifest(b"\x00" * 10)


def test_dicom_without_evidence_is_refused(ids_study) -> None:
    ds = build_manifest(ids_study, RetrieveLocation(NIST_LOCATION_UID, "AE"))
    del ds.CurrentRequestedProcedureEvidenceSequence
    with pytest.raises(ManifestReadError, match="Evidence"):
        read_manifest(to_part10(ds))
