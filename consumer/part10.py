"""Checking a DICOM Part 10 file (PS3.10 7.1) before it is stored or counted as present.

:func:`read_identity` walks the file's element headers (PS3.5 7.1: tag, VR, length come before each
value) without decoding values, except the two it returns: a large image costs a few hundred header
reads and seeks, never its pixels, and no dataset is built.  A file is *complete* when the preamble
and ``DICM`` prefix are there (PS3.10 7.1), the File Meta Information has its group length and
Transfer Syntax UID, every element, sequence item and encapsulated fragment ends inside the file, and
the last one ends exactly at its end (a truncated transfer or a crash mid-write fails).

The walk covers the little-endian syntaxes every archive uses (Implicit VR, Explicit VR and all
encapsulated ones, PS3.5 A.1-A.4); Deflated (A.5) and the retired Explicit VR Big Endian are read with
pydicom instead.  All input is hostile: lengths are checked against the file size before any seek,
nesting depth and element count are bounded.
"""

from __future__ import annotations

import io
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

_UNDEFINED_LENGTH = 0xFFFFFFFF
#: PS3.5 7.1.2: explicit VRs whose length is 4 bytes after 2 reserved ones (Table 7.1-1).
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_SOP_CLASS, _SOP_INSTANCE = 0x00080016, 0x00080018
_IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
_EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
_DEFLATED = ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1")  # Deflated Explicit VR LE, Deflated Image Frame
#: Bounds for hostile input: sequences nest at most this deep, a file has at most this many elements.
MAX_DEPTH = 32
MAX_ELEMENTS = 2_000_000
#: A UID value longer than this is not a UID (PS3.5 9.1: 64 characters; padding allowed).
_MAX_UID_VALUE = 66
_HEADER = struct.Struct("<HH")
_EXPLICIT_HEADER = struct.Struct("<HH2sH")  # tag, VR, 2-byte length (PS3.5 7.1.2)
_IMPLICIT_HEADER = struct.Struct("<HHI")  # tag, 4-byte length (PS3.5 7.1.3)
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


class Part10Error(ValueError):
    """Not a complete DICOM Part 10 object; the message says what is wrong."""


def read_identity(source: Path | bytes) -> tuple[str, str]:
    """(SOP Instance UID, SOP Class UID) of the complete Part 10 object in ``source`` (a file, or its bytes).

    :raises Part10Error: no ``DICM`` prefix, no File Meta Information, malformed, truncated, or
        without the dataset's SOP Instance UID (0008,0018) / SOP Class UID (0008,0016).
    :raises OSError: the file cannot be read.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        return _identity(memoryview(source))
    with open(source, "rb") as fp:
        size = os.fstat(fp.fileno()).st_size
        if size == 0:
            raise Part10Error("not a DICOM Part 10 file: it is empty")
        # Mapped, not read: the walk touches the pages of the element headers only, never the pixels.
        with mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ) as mapped, memoryview(mapped) as view:
            try:
                return _identity(view)
            finally:
                view.release()


@dataclass(frozen=True)
class Part10Layout:
    """Where things are in a complete Part 10 object (little-endian, not deflated): for splicing it."""

    dataset_start: int
    transfer_syntax: str
    implicit_vr: bool
    #: (tag, start, end) of each top-level element of the dataset, in file order.
    elements: list[tuple[int, int, int]]
    sop_instance_uid: str
    sop_class_uid: str


class UnsupportedLayout(Part10Error):
    """A Deflated or Explicit VR Big Endian object: complete perhaps, but not walked (read it with pydicom)."""


def read_layout(data: bytes | memoryview) -> Part10Layout:
    """The layout of the complete Part 10 object ``data``; :class:`Part10Error` as for :func:`read_identity`,
    :class:`UnsupportedLayout` for the syntaxes the walk does not cover."""
    buffer = memoryview(data)
    start, transfer_syntax = _read_file_meta(buffer)
    if transfer_syntax == _EXPLICIT_VR_BIG_ENDIAN or transfer_syntax in _DEFLATED:
        raise UnsupportedLayout(f"transfer syntax {transfer_syntax} is not walked")
    spans: list[tuple[int, int, int]] = []
    implicit = transfer_syntax == _IMPLICIT_VR_LITTLE_ENDIAN
    walk = _Walk(buffer, start, spans)
    walk.dataset(implicit=implicit, depth=0, nested=False)
    sop_instance, sop_class = walk.found.get(_SOP_INSTANCE, ""), walk.found.get(_SOP_CLASS, "")
    if not (sop_instance and sop_class):
        raise Part10Error("no SOP Instance UID (0008,0018) or SOP Class UID (0008,0016) in the dataset")
    return Part10Layout(start, transfer_syntax, implicit, spans, sop_instance, sop_class)


def _identity(buffer: memoryview) -> tuple[str, str]:
    start, transfer_syntax = _read_file_meta(buffer)
    if transfer_syntax == _EXPLICIT_VR_BIG_ENDIAN or transfer_syntax in _DEFLATED:
        return _read_identity_with_pydicom(bytes(buffer))
    walk = _Walk(buffer, start)
    walk.dataset(implicit=transfer_syntax == _IMPLICIT_VR_LITTLE_ENDIAN, depth=0, nested=False)
    sop_instance, sop_class = walk.found.get(_SOP_INSTANCE, ""), walk.found.get(_SOP_CLASS, "")
    if not (sop_instance and sop_class):
        raise Part10Error("no SOP Instance UID (0008,0018) or SOP Class UID (0008,0016) in the dataset")
    return sop_instance, sop_class


def _read_file_meta(buffer: memoryview) -> tuple[int, str]:
    """Check the preamble, prefix and File Meta Information (always Explicit VR Little Endian, PS3.10 7.1);
    return where the dataset starts and its Transfer Syntax UID."""
    size = len(buffer)
    if size < 144 or bytes(buffer[128:132]) != b"DICM":
        raise Part10Error("not a DICOM Part 10 file: no 128-byte preamble and 'DICM' prefix (PS3.10 7.1)")
    if bytes(buffer[132:138]) != b"\x02\x00\x00\x00UL":
        raise Part10Error("no File Meta Information Group Length (0002,0000) first in the File Meta Information "
                          "(PS3.10 7.1)")
    meta_end = 144 + _U32.unpack_from(buffer, 140)[0]
    if meta_end > size:
        raise Part10Error(f"truncated: the File Meta Information ends at byte {meta_end}, the file has {size}")
    transfer_syntax = ""
    pos = 144
    while pos < meta_end:
        if pos + 8 > meta_end:
            raise Part10Error("truncated in the File Meta Information")
        group, element = _HEADER.unpack_from(buffer, pos)
        vr = bytes(buffer[pos + 4:pos + 6])
        if vr in _LONG_VRS:
            if pos + 12 > meta_end:
                raise Part10Error("truncated in the File Meta Information")
            length, pos = _U32.unpack_from(buffer, pos + 8)[0], pos + 12
        else:
            length, pos = _U16.unpack_from(buffer, pos + 6)[0], pos + 8
        if group != 0x0002 or pos + length > meta_end:
            raise Part10Error(f"malformed File Meta Information at ({group:04X},{element:04X})")
        if element == 0x0010:
            transfer_syntax = bytes(buffer[pos:pos + length]).rstrip(b"\x00 ").decode("ascii", "replace")
        pos += length
    if not transfer_syntax:
        raise Part10Error("no Transfer Syntax UID (0002,0010) in the File Meta Information (PS3.10 7.1)")
    return meta_end, transfer_syntax


class _Walk:
    """The element headers of a dataset in ``buffer`` from ``pos``; values skipped (the SOP UIDs excepted).
    With ``spans``, each top-level element's (tag, start, end) is recorded there."""

    def __init__(self, buffer: memoryview, pos: int, spans: list[tuple[int, int, int]] | None = None) -> None:
        self.buffer, self.pos, self.size = buffer, pos, len(buffer)
        self.count = 0
        self.found: dict[int, str] = {}
        self.spans = spans

    def _need(self, n: int) -> None:
        if self.pos + n > self.size:
            raise Part10Error(f"truncated: an element runs past the end of the file ({self.size} bytes)")

    def dataset(self, *, implicit: bool, depth: int, nested: bool) -> None:
        """Elements until the end of the file (top level) or the item delimiter (an item of undefined
        length).  The hot loop of the consumer: locals only, one struct call per element header."""
        if depth > MAX_DEPTH:
            raise Part10Error(f"sequences nested deeper than {MAX_DEPTH}")
        buffer, size, found = self.buffer, self.size, self.found
        spans = self.spans if depth == 0 else None
        header = _IMPLICIT_HEADER.unpack_from if implicit else _EXPLICIT_HEADER.unpack_from
        u32 = _U32.unpack_from
        pos, count = self.pos, self.count
        while True:
            if not nested and pos == size:
                self.pos, self.count = pos, count
                return
            if pos + 8 > size:
                raise Part10Error(f"truncated: an element header runs past the end of the file ({size} bytes)")
            count += 1
            if count > MAX_ELEMENTS:
                raise Part10Error(f"more than {MAX_ELEMENTS} elements")
            if implicit:
                group, element, length = header(buffer, pos)
                vr = b""
                value = pos + 8
            else:
                group, element, vr, length = header(buffer, pos)
                value = pos + 8
                if vr in _LONG_VRS and group != 0xFFFE:
                    if pos + 12 > size:
                        raise Part10Error(f"truncated: an element header runs past the end of the file ({size} "
                                          "bytes)")
                    length, value = u32(buffer, pos + 8)[0], pos + 12
            if group == 0xFFFE:  # item / delimiters: 4-byte length, no VR (PS3.5 7.5)
                length = u32(buffer, pos + 4)[0]
                if nested and element == 0xE00D and length == 0:
                    self.pos, self.count = pos + 8, count
                    return
                raise Part10Error(f"unexpected ({group:04X},{element:04X}) in a dataset")
            if length == _UNDEFINED_LENGTH:
                # A sequence, encapsulated pixel data, or UN of undefined length (implicit VR inside,
                # PS3.5 6.2.2): items until the sequence delimiter.
                self.pos, self.count = value, count
                self.items(implicit=implicit or vr == b"UN", depth=depth + 1)
                if spans is not None:
                    spans.append((group << 16 | element, pos, self.pos))
                pos, count = self.pos, self.count
                continue
            end = value + length
            if end > size:
                raise Part10Error(f"truncated: an element ends at byte {end}, the file has {size} bytes")
            if group == 0x0008 and (element == 0x0016 or element == 0x0018) and depth == 0:
                if length > _MAX_UID_VALUE:
                    raise Part10Error(f"({group:04X},{element:04X}) of {length} bytes is not a UID")
                found[group << 16 | element] = bytes(buffer[value:end]).rstrip(b"\x00 ").decode("ascii", "replace")
            if spans is not None:
                spans.append((group << 16 | element, pos, end))
            pos = end

    def items(self, *, implicit: bool, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise Part10Error(f"sequences nested deeper than {MAX_DEPTH}")
        buffer = self.buffer
        while True:
            self._need(8)
            group, element = _HEADER.unpack_from(buffer, self.pos)
            tag = group << 16 | element
            length = _U32.unpack_from(buffer, self.pos + 4)[0]
            self.pos += 8
            self.count += 1
            if self.count > MAX_ELEMENTS:
                raise Part10Error(f"more than {MAX_ELEMENTS} elements")
            if tag == _SEQUENCE_END:
                return
            if tag != _ITEM:
                raise Part10Error(f"({group:04X},{element:04X}) where a sequence item or delimiter belongs")
            if length == _UNDEFINED_LENGTH:
                self.dataset(implicit=implicit, depth=depth + 1, nested=True)
            else:
                self._need(length)
                self.pos += length


def _read_identity_with_pydicom(data: bytes) -> tuple[str, str]:
    """Deflated and big-endian datasets: pydicom reads them (whole; they are rare)."""
    try:
        ds = dcmread(io.BytesIO(data))
        ds.PixelData if "PixelData" in ds else None  # noqa: B018 - the value read to its end
    except InvalidDicomError as exc:
        raise Part10Error(f"not a DICOM Part 10 file: {exc}") from None
    except Exception as exc:  # pydicom raises many types for garbage input
        raise Part10Error(f"unreadable DICOM: {type(exc).__name__}: {exc}") from None
    sop_instance = str(ds.get("SOPInstanceUID", "")).strip()
    sop_class = str(ds.get("SOPClassUID", "")).strip()
    if not (sop_instance and sop_class):
        raise Part10Error("no SOP Instance UID (0008,0018) or SOP Class UID (0008,0016) in the dataset")
    return sop_instance, sop_class
