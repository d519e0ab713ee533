"""Work the portal caps across all of this node's web worker processes: N slots as lock files.

A zip download holds one RAD-69 retrieval and one long HTTP response for minutes; gunicorn runs several
worker processes, so an in-process counter would cap each process, not the node.  Each slot is a file
``<directory>/<name>-<i>.lock`` locked with ``flock(LOCK_EX | LOCK_NB)``: the kernel holds the lock for the
open file and drops it when the file is closed or the process dies, so a crashed worker never leaks a
slot.  :func:`try_acquire` never waits; :func:`acquire` waits a moment (a download that just ended frees its
slot only when the server closes its response, a little after the client has the last byte); none free then
means "try later" (HTTP 503 with Retry-After).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import threading
import time
from pathlib import Path

_NAME = re.compile(r"[a-z][a-z0-9-]{0,30}")


class Slot:
    """A taken slot; :meth:`release` (idempotent, thread-safe) frees it."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path
        self._lock = threading.Lock()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def slot_paths(directory: Path, name: str, count: int) -> list[Path]:
    """The lock files of the ``count`` slots named ``name``."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"slot name {name!r}: lower-case letters, digits and '-'")
    if count < 1:
        raise ValueError("at least one slot")
    return [Path(directory) / f"{name}-{i}.lock" for i in range(count)]


def try_acquire(directory: Path, name: str, count: int) -> Slot | None:
    """A free slot of the ``count`` named ``name`` (taken), or None when all are taken; never blocks."""
    paths = slot_paths(directory, name, count)
    Path(directory).mkdir(parents=True, exist_ok=True)
    for path in paths:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            raise
        return Slot(fd, path)
    return None


def acquire(directory: Path, name: str, count: int, *, wait: float, poll: float = 0.05) -> Slot | None:
    """:func:`try_acquire`, tried again every ``poll`` seconds for at most ``wait`` seconds."""
    deadline = time.monotonic() + max(0.0, wait)
    while True:
        slot = try_acquire(directory, name, count)
        if slot is not None or time.monotonic() >= deadline:
            return slot
        time.sleep(poll)
