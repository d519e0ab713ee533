"""`make run`'s supervisor: which services it starts."""

from __future__ import annotations

from config.supervisor import services


def test_the_job_worker_is_a_service_unless_turned_off(settings) -> None:
    settings.XDS_RUN_HL7 = settings.XDS_RUN_DICOM = settings.XDS_RUN_JOBS = True
    jobs = {s.name: s for s in services()}["jobs"]
    assert jobs.argv[-1] == "xds_jobs_worker"
    settings.XDS_RUN_JOBS = False
    assert [s.name for s in services()] == ["web", "hl7", "dicom"]


def test_a_demo_site_runs_its_own_processes_with_its_env_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from config.supervisor import node_services

    running = node_services(8002, 2, ("web", "dicom", "jobs"), prefix="b-",
                            env={"XDS_ENV_FILE": str(tmp_path / "hospital-b.env")})
    assert [s.name for s in running] == ["b-web", "b-dicom", "b-jobs"]
    assert all(s.env and s.env["XDS_ENV_FILE"].endswith("hospital-b.env") for s in running)
    assert "127.0.0.1:8002" in running[0].argv


def test_the_banner_prints_every_address_and_the_import_line(settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from config.supervisor import banner
    from demo.sites import demo_sites, write_env_files
    from demo.studies import B_NIST, NIST_PATIENT, NIST_STUDY_UID, affinity_cx

    settings.VAR_DIR = tmp_path
    sites = demo_sites(settings)
    files = write_env_files(sites, tmp_path / "demo")
    b = sites[2]
    text = banner(sites, files, affinity_cx(NIST_PATIENT.affinity_id), NIST_STUDY_UID, b, B_NIST.local_cx(),
                  B_NIST.local_id, B_NIST.issuer, 12.0)
    for site in sites:
        assert site.base_url in text
    for hospital in sites[1:]:
        assert f"{hospital.dicom_ae_title}@127.0.0.1:{hospital.dicom_port}" in text
        assert f"{hospital.pacs.ae_title}@127.0.0.1:{hospital.pacs.dicom_port}" in text
        assert hospital.imaging_source_id in text
    (fetch,) = [line for line in text.splitlines() if "xds_fetch" in line]
    assert f"XDS_ENV_FILE={files['hospital-b']}" in fetch or "hospital-b.env" in fetch
    assert f"--study {NIST_STUDY_UID}" in fetch and f"--local-patient '{B_NIST.local_cx()}'" in fetch
    assert f"--to-pacs {b.pacs.ae_title}@127.0.0.1:{b.pacs.dicom_port}" in fetch
    assert "xds_demo_mpps" in text
