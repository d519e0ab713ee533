"""Portal pages: one imaging manifest -- its studies, series (with thumbnails) and instances; importing it
into this hospital's PACS; downloading its images as a zip.  The logic is in :mod:`portal.manifest_cache`,
:mod:`portal.imports` and :mod:`consumer.zip_download`; settings are read here and passed down."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import connections
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import render
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from consumer.directory import UnknownEndpoint
from consumer.fetch import transfer_syntaxes
from consumer.models import EndpointKind
from consumer.prefetch import IMPORT_PRIOR, PrefetchConfig
from consumer.zip_download import ZipStream
from jobs.models import Job
from portal import audit, limits
from portal.access import is_home_user, why_not_home
from portal.imports import LocalPatient, import_status, mapped_patient, queue_import, typed_patient
from portal.manifest_cache import (
    ManifestUnavailable,
    NotFound,
    Sources,
    ThumbnailUnavailable,
    cached_manifest,
    load_manifest,
    manifest_of,
    page_studies,
    placeholder_png,
    series_thumbnail,
)
from portal.models import ManifestCache
from xds_core import audit as xds_audit
from xds_core.identifiers import is_dicom_uid
from xds_core.log_ref import log_ref

logger = logging.getLogger(__name__)

#: A zip download that finds every slot taken is told to come back after this many seconds.
RETRY_AFTER = 30
#: How long a zip download waits for a slot before that answer (a download that just ended frees its slot).
ZIP_SLOT_WAIT = 2.0
_STATUS_WORD = re.compile(r"[A-Za-z]+$")


def _sources() -> Sources:
    config = PrefetchConfig.from_settings(settings)
    return Sources(settings.XDS_CONSUMER_REGISTRY_URL, config.resolvers(),
                   tuple(transfer_syntaxes(compress=True)))


def _status_word(status: str) -> str:
    """``urn:oasis:names:tc:ebxml-regrep:StatusType:Approved`` -> ``Approved``."""
    match = _STATUS_WORD.search(status or "")
    return match.group(0) if match else (status or "unknown")


def _message(request: HttpRequest, title: str, message: str, status: int, *,
             row: ManifestCache | None = None) -> HttpResponse:
    return render(request, "portal/import_status.html",
                  {"nav": "patients", "problem_title": title, "problem": message, "row": row}, status=status)


def _load(request: HttpRequest, repository_uid: str, document_uid: str) -> tuple[ManifestCache | None, str, str]:
    """(the cached manifest, why its status is old, why it could not be read); Http404 when there is none."""
    try:
        loaded = load_manifest(repository_uid, document_uid, _sources(), now=timezone.now())
    except NotFound:
        raise Http404("no such manifest") from None
    except ManifestUnavailable as exc:
        return None, "", str(exc)
    return loaded.row, loaded.stale, ""


@login_required
@require_GET
def manifest(request: HttpRequest, repository_uid: str, document_uid: str) -> HttpResponse:
    row, stale, error = _load(request, repository_uid, document_uid)
    context: dict[str, object] = {"nav": "patients", "repository_uid": repository_uid, "document_uid": document_uid,
                                  "error": error, "stale": stale}
    if row is None:
        return render(request, "portal/manifest.html", context, status=502)
    # One Patient Record event per page view; the thumbnails this page loads are covered by it (their
    # RAD-69 is audited by the consumer's client), so the thumbnail view records none of its own.
    audit.patient_record_read(request, [xds_audit.patient(row.patient_id),
                                        xds_audit.document(row.document_uid, row.repository_uid),
                                        *(xds_audit.study(uid) for uid in row.study_uids)])
    home = is_home_user(request.user)
    mapped = mapped_patient(row.patient_id) if home else None
    sources = _sources()
    resolved: dict[str, str] = {}

    def location_url(uid: str) -> str:
        if uid not in resolved:
            try:
                resolved[uid] = sources.resolvers.imaging_source(uid)
            except UnknownEndpoint:
                resolved[uid] = ""
        return resolved[uid]

    context.update({"row": row, "status": _status_word(row.status), "studies": page_studies(row, location_url),
                    "can_import": home, "why_not": "" if home else why_not_home(request.user), "mapped": mapped,
                    "site_authority": settings.XDS_IMAGING_SOURCE_PATIENT_AUTHORITY})
    return render(request, "portal/manifest.html", context)


@login_required
@require_GET
def thumbnail(request: HttpRequest, repository_uid: str, document_uid: str, series_uid: str) -> HttpResponse:
    row = cached_manifest(repository_uid, document_uid)
    if row is None or not is_dicom_uid(series_uid):
        raise Http404("no such manifest or series")
    try:
        png = series_thumbnail(row, series_uid, _sources())
    except NotFound:
        raise Http404("no such series in the manifest") from None
    except ThumbnailUnavailable as exc:
        # The reason names UIDs: the log shows their references only (issue 13, no UIDs in logs).
        logger.warning("thumbnail manifest=%s series=%s unavailable (%d)", log_ref(document_uid),
                       log_ref(series_uid), exc.status)
        response = HttpResponse(placeholder_png(), content_type="image/png", status=exc.status)
        response["Cache-Control"] = "no-store"
        return response
    if request.headers.get("If-None-Match") == png.etag:
        response = HttpResponse(status=304)
    else:
        response = HttpResponse(png.data, content_type="image/png")
    response["ETag"] = png.etag
    response["Cache-Control"] = "private, max-age=86400"
    return response


@login_required
@require_POST
def import_manifest(request: HttpRequest, repository_uid: str, document_uid: str) -> HttpResponse:
    if not is_home_user(request.user):
        audit.refused(request, "import refused: not a user of this node's hospital")  # Security Alert
        return _message(request, "Import not allowed", why_not_home(request.user), 403)
    row, _stale, error = _load(request, repository_uid, document_uid)
    if row is None:
        return _message(request, "Import not possible", error, 502)
    patient: LocalPatient | None = mapped_patient(row.patient_id)
    if patient is None:
        patient, problems = typed_patient(request.POST.get("local_patient_id", ""),
                                          settings.XDS_IMAGING_SOURCE_PATIENT_AUTHORITY)
        if patient is None:
            return _message(request, "Import not started", " ".join(problems), 400, row=row)
    job = queue_import(row, patient, request.user.get_username(), max_attempts=settings.XDS_JOBS_MAX_ATTEMPTS)
    logger.info("portal import manifest=%s job=%d", log_ref(row.document_uid), job.pk)
    return HttpResponseRedirect(reverse("portal:import_status", args=[job.pk]))


@login_required
@require_GET
def import_status_page(request: HttpRequest, job_id: int) -> HttpResponse:
    job = Job.objects.filter(pk=job_id, kind=IMPORT_PRIOR).first()
    if job is None:
        raise Http404("no such import")
    status = import_status(job)
    if request.GET.get("format") == "json":
        # The page's own progress poll (a few lines of inline script; without script the page has a Refresh link).
        return JsonResponse({"state": status.state, "active": status.active, "present": status.present,
                             "requested": status.requested, "detail": status.detail},
                            headers={"Cache-Control": "no-store"})
    return render(request, "portal/import_status.html", {"nav": "patients", "job": job, "status": status})


@login_required
@require_GET
def download(request: HttpRequest, repository_uid: str, document_uid: str) -> HttpResponse:
    row, _stale, error = _load(request, repository_uid, document_uid)
    if row is None:
        return _message(request, "Download not possible", error, 502)
    slot = limits.acquire(Path(settings.VAR_DIR) / "locks", "zip", settings.XDS_PORTAL_ZIP_CONCURRENCY,
                          wait=ZIP_SLOT_WAIT)
    if slot is None:
        response = _message(request, "Too many downloads at once",
                            f"This node serves {settings.XDS_PORTAL_ZIP_CONCURRENCY} zip download(s) at a time "
                            f"and all are in use. Try again in {RETRY_AFTER} seconds.", 503, row=row)
        response["Retry-After"] = str(RETRY_AFTER)
        return response
    try:
        manifest_data = manifest_of(row)
        # Resolved here, in the request's thread: the retrieval's thread then needs no database.
        sources = _sources()
        urls: dict[str, str] = {}
        for study in manifest_data.studies:
            for series in study.series:
                uid = series.retrieve_location_uid
                if uid and uid not in urls:
                    try:
                        urls[uid] = sources.resolvers.imaging_source(uid)
                    except UnknownEndpoint:
                        pass

        def resolve(uid: str) -> str:
            if uid not in urls:
                raise UnknownEndpoint(EndpointKind.IMAGING_SOURCE, uid)
            return urls[uid]

        stream = ZipStream(manifest_data, row.document_uid, resolve_imaging_source=resolve,
                           transfer_syntaxes=transfer_syntaxes(compress=False), on_close=slot.release,
                           thread_teardown=connections.close_all)
    except BaseException:
        slot.release()
        raise
    audit.exported(request, [xds_audit.patient(row.patient_id),
                             xds_audit.document(row.document_uid, row.repository_uid),
                             *(xds_audit.study(uid) for uid in row.study_uids)])
    logger.info("portal zip download manifest=%s instances=%d", log_ref(row.document_uid), row.instance_count)
    response = StreamingHttpResponse(stream, content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="manifest-{row.document_uid}.zip"'
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


urlpatterns: list[URLPattern] = [
    path("manifests/<str:repository_uid>/<str:document_uid>/", manifest, name="manifest"),
    path("manifests/<str:repository_uid>/<str:document_uid>/series/<str:series_uid>/thumbnail.png", thumbnail,
         name="thumbnail"),
    path("manifests/<str:repository_uid>/<str:document_uid>/import", import_manifest, name="import"),
    path("manifests/<str:repository_uid>/<str:document_uid>/download.zip", download, name="download"),
    path("imports/<int:job_id>/", import_status_page, name="import_status"),
]
