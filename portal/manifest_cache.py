"""The manifest page's data: a manifest read once (ITI-18 GetDocuments + ITI-43), then served from the
database; a series' thumbnail rendered once from one instance (RAD-69 of the middle instance).

Nothing here reads settings: the views pass a :class:`Sources` built from them.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from pydicom.uid import UID

from consumer.directory import UnknownEndpoint
from consumer.fetch import Resolvers
from consumer.find import FindError
from consumer.lookup import NoSuchManifest, manifest_entry
from consumer.manifest import ManifestError, fetch_manifest
from consumer.single import SingleRetrieveError, retrieve_instance
from imaging_source.rendering import RenderError, render_thumbnail
from kos.reader import Manifest, ManifestInstance, ManifestSeries, ManifestStudy
from portal.models import ManifestCache, ThumbnailCache
from xds_core.identifiers import is_dicom_uid, is_iso_oid

logger = logging.getLogger(__name__)

THUMBNAIL_SIZE = 128


class ManifestUnavailable(Exception):
    """The manifest could not be read now (registry or repository down, bytes refused); the message says
    why, in words, without patient data."""


class NotFound(LookupError):
    """No such manifest, or no such series in it."""


@dataclass(frozen=True)
class Sources:
    """Where the manifest and its images come from (built by the view from settings)."""

    registry_url: str
    resolvers: Resolvers
    transfer_syntaxes: tuple[str, ...]
    #: A cached entry's availabilityStatus is asked again (ITI-18) after this long.
    recheck: timedelta = timedelta(minutes=5)
    timeout: float = 30.0


@dataclass
class Loaded:
    row: ManifestCache
    #: Why the entry's status could not be checked again just now ("" = it was, or need not be).
    stale: str = ""


def ids_valid(repository_uid: str, document_uid: str) -> bool:
    return is_iso_oid(repository_uid) and is_iso_oid(document_uid)


def _structure(manifest: Manifest) -> list[dict[str, Any]]:
    return [{"study": st.study_instance_uid,
             "series": [{"uid": se.series_instance_uid, "ae": se.retrieve_ae_title or "",
                         "location": se.retrieve_location_uid or "", "url": se.retrieve_url or "",
                         "instances": [[i.sop_class_uid, i.sop_instance_uid] for i in se.instances]}
                        for se in st.series]}
            for st in manifest.studies]


def load_manifest(repository_uid: str, document_uid: str, sources: Sources, *, now: datetime) -> Loaded:
    """The cached manifest, read (ITI-18 + ITI-43) on the first view.

    :raises NotFound: the ids are not OIDs, or the registry has no such manifest at that repository.
    :raises ManifestUnavailable: it could not be read now.
    """
    if not ids_valid(repository_uid, document_uid):
        raise NotFound("not OIDs")
    row = ManifestCache.objects.filter(repository_uid=repository_uid, document_uid=document_uid).first()
    if row is not None and now - row.checked_at < sources.recheck:
        return Loaded(row)
    try:
        entry = manifest_entry(sources.registry_url, repository_uid, document_uid, timeout=sources.timeout)
    except NoSuchManifest as exc:
        raise NotFound(str(exc)) from None
    except FindError as exc:
        if row is not None:  # the content cannot have changed; only the status may be old
            return Loaded(row, stale=f"The registry could not be asked for this manifest's status: {exc}")
        raise ManifestUnavailable(f"The registry could not be asked for this manifest: {exc}") from None
    found = entry.found
    if row is not None:
        ManifestCache.objects.filter(pk=row.pk).update(status=found.status, checked_at=now)
        row.status, row.checked_at = found.status, now
        return Loaded(row)
    try:
        retrieved = fetch_manifest(found, resolve_repository=sources.resolvers.repository, timeout=sources.timeout)
    except (ManifestError, UnknownEndpoint) as exc:
        raise ManifestUnavailable(f"The manifest could not be retrieved (ITI-43): {exc}") from None
    manifest = retrieved.manifest
    fields_ = {"patient_id": found.patient_id[:256], "status": found.status[:100], "title": entry.title[:256],
               "creation_time": found.creation_time[:32], "service_start_time": found.service_start_time[:32],
               "service_stop_time": entry.service_stop_time[:32],
               "study_uids": [s.study_instance_uid for s in manifest.studies],
               "instance_count": manifest.instance_count,
               "entry": {**asdict(found), "study_instance_uids": list(found.study_instance_uids),
                         "event_codes": list(found.event_codes)},
               "structure": _structure(manifest), "fetched_at": now, "checked_at": now}
    try:
        with transaction.atomic():
            row = ManifestCache.objects.create(repository_uid=repository_uid, document_uid=document_uid, **fields_)
    except IntegrityError:  # another request cached it meanwhile: the same bytes
        row = ManifestCache.objects.get(repository_uid=repository_uid, document_uid=document_uid)
    return Loaded(row)


def cached_manifest(repository_uid: str, document_uid: str) -> ManifestCache | None:
    if not ids_valid(repository_uid, document_uid):
        return None
    return ManifestCache.objects.filter(repository_uid=repository_uid, document_uid=document_uid).first()


def manifest_of(row: ManifestCache) -> Manifest:
    """The cached structure as :class:`kos.reader.Manifest` (what the retrieval takes)."""
    studies = [ManifestStudy(st["study"], [
        ManifestSeries(se["uid"], se["ae"] or None, se["location"] or None, se["url"] or None,
                       [ManifestInstance(c, i) for c, i in se["instances"]]) for se in st["series"]])
        for st in row.structure]
    return Manifest(row.document_uid, "", row.patient_id, None, "", row.study_uids[0] if row.study_uids else "",
                    "", None, studies)


# ----------------------------------------------------------------------------- the page


def sop_class_name(uid: str) -> str:
    """The SOP Class's name from pydicom's UID dictionary (PS3.6 Table A-1), else the UID itself."""
    name = UID(uid).name if is_dicom_uid(uid) else ""
    return name if name and name != uid else uid or "(none)"


@dataclass
class SeriesView:
    index: int
    uid: str
    count: int
    sop_classes: list[tuple[str, int]]
    location: str
    ae_title: str
    location_url: str
    middle: str
    instances: list[str]
    modality: str = "-"
    description: str = "-"
    number: int | None = None
    width: int = THUMBNAIL_SIZE
    height: int = THUMBNAIL_SIZE
    cached: bool = False

    @property
    def alt(self) -> str:
        label = f"Series {self.number if self.number is not None else self.index}"
        if not self.cached:
            return f"{label}: middle image (thumbnail)"
        parts = [label, *(p for p in (self.modality, self.description) if p and p != "-")]
        return f"{', '.join(parts)}: middle image"


@dataclass
class StudyView:
    uid: str
    series: list[SeriesView] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(s.count for s in self.series)


def page_studies(row: ManifestCache, location_url: Callable[[str], str]) -> list[StudyView]:
    """Study -> series of the cached manifest, each series with its thumbnail's header when cached.

    ``location_url(Retrieve Location UID)`` gives the imaging source's URL ("" when unknown); asked once per
    location.  One database query for all the thumbnails."""
    urls: dict[str, str] = {}
    studies: list[StudyView] = []
    index = 0
    for st in row.structure:
        study = StudyView(st["study"])
        for se in st["series"]:
            index += 1
            instances = se["instances"]
            location = se["location"]
            if location and location not in urls:
                urls[location] = location_url(location)
            classes = Counter(c for c, _ in instances)
            study.series.append(SeriesView(
                index, se["uid"], len(instances), [(sop_class_name(c), n) for c, n in classes.most_common()],
                location, se["ae"], urls.get(location, ""), middle_instance(instances),
                [i for _, i in instances]))
        studies.append(study)
    middles = {s.middle: s for st in studies for s in st.series if s.middle}
    for thumb in ThumbnailCache.objects.filter(sop_instance_uid__in=list(middles)).values(
            "sop_instance_uid", "modality", "series_description", "series_number", "width", "height"):
        view = middles[thumb["sop_instance_uid"]]
        view.modality = thumb["modality"] or "-"
        view.description = thumb["series_description"] or "-"
        view.number = thumb["series_number"]
        view.width, view.height, view.cached = thumb["width"], thumb["height"], True
    return studies


def middle_instance(instances: list[list[str]]) -> str:
    """The SOP Instance UID of the middle instance of a series, in the manifest's order."""
    return instances[len(instances) // 2][1] if instances else ""


# ----------------------------------------------------------------------------- thumbnails


class ThumbnailUnavailable(Exception):
    """``status``: 502 (the image could not be retrieved) or 422 (retrieved, but cannot be rendered)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Png:
    data: bytes
    etag: str


def etag_of(png: bytes) -> str:
    return '"' + hashlib.sha256(png).hexdigest()[:32] + '"'


def series_thumbnail(row: ManifestCache, series_uid: str, sources: Sources) -> Png:
    """The PNG of ``series_uid``'s middle instance: from the cache, else RAD-69 + render + cache.

    :raises NotFound: the series is not in the manifest.
    :raises ThumbnailUnavailable: retrieval or rendering failed.
    """
    found = next(((st["study"], se) for st in row.structure for se in st["series"] if se["uid"] == series_uid), None)
    if found is None or not found[1]["instances"]:
        raise NotFound("no such series in the manifest")
    study_uid, series = found
    sop_class, sop_uid = series["instances"][len(series["instances"]) // 2]
    cached = ThumbnailCache.objects.filter(sop_instance_uid=sop_uid).values_list("png", flat=True).first()
    if cached is not None:
        data = bytes(cached)
        return Png(data, etag_of(data))
    location = series["location"]
    if not location:
        raise ThumbnailUnavailable("the series has no Retrieve Location UID in the manifest", 502)
    try:
        url = sources.resolvers.imaging_source(location)
    except UnknownEndpoint as exc:
        raise ThumbnailUnavailable(str(exc), 502) from None
    try:
        part10 = retrieve_instance(url, study_uid=study_uid, series_uid=series_uid, sop_instance_uid=sop_uid,
                                   location_uid=location, sop_class_uid=sop_class,
                                   transfer_syntaxes=sources.transfer_syntaxes, timeout=sources.timeout)
    except SingleRetrieveError as exc:
        raise ThumbnailUnavailable(str(exc), 502) from None
    try:
        thumb = render_thumbnail(part10, size=THUMBNAIL_SIZE)
    except RenderError as exc:
        raise ThumbnailUnavailable(str(exc), 422) from None
    try:
        with transaction.atomic():
            ThumbnailCache.objects.create(
                sop_instance_uid=sop_uid, series_instance_uid=series_uid, png=thumb.png, width=thumb.width,
                height=thumb.height, modality=thumb.modality[:16], series_description=thumb.series_description[:128],
                series_number=thumb.series_number)
    except IntegrityError:
        pass  # rendered by a concurrent request too: the same image
    return Png(thumb.png, etag_of(thumb.png))


_PLACEHOLDER: bytes | None = None


def placeholder_png() -> bytes:
    """A grey square of the thumbnail's size: the page keeps its layout; the alt text says what is missing."""
    global _PLACEHOLDER
    if _PLACEHOLDER is None:
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.new("L", (THUMBNAIL_SIZE, THUMBNAIL_SIZE), 96).save(buffer, format="PNG", optimize=True)
        _PLACEHOLDER = buffer.getvalue()
    return _PLACEHOLDER
