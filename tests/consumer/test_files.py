"""FilesDestination: ``root/<study>/<series>/<sop>.dcm``, whole or not at all, counted only when complete."""

from __future__ import annotations

import dataclasses
import errno
import os
from pathlib import Path

import pydicom
import pytest

from consumer.destinations import DestinationError, InstanceRef
from consumer.files import FilesDestination
from tests.conftest import CORPUS_DIR

IMAGE = CORPUS_DIR / "nist" / "_imagecache" / "std" / "IDS-DEPT002-a" / "images" / "000000.dcm"


@pytest.fixture(scope="module")
def ref() -> InstanceRef:
    ds = pydicom.dcmread(IMAGE, stop_before_pixels=True)
    return InstanceRef(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SOPClassUID)


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_put_stores_the_file_at_study_series_sop_and_has_finds_it(tmp_path: Path, ref: InstanceRef) -> None:
    destination = FilesDestination(tmp_path)
    assert not destination.has(ref)

    destination.put(ref, IMAGE)

    stored = tmp_path / ref.study_instance_uid / ref.series_instance_uid / f"{ref.sop_instance_uid}.dcm"
    assert stored.read_bytes() == IMAGE.read_bytes()
    assert leftovers(tmp_path) == [str(stored.relative_to(tmp_path))]
    assert destination.has(ref)
    assert IMAGE.exists()  # the caller's file stays


def test_has_is_false_for_a_truncated_file(tmp_path: Path, ref: InstanceRef) -> None:
    destination = FilesDestination(tmp_path)
    destination.put(ref, IMAGE)
    stored = destination.path_of(ref)
    stored.write_bytes(IMAGE.read_bytes()[:-100])

    assert not destination.has(ref)


def test_has_is_false_when_the_file_is_another_instance_or_class(tmp_path: Path, ref: InstanceRef) -> None:
    destination = FilesDestination(tmp_path)
    destination.put(ref, IMAGE)

    other_class = InstanceRef(ref.study_instance_uid, ref.series_instance_uid, ref.sop_instance_uid,
                              "1.2.840.10008.5.1.4.1.1.2")
    assert not destination.has(other_class)
    other_instance = InstanceRef(ref.study_instance_uid, ref.series_instance_uid, "1.2.3.4.5", ref.sop_class_uid)
    destination.path_of(other_instance).write_bytes(IMAGE.read_bytes())  # right bytes, wrong name
    assert not destination.has(other_instance)


def test_has_is_false_for_a_file_that_is_not_part_10(tmp_path: Path, ref: InstanceRef) -> None:
    destination = FilesDestination(tmp_path)
    destination.path_of(ref).parent.mkdir(parents=True)
    destination.path_of(ref).write_bytes(IMAGE.read_bytes().replace(b"DICM", b"DXCM", 1))

    assert not destination.has(ref)


@pytest.mark.parametrize("field", ["study_instance_uid", "series_instance_uid", "sop_instance_uid"])
@pytest.mark.parametrize("hostile", ["..", "../../etc", "1.2/3", "", "1.2.3\x00"])
def test_a_uid_that_is_not_a_dicom_uid_never_becomes_a_path(tmp_path: Path, ref: InstanceRef, field: str,
                                                              hostile: str) -> None:
    destination = FilesDestination(tmp_path / "root")
    bad = dataclasses.replace(ref, **{field: hostile})

    with pytest.raises(DestinationError, match="not a DICOM UID"):
        destination.put(bad, IMAGE)
    with pytest.raises(DestinationError, match="not a DICOM UID"):
        destination.has(bad)
    assert leftovers(tmp_path) == []


def test_put_replaces_an_incomplete_file_atomically(tmp_path: Path, ref: InstanceRef) -> None:
    destination = FilesDestination(tmp_path)
    destination.path_of(ref).parent.mkdir(parents=True)
    destination.path_of(ref).write_bytes(b"half a file")

    destination.put(ref, IMAGE)

    assert destination.path_of(ref).read_bytes() == IMAGE.read_bytes()
    assert len(leftovers(tmp_path)) == 1


def test_disk_full_while_writing_leaves_no_partial_file_and_says_why(tmp_path: Path, ref: InstanceRef,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC injected at the writer after some bytes reached the temp file."""
    real_write = os.write
    written = {"bytes": 0}

    def write(fd: int, data: bytes) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path)):
            if written["bytes"] >= 40_000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            n = real_write(fd, bytes(data)[:40_000])
            written["bytes"] += n
            return n
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    destination = FilesDestination(tmp_path)

    with pytest.raises(DestinationError, match=r"disk is full \(ENOSPC\)") as caught:
        destination.put(ref, IMAGE)

    assert ref.sop_instance_uid in str(caught.value)
    assert written["bytes"] == 40_000  # the temp file really held part of the instance
    assert leftovers(tmp_path) == []
    monkeypatch.undo()
    assert not destination.has(ref)


def test_a_missing_source_file_is_a_destination_error(tmp_path: Path, ref: InstanceRef) -> None:
    destination = FilesDestination(tmp_path / "root")

    with pytest.raises(DestinationError, match=ref.sop_instance_uid):
        destination.put(ref, tmp_path / "nowhere.dcm")
    assert leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- writer threads

def _instances(count: int) -> list[tuple[InstanceRef, bytes]]:
    import io

    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(IMAGE)
    out = []
    for _ in range(count):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append((InstanceRef(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SOPClassUID),
                    buffer.getvalue()))
    return out


def test_writer_threads_write_every_instance_by_the_flush(tmp_path: Path) -> None:
    instances = _instances(30)
    destination = FilesDestination(tmp_path, writers=2, max_pending_bytes=200_000)  # a few in flight at most
    for ref, data in instances:
        destination.put(ref, data)
    assert destination.flush() == {}
    for ref, data in instances:
        assert destination.has(ref) and destination.path_of(ref).read_bytes() == data
    destination.close()
    assert len(leftovers(tmp_path)) == 30  # no temp file left


def test_a_writer_threads_failure_comes_back_from_the_flush_and_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    instances = _instances(6)
    doomed = instances[3][0]
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if doomed.sop_instance_uid in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    destination = FilesDestination(tmp_path, writers=2)
    for ref, data in instances:
        destination.put(ref, data)  # nothing raised here: the failure is the writer's
    failed = destination.flush()
    assert list(failed) == [doomed.sop_instance_uid] and "ENOSPC" in failed[doomed.sop_instance_uid]
    assert destination.flush() == {}  # reported once
    destination.close()
    monkeypatch.undo()
    assert not destination.has(doomed)
    assert sum(destination.has(ref) for ref, _ in instances) == 5
    assert len(leftovers(tmp_path)) == 5
