"""Helpers shared by the benchmark commands (``make bench``): finding the server's processes."""

from __future__ import annotations

import os
from pathlib import Path


def server_pids(port: int, *, workers_only: bool = True) -> list[int]:
    """The processes serving ``port``: those holding its listening socket (gunicorn master + workers).

    With ``workers_only``, the workers (children of another holder) when there are any;
    otherwise every holder, master included.
    """
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # 0A = LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    holders: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                status = (entry / "status").read_text()
                holders[int(entry.name)] = int(status.split("PPid:", 1)[1].split()[0])
        except (OSError, ValueError, IndexError):
            continue
    workers = [pid for pid, parent in holders.items() if parent in holders]
    return sorted(workers or holders) if workers_only else sorted(holders)
