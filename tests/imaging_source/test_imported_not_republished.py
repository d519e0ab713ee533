"""A study a hospital imported from the affinity domain is never published again by that hospital's
Imaging Document Source; one imported by another site (another Modifying System) still is.

Real parts: the consumer's import (C-STORE with import reconciliation) into a private second Orthanc, which
this Imaging Document Source then reads by C-FIND or QIDO-RS/WADO-RS; RAD-68 goes to a recording repository.
The two actors meet only through the DICOM objects in that PACS.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest

from consumer.destinations import InstanceRef
from consumer.dicom_import import StoreScp
from consumer.pacs_import import DicomImport, ImportReconciliation, LocalPatient, reconcile
from imaging_source.dicom.ae import POOL
from imaging_source.dicom.config import DicomConfig, Peer
from imaging_source.dicom.find import find_study
from imaging_source.models import Publication
from imaging_source.patient_mapping import set_mapping
from imaging_source.publish import Outcome
from imaging_source.stable import publish_study
from imaging_source.study import StudyRef
from tests.consumer.import_pacs import CALLING_AE, ImportPacs

from .conftest import AFFINITY_OID, AFFINITY_PATIENT, publish_config
from .pacs_fixtures import NIST_STUDY_UID

SITE_A = "XDSI_CONSUMER@HOSPITAL_A"
SITE_B = "XDSI_CONSUMER@HOSPITAL_B"
LOCAL_ID = "HOSPA-0007"

pytestmark = [pytest.mark.django_db, pytest.mark.pacs]


@pytest.fixture
def imported_by_site_a(import_pacs: ImportPacs, nist_files: dict[str, Path]) -> Iterator[ImportPacs]:  # noqa: F811
    """The NIST study, imported into the import PACS by hospital A's consumer under A's local patient id."""
    import_pacs.wipe_studies()
    dest = DicomImport(CALLING_AE, StoreScp("ORTHANC", "127.0.0.1", import_pacs.dicom_port),
                       ImportReconciliation(LocalPatient(LOCAL_ID, "HOSPA"), SITE_A, AFFINITY_OID))
    try:
        for path in nist_files.values():
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            dest.put(InstanceRef(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SOPClassUID), path)
    finally:
        dest.close()
    set_mapping(LOCAL_ID, AFFINITY_PATIENT)
    yield import_pacs
    POOL.close()  # the finder's pooled C-FIND association to this PACS


def _dicom_config(p: ImportPacs, method: str) -> DicomConfig:
    return DicomConfig(ae_title=CALLING_AE, pacs=Peer("ORTHANC", "127.0.0.1", p.dicom_port),
                       dicomweb_url=p.dicomweb_url if method == "qido-rs" else "")


@pytest.mark.parametrize("method", ["c-find", "qido-rs"])
def test_a_study_this_site_imported_is_skipped_and_recorded_without_a_manifest(
        method: str, imported_by_site_a: ImportPacs, recording_repository) -> None:  # type: ignore[no-untyped-def]
    config = replace(publish_config(recording_repository.url), consumer_identity=SITE_A)
    dicom = _dicom_config(imported_by_site_a, method)

    first = publish_study(NIST_STUDY_UID, dicom, config, trigger="stable")
    again = publish_study(NIST_STUDY_UID, dicom, config, trigger="mpps")

    assert first.outcome == again.outcome == Outcome.SKIPPED
    assert first.ok
    assert recording_repository.received == []
    [row] = Publication.objects.filter(study_instance_uid=NIST_STUDY_UID)  # recorded once, not per trigger
    assert row.status == Publication.Status.SKIPPED
    assert SITE_A in row.skip_reason
    assert row.kos_sop_instance_uid is None and row.entry_uuid is None and row.patient_id == ""
    assert row.instance_count == 36


@pytest.mark.parametrize("method", ["c-find", "qido-rs"])
def test_a_study_another_site_imported_is_published(method: str, imported_by_site_a: ImportPacs,  # type: ignore[no-untyped-def]
                                                    recording_repository) -> None:
    config = replace(publish_config(recording_repository.url), consumer_identity=SITE_B)

    result = publish_study(NIST_STUDY_UID, _dicom_config(imported_by_site_a, method), config, trigger="stable")

    assert result.outcome == Outcome.PUBLISHED, result.message
    assert len(recording_repository.received) == 1
    assert result.publication.status == Publication.Status.PUBLISHED


@pytest.mark.parametrize("method", ["c-find", "qido-rs"])
def test_the_finder_reads_the_importer_from_the_pacs_and_nothing_from_an_unimported_study(
        method: str, imported_by_site_a: ImportPacs, pacs) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    imported = find_study(NIST_STUDY_UID, _dicom_config(imported_by_site_a, method))
    assert imported is not None and imported.modifying_systems == [SITE_A]
    assert imported.patient_id == LOCAL_ID and imported.instance_count == 36

    original = find_study(NIST_STUDY_UID, replace(pacs.config(), dicomweb_url=pacs.dicomweb_url if method == "qido-rs"
                                                  else ""))
    assert original is not None and original.modifying_systems == []


def test_a_study_built_from_imported_files_names_its_importer(nist_files: dict[str, Path]) -> None:  # noqa: F811
    reconciliation = ImportReconciliation(LocalPatient(LOCAL_ID), SITE_A, AFFINITY_OID)
    datasets = [reconcile(pydicom.dcmread(p, stop_before_pixels=True), reconciliation) for p in nist_files.values()]
    assert StudyRef.from_datasets(datasets).modifying_systems == [SITE_A]
    assert StudyRef.from_datasets(pydicom.dcmread(p, stop_before_pixels=True)
                                  for p in nist_files.values()).modifying_systems == []


def test_the_site_consumer_identity_setting_is_what_the_publisher_skips(settings) -> None:  # type: ignore[no-untyped-def]
    from imaging_source.publish import PublishConfig

    settings.XDS_SITE_CONSUMER_IDENTITY = SITE_A
    assert PublishConfig.from_settings(settings).consumer_identity == SITE_A
