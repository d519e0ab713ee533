"""Reading a data set a peer sent us in a C-STORE, with a bound on what a deflated one may inflate to.

Deflated Explicit VR Little Endian (1.2.840.10008.1.2.1.99, PS3.5 A.5) is a raw DEFLATE stream
(RFC 1951).  pynetdicom's ``event.dataset`` (``dsutils.decode``) and pydicom's ``dcmread`` inflate it
with one ``zlib.decompress`` call: a few kB of zeros from a peer become hundreds of MB in our process
(issue 15: 63 KiB inflated to ~130 MB).  Here a deflated data set is first inflated in bounded steps
(``zlib.decompressobj().decompress(data, max_length)``) with the output counted and thrown away, and
refused past :data:`MAX_INFLATED_DATASET` before anything holds it inflated; only then is it decoded.

The other transfer syntaxes are decoded as pynetdicom does (their size is what the peer sent).
"""

from __future__ import annotations

import io
import zlib
from typing import Any

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset

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


def _inflate(deflated: bytes, limit: int, *, keep: bool) -> tuple[int, bytes]:
    """(inflated size, inflated bytes if ``keep`` else b"") of a raw DEFLATE stream (RFC 1951).

    Never holds more than ``limit`` + one step of output: :class:`DatasetTooLarge` (0xA7DF) once the
    output passes ``limit``; :class:`CannotUnderstand` (0xC000) for a corrupt or truncated stream.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # raw DEFLATE, no zlib header (PS3.5 A.5)
    view = memoryview(deflated)
    pos, total = 0, 0
    pending: bytes | memoryview = b""
    parts: list[bytes] = []
    try:
        while not inflater.eof:
            if not pending and pos < len(view):
                pending, pos = view[pos:pos + _INPUT_STEP], pos + _INPUT_STEP
            chunk = inflater.decompress(pending, _OUTPUT_STEP)
            pending = inflater.unconsumed_tail
            if not chunk and not pending and pos >= len(view):
                break  # input exhausted without the final block: truncated
            total += len(chunk)
            if total > limit:
                raise DatasetTooLarge(f"deflated data set of {len(deflated)} bytes inflates past the "
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


def check_inflated_size(event: Any, limit: int = MAX_INFLATED_DATASET) -> None:
    """Refuse (0xA7DF) a deflated C-STORE data set that inflates past ``limit``; other syntaxes pass."""
    if event.context.transfer_syntax.is_deflated:
        inflated_size(_raw(event).getvalue(), limit)


def decode_received(event: Any, *, stop_after: int | None = None, limit: int = MAX_INFLATED_DATASET) -> Dataset:
    """The C-STORE data set of ``event``, decoded like ``event.dataset`` but with bounded inflation.

    ``stop_after``: a tag; the elements after it are not read (the UIDs at the head of a data set cost
    nothing to read this way).  Raises :class:`DatasetTooLarge` or :class:`CannotUnderstand`.
    """
    ts = event.context.transfer_syntax
    raw = _raw(event)
    stop = (lambda tag, *_: tag > stop_after) if stop_after is not None else None
    try:
        if ts.is_deflated:
            # Explicit VR Little Endian once inflated (PS3.5 A.5)
            ds = read_dataset(io.BytesIO(inflate(raw.getvalue(), limit)), False, True, stop_when=stop)
            ds.set_original_encoding(False, True)
            return ds
        raw.seek(0)
        try:
            ds = read_dataset(raw, ts.is_implicit_VR, ts.is_little_endian, stop_when=stop)
        finally:
            raw.seek(0)
        ds.set_original_encoding(ts.is_implicit_VR, ts.is_little_endian)
        return ds
    except (DatasetTooLarge, CannotUnderstand):
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on a malformed stream
        raise CannotUnderstand(f"data set cannot be decoded: {type(exc).__name__}") from exc


def sop_instance_uid_of(ds: Dataset) -> str:
    """(0008,0018) SOP Instance UID of a received data set; :class:`CannotUnderstand` if absent or unreadable."""
    try:
        value = ds.get("SOPInstanceUID")
    except Exception as exc:  # noqa: BLE001 - values are decoded lazily, on first access
        raise CannotUnderstand(f"SOP Instance UID (0008,0018) cannot be decoded: {type(exc).__name__}") from exc
    if not value:
        raise CannotUnderstand("data set without SOP Instance UID (0008,0018)")
    return str(value)


__all__ = ["MAX_INFLATED_DATASET", "check_inflated_size", "decode_received", "inflate", "inflated_size",
           "sop_instance_uid_of"]
