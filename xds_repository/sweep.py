"""Remove the temporary files a killed process left behind.

Two kinds, both named with the pid of the process that created them:

- MTOM spill files ``xds-part-<pid>-*.bin`` (:mod:`xds_core.soap.mtom_reader`) in the spool directory the
  SOAP endpoint hands the reader: a part larger than the in-memory threshold goes to disk and is removed
  when its request ends -- unless the worker is killed (``kill -9``, the OOM killer, a crash);
- the storage's ``.tmp-<pid>-*`` files (:mod:`xds_repository.storage`): a document being written, or
  hard-linked, before its atomic rename.

A file is removed only when its creator is certainly gone: no process of that pid runs on this host, or
the process that has the pid now started after the file was last written (the pid was reused).  A file
whose name carries no pid (written by an older version) is removed once older than the grace period.
The in-flight markers of ITI-41 requests (:class:`xds_repository.records.InFlight`) that nobody holds
any more go too: at once when their process (pid in the name) is gone, else once a minute old.  Only
names of these patterns are touched: the spool directory may be the system's temp directory, shared
with everything else.  The directories must be local to this host (pids are this host's).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from django.core.files.storage import Storage

from xds_repository import records
from xds_repository import storage as store

logger = logging.getLogger(__name__)

#: ``xds-part-<pid>-<random>.bin``; ``xds-part-<random>.bin`` from before the pid was put in the name.
SPILL_FILE = re.compile(r"xds-part-(?:(?P<pid>[0-9]+)-)?[^/]*")
TEMPORARY_FILE = re.compile(re.escape(store.TEMPORARY_PREFIX) + r"(?:(?P<pid>[0-9]+)-)?[^/]*")
#: /proc start times are whole clock ticks after a boot time known to the second: a process is taken
#: to have started after a file only when it did so by more than this many seconds.
CLOCK_SLACK = 2.0
#: An in-flight marker is locked right after it is created: one this old and not held is a dead request's.
MARKER_MIN_AGE = 60.0


@dataclass
class SweepReport:
    examined: int = 0
    removed: int = 0
    #: Files that could not be removed (e.g. permissions); they are tried again next time.
    failed: int = 0


def creator_is_gone(path: Path, pid: int | None, *, grace: float, now: float | None = None) -> bool:
    """Whether the process that wrote ``path`` (``pid`` from its name, None if unknown) is gone."""
    try:
        modified = path.stat().st_mtime
    except FileNotFoundError:
        return False  # already removed by its owner
    if pid is None:
        return (now or time.time()) - modified > grace
    started = records.process_started_at(pid)
    return started is None or started > modified + CLOCK_SLACK


def _sweep(paths: Iterable[Path], pattern: re.Pattern[str], grace: float, report: SweepReport) -> None:
    now = time.time()
    for path in paths:
        match = pattern.fullmatch(path.name)
        if match is None:
            continue
        report.examined += 1
        pid = int(match["pid"]) if match["pid"] else None
        if pid == os.getpid() or not creator_is_gone(path, pid, grace=grace, now=now):
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            report.failed += 1
            logger.warning("sweep could not remove %s: %s", path, exc.strerror)
            continue
        report.removed += 1


def sweep(*, spool_dirs: Iterable[str | os.PathLike[str]], storage: Storage, grace: float) -> SweepReport:
    """Remove dead writers' spill files in ``spool_dirs`` and temporary files in ``storage``."""
    report = SweepReport()
    for directory in {str(d) for d in spool_dirs}:
        try:
            entries = [Path(e.path) for e in os.scandir(directory)
                       if e.name.startswith("xds-part-") and e.is_file(follow_symlinks=False)]
        except FileNotFoundError:
            continue
        _sweep(entries, SPILL_FILE, grace, report)
    if isinstance(storage, store.ContentAddressedStorage):
        _sweep(storage.temporary_files(), TEMPORARY_FILE, grace, report)
    markers = store.inflight_dir(storage)
    if markers is not None:
        _sweep_markers(markers, report)
    return report


def _sweep_markers(directory: Path, report: SweepReport) -> None:
    try:
        entries = [Path(e.path) for e in os.scandir(directory) if e.is_file(follow_symlinks=False)]
    except FileNotFoundError:
        return
    now = time.time()
    for path in entries:
        match = records.MARKER.fullmatch(path.name)
        report.examined += 1
        try:
            young = now - path.stat().st_mtime < MARKER_MIN_AGE
            if (young and not (match and creator_is_gone(path, int(match["pid"]), grace=MARKER_MIN_AGE, now=now))
                    or records.marker_is_held(path)):
                continue
            path.unlink()
        except FileNotFoundError:
            continue  # its request just ended and removed it
        except OSError as exc:
            report.failed += 1
            logger.warning("sweep could not remove %s: %s", path, exc.strerror)
            continue
        report.removed += 1
