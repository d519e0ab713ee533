"""MLLP server for the ITI-8 Patient Identity Feed (HL7 v2 over TCP, ITI TF-2x C.2 / HL7 MLLP R2).

Frame: ``<VT 0x0b> message <FS 0x1c><CR 0x0d>``.  One thread per connection; a connection may carry
any number of messages, each answered with its ACK before the next is read.  One log line per
message on ``xds.transaction``.  Messages are decoded as UTF-8, falling back to ISO-8859-1 (the
HL7 v2 default character set) when the bytes are not UTF-8.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
import time

from django.db import close_old_connections, connection

from xds_core.affinity_domain import AffinityDomain
from xds_registry.patient_identity_feed.hl7v2 import handle

logger = logging.getLogger("xds.transaction")

START, END = b"\x0b", b"\x1c\x0d"
#: Largest accepted message; ADT messages are a few kB.
MAX_MESSAGE = 1024 * 1024
IDLE_TIMEOUT = 300.0


class MllpHandler(socketserver.BaseRequestHandler):
    server: MllpServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(IDLE_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = b""
        try:
            while True:
                while END not in buffer:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                    if len(buffer) > MAX_MESSAGE + 3:
                        logger.warning("ITI-8 peer=%s:%s message larger than %d bytes; closing",
                                       *self.client_address[:2], MAX_MESSAGE)
                        return
                frame, _, buffer = buffer.partition(END)
                start = frame.find(START)
                if start < 0:
                    continue  # noise between frames
                sock.sendall(START + self.server.process(frame[start + 1:], self.client_address).encode("utf-8") + END)
        except (TimeoutError, ConnectionError, OSError):
            return
        finally:
            connection.close()


class MllpServer(socketserver.ThreadingTCPServer):
    """``MllpServer((host, port), affinity_domain)``; ``serve_forever()`` / ``shutdown()``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], affinity_domain: AffinityDomain | None) -> None:
        self.affinity_domain = affinity_domain
        super().__init__(address, MllpHandler)

    def process(self, data: bytes, peer: tuple[str, int]) -> str:
        started = time.monotonic()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("iso-8859-1")
        close_old_connections()
        ack, message, outcome = handle(text, self.affinity_domain)
        logger.info("ITI-8 peer=%s:%s type=%s^%s control=%s patient=%s ack=%s err=%s ms=%.1f %s",
                    peer[0], peer[1], message.message_type if message else "-",
                    message.trigger_event if message else "-", message.control_id if message else "-",
                    outcome.patient_id or "-", outcome.ack_code, outcome.error_code or "-",
                    (time.monotonic() - started) * 1000, outcome.text)
        return ack


def serve_in_thread(host: str, port: int,
                    affinity_domain: AffinityDomain | None) -> tuple[MllpServer, threading.Thread]:
    """Start a server on a background thread (tests; port 0 = ephemeral).  Stop with ``server.shutdown()``."""
    server = MllpServer((host, port), affinity_domain)
    thread = threading.Thread(target=server.serve_forever, name="mllp", daemon=True)
    thread.start()
    return server, thread


def send(host: str, port: int, message: str, *, timeout: float = 10.0) -> str:
    """Send one message over MLLP and return the ACK text (a minimal client)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(START + message.encode("utf-8") + END)
        data = b""
        while END not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.partition(END)[0].lstrip(START).decode("utf-8")
