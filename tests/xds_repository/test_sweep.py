"""The sweep of temporary files: a dead writer's MTOM spill files and storage temporaries go, a live
writer's stay, and nothing else in a shared temp directory is touched.

Real processes: the "dead" owners are child processes that have exited (or were killed with SIGKILL
while the real MTOM reader was writing their spill file), the "live" ones are running children.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from xds_core.soap.envelope import build_envelope, render_message
from xds_core.soap.mtom import OutgoingPart
from xds_repository import records
from xds_repository import storage as store
from xds_repository.sweep import sweep

GRACE = 3600.0


def dead_pid() -> int:
    """The pid of a process that has run and exited (reaped: nothing of it is left)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def live_child() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield child
    child.kill()
    child.wait()


def test_a_dead_writers_spill_file_is_removed_and_a_live_ones_kept(
        tmp_path: Path, live_child: subprocess.Popen[bytes]) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    dead = spool / f"xds-part-{dead_pid()}-abc.bin"
    mine = spool / f"xds-part-{os.getpid()}-def.bin"
    other_live = spool / f"xds-part-{live_child.pid}-ghi.bin"
    unrelated = spool / f"something-{dead_pid()}-else.bin"  # not ours, whatever its name says
    for path in (dead, mine, other_live, unrelated):
        path.write_bytes(b"part bytes")
    report = sweep(spool_dirs=[spool], storage=store.ContentAddressedStorage(tmp_path / "docs"), grace=GRACE)
    assert (report.examined, report.removed, report.failed) == (3, 1, 0)
    assert sorted(p.name for p in spool.iterdir()) == sorted([mine.name, other_live.name, unrelated.name])


def test_a_file_older_than_the_live_process_holding_its_pid_is_a_dead_writers(
        tmp_path: Path, live_child: subprocess.Popen[bytes]) -> None:
    """pid reuse: the process now holding the pid started after the file was last written."""
    spool = tmp_path / "spool"
    spool.mkdir()
    reused = spool / f"xds-part-{live_child.pid}-old.bin"
    reused.write_bytes(b"left by an earlier holder of the pid")
    an_hour_ago = time.time() - 3600
    os.utime(reused, (an_hour_ago, an_hour_ago))
    assert sweep(spool_dirs=[spool], storage=store.ContentAddressedStorage(tmp_path / "d"), grace=GRACE).removed == 1
    assert not reused.exists()


def test_a_file_naming_no_writer_is_removed_only_after_the_grace_period(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    old, recent = spool / "xds-part-k2j3h4.bin", spool / "xds-part-z9y8x7.bin"  # names of before the pid
    for path in (old, recent):
        path.write_bytes(b"x")
    os.utime(old, (time.time() - 120, time.time() - 120))
    assert sweep(spool_dirs=[spool], storage=store.ContentAddressedStorage(tmp_path / "d"), grace=60).removed == 1
    assert [p.name for p in spool.iterdir()] == [recent.name]


def test_storage_temporaries_of_a_dead_writer_go_and_stored_documents_stay(
        tmp_path: Path, live_child: subprocess.Popen[bytes]) -> None:
    storage = store.ContentAddressedStorage(tmp_path / "docs")
    content = b"a stored document"
    sha1 = hashlib.sha1(content).hexdigest()
    name = store.put(storage, sha1=sha1, size=len(content), path=None, open_stream=lambda: io.BytesIO(content))
    fan_out = (tmp_path / "docs" / name).parent
    dead = fan_out / f".tmp-{dead_pid()}-1234"
    live = fan_out / f".tmp-{live_child.pid}-5678"
    for path in (dead, live):
        path.write_bytes(b"half a document")
    report = sweep(spool_dirs=[], storage=storage, grace=GRACE)
    assert (report.examined, report.removed) == (2, 1)
    assert sorted(p.name for p in fan_out.iterdir()) == sorted([sha1, live.name])
    assert storage.open(name).read() == content


def test_storage_temporaries_carry_the_writers_pid(tmp_path: Path) -> None:
    storage = store.ContentAddressedStorage(tmp_path / "docs")
    assert store.temporary_prefix() == f".tmp-{os.getpid()}-"
    seen: list[list[str]] = []

    class Watching(store.ContentAddressedStorage):
        @staticmethod
        def _copy_chunks(content: object, out: object) -> None:
            seen.append([p.name for p in storage.temporary_files()])
            store.ContentAddressedStorage._copy_chunks(content, out)  # type: ignore[arg-type]

    watching = Watching(tmp_path / "docs")
    store.put(watching, sha1=hashlib.sha1(b"abc").hexdigest(), size=3, path=None,
              open_stream=lambda: io.BytesIO(b"abc"))
    assert len(seen) == 1 and len(seen[0]) == 1 and seen[0][0].startswith(f".tmp-{os.getpid()}-")
    assert list(storage.temporary_files()) == []  # renamed away once written


_SPILLING_READER = """
import sys
from xds_core.soap.mtom_reader import read_message
read_message(sys.argv[1], sys.stdin.buffer, content_length=int(sys.argv[2]), max_size=1 << 30,
             max_xml_size=1 << 20, spool_dir=sys.argv[3])
"""


def test_the_spill_file_of_a_reader_killed_mid_part_is_swept(tmp_path: Path) -> None:
    """The real MTOM reader in a child process spills a large part, is killed with SIGKILL mid-part, and
    its file (named with its pid) is removed by the sweep."""
    spool = tmp_path / "spool"
    spool.mkdir()
    body = etree.Element("{urn:test}Body")
    envelope = build_envelope("urn:test:action", body)
    part = OutgoingPart("part1@test", "application/octet-stream", os.urandom(4 << 20))
    content_type, length, chunks = render_message(envelope, [part], action="urn:test:action", mtom=True)
    message = b"".join(chunks)
    assert length == len(message)
    reader = subprocess.Popen([sys.executable, "-c", _SPILLING_READER, content_type, str(length), str(spool)],
                              stdin=subprocess.PIPE, cwd=Path(__file__).resolve().parents[2])
    try:
        assert reader.stdin is not None
        reader.stdin.write(message[:-(1 << 20)])  # all but the part's last MiB: the reader waits for it
        reader.stdin.flush()
        deadline = time.monotonic() + 30
        while not list(spool.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
        [spilled] = list(spool.iterdir())
        assert spilled.name.startswith(f"xds-part-{reader.pid}-")
        assert sweep(spool_dirs=[spool], storage=store.ContentAddressedStorage(tmp_path / "d"),
                     grace=GRACE).removed == 0  # its reader is alive
    finally:
        reader.send_signal(signal.SIGKILL)
        reader.wait()
    report = sweep(spool_dirs=[spool], storage=store.ContentAddressedStorage(tmp_path / "d"), grace=GRACE)
    assert report.removed == 1 and list(spool.iterdir()) == []


def test_in_flight_markers_nobody_holds_are_swept_and_held_ones_kept(
        tmp_path: Path, live_child: subprocess.Popen[bytes]) -> None:
    storage = store.ContentAddressedStorage(tmp_path / "docs")
    markers = store.inflight_dir(storage)
    assert markers is not None
    held = records.InFlight(markers)
    try:
        dead = markers / f"{dead_pid()}-{'a' * 32}"
        young_unheld = markers / f"{live_child.pid}-{'b' * 32}"
        old_unheld = markers / f"{live_child.pid}-{'c' * 32}"
        for path in (dead, young_unheld, old_unheld):
            path.write_bytes(b"")
        os.utime(old_unheld, (time.time() - 600, time.time() - 600))
        report = sweep(spool_dirs=[], storage=storage, grace=GRACE)
        assert (report.examined, report.removed) == (4, 2)
        assert held.path is not None
        assert sorted(p.name for p in markers.iterdir()) == sorted([held.path.name, young_unheld.name])
    finally:
        held.close()
    assert [p.name for p in markers.iterdir()] == [young_unheld.name]
