"""`make run`'s supervisor: which services it starts."""

from __future__ import annotations

from config.supervisor import services


def test_the_job_worker_is_a_service_unless_turned_off(settings) -> None:
    settings.XDS_RUN_HL7 = settings.XDS_RUN_DICOM = settings.XDS_RUN_JOBS = True
    jobs = {s.name: s for s in services()}["jobs"]
    assert jobs.argv[-1] == "xds_jobs_worker"
    settings.XDS_RUN_JOBS = False
    assert [s.name for s in services()] == ["web", "hl7", "dicom"]
