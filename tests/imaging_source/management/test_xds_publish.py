"""manage.py xds_publish: publishing from local files to a real SOAP peer, progress and exit status."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from imaging_source.models import Publication, ReconciliationItem
from kos.reader import read_manifest

from ..conftest import AFFINITY_PATIENT, IDS_DIR

pytestmark = pytest.mark.django_db


@pytest.fixture
def configured(settings, recording_repository):
    settings.XDS_REPOSITORY_URL = recording_repository.url
    settings.XDS_IMAGING_SOURCE_ID = "1.3.6.1.4.1.21367.13.80.110"
    settings.XDS_IMAGING_PATIENT_REWRITE = ""
    settings.XDS_AFFINITY_DOMAIN_CODES = ""
    settings.XDS_IMAGING_RETRIEVE_AE_TITLE = ""
    settings.DICOM_PACS = {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": 4242}
    return recording_repository


def _publish(*args: str) -> str:
    out = StringIO()
    call_command("xds_publish", *args, stdout=out, stderr=out)
    return out.getvalue()


def test_files_of_a_mapped_patient_are_published_once(configured) -> None:
    call_command("xds_patient_map", "set", "IDS-DEPT002-a", AFFINITY_PATIENT, stdout=StringIO())
    out = _publish("--files", str(IDS_DIR / "images"))
    assert "[1/1] 1.3.6.1.4.1.21367.201599.1.201604020954059: published (36 instances)" in out
    assert len(configured.received) == 1
    entry = configured.received[0].pnr.submission.document_entries[0]
    assert entry.patient_id == AFFINITY_PATIENT
    kos = read_manifest(configured.received[0].documents[entry.id])
    # Settings flow into the manifest: XDS_IMAGING_SOURCE_ID is the Retrieve Location UID (IMG-03),
    # the PACS AE title (DICOM_PACS) the Retrieve AE Title.
    assert {s.retrieve_location_uid for s in kos.studies[0].series} == {"1.3.6.1.4.1.21367.13.80.110"}
    assert {s.retrieve_ae_title for s in kos.studies[0].series} == {"ORTHANC"}
    out = _publish("--files", str(IDS_DIR / "images"))
    assert "unchanged" in out and len(configured.received) == 1
    assert Publication.objects.get().trigger == "command"


def test_unmapped_patient_is_queued_not_sent(configured) -> None:
    out = _publish("--files", str(IDS_DIR / "images"))
    assert "queued" in out
    assert configured.received == []
    assert ReconciliationItem.objects.filter(status="open").count() == 1


def test_repository_failure_makes_the_command_fail(configured) -> None:
    from xds_core.errors import ErrorCode, RegistryError, Severity

    call_command("xds_patient_map", "set", "IDS-DEPT002-a", AFFINITY_PATIENT, stdout=StringIO())
    configured.answer_errors = [RegistryError(ErrorCode.XDSRepositoryError, "disk full", Severity.ERROR, "")]
    with pytest.raises(CommandError, match="1 of 1 studies were not published"):
        _publish("--files", str(IDS_DIR / "images"))


def test_without_a_selection_the_command_says_what_it_needs() -> None:
    with pytest.raises(CommandError, match="--study"):
        _publish()


def test_files_without_dicom_are_refused(tmp_path) -> None:
    (tmp_path / "readme.txt").write_text("not dicom")
    with pytest.raises(CommandError, match="no DICOM instances"):
        _publish("--files", str(tmp_path))


@pytest.mark.pacs
def test_study_and_patient_selection_ask_the_real_pacs(settings, pacs, configured) -> None:
    from ..pacs_fixtures import NIST_STUDY_UID

    settings.DICOM_PACS = {"ae_title": pacs.peer.ae_title, "host": pacs.peer.host, "port": pacs.peer.port}
    settings.DICOM_AE_TITLE = pacs.ae_title
    settings.DICOMWEB_URL = ""
    call_command("xds_patient_map", "set", "IDS-DEPT002-a", AFFINITY_PATIENT, stdout=StringIO())
    out = _publish("--study", NIST_STUDY_UID)
    assert f"[1/1] {NIST_STUDY_UID}: published (36 instances)" in out
    out = _publish("--patient", "IDS-DEPT002-a")
    assert "1 studies found in the PACS" in out and "unchanged" in out
    assert len(configured.received) == 1
    with pytest.raises(CommandError, match="1 of 1"):
        _publish("--study", "1.2.3.4.5.6.7.8.9")
