"""What a PACS fetch delivers: instances (in memory or spilled to files), per series, with failures.

Shared by every fetch method (:mod:`.wado_rs`, :mod:`.dimse_retrieve`) and by :mod:`.fetch`, which
chooses the method.  The :class:`Collector` keeps only the requested instances, in arrival order,
and spills past a memory limit.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imaging_source.dicom.part10 import file_meta_uids
from xds_core.identifiers import is_dicom_uid

#: Keep fetched instances in memory up to this many bytes per request, then spill to files.
DEFAULT_MEMORY_LIMIT = 256 * 1024 * 1024


class FetchError(RuntimeError):
    """The PACS could not be asked (association refused, HTTP error, failure status for the whole series)."""


class PacsTimeout(FetchError):
    """The PACS broke a time rule of :class:`PacsDeadlines`: the whole fetch ends (a PACS that stopped
    answering one request would cost every later series the same wait)."""


@dataclass(frozen=True, slots=True)
class PacsDeadlines:
    """Time rules for the PACS's answers that a WAN survives (issue 15): never a total deadline.

    ``first_byte``: seconds from a request (WADO-RS GET, A-ASSOCIATE-RQ, C-FIND/C-GET/C-MOVE-RQ) to
    the first byte of the PACS's answer - a PACS that has stopped (hung, SIGSTOPped, overloaded) is
    found out after this long, not after minutes.  ``idle``: seconds the PACS may then stay silent
    between two reads (WADO-RS) or two PDUs (DIMSE) of the same answer.  A legitimate 1 GB transfer
    over 100 Mbit/s (~80 s) passes: it never goes ``idle`` seconds without a byte.  Built by the
    view layer from XDS_PACS_FIRST_BYTE_TIMEOUT / XDS_PACS_IDLE_TIMEOUT (:meth:`from_settings`).
    """

    first_byte: float
    idle: float

    def __post_init__(self) -> None:
        if not (self.first_byte > 0 and self.idle > 0):
            raise ValueError(f"PACS deadlines must be positive: {self}")

    @classmethod
    def from_settings(cls, settings: Any) -> PacsDeadlines:
        """From a settings object (``django.conf.settings``) passed in by the caller."""
        return cls(first_byte=float(settings.XDS_PACS_FIRST_BYTE_TIMEOUT), idle=float(settings.XDS_PACS_IDLE_TIMEOUT))


#: For callers that pass none (commands, tests): the settings' defaults (config/settings.py).
DEFAULT_DEADLINES = PacsDeadlines(first_byte=30.0, idle=60.0)


@dataclass(slots=True)
class FetchedInstance:
    """One instance as the PACS delivered it: Part 10 bytes in memory or in a spill file."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    #: bytes, or a view into the chunk the PACS's answer arrived in (WADO-RS; never copied).
    data: bytes | memoryview | None = None
    path: Path | None = None
    #: Bytes of ``data`` counted against the fetch's memory limit until :meth:`FetchStream.release`.
    counted: int = 0

    @property
    def size(self) -> int:
        if self.data is not None:
            return len(self.data)
        assert self.path is not None
        return self.path.stat().st_size

    def read_bytes(self) -> bytes:
        if self.data is not None:
            return bytes(self.data)  # a view into a received chunk -> bytes (no copy when already bytes)
        assert self.path is not None
        return self.path.read_bytes()

    def discard(self) -> None:
        """Forget the content; removes the spill file if any."""
        self.data = None
        if self.path is not None:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass


@dataclass
class SeriesFetch:
    """What to fetch: one series of one study, a set of SOP Instance UIDs in it."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uids: list[str]


@dataclass
class FetchResult:
    #: (Series Instance UID, SOP Instance UID) -> instance: an instance counts only in the series it is in.
    instances: dict[tuple[str, str], FetchedInstance] = field(default_factory=dict)
    #: Series the PACS could not deliver at all, with the reason (their instances are missing too).
    failures: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        for instance in self.instances.values():
            instance.discard()


class Collector:
    """Collects delivered instances, keeping only the requested ones, spilling past the memory limit."""

    def __init__(self, wanted: Collection[tuple[str, str]], memory_limit: int, spool_dir: Path | None,
                 studies: dict[str, set[str]] | None = None) -> None:
        self.wanted = set(wanted)
        #: Series Instance UID -> the Study Instance UID(s) it was requested under.
        self.studies = studies or {}
        self.result = FetchResult()
        self.memory_limit = memory_limit
        self.in_memory = 0
        self.spool_dir = spool_dir
        self.lock = threading.Lock()
        self.order: list[tuple[str, str]] = []  # keys in delivery order
        self._yielded = 0

    def release(self, instance: FetchedInstance) -> None:
        """``instance`` has been passed on: forget it, and its memory no longer counts against the limit."""
        with self.lock:
            self.in_memory -= instance.counted
            instance.counted = 0
        instance.discard()

    def take_new(self) -> list[tuple[tuple[str, str], FetchedInstance]]:
        """Instances delivered since the last call (for streaming consumers)."""
        with self.lock:
            keys, self._yielded = self.order[self._yielded:], len(self.order)
        return [(key, self.result.instances[key]) for key in keys]

    def add(self, data: bytes | memoryview, series_uid: str, sop_uid: str | None = None, sop_class: str | None = None,
            ts_uid: str | None = None, *, study_uid: str | None = None) -> FetchedInstance | None:
        """Keep ``data`` if (series, SOP UID) was asked for; ``series_uid`` is where the instance really is.

        Returns the kept instance, or None (not asked for, or delivered twice: the first one counts).

        ``study_uid``, when given, is the instance's real study: an instance requested under another
        study is not the requested document (RAD TF-3 4.69.4.1.2: Study/Series/SOP UIDs identify it
        together; NIST ids_4812 case 4).  A PACS may resolve a SERIES/IMAGE-level C-GET or C-MOVE by its
        own unique key and ignore a wrong StudyInstanceUID, so the delivered data set is checked.
        """
        if study_uid is not None and series_uid in self.studies and study_uid not in self.studies[series_uid]:
            return None
        if sop_uid is None or ts_uid is None:
            meta_class, meta_instance, meta_ts = file_meta_uids(data)
            sop_uid = sop_uid or meta_instance or ""
            sop_class = sop_class or meta_class or ""
            ts_uid = ts_uid or meta_ts or ""
        key = (series_uid, sop_uid)
        if key not in self.wanted:
            return None
        with self.lock:
            if key in self.result.instances:
                return None
            instance = FetchedInstance(sop_uid, sop_class or "", ts_uid)
            if self.in_memory + len(data) <= self.memory_limit or self.spool_dir is None:
                instance.data = data
                instance.counted = len(data)
                self.in_memory += len(data)
            else:
                self.spool_dir.mkdir(parents=True, exist_ok=True)
                fd, name = tempfile.mkstemp(prefix="rad69-", suffix=".dcm", dir=self.spool_dir)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                instance.path = Path(name)
            self.result.instances[key] = instance
            self.order.append(key)
        return instance


def checked_uids(item: SeriesFetch, *, instances: bool = True) -> None:
    """Only DICOM UIDs (PS3.5 §9.1) go into a WADO-RS path or a DIMSE identifier: FetchError for any other
    (``../``, ``?``, a ``\\`` that would make a UID list).  RAD-69 and RAD-55 refuse such requests before they
    fetch; this is the last line.  ``instances=False``: the SOP Instance UIDs are not sent (series request)."""
    uids = (item.study_instance_uid, item.series_instance_uid, *(item.sop_instance_uids if instances else ()))
    bad = next((uid for uid in uids if not is_dicom_uid(uid)), None)
    if bad is not None:
        raise FetchError(f"{bad!r} is not a DICOM UID (PS3.5 9.1)")
