"""Received data sets reassembled on disk, as in the listener process (received.disk_reassembly).

The listener is real (loopback, in this process, so its memory is this process's); the peer is
pynetdicom sending Part-10 files as written (``STORE_SEND_CHUNKED_DATASET``), so neither side holds a
large data set in memory unless the listener does.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import split_dataset
from pynetdicom.pdu import P_DATA_TF

from imaging_source.dicom.config import DicomConfig, ListenerLimits, Peer
from imaging_source.dicom.dimse_retrieve import claim_spooled
from imaging_source.dicom.received import REASSEMBLY_PATTERN, disk_reassembly
from imaging_source.dicom.scp import DicomListener, ReceivedInstance

from .rss import RssWatch

OUR_AE = "XDSI_IDS"
BASE_DIR = Path(__file__).resolve().parents[3]
BIG = 64 * 1024 * 1024
MAX_PDU = 256 * 1024


@dataclass
class Site:
    spool: Path
    incoming: Path
    peer_dir: Path
    listener: DicomListener
    received: list[ReceivedInstance]
    port: int

    def settle(self) -> None:
        deadline = time.monotonic() + 5
        while self.listener.server.active_associations and time.monotonic() < deadline:
            time.sleep(0.01)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # the peer sends files as written
    spool, peer_dir = tmp_path / "spool", tmp_path / "peer"
    peer_dir.mkdir()
    received: list[ReceivedInstance] = []
    config = DicomConfig(OUR_AE, Peer("ORTHANC", "127.0.0.1", 1), spool_dir=spool,
                         listener=ListenerLimits(max_pdu_length=MAX_PDU))
    with disk_reassembly(spool / "incoming") as incoming:
        listener = DicomListener(config, on_instance=received.append, host="127.0.0.1", port=0)
        _host, port = listener.start()
        try:
            yield Site(spool, incoming, peer_dir, listener, received, port)
        finally:
            listener.stop()


def _instance(path: Path, pixels: int) -> str:
    uid = generate_uid()
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, uid, "CT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.9.1", "1.2.826.0.1.3680043.10.9.2"
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, uid
    meta.TransferSyntaxUID, meta.ImplementationClassUID = ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID
    head = DicomBytesIO()
    write_file_meta_info(head, meta, enforce_standard=True)
    with path.open("wb") as fh:
        fh.write(b"\x00" * 128 + b"DICM" + head.getvalue() + fp.getvalue())
        fh.write(b"\xe0\x7f\x10\x00OB\x00\x00" + pixels.to_bytes(4, "little"))  # (7FE0,0010) OB
        block = bytes(1024 * 1024)
        for _ in range(pixels // len(block)):
            fh.write(block)
    return uid


def _associate(site: Site) -> object:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", site.port, ae_title=OUR_AE)
    assert assoc.is_established
    return assoc


def store_from_another_process(site: Site, path: Path, *, move_originator: bool) -> str:
    """C-STORE ``path`` from a peer process (tests/imaging_source/dicom/store_peer.py): its memory is not ours."""
    argv = [sys.executable, "-m", "tests.imaging_source.dicom.store_peer", "127.0.0.1", str(site.port), OUR_AE,
            str(path), *(["--move-originator", OUR_AE] if move_originator else [])]
    done = subprocess.run(argv, cwd=BASE_DIR, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout.strip().rsplit("\n", 1)[-1]


@pytest.mark.parametrize("move_originator", [True, False], ids=["c-move-answer", "incoming"])
def test_a_64_mib_instance_is_received_without_holding_it_in_memory(site: Site, move_originator: bool) -> None:
    path = site.peer_dir / "big.dcm"
    uid = _instance(path, BIG)
    with RssWatch() as rss:
        status = store_from_another_process(site, path, move_originator=move_originator)
    site.settle()
    print(f"\n64 MiB C-STORE ({'C-MOVE answer' if move_originator else 'incoming'}) reassembled on disk: "
          f"{status}, listener RSS growth {rss.growth_bytes / 2**20:.1f} MiB")
    assert status == "status=0x0000"
    assert rss.growth_bytes < BIG // 4  # held in memory, it alone would be 64 MiB (and copies of it)
    assert list(site.incoming.glob("*")) == []  # moved into the spool, or removed by pynetdicom
    if move_originator:
        spooled = claim_spooled(site.spool, uid)
        assert spooled is not None
        # The Part-10 file as pynetdicom wrote it (renamed, not re-encoded): the data set bytes as sent.
        ds = pydicom.dcmread(spooled, stop_before_pixels=True)
        assert (ds.SOPInstanceUID, ds.file_meta.TransferSyntaxUID) == (uid, ExplicitVRLittleEndian)
        assert _dataset_digest(spooled) == _dataset_digest(path)
    else:
        assert [r.sop_instance_uid for r in site.received] == [uid]


def _dataset_digest(path: Path) -> str:
    _meta, offset = split_dataset(path)
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        fh.seek(offset)
        while block := fh.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def test_an_association_aborted_in_the_middle_of_a_data_set_leaves_no_file(site: Site) -> None:
    assoc = _associate(site)
    context_id = assoc.accepted_contexts[0].context_id
    request = C_STORE()
    request.MessageID, request.Priority = 1, 2
    request.AffectedSOPClassUID, request.AffectedSOPInstanceUID = CTImageStorage, generate_uid()
    request.DataSet = io.BytesIO(bytes(8 * MAX_PDU))
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    fragments = list(message.encode_msg(context_id, MAX_PDU))
    for primitive in fragments[:4]:  # the command and a part of the data set, never its last fragment
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        assoc.dul.socket.send(pdu.encode())
    deadline = time.monotonic() + 5
    while not list(site.incoming.glob(REASSEMBLY_PATTERN)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(list(site.incoming.glob(REASSEMBLY_PATTERN))) == 1  # being reassembled
    assoc.abort()
    site.settle()
    assert list(site.incoming.glob("*")) == []
    # The listener is alive.
    again = _associate(site)
    uid = _instance(site.peer_dir / "small.dcm", 1024 * 1024)
    assert again.send_c_store(site.peer_dir / "small.dcm").Status == 0x0000
    again.release()
    assert [r.sop_instance_uid for r in site.received] == [uid]


def test_files_left_by_a_killed_listener_are_removed_at_start_and_others_kept(tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    (incoming / "tmpabc123.dcm").write_bytes(b"partial")
    (incoming / "keep.txt").write_text("not ours")
    with disk_reassembly(incoming):
        assert sorted(p.name for p in incoming.iterdir()) == ["keep.txt"]
        assert _config.STORE_RECV_CHUNKED_DATASET is True
    assert _config.STORE_RECV_CHUNKED_DATASET is False  # a process-wide switch, restored on exit
