"""The consumer's Part 10 check (consumer/part10.py) against pydicom as an independent reader, on every
sample file pydicom bundles (each transfer syntax, sequences of defined and undefined length,
encapsulated pixel data), and against truncated, padded and hostile files."""

from __future__ import annotations

import io
import random
import struct
import subprocess
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from consumer.part10 import MAX_DEPTH, Part10Error, read_identity


def _oracle(name: str) -> tuple[str, str] | None:
    """What two independent readers agree a sample is: (SOP Instance UID, SOP Class UID) when pydicom reads
    it as a Part 10 object with File Meta group length, Transfer Syntax and SOP UIDs and dcmtk's dcmdump
    reads it to its end; None otherwise (pydicom is lenient with a truncated value, dcmdump is not)."""
    try:
        ds = pydicom.dcmread(name)
        ds.get("PixelData")
    except Exception:  # noqa: BLE001 - the deliberately unreadable samples
        return None
    meta = getattr(ds, "file_meta", None)
    if not (ds.get("SOPInstanceUID") and ds.get("SOPClassUID") and ds.preamble is not None and meta is not None
            and "TransferSyntaxUID" in meta and "FileMetaInformationGroupLength" in meta):
        return None
    if subprocess.run(["dcmdump", "-q", name], capture_output=True, timeout=60).returncode != 0:
        return None
    return str(ds.SOPInstanceUID).strip(), str(ds.SOPClassUID).strip()


#: Every sample file bundled in pydicom's wheel (its folder, read directly: pydicom's own lookup would also
#: try to download the samples it does not bundle, and nothing may be downloaded).
SAMPLES = sorted(str(p) for p in (Path(pydicom.data.__file__).parent / "test_files").rglob("*.dcm"))


def test_there_are_whole_and_broken_samples_of_many_transfer_syntaxes() -> None:
    names = {Path(n).name for n in SAMPLES}
    assert len(SAMPLES) > 50 and {"MR_truncated.dcm", "rtplan_truncated.dcm", "CT_small.dcm"} <= names


@pytest.mark.parametrize("name", SAMPLES, ids=lambda n: Path(n).name)
def test_the_identity_is_what_pydicom_and_dcmtk_agree_on_and_anything_else_is_refused(name: str) -> None:
    expected = _oracle(name)
    if expected is None:
        with pytest.raises(Part10Error):
            read_identity(Path(name))
    else:
        assert read_identity(Path(name)) == expected


def _sequence_file(tmp_path: Path, *, implicit: bool) -> Path:
    """A file with nested sequences of undefined length (pydicom writes them so when asked)."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    inner = Dataset()
    inner.CodeValue, inner.CodingSchemeDesignator, inner.CodeMeaning = "T-A0100", "SRT", "Brain"
    outer = Dataset()
    outer.AnatomicRegionSequence = [inner]
    ds.ReferencedStudySequence = [outer, Dataset()]
    for holder, keyword in ((ds, "ReferencedStudySequence"), (outer, "AnatomicRegionSequence")):
        holder[keyword].is_undefined_length = True
        for item in holder[keyword].value:
            item.is_undefined_length_sequence_item = True
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    path = tmp_path / "seq.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("implicit", [True, False])
def test_undefined_length_sequences_are_walked(tmp_path: Path, implicit: bool) -> None:
    path = _sequence_file(tmp_path, implicit=implicit)
    assert b"\xfe\xff\xdd\xe0" in path.read_bytes()  # a sequence delimiter: undefined length indeed
    ds = pydicom.dcmread(path)
    assert read_identity(path) == (ds.SOPInstanceUID, ds.SOPClassUID)


@pytest.mark.parametrize("name", ["seq.dcm", "JPEG2000.dcm", "MR_small.dcm"])
def test_every_truncation_is_refused(tmp_path: Path, name: str) -> None:
    source = _sequence_file(tmp_path, implicit=False) if name == "seq.dcm" else Path(get_testdata_file(name))
    data = source.read_bytes()
    rng = random.Random(7)
    cuts = sorted({*rng.sample(range(1, len(data)), 60), len(data) - 1, len(data) - 2, 131, 132, 144})
    # A cut exactly between two top-level elements leaves a smaller whole dataset: no reader can tell.
    # (The consumer never meets one: a part's length comes from the MIME framing, files are renamed whole.)
    cuts = [cut for cut in cuts if cut not in _top_level_boundaries(source)]
    for cut in cuts:
        path = tmp_path / "cut.dcm"
        path.write_bytes(data[:cut])
        with pytest.raises(Part10Error):
            read_identity(path)


def _top_level_boundaries(path: Path) -> set[int]:
    """File offsets where the dataset's top-level elements begin (pydicom's element generator)."""
    from pydicom.filereader import data_element_generator

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    syntax = ds.file_meta.TransferSyntaxUID
    out = set()
    with open(path, "rb") as fp:
        fp.seek(144 + ds.file_meta.FileMetaInformationGroupLength)
        out.add(fp.tell())
        for _ in data_element_generator(fp, syntax.is_implicit_VR, syntax.is_little_endian):
            out.add(fp.tell())
    return out


def test_bytes_after_the_last_element_are_refused(tmp_path: Path) -> None:
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    for tail in (b"\x00", b"\x00\x00\x00", b"\x08\x00\x20\x00DA\x08\x00"):
        path = tmp_path / "tail.dcm"
        path.write_bytes(data + tail)
        with pytest.raises(Part10Error, match="truncated"):
            read_identity(path)


def _meta(transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_hostile_files_are_refused_without_reading_what_they_claim(tmp_path: Path) -> None:
    good = _meta()
    path = tmp_path / "x.dcm"
    cases = {
        "no DICM": b"\x00" * 128 + b"DICX" + good[132:],
        "empty": b"",
        "a 4 GB element": good + struct.pack("<HH", 0x0010, 0x0010) + b"UT\x00\x00" + struct.pack("<I", 0xFFFFFFF0),
        "a huge UID": good[:-0] + b"",  # replaced below
        "delimiter at top level": good + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0),
    }
    head = good[:good.index(b"\x08\x00\x16\x00")]
    cases["a huge UID"] = head + struct.pack("<HH", 0x0008, 0x0016) + b"UI" + struct.pack("<H", 0xFFF0) + b"1" * 0xFFF0
    for name, data in cases.items():
        path.write_bytes(data)
        with pytest.raises(Part10Error):
            read_identity(path)
            pytest.fail(name)


def test_nesting_deeper_than_the_bound_is_refused(tmp_path: Path) -> None:
    good = _meta(ExplicitVRLittleEndian)
    opening = struct.pack("<HH", 0x0040, 0xA730) + b"SQ\x00\x00" + struct.pack("<I", 0xFFFFFFFF) + struct.pack(
        "<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    path = tmp_path / "deep.dcm"
    path.write_bytes(good + opening * (MAX_DEPTH + 2))
    with pytest.raises(Part10Error, match="deeper"):
        read_identity(path)


def test_a_dataset_without_its_sop_uids_is_refused(tmp_path: Path) -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PatientID = "X"
    path = tmp_path / "nouid.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(Part10Error, match="SOP Instance UID"):
        read_identity(path)
