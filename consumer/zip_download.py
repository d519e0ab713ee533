"""A manifest's images as a zip streamed to a client while RAD-69 brings them: never the whole study in memory.

:class:`ZipDestination` is a :class:`~consumer.destinations.Destination` whose ``put`` writes one zip entry
``<Study Instance UID>/<Series Instance UID>/<SOP Instance UID>.dcm`` (each UID checked, PS3.5 9.1, before
it becomes a name) into a :class:`zipfile.ZipFile` over a non-seekable writer: ZIP_STORED (DICOM pixel
data compresses poorly and the CPU is better spent elsewhere), sizes and CRC in data descriptors after each
entry (APPNOTE 4.3.9), Zip64 where an entry or the archive needs it.  The writer hands the bytes to a
bounded queue; :class:`ZipStream` runs :func:`consumer.retrieval.retrieve_manifest` into the destination in a
background thread and yields the queue's chunks to the HTTP response, so at most ``max_chunks`` chunks of
``chunk_size`` bytes wait (plus the one attachment being copied, spilled to disk by the SOAP reader).

Closing the stream (the response is closed: done, or the client went away) cancels the thread at its next
write and runs ``on_close`` (the caller's concurrency slot is released there).  A ``README.txt`` written last
says what is inside and what could not be retrieved.
"""

from __future__ import annotations

import logging
import queue
import threading
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from consumer.destinations import DestinationError, InstanceRef
from consumer.retrieval import RetrievalReport, RetrievalSetupError, retrieve_manifest
from kos.reader import Manifest
from xds_core.identifiers import is_dicom_uid
from xds_core.log_ref import log_ref

logger = logging.getLogger(__name__)

_COPY_CHUNK = 1024 * 1024
#: An entry this close to 4 GiB is written with Zip64 sizes (zipfile cannot switch after the header).
_ZIP64_ENTRY = zipfile.ZIP64_LIMIT - (1 << 20)


class DownloadCancelled(Exception):
    """The client stopped reading (the response was closed): the retrieval stops at its next write."""


class _QueueWriter:
    """A write-only, non-seekable file for :class:`zipfile.ZipFile`: small writes are gathered into chunks of
    ``chunk_size``, each chunk put on a bounded queue (blocking while it is full, until cancelled)."""

    def __init__(self, chunks: queue.Queue[bytes | None], cancelled: threading.Event, chunk_size: int) -> None:
        self._chunks = chunks
        self._cancelled = cancelled
        self._chunk_size = chunk_size
        self._buffer = bytearray()
        self.written = 0
        #: Set once the download is abandoned: what zipfile still writes while it is torn down goes nowhere.
        self.discard = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        size = len(data)
        self.written += size
        self._buffer += data
        if len(self._buffer) >= self._chunk_size:
            self.flush()
        return size

    def flush(self) -> None:
        if self._buffer:
            chunk, self._buffer = bytes(self._buffer), bytearray()
            self.put(chunk)

    def put(self, item: bytes | None) -> None:
        if self.discard:
            return
        while True:
            if self._cancelled.is_set():
                raise DownloadCancelled("the download was closed")
            try:
                self._chunks.put(item, timeout=0.5)
                return
            except queue.Full:
                continue


@dataclass
class ZipContents:
    """What went into the zip, for its README and the caller's summary."""

    entries: list[str] = field(default_factory=list)
    bytes: int = 0


class ZipDestination:
    """Each instance one stored entry of a zip written to ``writer`` (see the module docstring)."""

    def __init__(self, writer: _QueueWriter) -> None:
        self._writer = writer
        self._zip = zipfile.ZipFile(writer, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True)  # type: ignore[arg-type]
        self.contents = ZipContents()
        self._names: set[str] = set()

    @staticmethod
    def name_of(ref: InstanceRef) -> str:
        for what, uid in (("Study Instance UID", ref.study_instance_uid),
                          ("Series Instance UID", ref.series_instance_uid), ("SOP Instance UID", ref.sop_instance_uid)):
            if not is_dicom_uid(uid):
                raise DestinationError(f"{what} {uid[:80]!r} is not a DICOM UID (PS3.5 9.1); not used as a name")
        return f"{ref.study_instance_uid}/{ref.series_instance_uid}/{ref.sop_instance_uid}.dcm"

    def has(self, ref: InstanceRef) -> bool:
        return self.name_of(ref) in self._names

    def put(self, ref: InstanceRef, part10: Path | bytes) -> None:
        name = self.name_of(ref)
        if name in self._names:
            return
        size = len(part10) if isinstance(part10, bytes | bytearray | memoryview) else Path(part10).stat().st_size
        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_STORED
        info.file_size = size
        with self._zip.open(info, mode="w", force_zip64=size >= _ZIP64_ENTRY) as entry:
            if isinstance(part10, bytes | bytearray | memoryview):
                view = memoryview(part10)
                for start in range(0, len(view), _COPY_CHUNK):
                    entry.write(view[start:start + _COPY_CHUNK])
            else:
                with open(part10, "rb") as source:
                    while chunk := source.read(_COPY_CHUNK):
                        entry.write(chunk)
        self._names.add(name)
        self.contents.entries.append(name)
        self.contents.bytes += size

    def add_text(self, name: str, text: str) -> None:
        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_STORED
        self._zip.writestr(info, text.encode("utf-8"))

    def close(self) -> None:
        """Nothing: the retrieval closes its destination after the last series; the archive is finished
        by :meth:`finish` once the README (which needs the retrieval's report) is written."""

    def abandon(self) -> None:
        """The client is gone: release the archive without writing anything more that matters."""
        try:
            self._zip.close()
        except Exception:  # noqa: BLE001, S110 - a cut-short archive has nobody left to tell
            pass

    def finish(self) -> None:
        self._zip.close()
        self._writer.flush()


def readme(manifest: Manifest, document_uid: str, contents: ZipContents, report: RetrievalReport | None,
           error: str = "") -> str:
    """README.txt: what the zip holds, by study and series, and what is missing and why."""
    lines = [f"Images of imaging manifest {document_uid} (XDS-I.b), retrieved by RAD-69 Retrieve Imaging "
             "Document Set.", "",
             "Each file is one DICOM Part 10 instance, named <Study Instance UID>/<Series Instance UID>/"
             "<SOP Instance UID>.dcm.", ""]
    per_series: dict[tuple[str, str], int] = {}
    for name in contents.entries:
        study, series, _ = name.split("/", 2)
        per_series[(study, series)] = per_series.get((study, series), 0) + 1
    lines.append(f"{len(contents.entries)} of {manifest.instance_count} instances, {contents.bytes} bytes:")
    for study in manifest.studies:
        lines.append(f"  study {study.study_instance_uid}")
        for series in study.series:
            have = per_series.get((study.study_instance_uid, series.series_instance_uid), 0)
            lines.append(f"    series {series.series_instance_uid}: {have} of {len(series.instances)} instances")
    problems = [error] if error else []
    if report is not None:
        problems += [f"{e.code} {e.location}: {e.text}" for e in report.errors]
    if problems:
        lines += ["", "Not retrieved:", *(f"  {p}" for p in problems[:200])]
        if len(problems) > 200:
            lines.append(f"  ... and {len(problems) - 200} more")
    return "\n".join(lines) + "\n"


class ZipStream:
    """The HTTP body of a zip download: iterate for the bytes; :meth:`close` (the response's) ends it.

    ``on_close`` runs exactly once, when the stream is closed (after the last chunk, or early when the
    client disconnects), or when it could not start.
    """

    def __init__(self, manifest: Manifest, document_uid: str, *, resolve_imaging_source: Callable[[str], str],
                 transfer_syntaxes: Sequence[str], timeout: float = 300.0, on_close: Callable[[], None] | None = None,
                 chunk_size: int = 256 * 1024, max_chunks: int = 32,
                 thread_setup: Callable[[], None] | None = None,
                 thread_teardown: Callable[[], None] | None = None) -> None:
        self.manifest = manifest
        self.document_uid = document_uid
        self._resolve = resolve_imaging_source
        self._syntaxes = list(transfer_syntaxes)
        self._timeout = timeout
        self._on_close = on_close
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=max_chunks)
        self._cancelled = threading.Event()
        self._writer = _QueueWriter(self._chunks, self._cancelled, chunk_size)
        self._thread_setup = thread_setup
        self._thread_teardown = thread_teardown
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()
        self.report: RetrievalReport | None = None
        self.error = ""
        self.contents = ZipContents()

    def __iter__(self) -> Iterator[bytes]:
        if self._closed:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"zip-{self.document_uid[-12:]}", daemon=True)
            self._thread.start()
        while True:
            chunk = self._chunks.get()
            if chunk is None:
                return
            yield chunk

    def _run(self) -> None:
        destination: ZipDestination | None = None
        try:
            if self._thread_setup is not None:
                self._thread_setup()
            destination = ZipDestination(self._writer)
            try:
                self.report = retrieve_manifest(self.manifest, destination, resolve_imaging_source=self._resolve,
                                                transfer_syntaxes=self._syntaxes, timeout=self._timeout)
            except RetrievalSetupError as exc:
                self.error = str(exc)
            self.contents = destination.contents
            destination.add_text("README.txt", readme(self.manifest, self.document_uid, destination.contents,
                                                      self.report, self.error))
            destination.finish()
        except DownloadCancelled:
            self._writer.discard = True
            if destination is not None:
                destination.abandon()
            logger.info("zip download of manifest %s cancelled after %d bytes", log_ref(self.document_uid),
                        self._writer.written)
        except Exception as exc:  # noqa: BLE001 - the thread must end the stream whatever happened
            self.error = f"{type(exc).__name__}: {exc}"
            logger.warning("zip download of manifest %s failed: %s", log_ref(self.document_uid), type(exc).__name__)
            if destination is not None:  # end the archive readable, the README saying what went wrong
                try:
                    destination.add_text("README.txt", readme(self.manifest, self.document_uid,
                                                              destination.contents, self.report, self.error))
                    destination.finish()
                except Exception:  # noqa: BLE001 - the zip is cut short: the client sees a broken archive
                    logger.warning("zip download of manifest %s: the archive could not be finished",
                                   log_ref(self.document_uid))
        finally:
            if self._thread_teardown is not None:
                self._thread_teardown()
            if not self._cancelled.is_set():
                try:
                    self._writer.put(None)  # the end: the response's iterator returns
                except DownloadCancelled:
                    pass

    def close(self) -> None:
        """Stop (the response is done or the client went away) and run ``on_close`` once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._cancelled.set()
        # Unblock a writer waiting on a full queue: it sees the cancellation within its put timeout.
        try:
            while True:
                self._chunks.get_nowait()
        except queue.Empty:
            pass
        if self._on_close is not None:
            self._on_close()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the background retrieval to end (tests; a cancelled one ends at its next write)."""
        if self._thread is not None:
            self._thread.join(timeout)
