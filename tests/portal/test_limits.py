"""portal.limits.acquire: a download that just ended frees its slot a moment later; the next one waits for it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from portal import limits


def test_acquire_gets_a_slot_freed_while_it_waits(tmp_path: Path) -> None:
    held = limits.try_acquire(tmp_path, "zip", 1)
    assert held is not None
    threading.Timer(0.3, held.release).start()
    started = time.monotonic()
    slot = limits.acquire(tmp_path, "zip", 1, wait=3.0)
    assert slot is not None and 0.25 <= time.monotonic() - started < 2.5
    slot.release()


def test_acquire_gives_up_after_its_wait_when_every_slot_stays_taken(tmp_path: Path) -> None:
    held = [limits.try_acquire(tmp_path, "zip", 2) for _ in range(2)]
    assert all(held)
    started = time.monotonic()
    assert limits.acquire(tmp_path, "zip", 2, wait=0.3) is None
    assert 0.3 <= time.monotonic() - started < 2.0
    for slot in held:
        slot.release()
    assert limits.acquire(tmp_path, "zip", 2, wait=0.0) is not None
