"""A directory of Part 10 files as the destination of a retrieval: ``<root>/<study>/<series>/<sop>.dcm``.

Every UID is checked (:func:`xds_core.identifiers.is_dicom_uid`, PS3.5 9.1: digits and dots, at most
64 characters) before it becomes a path component, so a hostile manifest cannot name ``..`` or ``/``.
:meth:`FilesDestination.put` writes whole or not at all: a temp file in the target directory, fsync,
rename over the final name (POSIX rename is atomic within a file system).  The directories are fsynced
once, when the destination is closed, not after every file: the renames then reach the disk together
(a power cut before that loses only renames, i.e. files the next run fetches again, never a partial
file under a final name).
:meth:`FilesDestination.has` counts a file only when it is a complete Part 10 object with the
manifest's SOP Instance UID and SOP Class UID (:func:`consumer.part10.read_identity`, header only).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from consumer.destinations import DestinationError, InstanceRef
from consumer.part10 import Part10Error, read_identity
from xds_core.identifiers import is_dicom_uid
from xds_core.log_ref import log_ref

logger = logging.getLogger(__name__)

_COPY_CHUNK = 1024 * 1024


class FilesDestination:
    """Stores each instance at ``root/<Study Instance UID>/<Series Instance UID>/<SOP Instance UID>.dcm``.

    With ``writers`` > 0, an instance handed over as bytes is written by one of that many threads while the
    retrieval reads the next ones (file creation and fsync wait on the disk, not on the CPU); what could not
    be written comes back from :meth:`flush` (:class:`~consumer.destinations.BatchingDestination`).  At most
    ``max_pending_bytes`` wait to be written.  A file source (a spill file the caller removes afterwards) is
    always written before :meth:`put` returns.
    """

    def __init__(self, root: Path, *, writers: int = 0, max_pending_bytes: int = 64 * 1024 * 1024) -> None:
        self.root = Path(root)
        self._renamed_in: set[Path] = set()  # directories whose renames are not yet fsynced
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=writers, thread_name_prefix="files") if writers > 0 else None
        self._pending: list[tuple[str, int, Future[None]]] = []
        self._pending_bytes = 0
        self.max_pending_bytes = max_pending_bytes
        self._failed: dict[str, str] = {}

    def path_of(self, ref: InstanceRef) -> Path:
        """Where ``ref`` is (or goes); :class:`DestinationError` when a UID is not a DICOM UID."""
        for name, uid in (("Study Instance UID", ref.study_instance_uid),
                          ("Series Instance UID", ref.series_instance_uid),
                          ("SOP Instance UID", ref.sop_instance_uid)):
            if not is_dicom_uid(uid):
                raise DestinationError(f"{name} {uid!r} is not a DICOM UID (PS3.5 9.1); not used as a file name")
        return self.root / ref.study_instance_uid / ref.series_instance_uid / f"{ref.sop_instance_uid}.dcm"

    def has(self, ref: InstanceRef) -> bool:
        path = self.path_of(ref)
        try:
            return read_identity(path) == (ref.sop_instance_uid, ref.sop_class_uid)
        except (Part10Error, OSError):
            return False

    def put(self, ref: InstanceRef, part10: Path | bytes) -> None:
        target = self.path_of(ref)
        if self._pool is None or not isinstance(part10, bytes | bytearray | memoryview):
            self._write(ref, target, part10)
            return
        data = bytes(part10)
        while self._pending and self._pending_bytes + len(data) > self.max_pending_bytes:
            self._settle(self._pending.pop(0))
        self._pending.append((ref.sop_instance_uid, len(data), self._pool.submit(self._write, ref, target, data)))
        self._pending_bytes += len(data)

    def flush(self) -> dict[str, str]:
        """Wait for the writers; {SOP Instance UID: why} of each instance handed over since the last flush
        that could not be written."""
        while self._pending:
            self._settle(self._pending.pop(0))
        failed, self._failed = self._failed, {}
        return failed

    def _settle(self, pending: tuple[str, int, Future[None]]) -> None:
        uid, size, future = pending
        self._pending_bytes -= size
        try:
            future.result()
        except DestinationError as exc:
            self._failed[uid] = str(exc)

    def _write(self, ref: InstanceRef, target: Path, part10: Path | bytes) -> None:
        temp: str | None = None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(prefix=f".{ref.sop_instance_uid}.", suffix=".part", dir=target.parent)
            try:
                if isinstance(part10, bytes | bytearray | memoryview):
                    _write_all(fd, part10)
                else:
                    with open(part10, "rb") as source:
                        while chunk := source.read(_COPY_CHUNK):
                            _write_all(fd, chunk)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, target)
            temp = None
            with self._lock:
                self._renamed_in.add(target.parent)
        except OSError as exc:
            if temp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
            reason = "the disk is full (ENOSPC)" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
            raise DestinationError(f"cannot store SOP Instance {ref.sop_instance_uid} at {target}: {reason}") from exc

    def close(self) -> None:
        """Finish the writes, and make the renames durable: one fsync per directory written to."""
        for uid, why in self.flush().items():  # a caller that never flushed still hears of it, in the log
            logger.warning("files destination: instance %s not written: %s", log_ref(uid), why)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._lock:
            pending, self._renamed_in = self._renamed_in, set()
        for directory in sorted(pending):
            with contextlib.suppress(OSError):  # a directory removed meanwhile: nothing left to make durable
                fsync_directory(directory)


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """``os.write`` until all of ``data`` is written (a write may be short)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def fsync_directory(directory: Path) -> None:
    """Make the rename durable (POSIX: a directory entry reaches the disk with the directory's fsync)."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
