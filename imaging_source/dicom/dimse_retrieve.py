"""Fetching from the PACS by DIMSE: C-GET (PS3.4 C.4.3) or C-MOVE to our own SCP (PS3.4 C.4.2).

One retrieve per series (IMAGE level, the list of SOP Instance UIDs as unique key, PS3.4
C.4.2.2.1 / C.4.3.2.1), all the series of one request on one association; per-instance retrieval
is ~28x slower on Orthanc.  A C-GET delivers on pynetdicom's threads into the :class:`Collector`;
a C-MOVE's instances arrive at our C-STORE SCP (scp.py), which spools them for :func:`claim_spooled`.

Time rules (:class:`~imaging_source.dicom.instances.PacsDeadlines`, issue 15).  pynetdicom's own
timeouts do not make them: its DIMSE timeout bounds the wait for a whole message (a 1 GB C-STORE
sub-operation over a WAN is one message), and its network (idle) timeout is checked only by the
association's reactor, which a send_c_get()/send_c_move() pauses.  So: the association request
waits ``first_byte`` (ACSE timeout), and each C-FIND / C-GET / C-MOVE runs under an
:class:`_AnswerWatch`, which ends it when no PDU came ``first_byte`` seconds after the request or
``idle`` seconds after the last one, and raises :class:`PacsTimeout`.  C-MOVE: its sub-operations
travel on the PACS's own association to our listener, so on ours the rule sees the pending C-MOVE
responses (one per sub-operation): an instance taking longer than ``idle`` to reach the listener
breaks it - size ``idle`` for the largest instance over the slowest link.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
import uuid
from collections.abc import Collection, Iterator, Sequence
from dataclasses import replace
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

from imaging_source.dicom.ae import DEFAULT_TIMEOUTS, AssociationError, NoDelayAE, associate, pacs_ae, quiesce
from imaging_source.dicom.config import DicomConfig, Peer
from imaging_source.dicom.find import STUDY_ROOT_FIND
from imaging_source.dicom.instances import (
    DEFAULT_DEADLINES,
    Collector,
    FetchError,
    PacsDeadlines,
    PacsTimeout,
    SeriesFetch,
    checked_uids,
)
from imaging_source.dicom.received import decode_received
from imaging_source.dicom.status import DicomServiceError
from xds_core.identifiers import is_dicom_uid
from xds_core.log_ref import redact

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


# Time rules ------------------------------------------------------------------------------

def timed_config(config: DicomConfig, deadlines: PacsDeadlines) -> DicomConfig:
    """``config`` with pynetdicom timeouts that keep ``deadlines`` where pynetdicom's own can: the association
    request waits at most ``first_byte`` for the answer (the A-ASSOCIATE-AC is the PACS's first byte), the TCP
    connect no longer either, each DIMSE message (C-FIND responses, small) ``first_byte``.  For C-FIND-only
    callers (locating an instance); a retrieve adds :class:`_AnswerWatch`."""
    base = {**DEFAULT_TIMEOUTS, **config.timeouts}
    return replace(config, timeouts={
        **base, "connection": min(base["connection"], deadlines.first_byte), "acse": deadlines.first_byte,
        "dimse": deadlines.first_byte, "network": deadlines.idle})


def _timed_ae(config: DicomConfig, deadlines: PacsDeadlines) -> NoDelayAE:
    """An AE for the PACS with :func:`timed_config`'s timeouts."""
    return pacs_ae(timed_config(config, deadlines))


def _associate(ae: NoDelayAE, peer: Peer, deadlines: PacsDeadlines, **kwargs: Any) -> Any:
    """:func:`associate`; an association request left unanswered for ``first_byte`` is a :class:`PacsTimeout`."""
    started = time.monotonic()
    try:
        return associate(ae, peer, **kwargs)
    except AssociationError as exc:
        waited = time.monotonic() - started
        # pynetdicom aborts on its ACSE timeout; a refusal or a closed port fails at once.
        if waited >= min(deadlines.first_byte, ae.connection_timeout or deadlines.first_byte) * 0.95:
            raise PacsTimeout(f"the PACS did not answer the association request within {waited:.1f} s") from exc
        raise


#: Attribute paths into pynetdicom 3.0.x that :class:`_AnswerWatch` reads and uses (pinned by a test):
#: the DUL's idle timer, restarted by the DUL thread on every PDU received, and the DIMSE message queue.
_IDLE_TIMER = ("dul", "_idle_timer", "_start_time")


def _last_pdu_at(assoc: Any) -> float | None:
    """time.time() of the last PDU received on ``assoc`` (None: unknown in this pynetdicom)."""
    value: Any = assoc
    for name in _IDLE_TIMER:
        value = getattr(value, name, None)
        if value is None:
            return None
    return float(value)


class _AnswerWatch:
    """The time rules over one DIMSE request/answers exchange on ``assoc`` (``with`` around the loop).

    A watcher thread looks every :attr:`POLL` s at when the last PDU arrived: none since the request
    for ``first_byte`` s, or none for ``idle`` s after one, and it closes the association's socket
    (the DUL sees the transport close: A-P-ABORT) and hands the waiting send_*() the same "no
    message" a DIMSE timeout would (``(None, None)`` on the DIMSE queue): the answers end with an
    empty status, the association is gone, and :attr:`expired` says why.  Meanwhile the
    association's own DIMSE timeout is off (the watch replaces it: any size of message passes while
    its PDUs keep coming).  Where pynetdicom's internals differ (another version), the watch falls
    back to a DIMSE timeout of ``idle`` per message.
    """

    POLL = 0.1

    def __init__(self, assoc: Any, deadlines: PacsDeadlines, what: str) -> None:
        self.assoc = assoc
        self.deadlines = deadlines
        self.what = what
        self.expired: str | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _AnswerWatch:
        self._saved = self.assoc.dimse_timeout
        self.sent = time.time()  # the DUL's timer counts in time.time()
        if _last_pdu_at(self.assoc) is None or getattr(getattr(self.assoc, "dimse", None), "msg_queue", None) is None:
            self.assoc.dimse_timeout = self.deadlines.idle
            return self
        self.assoc.dimse_timeout = None
        self._thread = threading.Thread(target=self._watch, name="pacs-answer-watch", daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._done.wait(self.POLL):
            last = _last_pdu_at(self.assoc) or 0.0
            now = time.time()
            if last < self.sent and now - self.sent > self.deadlines.first_byte:
                self._expire(f"{self.what}: no answer from the PACS within {self.deadlines.first_byte:g} s")
            elif last >= self.sent and now - last > self.deadlines.idle:
                self._expire(f"{self.what}: the PACS stopped sending for {self.deadlines.idle:g} s in the middle"
                             " of its answer")
            else:
                continue
            return

    def _expire(self, reason: str) -> None:
        self.expired = reason
        logger.warning("PACS time rule broken: %s", reason)
        socket = getattr(self.assoc.dul, "socket", None)
        if socket is not None:
            socket.close()  # pynetdicom's AssociationSocket.close(): shutdown + Evt17 (transport closed)
        self.assoc.dimse.msg_queue.put((None, None))

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        if self.expired is None:
            self.assoc.dimse_timeout = self._saved

    def check(self) -> None:
        """Raise :class:`PacsTimeout` if a rule was broken."""
        if self.expired is not None:
            raise PacsTimeout(self.expired)


def _end(assoc: Any, watches: list[_AnswerWatch]) -> None:
    """Release the association, or abort it if a time rule ended it (a release would wait on a silent PACS)."""
    if any(w.expired for w in watches):
        if not assoc.is_aborted:
            assoc.abort()
    elif assoc.is_established:
        assoc.release()


def _sop_classes_in_studies(config: DicomConfig, study_uids: Collection[str],
                            deadlines: PacsDeadlines = DEFAULT_DEADLINES) -> list[str]:
    """SOP Classes in Study (0008,0062) by a STUDY-level C-FIND; [] if the PACS does not return it."""
    ae = _timed_ae(config, deadlines)
    ae.add_requested_context(STUDY_ROOT_FIND)
    assoc = _associate(ae, config.pacs, deadlines)
    watches: list[_AnswerWatch] = []
    found: dict[str, None] = {}
    try:
        for study_uid in study_uids:
            q = Dataset()
            q.QueryRetrieveLevel = "STUDY"
            q.StudyInstanceUID = study_uid
            q.SOPClassesInStudy = ""
            quiesce(assoc)
            with _AnswerWatch(assoc, deadlines, "C-FIND") as watch:
                watches.append(watch)
                for status, identifier in assoc.send_c_find(q, STUDY_ROOT_FIND):
                    if status and status.Status in (0xFF00, 0xFF01) and identifier is not None:
                        value = identifier.get("SOPClassesInStudy")
                        for uid in ([value] if isinstance(value, str) else list(value or [])):
                            if uid:
                                found[str(uid)] = None
            watch.check()
    finally:
        _end(assoc, watches)
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
                accept: Sequence[str], deadlines: PacsDeadlines = DEFAULT_DEADLINES) -> Iterator[None]:
    """Generator: one step per retrieved series, all on one association (:class:`PacsTimeout` when the
    PACS breaks a time rule)."""
    for item in series:
        checked_uids(item)
    sop_classes = _sop_classes_in_studies(config, {s.study_instance_uid for s in series}, deadlines)
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
            logger.warning("C-GET sub-operation refused: %s", redact(exc))
            return int(exc.status)
        except Exception:  # noqa: BLE001 - answer the PACS, report through the missing instance
            logger.exception("C-GET sub-operation could not be kept")
            return 0xA700

    ae = _timed_ae(config, deadlines)
    assoc = _associate(ae, config.pacs, deadlines, contexts=contexts, ext_neg=roles,
                       evt_handlers=[(evt.EVT_C_STORE, on_store)])
    watches: list[_AnswerWatch] = []

    def send_get(identifier: Dataset) -> int | None:
        quiesce(assoc)
        with _AnswerWatch(assoc, deadlines, "C-GET") as watch:
            watches.append(watch)
            final = _final_status(assoc.send_c_get(identifier, STUDY_ROOT_GET))
        watch.check()
        return final

    try:
        for item in series:
            _retrieve_series(item, collector, "C-GET", send_get)
            if not assoc.is_established:
                raise FetchError("the PACS released or aborted the C-GET association")
            yield None
    finally:
        _end(assoc, watches)


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
    final = send(_image_identifier(item))
    if after:
        after(item)
    missing = [uid for uid in item.sop_instance_uids
               if (item.series_instance_uid, uid) not in collector.result.instances]
    if final is not None and _is_failure(final) and missing and len(item.sop_instance_uids) > 1:
        q = Dataset()
        q.QueryRetrieveLevel = "SERIES"
        q.StudyInstanceUID = item.study_instance_uid
        q.SeriesInstanceUID = item.series_instance_uid
        final = send(q)
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


def fetch_c_move(config: DicomConfig, series: Sequence[SeriesFetch], collector: Collector,
                 deadlines: PacsDeadlines = DEFAULT_DEADLINES) -> Iterator[None]:
    """C-MOVE each series to our own AE; our C-STORE SCP (scp.py) spools what arrives.

    Correlation is by SOP Instance UID: once the final C-MOVE response says the
    sub-operations are done, every delivered instance is in the spool directory.  When the fetch
    fails (:class:`PacsTimeout`, a dropped association) what reached the spool for the series not
    yet collected is removed - nobody will claim it.  (A copy a concurrent retrieve of the same
    instance is waiting for may go with it; that retrieve then reports the instance missing.)
    """
    for item in series:
        checked_uids(item)
    spool = Path(config.spool_dir)
    ae = _timed_ae(config, deadlines)
    ae.add_requested_context(STUDY_ROOT_MOVE)
    assoc = _associate(ae, config.pacs, deadlines)
    watches: list[_AnswerWatch] = []
    collected: set[str] = set()
    try:
        def send_move(identifier: Dataset) -> int | None:
            quiesce(assoc)
            with _AnswerWatch(assoc, deadlines, "C-MOVE") as watch:
                watches.append(watch)
                final = _final_status(assoc.send_c_move(identifier, config.ae_title, STUDY_ROOT_MOVE))
            watch.check()
            return final

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
            collected.add(item.series_instance_uid)
            yield None
    except BaseException:
        for item in series:
            if item.series_instance_uid not in collected:
                for sop_uid in item.sop_instance_uids:
                    while (path := claim_spooled(spool, sop_uid)) is not None:
                        path.unlink(missing_ok=True)
        raise
    finally:
        _end(assoc, watches)
