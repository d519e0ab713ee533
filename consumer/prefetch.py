"""Predictive prefetch: when a procedure begins at this site, import the patient's relevant priors held by
other sites into this site's PACS, in the background, once.

Hub-and-spoke practice (a patient examined at B has priors at A): this site's imaging source announces
:attr:`~jobs.registry.Event.PROCEDURE_SCHEDULED` for each new item of the Modality Worklist it polls and
:attr:`~jobs.registry.Event.PROCEDURE_IN_PROGRESS` when an MPPS IN PROGRESS reaches its DICOM listener;
with ``XDS_PREFETCH`` on, :class:`consumer.apps.ConsumerConfig` subscribes :data:`PREFETCH_PRIORS` to both.

1. ``consumer.prefetch_priors`` (one per procedure): ITI-18 FindDocuments for the affinity patient, the
   rules applied (:class:`PrefetchRules`: look-back window on serviceStartTime, same modality or body part
   from eventCodeList, the N most recent), each candidate's manifest read (ITI-43) to tell this site's own
   studies (every series' Retrieve Location UID is ours) from other sites'; one ``consumer.import_prior``
   job per chosen manifest, keyed by its uniqueId, and a :class:`~consumer.models.PriorImport` row: a
   manifest already imported or queued is not chosen again.
2. ``consumer.import_prior`` (one per prior): ITI-43 + RAD-69 into this site's PACS by C-STORE with import
   reconciliation (coerced to the local patient of the procedure); instances already in the PACS are not
   sent again, so a retry completes what a failure left.  Concurrency is the job worker's: one study at a
   time per worker.

Job errors name outcomes and error codes only, never patient data.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from consumer.fetch import (
    Resolvers,
    get_manifest,
    outcome_of,
    record_import,
    resolver,
    retrieve_into,
    transfer_syntaxes,
)
from consumer.find import FindError, FindQuery, FoundManifest, find_manifests
from consumer.models import EndpointKind, PriorImport, PriorImportState
from consumer.retrieval import ProgressEvent
from jobs.api import enqueue
from jobs.models import Job
from jobs.registry import JobError, PermanentJobError
from xds_core.log_ref import log_ref
from xds_core.metadata.values import CX

logger = logging.getLogger(__name__)

PREFETCH_PRIORS = "consumer.prefetch_priors"
IMPORT_PRIOR = "consumer.import_prior"
MATCHES = ("modality-or-anatomy", "modality", "anatomy", "any")


@dataclass(frozen=True)
class PrefetchRules:
    lookback_days: int
    max_studies: int
    match: str  # one of MATCHES

    def relevant(self, found: FoundManifest, procedure_codes: list[str], now: datetime) -> bool:
        """Within the look-back window and, per ``match``, of the same modality / body part."""
        when = _dtm(found.service_start_time) or _dtm(found.creation_time)
        if when is None or when < now - timedelta(days=self.lookback_days):
            return False
        if self.match == "any":
            return True
        mine, theirs = set(procedure_codes), set(found.event_codes)
        same_modality = any(c.endswith("^^DCM") for c in mine & theirs)
        same_anatomy = any(not c.endswith("^^DCM") for c in mine & theirs)
        return {"modality": same_modality, "anatomy": same_anatomy}.get(self.match, same_modality or same_anatomy)


@dataclass(frozen=True)
class PrefetchConfig:
    """This site, as the prefetch jobs need it (from settings, read per job)."""

    registry_url: str  # "" = the registry in this server
    format_codes: tuple[str, ...]
    own_imaging_source_id: str
    own_repository_id: str
    pacs: dict[str, Any]  # DICOM_PACS: ae_title, host, port
    calling_ae_title: str
    consumer_identity: str
    rules: PrefetchRules
    max_attempts: int
    timeout: float = 300.0
    #: The client context for DICOM TLS to ``pacs`` (PS3.15 B.10; XDS_TLS, DICOM_PACS_TLS), None: plain.
    pacs_tls: Any = None

    @classmethod
    def from_settings(cls, settings: Any) -> PrefetchConfig:
        from atna.tls import node_client_context  # the edge: this node's certificate, under XDS_TLS

        return cls(settings.XDS_CONSUMER_REGISTRY_URL, tuple(settings.XDS_CONSUMER_KOS_FORMAT_CODES),
                   settings.XDS_IMAGING_SOURCE_ID, settings.XDS_REPOSITORY_UNIQUE_ID, settings.DICOM_PACS,
                   settings.DICOM_AE_TITLE, settings.XDS_SITE_CONSUMER_IDENTITY,
                   PrefetchRules(settings.XDS_PREFETCH_LOOKBACK_DAYS, settings.XDS_PREFETCH_MAX_STUDIES,
                                 settings.XDS_PREFETCH_MATCH),
                   settings.XDS_JOBS_MAX_ATTEMPTS,
                   pacs_tls=None if settings.DICOM_PACS_TLS == "off" else node_client_context())

    def resolvers(self) -> Resolvers:
        own = not self.registry_url  # this server's registry: its repository and imaging source in process
        repository = (self.own_repository_id, "local:repository") if own else None
        imaging_source = (self.own_imaging_source_id, "local:imaging-source") if own else None
        return Resolvers(resolver(EndpointKind.REPOSITORY, repository),
                         resolver(EndpointKind.IMAGING_SOURCE, imaging_source))


def _dtm(value: str) -> datetime | None:
    digits = (value or "")[:14]
    for fmt in ("%Y%m%d%H%M%S", "%Y%m%d%H%M", "%Y%m%d%H", "%Y%m%d", "%Y%m", "%Y"):
        try:
            return datetime.strptime(digits, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def _payload_text(payload: dict[str, Any], key: str, *, required: bool = True) -> str:
    value = payload.get(key, "")
    if not isinstance(value, str) or (required and not value):
        raise PermanentJobError(f"payload needs {key} (text)")
    return value


def _found_from(payload: dict[str, Any]) -> FoundManifest:
    data = payload.get("found")
    names = {f.name for f in fields(FoundManifest)}
    if not isinstance(data, dict) or not names.issuperset(data):
        raise PermanentJobError("payload needs the found manifest")
    try:
        return FoundManifest(**{**data, "study_instance_uids": tuple(data.get("study_instance_uids", ())),
                                "event_codes": tuple(data.get("event_codes", ()))})
    except TypeError:
        raise PermanentJobError("payload's found manifest is incomplete") from None


def _local_patient(payload: dict[str, Any]) -> tuple[str, str]:
    """(Patient ID, Issuer of Patient ID) of the procedure at this site; PermanentJobError without an id."""
    patient_id, issuer = _payload_text(payload, "local_patient_id"), _payload_text(payload, "local_issuer",
                                                                                      required=False)
    return patient_id, issuer


def plan_prefetch(job: Job, config: PrefetchConfig, *, now: datetime | None = None) -> list[Job]:
    """The handler of :data:`PREFETCH_PRIORS`: choose the priors, queue one import each."""
    payload = job.payload
    affinity = _payload_text(payload, "affinity_patient_id")
    if CX.problems(affinity):
        raise PermanentJobError("affinity_patient_id is not a CX id^^^&OID&ISO")
    _local_patient(payload)  # refused now, not after the search, when the import could not use it
    codes = [c for c in payload.get("event_codes", []) if isinstance(c, str)]
    trigger = _payload_text(payload, "trigger")[:64]
    try:
        found = find_manifests(config.registry_url, FindQuery(patient_id=affinity, format_codes=config.format_codes),
                               timeout=config.timeout)
    except FindError as exc:
        raise JobError(f"ITI-18 failed: {type(exc).__name__}") from None
    now = now or datetime.now(UTC)
    candidates = sorted((f for f in found.manifests if config.rules.relevant(f, codes, now)),
                        key=lambda f: f.service_start_time or f.creation_time, reverse=True)
    resolvers = config.resolvers()
    queued: list[Job] = []
    chosen = 0
    for candidate in candidates:
        if chosen >= config.rules.max_studies:
            break
        existing = PriorImport.objects.filter(manifest_unique_id=candidate.unique_id).first()
        if existing is not None:
            chosen += 1  # imported (or being imported) for an earlier procedure: still one of the N
            if existing.state != PriorImportState.IMPORTED:
                queued.append(_queue_import(candidate, payload, trigger, config))
            continue
        outcome = outcome_of(candidate)
        retrieved = get_manifest(candidate, resolvers, outcome, timeout=config.timeout)
        if retrieved is None:
            logger.info("prefetch manifest=%s skipped: its manifest could not be read", log_ref(candidate.unique_id))
            continue
        locations = {s.retrieve_location_uid for st in retrieved.manifest.studies for s in st.series}
        if locations <= {config.own_imaging_source_id}:
            continue  # this site's own study: already in its PACS
        with transaction.atomic():
            PriorImport.objects.get_or_create(
                manifest_unique_id=candidate.unique_id,
                defaults={"study_instance_uids": list(outcome.studies), "trigger": trigger,
                          "requested": outcome.requested})
            queued.append(_queue_import(candidate, payload, trigger, config))
        chosen += 1
    logger.info("prefetch trigger=%s found=%d relevant=%d queued=%d", trigger, len(found.manifests), len(candidates),
                len(queued))
    return queued


def _queue_import(found: FoundManifest, payload: dict[str, Any], trigger: str, config: PrefetchConfig) -> Job:
    return enqueue(IMPORT_PRIOR, {"found": asdict(found), "local_patient_id": payload["local_patient_id"],
                                  "local_issuer": payload.get("local_issuer", ""), "trigger": trigger},
                   key=found.unique_id, max_attempts=config.max_attempts)


def import_prior(job: Job, config: PrefetchConfig, local_authority: str) -> PriorImport:
    """The handler of :data:`IMPORT_PRIOR`: the prior's images into this site's PACS (C-STORE)."""
    from consumer.dicom_import import StoreScp
    from consumer.pacs_import import DicomImport, reconciliation_for

    found = _found_from(job.payload)
    patient_id, issuer = _local_patient(job.payload)
    authority = issuer if issuer and not CX.problems(f"{patient_id}^^^&{issuer}&ISO") else local_authority
    local = f"{patient_id}^^^&{authority}&ISO"
    if CX.problems(local) or CX.problems(found.patient_id):
        raise PermanentJobError("the local or affinity patient id is not a CX id^^^&OID&ISO")
    if not config.pacs:
        raise PermanentJobError("DICOM_PACS is not set: nowhere to import into")
    reconciliation = reconciliation_for(local, found.patient_id, config.consumer_identity, local_issuer=issuer)
    destination = DicomImport(config.calling_ae_title,
                              StoreScp(config.pacs["ae_title"], config.pacs["host"], int(config.pacs["port"]),
                                       config.pacs_tls),
                              reconciliation)
    record, _ = PriorImport.objects.get_or_create(
        manifest_unique_id=found.unique_id,
        defaults={"study_instance_uids": list(found.study_instance_uids),
                  "trigger": str(job.payload.get("trigger", ""))[:64]})
    resolvers = config.resolvers()
    outcome = outcome_of(found)
    retrieved = get_manifest(found, resolvers, outcome, timeout=config.timeout)
    if retrieved is not None:
        record.requested = outcome.requested or record.requested
        record.present = 0
        # The latest asker (a procedure's prefetch, or "portal:<user>" for a clinician's import) is the trigger.
        record.trigger = str(job.payload.get("trigger", "") or record.trigger)[:64]
        record.save(update_fields=["requested", "present", "trigger", "updated_at"])
        # Uncompressed, the syntaxes an archive stores as they come: a prior lands in this PACS as the other
        # site holds it (a study stored in Explicit VR stays byte for byte the same pixel data).
        retrieve_into(retrieved, destination, resolvers, outcome, syntaxes=transfer_syntaxes(compress=False),
                      progress=ImportProgress(record.pk), timeout=config.timeout)
        record_import(retrieved, outcome, resolvers, importer=config.consumer_identity, local_patient=local,
                      archive=f"{config.pacs['ae_title']}@{config.pacs['host']}:{config.pacs['port']}",
                      trigger=record.trigger)
    else:
        destination.close()
    codes = sorted({e["code"] for e in outcome.errors})
    record.requested = outcome.requested or record.requested
    record.present = outcome.retrieved + outcome.already_present
    record.state = (PriorImportState.IMPORTED if outcome.ok else
                    PriorImportState.PARTIAL if outcome.any_present else PriorImportState.FAILED)
    record.detail = "; ".join(codes) if codes else ("manifest not retrieved" if retrieved is None else "")
    record.save()
    logger.info("prefetch import manifest=%s state=%s present=%d requested=%d", log_ref(found.unique_id), record.state,
                record.present, record.requested)
    if not outcome.ok:
        raise JobError(f"prior {found.unique_id}: {record.state} ({record.detail or 'no error code'})")
    return record


class ImportProgress:
    """The retrieval's progress into :attr:`PriorImport.present` while it runs, at most once per ``interval``
    seconds (a page such as the portal's import status shows it), and at each series' end.

    The retrieval reports per series (``done`` of ``total``: present + retrieved so far); the count of the
    import is the series finished before plus the current one's ``done``."""

    def __init__(self, record_pk: int, *, interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.record_pk = record_pk
        self.interval = interval
        self.clock = clock
        self.finished = 0  # instances present of the series before the current one
        self.series = ""
        self.done = 0
        self.total = 0
        self._saved_at: float | None = None
        self._saved = -1

    @property
    def present(self) -> int:
        return self.finished + self.done

    def __call__(self, event: ProgressEvent) -> None:
        if event.series_instance_uid != self.series:
            self.finished += self.done
            self.series, self.done = event.series_instance_uid, 0
        self.done, self.total = max(self.done, event.done), event.total
        now = self.clock()
        series_end = self.done >= self.total
        if self.present != self._saved and (series_end or self._saved_at is None
                                            or now - self._saved_at >= self.interval):
            PriorImport.objects.filter(pk=self.record_pk).update(present=self.present, updated_at=timezone.now())
            self._saved_at, self._saved = now, self.present


# --- the job handlers (settings read per job: the worker may outlive an operator's change) -------------

def run_prefetch_priors(job: Job) -> list[Job]:
    from django.conf import settings

    return plan_prefetch(job, PrefetchConfig.from_settings(settings))


def run_import_prior(job: Job) -> PriorImport:
    from django.conf import settings

    return import_prior(job, PrefetchConfig.from_settings(settings), settings.XDS_IMAGING_SOURCE_PATIENT_AUTHORITY)
