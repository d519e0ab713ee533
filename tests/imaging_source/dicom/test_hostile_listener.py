"""The hostile corpus against the real ``manage.py xds_dicom_listener`` process, over loopback (issue 15).

Traversal UIDs, a deflate bomb, oversized PDUs, garbage PDUs (random bytes, an unknown PDU type, a
truncated PDU) and an association flood from one AE title: each must be refused, the listener must
answer C-ECHO (dcmtk's echoscu, an independent implementation) after each, and its resident memory
(read from /proc/<pid>) must stay bounded.  Nothing may be written outside the spool, and nothing
left in it.  The figures are printed (``FIGURE dicom-hostile ...``) for the README's Reliability table.
"""

from __future__ import annotations

import random
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from imaging_source.dicom.pdu_limits import PduType
from tests.faults.figures import report
from tests.faults.floods import dicom_listener, free_port

from .raw_peer import EXPECTED_ABORT, associate_raw, read_until_abort_or_closed
from .rss import RssWatch, vm_kib
from .test_hostile_store import BOMB_INFLATED, _deflated, _head, _part10

pytestmark = [pytest.mark.slow, pytest.mark.fault]

OUR_AE = "XDSI_IDS"
BASE_DIR = Path(__file__).resolve().parents[3]
TWO_GB = 2 * 1024**3 - 1
FLOOD = 24  # from one AE title; the default per-AE limit is 16
#: Peak RSS growth allowed over the whole corpus: the counting inflate keeps 1 MiB at a time, an
#: oversized PDU is never read, a refused association costs a thread for milliseconds.
RSS_BOUND_MB = 64


class Corpus:
    def __init__(self, port: int, tmp: Path, pid: int) -> None:
        self.port, self.tmp, self.pid = port, tmp, pid
        self.outcomes: dict[str, bool] = {}

    def echo(self) -> bool:
        """C-ECHO by dcmtk's echoscu (not pynetdicom): the listener is alive and answering."""
        done = subprocess.run(["echoscu", "-to", "10", "-aet", "CHECKER", "-aec", OUR_AE, "127.0.0.1", str(self.port)],
                              capture_output=True, text=True, timeout=30)
        return done.returncode == 0

    def case(self, name: str, attempt: Callable[[], bool]) -> None:
        refused = attempt()
        alive = self.echo()
        print(f"  {name}: {'refused' if refused else 'NOT REFUSED'}; C-ECHO afterwards {'OK' if alive else 'FAILED'}; "
              f"listener RSS {vm_kib('VmRSS', self.pid) / 1024:.0f} MiB")
        self.outcomes[name] = refused and alive

    def store(self, body: bytes, affected: str, *, move_originator: bool, ts: str | None = None) -> str:
        path = _part10(self.tmp / "peer.dcm", body, affected, *([ts] if ts else []))
        argv = [sys.executable, "-m", "tests.imaging_source.dicom.store_peer", "127.0.0.1", str(self.port), OUR_AE,
                str(path), *(["--move-originator", OUR_AE] if move_originator else [])]
        done = subprocess.run(argv, cwd=BASE_DIR, capture_output=True, text=True, timeout=120)
        return (done.stdout.strip().rsplit("\n", 1) or [""])[-1]

    def raw(self, data: bytes, *, associate: bool = False, close_early: bool = False) -> bytes:
        """Send ``data`` on a fresh connection (after an association if asked); what came back until
        the listener sent an A-ABORT or closed the connection (within 10 s, else b"?")."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            if associate:
                associate_raw(sock, OUR_AE, calling="GARBAGE")
            try:
                sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the listener already closed: what it sent before is still to be read
            if close_early:
                return b""
            return read_until_abort_or_closed(sock, timeout=10)


def test_hostile_corpus_against_the_listener_process(tmp_path: Path) -> None:
    settings = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'xds.sqlite3'}",
        "XDS_VAR_DIR": str(tmp_path / "var"),
        "DICOM_SPOOL_DIR": str(tmp_path / "spool"),
        "DICOM_PACS": f"NOBODY@127.0.0.1:{free_port()}",  # no PACS: the listener only receives
        "LOG_LEVEL": "WARNING",
    }
    peer_dir = tmp_path / "peer"
    peer_dir.mkdir()
    with dicom_listener(settings, ae_title=OUR_AE) as listener:
        pid = listener.process.pid
        corpus = Corpus(listener.peer.port, peer_dir, pid)
        # Warm up (imports, first association) before the baseline.
        good = generate_uid()
        assert corpus.store(_head(good), good, move_originator=True) == "status=0x0000"
        assert corpus.echo()
        rss_before = vm_kib("VmRSS", pid) / 1024
        print("\nhostile corpus against manage.py xds_dicom_listener:")
        with RssWatch(pid) as rss:
            for label, uid in (("traversal UID", "../../../tmp/x"), ("traversal after a UID", "1.2.3/../../x")):
                for move in (True, False):
                    corpus.case(f"{label} ({'C-MOVE answer' if move else 'incoming'})",
                                lambda uid=uid, move=move: corpus.store(_head(uid), uid, move_originator=move)
                                == "status=0x0117")
            bomb_uid = generate_uid()
            bomb = _deflated(_head(bomb_uid), BOMB_INFLATED)
            corpus.case(f"deflate bomb ({len(bomb) // 1024} KiB -> {BOMB_INFLATED // 2**20} MiB)",
                        lambda: corpus.store(bomb, bomb_uid, move_originator=False,
                                             ts=DeflatedExplicitVRLittleEndian) == "status=0xA7DF")
            corpus.case("A-ASSOCIATE-RQ declaring 2 GB",
                        lambda: corpus.raw(struct.pack(">BBL", PduType.A_ASSOCIATE_RQ, 0, TWO_GB) + bytes(4096))
                        == EXPECTED_ABORT)
            corpus.case("P-DATA-TF declaring 2 GB",
                        lambda: corpus.raw(struct.pack(">BBL", PduType.P_DATA_TF, 0, TWO_GB) + bytes(65536),
                                           associate=True) == EXPECTED_ABORT)
            # pynetdicom's own answers to broken PDUs: A-ABORT (PS3.8 9.2 AA-1 / AA-8) or a close.
            corpus.case("random bytes", lambda: _aborted_or_closed(corpus.raw(random.Random(15).randbytes(64 * 1024))))
            corpus.case("unknown PDU type 0x55",
                        lambda: _aborted_or_closed(corpus.raw(struct.pack(">BBL", 0x55, 0, 10) + bytes(10))))
            corpus.case("truncated A-ASSOCIATE-RQ (peer closes)",
                        lambda: corpus.raw(struct.pack(">BBL", PduType.A_ASSOCIATE_RQ, 0, 1000) + bytes(100),
                                           close_early=True) == b"")
            corpus.case("P-DATA-TF that is not PDVs",
                        lambda: _aborted_or_closed(corpus.raw(struct.pack(">BBL", PduType.P_DATA_TF, 0, 8)
                                                              + b"\xff" * 8, associate=True)))
            flood, held = _flood(corpus.port)
            try:
                other = corpus.echo()  # another AE title during the flood
                flood_refused = sum(1 for a in flood if a.is_rejected)
                flood_figures = {"flood_held": held, "flood_rejected": flood_refused}
                corpus.outcomes[f"association flood ({FLOOD} from one AE)"] = flood_refused == FLOOD - 16 and other
                print(f"  association flood: {held} held, {flood_refused} rejected (local-limit-exceeded); "
                      f"C-ECHO from another AE during it {'OK' if other else 'FAILED'}")
            finally:
                for assoc in flood:
                    if assoc.is_established:
                        assoc.release()
        alive = corpus.echo()
        rss_after = vm_kib("VmRSS", pid) / 1024
        growth_mb = rss.growth_bytes / 2**20
        assert listener.process.poll() is None, "the listener died"
    left = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "spool").rglob("*")
                  if p.is_file() and not p.name.startswith(f"{good}."))
    stray = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("x"))
    refused = sum(corpus.outcomes.values())
    report("dicom-hostile", cases=len(corpus.outcomes), refused=refused, alive=alive,
           rss_before_mb=round(rss_before, 1), rss_peak_growth_mb=round(growth_mb, 1),
           rss_after_mb=round(rss_after, 1), files_left=len(left) + len(stray), **flood_figures)
    assert [name for name, ok in corpus.outcomes.items() if not ok] == []
    assert alive
    assert growth_mb < RSS_BOUND_MB
    assert left == [] and stray == []


def _aborted_or_closed(got: bytes) -> bool:
    """An A-ABORT (type 7) or a plain close.  After pynetdicom's own A-ABORT for a PDU it cannot
    read (PS3.8 9.2: AA-1 / AA-8), the connection waits in Sta13 for the peer to close it, at most the
    ARTIM time (DICOM_ACSE_TIMEOUT): that wait is not a failure to refuse."""
    return got == b"" or (got[:1] == b"\x07" and len(got) == 10)


def _flood(port: int, count: int = FLOOD) -> tuple[list, int]:
    ae = AE(ae_title="FLOOD")
    ae.add_requested_context(Verification)
    ae.network_timeout = 600
    assocs = [ae.associate("127.0.0.1", port, ae_title=OUR_AE) for _ in range(count)]
    return assocs, sum(1 for a in assocs if a.is_established)


def test_the_flood_is_released_by_the_network_timeout(tmp_path: Path) -> None:
    """Idle associations (a peer that never releases) are aborted after DICOM_NETWORK_TIMEOUT, so the
    AE title's share comes back without anyone's help."""
    settings = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'xds.sqlite3'}",
        "XDS_VAR_DIR": str(tmp_path / "var"),
        "DICOM_SPOOL_DIR": str(tmp_path / "spool"),
        "DICOM_PACS": f"NOBODY@127.0.0.1:{free_port()}",
        "DICOM_NETWORK_TIMEOUT": "2",
        "DICOM_MAX_ASSOCIATIONS_PER_AE": "4",
        "LOG_LEVEL": "WARNING",
    }
    with dicom_listener(settings, ae_title=OUR_AE) as listener:
        flood, held = _flood(listener.peer.port, 6)
        assert (held, sum(1 for a in flood if a.is_rejected)) == (4, 2)
        started = time.monotonic()
        while any(a.is_established for a in flood) and time.monotonic() - started < 20:
            time.sleep(0.1)
        released_after = time.monotonic() - started
        again, held_again = _flood(listener.peer.port, 4)
        for assoc in again:
            if assoc.is_established:
                assoc.release()
    print(f"\nidle associations aborted by the listener after {released_after:.1f} s (network timeout 2 s); "
          f"then {held_again} held again")
    report("dicom-idle-release", network_timeout_s=2, released_after_s=round(released_after, 1))
    assert released_after < 10
    assert held_again == 4
