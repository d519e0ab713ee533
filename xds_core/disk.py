"""Free space on a file system, and the watermark below which new content is refused.

A repository that fills its disk fails in the worst place: mid-write, with the database, logs and
spill files on the same device failing too.  Refusing a new document *before* anything is written,
while ``watermark`` bytes are still free, keeps the node able to answer reads, write its logs and
finish the transactions already under way.  ITI-41 / RAD-68 answer the refusal with
XDSRepositoryOutOfResources (ITI TF-3 Table 4.2.4.1-2: "resources are low").

No Django, no settings: callers pass the directory and the watermark.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Room:
    """Free space of the file system holding ``path`` against what a writer needs."""

    path: str
    #: Bytes an unprivileged writer may still use (``f_bavail``: the root-reserved blocks do not count).
    free: int
    #: Bytes that must stay free after the write.
    watermark: int
    #: Bytes the write is about to add.
    incoming: int = 0

    @property
    def enough(self) -> bool:
        return self.free >= self.watermark + self.incoming

    def describe(self) -> str:
        """In words, for an error context or a health detail (no patient data: sizes only)."""
        return (f"{self.free} bytes free on the document store's file system; {self.incoming} incoming, "
                f"{self.watermark} must stay free")


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing ancestor (a store not yet created lives on its parent's device)."""
    current = path
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes free for an unprivileged writer on the file system holding ``path``; raises OSError."""
    stats = os.statvfs(_existing(Path(path)))
    return stats.f_bavail * stats.f_frsize


def room(path: str | os.PathLike[str], *, watermark: int, incoming: int = 0) -> Room:
    """The :class:`Room` left on ``path``'s file system for ``incoming`` bytes above ``watermark``."""
    if watermark < 0 or incoming < 0:
        raise ValueError("watermark and incoming must be >= 0 bytes")
    return Room(str(path), free_bytes(path), watermark, incoming)
