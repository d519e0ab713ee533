"""Reading a data set a peer sent us in a C-STORE, with a bound on what a deflated one may inflate to.

Deflated Explicit VR Little Endian (1.2.840.10008.1.2.1.99, PS3.5 A.5) is a raw DEFLATE stream
(RFC 1951).  pynetdicom's ``event.dataset`` (``dsutils.decode``) and pydicom's ``dcmread`` inflate it
with one ``zlib.decompress`` call: a few kB of zeros from a peer become hundreds of MB in our process
(issue 15: 63 KiB inflated to ~130 MB).  Here a deflated data set is first inflated in bounded steps
(``zlib.decompressobj().decompress(data, max_length)``) with the output counted and thrown away, and
refused past :data:`MAX_INFLATED_DATASET` before anything holds it inflated; only then is it decoded.

The other transfer syntaxes are decoded as pynetdicom does (their size is what the peer sent).

The received data set is either in memory (``event.request.DataSet``) or, in the listener process
(``pynetdicom._config.STORE_RECV_CHUNKED_DATASET``, see :func:`disk_reassembly`), in a Part-10 file
pynetdicom wrote fragment by fragment as the P-DATA arrived (``event.dataset_path``): the listener then
never holds a whole data set in memory.  Every function here reads either, as a stream.
"""

from __future__ import annotations

import io
import logging
import shutil
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pynetdicom import _config as pynetdicom_config
from pynetdicom.dsutils import split_dataset

from imaging_source.dicom.instances import DEFAULT_MEMORY_LIMIT
from imaging_source.dicom.status import CannotUnderstand, DatasetTooLarge

#: Largest inflated size of a received Deflated Explicit VR Little Endian data set: 64 MiB.
#: A deflated data set is held inflated in memory once accepted (pydicom parses from one buffer), so
#: the bound is a share of what the suite holds per request elsewhere: a quarter of the RAD-69
#: in-memory budget (instances.DEFAULT_MEMORY_LIMIT, 256 MiB) and the same as XDS_MAX_XML_SIZE, the
#: largest XML part parsed in memory.  Deflate carries SRs, KOS, presentation states, waveforms and
#: small images (kB to a few MB); a sender of larger images can use any of the other syntaxes we
#: accept.  The bug report's 63 KiB -> ~130 MB is twice the limit.
MAX_INFLATED_DATASET = DEFAULT_MEMORY_LIMIT // 4
#: Inflate steps: at most this much output per ``decompress`` call (the counting pass keeps none of it).
_OUTPUT_STEP = 1024 * 1024
_INPUT_STEP = 64 * 1024

logger = logging.getLogger(__name__)


def _pieces(deflated: bytes) -> Iterator[memoryview]:
    view = memoryview(deflated)
    for pos in range(0, len(view), _INPUT_STEP):
        yield view[pos:pos + _INPUT_STEP]


def _stream_pieces(stream: BinaryIO) -> Iterator[bytes]:
    while piece := stream.read(_INPUT_STEP):
        yield piece


def _inflate(deflated: bytes | Iterable[bytes | memoryview], limit: int, *, keep: bool) -> tuple[int, bytes]:
    """(inflated size, inflated bytes if ``keep`` else b"") of a raw DEFLATE stream (RFC 1951).

    ``deflated``: the stream, or its pieces in order (read from a file as they are needed).
    Never holds more than ``limit`` + one step of output: :class:`DatasetTooLarge` (0xA7DF) once the
    output passes ``limit``; :class:`CannotUnderstand` (0xC000) for a corrupt or truncated stream.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # raw DEFLATE, no zlib header (PS3.5 A.5)
    pieces = iter(_pieces(deflated) if isinstance(deflated, bytes | bytearray) else deflated)
    exhausted, total, consumed = False, 0, 0
    pending: bytes | memoryview = b""
    parts: list[bytes] = []
    try:
        while not inflater.eof:
            if not pending and not exhausted:
                pending = next(pieces, b"")
                exhausted = not pending
                consumed += len(pending)
            chunk = inflater.decompress(pending, _OUTPUT_STEP)
            pending = inflater.unconsumed_tail
            if not chunk and not pending and exhausted:
                break  # input exhausted without the final block: truncated
            total += len(chunk)
            if total > limit:
                raise DatasetTooLarge(f"deflated data set ({consumed} bytes read) inflates past the "
                                      f"{limit}-byte limit")
            if keep:
                parts.append(chunk)
    except zlib.error as exc:
        raise CannotUnderstand(f"deflated data set is not a valid DEFLATE stream: {exc}") from exc
    if not inflater.eof:
        raise CannotUnderstand("deflated data set ends before its last DEFLATE block")
    # Bytes after the end of the stream (pydicom pads an odd length with one byte) are ignored, as
    # zlib.decompress in pynetdicom/pydicom ignores them.
    return total, b"".join(parts)


def inflated_size(deflated: bytes, limit: int = MAX_INFLATED_DATASET) -> int:
    """Size a raw DEFLATE stream inflates to, counted in steps of 1 MiB that are not kept."""
    return _inflate(deflated, limit, keep=False)[0]


def inflate(deflated: bytes, limit: int = MAX_INFLATED_DATASET) -> bytes:
    """The inflated bytes; counted first, so a bomb is refused before anything is kept."""
    inflated_size(deflated, limit)
    return _inflate(deflated, limit, keep=True)[1]


def _raw(event: Any) -> io.BytesIO:
    return event.request.DataSet


def received_path(event: Any) -> Path | None:
    """The Part-10 file pynetdicom reassembled the C-STORE data set into, or None (held in memory)."""
    try:
        path = event.dataset_path
    except AttributeError:  # not a C-STORE
        return None
    return Path(path) if path else None


@contextmanager
def open_received(event: Any) -> Iterator[BinaryIO]:
    """The received C-STORE data set as a binary stream at its first element (file or memory)."""
    path = received_path(event)
    if path is None:
        raw = _raw(event)
        raw.seek(0)
        try:
            yield raw
        finally:
            raw.seek(0)
        return
    try:
        # pynetdicom wrote preamble + File Meta (from the command's UIDs) + the data set as received.
        _, offset = split_dataset(path)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on a malformed stream
        raise CannotUnderstand(f"received data set file cannot be read: {type(exc).__name__}") from exc
    with open(path, "rb") as fh:
        fh.seek(offset)
        yield fh


def check_inflated_size(event: Any, limit: int = MAX_INFLATED_DATASET) -> None:
    """Refuse (0xA7DF) a deflated C-STORE data set that inflates past ``limit``; other syntaxes pass."""
    if event.context.transfer_syntax.is_deflated:
        with open_received(event) as stream:
            _inflate(_stream_pieces(stream), limit, keep=False)


def decode_received(event: Any, *, stop_after: int | None = None, limit: int = MAX_INFLATED_DATASET) -> Dataset:
    """The C-STORE data set of ``event``, decoded like ``event.dataset`` but with bounded inflation.

    ``stop_after``: a tag; the elements after it are not read (the UIDs at the head of a data set cost
    nothing to read this way, and a data set on disk is not loaded).  Raises :class:`DatasetTooLarge`
    or :class:`CannotUnderstand`.
    """
    ts = event.context.transfer_syntax
    stop = (lambda tag, *_: tag > stop_after) if stop_after is not None else None
    try:
        with open_received(event) as stream:
            if ts.is_deflated:
                # Explicit VR Little Endian once inflated (PS3.5 A.5); counted first, then kept
                start = stream.tell()
                _inflate(_stream_pieces(stream), limit, keep=False)
                stream.seek(start)
                inflated = _inflate(_stream_pieces(stream), limit, keep=True)[1]
                ds = read_dataset(io.BytesIO(inflated), False, True, stop_when=stop)
                ds.set_original_encoding(False, True)
                return ds
            # defer_size None (the default): values are read now, the stream may close after.
            ds = read_dataset(stream, ts.is_implicit_VR, ts.is_little_endian, stop_when=stop)
            ds.set_original_encoding(ts.is_implicit_VR, ts.is_little_endian)
            return ds
    except (DatasetTooLarge, CannotUnderstand):
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on a malformed stream
        raise CannotUnderstand(f"data set cannot be decoded: {type(exc).__name__}") from exc


#: pynetdicom reassembles into ``NamedTemporaryFile(suffix=".dcm")`` in the default temporary directory.
REASSEMBLY_PATTERN = "tmp*.dcm"


@contextmanager
def disk_reassembly(directory: Path) -> Iterator[Path]:
    """While inside: C-STORE data sets are reassembled into files in ``directory`` (not in memory).

    pynetdicom's switch (``_config.STORE_RECV_CHUNKED_DATASET``) is a module global and its file a
    ``NamedTemporaryFile`` in the default temporary directory (``tempfile.tempdir``): both are
    process-wide.  The listener process (``manage.py xds_dicom_listener``) runs inside this for its
    whole life; a process that also runs C-GET must not (that SCU reads its data sets from memory).
    Files left by a previous process (killed mid-transfer) are removed on entry, as are ours on exit.
    """
    directory.mkdir(parents=True, exist_ok=True)
    sweep_reassembly(directory, max_age=0)
    saved = tempfile.tempdir, pynetdicom_config.STORE_RECV_CHUNKED_DATASET
    tempfile.tempdir = str(directory)
    pynetdicom_config.STORE_RECV_CHUNKED_DATASET = True
    try:
        yield directory
    finally:
        tempfile.tempdir, pynetdicom_config.STORE_RECV_CHUNKED_DATASET = saved
        sweep_reassembly(directory, max_age=0)


def sweep_reassembly(directory: Path, *, max_age: float) -> int:
    """Remove reassembly files in ``directory`` not written to for ``max_age`` seconds; how many."""
    removed, now = 0, time.time()
    for leftover in directory.glob(REASSEMBLY_PATTERN):
        try:
            if now - leftover.stat().st_mtime >= max_age:
                leftover.unlink()
                removed += 1
        except FileNotFoundError:
            pass
    if removed:
        logger.info("dicom reassembly files removed=%d dir=%s", removed, directory)
    return removed


def discard_partial(assoc: Any) -> None:
    """Close and remove the file of a C-STORE data set the association ended in the middle of.

    pynetdicom removes a reassembly file after the C-STORE handler ran; a data set whose last
    fragment never came (the peer aborted, the network or PDU guard dropped it) stays behind as the
    DIMSE provider's unfinished message.
    """
    message = getattr(getattr(assoc, "dimse", None), "message", None)
    handle = getattr(message, "_data_set_file", None)
    if handle is None:
        return
    message._data_set_file = None
    try:
        handle.close()
    finally:
        Path(handle.name).unlink(missing_ok=True)


def move_received(event: Any, target: Path) -> bool:
    """Move the reassembled Part-10 file of ``event`` to ``target`` (a rename on the same file system);
    False if the data set is in memory.  pynetdicom's own removal afterwards finds nothing (and says
    nothing)."""
    path = received_path(event)
    if path is None:
        return False
    shutil.move(path, target)
    return True


def sop_instance_uid_of(ds: Dataset) -> str:
    """(0008,0018) SOP Instance UID of a received data set; :class:`CannotUnderstand` if absent or unreadable."""
    try:
        value = ds.get("SOPInstanceUID")
    except Exception as exc:  # noqa: BLE001 - values are decoded lazily, on first access
        raise CannotUnderstand(f"SOP Instance UID (0008,0018) cannot be decoded: {type(exc).__name__}") from exc
    if not value:
        raise CannotUnderstand("data set without SOP Instance UID (0008,0018)")
    return str(value)


__all__ = ["MAX_INFLATED_DATASET", "check_inflated_size", "decode_received", "discard_partial", "disk_reassembly",
           "inflate", "inflated_size", "move_received", "open_received", "received_path", "sop_instance_uid_of",
           "sweep_reassembly"]
