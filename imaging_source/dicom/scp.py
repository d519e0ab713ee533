"""Our long-running DICOM listener: C-STORE SCP, MPPS SCP and Verification.

- **C-STORE** (PS3.4 Annex B).  Two kinds of senders:
  * the PACS answering *our* C-MOVE (the C-STORE request carries Move Originator AE Title =
    our AE title, PS3.7 9.1.1.1): the instance is spooled to ``spool_dir`` as
    ``<SOP UID>.<unique>.dcm`` where the RAD-69 fetcher (fetch.py) claims it;
  * modalities / the PACS forwarding new images: each instance is *recorded*
    (study, series, SOP UID, time) through ``on_instance`` - that is what the
    "study stable" watcher (imaging_source/stable.py) counts.  We are not an archive:
    the pixels stay in the PACS.
  Either way the Affected SOP Instance UID and the data set's own (0008,0018) must be the same DICOM
  UID (0x0117 / 0xA900 / 0xC000, see ``_check_sop_instance_uid``), and a Deflated Explicit VR Little
  Endian data set is refused (0xA7DF) before it is decoded when it inflates past
  :data:`~imaging_source.dicom.received.MAX_INFLATED_DATASET`.
- **MPPS** (PS3.4 Annex F.7): N-CREATE (status must be IN PROGRESS) and N-SET; when a step
  becomes COMPLETED, ``on_mpps_completed(study UIDs, MPPS UID)`` is called inside the N-SET's
  database transaction: it must be quick -- the listener command queues publication jobs
  (:mod:`imaging_source.publication_jobs`), the job worker publishes -- and if it raises, the
  N-SET fails and the step stays as it was.  Steps are kept in the database
  (:mod:`imaging_source.mpps`) so an N-SET after a listener restart still finds its N-CREATE.
- **C-ECHO**.

Every DIMSE transaction logs one line (``dicom <service> ...``).

Who may call is decided before any handler runs as well (:mod:`imaging_source.dicom.admission`): with
``admission`` the listener speaks TLS only (PS3.15 B.10) when it has a server context, and admits an
association only for a peer of the node identity table; the identity's name is the requestor's UserName in
the audit records.

Hostile peers are bounded before any handler runs (:mod:`imaging_source.dicom.acceptor`): associations
per Calling AE Title and in total, idle and stalled associations, PDU lengths
(:mod:`imaging_source.dicom.pdu_limits`).  In the listener process received data sets are reassembled in
files, not in memory (:func:`imaging_source.dicom.received.disk_reassembly`); the handlers read them as
streams and a C-MOVE'd one is renamed into the spool.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import ModalityPerformedProcedureStep, Verification

from imaging_source.dicom import auditing
from imaging_source.dicom.acceptor import GuardedAssociationServer, identity_of
from imaging_source.dicom.admission import PeerAdmission
from imaging_source.dicom.ae import NoDelayAssociationServer, make_ae
from imaging_source.dicom.config import DicomConfig
from imaging_source.dicom.dimse_retrieve import spool_name
from imaging_source.dicom.received import (
    check_inflated_size,
    decode_received,
    discard_partial,
    move_received,
    received_path,
    sop_instance_uid_of,
    sweep_reassembly,
)
from imaging_source.dicom.status import (
    DatasetMismatch,
    DicomServiceError,
    DimseStatus,
    InvalidAttributeValue,
    InvalidInstance,
    MayNoLongerBeUpdated,
    MissingAttribute,
    status_for,
)
from xds_core import audit, disk
from xds_core.identifiers import is_dicom_uid
from xds_core.log_ref import log_ref, redact

logger = logging.getLogger(__name__)

#: Performed Procedure Step Status values (PS3.3 C.4.14, PS3.4 F.7.2).
IN_PROGRESS, COMPLETED, DISCONTINUED = "IN PROGRESS", "COMPLETED", "DISCONTINUED"
FINAL_STATES = (COMPLETED, DISCONTINUED)
#: Spooled C-MOVE instances nobody claimed (a retrieve that timed out) are removed after this.
SPOOL_MAX_AGE = 600.0
#: (0008,0018) SOP Instance UID: a C-MOVE'd data set is decoded up to it, no further.
SOP_INSTANCE_UID_TAG = 0x00080018
#: (0020,000E) Series Instance UID: an incoming data set is decoded up to it (patient, study, series
#: and SOP UIDs come before it), never its pixels.
SERIES_INSTANCE_UID_TAG = 0x0020000E


@dataclass(frozen=True)
class ReceivedInstance:
    """An instance our C-STORE SCP received (recorded for stable-study detection)."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    calling_ae_title: str
    received_at: float


def study_uids_of_mpps(ds: Dataset) -> list[str]:
    """Study Instance UIDs an MPPS refers to (Scheduled Step Attributes Sequence, PS3.4 Table F.7.2-1)."""
    uids: dict[str, None] = {}
    for item in ds.get("ScheduledStepAttributesSequence", []) or []:
        uid = str(item.get("StudyInstanceUID", "") or "").strip()
        if uid:
            uids[uid] = None
    return list(uids)


class DicomListener:
    """C-STORE + MPPS + Verification SCP on ``(host, port)`` (port 0: ephemeral)."""

    def __init__(self, config: DicomConfig, *,
                 on_instance: Callable[[ReceivedInstance], None] | None = None,
                 on_mpps_completed: Callable[[list[str], str], None] | None = None,
                 on_mpps_in_progress: Callable[[Dataset, str], None] | None = None,
                 host: str | None = None, port: int | None = None,
                 admission: PeerAdmission | None = None) -> None:
        self.config = config
        #: TLS and the node identity table (None: plain TCP and anyone, as before issue 13; the listener
        #: command always passes one).
        self.admission = admission
        self.spool_dir = Path(config.spool_dir)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        # Imported here: the DICOM package itself needs no Django; the MPPS steps are database rows.
        from django.db import close_old_connections

        from imaging_source.mpps import MppsStore

        self.mpps = MppsStore()
        #: Connection hygiene around every handler's database work (before it, and when the handler
        #: ends): pynetdicom runs each association in a thread of its own, whose connection may have
        #: died with a database restart (CONN_HEALTH_CHECKS: checked, and replaced, before use); and on
        #: PostgreSQL connections come from a per-process pool, which a thread keeping its connection
        #: for as long as its association stays open would starve.
        self._close_old_connections = close_old_connections
        self.on_instance = on_instance
        self.on_mpps_completed = on_mpps_completed
        self.on_mpps_in_progress = on_mpps_in_progress
        self.address = (host or config.scp_host, config.scp_port if port is None else port)
        self.server: NoDelayAssociationServer | None = None
        self._last_purge = 0.0
        #: Audited incoming C-STOREs per open association (recorded when it closes).
        self._transfers: dict[int, auditing.StoreTransfer] = {}

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> tuple[str, int]:
        limits = self.config.listener
        ae = make_ae(self.config.ae_title, maximum_pdu_size=limits.max_pdu_length,
                     timeouts={"acse": limits.acse_timeout, "network": limits.network_timeout})
        # Our limits (acceptor.py) decide; pynetdicom's own count of associations must not come first.
        ae.maximum_associations = 2 * limits.max_associations + 1
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        ae.add_supported_context(ModalityPerformedProcedureStep)
        ae.require_called_aet = True  # PS3.8 9.3.3.2: reject associations addressed to another AE
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_N_CREATE, self._on_n_create),
                    (evt.EVT_N_SET, self._on_n_set), (evt.EVT_C_ECHO, self._on_echo),
                    (evt.EVT_CONN_CLOSE, self._on_conn_close)]
        # A data set whose last fragment never came is still in its reassembly file when the
        # association ends (received.py): removed then, whatever ended it.
        self.server = ae.start_listener(self.address, evt_handlers=handlers, server_class=GuardedAssociationServer,
                                        limits=limits, on_association_end=discard_partial,
                                        admission=self.admission)
        host, port = self.server.server_address[:2]
        transport = "tls" if self.admission is not None and self.admission.uses_tls else "plain"
        logger.info("dicom listener ae=%s address=%s:%d transport=%s identities=%s max_associations=%d per_ae=%d "
                    "max_pdu=%d network_timeout=%gs", self.config.ae_title, host, port, transport,
                    "on" if self.admission is not None else "off", limits.max_associations,
                    limits.max_associations_per_ae, limits.max_pdu_length, limits.network_timeout)
        return host, port

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    # -- handlers -------------------------------------------------------------------------
    @staticmethod
    def _peer(event: Any) -> str:
        requestor = event.assoc.requestor
        return f"{requestor.ae_title}@{requestor.address}"

    def _on_echo(self, event: Any) -> int:
        logger.info("dicom C-ECHO from=%s status=0x0000", self._peer(event))
        return 0x0000

    def _on_store(self, event: Any) -> int:
        started = time.perf_counter()
        request = event.request
        sop_uid = str(request.AffectedSOPInstanceUID or "")
        mover = (request.MoveOriginatorApplicationEntityTitle or "").strip()
        kind = "c-move" if mover == self.config.ae_title else "incoming"
        ds: Dataset | None = None
        try:
            # The SOP Instance UID names a spool file; study and series UIDs later go into C-FIND /
            # QIDO-RS queries: only DICOM UIDs (PS3.5 §9.1) get that far.  A UID that is not one is
            # refused with 0x0117 "Invalid SOP Instance" (a C-STORE status of PS3.7 9.1.1.1.9 / Annex C:
            # "the SOP Instance UID specified implied a violation of the UID construction rules").
            if not is_dicom_uid(sop_uid):
                raise InvalidInstance("Affected SOP Instance UID is not a DICOM UID")
            # Deflated data sets (PS3.5 A.5) are size-checked by a counting inflate before anything
            # decodes them (received.py): 0xA7DF past MAX_INFLATED_DATASET, nothing written.
            check_inflated_size(event)
            if kind == "c-move":
                # Only the head up to (0008,0018) is decoded: the rest is spooled as received.
                self._check_sop_instance_uid(decode_received(event, stop_after=SOP_INSTANCE_UID_TAG), sop_uid)
                self._check_spool_room()
                self._spool(event, sop_uid)
            else:
                ds = decode_received(event, stop_after=SERIES_INSTANCE_UID_TAG)
                self._check_sop_instance_uid(ds, sop_uid)
                study_uid = str(ds.get("StudyInstanceUID", "") or "")
                series_uid = str(ds.get("SeriesInstanceUID", "") or "")
                if not study_uid:
                    raise DatasetMismatch("data set without Study Instance UID")
                if not is_dicom_uid(study_uid) or (series_uid and not is_dicom_uid(series_uid)):
                    raise DatasetMismatch("Study / Series Instance UID is not a DICOM UID")
                received = ReceivedInstance(study_uid, series_uid, sop_uid,
                                            str(request.AffectedSOPClassUID or ""), event.assoc.requestor.ae_title,
                                            time.time())
                if self.on_instance is not None:
                    self._close_old_connections()  # and again when the handler ends, below
                    self.on_instance(received)
            status = 0x0000
        except Exception as exc:  # noqa: BLE001 - every failure becomes a DIMSE status
            status = status_for(exc, service="C-STORE")
            if isinstance(exc, DicomServiceError):
                logger.warning("dicom C-STORE refused from=%s status=0x%04X: %s", self._peer(event), status,
                               redact(exc))
            else:
                logger.exception("C-STORE %s failed", _loggable(sop_uid))
        logger.info("dicom C-STORE from=%s kind=%s sop=%s status=0x%04X ms=%.1f", self._peer(event), kind,
                    _loggable(sop_uid), status, (time.perf_counter() - started) * 1000)
        self._housekeeping(event)
        if kind == "incoming" and audit.enabled():  # a C-MOVE answer is part of our RAD-69 / RAD-55, audited there
            audit.safely(self._note_store, event, sop_uid, status, ds)
        self._close_old_connections()  # the association may stay open: its thread keeps no connection
        return status

    def _check_spool_room(self) -> None:
        """The spool keeps C-MOVE'd instances until RAD-69 sends them on: below the free-space watermark
        (XDS_MIN_FREE_SPACE, the repository's too) they are refused with 0xA700 Out of Resources (PS3.4
        Table B.2-1), so RAD-69 fails with its error instead of the disk filling up."""
        watermark = self.config.listener.min_free_space
        if watermark and not disk.room(self.spool_dir, watermark=watermark).enough:
            raise DicomServiceError("the spool's file system is below the free-space watermark",
                                    status=DimseStatus.OUT_OF_RESOURCES)

    @staticmethod
    def _check_sop_instance_uid(ds: Dataset, affected_uid: str) -> None:
        """The data set's own (0008,0018) must be a UID and the Affected SOP Instance UID of the command.

        Absent or undecodable: 0xC000 "Cannot understand"; different: 0xA900 "Data Set does not match
        SOP Class" (PS3.4 Table B.2-1, B.2.3; dcmtk's storescp answers these two the same way).
        """
        own = sop_instance_uid_of(ds)
        if not is_dicom_uid(own):
            raise InvalidInstance("SOP Instance UID (0008,0018) of the data set is not a DICOM UID")
        if own != affected_uid:
            raise DatasetMismatch("SOP Instance UID (0008,0018) differs from the Affected SOP Instance UID")

    def _spool(self, event: Any, sop_uid: str) -> None:
        # spool_name() accepts DICOM UIDs only (PS3.5 §9.1: digits and dots); as defence in depth the
        # resolved path must also be a direct child of the resolved spool directory.
        root = self.spool_dir.resolve()
        target = (root / spool_name(sop_uid)).resolve()
        if target.parent != root:
            raise InvalidInstance("spool path leaves the spool directory")
        fd, tmp = tempfile.mkstemp(dir=root, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as fh:
                if received_path(event) is None:  # in memory: the bytes as received, with a File Meta
                    fh.write(event.encoded_dataset(include_meta=True))
            # Reassembled on disk (received.disk_reassembly): the Part-10 file pynetdicom wrote (the same
            # File Meta, the data set as received) is renamed, never read or re-encoded.
            move_received(event, Path(tmp))
            os.replace(tmp, target)  # visible only when complete
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _housekeeping(self, event: Any) -> None:
        """At most once a minute: remove spooled instances nobody claimed, and reassembly files of
        associations that ended mid-data-set and escaped :func:`discard_partial`."""
        now = time.time()
        if now - self._last_purge > 60:
            self._last_purge = now
            for stale in self.spool_dir.glob("*.dcm"):
                try:
                    if now - stale.stat().st_mtime > SPOOL_MAX_AGE:
                        stale.unlink()
                except FileNotFoundError:
                    pass
            # A live transfer writes at every P-DATA, far more often than SPOOL_MAX_AGE (and the
            # network timeout ends a silent one): an older file is an orphan.
            if received_dir := _reassembly_dir(event):
                sweep_reassembly(received_dir, max_age=SPOOL_MAX_AGE)

    def _on_n_create(self, event: Any) -> tuple[int, Dataset | None]:
        request = event.request
        uid = str(request.AffectedSOPInstanceUID or "") or generate_uid()  # PS3.4 F.7.2.1.1: SCP may assign
        status, state = 0x0000, ""
        reply: Dataset | None = None
        try:
            self._close_old_connections()
            ds = event.attribute_list
            state = str(ds.get("PerformedProcedureStepStatus", "") or "").strip()
            if "PerformedProcedureStepStatus" not in ds:
                raise MissingAttribute("Performed Procedure Step Status (0040,0252) is required")
            if state != IN_PROGRESS:
                # PS3.4 F.7.2.1.2: an MPPS is created IN PROGRESS
                raise InvalidAttributeValue(f"N-CREATE with Performed Procedure Step Status {state!r}")
            self.mpps.create(uid, ds)  # DuplicateInstance (0x0111) if it exists
            reply = ds
        except Exception as exc:  # noqa: BLE001
            status = status_for(exc)
            if not isinstance(exc, DicomServiceError):
                logger.exception("MPPS N-CREATE %s failed", log_ref(uid))
        else:
            self._announce_in_progress(reply, uid)
        finally:
            self.mpps.release()  # closes this thread's connection (after the work)
        logger.info("dicom MPPS N-CREATE from=%s mpps=%s state=%s status=0x%04X", self._peer(event), log_ref(uid),
                    state or "-", status)
        audit.record(lambda: self._mpps_event(event, audit.Transaction.RAD_6, reply, status))
        self._close_old_connections()
        if status == 0x0000 and request.AffectedSOPInstanceUID is None:
            # The SCP chose the UID: it goes back in the response's Affected SOP Instance UID.
            request.AffectedSOPInstanceUID = uid
        return status, reply

    def _announce_in_progress(self, ds: Dataset, uid: str) -> None:
        """The procedure has begun (e.g. prefetch its priors).  The step is stored already: whatever the
        callback does, the modality's N-CREATE succeeds (a prefetch problem must not stop an examination)."""
        if self.on_mpps_in_progress is None:
            return
        try:
            self.on_mpps_in_progress(ds, uid)
        except Exception:  # noqa: BLE001
            logger.exception("dicom MPPS N-CREATE mpps=%s: the in-progress callback failed", log_ref(uid))

    def _on_n_set(self, event: Any) -> tuple[int, Dataset | None]:
        request = event.request
        uid = str(request.RequestedSOPInstanceUID or "")
        status, state, studies = 0x0000, "", []
        reply: Dataset | None = None
        try:
            self._close_old_connections()
            changes = event.modification_list
            with self.mpps.editing(uid) as current:  # NoSuchInstance (0x0112); one transaction, row locked
                if str(current.get("PerformedProcedureStepStatus", "")).strip() in FINAL_STATES:
                    raise MayNoLongerBeUpdated(f"MPPS {uid} is {current.PerformedProcedureStepStatus}")
                state = str(changes.get("PerformedProcedureStepStatus", "") or "").strip() or str(
                    current.get("PerformedProcedureStepStatus", "")).strip()
                if state not in (IN_PROGRESS, COMPLETED, DISCONTINUED):
                    raise InvalidAttributeValue(f"Performed Procedure Step Status {state!r}")
                for element in changes:
                    current[element.tag] = element
                if state == COMPLETED:
                    studies = study_uids_of_mpps(current)
                    bad = [u for u in studies if not is_dicom_uid(u)]
                    if bad:
                        raise InvalidAttributeValue(f"Study Instance UID {bad[0]!r} is not a UID (PS3.5 9.1)")
                    if self.on_mpps_completed is not None:
                        # In the N-SET's transaction: the step is COMPLETED with its publications queued,
                        # or (the callback raised) neither, and the modality may send the N-SET again.
                        self.on_mpps_completed(studies, uid)
            reply = current
        except Exception as exc:  # noqa: BLE001
            status = status_for(exc)
            if not isinstance(exc, DicomServiceError):
                logger.exception("MPPS N-SET %s failed", log_ref(uid))
        finally:
            self.mpps.release()  # closes this thread's connection (after the work)
        logger.info("dicom MPPS N-SET from=%s mpps=%s state=%s studies=%s status=0x%04X", self._peer(event),
                    log_ref(uid), state or "-", ",".join(log_ref(s) for s in studies) or "-", status)
        audit.record(lambda: self._mpps_event(event, audit.Transaction.RAD_7, reply, status))
        self._close_old_connections()
        return status, reply

    # -- audit (xds_core.audit) ----------------------------------------------------------------
    def _parties(self, event: Any) -> tuple[audit.Participant, audit.Participant]:
        requestor = event.assoc.requestor
        identity = identity_of(event.assoc)
        return (auditing.peer(requestor.ae_title, requestor.address, identity=identity.name if identity else ""),
                audit.this_node(self.config.ae_title, ae_title=self.config.ae_title))

    def _note_store(self, event: Any, sop_uid: str, status: int, ds: Dataset | None) -> None:
        transfer = self._transfers.get(id(event.assoc))
        if transfer is None:
            transfer = self._transfers[id(event.assoc)] = auditing.StoreTransfer(*self._parties(event))
        if ds is None and status != DimseStatus.INFLATED_DATASET_TOO_LARGE:  # a refused bomb is not inflated again
            ds = _dataset_or_none(event)
        transfer.add(ds, sop_uid, status)

    def _on_conn_close(self, event: Any) -> None:
        transfer = self._transfers.pop(id(event.assoc), None)
        if transfer is not None:
            audit.record(transfer.events)

    def _mpps_event(self, event: Any, transaction: audit.Transaction, reply: Dataset | None,
                    status: int) -> audit.AuditEvent:
        # The step as stored (reply), else what the request carried.
        ds = reply if reply is not None else _attributes_or_none(event)
        return auditing.mpps_event(transaction, *self._parties(event), ds,
                                   study_uids_of_mpps(ds) if ds is not None else [], status)


def _dataset_or_none(event: Any) -> Dataset | None:
    # Never event.dataset: pynetdicom would inflate a deflated bomb in one piece (received.py).
    try:
        return decode_received(event, stop_after=SERIES_INSTANCE_UID_TAG)  # patient and study are before it
    except Exception:  # noqa: BLE001 - an undecodable or refused data set is audited without its patient
        return None


def _reassembly_dir(event: Any) -> Path | None:
    path = received_path(event)
    return path.parent if path else None


def _loggable(uid: str) -> str:
    """A received UID for a log line: its reference only (issue 13: no UIDs in operational logs; a forged value
    is hashed too, so it cannot forge lines either)."""
    return log_ref(uid)


def _attributes_or_none(event: Any) -> Dataset | None:
    try:
        return event.attribute_list if event.event is evt.EVT_N_CREATE else event.modification_list
    except Exception:  # noqa: BLE001
        return None


__all__ = ["DicomListener", "ReceivedInstance", "study_uids_of_mpps", "DimseStatus"]
