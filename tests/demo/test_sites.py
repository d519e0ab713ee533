"""The two-hospital demo's sites: separate identities, ports, databases; env files a command can act as."""

from __future__ import annotations

import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from config import env
from demo.sites import REPOSITORY_UNIQUE_ID, demo_sites, endpoint_directory, site_database_url, write_env_files
from demo.studies import B_NIST, NIST_STUDY_UID, STUDIES, instances, studies_of


def _settings(tmp_path: Path) -> SimpleNamespace:
    return SimpleNamespace(
        VAR_DIR=tmp_path, PORT=8000, HL7_PORT=2575, WEB_CONCURRENCY=2,
        XDS_HOME_COMMUNITY_ID="urn:oid:1.3.6.1.4.1.21367.13.70.200",
        HOSPITAL_A_HTTP_PORT=8001, HOSPITAL_A_DICOM_PORT=11112, HOSPITAL_A_PACS_DICOM_PORT=4242,
        HOSPITAL_A_PACS_HTTP_PORT=8042, HOSPITAL_B_HTTP_PORT=8002, HOSPITAL_B_DICOM_PORT=11114,
        HOSPITAL_B_PACS_DICOM_PORT=4244, HOSPITAL_B_PACS_HTTP_PORT=8044)


def test_each_site_has_its_own_identity_ports_database_and_state(tmp_path: Path) -> None:
    sites = demo_sites(_settings(tmp_path))
    assert [s.key for s in sites] == ["domain", "hospital-a", "hospital-b"]
    domain, a, b = sites
    assert domain.services == ("web", "hl7", "jobs") and a.services == b.services == ("web", "dicom", "jobs")
    assert len({s.env["DATABASE_URL"] for s in sites}) == 3 and len({s.env["XDS_VAR_DIR"] for s in sites}) == 3
    ports = [s.http_port for s in sites] + [a.dicom_port, b.dicom_port] + [
        p for h in (a, b) for p in (h.pacs.dicom_port, h.pacs.http_port)]
    assert len(set(ports)) == len(ports)
    assert a.imaging_source_id != b.imaging_source_id and a.dicom_ae_title != b.dicom_ae_title
    assert a.env["XDS_SITE_CONSUMER_IDENTITY"] != b.env["XDS_SITE_CONSUMER_IDENTITY"]
    for hospital in (a, b):  # the domain's actors only over HTTP
        assert hospital.env["XDS_REPOSITORY_URL"] == "http://127.0.0.1:8000/xds/repository"
        assert hospital.env["XDS_CONSUMER_REGISTRY_URL"] == "http://127.0.0.1:8000/xds/registry"
        assert hospital.env["DICOM_PACS"] == f"{hospital.pacs.ae_title}@127.0.0.1:{hospital.pacs.dicom_port}"
        assert hospital.env["XDS_PREFETCH"] == "true"
    assert all(s.env["XDS_DEMO"] == "false" for s in sites)  # a site is a single node


def test_every_site_value_is_a_valid_setting(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """What make run writes must pass the settings module's own checks (it fails loudly otherwise)."""
    import importlib

    import config.settings

    monkeypatch.setattr(env, "REGISTRY", dict(env.REGISTRY))
    for site in demo_sites(_settings(tmp_path)):
        for key, value in site.env.items():
            monkeypatch.setenv(key, value)
        importlib.reload(config.settings)
    monkeypatch.undo()
    importlib.reload(config.settings)


def test_postgres_sites_get_a_database_each_and_sqlite_a_file_under_their_var(tmp_path: Path) -> None:
    assert site_database_url("postgres://postgres@127.0.0.1:5432/xdsi", "hospital-a", tmp_path) == (
        "postgres://postgres@127.0.0.1:5432/xdsi_hospital_a")
    assert site_database_url("postgresql://u:p@db/x?sslmode=require", "domain", tmp_path) == (
        "postgresql://u:p@db/x_domain?sslmode=require")
    assert site_database_url("", "hospital-b", tmp_path / "b") == f"sqlite:///{tmp_path / 'b' / 'xds.sqlite3'}"


def test_env_files_are_private_and_say_what_the_site_is(tmp_path: Path) -> None:
    sites = demo_sites(_settings(tmp_path))
    files = write_env_files(sites, tmp_path / "demo")
    b = files["hospital-b"]
    assert stat.S_IMODE(b.stat().st_mode) == 0o600
    lines = dict(line.split("=", 1) for line in b.read_text().splitlines() if not line.startswith("#"))
    assert lines == sites[2].env


def test_the_endpoint_directory_names_the_repository_and_both_imaging_sources(tmp_path: Path) -> None:
    sites = demo_sites(_settings(tmp_path))
    entries = {(e["kind"], e["unique_id"]): e["url"] for e in endpoint_directory(sites)}
    assert entries == {("repository", REPOSITORY_UNIQUE_ID): "http://127.0.0.1:8000/xds/repository",
                       ("imaging_source", sites[1].imaging_source_id): "http://127.0.0.1:8001/xds/imaging-source",
                       ("imaging_source", sites[2].imaging_source_id): "http://127.0.0.1:8002/xds/imaging-source"}


@pytest.mark.parametrize("study", [s for s in STUDIES if s.seed], ids=lambda s: s.seed)
def test_generated_demo_studies_are_the_same_on_every_start(study) -> None:  # type: ignore[no-untyped-def]
    import io

    import pydicom

    first, again = list(instances(study)), list(instances(study))
    assert first == again and len(first) == study.instances
    ds = pydicom.dcmread(io.BytesIO(first[0]))
    assert ds.StudyInstanceUID == study.study_instance_uid and ds.PatientID == study.record.local_id
    assert ds.get("IssuerOfPatientID", "") == study.record.issuer


def test_hospital_b_holds_the_nist_patient_under_another_local_id() -> None:
    assert NIST_STUDY_UID in [s.study_instance_uid for s in studies_of("hospital-a")]
    b_studies = [s for s in studies_of("hospital-b") if s.record is B_NIST]
    assert b_studies and B_NIST.local_id != "IDS-DEPT002-a"
    assert B_NIST.local_cx() == f"B-20417^^^&{B_NIST.issuer}&ISO"


def test_schedule_refuses_without_a_worklist_or_with_a_bad_modality(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from django.core.management import call_command
    from django.core.management.base import CommandError

    settings.DICOM_WORKLIST = None
    with pytest.raises(CommandError, match="DICOM_WORKLIST is empty"):
        call_command("xds_demo_schedule", "--patient", "B-1", "--modality", "CT")
    settings.DICOM_WORKLIST = {"ae_title": "HOSPB_PACS", "host": "127.0.0.1", "port": 4244}
    with pytest.raises(CommandError, match="not a DICOM modality"):
        call_command("xds_demo_schedule", "--patient", "B-1", "--modality", "C T/../x")
    call_command("xds_demo_schedule", "--patient", "B-1", "--modality", "ct", "--worklists", str(tmp_path))
    (written,) = tmp_path.glob("*.wl")
    import pydicom

    item = pydicom.dcmread(written)
    assert item.PatientID == "B-1" and item.ScheduledProcedureStepSequence[0].Modality == "CT"


def test_every_site_knows_its_key_name_the_other_nodes_and_the_affinity_authority(tmp_path: Path) -> None:
    from demo.sites import AFFINITY_AUTHORITY

    sites = demo_sites(_settings(tmp_path))
    for site in sites:
        assert (site.env["XDS_SITE_KEY"], site.env["XDS_SITE_NAME"]) == (site.key, site.title)
        assert site.env["XDS_AFFINITY_DOMAIN_AUTHORITY"] == AFFINITY_AUTHORITY
        peers = env.named_urls(site.env["XDS_PORTAL_PEERS"])  # what the setting will parse
        assert peers == [(other.title, other.base_url) for other in sites if other is not site]
        env.site_key(site.env["XDS_SITE_KEY"])
    domain = sites[0]
    assert domain.env["DICOM_PACS"] == domain.env["DICOMWEB_URL"] == ""  # no PACS: not Hospital A's by default
