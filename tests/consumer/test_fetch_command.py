"""`manage.py xds_fetch`: exit codes, the JSON report, the summary lines; the whole chain find -> ITI-43 ->
RAD-69 -> files against this process's registry and repository and a gunicorn Imaging Document Source
in front of the test PACS (marked ``pacs``)."""

from __future__ import annotations

import io
import json
from io import StringIO
from pathlib import Path

import pydicom
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from consumer.models import Endpoint, EndpointKind
from tests.consumer.conftest import LOCATION_UID, NIST_STUDY, Domain, kos_part10, new_oid
from tests.consumer.import_pacs import ImportPacs
from tests.gunicorn_server import Server

ELSEWHERE_STUDY = "2.25.1234567890"


def fetch(*args: str) -> tuple[int, str, str]:
    out, err = StringIO(), StringIO()
    try:
        call_command("xds_fetch", *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def test_nothing_found_is_exit_1_with_a_clear_message_and_json(domain: Domain) -> None:
    patient = domain.patient()
    code, out, err = fetch("--patient", patient, "--json")
    assert code == 1
    assert f"no imaging manifest found for patient {patient}" in err
    report = json.loads(out)
    assert report["exit_code"] == 1 and report["manifests"] == [] and report["patient"] == patient
    assert report["registry"] == "local:registry"
    assert "no imaging manifest found" in report["error"]


def test_a_study_filter_matching_nothing_names_the_study(domain: Domain) -> None:
    patient = domain.patient()
    domain.publish(patient)
    study = new_oid()
    code, _, err = fetch("--patient", patient, "--study", study)
    assert code == 1 and f"and study {study}" in err


def test_hostile_patient_id_is_exit_1_naming_the_problem(domain: Domain) -> None:
    code, out, err = fetch("--patient", "x' OR '1'='1", "--json")
    assert code == 1 and "CX.4" in err and json.loads(out)["exit_code"] == 1


def test_bad_dates_and_registry_urls_are_refused(domain: Domain) -> None:
    with pytest.raises(CommandError, match="expected YYYY-MM-DD"):
        fetch("--patient", domain.patient(), "--since", "yesterday")
    with pytest.raises(CommandError, match="http:// or https://"):
        fetch("--patient", domain.patient(), "--registry", "file:///etc/passwd")


def test_without_out_the_manifests_are_listed_and_nothing_retrieved(domain: Domain, tmp_path: Path) -> None:
    patient = domain.patient()
    published = domain.publish(patient, study_uid=NIST_STUDY)
    code, out, _ = fetch("--patient", patient, "--json")
    assert code == 0
    (manifest,) = json.loads(out)["manifests"]
    assert manifest["unique_id"] == published.unique_id
    assert manifest["studies"] == [NIST_STUDY] and manifest["requested"] == 36 and manifest["error"] == ""


def test_an_unknown_repository_is_exit_1_naming_its_id(domain: Domain, settings) -> None:  # type: ignore[no-untyped-def]
    patient = domain.patient()
    domain.publish(patient)
    settings.XDS_REPOSITORY_UNIQUE_ID = "1.3.6.1.4.1.21367.13.70.999"  # this server is no longer that repository
    code, out, err = fetch("--patient", patient, "--json")
    assert code == 1
    assert "no Document Repository (ITI-43 Retrieve Document Set) endpoint for unique id " \
           "'1.3.6.1.4.1.21367.13.70.201'" in err
    assert "1.3.6.1.4.1.21367.13.70.201" in json.loads(out)["manifests"][0]["error"]


# ----------------------------------------------------------------------------- the whole chain (PACS)

def kos_elsewhere(unique_id: str) -> bytes:
    """The NIST KOS (as another study) with its series at a Retrieve Location nobody serves."""
    ds = pydicom.dcmread(io.BytesIO(kos_part10(unique_id, ELSEWHERE_STUDY)))
    for study in ds.CurrentRequestedProcedureEvidenceSequence:
        for series in study.ReferencedSeriesSequence:
            series.RetrieveLocationUID = "1.3.6.1.4.1.21367.13.80.999"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.pacs
def test_fetch_writes_the_study_then_a_rerun_finds_it_all_present(domain: Domain, ids: Server, tmp_path: Path,
                                                                  settings) -> None:  # type: ignore[no-untyped-def]
    settings.XDS_IMAGING_SOURCE_ID = "1.3.6.1.4.1.21367.13.80.1"  # not in process: the directory must say
    Endpoint.objects.create(kind=EndpointKind.IMAGING_SOURCE, unique_id=LOCATION_UID,
                            url=ids.endpoint("imaging-source"))
    patient = domain.patient()
    domain.publish(patient, study_uid=NIST_STUDY)
    out_dir = tmp_path / "images"

    code, out, err = fetch("--patient", patient, "--out", str(out_dir), "--progress")
    assert code == 0, err
    assert f"study {NIST_STUDY}: 36/36 instances present (36 retrieved, 0 already there, 0 failed)" in out
    assert "36/36 instances" in err and "MB/s" in err
    files = list(out_dir.rglob("*.dcm"))
    assert len(files) == 36 and all(pydicom.dcmread(f).StudyInstanceUID == NIST_STUDY for f in files)

    code, out, _ = fetch("--patient", patient, "--out", str(out_dir), "--json")
    assert code == 0
    (manifest,) = json.loads(out)["manifests"]
    assert (manifest["already_present"], manifest["retrieved"], manifest["failed"]) == (36, 0, 0)


@pytest.mark.pacs
def test_one_manifest_retrievable_and_one_not_is_partial_exit_2(domain: Domain, ids: Server, tmp_path: Path) -> None:
    Endpoint.objects.create(kind=EndpointKind.IMAGING_SOURCE, unique_id=LOCATION_UID,
                            url=ids.endpoint("imaging-source"))
    patient = domain.patient()
    domain.publish(patient, study_uid=NIST_STUDY, creation_time="20260101000000")
    unique_id = new_oid()
    domain.publish(patient, study_uid=ELSEWHERE_STUDY, content=kos_elsewhere(unique_id), unique_id=unique_id)

    code, out, _ = fetch("--patient", patient, "--out", str(tmp_path / "images"), "--json")

    assert code == 2
    first, second = json.loads(out)["manifests"]
    assert first["retrieved"] == 36 and first["failed"] == 0
    assert second["retrieved"] == 0 and second["failed"] == 36
    assert any("1.3.6.1.4.1.21367.13.80.999" in e["text"] for e in second["errors"])


@pytest.mark.pacs
@pytest.mark.parametrize("transport", ["--to-dicomweb", "--to-pacs"])
def test_fetch_imports_the_study_into_the_local_pacs_under_the_local_patient_id(
        domain: Domain, ids: Server, import_pacs: ImportPacs, settings, transport: str) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """The clinician's line: hospital A's study lands in this hospital's PACS as a prior of its own patient,
    UIDs and pixels unchanged, marked by this site's consumer identity (Original Attributes Sequence)."""
    Endpoint.objects.create(kind=EndpointKind.IMAGING_SOURCE, unique_id=LOCATION_UID,
                            url=ids.endpoint("imaging-source"))
    import_pacs.wipe_studies()
    settings.XDS_SITE_CONSUMER_IDENTITY = "XDSI_CONSUMER@HOSPITAL_B"
    patient = domain.patient()
    domain.publish(patient, study_uid=NIST_STUDY)
    target = (import_pacs.dicomweb_url if transport == "--to-dicomweb"
              else f"{import_pacs.ae_title}@127.0.0.1:{import_pacs.dicom_port}")

    code, out, err = fetch("--patient", patient, transport, target, "--calling-ae", import_pacs.calling_ae_title,
                           "--local-patient", "HOSPB-7^^^&1.2.826.0.1.3680043.10.1042&ISO")
    assert code == 0, err
    assert f"study {NIST_STUDY}: 36/36 instances present (36 retrieved" in out
    assert import_pacs.study_patient_ids(NIST_STUDY) == ["HOSPB-7"]
    stored = import_pacs.instance_files(NIST_STUDY)
    assert len(stored) == 36
    ds = pydicom.dcmread(io.BytesIO(next(iter(stored.values()))))
    (original,) = ds.OriginalAttributesSequence
    assert original.ModifyingSystem == "XDSI_CONSUMER@HOSPITAL_B"
    assert original.ReasonForTheAttributeModification == "COERCE"
    assert original.ModifiedAttributesSequence[0].PatientID != "HOSPB-7"
    # A second run finds everything in the PACS and fetches nothing.
    code, out, _ = fetch("--patient", patient, transport, target, "--calling-ae", import_pacs.calling_ae_title,
                         "--local-patient", "HOSPB-7^^^&1.2.826.0.1.3680043.10.1042&ISO", "--json")
    assert code == 0
    (manifest,) = json.loads(out)["manifests"]
    assert (manifest["already_present"], manifest["retrieved"]) == (36, 0)


def test_import_destinations_need_a_valid_local_patient_and_target(domain: Domain) -> None:
    patient = domain.patient()
    for args, needle in ((["--to-pacs", "ORTHANC@127.0.0.1:4242"], "--local-patient"),
                         (["--to-pacs", "no-port", "--local-patient", "L^^^&1.2.3&ISO"], "AET@host:port"),
                         (["--to-dicomweb", "ftp://x", "--local-patient", "L^^^&1.2.3&ISO"], "http"),
                         (["--out", "/tmp/x", "--to-dicomweb", "http://x"], "choose one destination"),
                         (["--to-dicomweb", "http://x", "--local-patient", "no-authority"], "CX.4")):
        with pytest.raises(CommandError, match=needle):
            call_command("xds_fetch", "--patient", patient, *args, stdout=StringIO(), stderr=StringIO())
