"""One imaging manifest's DocumentEntry by its uniqueId: ITI-18 GetDocuments (ITI TF-2a 3.18.4.1.2.3.7.5).

A link to a manifest names it by (repositoryUniqueId, uniqueId); GetDocuments with
``$XDSDocumentEntryUniqueId`` returns its entry whatever its availabilityStatus (Approved or Deprecated),
which the page shows.  The entry must be a manifest (``application/dicom``, RAD TF-3 4.68.4.1.2.3.2) held
by that repository; its hash and size then check the manifest's bytes (consumer.manifest).
"""

from __future__ import annotations

from dataclasses import dataclass

from consumer.find import FindError, FoundManifest, RegistryQuery
from xds_core.identifiers import is_iso_oid
from xds_core.metadata.objects import DocumentEntry
from xds_core.vocabulary import DICOM_MIME_TYPE, QueryParameter, ReferenceIdType, StoredQuery

P_UNIQUE_ID = QueryParameter.DE_UNIQUE_ID


class NoSuchManifest(FindError):
    """The registry knows no manifest of that uniqueId at that repository."""


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    found: FoundManifest
    title: str = ""
    service_stop_time: str = ""


def manifest_entry(registry_url: str, repository_uid: str, document_uid: str, *,
                   timeout: float = 30.0) -> ManifestEntry:
    """The DocumentEntry of manifest ``document_uid`` held by ``repository_uid``.

    :raises NoSuchManifest: no such entry, or not a manifest of that repository.
    :raises FindError: the registry could not be asked or refused.
    """
    if not (is_iso_oid(repository_uid) and is_iso_oid(document_uid)):
        raise NoSuchManifest("the repository and document ids must be OIDs")
    entries, errors = RegistryQuery(registry_url, timeout=timeout).ask(
        StoredQuery.GetDocuments, [(P_UNIQUE_ID, [f"('{document_uid}')"])])
    failures = [e for e in errors if e.is_error]
    if failures:
        raise FindError("registry refused GetDocuments: "
                        + "; ".join(f"{e.error_code}: {e.code_context}" for e in failures))
    entry = next((e for e in entries if e.unique_id == document_uid), None)
    if entry is None:
        raise NoSuchManifest(f"the registry has no document {document_uid}")
    if entry.repository_unique_id != repository_uid:
        raise NoSuchManifest(f"document {document_uid} is not held by repository {repository_uid}")
    if entry.mime_type != DICOM_MIME_TYPE:
        raise NoSuchManifest(f"document {document_uid} is {entry.mime_type}, not an imaging manifest "
                             f"({DICOM_MIME_TYPE})")
    return ManifestEntry(_found(entry), entry.title or "", entry.service_stop_time or "")


def _found(entry: DocumentEntry) -> FoundManifest:
    studies = tuple(ref.split("^", 1)[0] for ref in entry.reference_id_list
                    if "^" in ref and ref.rsplit("^", 1)[-1] == ReferenceIdType.STUDY_INSTANCE_UID)
    try:
        size = int(entry.size) if entry.size is not None else None
    except ValueError:
        size = None  # the manifest's bytes are then refused (consumer.manifest checks size)
    return FoundManifest(
        unique_id=entry.unique_id or "", repository_unique_id=entry.repository_unique_id or "",
        hash=(entry.hash or "").lower(), size=size, mime_type=entry.mime_type, study_instance_uids=studies,
        creation_time=entry.creation_time or "", status=entry.status or "", entry_uuid=entry.id,
        home_community_id=entry.home, patient_id=entry.patient_id or "",
        event_codes=tuple(str(code) for code in entry.event_code_list),
        service_start_time=entry.service_start_time or "")
