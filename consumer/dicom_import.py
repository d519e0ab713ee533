"""The consumer's own DICOM requestor: C-STORE (and C-FIND IMAGE level) to the hospital's PACS.

The only consumer module that imports pynetdicom (import-linter contract in pyproject.toml).  Actors
share no code, so this does not reuse :mod:`imaging_source.dicom.ae`; it sets TCP_NODELAY the same way,
through pynetdicom's own extension point (``AE._create_socket`` -> an ``AssociationSocket`` whose
``_create_socket`` sets the option before ``connect``).  pynetdicom 3.0.4 leaves Nagle on: every
C-STORE larger than the peer's max PDU then waits ~40 ms for a delayed ACK per PDU.

One association carries many instances: it is opened on the first request with a presentation context
per (SOP Class, Transfer Syntax) seen so far, and reopened (with the union) only when an instance needs
a context the open one lacks.  No transcoding: an instance goes in the Transfer Syntax it was written in.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind
from pynetdicom.transport import AddressInformation, AssociationSocket

logger = logging.getLogger(__name__)

if logging.getLogger("pynetdicom").level == logging.NOTSET:  # it dumps every dataset at INFO
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)

#: PS3.4 C.6.2 Study Root Query/Retrieve Information Model - FIND.
STUDY_ROOT_FIND = StudyRootQueryRetrieveInformationModelFind
#: PS3.4 Annex C: C-FIND Pending statuses.
_PENDING = (0xFF00, 0xFF01)
#: PS3.4 B.2.3 Storage statuses of category Warning: the instance is stored.
STORE_WARNINGS = (0x0001, 0xB000, 0xB006, 0xB007)
#: At most 128 presentation contexts per association (PS3.8 9.3.2.2: odd IDs 1-255).
_MAX_CONTEXTS = 127


class DicomImportError(ConnectionError):
    """The association could not be made, or the peer aborted / did not answer."""


@dataclass(frozen=True)
class StoreScp:
    """The PACS that receives the import: its AE title and address; ``tls``, the client context to speak to
    it with (PS3.15 B.10 / ITI-19: our certificate presented, the PACS's verified), None for plain TCP."""

    ae_title: str
    host: str
    port: int
    tls: ssl.SSLContext | None = None

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class Timeouts:
    connection: float = 10.0
    acse: float = 30.0
    dimse: float = 120.0
    network: float = 120.0


class _NoDelaySocket(AssociationSocket):
    def _create_socket(self, address: AddressInformation) -> socket.socket:
        sock = super()._create_socket(address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


class _NoDelayAE(AE):
    def _create_socket(self, assoc: Any, address: AddressInformation, tls_args: Any) -> AssociationSocket:
        sock = _NoDelaySocket(assoc, address=address)
        sock.tls_args = tls_args
        return sock


#: Answers kept from one series-level C-FIND (a hostile PACS cannot make us hold more).
MAX_SERIES_INSTANCES = 100_000


@dataclass
class StoreRequestor:
    """An SCU of the Storage Service Class (PS3.4 Annex B) and of Study Root C-FIND, on one association."""

    calling_ae_title: str
    scp: StoreScp
    timeouts: Timeouts = field(default_factory=Timeouts)
    _contexts: set[tuple[str, str]] = field(default_factory=set, init=False)
    _assoc: Any = field(default=None, init=False)

    def store(self, ds: Dataset) -> int:
        """C-STORE ``ds`` (its file meta names the Transfer Syntax); returns the DIMSE status."""
        needed = (str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
        assoc = self._association(needed)
        accepted = [c for c in assoc.accepted_contexts
                    if c.abstract_syntax == needed[0] and needed[1] in c.transfer_syntax]
        if not accepted:
            raise DicomImportError(f"{self.scp} accepts no presentation context for SOP Class {needed[0]} in "
                                   f"Transfer Syntax {needed[1]}")
        _quiesce(assoc)
        try:
            status = assoc.send_c_store(ds)
        except (RuntimeError, ValueError) as exc:
            self._drop()
            raise DicomImportError(f"C-STORE to {self.scp}: {exc}") from exc
        if not status:  # pynetdicom: empty Dataset on abort / DIMSE timeout
            self._drop()
            raise DicomImportError(f"C-STORE to {self.scp}: no response (association aborted or timed out)")
        return int(status.Status)

    def find_sop_class(self, study_uid: str, series_uid: str, sop_uid: str) -> str | None:
        """C-FIND IMAGE level (hierarchical, PS3.4 C.4.1.2.1): the SOP Class UID of the instance, or None."""
        return self._image_query(study_uid, series_uid, sop_uid).get(sop_uid)

    def series_sop_classes(self, study_uid: str, series_uid: str) -> dict[str, str]:
        """C-FIND IMAGE level for every instance of a series: {SOP Instance UID: SOP Class UID} (one query
        instead of one per instance)."""
        return self._image_query(study_uid, series_uid, "")

    def _image_query(self, study_uid: str, series_uid: str, sop_uid: str) -> dict[str, str]:
        assoc = self._association(None)
        q = Dataset()
        q.QueryRetrieveLevel = "IMAGE"
        q.StudyInstanceUID = study_uid
        q.SeriesInstanceUID = series_uid
        q.SOPInstanceUID = sop_uid
        q.SOPClassUID = ""
        _quiesce(assoc)
        try:
            responses = list(assoc.send_c_find(q, STUDY_ROOT_FIND))
        except RuntimeError as exc:
            self._drop()
            raise DicomImportError(f"C-FIND to {self.scp}: {exc}") from exc
        found: dict[str, str] = {}
        for status, identifier in responses:
            if not status:
                self._drop()
                raise DicomImportError(f"C-FIND to {self.scp}: no response (association aborted or timed out)")
            if status.Status in _PENDING and identifier is not None:
                uid = str(identifier.get("SOPInstanceUID", "") or "")
                if uid and (not sop_uid or uid == sop_uid) and len(found) < MAX_SERIES_INSTANCES:
                    found[uid] = str(identifier.get("SOPClassUID", "") or "")
            elif status.Status != 0x0000:
                raise DicomImportError(f"C-FIND to {self.scp} ended with status 0x{status.Status:04X}")
        return found

    def close(self) -> None:
        if self._assoc is not None and self._assoc.is_established:
            try:
                self._assoc.release()
            except Exception:  # noqa: BLE001 - closing must not raise
                logger.debug("release failed", exc_info=True)
        self._assoc = None

    def _drop(self) -> None:
        if self._assoc is not None and self._assoc.is_established:
            self._assoc.abort()
        self._assoc = None

    def _association(self, needed: tuple[str, str] | None) -> Any:
        if (self._assoc is not None and self._assoc.is_established
                and (needed is None or needed in self._contexts)):
            return self._assoc
        if needed is not None:
            self._contexts.add(needed)
        self.close()
        ae = _NoDelayAE(ae_title=self.calling_ae_title)
        ae.connection_timeout = self.timeouts.connection
        ae.acse_timeout = self.timeouts.acse
        ae.dimse_timeout = self.timeouts.dimse
        ae.network_timeout = self.timeouts.network
        ae.maximum_pdu_size = 0
        ae.add_requested_context(STUDY_ROOT_FIND)
        for sop_class, transfer_syntax in sorted(self._contexts)[-(_MAX_CONTEXTS - 1):]:
            ae.add_requested_context(sop_class, [transfer_syntax])
        tls_args = (self.scp.tls, self.scp.host) if self.scp.tls is not None else None
        assoc = ae.associate(self.scp.host, self.scp.port, ae_title=self.scp.ae_title, tls_args=tls_args)
        if not assoc.is_established:
            state = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "failed"
            raise DicomImportError(f"association {self.calling_ae_title} -> {self.scp} {state}")
        self._assoc = assoc
        return assoc


def _quiesce(assoc: Any, *, settle: float = 0.002, timeout: float = 2.0) -> None:
    """Let pynetdicom's reactor park before a send (pydicom/pynetdicom issue #875: right after a previous
    operation its ``_is_paused`` flag can still be True while the reactor runs, and the reactor then eats
    our response: "Received unexpected C-FIND service message")."""
    checkpoint = getattr(assoc, "_reactor_checkpoint", None)
    if checkpoint is None:
        return
    checkpoint.clear()
    deadline = time.monotonic() + timeout
    time.sleep(settle)
    while not getattr(assoc, "_is_paused", True) and time.monotonic() < deadline:
        time.sleep(0.0005)
