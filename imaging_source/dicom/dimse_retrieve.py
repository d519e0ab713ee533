"""Fetching from the PACS by DIMSE: C-GET (PS3.4 C.4.3) or C-MOVE to our own SCP (PS3.4 C.4.2).

One retrieve per series (IMAGE level, the list of SOP Instance UIDs as unique key, PS3.4
C.4.2.2.1 / C.4.3.2.1), all the series of one request on one association; per-instance retrieval
is ~28x slower on Orthanc.  A C-GET delivers on pynetdicom's threads into the :class:`Collector`;
a C-MOVE's instances arrive at our C-STORE SCP (scp.py), which spools them for :func:`claim_spooled`.
"""

from __future__ import annotations

import io
import logging
import os
import uuid
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_role, evt
from pynetdicom.presentation import StoragePresentationContexts, build_context
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from imaging_source.dicom.ae import associate, pacs_ae, quiesce
from imaging_source.dicom.config import DicomConfig
from imaging_source.dicom.find import STUDY_ROOT_FIND
from imaging_source.dicom.instances import Collector, FetchError, SeriesFetch, checked_uids
from imaging_source.dicom.received import decode_received
from imaging_source.dicom.status import DicomServiceError
from xds_core.identifiers import is_dicom_uid

logger = logging.getLogger(__name__)

STUDY_ROOT_GET = StudyRootQueryRetrieveInformationModelGet
STUDY_ROOT_MOVE = StudyRootQueryRetrieveInformationModelMove
#: A requestor may propose at most 128 presentation contexts (PS3.8 9.3.2.2 / pynetdicom).
MAX_CONTEXTS = 128
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


def _image_identifier(item: SeriesFetch) -> Dataset:
    q = Dataset()
    q.QueryRetrieveLevel = "IMAGE"
    q.StudyInstanceUID = item.study_instance_uid
    q.SeriesInstanceUID = item.series_instance_uid
    # A list of UIDs in the unique key of the retrieve level (PS3.4 C.4.2.2.1 / C.4.3.2.1).
    q.SOPInstanceUID = list(item.sop_instance_uids) if len(item.sop_instance_uids) > 1 else item.sop_instance_uids[0]
    return q


def _sop_classes_in_studies(config: DicomConfig, study_uids: Collection[str]) -> list[str]:
    """SOP Classes in Study (0008,0062) by a STUDY-level C-FIND; [] if the PACS does not return it."""
    ae = pacs_ae(config)
    ae.add_requested_context(STUDY_ROOT_FIND)
    assoc = associate(ae, config.pacs)
    found: dict[str, None] = {}
    try:
        for study_uid in study_uids:
            q = Dataset()
            q.QueryRetrieveLevel = "STUDY"
            q.StudyInstanceUID = study_uid
            q.SOPClassesInStudy = ""
            quiesce(assoc)
            for status, identifier in assoc.send_c_find(q, STUDY_ROOT_FIND):
                if status and status.Status in (0xFF00, 0xFF01) and identifier is not None:
                    value = identifier.get("SOPClassesInStudy")
                    for uid in ([value] if isinstance(value, str) else list(value or [])):
                        if uid:
                            found[str(uid)] = None
    finally:
        assoc.release()
    return list(found)


def _c_get_contexts(sop_classes: Sequence[str], accept: Sequence[str]) -> tuple[list[Any], list[Any]]:
    """Presentation contexts + SCP/SCU role items for the C-STORE sub-operations of a C-GET.

    Per SOP class: one context per wanted transfer syntax (so the PACS can send its stored
    encoding when it is one the consumer asked for: Orthanc transcodes only when the
    stored syntax is not accepted) plus one with the uncompressed syntaxes we can always
    transcode from.  Without SOP Classes in Study we fall back to pynetdicom's storage list,
    uncompressed only, trimmed to the 128-context limit.
    """
    contexts = [build_context(STUDY_ROOT_GET)]
    extra = [ts for ts in dict.fromkeys(accept) if ts not in UNCOMPRESSED]
    if sop_classes:
        for sop_class in sop_classes:
            for ts in extra:
                if len(contexts) < MAX_CONTEXTS - 1:
                    contexts.append(build_context(sop_class, [ts]))
            if len(contexts) < MAX_CONTEXTS:
                contexts.append(build_context(sop_class, list(UNCOMPRESSED)))
    else:
        for cx in StoragePresentationContexts[:MAX_CONTEXTS - 1]:
            contexts.append(build_context(cx.abstract_syntax, list(UNCOMPRESSED)))
    roles = [build_role(uid, scp_role=True) for uid in dict.fromkeys(cx.abstract_syntax for cx in contexts[1:])]
    return contexts, roles


def fetch_c_get(config: DicomConfig, series: Sequence[SeriesFetch], collector: Collector,
                 accept: Sequence[str]) -> Iterator[None]:
    """Generator: one step per retrieved series, all on one association."""
    for item in series:
        checked_uids(item)
    sop_classes = _sop_classes_in_studies(config, {s.study_instance_uid for s in series})
    contexts, roles = _c_get_contexts(sop_classes, accept)

    def on_store(event: Any) -> int:
        try:
            # encoded_dataset(): the received bytes with a file meta, no decode/re-encode.  The
            # series is read from the data set: a PACS may match the SOP UID alone at IMAGE level.
            study_uid, series_uid = _study_series_uids(event)
            collector.add(event.encoded_dataset(include_meta=True), series_uid,
                          event.request.AffectedSOPInstanceUID, event.request.AffectedSOPClassUID,
                          event.context.transfer_syntax, study_uid=study_uid)
            return 0x0000
        except DicomServiceError as exc:  # e.g. a deflate bomb (0xA7DF): refused, reported as missing
            logger.warning("C-GET sub-operation refused: %s", exc)
            return int(exc.status)
        except Exception:  # noqa: BLE001 - answer the PACS, report through the missing instance
            logger.exception("C-GET sub-operation could not be kept")
            return 0xA700

    ae = pacs_ae(config)
    assoc = associate(ae, config.pacs, contexts=contexts, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])

    def send_get(identifier: Dataset) -> Any:
        quiesce(assoc)
        return assoc.send_c_get(identifier, STUDY_ROOT_GET)

    try:
        for item in series:
            _retrieve_series(item, collector, "C-GET", send_get)
            if not assoc.is_established:
                raise FetchError("the PACS released or aborted the C-GET association")
            yield None
    finally:
        if assoc.is_established:
            assoc.release()


def _study_series_uids(event: Any) -> tuple[str, str]:
    """(Study, Series) Instance UIDs of a received C-STORE data set, reading only the elements up to them.

    ``event.dataset`` would decode the whole data set (~250 elements for a CT slice); stopping
    after (0020,000E) - (0020,000D) comes just before it - makes the C-GET receive loop cheaper.
    """
    ts = event.context.transfer_syntax
    raw = event.request.DataSet
    if ts.is_deflated:
        # Not event.dataset: pynetdicom inflates in one piece; decode_received refuses a bomb first.
        ds = decode_received(event, stop_after=0x0020000E)
        return str(ds.get("StudyInstanceUID", "") or ""), str(ds.get("SeriesInstanceUID", "") or "")
    if not hasattr(raw, "seek"):
        ds = event.dataset
        return str(ds.get("StudyInstanceUID", "") or ""), str(ds.get("SeriesInstanceUID", "") or "")
    raw.seek(0)
    try:
        head = read_dataset(raw, ts.is_implicit_VR, ts.is_little_endian,
                            stop_when=lambda tag, *_: tag > 0x0020000E)
        return str(head.get("StudyInstanceUID", "") or ""), str(head.get("SeriesInstanceUID", "") or "")
    finally:
        raw.seek(0)


def _retrieve_series(item: SeriesFetch, collector: Collector, name: str, send: Any,
                     after: Any = None) -> None:
    """One C-GET/C-MOVE for a series' listed instances; falls back to the whole series once.

    Some PACSs (Orthanc 1.10) fail the whole IMAGE-level request (0xC000) when one UID of
    the list is unknown; a SERIES-level retrieve then still delivers the others (extra
    instances are dropped by the collector) and the unknown one is reported as missing.
    """
    final = _final_status(send(_image_identifier(item)))
    if after:
        after(item)
    missing = [uid for uid in item.sop_instance_uids
               if (item.series_instance_uid, uid) not in collector.result.instances]
    if final is not None and _is_failure(final) and missing and len(item.sop_instance_uids) > 1:
        q = Dataset()
        q.QueryRetrieveLevel = "SERIES"
        q.StudyInstanceUID = item.study_instance_uid
        q.SeriesInstanceUID = item.series_instance_uid
        final = _final_status(send(q))
        if after:
            after(item)
    if final is None:
        collector.result.failures[item.series_instance_uid] = f"{name}: no response from the PACS"
    elif _is_failure(final) and not any((item.series_instance_uid, uid) in collector.result.instances
                                        for uid in item.sop_instance_uids):
        collector.result.failures[item.series_instance_uid] = f"{name} final status 0x{final:04X}"


def _final_status(responses: Any) -> int | None:
    final = None
    for status, _identifier in responses:
        if not status:
            return None  # aborted / timed out
        final = int(status.Status)
    return final


def _is_failure(status: int) -> bool:
    # PS3.4 C.4.2.1.5 / C.4.3.1.4: 0x0000 success, 0xB000 warning (some sub-operations
    # failed: reported per instance), 0xFE00 cancel; A7xx/A9xx/AAxx/Cxxx failures.
    return status not in (0x0000, 0xB000, 0xFF00, 0xFF01, 0xFE00)


# C-MOVE ----------------------------------------------------------------------------------

def spool_name(sop_instance_uid: str) -> str:
    """File name our C-STORE SCP gives a C-MOVE'd instance: ``<SOP UID>.<unique>.dcm``.

    The unique part lets two concurrent retrieves of the same instance each claim their own copy.
    Raises ValueError for anything but a DICOM UID (PS3.5 §9.1): a UID from the network never
    becomes a path (``../x``) -- the SCP refuses such a C-STORE before it gets here.
    """
    if not is_dicom_uid(sop_instance_uid):
        raise ValueError(f"SOP Instance UID {sop_instance_uid!r} is not a DICOM UID")
    return f"{sop_instance_uid}.{uuid.uuid4().hex}.dcm"


def claim_spooled(spool_dir: Path, sop_instance_uid: str) -> Path | None:
    """Atomically take one spooled copy of an instance (rename), or None (also for a non-UID, which
    was never spooled: a DICOM UID has no glob or path characters)."""
    if not is_dicom_uid(sop_instance_uid):
        return None
    for candidate in sorted(spool_dir.glob(f"{sop_instance_uid}.*.dcm")):
        claimed = candidate.with_name(f"claimed-{uuid.uuid4().hex}.dcm")
        try:
            os.rename(candidate, claimed)
        except FileNotFoundError:
            continue  # another retrieve took it
        return claimed
    return None


def fetch_c_move(config: DicomConfig, series: Sequence[SeriesFetch], collector: Collector) -> Iterator[None]:
    """C-MOVE each series to our own AE; our C-STORE SCP (scp.py) spools what arrives.

    Correlation is by SOP Instance UID: once the final C-MOVE response says the
    sub-operations are done, every delivered instance is in the spool directory.
    """
    for item in series:
        checked_uids(item)
    spool = Path(config.spool_dir)
    ae = pacs_ae(config)
    ae.add_requested_context(STUDY_ROOT_MOVE)
    assoc = associate(ae, config.pacs)
    try:
        def send_move(identifier: Dataset) -> Any:
            quiesce(assoc)
            return assoc.send_c_move(identifier, config.ae_title, STUDY_ROOT_MOVE)

        def collect(item: SeriesFetch) -> None:
            for sop_uid in item.sop_instance_uids:
                if (item.series_instance_uid, sop_uid) in collector.result.instances:
                    continue
                path = claim_spooled(spool, sop_uid)
                if path is None:
                    continue
                try:
                    data = path.read_bytes()
                    head = dcmread(io.BytesIO(data), stop_before_pixels=True,
                                   specific_tags=["StudyInstanceUID", "SeriesInstanceUID"])
                    collector.add(data, str(head.get("SeriesInstanceUID", "")), sop_uid,
                                  study_uid=str(head.get("StudyInstanceUID", "")))
                finally:
                    path.unlink(missing_ok=True)

        for item in series:
            _retrieve_series(item, collector, "C-MOVE", send_move, after=collect)
            yield None
    finally:
        if assoc.is_established:
            assoc.release()
