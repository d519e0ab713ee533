"""The benchmark's own RAD-69 reader finds the SOAP root by ``start`` (RFC 2387 §3.2).

``make bench-imaging`` reads RAD-69 answers with the same splitter as WADO-RS answers
(:func:`imaging_source.dicom.wado_rs.iter_multipart_parts`) and picks the root itself
(:func:`mtom_root_and_parts`).  Hand-written bodies (tests/xds_core/soap/mtom_bodies.py), fed in
small chunks so that parts straddle reads.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.management.base import CommandError

from imaging_source.dicom.wado_rs import iter_multipart_parts
from imaging_source.management.commands.xds_bench_imaging import mtom_root_and_parts
from tests.xds_core.soap.mtom_bodies import (
    DECOY_ACTION,
    DOCUMENT,
    FIRST,
    LAST,
    MIDDLE,
    ROOT_ACTION,
    ROOT_CASES,
    content_type,
    package,
)
from xds_core import ns
from xds_core.ns import q
from xds_core.safe_xml import parse_xml


def _chunks(body: bytes, size: int = 7) -> Iterator[bytes]:
    return (body[i:i + size] for i in range(0, len(body), size))


def split(ctype: str, body: bytes) -> tuple[str | None, dict[str, bytes]]:
    """(wsa:Action of the part taken as the root, the other parts by Content-ID)."""
    root, parts = mtom_root_and_parts(ctype, iter_multipart_parts(ctype, _chunks(body)), bytes)
    action = parse_xml(bytes(root)).findtext(f"{q(ns.SOAP12, 'Header')}/{q(ns.WSA, 'Action')}")
    return action, parts


@pytest.mark.parametrize(("order", "start"), ROOT_CASES)
def test_bench_reader_takes_the_part_start_names_as_the_root(order: tuple[str, ...], start: str) -> None:
    action, parts = split(content_type(start), package(order))
    assert action == ROOT_ACTION
    assert sorted(parts) == ["decoy@t", "doc@t"] and parts["doc@t"] == DOCUMENT


def test_bench_reader_takes_the_first_part_without_start() -> None:
    assert split(content_type(None), package(FIRST))[0] == ROOT_ACTION
    assert split(content_type(None), package(MIDDLE))[0] == DECOY_ACTION


@pytest.mark.parametrize("start", ['"<nobody@t>"', "nobody@t", '""'])
def test_bench_reader_refuses_a_start_naming_no_part(start: str) -> None:
    with pytest.raises(CommandError, match="start"):
        split(content_type(start), package(LAST))
