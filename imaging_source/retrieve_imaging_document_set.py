"""RAD-69 Retrieve Imaging Document Set: the Imaging Document Source side (RAD TF-3 4.69).

For each requested instance (DocumentUniqueId = SOP Instance UID, RAD TF-3 4.69) the PACS is
asked - one C-GET / C-MOVE / WADO-RS request per series, never per instance - and the
instance is delivered in the consumer's most preferred requested transfer syntax we can
provide (the TransferSyntaxUIDList is in preference order, RAD TF-3 4.69.4.1.2): as received
when it already is in that syntax, transcoded otherwise (:mod:`imaging_source.dicom.transcode`).
When the most preferred syntax is a lossless compression, the WADO-RS request asks the PACS
for it (``transfer-syntax=<uid>``, so the PACS compresses; ``*`` again if it refuses).

Per-document errors (RAD TF-3 4.69.4.2.3 via Gazelle assertions RAD69-016/019: severity Error,
``location`` = the SOP Instance UID, no DocumentResponse for it); the others are still
returned -> PartialSuccess (ITI TF-3 4.2.4, ITI TF-2b 3.43):

======================================================  ===============================================
situation                                               errorCode
======================================================  ===============================================
RepositoryUniqueId empty or not ours                    XDSUnknownRepositoryId (ITI TF-3 Table 4.2.4.1-2)
DocumentUniqueId / studyInstanceUID / seriesInstanceUID XDSDocumentUniqueIdError
empty or not a DICOM UID (the access gate,
:mod:`imaging_source.access`), instance unknown, or in
another study/series than requested
no TransferSyntaxUID requested, or none is a known one  urn:dicom:wado:0006 (DICOM PS3.18 6.4.4)
this instance cannot be produced in any requested one   urn:dicom:wado:0007 (DICOM PS3.18 6.4.4)
PACS unreachable / failure for the whole series         XDSRepositoryError
PACS too slow (PacsDeadlines: no first byte within      XDSRepositoryError, for every instance not yet
XDS_PACS_FIRST_BYTE_TIMEOUT, or silent for              delivered (the fetch ends at once)
XDS_PACS_IDLE_TIMEOUT in the middle of an answer)
======================================================  ===============================================

A PACS that stops answering is the "unreachable PACS" case, found out by a time rule rather than a
refused connection: XDSRepositoryError (ITI TF-3 Table 4.2.4.1-2: the repository - here the Imaging
Document Source, RAD TF-3 4.69.4.2.3 - could not produce the document), never XDSDocumentUniqueIdError,
which would claim the instance does not exist; what was delivered before stays (PartialSuccess).  No
instance is then located by a C-FIND / QIDO-RS (that would ask the silent PACS once more per instance).

Every UID of the request passes the access gate (:mod:`imaging_source.access`, PS3.5 §9.1) before
any PACS call, the first series sent ahead included; a DocumentRequest with any UID that is not a
DICOM UID is not attempted (its RegistryError lists every finding, location = its DocumentUniqueId
as received) and the others are still retrieved.

Domain code: configuration comes in as :class:`ImagingSourceConfig`, built by the view layer.
"""

from __future__ import annotations

import io
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread

from imaging_source.access import check_documents, check_series, check_transfer_syntaxes, describe
from imaging_source.dicom.auditing import patient_id_of_part10
from imaging_source.dicom.config import DicomConfig
from imaging_source.dicom.dimse_retrieve import timed_config
from imaging_source.dicom.fetch import FetchStream
from imaging_source.dicom.find import FindError, locate_instance
from imaging_source.dicom.instances import (
    DEFAULT_DEADLINES,
    FetchedInstance,
    FetchError,
    FetchResult,
    PacsDeadlines,
    PacsTimeout,
    SeriesFetch,
)
from imaging_source.dicom.transcode import (
    TargetChoice,
    TranscodeError,
    known_transfer_syntax,
    pacs_transfer_syntax,
    transcode_dataset,
)
from imaging_source.dicom.wado_rs import RequestAhead, send_ahead
from xds_core import audit
from xds_core.ebxml.messages import RetrieveImagingDocumentSetRequest
from xds_core.ebxml.responses import DocumentResponse, document_response_xml
from xds_core.errors import ErrorCode, RegistryError, Severity, WadoErrorCode
from xds_core.log_ref import redact
from xds_core.soap.mtom import OutgoingPart
from xds_core.vocabulary import DICOM_MIME_TYPE

logger = logging.getLogger("imaging_source.rad69")

#: Above this many missing instances we stop asking the PACS where each one really is.
MAX_LOCATE = 50


@dataclass(frozen=True)
class ImagingSourceConfig:
    repository_unique_id: str  # XDS_IMAGING_SOURCE_ID = the KOS Retrieve Location UID
    dicom: DicomConfig
    #: The PACS's time rules (XDS_PACS_FIRST_BYTE_TIMEOUT / XDS_PACS_IDLE_TIMEOUT).
    deadlines: PacsDeadlines = field(default_factory=lambda: DEFAULT_DEADLINES)

    @classmethod
    def from_settings(cls, settings: Any) -> ImagingSourceConfig:
        return cls(repository_unique_id=settings.XDS_IMAGING_SOURCE_ID, dicom=DicomConfig.from_settings(settings),
                   deadlines=PacsDeadlines.from_settings(settings))


@dataclass
class RetrieveOutcome:
    errors: list[RegistryError] = field(default_factory=list)
    documents: list[DocumentResponse] = field(default_factory=list)
    transcoded: int = 0
    #: :func:`document_response_xml` of each document, made as it was delivered (the streamed answer's root).
    fragments: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Wanted:
    index: int
    study_uid: str
    series_uid: str
    sop_uid: str
    repository_unique_id: str
    home_community_id: str | None


def _error(code: str, context: str, location: str) -> RegistryError:
    return RegistryError(str(code), context, Severity.ERROR, location)


def retrieve_imaging_document_set(request: RetrieveImagingDocumentSetRequest, config: ImagingSourceConfig,
                                  ahead: RequestAhead | None = None) -> RetrieveOutcome:
    """Answer one RAD-69 request: the documents to return and the per-document errors.

    Everything is fetched before the answer is known (the SOAP root part, which lists the
    documents and errors, goes first in the MTOM package).  See :func:`stream_imaging_document_set`
    for the pipelined variant.
    """
    retrieval = _Retrieval(request, config, ahead)
    for item, instance in retrieval.instances():
        retrieval.deliver(item, instance)
    return retrieval.finish()


def send_first_series_ahead(config: ImagingSourceConfig, study_uid: str, series_uid: str,
                            sop_uids: list[str], transfer_syntaxes: list[str] | None = None) -> RequestAhead | None:
    """Ask the PACS for a request's first series now (:func:`~imaging_source.dicom.wado_rs.send_ahead`).

    ``transfer_syntaxes``: the request's TransferSyntaxUIDList, in order (the PACS is asked for the
    most preferred one when it is a lossless compression, :func:`pacs_transfer_syntax`).
    The answer is used by the retrieval when its checks leave that series' fetch as asked
    here (same path, same Accept), and cancelled otherwise - a guess that costs nothing when it is wrong.
    """
    # The access gate first (PS3.5 §9.1): nothing of a series with a non-UID is sent ahead; the
    # retrieval answers for it per document.
    checked = check_series(study_uid, series_uid, sop_uids)
    if isinstance(checked, list):
        return None
    wanted = list(check_transfer_syntaxes(transfer_syntaxes or ()).uids)
    return send_ahead(config.dicom, SeriesFetch(checked.study_uid, checked.series_uid, list(checked.sop_uids)),
                      transfer_syntax=pacs_transfer_syntax(wanted), deadlines=config.deadlines)


class StreamingRetrieve:
    """RAD-69 answered while the PACS is still sending: parts first, then the outcome.

    ``parts()`` yields one MTOM part per delivered instance as soon as the PACS delivered it
    (WADO-RS: per instance; C-GET/C-MOVE: per series); each instance's memory is released once
    its part has been consumed.  After ``parts()`` is exhausted, ``outcome()`` has the errors
    and the DocumentResponses for the SOAP root, which then goes LAST in the MTOM package
    (RFC 2387 3.2 / XOP 1.0 4.1: the ``start`` parameter, not the order, names the root).
    """

    def __init__(self, request: RetrieveImagingDocumentSetRequest, config: ImagingSourceConfig,
                 ahead: RequestAhead | None = None) -> None:
        self._retrieval = _Retrieval(request, config, ahead)  # the PACS is asked already (send_ahead)
        self._outcome: RetrieveOutcome | None = None

    def parts(self) -> Iterator[OutgoingPart]:
        previous: FetchedInstance | None = None
        try:
            for item, instance in self._retrieval.instances():
                if previous is not None:
                    self._retrieval.release(previous)  # its part has been written out
                    previous = None
                part = self._retrieval.deliver(item, instance)
                if part is not None:
                    previous = instance
                    yield part
        finally:
            if previous is not None:
                self._retrieval.release(previous)
            self._retrieval.close()
        self._outcome = self._retrieval.finish()

    def close(self) -> None:
        """Give up an answer that will not be sent (a request sent ahead to the PACS is dropped)."""
        self._retrieval.close()

    def outcome(self) -> RetrieveOutcome:
        if self._outcome is None:
            raise RuntimeError("outcome() before parts() was exhausted")
        return self._outcome


def stream_imaging_document_set(request: RetrieveImagingDocumentSetRequest, config: ImagingSourceConfig,
                                ahead: RequestAhead | None = None) -> StreamingRetrieve:
    """``ahead``: the first series already asked for (:func:`send_first_series_ahead`), if any."""
    return StreamingRetrieve(request, config, ahead)


class _Retrieval:
    """One RAD-69 request: validation per document, fetch per series, delivery, final errors."""

    def __init__(self, request: RetrieveImagingDocumentSetRequest, config: ImagingSourceConfig,
                 ahead: RequestAhead | None = None) -> None:
        self.started = time.perf_counter()
        self.config = config
        # The audited RAD-69 exchange, if any (captured here: a streamed answer finishes after the handler).
        self.exchange = audit.current()
        self.patient_id: str | None = None  # of the first delivered instance, for the audit record
        documents = request.document_requests()
        self.requested = len(documents)
        self.errors: dict[int, RegistryError] = {}
        self.documents: dict[int, DocumentResponse] = {}
        self.fragments: dict[int, str] = {}
        self.transcoded = 0
        # Content-IDs: unique per message (RFC 2392), one random token per request rather than a UUID per part.
        self.cid_suffix = f".{uuid.uuid4().hex}@imaging-source.xds-i"
        self.parts = 0
        self.wanted: list[_Wanted] = []
        self.fetched = FetchResult()
        seen: set[tuple[str, str, str]] = set()
        requested_ts = [uid for uid in dict.fromkeys(request.transfer_syntax_uids) if uid]
        # The access gate (PS3.5 §9.1): only DICOM UIDs can name a transfer syntax to ask the PACS for.
        self.known_ts = [uid for uid in check_transfer_syntaxes(requested_ts).uids if known_transfer_syntax(uid)]
        # The consumer's order decides (RAD TF-3 4.69.4.1.2); the fast-path decision is cached per source syntax.
        self.choice = TargetChoice(self.known_ts)

        # ``ahead``: the PACS was asked for the first series before this request was parsed
        # (send_first_series_ahead); the fetch uses that request if the checks below leave its
        # first series as asked, and cancels it otherwise.
        if not self.known_ts and ahead is not None:
            ahead.cancel()  # nothing will be fetched
            ahead = None

        ours = config.repository_unique_id
        # The access gate: every UID of every DocumentRequest judged before any PACS call.
        gate = check_documents([(study, series, doc.document_unique_id) for study, series, doc in documents])
        for access, (_study, _series, doc) in zip(gate, documents, strict=True):
            index = access.index
            sop_uid = doc.document_unique_id.strip()
            repository = doc.repository_unique_id.strip()
            if not repository or repository != ours:
                # ITI TF-3 4.2.4.1: the RepositoryUniqueId must name this Imaging Document Source.
                self.errors[index] = _error(ErrorCode.XDSUnknownRepositoryId,
                                            f"RepositoryUniqueId {repository!r} is not this Imaging Document Source "
                                            f"({config.repository_unique_id})", sop_uid)
            elif access.checked is None:
                # PS3.5 §9.1: it names no instance and must reach no WADO-RS path or DIMSE key.  Not attempted;
                # XDSDocumentUniqueIdError (ITI TF-3 Table 4.2.4.1-2) at location = the DocumentUniqueId as
                # received (RAD TF-3 4.69.5, Gazelle RAD69-016), every finding in codeContext.
                self.errors[index] = _error(ErrorCode.XDSDocumentUniqueIdError, describe(access.findings),
                                            access.document_unique_id)
            elif not requested_ts:
                self.errors[index] = _error(WadoErrorCode.UnsupportedTransferSyntax,
                                            "no TransferSyntaxUID requested (iherad:TransferSyntaxUIDList is empty)",
                                            sop_uid)
            elif not self.known_ts:
                self.errors[index] = _error(
                    WadoErrorCode.UnsupportedTransferSyntax,
                    f"none of the requested transfer syntaxes is supported: {', '.join(requested_ts)}", sop_uid)
            elif (key := (access.checked.study_uid, access.checked.series_uid, access.checked.sop_uid)) in seen:
                continue  # asked twice: returned once
            else:
                seen.add(key)
                self.wanted.append(_Wanted(index, *key, repository, doc.home_community_id))

        self.stream: FetchStream | None = None
        self.by_key: dict[tuple[str, str], _Wanted] = {}
        if self.wanted:
            groups: dict[tuple[str, str], list[str]] = {}
            for item in self.wanted:
                groups.setdefault((item.study_uid, item.series_uid), []).append(item.sop_uid)
                self.by_key.setdefault((item.series_uid, item.sop_uid), item)
            series = [SeriesFetch(study, series_uid, uids) for (study, series_uid), uids in groups.items()]
            self.stream = FetchStream(config.dicom, series, accept_transfer_syntaxes=self.known_ts, ahead=ahead,
                                      wado_transfer_syntax=pacs_transfer_syntax(self.known_ts),
                                      deadlines=config.deadlines)
            self.fetched = self.stream.result
        elif ahead is not None:
            ahead.cancel()  # nothing to fetch after all

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()

    def release(self, instance: FetchedInstance) -> None:
        """An instance whose part has been sent: its memory is free for the ones still to come."""
        if self.stream is not None:
            self.stream.release(instance)
        else:
            instance.discard()

    def instances(self) -> Iterator[tuple[_Wanted, FetchedInstance]]:
        """Fetched instances with the request item they answer, in arrival order."""
        if self.stream is None:
            return
        by_key = self.by_key
        try:
            for key, instance in self.stream:
                yield by_key[key], instance
        except (FetchError, ConnectionError, OSError) as exc:
            # No UID in the log line (no patient data in operational logs); the exception names none.
            logger.warning("rad69 fetch failed: %s", redact(exc))
            context = (f"the PACS did not answer in time: {exc}" if isinstance(exc, PacsTimeout)
                       else f"the PACS could not be reached: {exc}")
            for item in self.wanted:
                if item.index not in self.documents and item.index not in self.errors:
                    self.errors[item.index] = _error(ErrorCode.XDSRepositoryError, context, item.sop_uid)

    def deliver(self, item: _Wanted, instance: FetchedInstance) -> OutgoingPart | None:
        """The part for one fetched instance (recorded as a DocumentResponse), or None (recorded as an error)."""
        self.parts += 1
        if self.exchange is not None and self.patient_id is None:
            self.patient_id = patient_id_of_part10(instance.data if instance.data is not None else instance.path)
        content_id = f"{self.parts}{self.cid_suffix}"
        try:
            if instance.data is not None and self.choice.passes_through(instance.transfer_syntax_uid, instance.data):
                part, changed = OutgoingPart(content_id, DICOM_MIME_TYPE, instance.data), 0  # the common case
            else:
                part, changed = _deliver(instance, self.choice, content_id)
        except TranscodeError as exc:
            # We serve these syntaxes in general (pass-through), just not for this instance.
            self.errors[item.index] = _error(
                WadoErrorCode.CannotProvideInTransferSyntax,
                f"instance {item.sop_uid} came from the PACS as {instance.transfer_syntax_uid} and cannot be provided"
                f" in {', '.join(self.known_ts)}: {exc}", item.sop_uid)
            instance.discard()
            return None
        self.transcoded += changed
        document = DocumentResponse(item.repository_unique_id, item.sop_uid, DICOM_MIME_TYPE, part,
                                    item.home_community_id)
        self.documents[item.index] = document
        # Its piece of the SOAP root, made now: a root-last answer sends the root after the last
        # part, and 500 of these at that point would delay the end of the answer.
        self.fragments[item.index] = document_response_xml(document)
        return part

    def finish(self) -> RetrieveOutcome:
        """Errors for what did not come back; the outcome in request order; the transaction's log line."""
        located = 0
        # Locating asks the PACS once per missing instance: under the same time rules, and not again once
        # the PACS failed to answer (a silent PACS would otherwise cost MAX_LOCATE deadlines).
        dicom = timed_config(self.config.dicom, self.config.deadlines)
        unreachable: str | None = None
        for item in self.wanted:
            if item.index in self.documents or item.index in self.errors:
                continue
            failure = self.fetched.failures.get(item.series_uid)
            if unreachable is not None:
                self.errors[item.index] = _error(ErrorCode.XDSRepositoryError,
                                                 f"instance {item.sop_uid} could not be retrieved: "
                                                 f"{failure or unreachable}", item.sop_uid)
            elif located < MAX_LOCATE:
                located += 1
                self.errors[item.index], unreachable = _missing_error(item, dicom, failure)
            else:
                self.errors[item.index] = _error(ErrorCode.XDSDocumentUniqueIdError,
                                                 f"instance {item.sop_uid} not found in series {item.series_uid}"
                                                 f" of study {item.study_uid}", item.sop_uid)
        delivered = sorted(self.documents)
        outcome = RetrieveOutcome(errors=[self.errors[i] for i in sorted(self.errors)],
                                  documents=[self.documents[i] for i in delivered],
                                  transcoded=self.transcoded, fragments=[self.fragments[i] for i in delivered])
        logger.info("rad69 requested=%d returned=%d errors=%d transcoded=%d method=%s ms=%.1f", self.requested,
                    len(outcome.documents), len(outcome.errors), self.transcoded, self.config.dicom.fetch_method,
                    (time.perf_counter() - self.started) * 1000)
        if self.exchange is not None:  # RAD TF-3 4.69 audit: DICOM Instances Transferred (PS3.15 A.5.3.7)
            self.exchange.describe(_audited_studies, self)
            self.exchange.worsen(audit.partial(len(outcome.documents), len(outcome.errors)))
        return outcome


def _audited_studies(retrieval: _Retrieval) -> list[audit.ParticipantObject]:
    """The studies asked for, with the instances sent, and their patient."""
    studies: dict[str, list[str]] = {}
    for item in retrieval.wanted:
        sent = studies.setdefault(item.study_uid, [])
        if item.index in retrieval.documents:
            sent.append(item.sop_uid)
    return audit.imaging_objects(retrieval.patient_id, studies)


def _missing_error(item: _Wanted, dicom: DicomConfig, failure: str | None) -> tuple[RegistryError, str | None]:
    """Why an instance did not come back: elsewhere in the PACS, unknown, or the PACS failed.
    -> (the error, why the PACS could not be asked - None when it answered)."""
    try:
        where = locate_instance(item.sop_uid, dicom)
    except (FindError, ConnectionError, OSError) as exc:
        return _error(ErrorCode.XDSRepositoryError,
                      f"instance {item.sop_uid} could not be retrieved: {failure or exc}", item.sop_uid), str(exc)
    return _located_error(item, where, failure), None


def _located_error(item: _Wanted, where: tuple[str, str] | None, failure: str | None) -> RegistryError:
    """The error for an instance the PACS was asked about: ``where`` it is (None: it does not have it)."""
    if where is not None and where != (item.study_uid, item.series_uid):
        return _error(ErrorCode.XDSDocumentUniqueIdError,
                      f"instance {item.sop_uid} is in study {where[0]} series {where[1]}, not in the requested "
                      f"study {item.study_uid} series {item.series_uid}", item.sop_uid)
    if where is not None:  # the PACS has it where asked, but did not deliver it
        return _error(ErrorCode.XDSRepositoryError,
                      f"the PACS did not deliver instance {item.sop_uid}: {failure or 'no reason given'}",
                      item.sop_uid)
    return _error(ErrorCode.XDSDocumentUniqueIdError,
                  f"unknown instance {item.sop_uid} (not in study {item.study_uid} series {item.series_uid})",
                  item.sop_uid)


def _deliver(instance: FetchedInstance, choice: TargetChoice, content_id: str) -> tuple[OutgoingPart, int]:
    """The MTOM part for one instance: pass-through when possible, else transcoded. -> (part, 1 if transcoded).

    The choice is made knowing whether the instance has pixel data (an SR asked for with JPEG-LS first
    goes out uncompressed), which takes parsing it - done only when the cached first choice
    (:meth:`TargetChoice.passes_through`) does not already pass it through.
    """
    source = instance.transfer_syntax_uid
    content = instance.data if instance.data is not None else instance.path
    assert content is not None
    ds = None
    if choice.passes_through(source, content):
        target: str | None = source
    else:
        data = instance.read_bytes()
        try:
            ds = dcmread(io.BytesIO(data))
        except Exception as exc:  # pydicom raises many kinds on a damaged instance
            raise TranscodeError(f"unreadable instance: {exc}") from exc
        target = choice.final(source, ds)
        del data
    if target is None:
        raise TranscodeError(f"no decoder for {source} or no encoder for the requested ones")
    if target == source:
        if instance.data is not None:
            return OutgoingPart(content_id, DICOM_MIME_TYPE, instance.data), 0
        assert instance.path is not None
        return OutgoingPart(content_id, DICOM_MIME_TYPE, _consume_file(instance.path),
                            size=instance.path.stat().st_size), 0
    assert ds is not None
    data = transcode_dataset(ds, target)
    instance.discard()
    return OutgoingPart(content_id, DICOM_MIME_TYPE, data), 1


def _consume_file(path: Path, chunk_size: int = 1024 * 1024) -> Any:
    """A part source that streams a spill file and removes it once sent."""

    def chunks() -> Iterator[bytes]:
        try:
            with open(path, "rb") as fh:
                while block := fh.read(chunk_size):
                    yield block
        finally:
            path.unlink(missing_ok=True)

    return chunks
