"""Resident memory of a process while a block runs (the listener's, in this process or another)."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path


def vm_kib(field: str, pid: int | str = "self") -> int:
    """A VmXXX line of /proc/<pid>/status, in kB."""
    match = re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    assert match, f"/proc/{pid}/status has no {field}"
    return int(match.group(1))


class RssWatch:
    """Peak RSS growth of a process (default: this one, where an in-process listener runs) while a block
    runs: VmHWM after a reset (``clear_refs`` 5, Linux >= 4.0) where allowed, and a 1 ms VmRSS sampler
    in any case."""

    def __init__(self, pid: int | str = "self") -> None:
        self.pid = pid

    def __enter__(self) -> RssWatch:
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False
        self.start = vm_kib("VmRSS", self.pid)
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, vm_kib("VmRSS", self.pid))
            except (OSError, AssertionError):  # the process ended
                return
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.hwm_reset:
            self.peak = max(self.peak, vm_kib("VmHWM", self.pid))

    @property
    def growth_bytes(self) -> int:
        return (self.peak - self.start) * 1024
