"""Retrieving the instances a manifest (KOS) names: RAD-69 Retrieve Imaging Document Set, one request per series.

The Imaging Document Consumer turns each Referenced Series of the KOS evidence (RAD TF-3 4.68.4.1.2.2)
into one ``iherad:RetrieveImagingDocumentSetRequest`` (RAD TF-3 4.69.4.1.2): a StudyRequest holding one
SeriesRequest whose DocumentRequests carry RepositoryUniqueId = the series' Retrieve Location UID
(0040,E011) and DocumentUniqueId = the SOP Instance UID, plus the TransferSyntaxUIDList of the
consumer's preferences.  The Imaging Document Source's endpoint comes from ``resolve_imaging_source``
(Retrieve Location UID -> URL).

The answer (RAD TF-3 4.69.4.2: an ITI-43 style RetrieveDocumentSetResponse in MTOM/XOP) is read as a
stream by :class:`~xds_core.soap.client.SoapClient`: each attachment is handed over as soon as it is
complete (``on_part``), identified by its own Part 10 header, checked (complete Part 10, SOP Instance
UID and SOP Class UID as the manifest says) and stored, then released - so a whole study is never held,
and whatever arrived before a dropped connection is kept.  Whether the SOAP root comes first or last
(RFC 2387 ``start``) does not matter: documents the streaming pass could not place are taken from the
root's DocumentResponses (xop:Include or inline base64) once it is read.

Resumable: instances the destination already ``has()`` are not requested.  A transport failure (refused,
dropped mid-stream, HTTP 5xx) retries the series' still-missing instances, at most ``max_attempts``
times with exponential backoff.  Per-document RegistryErrors (XDSDocumentUniqueIdError, ...) and a
PartialSuccess status are reported, not raised.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import requests

from consumer.destinations import Destination, DestinationError, InstanceRef
from consumer.part10 import Part10Error, read_identity
from kos.reader import Manifest, ManifestSeries
from xds_core import audit, ns
from xds_core.ebxml.messages import DocumentRequest, RetrieveImagingDocumentSetRequest, SeriesRequest, StudyRequest
from xds_core.ebxml.parse import parse_retrieve_document_set_response
from xds_core.ebxml.serialize import retrieve_imaging_document_set_request
from xds_core.errors import ErrorCode, XdsError
from xds_core.identifiers import is_dicom_uid
from xds_core.soap.client import SoapClient, SoapResult, TransportError, new_session
from xds_core.soap.mtom import Attachment
from xds_core.vocabulary import Action, ResponseStatus

#: DICOM PS3.5 Annex A / PS3.6 Table A-1 Transfer Syntax UIDs a consumer commonly prefers.
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"

#: Codes of findings made by the consumer itself (not from the Imaging Document Source's answer).
TRANSPORT_ERROR = "TransportError"
DESTINATION_ERROR = "DestinationError"

_B_RESPONSE = f"{{{ns.XDSB}}}RetrieveDocumentSetResponse"


class RetrievalSetupError(ValueError):
    """The retrieval's own arguments are unusable (no transfer syntax, ``max_attempts`` < 1, ...)."""


@dataclass(frozen=True, slots=True)
class RetrievalError:
    """One finding: an ``rs:RegistryError`` of the answer (errorCode, location, codeContext), or the
    consumer's own (:data:`TRANSPORT_ERROR`, :data:`DESTINATION_ERROR`, ``InvalidDocumentContent``,
    ``XDSMissingDocument``, ``XDSUnknownRepositoryId``)."""

    code: str
    location: str
    text: str
    series_instance_uid: str = ""


@dataclass(slots=True)
class SeriesCounts:
    """Instances of one manifest series: requested = every instance the manifest names."""

    study_instance_uid: str
    series_instance_uid: str
    retrieve_location_uid: str
    requested: int = 0
    already_present: int = 0
    retrieved: int = 0
    failed: int = 0
    attempts: int = 0
    #: RegistryResponse/@status of the last answer (ITI TF-3 4.2.4), "" without one.
    status: str = ""


@dataclass(slots=True)
class StudyCounts:
    study_instance_uid: str
    requested: int = 0
    already_present: int = 0
    retrieved: int = 0
    failed: int = 0


@dataclass
class RetrievalReport:
    series: list[SeriesCounts] = field(default_factory=list)
    errors: list[RetrievalError] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0

    @property
    def requested(self) -> int:
        return sum(s.requested for s in self.series)

    @property
    def already_present(self) -> int:
        return sum(s.already_present for s in self.series)

    @property
    def retrieved(self) -> int:
        return sum(s.retrieved for s in self.series)

    @property
    def failed_count(self) -> int:
        return sum(s.failed for s in self.series)

    def studies(self) -> list[StudyCounts]:
        """Counts per study, in manifest order."""
        out: dict[str, StudyCounts] = {}
        for s in self.series:
            study = out.setdefault(s.study_instance_uid, StudyCounts(s.study_instance_uid))
            study.requested += s.requested
            study.already_present += s.already_present
            study.retrieved += s.retrieved
            study.failed += s.failed
        return list(out.values())

    @property
    def ok(self) -> bool:
        """Every instance of the manifest is at the destination and nothing went wrong."""
        return self.failed_count == 0 and not self.errors

    @property
    def failed(self) -> bool:
        """Something went wrong and no instance is at the destination."""
        return not self.ok and self.retrieved + self.already_present == 0

    @property
    def partial(self) -> bool:
        """Something went wrong, but some instances are at the destination."""
        return not self.ok and not self.failed


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """``series``: a series starts (``total`` instances, ``done`` already present); ``instance``: one was
    stored; ``retry``: a transport failure, ``message`` says which; ``error``: an instance failed."""

    kind: Literal["series", "instance", "retry", "error"]
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str | None
    done: int
    total: int
    message: str = ""


def retrieve_manifest(manifest: Manifest, destination: Destination, *,
                      resolve_imaging_source: Callable[[str], str], transfer_syntaxes: Sequence[str],
                      progress: Callable[[ProgressEvent], None] | None = None, max_attempts: int = 3,
                      backoff: float = 1.0, timeout: float = 300) -> RetrievalReport:
    """Bring every instance of ``manifest`` to ``destination`` (RAD-69, one request per series).

    :param resolve_imaging_source: Retrieve Location UID -> the Imaging Document Source's RAD-69 URL;
        raises (any exception, its message reported) for a UID it does not know.
    :param transfer_syntaxes: the TransferSyntaxUIDList, most preferred first (RAD TF-3 4.69.4.1.2).
    :param max_attempts: requests per series at most (the first and the retries after a transport failure).
    :param backoff: seconds before the first retry, doubled for each further one.
    :param timeout: seconds to connect and between two reads of the answer.
    """
    syntaxes = list(transfer_syntaxes)
    if not syntaxes:
        raise RetrievalSetupError("no transfer syntax: RAD-69 needs a TransferSyntaxUIDList (RAD TF-3 4.69.4.1.2)")
    for uid in syntaxes:
        if not is_dicom_uid(uid):
            raise RetrievalSetupError(f"transfer syntax {uid!r} is not a DICOM UID (PS3.5 9.1)")
    if max_attempts < 1:
        raise RetrievalSetupError(f"max_attempts must be at least 1, not {max_attempts}")
    started = time.monotonic()
    report = RetrievalReport()
    # new_session(): under XDS_TLS this node's certificate is presented to the imaging sources (ITI-19).
    with tempfile.TemporaryDirectory(prefix="xds-consumer-") as spool, new_session() as session:
        run = _Run(destination, report, progress, Path(spool), session, syntaxes, max_attempts, backoff, timeout)
        for study in manifest.studies:
            for series in study.series:
                run.series(study.study_instance_uid, series, resolve_imaging_source)
    report.seconds = time.monotonic() - started
    return report


class _Run:
    def __init__(self, destination: Destination, report: RetrievalReport,
                 progress: Callable[[ProgressEvent], None] | None, spool: Path, session: requests.Session,
                 syntaxes: list[str], max_attempts: int, backoff: float, timeout: float) -> None:
        self.destination = destination
        self.report = report
        self.progress = progress
        self.spool = spool
        self.session = session
        self.syntaxes = syntaxes
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.timeout = timeout
        #: Instances a batching destination took but has not confirmed yet: SOP Instance UID -> (ref, size).
        self._queued: dict[str, tuple[InstanceRef, int]] = {}

    # ---------------------------------------------------------------- one series

    def series(self, study_uid: str, series: ManifestSeries, resolve: Callable[[str], str]) -> None:
        location = series.retrieve_location_uid or ""
        counts = SeriesCounts(study_uid, series.series_instance_uid, location, requested=len(series.instances))
        self.report.series.append(counts)
        self.counts = counts
        pending: dict[str, InstanceRef] = {}
        held = self._series_held(study_uid, series.series_instance_uid)
        for instance in series.instances:
            ref = InstanceRef(study_uid, series.series_instance_uid, instance.sop_instance_uid,
                              instance.sop_class_uid)
            bad = [f"{name} {uid!r}" for name, uid in (
                ("Study Instance UID", ref.study_instance_uid), ("Series Instance UID", ref.series_instance_uid),
                ("SOP Instance UID", ref.sop_instance_uid), ("SOP Class UID", ref.sop_class_uid))
                if not is_dicom_uid(uid)]
            if bad:
                self._fail(ref, ErrorCode.XDSDocumentUniqueIdError.value,
                           f"the manifest names an instance with {', '.join(bad)}: not a DICOM UID (PS3.5 9.1)")
                continue
            if ref.sop_instance_uid in pending:
                counts.requested -= 1  # listed twice in the evidence: one instance
                continue
            try:
                present = (held.get(ref.sop_instance_uid) == ref.sop_class_uid if held is not None
                           else self.destination.has(ref))
            except DestinationError as exc:
                self._fail(ref, DESTINATION_ERROR, str(exc))
                continue
            if present:
                counts.already_present += 1
            else:
                pending[ref.sop_instance_uid] = ref
        self._event("series", study_uid, None, f"Retrieve Location UID {location or '(none)'}")
        if not pending:
            return
        if not location:
            for ref in pending.values():
                self._fail(ref, ErrorCode.XDSUnknownRepositoryId.value,
                           f"series {series.series_instance_uid} has no Retrieve Location UID (0040,E011) in the "
                           "manifest (RAD TF-3 4.68.4.1.2.2)", location="")
            return
        try:
            url = resolve(location)
        except Exception as exc:  # the resolver's own error, named in the report
            message = f"Retrieve Location UID {location} of series {series.series_instance_uid}: {exc}"
            self.report.errors.append(RetrievalError(ErrorCode.XDSUnknownRepositoryId.value, location, message,
                                                     series.series_instance_uid))
            counts.failed += len(pending)
            for ref in pending.values():
                self._event("error", study_uid, ref.sop_instance_uid, message)
            return
        client = SoapClient(url, timeout=self.timeout, spool_dir=str(self.spool), session=self.session)
        last_failure = ""
        while pending and counts.attempts < self.max_attempts:
            if counts.attempts:
                delay = self.backoff * 2 ** (counts.attempts - 1)
                self._event("retry", study_uid, None, f"attempt {counts.attempts + 1} of {self.max_attempts} "
                                                      f"in {delay:g} s after: {last_failure}")
                time.sleep(delay)
            counts.attempts += 1
            failure = self._exchange(client, study_uid, series.series_instance_uid, location, pending)
            if failure is None:
                break
            last_failure = failure
        self._flush()
        if pending:
            message = (f"{len(pending)} instance(s) not retrieved from {url} after {counts.attempts} attempt(s): "
                       f"{last_failure}")
            self.report.errors.append(RetrievalError(TRANSPORT_ERROR, location, message,
                                                     series.series_instance_uid))
            counts.failed += len(pending)
            for ref in pending.values():
                self._event("error", study_uid, ref.sop_instance_uid, message)
            pending.clear()

    def _exchange(self, client: SoapClient, study_uid: str, series_uid: str, location: str,
                  pending: dict[str, InstanceRef]) -> str | None:
        """One RAD-69 exchange for ``pending`` (emptied of what is settled); a transport failure's text, or
        ``None`` when the answer was read (each instance then stored or failed)."""
        request = RetrieveImagingDocumentSetRequest(
            [StudyRequest(study_uid, [SeriesRequest(series_uid, [DocumentRequest(location, uid) for uid in pending])])],
            list(self.syntaxes))
        body = retrieve_imaging_document_set_request(request)

        def on_part(attachment: Attachment) -> None:
            # Streaming: an attachment whose own header names a pending instance is stored right away.
            source = self._content_of(attachment)
            try:
                identity = read_identity(source)
            except (Part10Error, OSError):
                identity = None  # decided once the root names it
            ref = pending.get(identity[0]) if identity else None
            if ref is not None and identity == (ref.sop_instance_uid, ref.sop_class_uid):
                del pending[ref.sop_instance_uid]
                self._store(ref, source, attachment.size)
                attachment.close()

        requested = list(pending)
        # RAD TF-3 4.69.5 / DICOM PS3.15 A.5.3.7: the consumer's side of RAD-69 (DICOM Instances Transferred).
        outcome = audit.EventOutcome.MAJOR_FAILURE  # the source could not be reached or answered no SOAP
        try:
            try:
                result = client.call(Action.RetrieveImagingDocumentSet.value, body, on_part=on_part)
            except TransportError as exc:
                return str(exc)
            try:
                if result.fault is not None:
                    text = f"SOAP fault {result.fault.code}: {result.fault.reason}"
                    if result.http_status >= 500:
                        return f"HTTP {result.http_status}: {text}"
                    outcome = audit.EventOutcome.SERIOUS_FAILURE
                    self._fail_all(pending, ErrorCode.XDSRepositoryError.value, location, text)
                    return None
                if result.http_status >= 500:
                    return f"HTTP {result.http_status}"
                self._answer(result, location, pending)
                answered = audit.outcome_of_status(self.counts.status, audit.EventOutcome.SERIOUS_FAILURE)
                outcome = answered if answered is not None else outcome  # SUCCESS is 0: no "or" here
                return None
            finally:
                result.close()
        finally:
            audit.record_sent(audit.Transaction.RAD_69, client.url, outcome, audit.imaging_objects, None,
                              {study_uid: requested})

    def _answer(self, result: SoapResult, location: str, pending: dict[str, InstanceRef]) -> None:
        response = result.body
        if response is not None and response.tag != _B_RESPONSE:
            response = response.find(f".//{_B_RESPONSE}")
        if response is None:
            self._fail_all(pending, ErrorCode.XDSRepositoryError.value, location,
                           "the answer has no xdsb:RetrieveDocumentSetResponse (RAD TF-3 4.69.4.2)")
            return
        try:
            status, errors, documents = parse_retrieve_document_set_response(response)
        except XdsError as exc:
            self._fail_all(pending, ErrorCode.XDSRepositoryError.value, location,
                           "unreadable RetrieveDocumentSetResponse: "
                           + "; ".join(e.code_context for e in exc.errors))
            return
        self.counts.status = status
        for error in errors:
            ref = pending.pop(error.location, None)
            self.report.errors.append(RetrievalError(str(error.error_code), error.location, error.code_context,
                                                     self.counts.series_instance_uid))
            if ref is not None and error.is_error:
                self.counts.failed += 1
                self._event("error", ref.study_instance_uid, ref.sop_instance_uid, error.code_context)
            elif ref is not None:  # a warning about an instance: it may still come
                pending[ref.sop_instance_uid] = ref
        for document in documents:
            ref = pending.get(document.document_unique_id)
            if ref is None:
                continue  # stored while streaming, already failed, or never asked for
            del pending[ref.sop_instance_uid]
            try:
                attachment = result.binary(document.element)
            except (ValueError, KeyError) as exc:
                self._fail(ref, ErrorCode.InvalidDocumentContent.value, f"no content for the document: {exc}")
                continue
            source = self._content_of(attachment)
            try:
                identity = read_identity(source)
                if identity != (ref.sop_instance_uid, ref.sop_class_uid):
                    raise Part10Error(f"it is SOP Instance {identity[0]} of SOP Class {identity[1]}, the manifest "
                                      f"names SOP Instance {ref.sop_instance_uid} of SOP Class {ref.sop_class_uid}")
            except (Part10Error, OSError) as exc:
                self._fail(ref, ErrorCode.InvalidDocumentContent.value,
                           f"the returned document is not the complete Part 10 object the manifest names: {exc}")
            else:
                self._store(ref, source, attachment.size)
            finally:
                attachment.close()
        if status == ResponseStatus.FAILURE.value and not errors and pending:
            self.report.errors.append(RetrievalError(ErrorCode.XDSRepositoryError.value, location,
                                                     "Failure without a RegistryError",
                                                     self.counts.series_instance_uid))
        for ref in list(pending.values()):
            self._fail(ref, ErrorCode.XDSMissingDocument.value,
                       f"the answer ({status or 'no status'}) neither returns SOP Instance {ref.sop_instance_uid} "
                       "nor reports an error for it")
        pending.clear()

    # ---------------------------------------------------------------- helpers

    def _series_held(self, study_uid: str, series_uid: str) -> dict[str, str] | None:
        """What the destination holds of the series, asked once, when it can answer for a whole series;
        None: ask per instance (also when the series question failed: each instance then says why)."""
        series_present = getattr(self.destination, "series_present", None)
        if series_present is None or not (is_dicom_uid(study_uid) and is_dicom_uid(series_uid)):
            return None
        try:
            return dict(series_present(study_uid, series_uid))
        except DestinationError:
            return None

    @staticmethod
    def _content_of(attachment: Attachment) -> Path | bytes:
        """The attachment's spill file, or its bytes when it was small enough to stay in memory."""
        if attachment.path is not None:
            return attachment.path
        return attachment.read_bytes()

    def _store(self, ref: InstanceRef, source: Path | bytes, size: int) -> None:
        try:
            self.destination.put(ref, source)
        except DestinationError as exc:
            self._fail(ref, DESTINATION_ERROR, str(exc))
            return
        self.counts.retrieved += 1
        self.report.bytes += size
        if getattr(self.destination, "flush", None) is not None:
            self._queued[ref.sop_instance_uid] = (ref, size)
        self._event("instance", ref.study_instance_uid, ref.sop_instance_uid)

    def _flush(self) -> None:
        """A destination that stores in batches (STOW-RS) says at the end of each series which of the
        instances it took were not stored: those count as failed, not retrieved."""
        flush = getattr(self.destination, "flush", None)
        queued, self._queued = self._queued, {}
        if flush is None:
            return
        try:
            failures = dict(flush())
        except DestinationError as exc:
            failures = {uid: str(exc) for uid in queued}
        for uid, text in failures.items():
            if uid not in queued:
                continue
            ref, size = queued[uid]
            self.counts.retrieved -= 1
            self.report.bytes -= size
            self._fail(ref, DESTINATION_ERROR, text)

    def _fail(self, ref: InstanceRef, code: str, text: str, *, location: str | None = None) -> None:
        self.report.errors.append(RetrievalError(code, ref.sop_instance_uid if location is None else location, text,
                                                 ref.series_instance_uid))
        self.counts.failed += 1
        self._event("error", ref.study_instance_uid, ref.sop_instance_uid, text)

    def _fail_all(self, pending: dict[str, InstanceRef], code: str, location: str, text: str) -> None:
        self.report.errors.append(RetrievalError(code, location, text, self.counts.series_instance_uid))
        self.counts.failed += len(pending)
        for ref in pending.values():
            self._event("error", ref.study_instance_uid, ref.sop_instance_uid, text)
        pending.clear()

    def _event(self, kind: Literal["series", "instance", "retry", "error"], study_uid: str,
               sop_uid: str | None, message: str = "") -> None:
        if self.progress is None:
            return
        c = self.counts
        with contextlib.suppress(Exception):  # a failing progress display must not stop the retrieval
            self.progress(ProgressEvent(kind, study_uid, c.series_instance_uid, sop_uid,
                                        c.already_present + c.retrieved, c.requested, message))


__all__ = [
    "EXPLICIT_VR_LITTLE_ENDIAN", "JPEG_LS_LOSSLESS", "ProgressEvent", "RetrievalError", "RetrievalReport",
    "RetrievalSetupError", "SeriesCounts", "StudyCounts", "retrieve_manifest",
]

