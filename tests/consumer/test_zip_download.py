"""A manifest's images as a streamed zip: entries named by UIDs, byte for byte what RAD-69 gives, a README,
and a stream that stops its retrieval when the client goes away.  RAD-69 against the real imaging source in
front of the test PACS (marked ``pacs``)."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from consumer.destinations import DestinationError, InstanceRef
from consumer.fetch import transfer_syntaxes
from consumer.files import FilesDestination
from consumer.retrieval import retrieve_manifest
from consumer.zip_download import ZipStream
from kos.reader import Manifest, read_manifest
from tests.consumer.conftest import LOCATION_UID, NIST_STUDY, kos_part10, new_oid
from tests.gunicorn_server import Server


def nist_manifest() -> Manifest:
    return read_manifest(kos_part10(new_oid()))


def nowhere(uid: str) -> str:
    raise LookupError(f"no imaging source for {uid}")


def test_a_source_nobody_serves_gives_a_zip_with_only_a_readme_saying_why() -> None:
    closed: list[int] = []
    stream = ZipStream(nist_manifest(), "1.2.3.4", resolve_imaging_source=nowhere,
                       transfer_syntaxes=transfer_syntaxes(compress=False), on_close=lambda: closed.append(1))
    data = b"".join(stream)
    stream.close()
    stream.close()
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None
    assert archive.namelist() == ["README.txt"]
    readme = archive.read("README.txt").decode()
    assert "0 of 36 instances" in readme and f"no imaging source for {LOCATION_UID}" in readme
    assert closed == [1]


@pytest.mark.parametrize("uid", ["..", "1.2/3", "1.2.3\x00", "1" * 65])
def test_a_hostile_uid_never_becomes_a_zip_name(uid: str) -> None:
    from consumer.zip_download import ZipDestination

    for ref in (InstanceRef(uid, "1.2.3", "1.2.4", "1.2.5"), InstanceRef("1.2.3", uid, "1.2.4", "1.2.5"),
                InstanceRef("1.2.3", "1.2.4", uid, "1.2.5")):
        with pytest.raises(DestinationError, match="not a DICOM UID"):
            ZipDestination.name_of(ref)


def test_closing_before_reading_runs_on_close_once_and_starts_nothing() -> None:
    closed: list[int] = []
    stream = ZipStream(nist_manifest(), "1.2.3.4", resolve_imaging_source=nowhere,
                       transfer_syntaxes=transfer_syntaxes(compress=False), on_close=lambda: closed.append(1))
    stream.close()
    assert list(stream) == [] and closed == [1]
    assert stream._thread is None  # no retrieval was started for nobody


@pytest.mark.pacs
def test_the_zip_holds_every_instance_byte_for_byte_as_rad69_gives_it(ids: Server, tmp_path: Path) -> None:
    manifest = nist_manifest()
    url = ids.endpoint("imaging-source")
    syntaxes = transfer_syntaxes(compress=False)
    report = retrieve_manifest(manifest, FilesDestination(tmp_path / "files"), resolve_imaging_source=lambda _: url,
                               transfer_syntaxes=syntaxes)
    assert report.ok, report.errors
    expected = {str(p.relative_to(tmp_path / "files")): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in (tmp_path / "files").rglob("*.dcm")}
    stream = ZipStream(manifest, "1.2.3.4", resolve_imaging_source=lambda _: url, transfer_syntaxes=syntaxes,
                       chunk_size=64 * 1024, max_chunks=4)
    zip_path = tmp_path / "download.zip"
    with zip_path.open("wb") as out:
        for chunk in stream:
            assert len(chunk) <= 2 * 1024 * 1024  # streamed in pieces, never the study at once
            out.write(chunk)
    stream.close()
    with zipfile.ZipFile(zip_path) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        assert names[-1] == "README.txt" and len(names) == 37
        got = {name: hashlib.sha256(archive.read(name)).hexdigest() for name in names[:-1]}
        assert all(i.compress_type == zipfile.ZIP_STORED and i.flag_bits & 0x08 for i in archive.infolist()[:-1])
        readme = archive.read("README.txt").decode()
    assert got == expected
    assert all(name.startswith(f"{NIST_STUDY}/") for name in got)
    assert "36 of 36 instances" in readme and "Not retrieved" not in readme


@pytest.mark.pacs
def test_closing_the_stream_early_stops_the_retrieval(ids: Server) -> None:
    url = ids.endpoint("imaging-source")
    closed: list[int] = []
    stream = ZipStream(nist_manifest(), "1.2.3.4", resolve_imaging_source=lambda _: url,
                       transfer_syntaxes=transfer_syntaxes(compress=False), on_close=lambda: closed.append(1),
                       chunk_size=16 * 1024, max_chunks=2)
    first = next(iter(stream))
    assert first.startswith(b"PK\x03\x04")
    stream.close()
    assert closed == [1]
    stream.join(timeout=30)
    assert stream._thread is not None and not stream._thread.is_alive()
    assert len(stream.contents.entries) < 36
