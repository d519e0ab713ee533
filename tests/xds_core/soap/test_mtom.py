"""MTOM/XOP: incremental reading, streaming writing, and clean refusals."""

from __future__ import annotations

import base64
import hashlib
import io
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from xds_core.soap.mtom import (
    CHUNK_SIZE,
    MEMORY_THRESHOLD,
    Attachment,
    MessageTooLarge,
    MtomError,
    OutgoingPart,
    UnsupportedMediaType,
    cid_href,
    joined,
    normalize_cid,
    parse_content_type,
    write_message,
    write_message_root_last,
)
from xds_core.soap.mtom_reader import IteratorReader, read_message

ROOT = b"<?xml version='1.0'?><r/>"
BIG = 1 << 40


def read(content_type: str, data: bytes, **kwargs: object) -> object:
    options: dict = {"content_length": len(data), "max_size": BIG, "max_xml_size": 1 << 20}
    options.update(kwargs)
    return read_message(content_type, io.BytesIO(data), **options)


def multipart(boundary: str, *parts: tuple[str, bytes], preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    out = preamble
    for headers, content in parts:
        out += f"\r\n--{boundary}\r\n".encode() if out else f"--{boundary}\r\n".encode()
        out += headers.encode() + b"\r\n\r\n" + content
    return out + f"\r\n--{boundary}--".encode() + epilogue


ROOT_HEADERS = 'Content-Type: application/xop+xml; type="application/soap+xml"\r\nContent-ID: <root@x>'
CT = 'multipart/related; boundary="b1"; type="application/xop+xml"; start="<root@x>"'


# ----------------------------------------------------------------------------- write + read


def test_round_trip_bytes_path_and_iterator_parts(tmp_path: Path) -> None:
    file_content = bytes(range(256)) * 5000
    source = tmp_path / "doc.bin"
    source.write_bytes(file_content)
    chunks = [b"abc", b"", b"def" * 1000]
    parts = [
        OutgoingPart("small@x", "text/plain", b"hello\r\n--not a boundary\r\n"),
        OutgoingPart("file doc/1@x", "application/dicom", source),
        OutgoingPart("gen@x", "application/octet-stream", lambda: iter(chunks), size=3 + 3000),
    ]
    content_type, length, body = write_message(ROOT, parts, action="urn:a:b")
    data = b"".join(body)
    assert length == len(data)
    media, params = parse_content_type(content_type)
    assert media == "multipart/related"
    assert params["type"] == "application/xop+xml"
    assert params["start-info"] == "application/soap+xml"
    assert params["action"] == "urn:a:b"
    assert params["start"].startswith("<") and params["start"].endswith(">")

    message = read(content_type, data, spool_dir=str(tmp_path))
    assert message.is_mtom and message.root == ROOT
    assert "application/xop+xml" in message.root_content_type
    assert set(message.attachments) == {"small@x", "file doc/1@x", "gen@x"}
    small = message.attachments["small@x"]
    assert small.read_bytes() == b"hello\r\n--not a boundary\r\n" and small.path is None
    big = message.attachments["file doc/1@x"]
    assert big.size == len(file_content) > MEMORY_THRESHOLD
    assert big.sha1 == hashlib.sha1(file_content).hexdigest()
    assert big.content_type == "application/dicom"
    assert big.path is not None and big.path.parent == tmp_path
    with big.open() as fh:
        assert fh.read() == file_content
    assert message.attachments["gen@x"].read_bytes() == b"abc" + b"def" * 1000
    spill = big.path
    message.close()
    assert not spill.exists()


def test_length_unknown_for_unsized_iterator() -> None:
    _ct, length, body = write_message(ROOT, [OutgoingPart("a@x", "x/y", lambda: iter([b"12"]))])
    assert length is None
    assert b"12" in b"".join(body)


def test_iterator_producing_other_than_declared_size_fails() -> None:
    _ct, _length, body = write_message(ROOT, [OutgoingPart("a@x", "x/y", lambda: iter([b"12"]), size=5)])
    with pytest.raises(MtomError, match="declared 5"):
        b"".join(body)


def test_write_refuses_header_injection() -> None:
    with pytest.raises(ValueError):
        write_message(ROOT, [OutgoingPart("a\r\nX-Evil: 1", "x/y", b"")])
    with pytest.raises(ValueError):
        write_message(ROOT, [OutgoingPart("a@x", "x/y", b""), OutgoingPart("a@x", "x/y", b"")])


def test_cid_normalisation_matches_href_and_header() -> None:
    assert normalize_cid("<a b@x>") == "a b@x"
    assert normalize_cid(cid_href("a b/é@x")) == "a b/é@x"
    assert normalize_cid("cid:a%20b%40x") == "a b@x"
    assert normalize_cid("CID:<doc@x>") == "doc@x"


def test_plain_soap_is_read_whole() -> None:
    message = read("application/soap+xml; charset=UTF-8; action=\"urn:x\"", ROOT)
    assert not message.is_mtom and message.root == ROOT and message.attachments == {}


def test_chunked_body_without_length_reads_to_eof() -> None:
    data = multipart("b1", (ROOT_HEADERS, ROOT), ("Content-ID: <d@x>", b"x" * 700_000))
    message = read_message(CT, io.BytesIO(data), content_length=None, max_size=BIG, max_xml_size=1 << 20)
    assert message.attachments["d@x"].size == 700_000
    message.close()


# ----------------------------------------------------------------------------- MIME details


def test_preamble_epilogue_quoted_boundary_case_insensitive_headers() -> None:
    data = multipart(
        "b1",
        ('CONTENT-type: application/xop+xml; type="application/soap+xml"\r\ncontent-ID:   <root@x>', ROOT),
        ("Content-Type: image/png\r\nCONTENT-TRANSFER-ENCODING: Binary\r\nContent-Id: <p%40x>", b"\x89PNG"),
        preamble=b"This is a preamble\r\nwith lines\r\n", epilogue=b"\r\nepilogue text\r\n",
    )
    message = read(CT, data)
    assert message.root == ROOT
    assert message.attachments["p@x"].read_bytes() == b"\x89PNG"
    assert message.attachments["p@x"].content_type == "image/png"


def test_bare_lf_line_endings_are_accepted() -> None:
    # RFC 2046 wants CRLF; message files assembled on Unix (e.g. NIST PnrXop bodies) use bare LF.
    document = b"line one\r\nline two\n\x00\x01binary"
    data = multipart("b1", (ROOT_HEADERS, ROOT), ("Content-Type: text/plain\r\nContent-ID: <d@x>", document),
                     preamble=b"preamble\r\n").replace(b"\r\n", b"\n")
    document_lf = document.replace(b"\r\n", b"\n")
    message = read(CT, data)
    assert message.root == ROOT
    attachment = message.attachments["d@x"]
    assert attachment.read_bytes() == document_lf
    assert attachment.sha1 == hashlib.sha1(document_lf).hexdigest()
    assert attachment.content_type == "text/plain"


def test_mixed_line_endings_are_refused() -> None:
    data = multipart("b1", (ROOT_HEADERS, ROOT), ("Content-ID: <d@x>", b"DOC"))
    first = data.index(b"\r\n--b1")
    mixed = data[:first] + data[first:].replace(b"--b1\r\n", b"--b1\n", 1)
    with pytest.raises(MtomError, match="mixed line endings"):
        read(CT, mixed)


def test_root_identified_by_start_even_when_not_first() -> None:
    data = multipart("b1", ("Content-ID: <d@x>", b"DOC"), (ROOT_HEADERS, ROOT))
    message = read(CT, data)
    assert message.root == ROOT and message.attachments["d@x"].read_bytes() == b"DOC"


def test_first_part_is_root_without_start() -> None:
    data = multipart("b1", (ROOT_HEADERS, ROOT), ("Content-ID: <d@x>", b"DOC"))
    message = read('multipart/related; boundary=b1; type="application/xop+xml"', data)
    assert message.root == ROOT


def test_base64_transfer_encoding_is_decoded() -> None:
    content = bytes(range(256)) * 3000
    encoded = base64.encodebytes(content)  # 76-column lines with CRLF-free newlines
    data = multipart("b1", (ROOT_HEADERS, ROOT),
                     ("Content-ID: <d@x>\r\nContent-Transfer-Encoding: base64", encoded))
    attachment = read(CT, data).attachments["d@x"]
    assert attachment.size == len(content)
    assert attachment.sha1 == hashlib.sha1(content).hexdigest()
    attachment.close()


def test_crlf_belongs_to_the_delimiter_only() -> None:
    content = b"\r\nline\r\n\r\n"
    data = multipart("b1", (ROOT_HEADERS, ROOT), ("Content-ID: <d@x>", content))
    assert read(CT, data).attachments["d@x"].read_bytes() == content


def _head_of_single_part() -> bytes:
    head = multipart("b1", (ROOT_HEADERS, ROOT))[: -len(b"\r\n--b1--")]
    return head + b"\r\n--b1\r\nContent-ID: <d@x>\r\n\r\n"


@pytest.mark.parametrize("shift", [-30, -24, -20, -14, -10, -5, -1, 0, 1, 5, 9])
def test_delimiter_lookalike_across_chunk_edges(shift: int) -> None:
    # A near-miss of the delimiter ("\r\n--b2...") must survive wherever the
    # CHUNK_SIZE reads split it.
    trap = b"\r\n--b2 not the boundary"
    head = _head_of_single_part()
    content = b"z" * (CHUNK_SIZE - 10 + shift - len(head)) + trap + b"tail\r\n--b"
    data = head + content + b"\r\n--b1--\r\n"
    assert read(CT, data).attachments["d@x"].read_bytes() == content


@pytest.mark.parametrize("shift", [-9, -8, -4, -1, 0, 1, 2, 3, 8])
def test_real_delimiter_split_across_chunk_edges(shift: int) -> None:
    head = _head_of_single_part()
    content = b"z" * (CHUNK_SIZE - 3 + shift - len(head))
    data = head + content + b"\r\n--b1\r\nContent-ID: <e@x>\r\n\r\nE\r\n--b1--"
    message = read(CT, data)
    assert message.attachments["d@x"].read_bytes() == content
    assert message.attachments["e@x"].read_bytes() == b"E"
    message.close()


# ----------------------------------------------------------------------------- refusals


def test_missing_boundary_is_refused() -> None:
    with pytest.raises(MtomError, match="boundary"):
        read('multipart/related; type="application/xop+xml"', b"--x\r\n\r\n<r/>\r\n--x--")


def test_wrong_boundary_is_refused() -> None:
    data = multipart("b1", (ROOT_HEADERS, ROOT))
    with pytest.raises(MtomError, match="no boundary delimiter"):
        read('multipart/related; boundary="other"; type="application/xop+xml"', data)


def test_truncated_body_is_refused_and_spill_files_removed(tmp_path: Path) -> None:
    data = multipart("b1", (ROOT_HEADERS, ROOT), ("Content-ID: <d@x>", b"y" * 2_000_000))
    truncated = data[:-30]
    with pytest.raises(MtomError, match="truncated"):
        read(CT, truncated, spool_dir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_body_shorter_than_content_length_is_truncation() -> None:
    data = multipart("b1", (ROOT_HEADERS, ROOT))
    with pytest.raises(MtomError, match="truncated"):
        read_message(CT, io.BytesIO(data), content_length=len(data) + 100, max_size=BIG, max_xml_size=1 << 20)


class CountingStream(io.RawIOBase):
    """An endless stream that records how much was read from it."""

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        assert size > 0
        start = self.consumed
        self.consumed += size
        if start < len(self.prefix):
            return (self.prefix[start:] + b"q" * size)[:size]
        return b"q" * size


def test_oversized_declared_length_is_refused_without_reading() -> None:
    stream = CountingStream(b"")
    with pytest.raises(MessageTooLarge):
        read_message(CT, stream, content_length=10_000_000, max_size=1_000_000, max_xml_size=1 << 20)
    assert stream.consumed == 0


def test_oversized_stream_stops_reading_at_the_limit(tmp_path: Path) -> None:
    stream = CountingStream(_head_of_single_part())
    limit = 3_000_000
    with pytest.raises(MessageTooLarge) as caught:
        read_message(CT, stream, content_length=None, max_size=limit, max_xml_size=1 << 20,
                     spool_dir=str(tmp_path))
    assert caught.value.http_status == 413
    assert stream.consumed <= limit + 1
    assert list(tmp_path.iterdir()) == []


def test_root_part_over_xml_limit_is_refused() -> None:
    data = multipart("b1", (ROOT_HEADERS, b"<r>" + b"a" * 5000 + b"</r>"))
    with pytest.raises(MessageTooLarge, match="root part"):
        read(CT, data, max_xml_size=1000)
    with pytest.raises(MessageTooLarge):
        read("application/soap+xml", b"<r>" + b"a" * 5000 + b"</r>", max_xml_size=1000)


def test_missing_root_part_is_refused() -> None:
    data = multipart("b1", ("Content-ID: <d@x>", b"DOC"))
    with pytest.raises(MtomError, match="root part"):
        read(CT, data)


@pytest.mark.parametrize("content_type", [
    "application/json", "text/plain", "", "multipart/form-data; boundary=b1", "garbage",
    'multipart/related; boundary=b1; type="image/jpeg"',
])
def test_wrong_content_type_is_refused(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        read(content_type, ROOT)
    assert caught.value.http_status == 415


def test_bad_transfer_encoding_and_base64_are_refused() -> None:
    data = multipart("b1", (ROOT_HEADERS, ROOT), ("Content-ID: <d@x>\r\nContent-Transfer-Encoding: quoted-printable",
                                                  b"a=20b"))
    with pytest.raises(MtomError, match="Content-Transfer-Encoding"):
        read(CT, data)
    data = multipart("b1", (ROOT_HEADERS, ROOT), ("Content-ID: <d@x>\r\nContent-Transfer-Encoding: base64", b"!!!!"))
    with pytest.raises(MtomError, match="base64"):
        read(CT, data)


def test_duplicate_content_ids_are_refused() -> None:
    data = multipart("b1", (ROOT_HEADERS, ROOT), ("Content-ID: <d@x>", b"1"), ("Content-ID: <d@x>", b"2"))
    with pytest.raises(MtomError, match="duplicate"):
        read(CT, data)


def test_attachment_from_bytes_and_close() -> None:
    attachment = Attachment.from_bytes("i@x", "text/plain", b"abc")
    assert attachment.sha1 == hashlib.sha1(b"abc").hexdigest() and attachment.size == 3
    attachment.close()
    with pytest.raises(ValueError):
        attachment.read_bytes()


# ----------------------------------------------------------------------------- large, flat memory


@pytest.mark.slow
def test_one_gib_attachment_streams_with_flat_memory(tmp_path: Path) -> None:
    size = 1 << 30
    block = bytes(range(256)) * 4096  # 1 MiB

    def source() -> Iterator[bytes]:
        for _ in range(size // len(block)):
            yield block

    expected = hashlib.sha1()
    for chunk in source():
        expected.update(chunk)
    content_type, length, body = write_message(ROOT, [OutgoingPart("big@x", "application/dicom", source, size=size)])
    assert length is not None and length > size
    tracemalloc.start()
    try:
        message = read_message(content_type, IteratorReader(body), content_length=length, max_size=BIG,
                               max_xml_size=1 << 20, spool_dir=str(tmp_path))
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    attachment = message.attachments["big@x"]
    assert attachment.size == size
    assert attachment.sha1 == expected.hexdigest()
    assert attachment.path is not None and attachment.path.stat().st_size == size
    assert peak < 16 * 1024 * 1024, f"peak Python memory {peak} bytes"
    message.close()
    assert list(tmp_path.iterdir()) == []


def test_root_last_parts_declare_their_known_length() -> None:
    # A reader can take a part's content without scanning it for the delimiter (as for a
    # DICOMweb PACS's parts); a part of unknown size is sent without Content-Length.
    parts = [OutgoingPart("a@x", "application/dicom", b"\r\n--not-a-delimiter"),
             OutgoingPart("b@x", "application/dicom", memoryview(b"0123456789")[2:7]),
             OutgoingPart("c@x", "application/dicom", lambda: iter([b"stream", b"ed"]))]
    content_type, chunks = write_message_root_last(parts, lambda: ROOT, write_size=8)
    data = b"".join(joined(group) for group in chunks)
    heads = [block.split(b"\r\n\r\n", 1)[0] for block in data.split(b"Content-ID: ")[1:]]
    assert [head.split(b"\r\n")[1:] for head in heads[:3]] == [[b"Content-Length: 19"], [b"Content-Length: 5"], []]
    message = read(content_type, data)
    assert message.root == ROOT  # type: ignore[attr-defined]
    assert [message.attachments[cid].read_bytes() for cid in ("a@x", "b@x", "c@x")] == [  # type: ignore[attr-defined]
        b"\r\n--not-a-delimiter", b"23456", b"streamed"]
