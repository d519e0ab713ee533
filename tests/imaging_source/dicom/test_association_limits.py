"""Association limits and timeouts of our listener (imaging_source/dicom/acceptor.py), over loopback.

Before: pynetdicom's single limit (10 associations of any peer) let about eight idle associations lock
every modality out, and an idle or stalled peer held its thread until it left.  Now: per Calling AE
Title and total limits answered with A-ASSOCIATE-RJ rejected-transient / local-limit-exceeded
(PS3.8 Table 9-21), and the network timeout ends idle and stalled associations.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from imaging_source.dicom.acceptor import LOCAL_LIMIT_EXCEEDED, REJECTED_TRANSIENT
from imaging_source.dicom.config import DicomConfig, ListenerLimits, Peer
from imaging_source.dicom.scp import DicomListener, ReceivedInstance

OUR_AE = "XDSI_IDS"


def _listener(tmp_path: Path, limits: ListenerLimits) -> tuple[DicomListener, int, list[ReceivedInstance]]:
    received: list[ReceivedInstance] = []
    config = DicomConfig(OUR_AE, Peer("ORTHANC", "127.0.0.1", 1), spool_dir=tmp_path / "spool", listener=limits)
    scp = DicomListener(config, on_instance=received.append, host="127.0.0.1", port=0)
    _host, port = scp.start()
    return scp, port, received


@pytest.fixture
def small(tmp_path: Path) -> Iterator[tuple[DicomListener, int, list[ReceivedInstance]]]:
    scp, port, received = _listener(tmp_path, ListenerLimits(max_associations=5, max_associations_per_ae=3,
                                                             network_timeout=30))
    try:
        yield scp, port, received
    finally:
        scp.stop()


class Held:
    """Associations held open (silent) by one calling AE title."""

    def __init__(self, port: int, calling: str) -> None:
        self.ae = AE(ae_title=calling)
        self.ae.add_requested_context(Verification)
        self.ae.network_timeout = 600  # our side must not be the one that gives up
        self.port = port
        self.assocs: list = []

    def open(self) -> tuple[object, float]:
        started = time.perf_counter()
        assoc = self.ae.associate("127.0.0.1", self.port, ae_title=OUR_AE)
        self.assocs.append(assoc)
        return assoc, time.perf_counter() - started

    def close(self) -> None:
        for assoc in self.assocs:
            if assoc.is_established:
                assoc.abort()


def _rejection(assoc) -> tuple[int, int, int]:
    rsp = assoc.acceptor.primitive
    return int(rsp.result), int(rsp.result_source), int(rsp.diagnostic)


def _store(port: int, calling: str) -> tuple[int, float]:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "CT"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ae = AE(ae_title=calling)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    started = time.perf_counter()
    assoc = ae.associate("127.0.0.1", port, ae_title=OUR_AE)
    assert assoc.is_established, f"{calling} could not associate"
    try:
        status = int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()
    return status, time.perf_counter() - started


def test_per_ae_and_total_limits_reject_transient_local_limit_exceeded(small) -> None:
    _scp, port, received = small
    flood, other = Held(port, "FLOOD"), Held(port, "OTHER")
    try:
        for _ in range(3):
            assert flood.open()[0].is_established
        refused, _ = flood.open()  # a 4th from the same AE
        assert refused.is_rejected
        assert _rejection(refused) == (REJECTED_TRANSIENT, 0x03, LOCAL_LIMIT_EXCEEDED)
        # Another AE title is not locked out by FLOOD.
        assert _store(port, "MODALITY") == (0x0000, pytest.approx(0, abs=1.0))
        assert len(received) == 1
        for _ in range(2):
            assert other.open()[0].is_established
        full, _ = Held(port, "THIRD").open()  # 5 held: the total is reached
        assert full.is_rejected and _rejection(full) == (REJECTED_TRANSIENT, 0x03, LOCAL_LIMIT_EXCEEDED)
        flood.close()
        time.sleep(0.5)  # the aborted associations' threads end
        assert _store(port, "THIRD")[0] == 0x0000  # room again
    finally:
        flood.close()
        other.close()


def test_twenty_idle_associations_of_one_ae_do_not_delay_another_aes_store(tmp_path: Path) -> None:
    scp, port, _received = _listener(tmp_path, ListenerLimits())  # the defaults: 64 in total, 16 per AE
    flood = Held(port, "FLOOD")
    try:
        outcomes = [flood.open()[0] for _ in range(20)]
        established = sum(a.is_established for a in outcomes)
        rejected = sum(a.is_rejected for a in outcomes)
        status, elapsed = _store(port, "MODALITY")
        print(f"\n20 idle associations from one AE: {established} held, {rejected} rejected; "
              f"C-STORE from another AE answered in {elapsed * 1000:.0f} ms")
        assert (established, rejected) == (16, 4)
        assert status == 0x0000
        assert elapsed < 1.0
    finally:
        flood.close()
        scp.stop()


def test_idle_and_stalled_associations_and_silent_connections_are_dropped(tmp_path: Path) -> None:
    scp, port, _received = _listener(tmp_path, ListenerLimits(network_timeout=1.0, acse_timeout=1.0))
    try:
        held = Held(port, "IDLER")
        idle, _ = held.open()
        assert idle.is_established
        stalled, _ = held.open()
        # Half a PDU: a P-DATA-TF header that announces 100 bytes, 10 of them sent, then silence.
        stalled.dul.socket.send(struct.pack(">BBL", 0x04, 0, 100) + b"\x00" * 10)
        silent = socket.create_connection(("127.0.0.1", port))  # never sends an A-ASSOCIATE-RQ
        silent.settimeout(10)
        started = time.monotonic()
        while (idle.is_established or stalled.is_established) and time.monotonic() - started < 10:
            time.sleep(0.05)
        assert not idle.is_established and idle.is_aborted
        assert not stalled.is_established
        try:
            silent_got = silent.recv(100)  # EOF once ARTIM (the ACSE timeout) expires; socket timeout 10 s
        except ConnectionResetError:
            silent_got = b""
        assert silent_got == b""
        silent_closed_after = time.monotonic() - started
        silent.close()
        elapsed = time.monotonic() - started
        print(f"\nidle/stalled associations dropped after {elapsed:.1f} s (network timeout 1 s); "
              f"silent connection closed after {silent_closed_after:.1f} s (ACSE timeout 1 s)")
        assert elapsed < 8
        while scp.server.active_associations and time.monotonic() - started < 15:
            time.sleep(0.05)  # their threads end right after
        assert scp.server.active_associations == []
    finally:
        scp.stop()


def test_connections_past_twice_the_limit_are_closed_at_once(tmp_path: Path) -> None:
    scp, port, _received = _listener(tmp_path, ListenerLimits(max_associations=2, max_associations_per_ae=2,
                                                              acse_timeout=30))
    sockets = []
    try:
        for _ in range(4):  # silent connections: each holds an acceptor thread until ARTIM
            sockets.append(socket.create_connection(("127.0.0.1", port)))
        deadline = time.monotonic() + 5
        while len(scp.server.active_associations) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        extra = socket.create_connection(("127.0.0.1", port))
        extra.settimeout(5)
        assert extra.recv(10) == b""  # closed by the server without a thread
        extra.close()
        assert len(scp.server.active_associations) == 4
    finally:
        for sock in sockets:
            sock.close()
        scp.stop()
