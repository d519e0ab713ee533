"""Bounded memory while reading SOAP/MTOM (issue 15): the parts of one message share one in-memory budget, and
the XML root's markup is counted as it arrives, before anything is parsed."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from xds_core.soap.mtom import DEFAULT_MEMORY_BUDGET, MEMORY_THRESHOLD, MessageTooLarge, OutgoingPart, write_message
from xds_core.soap.mtom_reader import read_message

ROOT = b"<?xml version='1.0'?><r xmlns='urn:r'/>"
BIG = 1 << 40


def _mtom(parts: list[OutgoingPart], root: bytes = ROOT) -> tuple[str, bytes]:
    content_type, _length, chunks = write_message(root, parts, action="urn:test:Echo")
    return content_type, b"".join(bytes(chunk) for chunk in chunks)


def _parts(count: int, size: int) -> list[OutgoingPart]:
    return [OutgoingPart(f"p{index}@x", "application/octet-stream", bytes([index % 251]) * size)
            for index in range(count)]


class _CountingReader(io.BytesIO):
    """A request stream that remembers how much was read from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.taken = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.taken += len(data)
        return data


def test_small_parts_spill_once_the_message_budget_is_used(tmp_path: Path) -> None:
    parts = _parts(200, 100_000)  # each far below MEMORY_THRESHOLD: alone, every one would stay in memory
    assert 100_000 < MEMORY_THRESHOLD
    content_type, data = _mtom(parts)
    message = read_message(content_type, io.BytesIO(data), content_length=len(data), max_size=BIG,
                           max_xml_size=1 << 20, spool_dir=str(tmp_path), memory_budget=1_000_000)
    try:
        in_memory = [a for a in message.attachments.values() if a.path is None]
        spilled = [a for a in message.attachments.values() if a.path is not None]
        assert sum(len(a.data or b"") for a in in_memory) <= 1_000_000
        assert len(in_memory) == 10 and len(spilled) == 190
        assert len(list(tmp_path.iterdir())) == 190
        for part in parts:  # wherever it lives, every part is whole and hashed
            attachment = message.attachments[part.content_id]
            assert attachment.read_bytes() == part.source
            assert attachment.sha1 == hashlib.sha1(part.source).hexdigest()  # type: ignore[arg-type]
    finally:
        message.close()
    assert list(tmp_path.iterdir()) == []


def test_a_zero_budget_spills_every_part_and_the_default_is_8_mib(tmp_path: Path) -> None:
    assert DEFAULT_MEMORY_BUDGET == 8 * 1024 * 1024
    content_type, data = _mtom([*_parts(3, 10), OutgoingPart("empty@x", "text/plain", b"")])
    message = read_message(content_type, io.BytesIO(data), content_length=len(data), max_size=BIG,
                           max_xml_size=1 << 20, spool_dir=str(tmp_path), memory_budget=0)
    try:
        assert [a.path is not None for a in message.attachments.values()] == [True, True, True, False]
        assert message.attachments["p1@x"].read_bytes() == b"\x01" * 10
    finally:
        message.close()


def test_a_thousand_small_parts_keep_only_the_budget_in_memory(tmp_path: Path) -> None:
    content_type, data = _mtom(_parts(1000, 20_000))
    message = read_message(content_type, io.BytesIO(data), content_length=len(data), max_size=BIG,
                           max_xml_size=1 << 20, spool_dir=str(tmp_path))
    try:
        held = sum(len(a.data or b"") for a in message.attachments.values())
        assert held <= DEFAULT_MEMORY_BUDGET < 1000 * 20_000
        assert sum(a.size for a in message.attachments.values()) == 1000 * 20_000
    finally:
        message.close()
    assert list(tmp_path.iterdir()) == []


def test_a_refused_message_leaves_no_spill_file(tmp_path: Path) -> None:
    content_type, data = _mtom(_parts(50, 50_000))
    cut = data[: len(data) // 2]  # truncated after some parts spilled
    with pytest.raises(Exception, match="truncated"):
        read_message(content_type, io.BytesIO(cut), content_length=len(data), max_size=BIG, max_xml_size=1 << 20,
                     spool_dir=str(tmp_path), memory_budget=100_000)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("packaging", ["plain", "mtom"])
def test_dense_xml_is_refused_while_it_arrives(packaging: str) -> None:
    dense = b"<r xmlns='urn:r'>" + b"<a/>" * 2_000_000 + b"</r>"  # 8 MB: ~240 MB as a tree
    if packaging == "plain":
        content_type, data = "application/soap+xml", dense
    else:
        content_type, data = _mtom(_parts(1, 10), root=dense)
    stream = _CountingReader(data)
    with pytest.raises(MessageTooLarge, match="more than 100000 elements and attributes") as refused:
        read_message(content_type, stream, content_length=len(data), max_size=BIG, max_xml_size=64 << 20,
                     max_xml_nodes=100_000)
    assert refused.value.http_status == 413  # like a root part past max_xml_size
    assert stream.taken < 1_000_000  # stopped near the limit, not after the 8 MB


def test_xml_within_the_markup_limit_is_read(tmp_path: Path) -> None:
    root = b"<r xmlns='urn:r'>" + b"<a b='1'/>" * 1000 + b"</r>"  # '<' and '=': 1 + 1 + 1000 x 2 + 1
    message = read_message("application/soap+xml", io.BytesIO(root), content_length=len(root), max_size=BIG,
                           max_xml_size=1 << 20, max_xml_nodes=2003)
    assert message.root == root
    with pytest.raises(MessageTooLarge):
        read_message("application/soap+xml", io.BytesIO(root), content_length=len(root), max_size=BIG,
                     max_xml_size=1 << 20, max_xml_nodes=2002)
