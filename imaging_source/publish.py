"""RAD-68 Provide and Register Imaging Document Set - MTOM/XOP: publish a study's manifest.

``publish(study, config)``:

0. skips a study this site imported (its instances carry an Original Attributes Sequence item whose
   Modifying System is this site's consumer identity, ``PublishConfig.consumer_identity``: import
   reconciliation, PS3.3 C.12.1.1.9): it came from the affinity domain, and a second manifest would
   publish it again under another DocumentEntry.  Recorded as a SKIPPED publication, nothing sent;
1. maps the local DICOM patient to the affinity-domain patientId; an unmapped patient puts the
   study in the reconciliation queue and **nothing** goes to the repository;
2. compares the study's instance set with the last successful publication of the same study:
   unchanged -> nothing is sent; changed -> a *replacement* (RPLC to the previous DocumentEntry's
   entryUUID, RAD68-006), never a second original; first time -> an original;
3. builds the KOS manifest (:mod:`kos.builder`), checks it with :mod:`kos.validate`, builds the
   DocumentEntry + SubmissionSet (:mod:`imaging_source.metadata`);
4. records a PENDING :class:`~imaging_source.models.Publication`, sends the ProvideAndRegister
   request as real SOAP/MTOM bytes to ``XDS_REPOSITORY_URL`` (``local:repository`` = this server's
   repository endpoint), and records the outcome: PUBLISHED on Success; FAILED with the
   RegistryErrors, the SOAP fault, or the transport error when no connection was made; still PENDING
   when the request went out but no answer came back (it may have been registered: see below).

A PENDING row whose publisher never recorded an answer (killed mid-send: the job worker's SIGKILL, a
crash; or no answer came back) is *settled* before anything new is built, once it is older than
``pending_timeout``: the very same submission is sent again -- the KOS bytes as kept, its SOP Instance
UID (= DocumentEntry.uniqueId, RAD TF-3 4.68.4.1.2.3), the same DocumentEntry entryUUID and
SubmissionSet.uniqueId.  A registry that
already registered the first send refuses the second with XDSDuplicateUniqueIdInRegistry (a
SubmissionSet.uniqueId is never registered twice: ITI TF-3 4.2.3.3.12, ITI TF-3 Table 4.2.4.1-2), which
proves the manifest is there; Success means the first never got through.  Either way the study ends
with one manifest.  Abandoning the row and building a new KOS instead would publish a second original
whenever the first had in fact been registered (a DocumentEntry uniqueId is new, so nothing refuses it).

Domain code: no ``django.conf.settings`` here -- the caller passes a :class:`PublishConfig`.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from enum import StrEnum
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from imaging_source.metadata import MetadataConfig, build_submission
from imaging_source.models import Publication, ReconciliationItem
from imaging_source.patient_mapping import (
    RewriteRule,
    UnmappedPatient,
    map_patient,
    parse_rewrite_rules,
    source_patient_id,
)
from imaging_source.study import InstanceRef, SeriesRef, StudyRef
from kos.builder import ManifestError, ManifestOptions, RetrieveLocation, build_manifest, to_part10
from kos.validate import errors as kos_errors
from kos.validate import validate_manifest
from xds_core import audit
from xds_core.errors import ErrorCode
from xds_core.log_ref import log_ref
from xds_core.vocabulary import DICOM_MIME_TYPE, Action, ResponseStatus

logger = logging.getLogger("imaging_source.publish")

LOCAL_REPOSITORY = "local:repository"
#: :func:`_send` statuses after which nobody knows whether the repository acted on the request: it may
#: have been delivered (and registered) before the connection broke or the answer timed out.
_NO_ANSWER = ("no-answer", "no-response")
#: :func:`_send` status when no connection was made: nothing was sent.
_NOT_CONNECTED = "transport-error"


class Outcome(StrEnum):
    PUBLISHED = "published"  # an original manifest was accepted
    REPLACED = "replaced"  # a replacement (RPLC) was accepted
    UNCHANGED = "unchanged"  # same instance set as the last publication: nothing sent
    QUEUED = "queued"  # patient not mapped: reconciliation queue, nothing sent
    FAILED = "failed"  # the repository refused it or could not be reached (recorded)
    IN_PROGRESS = "in-progress"  # another publisher is sending this study right now
    SKIPPED = "skipped"  # a study this site imported from the affinity domain: never published again


@dataclass(frozen=True)
class PublishConfig:
    repository_url: str  # RAD-68 endpoint; "local:repository" for this server's repository
    location: RetrieveLocation  # Retrieve Location UID / AE / WADO-RS base written into the KOS
    metadata: MetadataConfig
    rewrite_rules: list[RewriteRule] = field(default_factory=list)
    timeout: float = 120.0
    manufacturer: str = "XDS-I Imaging Document Source"
    institution_name: str | None = None
    #: A PENDING publication older than this is settled (sent again as it was): its publisher died mid-send.
    #: Younger: another publisher may still be waiting for the answer (IN_PROGRESS).
    pending_timeout: timedelta = timedelta(minutes=15)
    #: This site's consumer identity (``XDS_SITE_CONSUMER_IDENTITY``): a study whose instances were
    #: modified by it (Modifying System (0400,0563)) was imported here and is not published.  Empty: none.
    consumer_identity: str = ""

    @classmethod
    def from_settings(cls, settings: Any) -> PublishConfig:
        """Built by commands / admin / DICOM triggers from ``django.conf.settings`` (passed in)."""
        return cls(
            repository_url=settings.XDS_REPOSITORY_URL or LOCAL_REPOSITORY,
            location=RetrieveLocation(
                location_uid=settings.XDS_IMAGING_SOURCE_ID,
                ae_title=_retrieve_ae_title(settings),
                wado_rs_base=getattr(settings, "XDS_IMAGING_RETRIEVE_URL_BASE", "") or None),
            metadata=MetadataConfig.from_settings(settings),
            rewrite_rules=parse_rewrite_rules(getattr(settings, "XDS_IMAGING_PATIENT_REWRITE", "")),
            institution_name=getattr(settings, "XDS_IMAGING_AUTHOR_INSTITUTION", "") or None,
            consumer_identity=getattr(settings, "XDS_SITE_CONSUMER_IDENTITY", ""),
            pending_timeout=timedelta(seconds=getattr(settings, "XDS_IMAGING_PENDING_TIMEOUT", 900)),
        )


def _retrieve_ae_title(settings: Any) -> str:
    """Retrieve AE Title (0008,0054): who serves C-MOVE/C-GET of the instances -- the PACS, whose AE
    title the reference manifest also carries (DCM4CHEE there); ours only when no PACS is configured."""
    explicit = getattr(settings, "XDS_IMAGING_RETRIEVE_AE_TITLE", "")
    if explicit:
        return explicit
    pacs = getattr(settings, "DICOM_PACS", None)
    return pacs["ae_title"] if pacs else settings.DICOM_AE_TITLE


@dataclass
class PublishResult:
    outcome: Outcome
    study_instance_uid: str
    publication: Publication | None = None
    reconciliation: ReconciliationItem | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome in (Outcome.PUBLISHED, Outcome.REPLACED, Outcome.UNCHANGED, Outcome.SKIPPED)


def publish(study: StudyRef, config: PublishConfig, *, trigger: str = "") -> PublishResult:
    """Publish (or re-publish) the manifest of *study*. See the module docstring.

    Raises :class:`kos.builder.ManifestError` for a study that cannot be described (no instances).
    """
    started = time.monotonic()
    if study.instance_count == 0:
        raise ManifestError(f"study {study.study_instance_uid} has no instances to publish")

    if config.consumer_identity and config.consumer_identity in study.modifying_systems:
        return _skip_imported(study, config.consumer_identity, trigger, started)

    try:
        patient_id = map_patient(study.patient_id, study.issuer_of_patient_id, config.rewrite_rules)
    except UnmappedPatient as exc:
        item = _queue_for_reconciliation(study, str(exc))
        _log(study, Outcome.QUEUED, started, reconciliation=item.pk)
        return PublishResult(Outcome.QUEUED, study.study_instance_uid, reconciliation=item, message=str(exc))

    instance_hash = study.instance_set_hash()
    unfinished = _unfinished_send(study.study_instance_uid, config.pending_timeout)
    if unfinished is not None:
        settled = _settle(unfinished, study, config, started)
        if not settled.ok:
            return settled
        # Settled (one manifest in the registry): go on as usual -- unchanged, or a replacement of it.
    previous = last_publication(study.study_instance_uid)
    if previous is not None and previous.instance_set_hash == instance_hash:
        _resolve_open_reconciliation(study.study_instance_uid, previous)
        _log(study, Outcome.UNCHANGED, started, publication=previous.pk)
        return PublishResult(Outcome.UNCHANGED, study.study_instance_uid, publication=previous,
                             message=f"unchanged since {previous.kos_sop_instance_uid}")

    kos_ds = build_manifest(study, config.location, ManifestOptions(
        manufacturer=config.manufacturer, institution_name=config.institution_name))
    kos_bytes = to_part10(kos_ds)
    # Our own output must pass our own validator: a failure here is a bug, not a user error.
    problems = kos_errors(validate_manifest(kos_bytes, expected_location_uid=config.location.location_uid))
    if problems:
        raise ManifestError("built manifest is invalid: " + "; ".join(str(p) for p in problems))
    kos_uid = str(kos_ds.SOPInstanceUID)
    built = build_submission(
        study, kos_sop_instance_uid=kos_uid, patient_id=patient_id,
        source_patient_id=source_patient_id(study.patient_id, study.issuer_of_patient_id,
                                            config.metadata.source_patient_authority),
        config=config.metadata, replaces_entry_uuid=previous.entry_uuid if previous else None)

    try:
        with transaction.atomic():
            publication = Publication.objects.create(
                study_instance_uid=study.study_instance_uid, kos_sop_instance_uid=kos_uid,
                entry_uuid=built.entry_uuid, submission_set_unique_id=built.submission_set_unique_id,
                patient_id=patient_id, source_patient_id=built.document_entry.source_patient_id or "",
                accession_number=study.accession_number or "", instance_set_hash=instance_hash,
                instance_count=study.instance_count, series_count=len(study.series), replaces=previous,
                status=Publication.Status.PENDING, repository_url=config.repository_url, kos=kos_bytes,
                kos_size=len(kos_bytes), kos_sha1=hashlib.sha1(kos_bytes).hexdigest(), trigger=trigger)
    except IntegrityError:
        _log(study, Outcome.IN_PROGRESS, started)
        return PublishResult(Outcome.IN_PROGRESS, study.study_instance_uid,
                             message="another publication of this study is being sent")

    status, errors = _send(config, built, kos_bytes)
    # RAD TF-3 4.68 audit, as ITI TF-2b 3.41.5.1.1: the source's Export of the submission (patient, SubmissionSet).
    audit.record_sent(audit.Transaction.RAD_68, config.repository_url, _sent_outcome(status),
                      audit.submission_objects, built.submission)
    if status in _NO_ANSWER:
        # Maybe registered: the row stays PENDING, and a later publication settles it (same submission again).
        _record_unknown(publication, status, errors)
    else:
        _record_answer(publication, status, errors)

    if publication.status == Publication.Status.PUBLISHED:
        _resolve_open_reconciliation(study.study_instance_uid, publication)
        outcome = Outcome.REPLACED if previous else Outcome.PUBLISHED
        message = (f"replaced {previous.kos_sop_instance_uid} by {kos_uid}" if previous
                   else f"published {kos_uid}")
    else:
        outcome = Outcome.FAILED
        message = "; ".join(e.get("code_context") or e.get("error_code", "") for e in errors) or status
    _log(study, outcome, started, publication=publication.pk, status=status, errors=len(errors))
    return PublishResult(outcome, study.study_instance_uid, publication=publication, message=message)


def last_publication(study_instance_uid: str) -> Publication | None:
    """The latest successful publication of a study (the DocumentEntry a replacement targets)."""
    return (Publication.objects.filter(study_instance_uid=study_instance_uid, status=Publication.Status.PUBLISHED)
            .order_by("-created_at", "-id").first())


def study_to_json(study: StudyRef) -> dict[str, Any]:
    return asdict(study)


def study_from_json(data: dict[str, Any]) -> StudyRef:
    series = [SeriesRef(**{**s, "instances": [InstanceRef(**i) for i in s.get("instances", [])]})
              for s in data.get("series", [])]
    return StudyRef(**{**data, "series": series})


# --- sending ---------------------------------------------------------------------------------

def _sent_outcome(status: str) -> audit.EventOutcome:
    """The audit outcome of what :func:`_send` returned: the repository's status, or why there was none."""
    if status in (_NOT_CONNECTED, *_NO_ANSWER):  # the repository could not be reached, or did not answer
        return audit.EventOutcome.MAJOR_FAILURE
    return audit.outcome_of_status(status, audit.EventOutcome.SERIOUS_FAILURE)


def _send(config: PublishConfig, built: Any, kos_bytes: bytes) -> tuple[str, list[dict[str, str]]]:
    """Send RAD-68; return (response status URI, recorded errors). Never raises for remote problems."""
    # Imported here: the SOAP client is library code of xds_registry, loaded only when sending.
    from xds_core.ebxml.responses import parse_registry_response
    from xds_core.ebxml.serialize import provide_and_register_request
    from xds_core.soap.client import SoapClient, TransportError
    from xds_core.soap.mtom import OutgoingPart

    content_id = f"{uuid.uuid4().hex}@imaging-source"
    body = provide_and_register_request(built.submission, [(built.entry_uuid, content_id)])
    part = OutgoingPart(content_id=content_id, content_type=DICOM_MIME_TYPE, source=kos_bytes)
    try:
        result = SoapClient(config.repository_url, timeout=config.timeout).call(
            Action.ProvideAndRegisterDocumentSet, body, parts=[part])
    except TransportError as exc:
        status = _NOT_CONNECTED if _never_connected(exc) else "no-answer"
        return status, [{"error_code": "TransportError", "code_context": str(exc),
                         "severity": "Error", "location": config.repository_url}]
    if result.fault is not None:
        fault = result.fault
        return "soap-fault", [{"error_code": f"SOAP Fault {fault.code}" + (f"/{fault.subcode}" if fault.subcode
                                                                            else ""),
                               "code_context": fault.reason, "severity": "Error", "location": ""}]
    if result.body is None:
        return "no-response", [{"error_code": "TransportError", "code_context": "empty SOAP body",
                                "severity": "Error", "location": ""}]
    try:
        status, registry_errors = parse_registry_response(result.body)
    except ValueError as exc:
        return "bad-response", [{"error_code": "TransportError", "code_context": str(exc), "severity": "Error",
                                 "location": ""}]
    return status, [{"error_code": str(e.error_code), "code_context": e.code_context,
                     "severity": str(e.severity).rsplit(":", 1)[-1], "location": e.location or ""}
                    for e in registry_errors]


def _never_connected(exc: BaseException) -> bool:
    """True when the TCP connection to the repository was never made (refused, connect timeout): nothing of
    the request left this process.  Any other transport error may come after the repository got it all."""
    import requests
    import urllib3

    cause = exc.__cause__
    if isinstance(cause, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(cause, requests.exceptions.ConnectionError) and cause.args:
        # urllib3 2: NewConnectionError (refused, no route) is a ConnectTimeoutError.
        return isinstance(getattr(cause.args[0], "reason", None), urllib3.exceptions.ConnectTimeoutError)
    return False


# --- queue and bookkeeping -----------------------------------------------------------------------

def _skip_imported(study: StudyRef, consumer_identity: str, trigger: str, started: float) -> PublishResult:
    """Record (once per instance set) that an imported study is not published."""
    reason = f"imported by this site ({consumer_identity}): Modifying System in Original Attributes Sequence"
    instance_hash = study.instance_set_hash()
    latest = (Publication.objects.filter(study_instance_uid=study.study_instance_uid)
              .order_by("-created_at", "-id").first())
    if latest is not None and latest.status == Publication.Status.SKIPPED and latest.instance_set_hash == instance_hash:
        skipped = latest
    else:
        skipped = Publication.objects.create(
            study_instance_uid=study.study_instance_uid, kos_sop_instance_uid=None, entry_uuid=None,
            submission_set_unique_id="", patient_id="", source_patient_id="",
            accession_number=study.accession_number or "", instance_set_hash=instance_hash,
            instance_count=study.instance_count, series_count=len(study.series), status=Publication.Status.SKIPPED,
            kos=b"", trigger=trigger, skip_reason=reason[:200])
    _log(study, Outcome.SKIPPED, started, publication=skipped.pk, reason="imported-by-this-site")
    return PublishResult(Outcome.SKIPPED, study.study_instance_uid, publication=skipped, message=reason)


def _queue_for_reconciliation(study: StudyRef, reason: str) -> ReconciliationItem:
    defaults = {
        "local_patient_id": study.patient_id or "", "local_issuer": study.issuer_of_patient_id or "",
        "patient_name": study.patient_name or "", "accession_number": study.accession_number or "",
        "study_date": (study.study_date or "")[:8], "reason": reason, "study": study_to_json(study),
    }
    with transaction.atomic():
        item = (ReconciliationItem.objects.select_for_update()
                .filter(study_instance_uid=study.study_instance_uid, status=ReconciliationItem.Status.OPEN).first())
        if item is None:
            try:
                with transaction.atomic():
                    return ReconciliationItem.objects.create(study_instance_uid=study.study_instance_uid, **defaults)
            except IntegrityError:  # a concurrent publisher queued it first
                item = ReconciliationItem.objects.get(study_instance_uid=study.study_instance_uid,
                                                      status=ReconciliationItem.Status.OPEN)
        for key, value in defaults.items():
            setattr(item, key, value)
        item.save()
        return item


def _resolve_open_reconciliation(study_instance_uid: str, publication: Publication) -> None:
    ReconciliationItem.objects.filter(study_instance_uid=study_instance_uid,
                                      status=ReconciliationItem.Status.OPEN).update(
        status=ReconciliationItem.Status.RESOLVED, publication=publication, resolved_at=timezone.now(),
        updated_at=timezone.now())


def _record_answer(publication: Publication, status: str, errors: list[dict[str, str]]) -> None:
    """Record the repository's answer on a PENDING row: PUBLISHED on Success, or when the registry says it
    already holds this very submission (see :func:`_already_registered`); FAILED otherwise.

    Conditional on the row still being PENDING: a publisher that settled it meanwhile (its answer is the
    registry's word) is not overwritten by a late answer of the other send.
    """
    publication.response_status = status
    publication.errors = errors
    publication.sent_at = timezone.now()
    publication.status = (Publication.Status.PUBLISHED
                          if status == ResponseStatus.SUCCESS or _already_registered(status, errors)
                          else Publication.Status.FAILED)
    updated = Publication.objects.filter(pk=publication.pk, status=Publication.Status.PENDING).update(
        response_status=status, errors=errors, sent_at=publication.sent_at, status=publication.status)
    if not updated:
        publication.refresh_from_db(fields=["response_status", "errors", "sent_at", "status"])


def _record_unknown(publication: Publication, status: str, errors: list[dict[str, str]]) -> None:
    """Record a send whose fate is unknown (no answer): the row stays PENDING (see :func:`_settle`)."""
    publication.response_status, publication.errors, publication.sent_at = status, errors, timezone.now()
    Publication.objects.filter(pk=publication.pk, status=Publication.Status.PENDING).update(
        response_status=status, errors=errors, sent_at=publication.sent_at)


def _already_registered(status: str, errors: list[dict[str, str]]) -> bool:
    """The registry refused a submission because its SubmissionSet.uniqueId is registered already.

    We make a fresh SubmissionSet.uniqueId for every Publication row and send it only with that row's
    submission (first send, or :func:`_settle`'s identical resend), and the manifest has no Folder: a
    duplicate can only be our earlier send of this very submission, which the registry therefore holds
    (ITI TF-3 4.2.3.3.12: a SubmissionSet uniqueId is registered once; Table 4.2.4.1-2
    XDSDuplicateUniqueIdInRegistry).  ITI-42 is atomic, so the whole submission, manifest included, is there.
    """
    return status == ResponseStatus.FAILURE and any(
        e.get("error_code") == ErrorCode.XDSDuplicateUniqueIdInRegistry for e in errors)


def _unfinished_send(study_instance_uid: str, pending_timeout: timedelta) -> Publication | None:
    """The study's PENDING publication left by a publisher that never recorded an answer (older than
    ``pending_timeout``), if any."""
    return (Publication.objects.select_related("replaces")
            .filter(study_instance_uid=study_instance_uid, status=Publication.Status.PENDING,
                    created_at__lt=timezone.now() - pending_timeout).first())


def _settle(unfinished: Publication, study: StudyRef, config: PublishConfig, started: float) -> PublishResult:
    """Send an unfinished publication's submission again, identical where the registry compares it: the KOS
    as kept (its SOP Instance UID is the DocumentEntry.uniqueId, RAD TF-3 4.68.4.1.2.3), the DocumentEntry
    entryUUID, the SubmissionSet.uniqueId, the patient and the replaced entry.  Metadata the registry does
    not key on (creation time; descriptive attributes of the study as the PACS has it now) is built afresh.

    Success: the first send never reached the registry, this one did.  XDSDuplicateUniqueIdInRegistry: the
    first did (:func:`_already_registered`).  Either way the row is PUBLISHED and the study has one
    manifest.  No answer (transport error): the row stays PENDING and is settled by the next attempt.
    """
    kos_bytes = bytes(unfinished.kos)
    built = build_submission(
        study, kos_sop_instance_uid=unfinished.kos_sop_instance_uid or "", patient_id=unfinished.patient_id,
        source_patient_id=unfinished.source_patient_id, config=config.metadata,
        replaces_entry_uuid=unfinished.replaces.entry_uuid if unfinished.replaces else None,
        entry_uuid=unfinished.entry_uuid)
    built.submission_set.unique_id = unfinished.submission_set_unique_id
    built = replace(built, submission_set_unique_id=unfinished.submission_set_unique_id)
    status, errors = _send(config, built, kos_bytes)
    audit.record_sent(audit.Transaction.RAD_68, config.repository_url, _sent_outcome(status),
                      audit.submission_objects, built.submission)
    if status in (_NOT_CONNECTED, *_NO_ANSWER):
        # Still unknown whether the registry holds the first send: the row stays PENDING for the next attempt.
        _record_unknown(unfinished, status, errors)
        outcome = Outcome.FAILED
    else:
        _record_answer(unfinished, status, errors)
        outcome = Outcome.FAILED
        if unfinished.status == Publication.Status.PUBLISHED:
            _resolve_open_reconciliation(study.study_instance_uid, unfinished)
            outcome = Outcome.REPLACED if unfinished.replaces_id else Outcome.PUBLISHED
    _log(study, outcome, started, publication=unfinished.pk, status=status, errors=len(errors), settled="resent")
    message = ("; ".join(e.get("code_context") or e.get("error_code", "") for e in errors) or status
               if outcome == Outcome.FAILED else f"settled the interrupted send of {unfinished.kos_sop_instance_uid}")
    return PublishResult(outcome, study.study_instance_uid, publication=unfinished, message=message)


def _log(study: StudyRef, outcome: Outcome, started: float, **extra: Any) -> None:
    fields = " ".join(f"{k}={v}" for k, v in extra.items())
    # No patient here: the operational log carries none (the audit record of RAD-68 does).
    logger.info("transaction=RAD-68 study=%s instances=%d outcome=%s ms=%d %s",
                log_ref(study.study_instance_uid), study.instance_count, outcome,
                int((time.monotonic() - started) * 1000), fields)
