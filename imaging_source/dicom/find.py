"""Find studies in the PACS: DIMSE C-FIND (study / series / image levels) or QIDO-RS.

``find_study`` returns the whole study hierarchy as an :class:`imaging_source.study.StudyRef`
(what publication needs to build a KOS manifest); ``find_studies`` lists Study Instance
UIDs by patient and/or date; ``locate_instance`` finds where a SOP instance really is
(RAD-69 uses it to tell "unknown instance" from "instance in another study/series").

C-FIND uses the Study Root Query/Retrieve Information Model (PS3.4 C.6.2) with hierarchical
queries: STUDY, then SERIES within the study, then IMAGE within each series - all on one
pooled association.  With ``DICOMWEB_URL`` set, QIDO-RS (PS3.18 10.6) is used instead.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

import requests
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from imaging_source.access import NotADicomUid, pacs_path_segment
from imaging_source.dicom.ae import POOL, associate, pacs_ae, quiesce
from imaging_source.dicom.config import DicomConfig
from imaging_source.study import StudyRef, modifying_systems
from xds_core.identifiers import is_dicom_uid
from xds_core.log_ref import log_ref
from xds_core.tls import TlsAdapter

logger = logging.getLogger(__name__)

STUDY_ROOT_FIND = StudyRootQueryRetrieveInformationModelFind  # PS3.4 C.6.2

PENDING = (0xFF00, 0xFF01)
STUDY_KEYS = ("PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyDate",
              "StudyTime", "AccessionNumber", "StudyID", "StudyDescription", "ReferringPhysicianName",
              "ModalitiesInStudy", "NumberOfStudyRelatedInstances")
SERIES_KEYS = ("Modality", "SeriesNumber", "BodyPartExamined", "NumberOfSeriesRelatedInstances")
IMAGE_KEYS = ("SOPClassUID", "InstanceNumber")


class FindError(RuntimeError):
    """The PACS could not be queried (association refused, failure status, HTTP error)."""


def find_study(study_uid: str, config: DicomConfig) -> StudyRef | None:
    """The study with its series and instances, or None when the PACS does not know it.

    None, without asking, for anything but a DICOM UID (PS3.5 §9.1): study UIDs come from the network
    (MPPS, C-STORE) and go into a C-FIND key or a QIDO-RS path, where ``*`` or ``../`` would mean more.
    """
    if not is_dicom_uid(study_uid):
        return None
    finder = QidoFinder(config) if config.use_dicomweb else CFindFinder(config)
    return finder.find_study(study_uid)


def find_studies(patient_id: str | None = None, since: dt.date | dt.datetime | str | None = None, *,
                 config: DicomConfig) -> list[str]:
    """Study Instance UIDs matching a Patient ID and/or a study date on or after ``since``."""
    finder = QidoFinder(config) if config.use_dicomweb else CFindFinder(config)
    return finder.find_studies(patient_id, since)


def study_instance_counts(config: DicomConfig, patient_id: str | None = None,
                          since: dt.date | dt.datetime | str | None = None) -> dict[str, int]:
    """{Study Instance UID: Number of Study Related Instances}: the cheap poll used by stable-study detection."""
    finder = QidoFinder(config) if config.use_dicomweb else CFindFinder(config)
    return finder.study_instance_counts(patient_id, since)


def locate_instance(sop_instance_uid: str, config: DicomConfig) -> tuple[str, str] | None:
    """(Study Instance UID, Series Instance UID) of an instance, or None if the PACS does not have it
    (or ``sop_instance_uid`` is not a DICOM UID, PS3.5 §9.1: then it is not looked for)."""
    if not is_dicom_uid(sop_instance_uid):
        return None
    finder = QidoFinder(config) if config.use_dicomweb else CFindFinder(config)
    return finder.locate_instance(sop_instance_uid)


def date_range(since: dt.date | dt.datetime | str | None) -> str:
    """DICOM DA range matching ``since`` and later (PS3.4 C.2.2.2.5.1): ``YYYYMMDD-``."""
    if since is None or since == "":
        return ""
    if isinstance(since, dt.datetime | dt.date):
        return since.strftime("%Y%m%d") + "-"
    text = str(since).replace("-", "")
    if len(text) != 8 or not text.isdigit():
        raise ValueError(f"expected a date YYYY-MM-DD or YYYYMMDD, got {since!r}")
    return text + "-"


def _text(ds: Any, keyword: str) -> str:
    value = ds.get(keyword, "") if ds is not None else ""
    return "" if value is None else str(value).strip()


def _int(ds: Any, keyword: str) -> int | None:
    text = _text(ds, keyword)
    try:
        return int(float(text)) if text else None
    except ValueError:
        return None


def _study_ref(study: Any, series: list[tuple[Any, list[Any]]]) -> StudyRef:
    return StudyRef.from_query_levels(study, series)


class _StudyRowsFinder:
    """What both finders derive from their STUDY-level answers (``_study_rows``)."""

    def _study_rows(self, patient_id: str | None, since: Any) -> Iterable[Any]:
        raise NotImplementedError

    def find_studies(self, patient_id: str | None = None, since: Any = None) -> list[str]:
        return [_text(r, "StudyInstanceUID") for r in self._study_rows(patient_id, since)]

    def study_instance_counts(self, patient_id: str | None = None, since: Any = None) -> dict[str, int]:
        return {_text(r, "StudyInstanceUID"): _int(r, "NumberOfStudyRelatedInstances") or 0
                for r in self._study_rows(patient_id, since)}


class CFindFinder(_StudyRowsFinder):
    """Study Root C-FIND against ``config.pacs`` on a pooled association."""

    def __init__(self, config: DicomConfig) -> None:
        self.config = config
        self._key = (config.ae_title, config.pacs, "find")

    def _open(self) -> Any:
        ae = pacs_ae(self.config)
        ae.add_requested_context(STUDY_ROOT_FIND)
        return associate(ae, self.config.pacs)

    def _query(self, assoc: Any, level: str, keys: dict[str, Any], returns: tuple[str, ...]) -> list[Dataset]:
        q = Dataset()
        q.QueryRetrieveLevel = level
        for keyword in returns:
            setattr(q, keyword, "")
        for keyword, value in keys.items():
            setattr(q, keyword, value)
        out: list[Dataset] = []
        final = None
        quiesce(assoc)
        try:
            responses = list(assoc.send_c_find(q, STUDY_ROOT_FIND))
        except RuntimeError as exc:  # the association is no longer established
            raise FindError(f"C-FIND {level} to {self.config.pacs}: {exc}") from exc
        for status, identifier in responses:
            if not status:  # timeout / abort: pynetdicom yields an empty Dataset
                raise FindError(f"C-FIND {level} to {self.config.pacs}: no response (association aborted or timed out)")
            if status.Status in PENDING and identifier is not None:
                out.append(identifier)
            else:
                final = status.Status
        if final not in (0x0000, None):
            raise FindError(f"C-FIND {level} to {self.config.pacs} ended with status 0x{final:04X}")
        return out

    def _run(self, fn: Any) -> Any:
        """Run ``fn(assoc)`` on a pooled association; on failure once more on a fresh association."""
        for attempt in (1, 2):
            assoc = POOL.acquire(self._key, self._open) if attempt == 1 else self._open()
            ok = False
            try:
                result = fn(assoc)
                ok = True
                return result
            except FindError:
                if attempt == 2:
                    raise
                logger.info("C-FIND to %s failed on a reused association; retrying on a new one", self.config.pacs)
            finally:
                POOL.release(self._key, assoc, reusable=ok)
        raise AssertionError("unreachable")

    def find_study(self, study_uid: str) -> StudyRef | None:
        started = time.perf_counter()
        retried: list[bool] = []

        def run(assoc: Any) -> StudyRef | None:
            studies = self._query(assoc, "STUDY", {"StudyInstanceUID": study_uid}, STUDY_KEYS)
            if not studies:
                return None
            series_rows = self._query(assoc, "SERIES", {"StudyInstanceUID": study_uid, "SeriesInstanceUID": ""},
                                      SERIES_KEYS)
            tree = []
            for se in series_rows:
                images = self._query(assoc, "IMAGE", {"StudyInstanceUID": study_uid,
                                                      "SeriesInstanceUID": _text(se, "SeriesInstanceUID"),
                                                      "SOPInstanceUID": ""}, IMAGE_KEYS)
                tree.append((se, images))
            found = sum(len(images) for _, images in tree)
            expected = _int(studies[0], "NumberOfStudyRelatedInstances")
            if expected is not None and found < expected and not retried:
                # Fewer matches than the study itself counts: a lost response, or instances
                # arriving right now.  Ask once more (on a fresh association).
                retried.append(True)
                raise FindError(f"study {study_uid}: {found} instances found, the PACS counts {expected}")
            ref = _study_ref(studies[0], tree)
            ref.modifying_systems = self._modifying_systems(assoc, study_uid, tree)
            return ref

        ref = self._run(run)
        logger.info("dicom find-study method=c-find study=%s found=%s series=%d instances=%d ms=%.1f",
                    log_ref(study_uid), ref is not None, len(ref.series) if ref else 0,
                    ref.instance_count if ref else 0, (time.perf_counter() - started) * 1000)
        return ref

    def _modifying_systems(self, assoc: Any, study_uid: str, tree: list[tuple[Any, list[Any]]]) -> list[str]:
        """Original Attributes Sequence (0400,0561) of the first instance of each series (one IMAGE-level
        C-FIND each, on the same association): only those instances are read from the PACS's storage, where
        asking for the sequence on every IMAGE row would read every file.  See :meth:`QidoFinder._modifying_systems`."""
        sampled: list[Dataset] = []
        for se, images in tree:
            sop_uids = sorted(_text(im, "SOPInstanceUID") for im in images)
            if sop_uids:
                sampled += self._query(assoc, "IMAGE", {
                    "StudyInstanceUID": study_uid, "SeriesInstanceUID": _text(se, "SeriesInstanceUID"),
                    "SOPInstanceUID": sop_uids[0], "OriginalAttributesSequence": []}, ())
        return modifying_systems(sampled)

    def _study_rows(self, patient_id: str | None, since: Any) -> list[Dataset]:
        keys: dict[str, Any] = {"StudyInstanceUID": ""}
        if patient_id:
            keys["PatientID"] = patient_id
        if since:
            keys["StudyDate"] = date_range(since)
        return self._run(lambda assoc: self._query(assoc, "STUDY", keys, ("NumberOfStudyRelatedInstances",)))

    def locate_instance(self, sop_instance_uid: str) -> tuple[str, str] | None:
        # Relational IMAGE-level query on the SOP Instance UID alone (PS3.4 C.4.1.2.2);
        # Orthanc accepts it.  A PACS that insists on hierarchical queries answers a
        # failure status, which we treat as "not located".
        try:
            rows = self._run(lambda assoc: self._query(
                assoc, "IMAGE", {"SOPInstanceUID": sop_instance_uid}, ("StudyInstanceUID", "SeriesInstanceUID")))
        except FindError:
            logger.info("dicom locate-instance sop=%s failed (PACS refuses relational queries?)",
                        log_ref(sop_instance_uid))
            return None
        for row in rows:
            if _text(row, "StudyInstanceUID"):
                return _text(row, "StudyInstanceUID"), _text(row, "SeriesInstanceUID")
        return None


def _fields(keywords: tuple[str, ...]) -> list[str]:
    """QIDO-RS ``includefield`` as tags (PS3.18 allows a keyword or a tag): tags do not depend on
    the origin server's keyword dictionary being as recent as pydicom's.

    One ``includefield`` parameter per tag (PS3.18 8.3.4.3 allows repeating it or a comma list):
    a comma list goes out URL-encoded (``%2C``), which Orthanc's DICOMweb plugin does not split, so
    it silently answered without Issuer of Patient ID and publication lost the patient's issuer.
    """
    return [f"{tag_for_keyword(k):08X}" for k in keywords]


def _segment(uid: str) -> str:
    """A UID as a QIDO-RS / WADO-RS path segment (:func:`imaging_source.access.pacs_path_segment`):
    FindError for anything but a DICOM UID (PS3.5 §9.1)."""
    try:
        return pacs_path_segment(uid)
    except NotADicomUid as exc:
        raise FindError(str(exc)) from exc


class QidoFinder(_StudyRowsFinder):
    """QIDO-RS (PS3.18 10.6) against ``config.dicomweb_url``."""

    def __init__(self, config: DicomConfig, session: requests.Session | None = None) -> None:
        self.config = config
        self.base = config.dicomweb_url.rstrip("/")
        self.session = session or requests.Session()
        if session is None and config.tls is not None:  # an https PACS: our certificate, our trust (ITI-19)
            self.session.mount("https://", TlsAdapter(config.tls))
        # Orthanc gzips when asked, which costs more CPU than it saves on loopback (measured on this project's machine).
        self.session.headers.update({"Accept": "application/dicom+json", "Accept-Encoding": "identity"})

    def _get(self, path: str, params: dict[str, Any]) -> list[Dataset]:
        try:
            response = self.session.get(f"{self.base}{path}", params=params, timeout=60)
        except requests.RequestException as exc:
            raise FindError(f"QIDO-RS {path}: {exc}") from exc
        if response.status_code == 204 or (response.status_code == 200 and not response.content.strip()):
            return []
        if response.status_code == 404:
            return []
        if response.status_code != 200:
            raise FindError(f"QIDO-RS {path}: HTTP {response.status_code}")
        return [Dataset.from_json(item) for item in response.json()]

    def find_study(self, study_uid: str) -> StudyRef | None:
        started = time.perf_counter()
        studies = self._get("/studies", {"StudyInstanceUID": study_uid, "includefield": _fields(STUDY_KEYS)})
        studies = [s for s in studies if _text(s, "StudyInstanceUID") == study_uid]
        if not studies:
            return None
        study_segment = _segment(study_uid)  # the access gate's URL rule (PS3.5 §9.1, quoted)
        series_rows = self._get(f"/studies/{study_segment}/series", {"includefield": _fields(SERIES_KEYS)})
        instances = self._get(f"/studies/{study_segment}/instances",
                              {"includefield": _fields(("SeriesInstanceUID", *IMAGE_KEYS))})
        by_series: dict[str, list[Dataset]] = {}
        for im in instances:
            by_series.setdefault(_text(im, "SeriesInstanceUID"), []).append(im)
        ref = _study_ref(studies[0], [(se, by_series.get(_text(se, "SeriesInstanceUID"), [])) for se in series_rows])
        ref.modifying_systems = self._modifying_systems(ref)
        logger.info("dicom find-study method=qido-rs study=%s series=%d instances=%d ms=%.1f", log_ref(study_uid),
                    len(ref.series), ref.instance_count, (time.perf_counter() - started) * 1000)
        return ref

    def _modifying_systems(self, ref: StudyRef) -> list[str]:
        """Modifying System (0400,0563) of the Original Attributes Sequence (0400,0561) items of the first
        instance of each series, from its WADO-RS metadata (PS3.18 10.4.1.1.2): one file read per series.

        Not QIDO-RS ``includefield=04000561``: Orthanc 1.10's DICOMweb plugin leaves sequences out of QIDO
        answers (checked against the test PACS), its WADO-RS metadata has them.  Orthanc marks a study
        imported with import reconciliation (:mod:`consumer.pacs_import`) on every instance; a study some
        of whose series were imported and others acquired here is seen as imported.
        """
        found: list[str] = []
        for series in ref.series:
            if not series.instances:
                continue
            sop_uid = min(i.sop_instance_uid for i in series.instances)
            try:  # UIDs from the PACS's own answer; one that is not a DICOM UID (PS3.5 §9.1) is not asked about
                path = (f"/studies/{pacs_path_segment(ref.study_instance_uid)}"
                        f"/series/{pacs_path_segment(series.series_instance_uid)}"
                        f"/instances/{pacs_path_segment(sop_uid)}/metadata")
            except NotADicomUid:
                continue
            try:
                response = self.session.get(f"{self.base}{path}", timeout=60)
            except requests.RequestException as exc:
                raise FindError(f"WADO-RS {path}: {exc}") from exc
            if response.status_code == 404:
                continue
            if response.status_code != 200:
                raise FindError(f"WADO-RS {path}: HTTP {response.status_code}")
            for instance in response.json():
                for item in (instance.get("04000561") or {}).get("Value") or []:
                    system = ((item.get("04000563") or {}).get("Value") or [""])[0]
                    if system and system not in found:
                        found.append(system)
        return found

    def _study_rows(self, patient_id: str | None, since: Any) -> Iterator[Dataset]:
        params: dict[str, Any] = {"includefield": _fields(("NumberOfStudyRelatedInstances",))}
        if patient_id:
            params["PatientID"] = patient_id
        if since:
            params["StudyDate"] = date_range(since)
        return iter(self._get("/studies", params))

    def locate_instance(self, sop_instance_uid: str) -> tuple[str, str] | None:
        rows = self._get("/instances", {"SOPInstanceUID": sop_instance_uid,
                                        "includefield": _fields(("StudyInstanceUID", "SeriesInstanceUID"))})
        for row in rows:
            if _text(row, "SOPInstanceUID") in ("", sop_instance_uid) and _text(row, "StudyInstanceUID"):
                return _text(row, "StudyInstanceUID"), _text(row, "SeriesInstanceUID")
        return None
