"""Loader for tests/fixtures/hostile (shared by the in-process and the HTTP tests)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "hostile"


@dataclass(frozen=True)
class HostileCase:
    file: str
    content_type: str
    code: str
    subcode: str | None
    http: int
    note: str

    def body(self, xxe_port: int) -> bytes:
        return (CORPUS / self.file).read_bytes().replace(b"XXE_PORT", str(xxe_port).encode())


def cases() -> list[HostileCase]:
    return [HostileCase(**item) for item in json.loads((CORPUS / "cases.json").read_text())]


class WatchedPort:
    """A listening loopback socket; the kernel completes any connection attempt
    into its backlog, so :meth:`connections` sees them without an accept thread."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]

    def connections(self) -> int:
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, OSError):
                return count
            count += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@contextmanager
def watched_port() -> Iterator[WatchedPort]:
    port = WatchedPort()
    try:
        yield port
    finally:
        port.close()


def hundred_megabytes(chunk: int = 1024 * 1024, total: int = 100 * 1024 * 1024) -> Iterator[bytes]:
    """A 100 MB SOAP-looking body, generated on the fly (never committed)."""
    head = b"<?xml version='1.0'?><env:Envelope xmlns:env='http://www.w3.org/2003/05/soap-envelope'><env:Body><x>"
    yield head
    sent = len(head)
    block = b"A" * chunk
    while sent < total:
        piece = block[: min(chunk, total - sent)]
        sent += len(piece)
        yield piece
