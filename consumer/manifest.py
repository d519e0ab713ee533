"""Retrieving one imaging manifest: ITI-43 Retrieve Document Set as the Document Consumer.

The repository is the one the directory names for the entry's repositoryUniqueId (ITI TF-2b
3.43.4.1.2).  The bytes are accepted only when their SHA-1 and size equal the DocumentEntry's
``hash`` and ``size`` (ITI TF-3 4.2.3.2.11 / 4.2.3.2.19; ITI TF-2b 3.43.4.2.3 makes the consumer
the one who can check), and when they are a DICOM Key Object Selection Document (RAD TF-3
4.68.4.1.2.2; DICOM PS3.4 B.5).  Audited as the Document Consumer's side of ITI-43 (ITI TF-2b 3.43.6.1.2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from consumer.find import FoundManifest
from kos.reader import Manifest, ManifestReadError, read_manifest
from xds_core import audit
from xds_core.ebxml import parse as ebxml_parse
from xds_core.ebxml import serialize as ebxml_serialize
from xds_core.ebxml.messages import DocumentRequest
from xds_core.soap.client import SoapClient, TransportError
from xds_core.vocabulary import KOS_SOP_CLASS_UID, Action, ResponseStatus

#: A manifest larger than this is refused before it is read into memory (a KOS of 100 000 instances
#: is about 15 MB).
MAX_MANIFEST_SIZE = 256 * 1024 * 1024


class ManifestError(Exception):
    """The manifest could not be retrieved, or what came back is not the document the registry described."""


@dataclass(frozen=True, slots=True)
class RetrievedManifest:
    found: FoundManifest
    manifest: Manifest
    repository_url: str


def fetch_manifest(found: FoundManifest, *, resolve_repository: Callable[[str], str],
                   timeout: float = 120.0) -> RetrievedManifest:
    """ITI-43 for ``found``; the manifest read (:func:`kos.reader.read_manifest`) after every check.

    ``resolve_repository(repositoryUniqueId) -> URL`` comes from the endpoint directory; what it
    raises (:class:`consumer.directory.UnknownEndpoint`) goes to the caller unchanged.
    """
    url = resolve_repository(found.repository_unique_id)
    request = DocumentRequest(found.repository_unique_id, found.unique_id, found.home_community_id)
    outcome = audit.EventOutcome.SERIOUS_FAILURE
    try:
        data = _retrieve(url, request, found, timeout)
        outcome = audit.EventOutcome.SUCCESS
    except ManifestError as exc:
        if isinstance(exc.__cause__, TransportError):
            outcome = audit.EventOutcome.MAJOR_FAILURE
        raise
    finally:  # ITI TF-2b 3.43.6.1.2: the Document Consumer's side of ITI-43 (Import)
        audit.record_sent(audit.Transaction.ITI_43, url, outcome, audit.document_objects, [request])
    try:
        manifest = read_manifest(data)
    except ManifestReadError as exc:
        raise ManifestError(f"document {found.unique_id} is not a readable KOS manifest: {exc}") from exc
    if manifest.sop_class_uid != KOS_SOP_CLASS_UID:
        raise ManifestError(f"document {found.unique_id} has SOP Class {manifest.sop_class_uid or '(none)'}, "
                            f"not Key Object Selection Document {KOS_SOP_CLASS_UID}")
    return RetrievedManifest(found, manifest, url)


def _retrieve(url: str, request: DocumentRequest, found: FoundManifest, timeout: float) -> bytes:
    body = ebxml_serialize.retrieve_document_set_request([request])
    what = f"document {found.unique_id} from repository {found.repository_unique_id} at {url}"
    try:
        result = SoapClient(url, timeout=timeout).call(Action.RetrieveDocumentSet, body)
    except TransportError as exc:
        raise ManifestError(f"cannot retrieve {what}: {exc}") from exc
    try:
        if result.fault is not None:
            raise ManifestError(f"{what}: SOAP Fault {result.fault.reason}")
        if result.body is None:
            raise ManifestError(f"{what}: the answer has no SOAP body")
        try:
            status, errors, documents = ebxml_parse.parse_retrieve_document_set_response(result.body)
        except Exception as exc:  # not a RetrieveDocumentSetResponse
            raise ManifestError(f"{what}: not a usable RetrieveDocumentSetResponse: {exc}") from exc
        document = next((d for d in documents if d.document_unique_id == found.unique_id
                         and d.repository_unique_id == found.repository_unique_id), None)
        if document is None or status == ResponseStatus.FAILURE:
            reasons = "; ".join(f"{e.error_code}: {e.code_context}" for e in errors) or "no such document returned"
            raise ManifestError(f"{what}: {reasons}")
        content = result.binary(document.element)
        if not found.hash or found.size is None:
            raise ManifestError(f"{what}: the registry gave no hash/size to check the document against")
        if content.size != found.size:
            raise ManifestError(f"{what}: {content.size} bytes received, the registry says size {found.size}; "
                                "refused")
        if content.sha1.lower() != found.hash.lower():
            raise ManifestError(f"{what}: SHA-1 {content.sha1} of the bytes received is not the registry's hash "
                                f"{found.hash}; refused")
        if content.size > MAX_MANIFEST_SIZE:
            raise ManifestError(f"{what}: {content.size} bytes, larger than {MAX_MANIFEST_SIZE}")
        return content.read_bytes()
    finally:
        result.close()
