"""Reading MTOM/XOP and plain SOAP messages incrementally (XOP 1.0, RFC 2387, RFC 2046 5.1.1).

:func:`read_message` takes the HTTP ``Content-Type`` and a binary stream (``wsgi.input``, a
``requests`` raw response, ...) and returns the SOAP root part - found by the ``start``
parameter, or the first part when ``start`` is absent (RFC 2387 3.2) - plus every other MIME
part as an :class:`~xds_core.soap.mtom.Attachment`, spilled to a file past a threshold while
its SHA-1 and size are computed.  Sizes are bounded (whole message, XML root, part headers), and
so is memory: the XML root's markup is counted as it arrives (``max_xml_nodes``, before any tree
exists) and the parts kept in memory share one budget per message (``memory_budget``), past which
every part spills, however small.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO, Protocol

from xds_core.safe_xml import markup_count, markup_refusal
from xds_core.soap.mtom import (
    CHUNK_SIZE,
    DEFAULT_MEMORY_BUDGET,
    MAX_PART_HEADER_SIZE,
    MEMORY_THRESHOLD,
    MULTIPART_RELATED,
    SOAP11_MEDIA_TYPE,
    SOAP_MEDIA_TYPE,
    XOP_MEDIA_TYPE,
    Attachment,
    IncomingMessage,
    MessageTooLarge,
    MtomError,
    UnsupportedMediaType,
    normalize_cid,
    parse_content_type,
)


class _Input:
    """Bounded chunked reads from the request stream.

    Honours ``content_length`` (reads exactly that much, a short body is a
    truncation) or reads to EOF when it is ``None`` (chunked transfer); stops
    as soon as ``max_size`` is exceeded.
    """

    def __init__(self, stream: BinaryIO, content_length: int | None, max_size: int) -> None:
        if content_length is not None and content_length > max_size:
            raise MessageTooLarge(f"request body of {content_length} bytes exceeds the limit of {max_size} bytes")
        self.stream = stream
        self.remaining = content_length
        self.max_size = max_size
        self.total = 0

    def read(self) -> bytes:
        """Next chunk; ``b""`` at the end of the body."""
        if self.remaining is not None:
            want = min(CHUNK_SIZE, self.remaining)
            if want == 0:
                return b""
        else:
            # One byte past the limit is enough to know it is exceeded.
            want = min(CHUNK_SIZE, self.max_size - self.total + 1)
        data = self.stream.read(want)
        if not data:
            if self.remaining:
                raise MtomError(f"request body truncated: {self.remaining} of the announced bytes never arrived")
            return b""
        self.total += len(data)
        if self.remaining is not None:
            self.remaining -= len(data)
        if self.total > self.max_size:
            raise MessageTooLarge(f"request body exceeds the limit of {self.max_size} bytes")
        return data

    def drain(self) -> None:
        while self.read():
            pass


class _Sink(Protocol):
    def write(self, data: bytes | bytearray) -> None: ...


class _MemoryBudget:
    """The bytes of non-root parts one message may still keep in memory."""

    def __init__(self, available: int) -> None:
        self.available = available


class _PartSink:
    """Collects one part: SHA-1 and size on the fly, memory then a spill file.

    A spillable part stays in memory while it is below :data:`MEMORY_THRESHOLD` *and* within what
    the message's :class:`_MemoryBudget` has left; the XML root is never hashed (nothing reads its
    SHA-1) and, with ``max_nodes``, has its markup counted chunk by chunk as it arrives.
    """

    def __init__(self, *, limit: int | None, spill: bool, spool_dir: str | None, what: str,
                 budget: _MemoryBudget | None = None, max_nodes: int | None = None, hashed: bool = True) -> None:
        self.limit = limit
        self.spill = spill
        self.spool_dir = spool_dir
        self.what = what
        self.budget = budget
        self.max_nodes = max_nodes
        self.nodes = 0
        self.sha1 = hashlib.sha1() if hashed else None
        self.size = 0
        self.memory: bytearray | None = bytearray()
        # A part that never spills (the XML root) is kept as the chunks it arrived in and joined once:
        # one copy instead of a growing bytearray's reallocations plus a final copy.
        self.pieces: list[bytes] | None = None if spill else []
        self.file: BinaryIO | None = None
        self.path: Path | None = None

    def write(self, data: bytes | bytearray) -> None:
        if not data:
            return
        self.size += len(data)
        if self.limit is not None and self.size > self.limit:
            raise MessageTooLarge(f"{self.what} exceeds the limit of {self.limit} bytes")
        if self.max_nodes is not None:
            # A tree costs ~30x the bytes of dense markup: refused while reading, before parsing.
            self.nodes += markup_count(data)
            if self.nodes > self.max_nodes:
                raise MessageTooLarge(f"{self.what}: {markup_refusal(self.nodes, self.max_nodes)}")
        if self.sha1 is not None:
            self.sha1.update(data)
        if self.file is not None:
            self.file.write(data)
            return
        if self.pieces is not None:
            self.pieces.append(bytes(data))
            return
        assert self.memory is not None
        self.memory += data
        if self.spill and len(self.memory) > min(
                MEMORY_THRESHOLD, self.budget.available if self.budget is not None else MEMORY_THRESHOLD):
            fd, name = tempfile.mkstemp(prefix=f"xds-part-{os.getpid()}-", suffix=".bin", dir=self.spool_dir)
            self.path = Path(name)
            self.file = os.fdopen(fd, "wb", buffering=0)
            self.file.write(self.memory)
            self.memory = None

    def finish(self) -> None:
        if self.file is not None:
            self.file.close()
        elif self.spill and self.budget is not None and self.memory is not None:
            self.budget.available -= len(self.memory)  # kept in memory until the message is closed

    def discard(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)
        self.memory = None
        self.pieces = None

    def bytes(self) -> bytes:
        assert self.pieces is not None
        return b"".join(self.pieces)

    def attachment(self, content_id: str, content_type: str) -> Attachment:
        data = None if self.memory is None else bytes(self.memory)
        assert self.sha1 is not None
        return Attachment(content_id, content_type, self.size, self.sha1.hexdigest(), self.path, data)


class _Base64Sink:
    """Decodes a ``Content-Transfer-Encoding: base64`` part on the fly."""

    _WHITESPACE = b" \t\r\n"

    def __init__(self, target: _PartSink) -> None:
        self.target = target
        self.pending = b""

    def write(self, data: bytes | bytearray) -> None:
        text = self.pending + bytes(data).translate(None, self._WHITESPACE)
        usable = len(text) - len(text) % 4
        self.pending = text[usable:]
        if usable:
            self._decode(text[:usable])

    def finish(self) -> None:
        if self.pending:
            raise MtomError("base64 part content has a truncated final quantum")

    def _decode(self, text: bytes) -> None:
        try:
            self.target.write(base64.b64decode(text, validate=True))
        except binascii.Error as exc:
            raise MtomError(f"invalid base64 in a MIME part: {exc}") from None


class _MultipartReader:
    """RFC 2046 multipart parser over an :class:`_Input`, one part at a time."""

    def __init__(self, source: _Input, boundary: bytes) -> None:
        self.source = source
        self.boundary = boundary
        # RFC 2046 5.1.1 requires CRLF.  Some senders write bare LF (e.g. message files
        # assembled on Unix); the line ending of the first delimiter line decides which one
        # this message uses, so both parse, and a message never mixes them.
        self.newline = b"\r\n"
        self.delimiter = b"\r\n--" + boundary
        self._newline_known = False
        # A virtual CRLF lets a first delimiter at offset 0 (no preamble) match
        # the same pattern as every later one.
        self.buf = bytearray(b"\r\n")

    def _fill(self) -> bool:
        data = self.source.read()
        if not data:
            return False
        self.buf += data
        return True

    def _need(self, n: int) -> None:
        while len(self.buf) < n:
            if not self._fill():
                raise MtomError("multipart body truncated: the closing boundary is missing")

    def skip_preamble(self) -> None:
        first = b"\n--" + self.boundary  # matches after CRLF and after a bare LF
        keep = len(first) - 1
        while True:
            i = self.buf.find(first)
            if i >= 0:
                del self.buf[: i + len(first)]
                return
            if len(self.buf) > keep:
                del self.buf[: len(self.buf) - keep]
            if not self._fill():
                raise MtomError("multipart body contains no boundary delimiter (wrong boundary parameter?)")

    def next_headers(self) -> dict[str, str] | None:
        """After a delimiter: the next part's headers, or ``None`` at the close delimiter."""
        self._need(2)
        if self.buf[:2] == b"--":
            return None
        # Transport padding (RFC 2046: LWSP) up to the line end of the delimiter line.
        while (eol := self.buf.find(b"\n")) < 0:
            if len(self.buf) > 1024:
                raise MtomError("malformed multipart delimiter line")
            self._need(len(self.buf) + 1)
        crlf = eol > 0 and self.buf[eol - 1] == 0x0D
        if not self._newline_known:
            self._newline_known = True
            if not crlf:
                self.newline = b"\n"
                self.delimiter = b"\n--" + self.boundary
        elif crlf != (self.newline == b"\r\n"):
            raise MtomError("malformed multipart delimiter line (mixed line endings)")
        if self.buf[: eol - 1 if crlf else eol].strip(b" \t"):
            raise MtomError("malformed multipart delimiter line")
        del self.buf[: eol + 1]
        newline = self.newline
        self._need(len(newline))
        if self.buf[: len(newline)] == newline:  # a part without headers
            del self.buf[: len(newline)]
            return {}
        blank = newline + newline
        while (end := self.buf.find(blank)) < 0:
            if len(self.buf) > MAX_PART_HEADER_SIZE:
                raise MtomError("MIME part headers too large")
            self._need(len(self.buf) + 1)
        if end > MAX_PART_HEADER_SIZE:
            raise MtomError("MIME part headers too large")
        raw = bytes(self.buf[:end])
        del self.buf[: end + len(blank)]
        return _parse_part_headers(raw, newline)

    def copy_body(self, sink: _Sink) -> None:
        """Write the current part's content to ``sink`` up to the next delimiter."""
        delimiter = self.delimiter
        keep = len(delimiter) - 1
        while True:
            i = self.buf.find(delimiter)
            if i >= 0:
                if i:
                    sink.write(self.buf[:i])
                del self.buf[: i + len(delimiter)]
                return
            if len(self.buf) > keep:
                cut = len(self.buf) - keep
                sink.write(self.buf[:cut])
                del self.buf[:cut]
            if not self._fill():
                raise MtomError("multipart body truncated: the closing boundary is missing")


def _parse_part_headers(raw: bytes, newline: bytes = b"\r\n") -> dict[str, str]:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    headers: dict[str, str] = {}
    name = ""
    for line in text.split(newline.decode("ascii")):
        if line[:1] in (" ", "\t") and name:  # folded continuation
            headers[name] += " " + line.strip()
            continue
        key, sep, value = line.partition(":")
        if not sep or not key.strip():
            raise MtomError(f"malformed MIME part header line {line[:80]!r}")
        name = key.strip().lower()
        headers[name] = value.strip()
    return headers


def read_message(
    content_type: str,
    stream: BinaryIO,
    *,
    content_length: int | None,
    max_size: int,
    max_xml_size: int,
    spool_dir: str | None = None,
    on_part: Callable[[Attachment], None] | None = None,
    max_xml_nodes: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> IncomingMessage:
    """Read one SOAP message (plain or MTOM) from ``stream``.

    :param content_type: the HTTP Content-Type header.
    :param content_length: exact body length, or ``None`` to read to EOF.
    :param max_size: largest body accepted; reading stops once it is exceeded.
    :param max_xml_size: largest SOAP root part accepted.
    :param spool_dir: directory of spill files (default: the system temp dir).
    :param on_part: called with each non-root part as soon as it is complete (its closing delimiter
        read), before the rest of the message arrives: a consumer may use what came before a drop.
    :param max_xml_nodes: largest markup count (:func:`~xds_core.safe_xml.markup_count`) of the SOAP
        root part, counted as it arrives; past it :class:`MessageTooLarge`, like a root part past
        ``max_xml_size``.  ``None``: not counted.
    :param memory_budget: total bytes of non-root parts kept in memory; every part that would take
        the message past it spills to a file (each part also spills past ``MEMORY_THRESHOLD``).
    :raises MtomError: (or :class:`MessageTooLarge` / :class:`UnsupportedMediaType`).
        Spill files of a refused message are removed before raising.
    """
    media_type, params = parse_content_type(content_type)
    source = _Input(stream, content_length, max_size)
    if media_type in (SOAP_MEDIA_TYPE, SOAP11_MEDIA_TYPE):
        sink = _PartSink(limit=max_xml_size, spill=False, spool_dir=None, what="SOAP message",
                         max_nodes=max_xml_nodes, hashed=False)
        while data := source.read():
            sink.write(data)
        return IncomingMessage(sink.bytes(), content_type, False, {})
    if media_type != MULTIPART_RELATED:
        raise UnsupportedMediaType(
            f"unsupported Content-Type {content_type!r}: expected {SOAP_MEDIA_TYPE} or "
            f"{MULTIPART_RELATED} with type=\"{XOP_MEDIA_TYPE}\" (SOAP 1.2 / MTOM)")
    package_type = params.get("type", "").strip().lower()
    if package_type not in ("", XOP_MEDIA_TYPE, SOAP_MEDIA_TYPE):
        raise UnsupportedMediaType(f"multipart/related of type {package_type!r}: expected {XOP_MEDIA_TYPE}")
    boundary = params.get("boundary", "")
    if not boundary:
        raise MtomError("multipart/related Content-Type without a boundary parameter")
    if len(boundary) > 70:  # RFC 2046 §5.1.1
        raise MtomError("multipart boundary longer than 70 characters")
    # RFC 2387 3.2: ``start`` is the root's Content-ID (a msg-id, "<...>"; taken with or without
    # the angle brackets); only when it is absent is the first body part the root.  A ``start``
    # that names no part is refused (by _read_multipart, once every part is seen), as is an empty
    # one, which would otherwise match a part without a Content-ID.
    start = normalize_cid(params["start"]) if "start" in params else None
    if start == "":
        raise MtomError("multipart/related Content-Type with an empty start parameter (RFC 2387 3.2: "
                        "the root part's Content-ID)")
    return _read_multipart(source, boundary.encode("latin-1"), start, max_xml_size, spool_dir, on_part,
                           max_xml_nodes=max_xml_nodes, budget=_MemoryBudget(memory_budget))


def _read_multipart(source: _Input, boundary: bytes, start: str | None, max_xml_size: int,
                    spool_dir: str | None, on_part: Callable[[Attachment], None] | None = None, *,
                    max_xml_nodes: int | None = None, budget: _MemoryBudget | None = None) -> IncomingMessage:
    reader = _MultipartReader(source, boundary)
    attachments: dict[str, Attachment] = {}
    root: bytes | None = None
    root_type = ""
    current: _PartSink | None = None
    try:
        reader.skip_preamble()
        index = 0
        while (headers := reader.next_headers()) is not None:
            content_id = normalize_cid(headers.get("content-id", ""))
            part_type = headers.get("content-type", "application/octet-stream")
            encoding = headers.get("content-transfer-encoding", "binary").strip().lower()
            is_root = (content_id == start) if start is not None else (index == 0 and root is None)
            if is_root and root is not None:
                raise MtomError("two MIME parts carry the root Content-ID")
            current = _PartSink(limit=max_xml_size if is_root else None, spill=not is_root,
                                spool_dir=spool_dir, what="SOAP root part", budget=None if is_root else budget,
                                max_nodes=max_xml_nodes if is_root else None, hashed=not is_root)
            if encoding in ("binary", "8bit", "7bit"):
                reader.copy_body(current)
            elif encoding == "base64":
                decoder = _Base64Sink(current)
                reader.copy_body(decoder)
                decoder.finish()
            else:
                raise MtomError(f"unsupported Content-Transfer-Encoding {encoding!r}")
            current.finish()
            if is_root:
                root, root_type = current.bytes(), part_type
            else:
                if not content_id:
                    content_id = f"part-{index}"  # unreferenceable, but harmless
                if content_id in attachments:
                    raise MtomError(f"duplicate Content-ID {content_id!r}")
                attachments[content_id] = current.attachment(content_id, part_type)
                if on_part is not None:
                    current = None  # the attachment is in ``attachments``: closed there on failure
                    on_part(attachments[content_id])
            current = None
            index += 1
        source.drain()  # the epilogue: ignored, but consumed (and still size-limited)
        if root is None:
            raise MtomError(f"the root part is missing: no MIME part has the Content-ID <{start}> that the start "
                            f"parameter names (RFC 2387 3.2)" if start else "multipart body has no parts")
    except BaseException:
        if current is not None:
            current.discard()
        for attachment in attachments.values():
            attachment.close()
        raise
    return IncomingMessage(root, root_type, True, attachments)


class IteratorReader(io.RawIOBase):
    """A read-only binary stream over an iterator of byte chunks."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        super().close()
