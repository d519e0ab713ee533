"""The PACS's time rules (PacsDeadlines) are a first-byte deadline and an inactivity limit, never a total deadline.

A private Orthanc (tests/faults/orthanc.py) with four NIST MR instances, reached through a loopback TCP proxy that
plays the WAN: it relays the PACS's answer (HTTP for WADO-RS, the DICOM association for C-GET) in small pieces
with gaps - slow but moving - or stops relaying part-way, or the Orthanc itself is SIGSTOPped.

- slow but moving, the fetch takes longer than first_byte + idle together and still delivers every instance
  byte for byte (a 1 GB study over a slow link must pass);
- an answer that stops part-way ends with PacsTimeout after ``idle`` seconds, not minutes;
- a PACS stalled during a C-MOVE: the fetch ends after ``idle`` and what reached the spool is removed;
- the pynetdicom internals the DIMSE watch reads are where it expects them (fails if upstream changes).
"""

from __future__ import annotations

import hashlib
import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests

from imaging_source.dicom import dimse_retrieve
from imaging_source.dicom.config import DicomConfig, FetchMethod, Peer
from imaging_source.dicom.fetch import FetchStream
from imaging_source.dicom.instances import PacsDeadlines, PacsTimeout, SeriesFetch
from imaging_source.dicom.scp import DicomListener
from tests.conftest import CORPUS_DIR
from tests.faults.orthanc import PrivateOrthanc, free_port, private_orthanc
from tests.imaging_source.http_proxies import LoopbackProxy

pytestmark = [pytest.mark.slow, pytest.mark.fault]

IMAGES = CORPUS_DIR / "nist" / "_imagecache" / "std" / "IDS-DEPT002-a" / "images"
XDSI_AET = "XDSI_RULES"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


class WanProxy(LoopbackProxy):
    """Relays the PACS's answer ``piece`` bytes at a time with ``gap`` seconds between pieces; after
    ``stop_after`` bytes of one connection's answer it relays nothing more (the connection stays open)."""

    def __init__(self, upstream_port: int, *, piece: int = 1 << 20, gap: float = 0.0,
                 stop_after: int | None = None) -> None:
        self.piece, self.gap, self.stop_after = piece, gap, stop_after
        self.stopped = threading.Event()
        self.stopped_at = 0.0
        self._sockets: list[socket.socket] = []
        super().__init__(upstream_port)

    def relay(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        self._sockets += [client, upstream]
        self.forward_requests(client, upstream)
        sent = 0
        try:
            while data := upstream.recv(self.piece):
                if self.stop_after is not None and sent + len(data) > self.stop_after:
                    client.sendall(data[:self.stop_after - sent])
                    self.stopped_at = time.monotonic()
                    self.stopped.set()
                    return  # silent from here on; the sockets stay open until close()
                client.sendall(data)
                sent += len(data)
                time.sleep(self.gap)
        except OSError:
            pass

    def close(self) -> None:
        super().close()
        for sock in self._sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


@pytest.fixture(scope="module")
def files() -> list[Path]:
    found = sorted(IMAGES.glob("*.dcm"))
    assert len(found) == 36, f"NIST images missing under {IMAGES}"
    return found


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory, files: list[Path]) -> Iterator[PrivateOrthanc]:
    with private_orthanc(tmp_path_factory.mktemp("rules-pacs"), xdsi_aet=XDSI_AET) as orthanc:
        orthanc.load(*files)
        yield orthanc


def _series(files: list[Path]) -> list[SeriesFetch]:
    groups: dict[tuple[str, str], list[str]] = {}
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        groups.setdefault((ds.StudyInstanceUID, ds.SeriesInstanceUID), []).append(ds.SOPInstanceUID)
    return [SeriesFetch(study, series, sops) for (study, series), sops in groups.items()]


def _pixels_sha1(data: bytes) -> str:
    """SHA-1 of an instance's Pixel Data (a C-GET'd instance gets a file meta of ours: compare the content)."""
    return hashlib.sha1(pydicom.dcmread(io.BytesIO(data)).PixelData).hexdigest()


def _originals(pacs: PrivateOrthanc, series: list[SeriesFetch]) -> dict[str, str]:
    """SOP Instance UID -> :func:`_pixels_sha1` of the instance as the PACS stores it."""
    out = {}
    for item in series:
        for sop in item.sop_instance_uids:
            found = requests.post(f"{pacs.rest_url}/tools/lookup", data=sop, timeout=30).json()
            data = requests.get(f"{pacs.rest_url}/instances/{found[0]['ID']}/file", timeout=30).content
            out[sop] = _pixels_sha1(data)
    return out


def _config(pacs: PrivateOrthanc, method: FetchMethod, proxy: WanProxy | None, spool: Path,
            scp_port: int = 11112) -> DicomConfig:
    if method == FetchMethod.WADO_RS:
        port = proxy.port if proxy is not None else pacs.http_port
        return DicomConfig(XDSI_AET, pacs.peer, f"http://127.0.0.1:{port}/dicom-web", method, spool_dir=spool)
    peer = Peer(pacs.ae_title, "127.0.0.1", proxy.port) if proxy is not None else pacs.peer
    return DicomConfig(XDSI_AET, peer, "", method, scp_port=scp_port, spool_dir=spool)


def _upstream(pacs: PrivateOrthanc, method: FetchMethod) -> int:
    return pacs.http_port if method == FetchMethod.WADO_RS else pacs.dicom_port


@pytest.mark.parametrize("method", [FetchMethod.WADO_RS, FetchMethod.C_GET])
def test_a_slow_but_moving_answer_passes_though_it_outlasts_first_byte_and_idle_together(
        pacs: PrivateOrthanc, files: list[Path], tmp_path: Path, method: FetchMethod) -> None:
    series = _series(files[:6])  # more than WADO_PER_INSTANCE_MAX: one WADO-RS answer for the series
    deadlines = PacsDeadlines(first_byte=1.0, idle=1.0)
    # ~0.8 MB in 32 kB pieces every 0.15 s: ~3.5 s of transfer, never 1 s without a byte.
    proxy = WanProxy(_upstream(pacs, method), piece=32768, gap=0.15)
    try:
        started = time.monotonic()
        stream = FetchStream(_config(pacs, method, proxy, tmp_path / "spool"), series,
                             accept_transfer_syntaxes=[EXPLICIT_LE], deadlines=deadlines)
        delivered = {key[1]: _pixels_sha1(instance.read_bytes()) for key, instance in stream}
        elapsed = time.monotonic() - started
    finally:
        proxy.close()
    assert delivered == _originals(pacs, series)
    assert elapsed > deadlines.first_byte + deadlines.idle, elapsed  # no total deadline cut it short


@pytest.mark.parametrize("method", [FetchMethod.WADO_RS, FetchMethod.C_GET])
def test_an_answer_that_stops_part_way_ends_after_the_idle_limit(
        pacs: PrivateOrthanc, files: list[Path], tmp_path: Path, method: FetchMethod) -> None:
    series = _series(files[:6])
    deadlines = PacsDeadlines(first_byte=5.0, idle=1.5)
    # One cut per connection, in the second instance; the C-FIND before a C-GET has a connection of its
    # own and stays far below it.
    proxy = WanProxy(_upstream(pacs, method), stop_after=200_000)
    try:
        stream = FetchStream(_config(pacs, method, proxy, tmp_path / "spool"), series,
                             accept_transfer_syntaxes=[EXPLICIT_LE], deadlines=deadlines)
        with pytest.raises(PacsTimeout, match="stopped sending"):
            for _ in stream:
                pass
        failed_at = time.monotonic()
    finally:
        proxy.close()
    assert proxy.stopped.is_set()
    # Not a first-byte failure: part of the answer came (an instance was complete before the cut).
    assert stream.result.instances, "the cut came before any instance: the test no longer cuts mid-answer"
    silent = failed_at - proxy.stopped_at
    assert deadlines.idle * 0.9 <= silent < deadlines.idle + 3.0, silent


def test_a_pacs_stalled_during_a_c_move_ends_the_fetch_and_leaves_nothing_in_the_spool(
        pacs: PrivateOrthanc, files: list[Path], tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    scp_port = free_port()
    config = _config(pacs, FetchMethod.C_MOVE, None, spool, scp_port)
    listener = DicomListener(config)
    listener.start()
    pacs.register("xdsi", XDSI_AET, "127.0.0.1", scp_port)
    series = _series(files)  # 36 instances: the PACS is still sending when the first one is spooled
    # C-MOVE's first answer on our association is the pending response after the first sub-operation:
    # a PACS stalled then breaks the first-byte rule, later the idle one - either ends the fetch.
    deadlines = PacsDeadlines(first_byte=2.0, idle=1.5)
    stalled_at: list[float] = []

    def stall_at_first_spooled() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if any(spool.glob("*.dcm")):
                pacs.stall()
                stalled_at.append(time.monotonic())
                return
            time.sleep(0.002)

    watcher = threading.Thread(target=stall_at_first_spooled)
    watcher.start()
    try:
        with pytest.raises(PacsTimeout):
            list(FetchStream(config, series, deadlines=deadlines))
        failed_at = time.monotonic()
    finally:
        watcher.join()
        # The listener first: a resumed Orthanc may send one more sub-operation before it notices the abort
        # (in production the listener's spool purge takes such a late copy).
        listener.stop()
        pacs.resume()
    assert stalled_at, "no instance reached the spool"
    assert failed_at - stalled_at[0] < max(deadlines.first_byte, deadlines.idle) + 3.0
    assert [p for p in spool.rglob("*") if p.is_file()] == []


def test_the_pynetdicom_internals_the_dimse_watch_reads_are_there(pacs: PrivateOrthanc, tmp_path: Path) -> None:
    """dimse_retrieve._AnswerWatch reads the DUL's idle timer and wakes a waiting send_*() through the DIMSE
    queue (pynetdicom 3.0.x).  If this fails, pynetdicom changed: the watch would fall back to a per-message
    DIMSE timeout - revisit it."""
    config = _config(pacs, FetchMethod.C_GET, None, tmp_path)
    ae = dimse_retrieve._timed_ae(config, PacsDeadlines(5.0, 5.0))
    ae.add_requested_context(dimse_retrieve.STUDY_ROOT_FIND)
    before = time.time()
    assoc = dimse_retrieve._associate(ae, config.pacs, PacsDeadlines(5.0, 5.0))
    try:
        last = dimse_retrieve._last_pdu_at(assoc)
        assert last is not None and before <= last <= time.time()  # restarted by the A-ASSOCIATE-AC
        assert hasattr(assoc.dimse.msg_queue, "put")
        assert assoc.acse_timeout == 5.0 and assoc.network_timeout == 5.0
    finally:
        assoc.release()
