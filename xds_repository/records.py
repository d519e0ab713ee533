"""Bookkeeping of stored documents: pending -> registered, or discarded.

The order that makes "no orphans" hold (issue #4):

1. :func:`record_pending` writes one ``pending`` row per document *before* any
   byte is stored;
2. the bytes are stored (:func:`xds_repository.storage.put`);
3. ITI-42 is sent; on success :func:`mark_registered`, otherwise
   :func:`discard` removes the rows and the bytes.

A crash between 1 and 3 leaves ``pending`` rows, which
:mod:`xds_repository.reconcile` settles with the registry later.

Stored content is shared by name (content addressing), so a file is deleted
only when no row refers to it any more.  ``record_pending`` and ``discard``
take a per-content lock so that a discard cannot delete a file another
submission has just claimed (PostgreSQL: an advisory transaction lock;
SQLite: write transactions are already serialised, see config/settings.py).
"""

from __future__ import annotations

import os
import socket
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from django.core.files.storage import Storage
from django.db import connection, transaction
from django.utils import timezone

from xds_repository import storage as store
from xds_repository.models import StoredDocument


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


def process_identity() -> str:
    """``host/boot-id/pid/start-ticks`` of this process: unique even across pid reuse and reboots."""
    return f"{socket.gethostname()}/{_boot_id()}/{os.getpid()}/{_start_ticks(os.getpid()) or ''}"


def owner_is_dead(owner: str) -> bool:
    """True only when ``owner`` is a process of *this* host that no longer runs.

    A process of another host cannot be checked from here: False (the grace period applies).
    """
    try:
        host, boot_id, pid, ticks = owner.split("/")
    except ValueError:
        return False
    if host != socket.gethostname() or not ticks:
        return False
    if boot_id != _boot_id():
        return True  # this host rebooted since
    return _start_ticks(int(pid)) != ticks


def _lock_content(names: Iterable[str]) -> None:
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for name in sorted(set(names)):  # sorted: no lock-order deadlock between two submissions
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [zlib.crc32(name.encode()) - (1 << 31)])


def record_pending(documents: list[NewDocument], *, storage_alias: str) -> list[StoredDocument]:
    """Write the ``pending`` rows of one submission (one transaction)."""
    rows = [StoredDocument(unique_id=d.unique_id, mime_type=d.mime_type, hash=d.sha1, size=d.size,
                           storage_alias=storage_alias, storage_name=store.content_name(d.sha1),
                           state=StoredDocument.State.PENDING, owner=process_identity())
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
