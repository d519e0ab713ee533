"""ITI-43 Retrieve Document Set (ITI TF-2 3.43).

Each DocumentRequest is answered with a DocumentResponse whose Document is an
MTOM part streamed from storage, or with a RegistryError:

- a RepositoryUniqueId that is not this repository's -> ``XDSUnknownRepositoryId``
  (ITI TF-3 Table 4.2.4.1-2: "does not match the repositoryUniqueId");
- a document this repository does not hold (or holds only pending
  registration) -> ``XDSDocumentUniqueIdError``.  The issue text says
  "XDSMissingDocument", but that code is an ITI-41 code (a DocumentEntry
  without its document); ITI TF-2 3.43.4.2.3 and ITI TF-3 Table 4.2.4.1-2
  name XDSDocumentUniqueIdError for "the document associated with the
  uniqueId is not available" in ITI-43;
- a stored file whose bytes no longer match its SHA-1 -> ``XDSRepositoryError``
  (never wrong bytes);
- a DocumentRequest past what one transaction answers (:class:`RetrieveLimits`: the number of
  DocumentRequests, the total bytes of the documents returned) -> ``XDSRepositoryError``.  ITI TF-2
  3.43.4.2.2: a document that is not returned gets a RegistryError of severity Error whose location
  is its DocumentUniqueId, and no DocumentResponse; the others are still returned, with status
  PartialSuccess (Failure when none is).  ITI TF-3 Table 4.2.4.1-2 reserves ``XDSRepositoryError``
  for when "a more detailed code is not available" - none names a per-transaction capacity
  (``XDSRepositoryOutOfResources`` is the repository running low, not this request being large).
  Every DocumentRequest still gets its own answer - a DocumentResponse or a RegistryError naming
  it - even when one document is named many times (each occurrence is served and counted).

Overall status (ITI TF-2 3.43, ITI TF-3 4.2.4): all returned Success, some PartialSuccess, none Failure.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from xds_core import audit
from xds_core.ebxml.messages import DocumentRequest
from xds_core.ebxml.responses import DocumentResponse, RetrieveDocumentSetResult
from xds_core.errors import ErrorCode, RegistryError
from xds_core.log_ref import log_ref, redact
from xds_core.soap.mtom import OutgoingPart
from xds_repository import records
from xds_repository import storage as store
from xds_repository.models import StoredDocument
from xds_repository.provide_and_register import RepositoryConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrieveLimits:
    """What one ITI-43 transaction answers at most (``XDS_ITI43_MAX_DOCUMENTS`` / ``XDS_ITI43_MAX_BYTES``).

    ``max_documents`` counts DocumentRequests in request order (found or not); ``max_bytes`` the
    documents returned: each one is returned if it still fits in what the ones before it left,
    else declined, so a large document does not keep smaller later ones from being served.
    """

    max_documents: int = 1000
    max_bytes: int = 2 * 1024**3


def _error(code: ErrorCode, context: str, location: str = "") -> RegistryError:
    """An Error-severity RegistryError with its location (the keyword keeps severity out of the way)."""
    return RegistryError(code, context, location=location)


def retrieve_document_set(requests: list[DocumentRequest], config: RepositoryConfig,
                          limits: RetrieveLimits | None = None) -> RetrieveDocumentSetResult:
    """Answer each DocumentRequest with a document streamed from storage, or with an error."""
    started = time.monotonic()
    limits = limits or RetrieveLimits()
    audit.describe(audit.document_objects, requests)  # ITI TF-2b 3.43.6.1: the requested documents
    errors: list[RegistryError] = []
    documents: list[DocumentResponse] = []
    answered, beyond = requests[:limits.max_documents], requests[limits.max_documents:]
    ours = [r for r in answered if r.repository_unique_id == config.repository_unique_id]
    rows = records.find_registered([r.document_unique_id for r in ours])
    budget = limits.max_bytes
    declined_bytes = 0  # documents found but past the byte cap
    for wanted in answered:
        if wanted.repository_unique_id != config.repository_unique_id:
            errors.append(_error(
                ErrorCode.XDSUnknownRepositoryId,
                f"RepositoryUniqueId {wanted.repository_unique_id} is not this repository "
                f"({config.repository_unique_id})", wanted.repository_unique_id))
            continue
        row = rows.get(wanted.document_unique_id)
        if row is None:
            errors.append(_error(
                ErrorCode.XDSDocumentUniqueIdError,
                f"document {wanted.document_unique_id} is not available in repository "
                f"{config.repository_unique_id}", wanted.document_unique_id))
            continue
        if row.size > budget:
            declined_bytes += 1
            errors.append(_error(
                ErrorCode.XDSRepositoryError,
                f"document {wanted.document_unique_id} not returned: its {row.size} bytes would take this "
                f"transaction past the {limits.max_bytes} bytes one ITI-43 returns; request it separately",
                wanted.document_unique_id))
            continue
        local_file = store.local_path(config.storage, row.storage_name)
        if local_file is not None:
            try:
                # Checked before the first byte goes out, so a damaged file becomes an error
                # for this document rather than a response with wrong bytes.  Stored files are
                # immutable (content-addressed, renamed into place), so the checked file is sent.
                store.verify(config.storage, row.storage_name, sha1=row.hash, size=row.size)
            except store.StorageError as exc:
                logger.error("stored document %s failed its check: %s", log_ref(row.unique_id), redact(exc))
                errors.append(_error(
                    ErrorCode.XDSRepositoryError,
                    f"document {wanted.document_unique_id} cannot be returned: stored content damaged",
                    wanted.document_unique_id))
                continue
            source: Path | Callable[[], Iterator[bytes]] = local_file
        else:
            # A remote backend (object store) is read once: hashed on the way out, and a
            # mismatch aborts the stream instead of completing it with wrong bytes.
            source = _checked_chunks(config, row)
        budget -= row.size  # only what is returned counts
        part = OutgoingPart(content_id=f"{uuid.uuid4().hex}@xds-repository", content_type=row.mime_type,
                            source=source, size=row.size)
        documents.append(DocumentResponse(repository_unique_id=config.repository_unique_id,
                                          document_unique_id=row.unique_id, mime_type=row.mime_type,
                                          part=part, home_community_id=wanted.home_community_id))
    for wanted in beyond:
        errors.append(_error(
            ErrorCode.XDSRepositoryError,
            f"document {wanted.document_unique_id} not returned: this request names {len(requests)} "
            f"DocumentRequests, one ITI-43 answers at most {limits.max_documents}; request the rest separately",
            wanted.document_unique_id))
    audit.delivered(d.document_unique_id for d in documents)  # ITI TF-2b 3.43.6.1.2: mixed results, two events
    # The endpoint writes the transaction's one line (status, error count); the caps' share is a detail.
    logger.debug("transaction=ITI-43 requested=%d returned=%d errors=%s bytes=%d over_count_cap=%d "
                 "over_byte_cap=%d ms=%d", len(requests), len(documents),
                 ",".join(sorted({e.error_code for e in errors})) or "-", sum(d.part.size or 0 for d in documents),
                 len(beyond), declined_bytes, (time.monotonic() - started) * 1000)
    return RetrieveDocumentSetResult(errors, documents)


def _checked_chunks(config: RepositoryConfig, row: StoredDocument) -> Callable[[], Iterator[bytes]]:
    """Chunks from storage, hashed on the way out."""
    storage, name, sha1, size = config.storage, row.storage_name, row.hash, row.size
    return lambda: store.chunks(storage, name, sha1=sha1, size=size)
