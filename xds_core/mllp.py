"""MLLP, the HL7 v2 Minimal Lower Layer Protocol: framing and a small client (the one implementation).

Frame (HL7 v2.5.1 Appendix C.4, MLLP; ITI TF-2x C.2): ``<SB 0x0b> message <EB 0x1c><CR 0x0d>``.
Bytes outside a frame are ignored.  The ITI-8 listener (:mod:`xds_registry.patient_identity_feed.mllp`),
the conformance harness's feed (:mod:`conformance.patients`) and the benchmark's feed use this module.

Limits: a frame longer than ``max_message`` bytes is refused (:class:`MllpError`) before it is all held in
memory; the client's ``timeout`` bounds the whole exchange (connect, send, answer), not each read.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

START_BLOCK = b"\x0b"  # <SB>, vertical tab
END_BLOCK = b"\x1c\x0d"  # <EB><CR>, file separator + carriage return
#: Largest accepted message; ADT messages and their ACKs are a few kB.
MAX_MESSAGE = 1024 * 1024
_RECV = 65536


class MllpError(Exception):
    """The peer broke the framing: a frame too long, or the connection closed inside a frame."""


def frame(message: bytes) -> bytes:
    """``message`` wrapped in a block (it must not contain ``<EB><CR>``)."""
    return START_BLOCK + message + END_BLOCK


def read_frames(sock: socket.socket, *, max_message: int = MAX_MESSAGE,
                deadline: float | None = None) -> Iterator[bytes]:
    """The messages arriving on ``sock``, one per frame, until the peer closes the connection.

    ``deadline`` (``time.monotonic()``): no read waits past it (:class:`TimeoutError`); otherwise each read
    waits as long as the socket's own timeout.  A connection closed inside a frame ends the iteration
    (the server's case: nothing to answer); callers that expect an answer check they got one.
    """
    buffer = bytearray()
    searched = 0  # the end block is not in buffer[:searched]
    while True:
        end = buffer.find(END_BLOCK, searched)
        if end < 0:
            if len(buffer) > max_message + len(START_BLOCK) + len(END_BLOCK):
                raise MllpError(f"MLLP frame longer than {max_message} bytes")
            searched = max(0, len(buffer) - len(END_BLOCK) + 1)
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("MLLP peer too slow")
                sock.settimeout(remaining)
            chunk = sock.recv(_RECV)
            if not chunk:
                return
            buffer += chunk
            continue
        block = bytes(buffer[:end])
        del buffer[:end + len(END_BLOCK)]
        searched = 0
        start = block.find(START_BLOCK)
        if start < 0:
            continue  # noise between frames
        message = block[start + len(START_BLOCK):]
        if len(message) > max_message:
            raise MllpError(f"MLLP frame longer than {max_message} bytes")
        yield message


def exchange(host: str, port: int, message: bytes, *, timeout: float = 10.0,
             max_message: int = MAX_MESSAGE) -> bytes:
    """Send one framed message and return the first framed answer (an HL7 ACK): a minimal MLLP client.

    ``timeout`` bounds the whole exchange.  Raises OSError (incl. TimeoutError) for network failures and
    :class:`MllpError` when the answer is not a complete frame of at most ``max_message`` bytes.
    """
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(frame(message))
        for answer in read_frames(sock, max_message=max_message, deadline=deadline):
            return answer
    raise MllpError("the peer closed the connection without a complete MLLP frame")
