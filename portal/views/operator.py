"""Portal pages: the operator's view of this site's Imaging Document Source (issue #12, point 4).

``/operator/`` (summary), ``/operator/studies/`` (the PACS's studies and their publication state; publish),
``/operator/reconciliation/`` (map a local patient, then publish), ``/operator/jobs/`` (publication,
prefetch and import jobs; retry / cancel) and ``/operator/mpps/`` (recent MPPS).  The logic is
:mod:`imaging_source.operations`; these views read the settings, check who may act, and render.

Everyone logged in sees the pages; only this node's own hospital's users (and superusers) act on them
(:func:`portal.access.is_home_user`): a POST from anyone else is refused with the reason in words.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Page, Paginator
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_http_methods, require_safe

from consumer.models import PriorImport
from consumer.prefetch import IMPORT_PRIOR, PREFETCH_PRIORS
from imaging_source import operations
from imaging_source.dicom.config import DicomConfig
from imaging_source.models import PerformedProcedureStep, ReconciliationItem
from imaging_source.operations import FindError, PublicationState, dicom_date
from imaging_source.patient_mapping import source_patient_id
from imaging_source.publication_jobs import PUBLISH_STUDY
from imaging_source.publish import Outcome, PublishConfig
from jobs.models import JobState
from portal import audit as portal_audit
from portal.access import is_home_user, why_not_home
from xds_core import audit
from xds_core.log_ref import redact

logger = logging.getLogger("portal.operator")

#: Rows per page unless ``?size=`` asks for another number within 1..MAX_PAGE_SIZE.
PAGE_SIZE = 25
MAX_PAGE_SIZE = 100
#: Page numbers beyond this are refused: a QIDO-RS offset of millions is nobody's browsing.
MAX_PAGE = 10_000
#: A query-string value carried over to links and redirects: page numbers, sizes, statuses, states, kinds.
_QUERY_VALUE = re.compile(r"[A-Za-z0-9._-]+")
#: The job kinds the jobs page shows and acts on: this site's publications, prefetches and imports.
JOB_KINDS = (PUBLISH_STUDY, PREFETCH_PRIORS, IMPORT_PRIOR)
JOB_KIND_LABELS = {PUBLISH_STUDY: "publication (RAD-68)", PREFETCH_PRIORS: "prefetch of priors",
                   IMPORT_PRIOR: "import of a prior"}
STATE_CLASSES = {PublicationState.PUBLISHED: "ok", PublicationState.REPLACED: "ok", PublicationState.QUEUED: "warn",
                 PublicationState.FAILED: "bad", PublicationState.IMPORTED: "muted", PublicationState.NEVER: "muted"}


# --- helpers ----------------------------------------------------------------------------------------

def can_act(user: Any) -> bool:
    """Whether ``user`` may act on this node's imaging source: its own hospital's users and superusers."""
    return bool(getattr(user, "is_superuser", False)) or is_home_user(user)


def _bounded_int(value: str | None, default: int, low: int, high: int) -> int:
    """A page number or size from the query string: a number within [low, high], else ``default``."""
    if value is None or not value.isdigit() or len(value) > 6:
        return default
    number = int(value)
    return number if low <= number <= high else default


def _page_size(request: HttpRequest) -> int:
    return _bounded_int(request.GET.get("size"), PAGE_SIZE, 1, MAX_PAGE_SIZE)


def _paginate(request: HttpRequest, rows: Any, *, param: str = "page") -> Page:
    """A Django page of ``rows`` (already in a stable order); a bad or too-large page number gives the first
    or the last page (``Paginator.get_page``)."""
    return Paginator(rows, _page_size(request)).get_page(_bounded_int(request.GET.get(param), 1, 1, MAX_PAGE))


def _query(request: HttpRequest, *keep: str, **changes: Any) -> str:
    """This page's query string with only the known parameters ``keep`` (plus ``changes``): links and
    redirects never echo anything else back."""
    values = {k: request.GET.get(k) or request.POST.get(k) for k in keep}
    values.update({k: str(v) for k, v in changes.items()})
    clean = {k: v for k, v in values.items() if v and len(v) <= 64 and _QUERY_VALUE.fullmatch(v)}
    return f"?{urlencode(clean)}" if clean else ""


def _refused(request: HttpRequest) -> HttpResponse:
    """A POST from a user who may not act here: 403, with the reason in words."""
    reason = why_not_home(request.user) or "Only this node's own hospital's users act on its imaging source."
    portal_audit.refused(request, "operator action refused: not a user of this node's hospital")  # Security Alert
    logger.info("operator action refused user=%s path=%s", request.user.get_username(), request.path)
    return render(request, "portal/operator/refused.html", {"nav": "operator", "reason": reason}, status=403)


def _context(request: HttpRequest, **values: Any) -> dict[str, Any]:
    return {"nav": "operator", "can_act": can_act(request.user), "why_not": why_not_home(request.user),
            "page_size": _page_size(request), **values}


def _local_patient(patient_id: str, issuer: str) -> audit.ParticipantObject:
    """A local patient as an audit object: the DICOM Patient ID with its issuer as a CX (as sourcePatientId)."""
    return audit.patient(source_patient_id(patient_id, issuer or None, settings.XDS_IMAGING_SOURCE_PATIENT_AUTHORITY))


def _audit_patients(request: HttpRequest, patients: set[tuple[str, str]], description: str) -> None:
    shown = sorted((pid, issuer) for pid, issuer in patients if pid)
    if shown:
        portal_audit.patient_record_read(request, [_local_patient(pid, issuer) for pid, issuer in shown],
                                         description=description)


def _imported_study_uids(study_uids: list[str]) -> set[str]:
    """The studies among ``study_uids`` that this site's consumer imported (PriorImport rows), one query.

    ``icontains`` on the JSON text narrows the rows on every database backend (JSON ``contains`` is not
    available on SQLite); membership is then checked exactly."""
    if not study_uids:
        return set()
    wanted = set(study_uids)
    match = Q()
    for uid in study_uids:
        match |= Q(study_instance_uids__icontains=f'"{uid}"')
    found: set[str] = set()
    for uids in PriorImport.objects.filter(match).values_list("study_instance_uids", flat=True):
        found.update(u for u in uids or [] if isinstance(u, str) and u in wanted)
    return found


# --- pages ------------------------------------------------------------------------------------------

@login_required
@require_safe
def summary(request: HttpRequest) -> HttpResponse:
    """The operator's summary: counts and links (no patient data)."""
    counts = operations.job_counts(JOB_KINDS)
    recent = list(PerformedProcedureStep.objects.order_by("-created_at", "-id")[:5])
    context = _context(
        request,
        open_reconciliations=ReconciliationItem.objects.filter(status=ReconciliationItem.Status.OPEN).count(),
        job_counts=counts, pacs=_pacs_label(),
        prior_imports=PriorImport.objects.count(),
        recent_mpps=[(step, operations.mpps_summary(step.attributes)) for step in recent])
    return render(request, "portal/operator/summary.html", context)


#: What the pages say on a node without a PACS (the demo's domain node).
NO_PACS = "This node has no PACS (DICOM_PACS and DICOMWEB_URL are empty)."


def _dicom_config() -> DicomConfig | None:
    """The PACS settings, or None on a node that has no PACS."""
    if settings.DICOM_PACS is None and not settings.DICOMWEB_URL:
        return None
    return DicomConfig.from_settings(settings)


def _pacs_label() -> str:
    """The PACS the operator pages ask ("" when this node has none: the domain node of the demo)."""
    pacs = settings.DICOM_PACS
    if settings.DICOMWEB_URL:
        return settings.DICOMWEB_URL
    return f"{pacs['ae_title']}@{pacs['host']}:{pacs['port']} (C-FIND)" if pacs else ""


@login_required
@require_http_methods(["GET", "POST"])
def studies(request: HttpRequest) -> HttpResponse:
    """The PACS's studies, a page at a time, with their publication state; POST: publish one."""
    keep = ("page", "size")
    if request.method == "POST":
        if not can_act(request.user):
            return _refused(request)
        _publish(request)
        return HttpResponseRedirect(reverse("portal:operator_studies") + _query(request, *keep))
    number = _bounded_int(request.GET.get("page"), 1, 1, MAX_PAGE)
    size = _page_size(request)
    context = _context(request, pacs=_pacs_label(), page_number=number)
    dicom = _dicom_config()
    if dicom is None:
        context["pacs_error"] = NO_PACS
        return render(request, "portal/operator/studies.html", context)
    try:
        page = operations.pacs_studies(dicom, page=number, size=size)
    except FindError as exc:
        logger.warning("operator studies: PACS query failed: %s", redact(exc))
        context["pacs_error"] = str(exc)
        return render(request, "portal/operator/studies.html", context)
    uids = [s.study_instance_uid for s in page.studies]
    states = operations.publication_states(uids, imported=_imported_study_uids(uids))
    context.update(
        page=page, rows=[(s, states[s.study_instance_uid], STATE_CLASSES[states[s.study_instance_uid].state])
                         for s in page.studies],
        previous_query=_query(request, "size", page=number - 1), next_query=_query(request, "size", page=number + 1))
    _audit_patients(request, {(s.patient_id, s.issuer_of_patient_id) for s in page.studies},
                    "portal operator: the PACS's studies")
    return render(request, "portal/operator/studies.html", context)


def _publish(request: HttpRequest) -> None:
    study_uid = request.POST.get("study_uid", "")
    dicom = _dicom_config()
    if dicom is None:
        messages.error(request, NO_PACS + " Nothing was published.")
        return
    try:
        outcome = operations.request_publication(study_uid, dicom=dicom,
                                                 max_attempts=settings.XDS_JOBS_MAX_ATTEMPTS)
    except ValueError:
        messages.error(request, "That is not a Study Instance UID: nothing was published.")
        return
    except LookupError:
        messages.error(request, f"The PACS does not know study {study_uid}: nothing was published.")
        return
    except FindError as exc:
        messages.error(request, f"The PACS could not be asked about study {study_uid}, nothing was queued: {exc}")
        return
    if outcome.already_active:
        messages.info(request, f"The publication of study {study_uid} is already queued (job #{outcome.job.pk}).")
    else:
        messages.success(request, f"Publication of study {study_uid} queued (job #{outcome.job.pk}); the job "
                                  "worker sends it to the repository.")


@login_required
@require_http_methods(["GET", "POST"])
def reconciliation(request: HttpRequest) -> HttpResponse:
    """The reconciliation queue (open items by default); POST: map the local patient, then publish."""
    keep = ("status", "page", "size")
    if request.method == "POST":
        if not can_act(request.user):
            return _refused(request)
        _resolve(request)
        return HttpResponseRedirect(reverse("portal:reconciliation") + _query(request, *keep))
    status = request.GET.get("status", ReconciliationItem.Status.OPEN)
    if status not in ReconciliationItem.Status.values:
        status = ReconciliationItem.Status.OPEN
    page = _paginate(request, operations.reconciliation_items(status))
    items = list(page.object_list)
    mappings = operations.current_mappings((i.local_patient_id, i.local_issuer) for i in items
                                           if i.status == ReconciliationItem.Status.OPEN)
    context = _context(request, page=page, status=status, statuses=ReconciliationItem.Status.choices,
                       rows=[(i, mappings.get((i.local_patient_id, i.local_issuer), ""), dicom_date(i.study_date))
                             for i in items],
                       previous_query=_query(request, "status", "size", page=page.number - 1),
                       next_query=_query(request, "status", "size", page=page.number + 1))
    _audit_patients(request, {(i.local_patient_id, i.local_issuer) for i in items},
                    "portal operator: reconciliation queue")
    return render(request, "portal/operator/reconciliation.html", context)


def _resolve(request: HttpRequest) -> None:
    item_id = _bounded_int(request.POST.get("item"), 0, 1, 2**31 - 1)
    if not item_id:
        messages.error(request, "No reconciliation item was chosen.")
        return
    try:
        resolution = operations.resolve_reconciliation(
            item_id, request.POST.get("affinity_patient_id", ""), publish_config=PublishConfig.from_settings(settings),
            dicom=_dicom_config())
    except ValueError as exc:
        messages.error(request, f"Item {item_id}: the affinity-domain patient id is not valid ({exc}); nothing "
                                "was changed.")
        return
    except LookupError:
        messages.error(request, f"Item {item_id} is no longer open; nothing was changed.")
        return
    messages.success(request, f"Item {item_id}: the local patient is {'now' if resolution.mapping_created else 'again'}"
                              " mapped to the affinity domain.")
    for result in resolution.results:
        level = messages.SUCCESS if result.ok else (
            messages.WARNING if result.outcome == Outcome.QUEUED else messages.ERROR)
        messages.add_message(request, level, f"Study {result.study_instance_uid}: {result.outcome}"
                                             + (f" ({result.message})" if not result.ok and result.message else ""))
    for error in resolution.errors:
        messages.error(request, error)


@login_required
@require_http_methods(["GET", "POST"])
def jobs(request: HttpRequest) -> HttpResponse:
    """Publication, prefetch and import jobs (filter by kind and state); POST: retry now or cancel one."""
    keep = ("kind", "state", "page", "size")
    if request.method == "POST":
        if not can_act(request.user):
            return _refused(request)
        _job_action(request)
        return HttpResponseRedirect(reverse("portal:operator_jobs") + _query(request, *keep))
    kind = request.GET.get("kind", "")
    kind = kind if kind in JOB_KINDS else ""
    state = request.GET.get("state", "")
    state = state if state in JobState.values else ""
    page = _paginate(request, operations.jobs_of(JOB_KINDS, kind=kind, state=state))
    imports = _paginate(request, PriorImport.objects.order_by("-created_at", "-id"), param="ipage")
    context = _context(
        request, page=page, kind=kind, state=state, kinds=[(k, JOB_KIND_LABELS[k]) for k in JOB_KINDS],
        states=JobState.choices, counts=operations.job_counts(JOB_KINDS), imports=imports,
        waiting_states=("queued", "failed"), retry_states=("failed", "dead"),
        previous_query=_query(request, "kind", "state", "size", "ipage", page=page.number - 1),
        next_query=_query(request, "kind", "state", "size", "ipage", page=page.number + 1),
        previous_imports_query=_query(request, "kind", "state", "size", "page", ipage=imports.number - 1),
        next_imports_query=_query(request, "kind", "state", "size", "page", ipage=imports.number + 1))
    return render(request, "portal/operator/jobs.html", context)


def _job_action(request: HttpRequest) -> None:
    job_id = _bounded_int(request.POST.get("job"), 0, 1, 2**31 - 1)
    action = request.POST.get("action", "")
    if not job_id or action not in ("retry", "cancel"):
        messages.error(request, "Choose a job and an action (retry or cancel).")
        return
    if action == "retry":
        retried, skipped = operations.retry_jobs([job_id], JOB_KINDS)
        if retried:
            messages.success(request, f"Job #{job_id} queued to run now.")
        elif skipped:
            messages.warning(request, f"Job #{job_id} not retried: another job does the same work and is already "
                                      "queued or running.")
        else:
            messages.error(request, f"Job #{job_id} cannot be retried (only failed or dead jobs can).")
        return
    cancelled = operations.cancel_jobs([job_id], JOB_KINDS, reason=f"by {request.user.get_username()} (portal)")
    if cancelled:
        messages.success(request, f"Job #{job_id} cancelled.")
    else:
        messages.error(request, f"Job #{job_id} cannot be cancelled (only queued jobs or failed jobs awaiting a "
                                "retry can; a running job belongs to its worker).")


@login_required
@require_safe
def mpps(request: HttpRequest) -> HttpResponse:
    """Recent Modality Performed Procedure Steps, newest first."""
    page = _paginate(request, PerformedProcedureStep.objects.order_by("-created_at", "-id"))
    rows = [(step, operations.mpps_summary(step.attributes)) for step in page.object_list]
    _audit_patients(request, {(s.patient_id, s.issuer_of_patient_id) for _, s in rows}, "portal operator: MPPS")
    context = _context(request, page=page, rows=rows,
                       previous_query=_query(request, "size", page=page.number - 1),
                       next_query=_query(request, "size", page=page.number + 1))
    return render(request, "portal/operator/mpps.html", context)


urlpatterns: list[URLPattern] = [
    path("operator/", summary, name="operator"),
    path("operator/studies/", studies, name="operator_studies"),
    path("operator/reconciliation/", reconciliation, name="reconciliation"),
    path("operator/jobs/", jobs, name="operator_jobs"),
    path("operator/mpps/", mpps, name="mpps"),
]
