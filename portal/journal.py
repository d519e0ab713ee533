"""The transactions journal: one JSON line per audit event, for the portal's "last transactions".

An audit sink (:func:`xds_core.audit.set_sink`, chained to the sink installed before it) appends one
line per :class:`~xds_core.audit.AuditEvent` to ``<VAR_DIR>/journal/transactions.jsonl``: time, event,
transaction, outcome, and the requestor's and responder's user ids (URLs, AE titles, HL7 applications,
a portal user name) and network addresses.  Never a patient id, a name or an object id: the journal is
an operational record shown to every logged-in user, not the audit trail (that is the ATNA sink's).

Several processes (gunicorn workers, listeners) share the file: each line is one ``write`` to a
descriptor opened ``O_APPEND`` (the kernel positions each write at the end; a line is far below a
page, so lines never interleave).  At ~:data:`MAX_BYTES` the file is renamed to ``.1`` (one kept) under
an ``flock`` lock; a process still holding the old file notices the new inode and reopens.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from pathlib import Path
from typing import Any

from xds_core import audit

MAX_BYTES = 1_000_000
FILE_NAME = "transactions.jsonl"

_OUTCOMES = {0: "success", 4: "minor failure", 8: "serious failure", 12: "major failure"}


def entry(event: audit.AuditEvent) -> dict[str, Any]:
    """What the journal keeps of an event (no ParticipantObjects: they carry patient and object ids)."""
    requestor = event.requestor
    responder = next((p for p in event.participants if p is not requestor), None)
    out: dict[str, Any] = {
        "time": event.time.isoformat(timespec="milliseconds"),
        "event": event.event_id.display, "action": event.action.value,
        "outcome": int(event.outcome), "outcome_text": _OUTCOMES.get(int(event.outcome), str(int(event.outcome))),
    }
    if event.transaction is not None:
        out["transaction"] = event.transaction.code
        out["transaction_name"] = event.transaction.display
    if requestor is not None:
        out["requestor"] = requestor.user_id
        out["requestor_address"] = requestor.network_address
    if responder is not None:
        out["responder"] = responder.user_id
        out["responder_address"] = responder.network_address
    return out


class Journal:
    """Appends lines to ``directory/transactions.jsonl`` (thread- and process-safe), rotates, reads the tail."""

    def __init__(self, directory: Path, max_bytes: int = MAX_BYTES) -> None:
        self.directory = Path(directory)
        self.path = self.directory / FILE_NAME
        self._path = str(self.path)  # os.stat(str) per write: no pathlib conversion on the hot path
        self.previous_path = self.directory / (FILE_NAME + ".1")
        self.lock_path = self.directory / (FILE_NAME + ".lock")
        self.max_bytes = max_bytes
        self._fd: int | None = None
        self._inode: int | None = None
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- writing

    def __call__(self, event: audit.AuditEvent) -> None:
        """The audit sink: one line per event."""
        self.append(entry(event))

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()  # ASCII: the C encoder's fast path
        with self._lock:
            fd = self._current_fd()
            os.write(fd, line)
            if os.fstat(fd).st_size >= self.max_bytes:
                self._rotate()

    def _open(self) -> int:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        stat = os.fstat(fd)
        if stat.st_size and os.pread(fd, 1, stat.st_size - 1) != b"\n":
            os.write(fd, b"\n")  # a line cut by a crash: end it, so that ours starts on a line of its own
        self._fd, self._inode = fd, stat.st_ino
        return fd

    def _current_fd(self) -> int:
        """Our descriptor, reopened when another process rotated the file (its inode changed)."""
        if self._fd is None:
            return self._open()
        try:
            same = os.stat(self._path).st_ino == self._inode
        except FileNotFoundError:
            same = False
        if not same:
            os.close(self._fd)
            return self._open()
        return self._fd

    def _rotate(self) -> None:
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                # Another process may have rotated while we waited for the lock: only the current file moves.
                stat = os.stat(self.path)
                if stat.st_ino == self._inode and stat.st_size >= self.max_bytes:
                    os.replace(self.path, self.previous_path)
            except FileNotFoundError:
                pass
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        if self._fd is not None:
            os.close(self._fd)
        self._open()

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    # ---------------------------------------------------------------- reading

    def last(self, n: int = 20) -> list[dict[str, Any]]:
        """The last ``n`` entries, newest first (reads backwards from the end; the ``.1`` file when needed)."""
        if n <= 0:
            return []
        out: list[dict[str, Any]] = []
        for path in (self.path, self.previous_path):
            for line in _tail_lines(path, n - len(out)):
                try:
                    value = json.loads(line)
                except ValueError:
                    continue  # a line cut by a crash
                if isinstance(value, dict):
                    out.append(value)
            if len(out) >= n:
                break
        return out[:n]


def _tail_lines(path: Path, n: int, block: int = 16384) -> list[bytes]:
    """The last ``n`` complete lines of ``path``, newest first, reading blocks from the end."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return []
    with fh:
        end = fh.seek(0, os.SEEK_END)
        data = b""
        position = end
        while position > 0 and data.count(b"\n") <= n:
            step = min(block, position)
            position -= step
            fh.seek(position)
            data = fh.read(step) + data
    lines = data.split(b"\n")
    if position > 0:
        lines = lines[1:]  # the first piece may be the end of an earlier line
    lines = [line for line in lines if line.strip()]
    return list(reversed(lines[-n:]))


_slot: audit.SinkSlot[Journal] = audit.SinkSlot()


def install(directory: Path, max_bytes: int = MAX_BYTES) -> Journal:
    """Install the journal as the audit sink, chained to the sink installed before it (once per process)."""
    return _slot.install(lambda: Journal(directory, max_bytes))


def installed() -> Journal | None:
    return _slot.installed()


def uninstall() -> None:
    """Remove the journal sink and put the one it chained to back (tests)."""
    _slot.uninstall(Journal.close)
