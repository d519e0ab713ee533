"""The PDU length check of our listener (imaging_source/dicom/pdu_limits.py), on a real loopback socket.

pdu_limits wraps pynetdicom's PDU reader (``DULServiceProvider._read_pdu_data``, reached through
``_is_transport_event``).  The first test pins both functions: an upgrade of pynetdicom that changes
them fails here, and whoever upgrades re-reads the wrapper before updating the digests.  The others
check the behaviour: a header declaring ~2 GB is answered with A-ABORT at once, without the listener
reading or allocating it, and the listener keeps answering.
"""

from __future__ import annotations

import hashlib
import inspect
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pynetdicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.sop_class import Verification

from imaging_source.dicom.config import DicomConfig, ListenerLimits, Peer
from imaging_source.dicom.pdu_limits import ASSOCIATION_PDU_CAP, P_DATA_SLACK, UPSTREAM_READER, PduLimits, PduType
from imaging_source.dicom.scp import DicomListener

from .raw_peer import EXPECTED_ABORT, associate_raw, read_until_closed
from .rss import RssWatch

OUR_AE = "XDSI_IDS"
MAX_PDU = 64 * 1024
TWO_GB = 2 * 1024**3 - 1

#: sha256 of the source of the functions the wrapper relies on, pynetdicom 3.0.4.
PINNED = {
    "_read_pdu_data": "19f2d4e38c13c83586365d93dd5cd96a0c7c665cb37251054b3e1f246e9f431b",
    "_is_transport_event": "8725ed03bb8fbdefef249d5d9888c120e6277d7b6aa2c4f537e23027186e1253",
}


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[DicomListener, int]]:
    config = DicomConfig(OUR_AE, Peer("ORTHANC", "127.0.0.1", 1), spool_dir=tmp_path / "spool",
                         listener=ListenerLimits(max_pdu_length=MAX_PDU, network_timeout=20))
    scp = DicomListener(config, host="127.0.0.1", port=0)
    _host, port = scp.start()
    try:
        yield scp, port
    finally:
        scp.stop()


def _echo(port: int) -> int:
    ae = AE(ae_title="CHECKER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=OUR_AE)
    assert assoc.is_established
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


def test_the_wrapped_pynetdicom_reader_is_the_one_pinned() -> None:
    """Fails when pynetdicom changes the reader we wrap: re-check pdu_limits.py, then the digests."""
    assert UPSTREAM_READER is DULServiceProvider._read_pdu_data
    assert str(inspect.signature(DULServiceProvider._read_pdu_data)) == "(self) -> None"
    for name, digest in PINNED.items():
        source = inspect.getsource(getattr(DULServiceProvider, name))
        assert hashlib.sha256(source.encode()).hexdigest() == digest, (
            f"pynetdicom {pynetdicom.__version__} changed DULServiceProvider.{name}")
    # The wrapper is reached through an instance attribute: the reactor must look it up on self.
    assert "self._read_pdu_data()" in inspect.getsource(DULServiceProvider._is_transport_event)


def test_the_caps_per_pdu_type() -> None:
    limits = PduLimits(max_p_data=MAX_PDU)
    assert limits.cap(PduType.P_DATA_TF) == MAX_PDU + P_DATA_SLACK
    assert limits.cap(PduType.A_ASSOCIATE_RQ) == ASSOCIATION_PDU_CAP
    assert limits.cap(PduType.A_ABORT) == 64
    assert limits.cap(0x55) is None  # unknown type: pynetdicom's own A-ABORT (unrecognized PDU)
    assert PduLimits(max_p_data=0).cap(PduType.P_DATA_TF) is None


def test_an_association_request_declaring_2_gb_is_aborted_at_once_without_growing_memory(listener) -> None:
    _scp, port = listener
    with RssWatch() as rss, socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(struct.pack(">BBL", PduType.A_ASSOCIATE_RQ, 0, TWO_GB) + b"\x00" * 4096)
        got, elapsed = read_until_closed(sock, timeout=10)
    print(f"\n2 GB A-ASSOCIATE-RQ header: answered {got[:10].hex()} in {elapsed * 1000:.0f} ms, "
          f"RSS growth {rss.growth_bytes / 2**20:.1f} MiB")
    assert got == EXPECTED_ABORT
    assert elapsed < 5
    assert rss.growth_bytes < 32 * 2**20
    assert _echo(port) == 0x0000


def test_a_p_data_pdu_longer_than_our_maximum_length_aborts_the_association(listener) -> None:
    _scp, port = listener
    ae = AE(ae_title="OVERSIZE")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=OUR_AE)
    assert assoc.is_established
    # What we advertise is finite, and what we enforce.
    assert assoc.acceptor.maximum_length == MAX_PDU
    with RssWatch() as rss:
        started = time.monotonic()
        assoc.dul.socket.send(struct.pack(">BBL", PduType.P_DATA_TF, 0, TWO_GB) + b"\x00" * 65536)
        while assoc.is_established and time.monotonic() - started < 10:
            time.sleep(0.01)
        elapsed = time.monotonic() - started
    print(f"\n2 GB P-DATA-TF header: association {'aborted' if assoc.is_aborted else 'still up'} in "
          f"{elapsed * 1000:.0f} ms, RSS growth {rss.growth_bytes / 2**20:.1f} MiB")
    assert assoc.is_aborted
    assert elapsed < 5
    assert rss.growth_bytes < 32 * 2**20
    # One byte past limit + slack is refused the same way, on an association a raw peer opened.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        associate_raw(sock, OUR_AE)
        sock.sendall(struct.pack(">BBL", PduType.P_DATA_TF, 0, MAX_PDU + P_DATA_SLACK + 1))
        got, _ = read_until_closed(sock, timeout=10)
    assert got == EXPECTED_ABORT
    assert _echo(port) == 0x0000


def test_a_normal_store_spanning_many_pdus_still_works(listener, tmp_path: Path) -> None:
    """A data set 8x our Maximum Length arrives in P-DATA PDUs of that length: all pass the check."""
    scp, port = listener
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "CT"
    ds.BitsAllocated = 8
    ds.PixelData = bytes(8 * MAX_PDU)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    received = []
    scp.on_instance = received.append
    assoc = ae.associate("127.0.0.1", port, ae_title=OUR_AE)
    assert assoc.is_established
    try:
        assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()
    assert [r.sop_instance_uid for r in received] == [ds.SOPInstanceUID]
