"""Import into the hospital's PACS with import reconciliation (IRWF.b; PS3.3 C.12.1.1.9), by C-STORE and STOW-RS.

Against real Orthancs: the NIST study comes from the shared test PACS (WADO-RS) and goes into a private
second PACS (``import_pacs``), so its unchanged UIDs never meet the originals.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pydicom.data
import pytest
import requests
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from consumer.destinations import Destination, DestinationError, InstanceRef
from consumer.dicom_import import StoreScp
from consumer.pacs_import import DicomImport, DicomwebImport, ImportReconciliation, LocalPatient, reconcile
from tests.consumer.import_pacs import CALLING_AE, ImportPacs
from tests.imaging_source.pacs_fixtures import NIST_STUDY_UID

AFFINITY = "1.3.6.1.4.1.21367.2005.13.20.1000"
IDENTITY = "XDSI_CONSUMER@HOSPITAL_B"
LOCAL = LocalPatient("HOSPB-0042", "HOSPB", universal_entity_id="1.2.3.4.5.42", patient_name="Multi^Mister")
RECONCILIATION = ImportReconciliation(LOCAL, IDENTITY, AFFINITY)


def flushed(destination: Destination) -> dict[str, str]:
    """What a batching destination (STOW-RS) did not store of what it queued; {} for the others."""
    flush = getattr(destination, "flush", None)
    return {} if flush is None else flush()


def _ref(path: Path) -> InstanceRef:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return InstanceRef(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID),
                       str(ds.SOPClassUID))


@pytest.fixture
def empty_import_pacs(import_pacs: ImportPacs) -> ImportPacs:  # noqa: F811
    import_pacs.wipe_studies()
    return import_pacs


def _dicom(p: ImportPacs, reconciliation: ImportReconciliation = RECONCILIATION, *, called: str = "ORTHANC",
           calling: str = CALLING_AE) -> DicomImport:
    return DicomImport(calling, StoreScp(called, "127.0.0.1", p.dicom_port), reconciliation)


def _dicomweb(p: ImportPacs, reconciliation: ImportReconciliation = RECONCILIATION) -> DicomwebImport:
    return DicomwebImport(p.dicomweb_url, reconciliation)


@pytest.fixture(params=["c-store", "stow-rs"])
def destination(request: pytest.FixtureRequest, empty_import_pacs: ImportPacs) -> Iterator[Destination]:
    dest: Destination = (_dicom(empty_import_pacs) if request.param == "c-store" else _dicomweb(empty_import_pacs))
    yield dest
    dest.close()


@pytest.mark.pacs
def test_import_files_the_study_under_the_local_patient_with_uids_and_pixels_unchanged(
        destination: Destination, empty_import_pacs: ImportPacs, nist_files: dict[str, Path]) -> None:  # noqa: F811
    refs = {uid: _ref(path) for uid, path in nist_files.items()}
    assert not any(destination.has(ref) for ref in refs.values())

    for uid, path in nist_files.items():
        destination.put(refs[uid], path)
    assert flushed(destination) == {}

    assert all(destination.has(ref) for ref in refs.values())
    assert empty_import_pacs.study_patient_ids(NIST_STUDY_UID) == ["HOSPB-0042"]
    stored = empty_import_pacs.instance_files(NIST_STUDY_UID)
    assert set(stored) == set(nist_files)  # the same SOP Instance UIDs, no more, no fewer
    for uid, data in stored.items():
        ds = pydicom.dcmread(io.BytesIO(data))
        original = pydicom.dcmread(nist_files[uid])
        assert ds.PixelData == original.PixelData
        assert ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert (ds.StudyInstanceUID, ds.SeriesInstanceUID) == (original.StudyInstanceUID, original.SeriesInstanceUID)
        assert (ds.PatientID, ds.IssuerOfPatientID, str(ds.PatientName)) == ("HOSPB-0042", "HOSPB", "Multi^Mister")
        assert ds.IssuerOfPatientIDQualifiersSequence[0].UniversalEntityID == "1.2.3.4.5.42"
        [item] = ds.OriginalAttributesSequence
        assert item.ModifyingSystem == IDENTITY
        assert item.ReasonForTheAttributeModification == "COERCE"
        assert item.SourceOfPreviousValues == AFFINITY
        assert item.AttributeModificationDateTime
        [old] = item.ModifiedAttributesSequence
        assert old.PatientID == "IDS-DEPT002-a" == original.PatientID
        assert str(old.PatientName) == str(original.PatientName)
        assert "IssuerOfPatientID" in old  # absent in the NIST files: recorded with zero length
        assert old.IssuerOfPatientID in (None, "")


@pytest.mark.pacs
def test_what_the_pacs_holds_of_a_series_comes_in_one_answer(destination: Destination, empty_import_pacs: ImportPacs,
                                                              nist_files: dict[str, Path]) -> None:  # noqa: F811
    refs = [_ref(path) for path in nist_files.values()]
    series = sorted({r.series_instance_uid for r in refs})
    assert destination.series_present(NIST_STUDY_UID, series[0]) == {}  # type: ignore[attr-defined]
    stored = [(ref, path) for ref, path in zip(refs, nist_files.values(), strict=True)
              if ref.series_instance_uid == series[0]][:5]
    for ref, path in stored:
        destination.put(ref, path)
    assert flushed(destination) == {}
    held = destination.series_present(NIST_STUDY_UID, series[0])  # type: ignore[attr-defined]
    assert held == {ref.sop_instance_uid: ref.sop_class_uid for ref, _ in stored}
    assert destination.series_present(NIST_STUDY_UID, series[1]) == {}  # type: ignore[attr-defined]


@pytest.mark.pacs
def test_an_instance_imported_twice_is_stored_once(destination: Destination, empty_import_pacs: ImportPacs,
                                                    nist_files: dict[str, Path]) -> None:  # noqa: F811
    uid, path = next(iter(nist_files.items()))
    destination.put(_ref(path), path)
    assert flushed(destination) == {}
    destination.put(_ref(path), path)
    assert flushed(destination) == {}
    assert list(empty_import_pacs.instance_files(NIST_STUDY_UID)) == [uid]


@pytest.mark.pacs
def test_has_is_false_for_an_instance_of_another_sop_class(destination: Destination,
                                                           nist_files: dict[str, Path]) -> None:  # noqa: F811
    path = next(iter(nist_files.values()))
    destination.put(_ref(path), path)
    assert flushed(destination) == {}
    ref = _ref(path)
    assert destination.has(ref)
    assert not destination.has(InstanceRef(ref.study_instance_uid, ref.series_instance_uid, ref.sop_instance_uid,
                                           "1.2.840.10008.5.1.4.1.1.2"))


@pytest.mark.pacs
def test_one_association_carries_all_the_c_stores(empty_import_pacs: ImportPacs,
                                                  nist_files: dict[str, Path]) -> None:  # noqa: F811
    dest = _dicom(empty_import_pacs)
    try:
        paths = list(nist_files.values())[:5]
        dest.put(_ref(paths[0]), paths[0])
        first = dest.requestor._assoc
        for path in paths[1:]:
            dest.put(_ref(path), path)
            assert dest.requestor._assoc is first
    finally:
        dest.close()


@pytest.mark.pacs
def test_a_pacs_refusing_the_association_is_a_destination_error(empty_import_pacs: ImportPacs,
                                                                 nist_files: dict[str, Path]) -> None:  # noqa: F811
    path = next(iter(nist_files.values()))
    for dest in (_dicom(empty_import_pacs, called="NOT_ORTHANC"), _dicom(empty_import_pacs, calling="STRANGER")):
        with pytest.raises(DestinationError, match="rejected|aborted|status 0x"):
            dest.put(_ref(path), path)
        dest.close()
    assert empty_import_pacs.instance_files(NIST_STUDY_UID) == {}


@pytest.mark.pacs
def test_stow_sends_in_batches_and_says_which_instances_were_not_stored(empty_import_pacs: ImportPacs,
                                                                     nist_files: dict[str, Path]) -> None:  # noqa: F811
    posts: list[int] = []
    session = requests.Session()
    session.hooks["response"].append(lambda r, *a, **k: posts.append(r.status_code) if r.request.method == "POST"
                                      else None)
    dest = DicomwebImport(empty_import_pacs.dicomweb_url, RECONCILIATION, session=session, batch_instances=10)
    paths = list(nist_files.values())
    for path in paths[:25]:
        dest.put(_ref(path), path)
    assert 1 <= len(posts) <= 2  # two full batches went out while queuing, the second may still travel
    assert dest.flush() == {} and len(posts) == 3
    assert len(empty_import_pacs.instance_files(NIST_STUDY_UID)) == 25
    # A part the archive cannot store (not DICOM) is named; every instance not named is in the PACS.
    good = [_ref(path) for path in paths[25:30]]
    for path in paths[25:30]:
        dest.put(_ref(path), path)
    broken = InstanceRef(NIST_STUDY_UID, good[0].series_instance_uid, "1.2.3.4.5.6.7.8.9", good[0].sop_class_uid)
    dest._queue.append((broken, b"not a DICOM object"))  # past put()'s own checks, as a broken peer would be
    failures = dest.flush()
    assert broken.sop_instance_uid in failures and "STOW-RS" in failures[broken.sop_instance_uid]
    held = set(empty_import_pacs.instance_files(NIST_STUDY_UID))
    assert {ref.sop_instance_uid for ref in good} - set(failures) <= held
    dest.close()


@pytest.mark.pacs
def test_stow_to_a_wrong_url_is_a_destination_error_with_the_http_status(empty_import_pacs: ImportPacs,
                                                                         nist_files: dict[str, Path]) -> None:  # noqa: F811
    path = next(iter(nist_files.values()))
    dest = DicomwebImport(f"{empty_import_pacs.rest_url}/no-dicom-web-here", RECONCILIATION)
    dest.put(_ref(path), path)  # queued
    (why,) = dest.flush().values()
    assert "HTTP 404" in why
    with pytest.raises(DestinationError, match="HTTP 404"):
        dest.has(_ref(path))


@pytest.mark.pacs
def test_a_file_that_is_not_the_named_instance_is_refused(destination: Destination, empty_import_pacs: ImportPacs,
                                                         nist_files: dict[str, Path]) -> None:  # noqa: F811
    first, second = list(nist_files.values())[:2]
    with pytest.raises(DestinationError, match="not instance"):
        destination.put(_ref(first), second)
    assert empty_import_pacs.instance_files(NIST_STUDY_UID) == {}


def test_reconcile_appends_to_earlier_modifications_and_replaces_the_issuer_qualifiers() -> None:
    ds = Dataset()
    ds.PatientID = "AD-1"
    ds.IssuerOfPatientID = "AFFINITY"
    q = Dataset()
    q.UniversalEntityID = AFFINITY
    q.UniversalEntityIDType = "ISO"
    ds.IssuerOfPatientIDQualifiersSequence = Sequence([q])
    ds.PatientName = "Kept^Name"
    earlier = Dataset()
    earlier.ModifyingSystem = "SOMEONE_ELSE"
    ds.OriginalAttributesSequence = Sequence([earlier])

    reconcile(ds, ImportReconciliation(LocalPatient("L-7", "HOSP"), IDENTITY, AFFINITY),
              now=dt.datetime(2026, 12, 7, 15, 30, tzinfo=dt.UTC))

    assert (ds.PatientID, ds.IssuerOfPatientID, str(ds.PatientName)) == ("L-7", "HOSP", "Kept^Name")
    assert "IssuerOfPatientIDQualifiersSequence" not in ds  # no local qualifiers given: removed
    assert [i.ModifyingSystem for i in ds.OriginalAttributesSequence] == ["SOMEONE_ELSE", IDENTITY]
    ours = ds.OriginalAttributesSequence[1]
    assert ours.AttributeModificationDateTime == "20261207153000.000000+0000"
    [old] = ours.ModifiedAttributesSequence
    assert (old.PatientID, old.IssuerOfPatientID) == ("AD-1", "AFFINITY")
    assert old.IssuerOfPatientIDQualifiersSequence[0].UniversalEntityID == AFFINITY
    assert "PatientName" not in old  # not coerced: not recorded


def test_an_identity_that_is_not_a_dicom_lo_value_is_refused() -> None:
    with pytest.raises(ValueError, match="LO"):
        ImportReconciliation(LOCAL, "X" * 65, AFFINITY)
    with pytest.raises(ValueError, match="empty"):
        ImportReconciliation(LOCAL, "", AFFINITY)


# ----------------------------------------------------------------------------- the splice

def _bundled_part10() -> list[Path]:
    """pydicom's bundled samples the Part 10 walk covers (whole, little endian, with SOP UIDs)."""
    from consumer.part10 import Part10Error, read_layout

    out = []
    for path in sorted((Path(pydicom.data.__file__).parent / "test_files").rglob("*.dcm")):
        try:
            read_layout(path.read_bytes())
        except Part10Error:
            continue
        out.append(path)
    return out


@pytest.mark.parametrize("path", _bundled_part10(), ids=lambda p: p.name)
def test_the_splice_gives_what_pydicom_gives_element_for_element(path: Path) -> None:
    """The byte splice (only the patient elements re-encoded) against pydicom's decode-reconcile-encode, on
    every sample pydicom bundles: other character sets, implicit VR, sequences, encapsulated pixel data,
    earlier Original Attributes Sequences, elements after the pixel data."""
    import datetime as dt

    from consumer.pacs_import import part10_bytes, reconciled_part10

    now = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
    data = path.read_bytes()
    original = pydicom.dcmread(io.BytesIO(data))
    ref = InstanceRef(str(original.get("StudyInstanceUID", "")), str(original.get("SeriesInstanceUID", "")),
                      str(original.SOPInstanceUID).strip(), str(original.SOPClassUID).strip())
    spliced = pydicom.dcmread(io.BytesIO(reconciled_part10(data, RECONCILIATION, ref, now=now)))
    expected = pydicom.dcmread(io.BytesIO(part10_bytes(reconcile(pydicom.dcmread(io.BytesIO(data)), RECONCILIATION,
                                                                 now=now))))
    # The splice keeps the original File Meta Information (pydicom writes its own implementation class) and
    # the retired group lengths of untouched groups (pydicom drops them all).
    assert spliced.file_meta == original.file_meta
    significant = [e.tag for e in expected if e.tag.element != 0]
    assert [e.tag for e in spliced if e.tag.element != 0] == significant
    assert not any(e.tag.element == 0 and e.tag.group in (0x0010, 0x0400) for e in spliced)
    for tag in significant:
        assert spliced[tag] == expected[tag], tag
    assert spliced.PatientID == "HOSPB-0042" and spliced.OriginalAttributesSequence[-1].ModifyingSystem == IDENTITY


def test_the_splice_refuses_an_object_that_is_not_the_named_instance(nist_files: dict[str, Path]) -> None:  # noqa: F811
    from consumer.pacs_import import reconciled_part10

    first, second = list(nist_files.values())[:2]
    with pytest.raises(DestinationError, match="not instance"):
        reconciled_part10(second.read_bytes(), RECONCILIATION, _ref(first))
    with pytest.raises(DestinationError, match="not a complete"):
        reconciled_part10(first.read_bytes()[:-10], RECONCILIATION, _ref(first))
