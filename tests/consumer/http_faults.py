"""Loopback TCP proxies in front of the Imaging Document Source's gunicorn: count, cut, corrupt.

One client connection carries one RAD-69 exchange: the proxy asks the server to close the connection after
its answer (``Connection: close`` added to the request head, RFC 9112 9.6), so the client opens a new
connection for its next request; each proxy relays the exchange byte for byte except for that header and
the fault it is told to make.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading

from tests.imaging_source.http_proxies import LoopbackProxy

_DOCUMENT_UID = re.compile(rb"DocumentUniqueId>([0-9.]+)<")


class IdsProxy(LoopbackProxy):
    """Records every RAD-69 request (the DocumentUniqueIds it asks for) and relays the answer through
    :meth:`answer_chunk` (per connection number); ``None`` from it closes the connection there."""

    def __init__(self, upstream_port: int) -> None:
        self.requests: list[list[str]] = []
        self._lock = threading.Lock()
        super().__init__(upstream_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/xds/imaging-source"

    @property
    def requested_uids(self) -> list[str]:
        return [uid for request in self.requests for uid in request]

    def relay(self, client: socket.socket) -> None:
        with self._lock:
            number = len(self.requests)
            self.requests.append([])
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        except OSError:
            client.close()  # the IDS is unreachable: so is this proxy
            return
        sent = bytearray()

        def forward() -> None:
            head_done = False
            try:
                while data := client.recv(65536):
                    sent.extend(data)
                    self.requests[number] = [m.decode() for m in _DOCUMENT_UID.findall(sent)]
                    if not head_done:  # hold the head back until it is whole, then add the header
                        end = sent.find(b"\r\n\r\n")
                        if end < 0:
                            continue
                        head_done = True
                        lines = [line for line in bytes(sent[:end]).split(b"\r\n")
                                 if not line.lower().startswith(b"connection:")]  # e.g. requests' keep-alive
                        data = b"\r\n".join([*lines, b"Connection: close"]) + bytes(sent[end:])
                    upstream.sendall(data)
            except OSError:
                pass

        threading.Thread(target=forward, daemon=True).start()
        state: dict[str, object] = {"relayed": 0}
        try:
            while data := upstream.recv(65536):
                out = self.answer_chunk(number, data, state)
                if out is None:
                    break
                client.sendall(out)
                state["relayed"] = int(state["relayed"]) + len(out)  # type: ignore[call-overload]
            else:
                tail = self.answer_end(number, state)
                if tail:
                    client.sendall(tail)
        except OSError:
            pass
        finally:
            for sock in (client, upstream):  # shutdown first: the forwarding thread is blocked in recv
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def answer_chunk(self, number: int, data: bytes, state: dict[str, object]) -> bytes | None:
        return data

    def answer_end(self, number: int, state: dict[str, object]) -> bytes:
        return b""


class CuttingProxy(IdsProxy):
    """Drops the connection of the first ``cut_connections`` exchanges after ``cut_after`` answer bytes."""

    def __init__(self, upstream_port: int, *, cut_after: int, cut_connections: int = 1) -> None:
        self.cut_after = cut_after
        self.cut_connections = cut_connections
        super().__init__(upstream_port)

    def answer_chunk(self, number: int, data: bytes, state: dict[str, object]) -> bytes | None:
        if number >= self.cut_connections:
            return data
        room = self.cut_after - int(state["relayed"])  # type: ignore[call-overload]
        if room <= 0:
            return None
        return data[:room]


class CorruptingProxy(IdsProxy):
    """In the first exchange's answer, turns the first Part 10 prefix ``DICM`` (PS3.10 7.1) into ``DXCM``:
    one MIME part that is no DICOM file, the rest of the answer intact."""

    HOLD = 3  # a prefix split across two reads is still found

    def answer_chunk(self, number: int, data: bytes, state: dict[str, object]) -> bytes | None:
        if number != 0:
            return data
        text = bytes(state.get("held", b"")) + data  # type: ignore[arg-type]
        if not state.get("done") and (i := text.find(b"DICM")) >= 0:
            text = text[:i] + b"DXCM" + text[i + 4:]
            state["done"] = True
        state["held"] = text[-self.HOLD:]
        return text[:-self.HOLD]

    def answer_end(self, number: int, state: dict[str, object]) -> bytes:
        return bytes(state.get("held", b""))  # type: ignore[arg-type]
