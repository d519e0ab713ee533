"""ITI-41 Provide and Register Document Set-b and RAD-68 Provide and Register
Imaging Document Set - MTOM/XOP (ITI TF-2 3.41, RAD TF-3 4.68).

Flow: match each ``xdsb:Document`` to its DocumentEntry, check the submitted
hash/size against what the SOAP layer computed while streaming the part, set
hash, size and repositoryUniqueId, record the documents as *pending*, store
them, forward the metadata to the Document Registry with ITI-42, and only then
mark them registered.

What a failure leaves depends on what the registry may hold, because the
repository must neither keep a document the registry never accepted nor delete
one it did (ITI TF-2 3.41.4.1.3: the registry's entry points at our copy):

- the registry certainly did not register the submission (the store failed,
  no connection to the registry was ever made, or it answered Failure: the
  submission was not registered, ITI TF-3 Table 4.2.4.2-1): what this request
  stored is removed at once;
- the outcome is unknown (a timeout or a reset after ITI-42 went out, an
  answer that is not a RegistryResponse, or our own bookkeeping failing after
  the registry said Success): the rows stay ``pending`` and the content stays;
  :mod:`xds_repository.reconcile` asks the registry later and settles them.

Either way the source gets the failure (XDSRegistryNotAvailable or the
registry's errors) and may resubmit.

Before anything is recorded or stored, the document store's file system must
keep ``min_free_space`` bytes free after the incoming documents, or the request
is refused with XDSRepositoryOutOfResources (:mod:`xds_core.disk`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass

import pydicom
from django.core.files.storage import Storage
from pydicom.errors import InvalidDicomError

from xds_core import audit, disk
from xds_core.errors import ErrorCode, RegistryError, XdsError
from xds_core.log_ref import log_ref
from xds_core.metadata.objects import DocumentEntry, Submission
from xds_core.soap.mtom import Attachment
from xds_core.vocabulary import DICOM_MIME_TYPE, KOS_FORMAT_CODE, KOS_SOP_CLASS_UID, ObjectType, ResponseStatus
from xds_repository import records
from xds_repository import storage as store
from xds_repository.registry_client import RegistryClient, RegistryNotReached, RegistryUnavailable

logger = logging.getLogger(__name__)


def _error(code: ErrorCode, context: str, location: str = "") -> RegistryError:
    """An Error-severity RegistryError with its location (the keyword keeps severity out of the way)."""
    return RegistryError(code, context, location=location)


@dataclass(frozen=True, slots=True)
class RepositoryConfig:
    """What the view layer hands the repository transactions (domain code reads no settings)."""

    repository_unique_id: str
    #: Where ITI-42 / ITI-18 go; "" = this server's registry in process.
    registry_url: str
    max_document_size: int
    storage: Storage
    storage_alias: str = "xds_documents"
    registry_timeout: float = 120.0
    #: Bytes that must stay free on the document store's file system after a submission (0: no check).
    min_free_space: int = 0


@dataclass(frozen=True, slots=True)
class SubmittedDocument:
    """One ``xdsb:Document`` of the request as the edge read it (ITI TF-2b 3.41.4.1.2).

    ``attachment`` is its content (from an MTOM part or inline base64), or None with
    ``unreadable`` saying why (an ``xop:Include`` naming no part, bad base64) or ``errors``
    already coded by the SOAP layer (e.g. a size limit).
    """

    id: str
    attachment: Attachment | None
    unreadable: str | None = None
    errors: tuple[RegistryError, ...] = ()


@dataclass(frozen=True, slots=True)
class ProvideAndRegisterDocumentSet:
    """The typed ITI-41 / RAD-68 request: the submission's metadata and its documents."""

    submission: Submission
    documents: list[SubmittedDocument]


@dataclass(frozen=True, slots=True)
class ProvideAndRegisterResult:
    """A Success: the registry's warnings (e.g. XDSExtraMetadataNotSaved) go back to the source."""

    warnings: list[RegistryError]


@dataclass
class _Incoming:
    entry: DocumentEntry
    attachment: Attachment


def provide_and_register(request: ProvideAndRegisterDocumentSet, config: RepositoryConfig) -> ProvideAndRegisterResult:
    """Run one ITI-41 / RAD-68.  Raises XdsError with every finding when the submission fails."""
    started = time.monotonic()
    submission = request.submission
    audit.describe(audit.submission_objects, submission)  # ITI TF-2b 3.41.5.1.2: patient, SubmissionSet
    incoming = _match_documents(request.documents, submission.document_entries, config)
    _check_room(config, sum(i.attachment.size for i in incoming))
    with records.InFlight(store.inflight_dir(config.storage)) as in_flight:  # held until the rows are settled
        return _store_and_register(submission, incoming, config, in_flight.owner, started)


def _store_and_register(submission: Submission, incoming: list[_Incoming], config: RepositoryConfig,
                        owner: str, started: float) -> ProvideAndRegisterResult:
    entries = [i.entry for i in incoming]
    rows = records.record_pending(
        [records.NewDocument(i.entry.unique_id or "", i.entry.mime_type, i.attachment.sha1, i.attachment.size)
         for i in incoming], storage_alias=config.storage_alias, owner=owner)
    outcome = "failure"
    # From the moment ITI-42 may have reached the registry until it certainly did not act on it.
    registry_may_hold = False
    try:
        for item, row in zip(incoming, rows, strict=True):
            try:
                stored_name = store.put(config.storage, sha1=item.attachment.sha1, size=item.attachment.size,
                                        path=item.attachment.path, open_stream=item.attachment.open)
            except store.OutOfSpace as exc:
                # ITI TF-3 Table 4.2.4.1-2: XDSRepositoryOutOfResources, "resources are low".
                raise XdsError.of(ErrorCode.XDSRepositoryOutOfResources, f"cannot store document: {exc}",
                                  item.entry.unique_id or "") from exc
            except store.StorageError as exc:
                raise XdsError.of(ErrorCode.XDSRepositoryError, f"cannot store document: {exc}",
                                  item.entry.unique_id or "") from exc
            if stored_name != row.storage_name:  # another backend may choose its own name
                row.storage_name = stored_name
                row.save(update_fields=["storage_name"])
        client = RegistryClient(config.registry_url, timeout=config.registry_timeout)
        registry_may_hold = True
        try:
            status, errors = client.register(submission)
        except RegistryNotReached as exc:
            registry_may_hold = False  # no connection was ever made: the registry saw nothing
            # ITI TF-3 Table 4.2.4.1-2 / ITI TF-2 3.41: the Repository could not reach the Registry.
            raise XdsError.of(ErrorCode.XDSRegistryNotAvailable, str(exc)) from exc
        except RegistryUnavailable as exc:
            # Sent, but no usable answer: the registry may have registered it.  Same code for the source.
            raise XdsError.of(ErrorCode.XDSRegistryNotAvailable, str(exc)) from exc
        if status not in (ResponseStatus.SUCCESS, ResponseStatus.PARTIAL_SUCCESS) or any(e.is_error for e in errors):
            # A Failure RegistryResponse: the registry did not register the submission (ITI TF-3 4.2.4.2,
            # Table 4.2.4.2-1).  Any other status with errors is not spelled out: reconcile asks the registry.
            registry_may_hold = status != ResponseStatus.FAILURE
            # The registry's own errors go back to the source (ITI TF-2 3.41, NIST test 11986).
            raise XdsError(errors or [_error(
                ErrorCode.XDSRegistryError, f"the registry answered status {status or '(none)'} without an error")])
        records.mark_registered(rows)
        outcome = "success"
        return ProvideAndRegisterResult(errors)  # warnings only, e.g. XDSExtraMetadataNotSaved
    finally:
        if outcome != "success" and registry_may_hold:
            outcome = "unknown"  # rows stay pending, content stays: reconcile settles them with the registry
            logger.warning("transaction=ITI-41 outcome=unknown documents=%d: the registry may hold them; "
                           "left pending for reconcile", len(rows))
        elif outcome != "success":
            try:
                records.discard(rows, config.storage)
            except Exception:  # the answer still carries the real error; the rows stay pending
                logger.exception("could not remove the documents of a failed ITI-41; reconcile will (%d rows)",
                                 len(rows))
        logger.debug("transaction=ITI-41 outcome=%s documents=%d bytes=%d unique_ids=%s registry=%s ms=%d",
                     outcome, len(entries), sum(i.attachment.size for i in incoming),
                     ",".join(log_ref(e.unique_id) for e in entries), config.registry_url or "local:registry",
                     (time.monotonic() - started) * 1000)


def _check_room(config: RepositoryConfig, incoming: int) -> None:
    """Refuse the submission, before anything is written, when the store's disk would drop below the
    watermark (ITI TF-3 Table 4.2.4.1-2: XDSRepositoryOutOfResources)."""
    root = store.filesystem_root(config.storage)
    if config.min_free_space <= 0 or root is None:
        return  # no watermark, or a backend whose space is not ours to measure (an object store)
    try:
        room = disk.room(root, watermark=config.min_free_space, incoming=incoming)
    except OSError as exc:
        raise XdsError.of(ErrorCode.XDSRepositoryError, f"cannot measure the document store's free space: "
                                                        f"{exc.strerror}") from exc
    if not room.enough:
        logger.warning("transaction=ITI-41 outcome=refused reason=low-space free=%d incoming=%d watermark=%d",
                       room.free, incoming, room.watermark)
        raise XdsError.of(ErrorCode.XDSRepositoryOutOfResources,
                          f"the repository is low on disk space and accepts no new documents: {room.describe()}")


def _match_documents(documents: list[SubmittedDocument], entries: list[DocumentEntry],
                     config: RepositoryConfig) -> list[_Incoming]:
    """Pair Documents with DocumentEntries and check each pair; collects ALL findings."""
    errors: list[RegistryError] = []
    by_id: dict[str, SubmittedDocument] = {}
    for document in documents:
        if document.id in by_id:
            errors.append(_error(ErrorCode.XDSRepositoryMetadataError,
                                 f"Document id {document.id} appears more than once", document.id))
        by_id[document.id] = document
    entry_ids = {e.id for e in entries}
    for doc_id in by_id:
        if doc_id not in entry_ids:
            # ITI TF-3 Table 4.2.4.1-2: a Document no DocumentEntry describes.
            errors.append(_error(ErrorCode.XDSMissingDocumentMetadata,
                                        f"Document {doc_id} has no ExtrinsicObject with that id", doc_id))
    unique_counts = Counter(e.unique_id for e in entries if e.unique_id)
    for unique_id, count in unique_counts.items():
        if count > 1:
            errors.append(_error(ErrorCode.XDSRepositoryDuplicateUniqueIdInMessage,
                                        f"DocumentEntry uniqueId {unique_id} is used {count} times", unique_id))
    incoming: list[_Incoming] = []
    for entry in entries:
        if entry.object_type == ObjectType.ON_DEMAND_DOCUMENT_ENTRY:
            errors.append(_error(ErrorCode.XDSRepositoryMetadataError,
                                        f"ExtrinsicObject {entry.id}: On-Demand entries are not accepted by ITI-41",
                                        entry.id))
            continue
        document = by_id.get(entry.id)
        if document is None:
            # ITI TF-3 Table 4.2.4.1-2: a DocumentEntry without its document.
            errors.append(_error(ErrorCode.XDSMissingDocument,
                                 f"DocumentEntry {entry.id} has no Document", entry.id))
            continue
        attachment = document.attachment
        if attachment is None:
            errors += document.errors
            if document.unreadable is not None:  # xop:Include naming no MIME part, bad base64
                errors.append(_error(ErrorCode.XDSMissingDocument,
                                     f"Document {entry.id} content unreadable: {document.unreadable}", entry.id))
            continue
        errors += _check_entry(entry, attachment, config)
        incoming.append(_Incoming(entry, attachment))
    if any(e.is_error for e in errors):
        raise XdsError(errors)
    for item in incoming:
        # ITI TF-3 Table 4.2.3.2-1: hash, size, repositoryUniqueId are set by the repository.
        item.entry.hash = item.attachment.sha1
        item.entry.size = str(item.attachment.size)
        item.entry.repository_unique_id = config.repository_unique_id
    return incoming


def _check_entry(entry: DocumentEntry, attachment: Attachment, config: RepositoryConfig) -> list[RegistryError]:
    errors: list[RegistryError] = []
    where = entry.unique_id or entry.id
    if not entry.unique_id:
        errors.append(_error(ErrorCode.XDSRepositoryMetadataError,
                                    f"DocumentEntry {entry.id} has no uniqueId", entry.id))
    if attachment.size > config.max_document_size:
        # A policy limit, reported as a resource limit: ITI TF-3 Table 4.2.4.1-2 lists
        # XDSRepositoryOutOfResources for ITI-41.
        errors.append(_error(
            ErrorCode.XDSRepositoryOutOfResources,
            f"Document {entry.id} is {attachment.size} bytes; this repository accepts at most "
            f"{config.max_document_size} bytes per document (XDS_MAX_DOCUMENT_SIZE)", where))
    # The repository validates submitted hash and size against the content (Gazelle assertion ITI41-23).
    # The code for this case is not spelled out; XDSRepositoryMetadataError is the repository's
    # "bad metadata" code in ITI TF-3 Table 4.2.4.1-2.
    if entry.hash is not None and entry.hash.strip().lower() != attachment.sha1:
        errors.append(_error(
            ErrorCode.XDSRepositoryMetadataError,
            f"DocumentEntry {entry.id}: submitted hash {entry.hash} differs from the document's SHA-1 "
            f"{attachment.sha1}", where))
    if entry.size is not None and entry.size.strip() != str(attachment.size):
        errors.append(_error(
            ErrorCode.XDSRepositoryMetadataError,
            f"DocumentEntry {entry.id}: submitted size {entry.size} differs from the document's size "
            f"{attachment.size}", where))
    format_code = entry.format_code
    if (format_code is not None and format_code.code == KOS_FORMAT_CODE) or entry.mime_type == DICOM_MIME_TYPE:
        errors += _check_manifest(entry, attachment, where)
    return errors


def _check_manifest(entry: DocumentEntry, attachment: Attachment, where: str) -> list[RegistryError]:
    """RAD-68 (RAD TF-3 4.68.4.1.2.3): the document is a DICOM Part 10 Key Object Selection whose SOP
    Instance UID is the DocumentEntry uniqueId, submitted as application/dicom."""
    errors: list[RegistryError] = []
    if entry.mime_type != DICOM_MIME_TYPE:
        errors.append(_error(
            ErrorCode.XDSRepositoryMetadataError,
            f"DocumentEntry {entry.id}: an imaging manifest (formatCode {KOS_FORMAT_CODE}) must have mimeType "
            f"{DICOM_MIME_TYPE}, not {entry.mime_type or '(none)'} (RAD TF-3 4.68.4.1.2.3.2)", where))
    try:
        with attachment.open() as fh:
            # Part 10 required (preamble + File Meta, Gazelle assertion RAD68-003): no force=True.
            dataset = pydicom.dcmread(fh, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"])
    except (InvalidDicomError, EOFError, ValueError, OSError, KeyError, TypeError) as exc:
        errors.append(_error(
            ErrorCode.XDSRepositoryMetadataError,
            f"DocumentEntry {entry.id}: the document is not a parseable DICOM Part 10 file: {exc}", where))
        return errors
    sop_class = str(dataset.get("SOPClassUID", "") or dataset.file_meta.get("MediaStorageSOPClassUID", ""))
    sop_instance = str(dataset.get("SOPInstanceUID", "") or "")
    if sop_class != KOS_SOP_CLASS_UID:
        errors.append(_error(
            ErrorCode.XDSRepositoryMetadataError,
            f"DocumentEntry {entry.id}: the DICOM document has SOP Class {sop_class or '(none)'}, "
            f"not Key Object Selection {KOS_SOP_CLASS_UID}", where))
    if sop_instance != (entry.unique_id or ""):
        errors.append(_error(
            ErrorCode.XDSRepositoryMetadataError,
            f"DocumentEntry {entry.id}: uniqueId {entry.unique_id} differs from the KOS SOP Instance UID "
            f"{sop_instance or '(none)'}", where))
    return errors
