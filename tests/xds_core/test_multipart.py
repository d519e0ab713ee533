"""The one whole-part multipart splitter (xds_core.multipart): framing, views, errors."""

from __future__ import annotations

import io
import random

import pytest

from xds_core.multipart import MultipartError, boundary_of, iter_parts, read_chunks

BOUNDARY = b"f1325905-2dbe-481a"


def _body(parts: list[bytes], *, with_length: bool, preamble: bytes = b"") -> bytes:
    out = preamble
    for part in parts:
        length = b"Content-Length: %d\r\n" % len(part) if with_length else b""
        out += b"--" + BOUNDARY + b"\r\nContent-Type: application/dicom\r\n" + length + b"\r\n" + part + b"\r\n"
    return out + b"--" + BOUNDARY + b"--\r\nepilogue"


@pytest.mark.parametrize("with_length", [False, True], ids=["scanned", "content-length"])
def test_every_part_survives_any_chunking(with_length) -> None:
    rng = random.Random(5)
    for _ in range(400):
        # Bodies that contain the delimiter's prefix, CRLFs and the blank-line pattern.
        parts = [rng.randbytes(rng.randint(0, 80)) + b"\r\n--f1325\r\n\r\n" for _ in range(rng.randint(0, 5))]
        data = _body(parts, with_length=with_length, preamble=rng.choice([b"", b"preamble\r\n"]))
        cuts = sorted(rng.sample(range(len(data) + 1), min(len(data), rng.randint(0, 25))))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        assert [bytes(body) for _, body in iter_parts(BOUNDARY, chunks)] == parts
        stream = read_chunks(io.BytesIO(data), rng.randint(1, 64))
        assert [bytes(body) for _, body in iter_parts(BOUNDARY, stream)] == parts


def test_a_part_within_one_chunk_is_a_view_not_a_copy() -> None:
    chunk = bytearray(_body([b"A" * 5000, b"B" * 7000], with_length=True))
    (headers, first), (_, second) = list(iter_parts(BOUNDARY, [chunk]))
    assert isinstance(first, memoryview) and first.obj is chunk and second.obj is chunk
    assert bytes(first) == b"A" * 5000 and b"Content-Length: 5000" in headers


def test_a_wrong_content_length_is_refused() -> None:
    data = _body([b"12345"], with_length=True).replace(b"Content-Length: 5", b"Content-Length: 4")
    with pytest.raises(MultipartError, match="Content-Length"):
        list(iter_parts(BOUNDARY, [data]))


def test_a_body_cut_inside_a_part_is_refused() -> None:
    data = _body([b"x" * 100], with_length=False)
    with pytest.raises(MultipartError):
        list(iter_parts(BOUNDARY, [data[:60]]))


def test_a_body_without_any_delimiter_has_no_parts() -> None:
    assert list(iter_parts(BOUNDARY, [b"", b"no parts here"])) == []


def test_boundary_is_read_from_the_content_type() -> None:
    assert boundary_of('multipart/related; type="application/dicom"; boundary="a-b"') == b"a-b"
    with pytest.raises(MultipartError):
        boundary_of("application/dicom")


@pytest.mark.parametrize("with_length", [False, True], ids=["scanned", "content-length"])
def test_parts_up_to_max_part_size_pass_at_any_chunking(with_length: bool) -> None:
    rng = random.Random(7)
    parts = [b"p" * 100, b"\r\n--f1325" * 10, b""]
    data = _body(parts, with_length=with_length)
    for _ in range(200):
        cuts = sorted(rng.sample(range(len(data) + 1), rng.randint(0, 20)))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        assert [bytes(body) for _, body in iter_parts(BOUNDARY, chunks, max_part_size=100)] == parts


@pytest.mark.parametrize("with_length", [False, True], ids=["scanned", "content-length"])
def test_a_part_past_max_part_size_is_refused_before_it_is_held(with_length: bool) -> None:
    def endless() -> object:  # a peer streaming one part for ever
        head = b"--" + BOUNDARY + b"\r\nContent-Type: application/dicom\r\n"
        yield head + (b"Content-Length: 99999999999\r\n" if with_length else b"") + b"\r\n"
        for _ in range(10_000):
            yield b"z" * 65536
        raise AssertionError("read the whole stream: the limit was not enforced while reading")

    with pytest.raises(MultipartError, match="larger than the limit of 1000000 bytes"):
        list(iter_parts(BOUNDARY, endless(), max_part_size=1_000_000))
    with pytest.raises(MultipartError, match="larger than the limit"):
        list(iter_parts(BOUNDARY, [_body([b"x" * 101], with_length=with_length)], max_part_size=100))
