"""Where retrieved instances go: the contract every destination meets.

The retrieval (:mod:`consumer.retrieval`) hands each instance of a manifest to one destination.  A
destination is resumable: :meth:`Destination.has` says whether an instance is already there, complete
(a whole Part 10 object whose SOP Instance UID and SOP Class UID match the manifest), so a run that was
interrupted completes on the next run without fetching what it has.  :meth:`Destination.put` stores
one instance whole or not at all (files: temp + fsync + rename; a PACS: one C-STORE); a destination that
stores in batches (STOW-RS, :class:`BatchingDestination`) queues in ``put`` and says in ``flush`` which
queued instances it could not store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True, slots=True)
class InstanceRef:
    """One instance named by a manifest (KOS evidence: study, series, SOP Instance and SOP Class)."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str


class DestinationError(Exception):
    """The destination could not store an instance (disk full, PACS refused it, ...); the message says why."""


class Destination(Protocol):
    def has(self, ref: InstanceRef) -> bool:
        """True when ``ref`` is already stored, complete and matching the manifest."""
        ...

    def put(self, ref: InstanceRef, part10: Path | bytes) -> None:
        """Store the Part 10 object ``part10`` (a file, or its bytes; already checked against ``ref``); whole
        or not at all.

        Raises :class:`DestinationError`; the file at ``part10`` stays the caller's.
        """
        ...

    def close(self) -> None:
        """Release connections (an association, an HTTP session)."""
        ...


class SeriesAwareDestination(Destination, Protocol):
    """A destination that can say what it holds of a whole series in one question (a PACS: one C-FIND or
    QIDO-RS instead of one per instance); the retrieval uses it when a destination has it."""

    def series_present(self, study_uid: str, series_uid: str) -> dict[str, str]:
        """{SOP Instance UID: SOP Class UID} of what the destination holds of the series."""
        ...



class BatchingDestination(Destination, Protocol):
    """A destination whose :meth:`put` queues (e.g. one STOW-RS request for many instances)."""

    def flush(self) -> dict[str, str]:
        """Store what is queued; {SOP Instance UID: why} of each instance queued since the last flush that
        was not stored."""
        ...
