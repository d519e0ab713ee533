"""Clinician pages: patient search and a patient's documents (a face of the Imaging Document Consumer).

The registry is asked with ITI-18 (consumer.browse); names come from the registry's own patient table
(fed by ITI-8), so a name search is only possible on the node that holds the registry.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.paginator import Page, Paginator
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, URLPattern, path, reverse

from consumer.browse import (
    BrowseError,
    DocumentView,
    PatientRecord,
    SourceGroup,
    SubmissionSetView,
    UnknownPatient,
    count_documents,
    normalise_patient_id,
    patient_record,
)
from consumer.models import Endpoint, EndpointKind
from portal import audit as portal_audit
from xds_core import audit
from xds_core.identifiers import is_dicom_uid, is_iso_oid
from xds_registry.models import Patient

#: Patients per page of a name search; documents per page of a patient.
PATIENTS_PER_PAGE = 25
DOCUMENTS_PER_PAGE = 25
#: A page waits this long for the registry, then says it is down.
REGISTRY_TIMEOUT = 15.0
MAX_NAME = 128
MAX_NAME_WORDS = 4


def _registry_url() -> str:
    return settings.XDS_CONSUMER_REGISTRY_URL


def _registry_here() -> bool:
    """Whether the registry (and its patient table) is in this process."""
    return not _registry_url()


def _registry_peer() -> tuple[str, str] | None:
    """The node of XDS_PORTAL_PEERS that serves the registry this node asks (same scheme://host:port)."""
    target = urlsplit(_registry_url())
    for name, url in settings.XDS_PORTAL_PEERS:
        peer = urlsplit(url)
        if (peer.scheme, peer.netloc) == (target.scheme, target.netloc):
            return name, url.rstrip("/") + "/patients/"
    return None


def _display_name(patient: Patient) -> str:
    return ", ".join(p for p in (patient.family_name, patient.given_name) if p)


def _readable_date(value: str) -> str:
    if len(value) >= 8 and value[:8].isascii() and value[:8].isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:8]}"
    return value


def _row(patient_id: str, patient: Patient | None, documents: int | None = None) -> dict[str, object]:
    return {"patient_id": patient_id, "name": _display_name(patient) if patient else "",
            "birth_date": _readable_date(patient.birth_date) if patient else "",
            "sex": patient.sex if patient else "", "documents": documents,
            "href": reverse("portal:patient") + "?" + urlencode({"id": patient_id})}


def _name_words(text: str) -> tuple[list[str], str]:
    """(words, problem): a name search is a few words, no control characters."""
    text = text.strip()
    if len(text) > MAX_NAME:
        return [], f"A name search is at most {MAX_NAME} characters."
    if any(unicodedata.category(ch)[0] == "C" for ch in text):
        return [], "The name contains control characters."
    words = text.replace(",", " ").replace("^", " ").split()
    if len(words) > MAX_NAME_WORDS:
        return [], f"A name search is at most {MAX_NAME_WORDS} words."
    return words, ""


def _name_matches(words: list[str]):  # type: ignore[no-untyped-def]
    """Live (not merged-away) patients whose family or given name contains every word; stable order."""
    found = Patient.objects.filter(merged_into__isnull=True)
    for word in words:
        found = found.filter(Q(family_name__icontains=word) | Q(given_name__icontains=word))
    return found.order_by("family_name", "given_name", "patient_id")


@login_required
def patients(request: HttpRequest) -> HttpResponse:
    """Patient search: by affinity patient id (ITI-18) or by name (the registry's patient table)."""
    pid_text = request.GET.get("pid", "")[:1024]
    name_text = request.GET.get("name", "")[:1024]
    here = _registry_here()
    errors: list[str] = []
    notes: list[str] = []
    rows: list[dict[str, object]] = []
    page: Page | None = None
    searched = False
    if pid_text.strip():
        searched = True
        patient_id, problems = normalise_patient_id(pid_text, settings.XDS_AFFINITY_DOMAIN_AUTHORITY)
        if problems:
            errors.append("That is not an affinity domain patient id (id^^^&OID&ISO or a bare id): "
                          + "; ".join(problems) + ".")
        else:
            known = Patient.objects.filter(patient_id=patient_id).first() if here else None
            try:
                count = count_documents(_registry_url(), patient_id, timeout=REGISTRY_TIMEOUT)
            except UnknownPatient:
                notes.append(f"The registry does not know patient {patient_id}: no patient feed (ITI-8) "
                             "has announced it.")
            except BrowseError as exc:
                errors.append(str(exc))
            else:
                if count or known is not None:
                    rows.append(_row(patient_id, known, count))
                if not count:
                    notes.append(f"The registry holds no documents for patient {patient_id}."
                                 + ("" if known is not None or not here else
                                    " The registry does not know this patient either (no ITI-8 feed)."))
        if name_text.strip():
            notes.append("Searched by patient id only; clear it to search by name.")
    elif name_text.strip():
        searched = True
        words, problem = _name_words(name_text)
        if problem:
            errors.append(problem)
        elif not here:
            notes.append("This node has no patient names: they come from the patient feed (ITI-8) held at "
                         "the registry's node, and a name search is done there.")
        elif words:
            page = Paginator(_name_matches(words), PATIENTS_PER_PAGE).get_page(request.GET.get("page"))
            rows += [_row(p.patient_id, p) for p in page.object_list]
            if not page.paginator.count:
                notes.append("No patient of the registry has that name.")
    query = {k: v for k, v in (("pid", pid_text), ("name", name_text)) if v}
    return render(request, "portal/patients.html", {
        "nav": "patients", "pid": pid_text, "name": name_text, "rows": rows, "page": page,
        "errors": errors, "notes": notes, "searched": searched, "registry_here": here,
        "registry_peer": None if here else _registry_peer(), "query": urlencode(query),
        "authority": settings.XDS_AFFINITY_DOMAIN_AUTHORITY,
    })


def _manifest_href(doc: DocumentView) -> str:
    """portal:manifest for a manifest entry with usable ids (hostile ids in the registry get no link)."""
    if not (doc.is_manifest and is_iso_oid(doc.repository_unique_id) and is_dicom_uid(doc.unique_id)):
        return ""
    kwargs = {"repository_uid": doc.repository_unique_id, "document_uid": doc.unique_id}
    try:
        return reverse("portal:manifest", kwargs=kwargs)
    except NoReverseMatch:  # the manifest page not (yet) routed: its documented path
        return f"/manifests/{doc.repository_unique_id}/{doc.unique_id}/"


#: One page: per source hospital, its submission sets with the documents shown on this page, and
#: whether the set began on an earlier page.
PageSets = list[tuple[SubmissionSetView, list[DocumentView], bool]]
PageGroups = list[tuple[SourceGroup, PageSets]]


def _page_groups(record: PatientRecord, number: str | None) -> tuple[Page, PageGroups]:
    """One page of documents (at most DOCUMENTS_PER_PAGE, in record order), regrouped by source hospital and
    submission set.  Paging by document keeps a page cheap to render however the sets are cut."""
    flat: list[tuple[SourceGroup, SubmissionSetView, DocumentView | None]] = []
    for group in record.sources:
        for ss in group.submission_sets:
            flat += [(group, ss, doc) for doc in ss.documents] or [(group, ss, None)]
    page = Paginator(flat, DOCUMENTS_PER_PAGE).get_page(number)
    groups: PageGroups = []
    for index, (group, ss, doc) in enumerate(page.object_list):
        if not groups or groups[-1][0] is not group:
            groups.append((group, []))
        sets = groups[-1][1]
        if not sets or sets[-1][0] is not ss:
            continued = index == 0 and bool(ss.documents) and doc is not ss.documents[0]
            sets.append((ss, [], continued))
        if doc is not None:
            sets[-1][1].append(doc)
    return page, groups


@login_required
def patient(request: HttpRequest) -> HttpResponse:
    """A patient's documents from one ITI-18 GetAll: by source hospital, then submission set."""
    text = request.GET.get("id", "")[:1024]
    patient_id, problems = normalise_patient_id(text, settings.XDS_AFFINITY_DOMAIN_AUTHORITY)
    context: dict[str, object] = {"nav": "patients", "patient_id": patient_id or text, "error": "",
                                  "record": None}
    if problems:
        context["error"] = "That is not an affinity domain patient id: " + "; ".join(problems) + "."
        return render(request, "portal/patient.html", context, status=400)
    known = Patient.objects.filter(patient_id=patient_id).first() if _registry_here() else None
    context["patient_name"] = _display_name(known) if known else ""
    source_names = {uid: desc for uid, desc in Endpoint.objects.filter(kind=EndpointKind.IMAGING_SOURCE)
                    .values_list("unique_id", "description") if desc}
    shown: list[audit.ParticipantObject] = [audit.patient(patient_id)]
    try:
        record = patient_record(_registry_url(), patient_id,
                                manifest_format_codes=frozenset(settings.XDS_CONSUMER_KOS_FORMAT_CODES),
                                source_names=source_names, timeout=REGISTRY_TIMEOUT)
    except BrowseError as exc:
        context["error"] = str(exc)
        portal_audit.patient_record_read(request, shown, outcome=audit.EventOutcome.MAJOR_FAILURE,
                                         description=str(exc)[:200])
        return render(request, "portal/patient.html", context)
    page, groups = _page_groups(record, request.GET.get("page"))
    page_documents = [doc for _, sets in groups for _ss, docs, _continued in sets for doc in docs]
    record.complete(page_documents)  # only the shown entries are read in full
    record.release()
    for doc in page_documents:
        doc.href = _manifest_href(doc)
        shown.append(audit.document(doc.unique_id, doc.repository_unique_id, doc.home_community_id or None))
    portal_audit.patient_record_read(request, shown)
    context.update({
        "record": record, "page": page, "groups": groups, "document_count": len(record.documents),
        "set_count": len(record.submission_sets), "source_count": len(record.sources),
        "page_query": urlencode({"id": patient_id}), "registry_here": _registry_here(),
    })
    return render(request, "portal/patient.html", context)


urlpatterns: list[URLPattern] = [
    path("patients/", patients, name="patients"),
    path("patient/", patient, name="patient"),
]
