"""The clinician's manifest page: study -> series -> instances with thumbnails, import into this hospital's PACS,
download as a zip.  The manifest is a real ITI-41 into this process's registry and repository, read by
ITI-18 + ITI-43; images come by RAD-69 from a real imaging source (gunicorn) in front of the test PACS and
go into a second, real Orthanc (marked ``pacs``)."""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import re
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse
from PIL import Image

from consumer.fetch import transfer_syntaxes
from consumer.files import FilesDestination
from consumer.models import Endpoint, EndpointKind, PriorImport, PriorImportState
from consumer.prefetch import IMPORT_PRIOR, ImportProgress
from consumer.retrieval import ProgressEvent, retrieve_manifest
from imaging_source.models import PatientMapping
from jobs.api import enqueue
from jobs.models import Job, JobState
from jobs.worker import WorkerConfig, run_pending
from kos.reader import read_manifest
from portal import limits
from portal.manifest_cache import manifest_of
from portal.models import Hospital, ManifestCache, Membership, ThumbnailCache
from tests.consumer.conftest import (  # noqa: F401 - fixtures
    LOCATION_UID,
    NIST_STUDY,
    REPOSITORY_ID,
    Domain,
    Published,
    domain,
    ids,
)
from tests.consumer.import_pacs import ImportPacs
from tests.gunicorn_server import Server
from xds_core import audit

SITE = "hospital-b"
LOCAL_AUTHORITY = "1.2.826.0.1.3680043.10.1042"
HOSTILE = ["..", "1.2.3'", "1.2.03", "x" * 70, "1." + "2" * 70, "3.1.2", "%2e%2e", "1.2.3;drop"]


@pytest.fixture
def site(settings, tmp_path: Path):  # type: ignore[no-untyped-def]
    settings.XDS_SITE_KEY = SITE
    settings.XDS_SITE_NAME = "Hospital B"
    settings.VAR_DIR = tmp_path / "var"
    settings.XDS_PORTAL_ZIP_CONCURRENCY = 2
    settings.XDS_IMAGING_SOURCE_ID = "1.3.6.1.4.1.21367.13.80.1"  # not the NIST location: the directory says
    settings.XDS_IMAGING_SOURCE_PATIENT_AUTHORITY = LOCAL_AUTHORITY
    return settings


def member(django_user_model, username: str, key: str, name: str) -> Client:  # type: ignore[no-untyped-def]
    hospital, _ = Hospital.objects.get_or_create(key=key, defaults={"name": name})
    user = django_user_model.objects.create_user(username, password="pw-for-tests")
    Membership.objects.create(user=user, hospital=hospital)
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def home(site, domain: Domain, django_user_model) -> Client:  # type: ignore[no-untyped-def]  # noqa: F811
    return member(django_user_model, "clinician-b", SITE, "Hospital B")


@pytest.fixture
def visitor(site, domain: Domain, django_user_model) -> Client:  # type: ignore[no-untyped-def]  # noqa: F811
    return member(django_user_model, "clinician-a", "hospital-a", "Hospital A")


@pytest.fixture
def published(domain: Domain) -> Published:  # noqa: F811
    return domain.publish(domain.patient(), study_uid=NIST_STUDY)


def urls(published: Published) -> dict[str, str]:
    args = [REPOSITORY_ID, published.unique_id]
    return {name: reverse(f"portal:{name}", args=args) for name in ("manifest", "import", "download")}


def series_uids() -> list[str]:
    from tests.consumer.conftest import kos_part10

    manifest = read_manifest(kos_part10("1.2.3"))
    return [se.series_instance_uid for st in manifest.studies for se in st.series]


def rad69(events: list[audit.AuditEvent]) -> int:
    return sum(1 for e in events if e.transaction == audit.Transaction.RAD_69)


def iti43(events: list[audit.AuditEvent]) -> int:
    """ITI-43s this node ran as the consumer (the in-process repository records its own side: Export)."""
    return sum(1 for e in events if e.transaction == audit.Transaction.ITI_43 and e.event_id == audit.EventId.IMPORT)


# ----------------------------------------------------------------------------- the page (no PACS needed)

@pytest.mark.django_db
def test_anonymous_users_are_sent_to_the_login_page(published: Published) -> None:
    for url in urls(published).values():
        response = Client().get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("portal:login"))


@pytest.mark.django_db
@pytest.mark.parametrize("bad", HOSTILE)
def test_hostile_repository_and_document_ids_are_404(home: Client, published: Published, bad: str) -> None:
    for args in ([bad, published.unique_id], [REPOSITORY_ID, bad]):
        for name in ("manifest", "download"):
            assert home.get(f"/manifests/{args[0]}/{args[1]}/" + ("" if name == "manifest" else "download.zip")
                            ).status_code == 404
        assert home.get(f"/manifests/{args[0]}/{args[1]}/series/{NIST_STUDY}/thumbnail.png").status_code == 404
    assert not ManifestCache.objects.exists()


@pytest.mark.django_db
def test_a_manifest_the_registry_does_not_know_or_holds_elsewhere_is_404(home: Client, published: Published) -> None:
    assert home.get(reverse("portal:manifest", args=[REPOSITORY_ID, "1.2.3.4.5"])).status_code == 404
    assert home.get(reverse("portal:manifest", args=["1.2.3.4.6", published.unique_id])).status_code == 404


@pytest.mark.django_db
def test_the_page_lists_the_studys_series_and_a_second_view_reads_no_manifest_again(
        home: Client, published: Published) -> None:
    with audit.capture() as events:
        first = home.get(urls(published)["manifest"])
    assert first.status_code == 200
    page = first.content.decode()
    assert iti43(events) == 1
    assert page.count('class="series-item"') == len(series_uids()) and len(series_uids()) > 1
    for uid in series_uids():
        assert reverse("portal:thumbnail", args=[REPOSITORY_ID, published.unique_id, uid]) in page
    assert re.search(r'<img class="thumbnail" src="[^"]+" width="128" height="128" loading="lazy" alt="Series \d+: '
                     r'middle image', page)
    assert "36 instances" in page and NIST_STUDY in page and "not in the endpoint directory" in page
    assert page.count("<details") == len(series_uids())
    assert 'id="import-form"' in page and 'id="import-button"' in page and 'id="download-zip"' in page
    assert any(e.event_id == audit.EventId.PATIENT_RECORD and e.requestor and e.requestor.user_id == "clinician-b"
               for e in events)
    with audit.capture() as events:
        assert home.get(urls(published)["manifest"]).status_code == 200
    assert iti43(events) == 0
    row = ManifestCache.objects.get()
    assert (row.document_uid, row.instance_count, row.study_uids) == (published.unique_id, 36, [NIST_STUDY])


@pytest.mark.django_db
def test_a_registry_that_is_down_is_a_message_not_a_stack_trace(home: Client, published: Published,
                                                                 settings) -> None:  # type: ignore[no-untyped-def]
    settings.XDS_CONSUMER_REGISTRY_URL = "http://127.0.0.1:9/xds/registry"
    response = home.get(urls(published)["manifest"])
    assert response.status_code == 502
    page = response.content.decode()
    assert 'class="error-box" role="alert"' in page and "127.0.0.1:9" in page and "Traceback" not in page


@pytest.mark.django_db
def test_thumbnail_of_a_series_not_in_the_manifest_is_404(home: Client, published: Published) -> None:
    home.get(urls(published)["manifest"])
    for series in (NIST_STUDY, "1.2.3.4.5.6", "..", "1.2.03"):
        url = f"/manifests/{REPOSITORY_ID}/{published.unique_id}/series/{series}/thumbnail.png"
        assert home.get(url).status_code == 404


@pytest.mark.django_db
def test_a_thumbnail_whose_source_is_unknown_is_a_placeholder_with_502(home: Client, published: Published) -> None:
    home.get(urls(published)["manifest"])
    response = home.get(reverse("portal:thumbnail", args=[REPOSITORY_ID, published.unique_id, series_uids()[0]]))
    assert response.status_code == 502 and response["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == (128, 128)
    assert not ThumbnailCache.objects.exists()


@pytest.mark.django_db
def test_the_page_of_a_500_instance_study_renders_fast_once_cached(home: Client, published: Published) -> None:
    home.get(urls(published)["manifest"])
    row = ManifestCache.objects.get()
    series = row.structure[0]["series"]
    for n, se in enumerate(series):  # 500 instances over the study's series
        se["instances"] = [[se["instances"][0][0], f"1.2.826.0.1.3680043.10.1.{n}.{i}"]
                           for i in range(500 // len(series) + (n < 500 % len(series)))]
    row.instance_count = sum(len(se["instances"]) for se in series)
    row.save()
    for se in series:
        middle = se["instances"][len(se["instances"]) // 2][1]
        ThumbnailCache.objects.create(sop_instance_uid=middle, series_instance_uid=se["uid"], png=b"png", width=128,
                                      height=100, modality="CT", series_description="AXIAL 5mm", series_number=2)
    assert row.instance_count == 500
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        response = home.get(urls(published)["manifest"])
        timings.append(time.perf_counter() - started)
        assert response.status_code == 200
    page = response.content.decode()
    assert page.count("<li><code>1.2.826.0.1.3680043.10.1.") == 500
    assert 'alt="Series 2, CT, AXIAL 5mm: middle image"' in page and 'height="100"' in page
    timings.sort()
    assert timings[int(len(timings) * 0.95) - 1] < 0.1, timings  # p95 of the server's time (test client)


# ----------------------------------------------------------------------------- import (no PACS needed)

@pytest.mark.django_db
def test_a_user_of_another_hospital_sees_why_and_gets_403_in_words(visitor: Client, published: Published) -> None:
    page = visitor.get(urls(published)["manifest"]).content.decode()
    assert re.search(r'<button id="import-button" type="submit" disabled', page)
    assert "You belong to Hospital A; this node is Hospital B." in page
    response = visitor.post(urls(published)["import"], {"local_patient_id": "HOSPB-7"})
    assert response.status_code == 403
    assert "You belong to Hospital A" in response.content.decode()
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_import_asks_for_the_local_patient_and_refuses_bad_ones(home: Client, published: Published) -> None:
    page = home.get(urls(published)["manifest"]).content.decode()
    assert '<label for="local-patient-id">' in page and 'name="local_patient_id"' in page
    for bad in ("", "P1^^^&not-an-oid&ISO", "P1^x^^&1.2.3&ISO", "a\\b", "x" * 65):
        response = home.post(urls(published)["import"], {"local_patient_id": bad})
        assert response.status_code == 400, bad
        assert 'class="error-box" role="alert"' in response.content.decode()
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_import_enqueues_one_job_and_a_second_click_goes_to_the_same_job(home: Client, published: Published) -> None:
    response = home.post(urls(published)["import"], {"local_patient_id": "HOSPB-7"})
    assert response.status_code == 302
    job = Job.objects.get()
    assert response["Location"] == reverse("portal:import_status", args=[job.pk])
    assert (job.kind, job.key, job.state) == (IMPORT_PRIOR, published.unique_id, JobState.QUEUED)
    assert job.payload["local_patient_id"] == "HOSPB-7" and job.payload["local_issuer"] == ""
    assert job.payload["trigger"] == "portal:clinician-b" and job.payload["found"]["unique_id"] == published.unique_id
    again = home.post(urls(published)["import"], {"local_patient_id": "HOSPB-7"})
    assert again["Location"] == response["Location"] and Job.objects.count() == 1
    status = home.get(response["Location"])
    page = status.content.decode()
    # The page updates itself from its own JSON (no <meta refresh>: WCAG 2.2.1), or by its Refresh link.
    assert '<strong id="import-state">queued</strong>' in page and 'http-equiv="refresh"' not in page
    assert 'id="import-refresh"' in page and "?format=json" in page
    polled = home.get(response["Location"], {"format": "json"}).json()
    assert polled == {"state": "queued", "active": True, "present": 0, "requested": 36, "detail": ""}
    assert '<progress id="import-progress" value="0" max="36">' in page


@pytest.mark.django_db
def test_the_patient_mapping_gives_the_local_patient(home: Client, published: Published) -> None:
    home.get(urls(published)["manifest"])
    patient = ManifestCache.objects.get().patient_id
    PatientMapping.objects.create(local_patient_id="MRN-42", local_issuer="HOSPB", affinity_patient_id=patient)
    page = home.get(urls(published)["manifest"]).content.decode()
    assert "MRN-42" in page and 'name="local_patient_id"' not in page
    home.post(urls(published)["import"])
    job = Job.objects.get()
    assert (job.payload["local_patient_id"], job.payload["local_issuer"]) == ("MRN-42", "HOSPB")


@pytest.mark.django_db
def test_the_status_page_shows_only_import_jobs_and_failures_in_words(home: Client, published: Published) -> None:
    other = enqueue("imaging_source.publish_study", {"x": 1})
    assert home.get(reverse("portal:import_status", args=[other.pk])).status_code == 404
    assert home.get("/imports/999999/").status_code == 404
    home.post(urls(published)["import"], {"local_patient_id": "HOSPB-7"})
    job = Job.objects.get(kind=IMPORT_PRIOR)
    Job.objects.filter(pk=job.pk).update(state=JobState.DEAD, last_error="JobError: prior x: failed (DestinationError)")
    page = home.get(reverse("portal:import_status", args=[job.pk])).content.decode()
    assert '<strong id="import-state">failed</strong>' in page and "DestinationError" in page
    assert 'role="alert"' in page and "http-equiv" not in page
    assert reverse("portal:manifest", args=[REPOSITORY_ID, published.unique_id]) in page


@pytest.mark.django_db
def test_import_progress_is_saved_at_most_once_a_second_and_at_each_series_end(domain: Domain) -> None:  # noqa: F811
    record = PriorImport.objects.create(manifest_unique_id="1.2.3", trigger="t", requested=10)
    clock = [0.0]
    progress = ImportProgress(record.pk, clock=lambda: clock[0])
    saved: list[int] = []

    def step(series: str, done: int, total: int) -> None:
        progress(ProgressEvent("instance", "1.2", series, "1.2.9", done, total))
        saved.append(PriorImport.objects.get(pk=record.pk).present)

    step("1.2.1", 1, 4)      # first: saved
    step("1.2.1", 2, 4)      # within the second: not saved
    clock[0] = 1.5
    step("1.2.1", 3, 4)      # a second later: saved
    step("1.2.1", 4, 4)      # the series' end: saved
    step("1.2.2", 1, 6)      # a new series counts on from 4
    assert saved == [1, 1, 3, 4, 4] and progress.present == 5


# ----------------------------------------------------------------------------- download limits (no PACS)

@pytest.mark.django_db
def test_all_zip_slots_taken_is_503_with_retry_after_in_words(home: Client, published: Published, site) -> None:  # type: ignore[no-untyped-def]
    fds = []
    for path in limits.slot_paths(Path(site.VAR_DIR) / "locks", "zip", 2):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fds.append(fd)
    try:
        response = home.get(urls(published)["download"])
        assert response.status_code == 503 and response["Retry-After"] == "30"
        assert "Try again in 30 seconds" in response.content.decode()
    finally:
        for fd in fds:
            os.close(fd)
    slot = limits.try_acquire(Path(site.VAR_DIR) / "locks", "zip", 2)
    assert slot is not None
    slot.release()


def test_slots_are_shared_by_every_opener_and_released_once(tmp_path: Path) -> None:
    first = limits.try_acquire(tmp_path, "zip", 2)
    second = limits.try_acquire(tmp_path, "zip", 2)
    assert first is not None and second is not None and first.path != second.path
    assert limits.try_acquire(tmp_path, "zip", 2) is None
    first.release()
    first.release()
    third = limits.try_acquire(tmp_path, "zip", 2)
    assert third is not None and third.path == first.path
    second.release()
    third.release()
    with pytest.raises(ValueError):
        limits.slot_paths(tmp_path, "../x", 1)


# ----------------------------------------------------------------------------- with the PACS

@pytest.fixture
def served(ids: Server, home: Client) -> Server:  # noqa: F811
    Endpoint.objects.create(kind=EndpointKind.IMAGING_SOURCE, unique_id=LOCATION_UID,
                            url=ids.endpoint("imaging-source"))
    return ids


@pytest.mark.pacs
@pytest.mark.django_db
def test_each_series_has_a_real_png_thumbnail_cached_by_sop_instance(home: Client, published: Published,
                                                                      served: Server) -> None:
    page = home.get(urls(published)["manifest"]).content.decode()
    assert served.endpoint("imaging-source") in page
    srcs = re.findall(r'<img class="thumbnail" src="([^"]+)"', page)
    assert len(srcs) == len(series_uids())
    with audit.capture() as events:
        responses = [home.get(src) for src in srcs]
    assert rad69(events) == len(srcs)
    for response in responses:
        assert response.status_code == 200 and response["Content-Type"] == "image/png"
        assert response["Cache-Control"] == "private, max-age=86400" and response["ETag"]
        image = Image.open(io.BytesIO(response.content))
        image.load()
        assert image.format == "PNG" and 0 < max(image.size) <= 128
    assert ThumbnailCache.objects.count() == len(srcs)
    with audit.capture() as events:
        again = home.get(srcs[0])
        not_modified = home.get(srcs[0], HTTP_IF_NONE_MATCH=again["ETag"])
    assert rad69(events) == 0 and again.content == responses[0].content and not_modified.status_code == 304
    page = home.get(urls(published)["manifest"]).content.decode()
    thumb = ThumbnailCache.objects.first()
    assert thumb is not None and thumb.modality
    assert re.search(rf'alt="Series \d+, {thumb.modality}[^"]*: middle image"', page)


@pytest.mark.pacs
@pytest.mark.django_db
def test_the_import_job_brings_the_study_into_this_hospitals_pacs(
        home: Client, published: Published, served: Server, import_pacs: ImportPacs, settings) -> None:  # type: ignore[no-untyped-def]
    import_pacs.wipe_studies()
    settings.DICOM_PACS = {"ae_title": import_pacs.ae_title, "host": "127.0.0.1", "port": import_pacs.dicom_port}
    settings.DICOM_AE_TITLE = import_pacs.calling_ae_title
    settings.XDS_SITE_CONSUMER_IDENTITY = "XDSI_CONSUMER@HOSPITAL_B"
    response = home.post(urls(published)["import"], {"local_patient_id": "HOSPB-7"})
    (ran,) = run_pending(WorkerConfig(kinds=(IMPORT_PRIOR,)))
    assert ran.state == JobState.SUCCEEDED, ran.last_error
    assert import_pacs.study_patient_ids(NIST_STUDY) == ["HOSPB-7"]
    assert len(import_pacs.instance_files(NIST_STUDY)) == 36
    record = PriorImport.objects.get(manifest_unique_id=published.unique_id)
    assert (record.state, record.present, record.requested) == (PriorImportState.IMPORTED, 36, 36)
    page = home.get(response["Location"]).content.decode()
    assert '<strong id="import-state">done</strong>' in page and 'value="36" max="36"' in page
    assert "http-equiv" not in page


def zip_of(response) -> tuple[bytes, int]:  # type: ignore[no-untyped-def]
    chunks = 0
    data = bytearray()
    for chunk in response.streaming_content:
        chunks += 1
        data += chunk
    # The test client's iterator closed the response at its end, with Django's request_finished handler
    # (close_old_connections) held off; closing it again here would close the test's own database connection.
    return bytes(data), chunks


@pytest.mark.pacs
@pytest.mark.django_db
def test_the_zip_download_is_every_instance_as_rad69_gives_it(home: Client, published: Published, served: Server,
                                                               tmp_path: Path, site) -> None:  # type: ignore[no-untyped-def]
    with audit.capture() as events:
        response = home.get(urls(published)["download"])
        assert response.status_code == 200 and response.streaming
        assert response["Content-Type"] == "application/zip"
        assert response["Content-Disposition"] == f'attachment; filename="manifest-{published.unique_id}.zip"'
        data, chunks = zip_of(response)
    assert chunks > 1
    assert any(e.event_id == audit.EventId.EXPORT and e.requestor and e.requestor.user_id == "clinician-b"
               for e in events)
    manifest = manifest_of(ManifestCache.objects.get())
    url = served.endpoint("imaging-source")
    report = retrieve_manifest(manifest, FilesDestination(tmp_path / "rad69"), resolve_imaging_source=lambda _: url,
                               transfer_syntaxes=transfer_syntaxes(compress=False))
    assert report.ok
    expected = {p.relative_to(tmp_path / "rad69").as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in (tmp_path / "rad69").rglob("*.dcm")}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        members = {n: hashlib.sha256(archive.read(n)).hexdigest() for n in archive.namelist() if n != "README.txt"}
        assert "36 of 36 instances" in archive.read("README.txt").decode()
    assert members == expected and len(members) == 36
    both = [limits.try_acquire(Path(site.VAR_DIR) / "locks", "zip", 2) for _ in range(2)]
    assert all(both)  # the download's slot was given back
    for slot in both:
        slot.release()  # type: ignore[union-attr]


@pytest.mark.pacs
@pytest.mark.django_db
def test_a_client_that_goes_away_gives_its_slot_back(home: Client, published: Published, served: Server,
                                                     site) -> None:  # type: ignore[no-untyped-def]
    locks = Path(site.VAR_DIR) / "locks"
    response = home.get(urls(published)["download"])
    first = next(iter(response.streaming_content))
    assert first.startswith(b"PK\x03\x04")
    other = limits.try_acquire(locks, "zip", 2)
    assert other is not None and limits.try_acquire(locks, "zip", 2) is None  # the download holds the other
    response.close()  # the client went away: the server closes the response
    last = limits.try_acquire(locks, "zip", 2)
    assert last is not None
    other.release()
    last.release()


@pytest.fixture(autouse=True)
def _no_threads_left() -> Iterator[None]:
    yield
    # A zip stream's retrieval thread ends at its next write once closed; give it a moment.
    import threading

    deadline = time.monotonic() + 30
    while any(t.name.startswith("zip-") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
