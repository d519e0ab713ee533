"""Whole-part ``multipart/related`` splitting over a stream of chunks (RFC 2046 5.1).

The one incremental splitter for multipart answers whose parts fit in memory: a PACS's
WADO-RS answer (DICOM PS3.18 8.6.1.2; read by ``imaging_source.dicom.fetch``), an MTOM
answer read by the benchmarks.  It yields each part as ``(raw header block, body)``
where ``body`` is a :class:`memoryview` into the received chunk whenever the part lies
within one chunk (no copy; a part that straddles chunks is joined once).  The views stay
valid for as long as the caller keeps them: the splitter never writes to or resizes a
chunk it has been given, so a source may hand out fresh ``bytearray`` buffers filled by
``readinto`` (see :func:`read_chunks`).

:func:`xds_core.soap.mtom_reader.read_message` keeps its own reader on purpose: it accepts
unbounded attachments (gigabytes) that must be streamed piece by piece to spill files
while being hashed, base64-decoded and size-limited - a contract a whole-part iterator
cannot meet without holding each part in memory.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator
from typing import Protocol

#: Bytes per read from a response body (big reads: few Python round trips per MB).
READ_SIZE = 1024 * 1024

_BOUNDARY_RE = re.compile(r'boundary="?([^";,]+)"?', re.IGNORECASE)
_LENGTH_RE = re.compile(rb"(?im)^content-length:[ \t]*(\d+)[ \t]*\r?$")  # header lines end in CRLF

Buffer = bytes | bytearray | memoryview


class MultipartError(ValueError):
    """The body is not a well-formed multipart stream."""


class _ReadInto(Protocol):
    def readinto(self, buffer: memoryview, /) -> int | None: ...


def boundary_of(content_type: str) -> bytes:
    """The ``boundary`` parameter of a multipart Content-Type (:class:`MultipartError` if none)."""
    match = _BOUNDARY_RE.search(content_type)
    if not match:
        raise MultipartError(f"not a multipart Content-Type: {content_type!r}")
    return match.group(1).encode("ascii")


def read_chunks(stream: _ReadInto, size: int = READ_SIZE) -> Iterator[bytes | bytearray]:
    """The body of ``stream`` in chunks of at most ``size`` bytes, each as soon as it arrived.

    With ``read1`` (``http.client.HTTPResponse``, buffered files): whatever one receive
    returns, up to ``size`` - a slow sender's data is passed on at once instead of waiting
    for a full buffer.  Otherwise fresh buffers filled with ``readinto``.  Each chunk is
    handed out once and never written again, so views into it stay valid.
    """
    read1 = getattr(stream, "read1", None)
    if read1 is not None:
        while data := read1(size):
            yield data
        return
    while True:
        buffer = bytearray(size)
        view = memoryview(buffer)
        filled = 0
        while filled < size:
            n = stream.readinto(view[filled:])
            if not n:
                break
            filled += n
        view.release()
        if filled < size:
            del buffer[filled:]
        if filled:
            yield buffer
        if filled < size:
            return


class _Cursor:
    """A read position over a stream of chunks; hands out views, copies only across chunk edges."""

    __slots__ = ("_source", "obj", "pos")

    def __init__(self, chunks: Iterable[Buffer]) -> None:
        self._source = iter(chunks)
        self.obj: bytes | bytearray = b""
        self.pos = 0

    def _advance(self) -> bool:
        for chunk in self._source:
            if len(chunk):
                self.obj = chunk if isinstance(chunk, (bytes, bytearray)) else bytes(chunk)
                self.pos = 0
                return True
        return False

    def take(self, n: int) -> list[memoryview]:
        """Exactly ``n`` bytes, as views (one per chunk they span)."""
        pieces = []
        while n:
            avail = len(self.obj) - self.pos
            if not avail:
                if not self._advance():
                    raise MultipartError("multipart body ended inside a part")
                continue
            k = n if n < avail else avail
            pieces.append(memoryview(self.obj)[self.pos:self.pos + k])
            self.pos += k
            n -= k
        return pieces

    def take_bytes(self, n: int) -> bytes:
        pieces = self.take(n)
        return bytes(pieces[0]) if len(pieces) == 1 else b"".join(pieces)

    def scan(self, needle: bytes, limit: int | None = None) -> list[memoryview] | None:
        """The bytes up to ``needle`` (as views), consuming the needle; None at end of stream.

        :raises MultipartError: more than ``limit`` bytes before the needle (checked chunk by chunk,
            so at most one chunk past it is ever held)."""
        pieces: list[memoryview] = []
        held = 0
        keep = len(needle) - 1
        while True:
            found = self.obj.find(needle, self.pos)
            if found >= 0:
                if found > self.pos:
                    pieces.append(memoryview(self.obj)[self.pos:found])
                    held += found - self.pos
                self.pos = found + len(needle)
                _check_limit(held, limit)
                return pieces
            cut = max(self.pos, len(self.obj) - keep)
            if cut > self.pos:
                pieces.append(memoryview(self.obj)[self.pos:cut])
                held += cut - self.pos
                _check_limit(held, limit)
            tail = bytes(self.obj[cut:])  # shorter than the needle: it may start here and end in the next chunk
            if not self._advance():
                return None
            if len(self.obj) < keep:  # a tiny chunk: small enough to merge and search again
                self.obj = tail + bytes(self.obj)
                continue
            bridge = tail + bytes(self.obj[:keep])
            at = bridge.find(needle)
            if 0 <= at < len(tail):
                if at:
                    pieces.append(memoryview(tail)[:at])
                    held += at
                self.pos = at + len(needle) - len(tail)
                _check_limit(held, limit)
                return pieces
            if tail:
                pieces.append(memoryview(tail))
                held += len(tail)


def _check_limit(size: int, limit: int | None) -> None:
    if limit is not None and size > limit:
        raise MultipartError(f"multipart part larger than the limit of {limit} bytes")


def iter_parts(boundary: bytes, chunks: Iterable[Buffer], *, max_header_size: int = 16 * 1024,
               max_part_size: int | None = None) -> Iterator[tuple[bytes, memoryview]]:
    """Yield ``(raw header block, body)`` of each part, as soon as it is complete.

    ``body`` is a view into the received chunk when the part lies within one (no copy),
    else the part joined once.  When a part declares its Content-Length (Orthanc does)
    the body is taken without scanning it for the delimiter.  The header block starts
    with the CRLF ending the delimiter line and ends with the last header's CRLF.
    Raises :class:`MultipartError` on a body that ends inside a part or a part that does
    not end where its Content-Length says, and - with ``max_part_size`` - on a part larger than
    that (a declared Content-Length before any byte of it is held, else once the bytes read
    for it pass the limit): a whole part is held in memory, so a peer must not choose its size.
    """
    delimiter = b"\r\n--" + boundary
    dlen = len(delimiter)
    # A virtual CRLF lets a first delimiter at offset 0 (no preamble) match like the others.
    cursor = _Cursor(itertools.chain((b"\r\n",), chunks))
    if cursor.scan(delimiter) is None:
        return  # no part at all
    while True:
        # Fast path: the part's headers, its declared body and the next delimiter all lie
        # in the current chunk (most parts of a 1 MiB chunk) - index arithmetic, no copies.
        obj, pos = cursor.obj, cursor.pos
        if obj.startswith(b"\r\n", pos):
            end_of_headers = obj.find(b"\r\n\r\n", pos, pos + max_header_size)
            if end_of_headers > pos:
                headers = bytes(obj[pos:end_of_headers + 2])
                declared = _LENGTH_RE.search(headers)
                if declared:
                    _check_limit(int(declared.group(1)), max_part_size)
                    body_start = end_of_headers + 4
                    end = body_start + int(declared.group(1))
                    if end + dlen <= len(obj) and obj.startswith(delimiter, end):
                        cursor.pos = end + dlen
                        yield headers, memoryview(obj)[body_start:end]
                        continue
        lead = cursor.take_bytes(2)
        if lead == b"--":
            return  # close delimiter
        if lead == b"\r\n" and cursor.obj[cursor.pos:cursor.pos + 2] == b"\r\n":
            cursor.pos += 2
            headers, length = b"", None  # a part without headers
        else:
            found = cursor.scan(b"\r\n\r\n")
            if found is None:
                raise MultipartError("multipart body ended inside a part's headers")
            headers = lead + b"".join(found) + b"\r\n"
            if len(headers) > max_header_size:
                raise MultipartError("multipart part headers too large")
            declared = _LENGTH_RE.search(headers)
            length = int(declared.group(1)) if declared else None
        if length is not None:
            _check_limit(length, max_part_size)
            pieces = cursor.take(length)
            if cursor.take_bytes(dlen) != delimiter:
                raise MultipartError("multipart part does not end where its Content-Length says")
        else:
            scanned = cursor.scan(delimiter, max_part_size)
            if scanned is None:
                raise MultipartError("multipart body ended inside a part")
            pieces = scanned
        if len(pieces) == 1:
            yield headers, pieces[0]
        else:
            yield headers, memoryview(b"".join(pieces))
