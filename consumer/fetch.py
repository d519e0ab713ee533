"""One found manifest into a destination: ITI-43 (the manifest), then RAD-69 (its images).

The one home of that sequence for ``manage.py xds_fetch`` and for prefetch jobs; what it did comes back
as a :class:`ManifestOutcome` (counts, the errors kept, per study), free of patient data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from consumer.destinations import Destination
from consumer.directory import UnknownEndpoint, resolve
from consumer.find import FoundManifest
from consumer.manifest import ManifestError, RetrievedManifest, fetch_manifest
from consumer.models import EndpointKind
from consumer.retrieval import ProgressEvent, RetrievalSetupError, retrieve_manifest
from xds_core import audit

#: DICOM PS3.6 Table A-1 / PS3.5 Annex A transfer syntaxes asked for in RAD-69 (RAD TF-3 4.69.4.1.2).
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
#: ``--compress``: lossless compressed first (JPEG-LS Lossless, JPEG 2000 Lossless, JPEG Lossless SV1).
LOSSLESS_COMPRESSED = ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.70")


def transfer_syntaxes(compress: bool) -> list[str]:
    """The consumer's TransferSyntaxUIDList, most preferred first."""
    plain = [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN]
    return [*LOSSLESS_COMPRESSED, *plain] if compress else plain


def resolver(kind: EndpointKind, local: tuple[str, str] | None = None) -> Callable[[str], str]:
    """unique id -> URL from the endpoint directory; ``local`` = (this server's own unique id, its
    ``local:`` endpoint) answers for that id when the directory has no entry for it."""
    def resolve_one(unique_id: str) -> str:
        try:
            return resolve(kind, unique_id)
        except UnknownEndpoint:
            if local is not None and unique_id == local[0]:
                return local[1]
            raise
    return resolve_one


@dataclass(frozen=True)
class Resolvers:
    repository: Callable[[str], str]
    imaging_source: Callable[[str], str]


@dataclass
class ManifestOutcome:
    unique_id: str
    studies: list[str]
    creation_time: str
    status: str
    error: str = ""
    requested: int = 0
    already_present: int = 0
    retrieved: int = 0
    failed: int = 0
    bytes: int = 0
    seconds: float = 0.0
    errors: list[dict[str, str]] = field(default_factory=list)
    per_study: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.error and self.failed == 0

    @property
    def any_present(self) -> bool:
        return self.retrieved + self.already_present > 0


def outcome_of(found: FoundManifest) -> ManifestOutcome:
    return ManifestOutcome(found.unique_id, list(found.study_instance_uids), found.creation_time, found.status)


def get_manifest(found: FoundManifest, resolvers: Resolvers, outcome: ManifestOutcome, *,
                 timeout: float) -> RetrievedManifest | None:
    """ITI-43; None (the reason in ``outcome.error``) when it could not be had."""
    try:
        retrieved = fetch_manifest(found, resolve_repository=resolvers.repository, timeout=timeout)
    except (ManifestError, UnknownEndpoint) as exc:
        outcome.error = str(exc)
        return None
    outcome.studies = [s.study_instance_uid for s in retrieved.manifest.studies]
    outcome.requested = retrieved.manifest.instance_count
    return retrieved


def retrieve_into(retrieved: RetrievedManifest, destination: Destination, resolvers: Resolvers,
                  outcome: ManifestOutcome, *, syntaxes: Sequence[str],
                  progress: Callable[[ProgressEvent], None] | None = None, timeout: float) -> ManifestOutcome:
    """RAD-69 of every series of the manifest into ``destination`` (closed at the end)."""
    try:
        result = retrieve_manifest(retrieved.manifest, destination, resolve_imaging_source=resolvers.imaging_source,
                                   transfer_syntaxes=syntaxes, progress=progress, timeout=timeout)
    except RetrievalSetupError as exc:
        outcome.error = str(exc)
        return outcome
    finally:
        destination.close()
    outcome.already_present, outcome.retrieved = result.already_present, result.retrieved
    outcome.failed = result.requested - result.already_present - result.retrieved
    outcome.bytes, outcome.seconds = result.bytes, result.seconds
    outcome.errors = [{"code": e.code, "location": e.location, "text": e.text} for e in result.errors]
    if result.errors and outcome.failed == 0:
        outcome.failed = len(result.errors)
    outcome.per_study = [{"study": s.study_instance_uid, "requested": s.requested, "retrieved": s.retrieved,
                          "already_present": s.already_present, "failed": s.failed} for s in result.studies()]
    return outcome


def record_import(retrieved: RetrievedManifest, outcome: ManifestOutcome, resolvers: Resolvers, *, importer: str,
                  local_patient: str, archive: str, trigger: str = "") -> None:
    """Audit an import into this site's archive (PS3.15 A.5.3.5 Import, IHE IRWF.b): the studies of
    ``retrieved`` now belong to ``local_patient`` (CX) in ``archive`` (``AET@host:port`` or a DICOMweb URL);
    they came from the imaging sources the manifest names; ``importer`` is this consumer's identity;
    ``trigger`` ``portal:<user>`` names the clinician who asked (a prefetch's trigger names no person)."""
    if not audit.enabled():
        return

    def origin(location_uid: str) -> audit.Participant:
        try:
            return audit.soap_server(resolvers.imaging_source(location_uid))
        except UnknownEndpoint:  # not in the directory: still named, by its UID
            return audit.Participant(f"urn:oid:{location_uid}")

    def event() -> audit.AuditEvent:
        manifest = retrieved.manifest
        locations = dict.fromkeys(s.retrieve_location_uid for st in manifest.studies for s in st.series
                                  if s.retrieve_location_uid)
        ae_title, _, address = archive.partition("@")
        into = (audit.soap_server(archive) if "://" in archive
                else audit.remote(archive, address.rpartition(":")[0], ae_title=ae_title))
        studies = {st.study_instance_uid: [i.sop_instance_uid for s in st.series for i in s.instances]
                   for st in manifest.studies}
        result = (audit.EventOutcome.SUCCESS if outcome.ok else audit.EventOutcome.MINOR_FAILURE
                  if outcome.any_present else audit.EventOutcome.SERIOUS_FAILURE)
        humans = [audit.Participant(trigger.removeprefix("portal:"))] if trigger.startswith("portal:") else []
        return audit.data_import(importer=audit.this_node(importer), origins=[origin(u) for u in locations],
                                 into=into, humans=humans, patient_id=local_patient, studies=studies, outcome=result,
                                 description=outcome.error or ("; ".join(sorted({e["code"] for e in outcome.errors}))))

    audit.record(event)


def fetch_into(found: FoundManifest, destination: Destination, resolvers: Resolvers, *, syntaxes: Sequence[str],
               progress: Callable[[ProgressEvent], None] | None = None, timeout: float = 120.0) -> ManifestOutcome:
    """ITI-43 then RAD-69: ``found``'s images into ``destination``."""
    outcome = outcome_of(found)
    retrieved = get_manifest(found, resolvers, outcome, timeout=timeout)
    if retrieved is None:
        destination.close()
        return outcome
    return retrieve_into(retrieved, destination, resolvers, outcome, syntaxes=syntaxes, progress=progress,
                         timeout=timeout)
