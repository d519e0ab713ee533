"""Bookkeeping of stored documents: pending -> registered, or discarded.

The order that makes "no orphans" hold (issue #4):

1. :func:`record_pending` writes one ``pending`` row per document *before* any
   byte is stored;
2. the bytes are stored (:func:`xds_repository.storage.put`);
3. ITI-42 is sent; on success :func:`mark_registered`; when the registry
   certainly did not register it, :func:`discard` removes the rows and the
   bytes; when its outcome is unknown, the rows stay ``pending``.

A crash between 1 and 3, or an unknown outcome, leaves ``pending`` rows, which
:mod:`xds_repository.reconcile` settles with the registry later.

Each row names its writer (``owner``): the process, and the request within it.
While the request runs it holds an exclusive ``flock`` on a small file named
after the request (:class:`InFlight`); the kernel drops the lock when the
request ends or its process dies, so reconcile can tell a request still under
way from one that is over -- even when the request could not write its end to
the database (the database was restarting: exactly when rows are left behind).

Stored content is shared by name (content addressing), so a file is deleted
only when no row refers to it any more.  ``record_pending`` and ``discard``
take a per-content lock so that a discard cannot delete a file another
submission has just claimed (PostgreSQL: an advisory transaction lock;
SQLite: write transactions are already serialised, see config/settings.py).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import socket
import uuid
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from django.core.files.storage import Storage
from django.db import connection, transaction
from django.utils import timezone

from xds_repository import storage as store
from xds_repository.models import StoredDocument

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NewDocument:
    unique_id: str
    mime_type: str
    sha1: str
    size: int


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks since boot (/proc/<pid>/stat field 22); None if the
    process is gone or a zombie (a killed worker whose parent died too may never be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


def _boot_time() -> float | None:
    """Wall-clock time of this boot (/proc/stat ``btime``, whole seconds)."""
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def process_started_at(pid: int) -> float | None:
    """Wall-clock start of process ``pid`` of this host (to ~1 s), None when it does not run.

    Lets a caller tell whether the process now holding a pid can be the one that wrote something
    (a file modified before the process started was written by an earlier holder of the pid).
    """
    ticks = _start_ticks(pid)
    if ticks is None:
        return None
    booted = _boot_time()
    if booted is None:
        return 0.0  # unknown: treat as running since boot (never "started after")
    return booted + int(ticks) / os.sysconf("SC_CLK_TCK")


def process_identity() -> str:
    """``host/boot-id/pid/start-ticks`` of this process: unique even across pid reuse and reboots."""
    return f"{socket.gethostname()}/{_boot_id()}/{os.getpid()}/{_start_ticks(os.getpid()) or ''}"


def owner_is_dead(owner: str) -> bool:
    """True only when ``owner`` is a process of *this* host that no longer runs.

    A process of another host cannot be checked from here: False (the grace period applies).
    """
    try:
        host, boot_id, pid, ticks = owner.split("/")[:4]
    except ValueError:
        return False
    if host != socket.gethostname() or not ticks:
        return False
    if boot_id != _boot_id():
        return True  # this host rebooted since
    return _start_ticks(int(pid)) != ticks


#: Name of an in-flight marker: the pid of its request's process, a random part.
MARKER = re.compile(r"(?P<pid>[0-9]+)-[0-9a-f]{32}")


class InFlight:
    """The marker of one ITI-41 while it runs: ``<directory>/<pid>-<random>``, held with ``flock(LOCK_EX)``.

    ``owner`` (``host/boot-id/pid/start-ticks/token``) goes on the rows the request writes.  Without a
    directory (a backend with no local files) or if the marker cannot be made, the owner names the process
    only, and reconcile falls back to the process's liveness and the grace period.
    """

    def __init__(self, directory: Path | None) -> None:
        self.token = f"{os.getpid()}-{uuid.uuid4().hex}"
        self.path: Path | None = None
        self._fd: int | None = None
        if directory is not None:
            try:
                directory.mkdir(parents=True, exist_ok=True)
                path = directory / self.token
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.path, self._fd = path, fd
            except OSError as exc:
                logger.warning("no in-flight marker for an ITI-41 (%s): reconcile will use the grace period",
                               exc.strerror)
        self.owner = process_identity() + (f"/{self.token}" if self.path is not None else "")

    def close(self) -> None:
        """The request is over: remove the marker (unlink first, so a reader never sees it free yet present)."""
        if self.path is not None and self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self.path = self._fd = None

    def __enter__(self) -> InFlight:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def marker_is_held(path: Path) -> bool:
    """True while the request of the marker at ``path`` runs (someone holds its lock)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops a lock taken just now
    return False


def request_is_over(owner: str, directory: Path | None) -> bool:
    """True only when ``owner`` names a request of a process of *this* host whose marker in ``directory``
    is gone or no longer held: the request ended (or its process died), whatever it managed to write."""
    parts = owner.split("/")
    if directory is None or len(parts) != 5 or parts[0] != socket.gethostname() or not MARKER.fullmatch(parts[4]):
        return False
    return not marker_is_held(directory / parts[4])


def _lock_content(names: Iterable[str]) -> None:
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for name in sorted(set(names)):  # sorted: no lock-order deadlock between two submissions
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [zlib.crc32(name.encode()) - (1 << 31)])


def record_pending(documents: list[NewDocument], *, storage_alias: str,
                   owner: str | None = None) -> list[StoredDocument]:
    """Write the ``pending`` rows of one submission (one transaction); ``owner`` defaults to this process."""
    owner = owner or process_identity()
    rows = [StoredDocument(unique_id=d.unique_id, mime_type=d.mime_type, hash=d.sha1, size=d.size,
                           storage_alias=storage_alias, storage_name=store.content_name(d.sha1),
                           state=StoredDocument.State.PENDING, owner=owner)
            for d in documents]
    with transaction.atomic():
        _lock_content(r.storage_name for r in rows)
        for row in rows:
            row.save(force_insert=True)
    return rows


def mark_registered(rows: list[StoredDocument]) -> None:
    with transaction.atomic():
        StoredDocument.objects.filter(pk__in=[r.pk for r in rows]).update(
            state=StoredDocument.State.REGISTERED, registered=timezone.now())


def discard(rows: list[StoredDocument], storage: Storage) -> None:
    """Remove rows and any stored content no other row refers to."""
    if not rows:
        return
    names = {r.storage_name for r in rows}
    with transaction.atomic():
        _lock_content(names)
        StoredDocument.objects.filter(pk__in=[r.pk for r in rows]).delete()
        still_used = set(StoredDocument.objects.filter(storage_name__in=names, storage_alias__in={
            r.storage_alias for r in rows}).values_list("storage_name", flat=True))
        # Deleted under the lock: a concurrent record_pending for the same content
        # waits, then finds no file and stores it again.
        for name in names - still_used:
            storage.delete(name)


def find_registered(unique_ids: list[str]) -> dict[str, StoredDocument]:
    """The registered row for each known uniqueId (the newest if ever several)."""
    found: dict[str, StoredDocument] = {}
    for row in StoredDocument.objects.filter(unique_id__in=unique_ids,
                                             state=StoredDocument.State.REGISTERED).order_by("created"):
        found[row.unique_id] = row
    return found
