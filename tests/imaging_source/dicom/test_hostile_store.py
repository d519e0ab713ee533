"""Hostile C-STOREs against our real listener on loopback (issue 15, DICOM listener).

The peer is a plain pynetdicom SCU that sends Part 10 files *as written* (``STORE_SEND_CHUNKED_DATASET``:
the Affected SOP Instance UID comes from the file meta, the data set bytes go out untouched), so it can
say one UID in the command and another in the data set, or send a deflate bomb without ever holding it
inflated.  The spool directory sits deep inside a canary tree (with the directories a traversal would
need already there), and every test compares the whole tree before and after: a file written anywhere
for a refused instance fails it.
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom import AE, _config

from imaging_source.dicom.config import DicomConfig, ListenerLimits, Peer
from imaging_source.dicom.dimse_retrieve import claim_spooled
from imaging_source.dicom.received import MAX_INFLATED_DATASET, disk_reassembly, inflated_size
from imaging_source.dicom.scp import DicomListener, ReceivedInstance
from imaging_source.dicom.status import CannotUnderstand, DatasetTooLarge
from xds_core import disk

from .rss import RssWatch

OUR_AE = "XDSI_IDS"
INVALID_SOP_INSTANCE, DATASET_MISMATCH, CANNOT_UNDERSTAND = 0x0117, 0xA900, 0xC000
BOMB_REFUSED = 0xA7DF
#: The bomb inflates to four times the limit (256 MiB): unbounded, that alone is > 256 MiB of RSS.
BOMB_INFLATED = 4 * MAX_INFLATED_DATASET
#: Allowed RSS growth while the listener refuses the bomb (the counting inflate keeps 1 MiB at a time).
RSS_BOUND = MAX_INFLATED_DATASET // 2


@dataclass
class Site:
    canary: Path
    spool: Path
    peer_dir: Path
    listener: DicomListener
    received: list[ReceivedInstance]
    port: int

    def tree(self) -> list[str]:
        return sorted(str(p.relative_to(self.canary)) for p in self.canary.rglob("*"))


@pytest.fixture(params=["memory", "disk"], ids=["in-memory", "on-disk"])
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[Site]:
    """The listener as a test process runs it (data sets reassembled in memory) and as the listener
    process does (``disk_reassembly``: in files under spool/incoming, inside the canary tree, so a file
    left behind fails the tree comparison)."""
    canary = tmp_path / "canary"
    spool = canary / "a" / "b" / "spool"
    spool.mkdir(parents=True)
    # What the traversals of the bug report would need to land: spool/../../../tmp and spool/1.2.3/../..
    (canary / "tmp").mkdir()
    (spool / "1.2.3").mkdir()
    monkeypatch.chdir(canary)  # a relative path would land in the canary tree too
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # the peer sends files as written
    peer_dir = tmp_path / "peer"
    peer_dir.mkdir()
    received: list[ReceivedInstance] = []
    config = DicomConfig(OUR_AE, Peer("ORTHANC", "127.0.0.1", 1), spool_dir=spool)
    listener = DicomListener(config, on_instance=received.append, host="127.0.0.1", port=0)
    with contextlib.ExitStack() as stack:
        if request.param == "disk":
            stack.enter_context(disk_reassembly(spool / "incoming"))
        _host, port = listener.start()
        stack.callback(listener.stop)
        yield Site(canary, spool, peer_dir, listener, received, port)


def _head(sop_uid: str | None, *, study: str = "1.2.826.0.1.3680043.10.1.1",
          series: str = "1.2.826.0.1.3680043.10.1.2") -> bytes:
    """Explicit VR Little Endian encoding of an identifying head (no patient data)."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    if sop_uid is not None:
        ds.SOPInstanceUID = sop_uid
    ds.Modality = "CT"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the hostile UI values it is asked to write
        write_dataset(fp, ds)
    return fp.getvalue()


def _pixel_header(length: int) -> bytes:
    # (7FE0,0010) Pixel Data, OB, 32-bit length (PS3.5 7.1.2)
    return b"\xe0\x7f\x10\x00OB\x00\x00" + length.to_bytes(4, "little")


def _part10(path: Path, body: bytes, affected_uid: str, ts: str = ExplicitVRLittleEndian) -> Path:
    """A Part 10 file whose file meta (-> Affected SOP Instance UID) says ``affected_uid``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = affected_uid
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    fp = DicomBytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_file_meta_info(fp, meta, enforce_standard=True)
    path.write_bytes(b"\x00" * 128 + b"DICM" + fp.getvalue() + body)
    return path


def _deflated(head: bytes, zeros: int) -> bytes:
    """head + Pixel Data of ``zeros`` zero bytes, raw-deflated (PS3.5 A.5) without ever holding it inflated."""
    out = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [out.compress(head + _pixel_header(zeros))]
    block = bytes(1024 * 1024)
    left = zeros
    while left:
        step = min(left, len(block))
        parts.append(out.compress(block[:step]))
        left -= step
    parts.append(out.flush())
    return b"".join(parts)


@pytest.fixture
def lax_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    """pynetdicom refuses to *send* a UI value over 64 characters; a hostile peer need not be pynetdicom.
    The check is lifted for this (the peer's) thread only: the listener's threads keep upstream's."""
    strict = _config.VALIDATORS["UI"]
    peer = threading.get_ident()

    def validate(value: str) -> tuple[bool, str]:
        return (True, "") if threading.get_ident() == peer else strict(value)

    monkeypatch.setitem(_config.VALIDATORS, "UI", validate)


def _store(site: Site, path: Path, *, move_originator: bool) -> int:
    """One C-STORE of a file over a fresh association; the DIMSE status (or -1 if none came back)."""
    ae = AE(ae_title="HOSTILE")
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    ae.add_requested_context(CTImageStorage, [DeflatedExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", site.port, ae_title=OUR_AE)
    assert assoc.is_established
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kwargs = {"originator_aet": OUR_AE, "originator_id": 7} if move_originator else {}
            rsp = assoc.send_c_store(path, **kwargs)
        return int(rsp.Status) if rsp else -1
    finally:
        if assoc.is_established:
            assoc.release()
        # The listener's side ends (and cleans up) in its own thread: wait for it, a few seconds at most.
        deadline = time.monotonic() + 5
        while site.listener.server.active_associations and time.monotonic() < deadline:
            time.sleep(0.01)


def _good(site: Site, name: str, *, move_originator: bool, ts: str = ExplicitVRLittleEndian,
          zeros: int = 0) -> str:
    uid = generate_uid()
    path = site.peer_dir / name
    if ts == DeflatedExplicitVRLittleEndian:
        _part10(path, _deflated(_head(uid), zeros), uid, ts)
    else:
        _part10(path, _head(uid) + _pixel_header(zeros) + bytes(zeros), uid, ts)
    assert _store(site, path, move_originator=move_originator) == 0x0000
    return uid


HOSTILE_UIDS = {
    "parent traversal": "../../../tmp/x",
    "traversal after a UID": "1.2.3/../../x",
}
UID_65 = "1." + "2" * 63


@pytest.mark.parametrize("move_originator", [True, False], ids=["move-originator-is-us", "incoming"])
@pytest.mark.parametrize("uid", list(HOSTILE_UIDS.values()), ids=list(HOSTILE_UIDS))
def test_a_sop_instance_uid_that_is_not_a_uid_is_refused_with_0117_and_nothing_is_written(
        site: Site, uid: str, move_originator: bool) -> None:
    before = site.tree()
    path = _part10(site.peer_dir / "hostile.dcm", _head(uid), uid)
    assert _store(site, path, move_originator=move_originator) == INVALID_SOP_INSTANCE
    assert site.tree() == before
    assert site.received == []
    # The listener is alive and still spools / records a proper instance.
    good = _good(site, "good.dcm", move_originator=move_originator)
    if move_originator:
        assert [p.name.split(".dcm")[0].rsplit(".", 1)[0] for p in site.spool.glob("*.dcm")] == [good]
    else:
        assert [r.sop_instance_uid for r in site.received] == [good]


@pytest.mark.parametrize("move_originator", [True, False], ids=["move-originator-is-us", "incoming"])
def test_a_65_character_affected_sop_instance_uid_is_aborted_by_pynetdicom_and_nothing_is_written(
        site: Site, lax_peer: None, move_originator: bool) -> None:
    """pynetdicom 3.0.4 (the listener's DIMSE layer) does not decode a command whose UID is over 64
    characters (PS3.5 Table 6.2-1): it aborts the association before our handler runs, so no status
    comes back.  The refusal is still total and the listener lives on.  (A 65-character UID in the data
    set reaches our handler: 0x0117, next test.)"""
    assert len(UID_65) == 65
    before = site.tree()
    path = _part10(site.peer_dir / "hostile.dcm", _head(UID_65), UID_65)
    assert _store(site, path, move_originator=move_originator) == -1  # A-ABORT, no C-STORE-RSP
    assert site.tree() == before
    assert site.received == []
    _good(site, "good.dcm", move_originator=move_originator)


@pytest.mark.parametrize("move_originator", [True, False], ids=["move-originator-is-us", "incoming"])
def test_the_data_sets_own_sop_instance_uid_must_be_a_uid_and_agree_with_the_command(
        site: Site, move_originator: bool) -> None:
    before = site.tree()
    affected = generate_uid()
    cases = [
        (generate_uid(), DATASET_MISMATCH),            # two valid UIDs that differ: PS3.4 B.2.3 0xA900
        ("../../../tmp/x", INVALID_SOP_INSTANCE),      # the command's is valid, the data set's a path
        (affected + ".1/../..", INVALID_SOP_INSTANCE),
        (UID_65, INVALID_SOP_INSTANCE),                # PS3.5 9.1: at most 64 characters
        (None, CANNOT_UNDERSTAND),                     # no (0008,0018) at all: 0xC000
    ]
    statuses = [_store(site, _part10(site.peer_dir / f"case{i}.dcm", _head(own), affected),
                       move_originator=move_originator) for i, (own, _expected) in enumerate(cases)]
    assert statuses == [expected for _own, expected in cases]
    assert site.tree() == before
    assert site.received == []
    _good(site, "good.dcm", move_originator=move_originator)


@pytest.mark.parametrize("move_originator", [True, False], ids=["move-originator-is-us", "incoming"])
def test_a_deflate_bomb_is_refused_with_a7df_nothing_written_memory_bounded_and_the_listener_alive(
        site: Site, move_originator: bool) -> None:
    uid = generate_uid()
    body = _deflated(_head(uid), BOMB_INFLATED)
    bomb = _part10(site.peer_dir / "bomb.dcm", body, uid, DeflatedExplicitVRLittleEndian)
    del body
    before = site.tree()
    with RssWatch() as rss:
        started = time.perf_counter()
        status = _store(site, bomb, move_originator=move_originator)
        elapsed = time.perf_counter() - started
    print(f"\ndeflate bomb ({'C-MOVE answer' if move_originator else 'incoming'}): "
          f"{bomb.stat().st_size / 1024:.0f} KiB sent, would inflate to {BOMB_INFLATED / 2**20:.0f} MiB; "
          f"status 0x{status:04X} in {elapsed * 1000:.0f} ms; peak RSS growth {rss.growth_bytes / 2**20:.1f} MiB "
          f"(bound {RSS_BOUND / 2**20:.0f} MiB, VmHWM reset: {rss.hwm_reset})")
    assert status == BOMB_REFUSED
    assert rss.growth_bytes < RSS_BOUND
    assert site.tree() == before
    assert site.received == []
    _good(site, "good.dcm", move_originator=move_originator)


@pytest.mark.parametrize("move_originator", [True, False], ids=["move-originator-is-us", "incoming"])
def test_a_deflated_instance_within_the_limit_is_still_accepted(site: Site, move_originator: bool) -> None:
    uid = _good(site, "deflated.dcm", move_originator=move_originator, ts=DeflatedExplicitVRLittleEndian,
                zeros=4 * 1024 * 1024)
    if move_originator:
        claimed = claim_spooled(site.spool, uid)
        assert claimed is not None
        ds = pydicom.dcmread(claimed)
        assert (ds.SOPInstanceUID, len(ds.PixelData)) == (uid, 4 * 1024 * 1024)
    else:
        assert [r.sop_instance_uid for r in site.received] == [uid]


def test_the_counting_inflate_stops_at_the_limit_and_refuses_broken_streams() -> None:
    out = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    stream = out.compress(bytes(3 * 1024 * 1024 + 5)) + out.flush()
    assert inflated_size(stream, limit=3 * 1024 * 1024 + 5) == 3 * 1024 * 1024 + 5
    with pytest.raises(DatasetTooLarge) as too_large:
        inflated_size(stream, limit=3 * 1024 * 1024 + 4)
    assert too_large.value.status == BOMB_REFUSED
    with pytest.raises(CannotUnderstand):
        inflated_size(stream[: len(stream) // 2])  # truncated
    with pytest.raises(CannotUnderstand):
        inflated_size(b"\xff" * 64)  # not DEFLATE


def test_below_the_free_space_watermark_a_c_moved_instance_is_refused_with_a700_and_nothing_spooled(
        site: Site) -> None:
    # A watermark above what the spool's file system has free: the disk counts as low.
    low = disk.free_bytes(site.spool) + 1024**4
    site.listener.config = DicomConfig(OUR_AE, Peer("ORTHANC", "127.0.0.1", 1), spool_dir=site.spool,
                                       listener=ListenerLimits(min_free_space=low))
    before = site.tree()
    uid = generate_uid()
    path = _part10(site.peer_dir / "low.dcm", _head(uid) + _pixel_header(100) + bytes(100), uid,
                   ExplicitVRLittleEndian)
    assert _store(site, path, move_originator=True) == 0xA700  # PS3.4 Table B.2-1: Refused: Out of Resources
    assert site.tree() == before  # nothing spooled, no temporary file left
    # Incoming instances are recorded, not kept: the watermark does not stop a modality.
    _good(site, "incoming.dcm", move_originator=False)
