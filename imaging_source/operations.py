"""The operator's view of this site's Imaging Document Source: what the portal's operator pages show and do.

Plain functions over the imaging source's own records and the PACS; the portal views pass in what the
settings say (a :class:`~imaging_source.dicom.config.DicomConfig`, a
:class:`~imaging_source.publish.PublishConfig`, attempts, the job kinds to show).  Nothing here reads
settings, and nothing imports another actor: what the consumer knows (the studies it imported, its job
kinds) is handed in by the caller.

- :func:`pacs_studies`: one page of the PACS's studies (QIDO-RS ``limit``/``offset``, PS3.18 8.3.4.4; or a
  STUDY-level C-FIND, PS3.4 C.6.2, sliced here since DIMSE has no paging);
- :func:`publication_states`: each study's publication state (published / replaced / queued / failed /
  imported / never) from a fixed number of queries for the whole page;
- :func:`request_publication`: the "Publish" / "Re-publish" action, a job of the queue
  (:mod:`imaging_source.publication_jobs`);
- :func:`resolve_reconciliation`: map a queued study's local patient to an affinity-domain id, then publish
  that patient's queued studies -- what the admin's "Resolve and publish" action does;
- :func:`jobs_of`, :func:`retry_jobs`, :func:`cancel_jobs`: the job queue restricted to given kinds;
- :func:`mpps_summary`: what an MPPS row says, read from its DICOM JSON attributes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from django.db.models import Count, QuerySet
from django.utils import timezone
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from imaging_source.dicom.config import DicomConfig
from imaging_source.dicom.find import CFindFinder, FindError, QidoFinder, find_study
from imaging_source.models import PatientMapping, Publication, ReconciliationItem
from imaging_source.patient_mapping import check_affinity_patient_id, set_mapping
from imaging_source.publication_jobs import PUBLISH_STUDY, enqueue_publication
from imaging_source.publish import PublishConfig, PublishResult, publish, study_from_json
from imaging_source.study import StudyRef
from jobs import api as jobs_api
from jobs.models import ACTIVE_STATES, Job, JobState
from kos.builder import ManifestError
from xds_core.identifiers import is_dicom_uid
from xds_core.log_ref import log_ref

logger = logging.getLogger("imaging_source.operations")

#: Publication.trigger of a publication an operator asked for in the portal (one of
#: :data:`imaging_source.publication_jobs.TRIGGERS`).
PORTAL_TRIGGER = "portal"
#: PatientMapping.affinity_patient_id holds at most this many characters.
MAX_AFFINITY_ID_LENGTH = PatientMapping._meta.get_field("affinity_patient_id").max_length or 256
#: What a patient id typed into the portal may be made of (CX.1).
_AFFINITY_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+-]*")
#: The most studies one page may ask the PACS for (a page number times this is the QIDO-RS offset).
MAX_PAGE_SIZE = 200

#: STUDY-level return keys of the studies page (PS3.4 C.6.2.1.2; QIDO-RS ``includefield``, PS3.18 8.3.4.3).
STUDY_LIST_KEYS = ("StudyInstanceUID", "StudyDate", "StudyTime", "ModalitiesInStudy", "StudyDescription",
                   "PatientID", "IssuerOfPatientID", "AccessionNumber", "NumberOfStudyRelatedSeries",
                   "NumberOfStudyRelatedInstances")


class PublicationState(StrEnum):
    """A study's publication state as the operator sees it."""

    PUBLISHED = "published"  # an original manifest is the current DocumentEntry
    REPLACED = "replaced"  # a replacement (RPLC) is the current DocumentEntry: the study changed and was re-sent
    QUEUED = "queued"  # a publication job is waiting or running, or the patient awaits reconciliation
    FAILED = "failed"  # the last publication or publication job failed
    IMPORTED = "imported"  # this site imported the study from the affinity domain: never published here
    NEVER = "never"  # nothing was ever done with it


# --- the PACS's studies -----------------------------------------------------------------------------

@dataclass(frozen=True)
class PacsStudy:
    """One STUDY-level answer of the PACS (values as DICOM strings: DA ``YYYYMMDD``, TM ``HHMMSS``)."""

    study_instance_uid: str
    study_date: str = ""
    study_time: str = ""
    modalities: tuple[str, ...] = ()
    description: str = ""
    patient_id: str = ""
    issuer_of_patient_id: str = ""
    accession_number: str = ""
    series_count: int | None = None
    instance_count: int | None = None

    @property
    def date_display(self) -> str:
        return dicom_date(self.study_date)


@dataclass(frozen=True)
class StudiesPage:
    """A page of the PACS's studies; ``has_next`` because one more than the page was asked for."""

    studies: list[PacsStudy]
    number: int
    size: int
    has_next: bool

    @property
    def has_previous(self) -> bool:
        return self.number > 1


def dicom_date(value: str) -> str:
    """A DICOM DA (``YYYYMMDD``, PS3.5 6.2) as ``YYYY-MM-DD`` for reading; anything else as it is."""
    text = (value or "").strip()
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 and text.isdigit() else text


def _text(ds: Any, keyword: str) -> str:
    value = ds.get(keyword) if ds is not None else None
    if value is None:
        return ""
    if not isinstance(value, str) and isinstance(value, Iterable):  # a multi-valued element (MultiValue)
        return "\\".join(str(v).strip() for v in value)
    return str(value).strip()


def _count(ds: Any, keyword: str) -> int | None:
    try:
        return int(float(_text(ds, keyword)))
    except ValueError:
        return None


def _modalities(ds: Any) -> tuple[str, ...]:
    value = ds.get("ModalitiesInStudy")
    if value is None or value == "":
        return ()
    items = [value] if isinstance(value, str) else list(value)
    return tuple(dict.fromkeys(str(v).strip() for v in items if str(v).strip()))


def _pacs_study(ds: Dataset) -> PacsStudy | None:
    uid = _text(ds, "StudyInstanceUID")
    if not is_dicom_uid(uid):  # PS3.5 9.1: a row without a usable UID cannot be acted on, nor keyed
        return None
    return PacsStudy(
        study_instance_uid=uid, study_date=_text(ds, "StudyDate"), study_time=_text(ds, "StudyTime"),
        modalities=_modalities(ds), description=_text(ds, "StudyDescription"), patient_id=_text(ds, "PatientID"),
        issuer_of_patient_id=_text(ds, "IssuerOfPatientID"), accession_number=_text(ds, "AccessionNumber"),
        series_count=_count(ds, "NumberOfStudyRelatedSeries"),
        instance_count=_count(ds, "NumberOfStudyRelatedInstances"))


def _c_find_order(study: PacsStudy) -> tuple[str, str, str]:
    return (study.study_date, study.study_time, study.study_instance_uid)


def pacs_studies(config: DicomConfig, *, page: int, size: int) -> StudiesPage:
    """Page ``page`` (from 1) of ``size`` studies of the PACS; raises :class:`FindError` when it cannot be asked.

    QIDO-RS (``config.dicomweb_url``) pages on the server: ``offset`` and ``limit`` (PS3.18 8.3.4.4), one more
    than the page to know whether another follows, in the origin server's own order (Orthanc: stable between
    requests).  ``includefield`` goes out once per attribute (see :func:`imaging_source.dicom.find._fields`).
    C-FIND has no paging: all STUDY-level matches come back and are ordered here, newest study date first,
    the Study Instance UID last so equal dates keep one order.
    """
    if page < 1 or not 1 <= size <= MAX_PAGE_SIZE:
        raise ValueError(f"page must be >= 1 and size within 1..{MAX_PAGE_SIZE}")
    offset = (page - 1) * size
    try:
        return _studies_page(config, page, size, offset)
    except (ConnectionError, OSError) as exc:  # association refused / aborted, socket errors: one error type
        raise FindError(f"the PACS {config.pacs} cannot be queried: {exc}") from exc


def _studies_page(config: DicomConfig, page: int, size: int, offset: int) -> StudiesPage:
    if config.use_dicomweb:
        finder = QidoFinder(config)
        params = {"limit": size + 1, "offset": offset,
                  "includefield": [f"{tag_for_keyword(k):08X}" for k in STUDY_LIST_KEYS]}
        rows = finder._get("/studies", params)  # the finder's HTTP session and error handling
        studies = [s for s in map(_pacs_study, rows) if s is not None]
        return StudiesPage(studies[:size], page, size, has_next=len(rows) > size)
    finder_c = CFindFinder(config)
    returns = tuple(k for k in STUDY_LIST_KEYS if k != "StudyInstanceUID")
    rows = finder_c._run(lambda assoc: finder_c._query(assoc, "STUDY", {"StudyInstanceUID": ""}, returns))
    studies = sorted((s for s in map(_pacs_study, rows) if s is not None), key=_c_find_order, reverse=True)
    return StudiesPage(studies[offset:offset + size], page, size, has_next=len(studies) > offset + size)


def study_in_pacs(study_uid: str, config: DicomConfig) -> bool:
    """Whether the PACS knows ``study_uid`` (one STUDY-level query); False, unasked, for a non-UID."""
    if not is_dicom_uid(study_uid):
        return False
    try:
        if config.use_dicomweb:
            rows = QidoFinder(config)._get("/studies", {"StudyInstanceUID": study_uid})
        else:
            finder = CFindFinder(config)
            rows = finder._run(lambda assoc: finder._query(assoc, "STUDY", {"StudyInstanceUID": study_uid}, ()))
    except (ConnectionError, OSError) as exc:
        raise FindError(f"the PACS {config.pacs} cannot be queried: {exc}") from exc
    return any(_text(r, "StudyInstanceUID") == study_uid for r in rows)


# --- publication state ------------------------------------------------------------------------------

@dataclass(frozen=True)
class StudyState:
    """A study's :class:`PublicationState` and what it rests on."""

    state: PublicationState
    detail: str = ""
    publication: Publication | None = None  # the latest publication of the study, any status
    job: Job | None = None  # its active publication job, else its latest one
    reconciliation: ReconciliationItem | None = None  # its open reconciliation item

    @property
    def can_republish(self) -> bool:
        """Re-publish (rather than publish): a manifest of the study is in the repository."""
        return self.state in (PublicationState.PUBLISHED, PublicationState.REPLACED)


def publication_states(study_uids: Sequence[str], *, imported: Collection[str] = ()) -> dict[str, StudyState]:
    """The state of each study, in three queries for all of them (publications, jobs, reconciliation items).

    ``imported``: the studies this site's consumer imported (its records; the caller looks them up).  A study
    imported here is never published: the publisher records it as SKIPPED (``XDS_SITE_CONSUMER_IDENTITY``).
    Precedence: imported, then work in progress (an active job, a send in flight, an open reconciliation
    item), then the last outcome (failed publication or dead job, else the current manifest), else never.
    """
    uids = list(dict.fromkeys(study_uids))
    latest: dict[str, Publication] = {}
    current: dict[str, Publication] = {}
    for pub in (Publication.objects.filter(study_instance_uid__in=uids).defer("kos")
                .order_by("study_instance_uid", "-created_at", "-id")):
        latest.setdefault(pub.study_instance_uid, pub)
        if pub.status == Publication.Status.PUBLISHED:
            current.setdefault(pub.study_instance_uid, pub)
    jobs: dict[str, Job] = {}
    for job in Job.objects.filter(kind=PUBLISH_STUDY, key__in=uids).order_by("key", "-id"):
        if job.key not in jobs or (job.state in ACTIVE_STATES and jobs[job.key].state not in ACTIVE_STATES):
            jobs[job.key] = job  # the active job if there is one, else the newest
    open_items = {item.study_instance_uid: item for item in ReconciliationItem.objects.filter(
        study_instance_uid__in=uids, status=ReconciliationItem.Status.OPEN)}
    imported_set = set(imported)
    return {uid: _state(uid, latest.get(uid), current.get(uid), jobs.get(uid), open_items.get(uid), imported_set)
            for uid in uids}


def _state(uid: str, latest: Publication | None, current: Publication | None, job: Job | None,
           item: ReconciliationItem | None, imported: set[str]) -> StudyState:
    facts = {"publication": latest, "job": job, "reconciliation": item}
    if uid in imported or (latest is not None and latest.status == Publication.Status.SKIPPED):
        return StudyState(PublicationState.IMPORTED, "imported by this site from the affinity domain", **facts)
    if job is not None and job.state in ACTIVE_STATES:
        what = {JobState.QUEUED: "waiting to run", JobState.RUNNING: "running",
                JobState.FAILED: f"attempt {job.attempts} of {job.max_attempts} failed, will retry"}[job.state]
        return StudyState(PublicationState.QUEUED, f"publication job #{job.pk} {what}", **facts)
    if latest is not None and latest.status == Publication.Status.PENDING:
        return StudyState(PublicationState.QUEUED, "being sent to the repository", **facts)
    if item is not None:
        return StudyState(PublicationState.QUEUED, "reconciliation: the local patient has no affinity-domain id",
                          **facts)
    job_dead_last = (job is not None and job.state == JobState.DEAD
                     and (latest is None or job.updated_at > latest.created_at))
    if job_dead_last:
        return StudyState(PublicationState.FAILED, f"publication job #{job.pk}: {job.last_error}", **facts)
    if latest is not None and latest.status == Publication.Status.FAILED:
        codes = sorted({e.get("error_code", "") for e in latest.errors if isinstance(e, dict)} - {""})
        return StudyState(PublicationState.FAILED, f"{latest.response_status}: {', '.join(codes) or 'no error code'}",
                          **facts)
    if current is not None:
        when = timezone.localtime(current.sent_at or current.created_at).strftime("%Y-%m-%d %H:%M")
        if current.replaces_id is not None:
            return StudyState(PublicationState.REPLACED, f"replacement sent {when}", **facts)
        return StudyState(PublicationState.PUBLISHED, f"sent {when}", **facts)
    return StudyState(PublicationState.NEVER, "", **facts)


# --- actions ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PublicationRequest:
    job: Job
    already_active: bool  # the study's publication job was already queued or running: nothing added


def request_publication(study_uid: str, *, dicom: DicomConfig, max_attempts: int) -> PublicationRequest:
    """Queue the publication of a study the PACS knows (RAD-68 runs in the job worker).

    Raises ValueError for a non-UID, LookupError for a study the PACS does not know (so a typed-in UID does
    not leave a job retrying for hours), :class:`FindError` when the PACS cannot be asked.
    """
    if not is_dicom_uid(study_uid):
        raise ValueError("not a Study Instance UID")
    if not study_in_pacs(study_uid, dicom):
        raise LookupError(f"the PACS does not know study {study_uid}")
    already = jobs_api.active_job(PUBLISH_STUDY, study_uid) is not None
    job = enqueue_publication(study_uid, trigger=PORTAL_TRIGGER, max_attempts=max_attempts)
    logger.info("operator publication study=%s job=%s already_active=%s", log_ref(study_uid), job.pk, already)
    return PublicationRequest(job, already)


def affinity_id_problems(value: str) -> list[str]:
    """Findings for a typed-in affinity-domain patient id: the CX rules (ITI TF-3 4.2.3.2.16, via
    :func:`imaging_source.patient_mapping.check_affinity_patient_id`) plus what the table and HL7 allow."""
    if not value:
        return ["the affinity-domain patient id is empty"]
    if len(value) > MAX_AFFINITY_ID_LENGTH:
        return [f"longer than {MAX_AFFINITY_ID_LENGTH} characters"]
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return ["contains control characters"]
    problems = check_affinity_patient_id(value)
    # An HL7 v2 delimiter (& ~ \ |) inside CX.1 would change the id's structure for every reader (ITI TF-2x
    # C.2.3); markup or quotes would travel to every registry and consumer.  A typed-in id keeps to the
    # characters patient ids are made of (the admin and xds_patient_map accept any HL7 ST).
    if not problems and not _AFFINITY_ID_RE.fullmatch(value.split("^")[0]):
        problems.append("CX.1 (id) may hold only letters, digits and . _ - : / +")
    return problems


@dataclass
class Resolution:
    """What :func:`resolve_reconciliation` did."""

    mapping_created: bool
    results: list[PublishResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # studies that could not be described (no instances)


def _study_of(item: ReconciliationItem, dicom: DicomConfig | None) -> StudyRef:
    """The study as the PACS has it now; the stored snapshot when the PACS cannot be asked (as the admin)."""
    study = None
    if dicom is not None:
        try:
            study = find_study(item.study_instance_uid, dicom)
        except Exception:  # noqa: BLE001 - no PACS configured or reachable: the snapshot is what was found
            study = None
    return study or study_from_json(item.study)


def resolve_reconciliation(item_id: int, affinity_patient_id: str, *, publish_config: PublishConfig,
                           dicom: DicomConfig | None) -> Resolution:
    """Map the local patient of open item ``item_id`` to ``affinity_patient_id`` and publish every open
    item of that patient (the mapping applies to all of them), as the admin's "Resolve and publish".

    Publishing resolves an item (RESOLVED, linked to its publication) once the repository accepted it, or
    found it unchanged; an item whose RAD-68 failed stays open.  Raises LookupError when the item is not
    open (resolved meanwhile, discarded, unknown), ValueError (nothing written) for a bad affinity id.
    """
    value = affinity_patient_id.strip()
    problems = affinity_id_problems(value)
    if problems:
        raise ValueError("; ".join(problems))
    item = ReconciliationItem.objects.filter(pk=item_id, status=ReconciliationItem.Status.OPEN).first()
    if item is None:
        raise LookupError("no open reconciliation item with that number")
    created = set_mapping(item.local_patient_id, value, issuer=item.local_issuer, note="reconciliation queue")
    resolution = Resolution(created)
    items = ReconciliationItem.objects.filter(status=ReconciliationItem.Status.OPEN,
                                              local_patient_id=item.local_patient_id,
                                              local_issuer=item.local_issuer).order_by("created_at", "id")
    for each in items:
        try:
            resolution.results.append(publish(_study_of(each, dicom), publish_config, trigger="reconciliation"))
        except ManifestError as exc:
            resolution.errors.append(f"{each.study_instance_uid}: {exc}")
    logger.info("reconciliation item=%s resolved: studies=%d outcomes=%s", item_id, len(resolution.results),
                ",".join(str(r.outcome) for r in resolution.results) or "-")
    return resolution


def current_mappings(patients: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """{(local id, issuer): the affinity id the table maps it to now} for the patients that have one, in one
    query (to prefill the form).  As :func:`imaging_source.patient_mapping.map_patient`: the row of the exact
    issuer first, else the row with an empty issuer."""
    wanted = set(patients)
    rows = {(m.local_patient_id, m.local_issuer): m.affinity_patient_id for m in PatientMapping.objects.filter(
        local_patient_id__in={pid for pid, _ in wanted})}
    found: dict[tuple[str, str], str] = {}
    for pid, issuer in wanted:
        value = rows.get((pid, issuer)) or rows.get((pid, ""))
        if value:
            found[(pid, issuer)] = value
    return found


def reconciliation_items(status: str) -> QuerySet[ReconciliationItem]:
    """Items of ``status`` (an unknown status: open ones), newest first, the id last for a stable order."""
    if status not in ReconciliationItem.Status.values:
        status = ReconciliationItem.Status.OPEN
    return ReconciliationItem.objects.filter(status=status).defer("study").order_by("-created_at", "-id")


# --- jobs -------------------------------------------------------------------------------------------

def jobs_of(kinds: Sequence[str], *, kind: str = "", state: str = "") -> QuerySet[Job]:
    """Jobs of ``kinds`` (narrowed to ``kind`` if it is one of them, and to ``state`` if it is a job state),
    newest first.  Unknown filter values are ignored rather than trusted."""
    chosen = [kind] if kind in kinds else list(kinds)
    jobs = Job.objects.filter(kind__in=chosen)
    if state in JobState.values:
        jobs = jobs.filter(state=state)
    return jobs.order_by("-created_at", "-id")


def job_counts(kinds: Sequence[str]) -> dict[str, int]:
    """{state: number of jobs} over ``kinds`` (every state present, zero when none): one query."""
    counts = dict.fromkeys(JobState.values, 0)
    for row in Job.objects.filter(kind__in=list(kinds)).values("state").annotate(n=Count("id")):
        counts[row["state"]] = row["n"]
    return counts


def _ids_of(job_ids: Iterable[int], kinds: Sequence[str]) -> list[int]:
    return list(Job.objects.filter(pk__in=list(job_ids), kind__in=list(kinds)).values_list("pk", flat=True))


def retry_jobs(job_ids: Iterable[int], kinds: Sequence[str]) -> tuple[int, int]:
    """:func:`jobs.api.retry_now` for those of ``job_ids`` that are of ``kinds``: (retried, skipped)."""
    return jobs_api.retry_now(_ids_of(job_ids, kinds))


def cancel_jobs(job_ids: Iterable[int], kinds: Sequence[str], *, reason: str) -> int:
    """:func:`jobs.api.cancel` for those of ``job_ids`` that are of ``kinds`` (waiting jobs only)."""
    return jobs_api.cancel(_ids_of(job_ids, kinds), reason=reason)


# --- MPPS -------------------------------------------------------------------------------------------

def _json_value(attributes: Mapping[str, Any], keyword: str) -> Any:
    """The first value of ``keyword`` in a DICOM JSON object (PS3.18 F.2), or None."""
    element = attributes.get(f"{tag_for_keyword(keyword):08X}") if isinstance(attributes, Mapping) else None
    values = element.get("Value") if isinstance(element, Mapping) else None
    return values[0] if isinstance(values, list) and values else None


def _json_text(attributes: Mapping[str, Any], keyword: str) -> str:
    value = _json_value(attributes, keyword)
    if isinstance(value, Mapping):  # PN: {"Alphabetic": ...}
        value = value.get("Alphabetic", "")
    return "" if value is None or isinstance(value, Mapping | list) else str(value).strip()


@dataclass(frozen=True)
class MppsSummary:
    """What the MPPS page shows of a step (PS3.3 C.4.13-C.4.16 / PS3.4 F.7.2)."""

    step_id: str
    patient_id: str
    issuer_of_patient_id: str
    modality: str
    description: str
    start: str  # Performed Procedure Step Start Date (YYYY-MM-DD) and Time (DICOM TM)
    study_instance_uids: tuple[str, ...]
    accession_numbers: tuple[str, ...]


def mpps_summary(attributes: Mapping[str, Any]) -> MppsSummary:
    """Read a stored step's DICOM JSON; the study and accession come from its Scheduled Step Attributes
    Sequence (0040,0270) items (one per scheduled step the performed step fulfils)."""
    studies: dict[str, None] = {}
    accessions: dict[str, None] = {}
    element = attributes.get(f"{tag_for_keyword('ScheduledStepAttributesSequence'):08X}") \
        if isinstance(attributes, Mapping) else None
    items = element.get("Value") if isinstance(element, Mapping) else None
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, Mapping):
            continue
        if is_dicom_uid(uid := _json_text(item, "StudyInstanceUID")):
            studies.setdefault(uid, None)
        if accession := _json_text(item, "AccessionNumber"):
            accessions.setdefault(accession, None)
    start = " ".join(v for v in (dicom_date(_json_text(attributes, "PerformedProcedureStepStartDate")),
                                 _json_text(attributes, "PerformedProcedureStepStartTime")) if v)
    return MppsSummary(
        step_id=_json_text(attributes, "PerformedProcedureStepID"), patient_id=_json_text(attributes, "PatientID"),
        issuer_of_patient_id=_json_text(attributes, "IssuerOfPatientID"), modality=_json_text(attributes, "Modality"),
        description=_json_text(attributes, "PerformedProcedureStepDescription"), start=start,
        study_instance_uids=tuple(studies), accession_numbers=tuple(accessions))


__all__ = ["FindError", "dicom_date", "PublicationState", "PacsStudy", "StudiesPage", "StudyState",
           "PublicationRequest", "Resolution", "MppsSummary", "pacs_studies", "study_in_pacs", "publication_states",
           "request_publication", "affinity_id_problems", "resolve_reconciliation", "current_mappings",
           "reconciliation_items", "jobs_of", "job_counts", "retry_jobs", "cancel_jobs", "mpps_summary"]
