"""MLLP, the HL7 v2 Minimal Lower Layer Protocol: framing, a small client and a bounded server (the one implementation).

Frame (HL7 v2.5.1 Appendix C.4, MLLP; ITI TF-2x C.2): ``<SB 0x0b> message <EB 0x1c><CR 0x0d>``.
Bytes outside a frame are ignored.  The ITI-8 listener (:mod:`xds_registry.patient_identity_feed.mllp`),
the conformance harness's feed (:mod:`conformance.patients`) and the benchmark's feed use this module.

Limits: a frame longer than ``max_message`` bytes is refused (:class:`MllpError`) before it is all held in
memory (no read asks for more than the frame may still hold); the client's ``timeout`` bounds the whole
exchange (connect, send, answer), not each read.  The server (:class:`MllpListener`) bounds connections in
total and per peer address, threads (one I/O thread and a fixed pool of workers, whatever the number of
connections) and time (:class:`ServerLimits`).

MLLP over TLS (ITI TF-2a 3.19.6, ITI-19 Authenticate Node, which applies to HL7 connections as to any other):
the client takes a client context (:func:`exchange` ``ssl_context``), the server a server context
(:class:`MllpListener` ``ssl_context``; both from :mod:`xds_core.tls`).  The server's handshake is
non-blocking, on the I/O thread, with its own deadline (``handshake_timeout``): a silent or slow TLS client
costs a socket for that long, never a worker.  A failed handshake (no certificate, TLS < 1.2, an untrusted
certificate, plain text) closes the connection without a byte of HL7 and raises a Security Alert (at most
one per peer address every :attr:`MllpListener.alert_interval` seconds: a flood must not become a flood of
audit records).  Then the same framing, caps and time rules as plain; the verified certificate reaches the
application in :class:`Peer`.
"""

from __future__ import annotations

import functools
import logging
import selectors
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from queue import SimpleQueue
from typing import Any

from xds_core import audit
from xds_core.identity import PeerCertificate
from xds_core.tls import peer_certificate

START_BLOCK = b"\x0b"  # <SB>, vertical tab
END_BLOCK = b"\x1c\x0d"  # <EB><CR>, file separator + carriage return
#: Largest accepted message; ADT messages and their ACKs are a few kB.
MAX_MESSAGE = 1024 * 1024
_RECV = 65536

logger = logging.getLogger("xds.transaction")


class MllpError(Exception):
    """The peer broke the framing: a frame too long, or the connection closed inside a frame."""


def frame(message: bytes) -> bytes:
    """``message`` wrapped in a block (it must not contain ``<EB><CR>``)."""
    return START_BLOCK + message + END_BLOCK


class FrameBuffer:
    """Bytes in, whole messages out: the one MLLP deframer (client and server).

    The buffer is empty between frames or starts with ``<SB>``: bytes before a start block are noise and
    dropped as they arrive, so noise costs no memory and does not count as a frame begun.  It never holds
    more than one frame's limit: read at most :meth:`room` bytes at a time.
    """

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self.max_message = max_message
        self._limit = max_message + len(START_BLOCK) + len(END_BLOCK)
        self._buffer = bytearray()
        self._searched = 0  # the end block is not in _buffer[:_searched]

    @property
    def in_frame(self) -> bool:
        """A start block has arrived and its frame is not complete yet (or not taken by :meth:`next_frame`)."""
        return bool(self._buffer)

    def room(self) -> int:
        """How many bytes the next read may bring: one past the limit, so that an oversized frame shows."""
        return max(1, self._limit - len(self._buffer) + 1)

    def head(self, size: int) -> bytes:
        """The first ``size`` bytes of the frame begun (its MSH segment, to answer a refused frame)."""
        return bytes(self._buffer[len(START_BLOCK):len(START_BLOCK) + size])

    def feed(self, data: bytes) -> None:
        if not self._buffer:
            start = data.find(START_BLOCK)
            if start < 0:
                return  # noise between frames
            data = data[start:]
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """The next complete message, or None until more bytes arrive; :class:`MllpError` when too long."""
        end = self._buffer.find(END_BLOCK, self._searched)
        if end < 0:
            if len(self._buffer) > self._limit:
                raise MllpError(f"MLLP frame longer than {self.max_message} bytes")
            self._searched = max(0, len(self._buffer) - len(END_BLOCK) + 1)
            return None
        message = bytes(self._buffer[len(START_BLOCK):end])
        del self._buffer[:end + len(END_BLOCK)]
        self._searched = 0
        start = self._buffer.find(START_BLOCK)
        del self._buffer[:start if start >= 0 else len(self._buffer)]  # noise up to the next frame
        if len(message) > self.max_message:
            raise MllpError(f"MLLP frame longer than {self.max_message} bytes")
        return message

    def clear(self) -> None:
        self._buffer = bytearray()
        self._searched = 0


def read_frames(sock: socket.socket, *, max_message: int = MAX_MESSAGE,
                deadline: float | None = None) -> Iterator[bytes]:
    """The messages arriving on ``sock`` (blocking), one per frame, until the peer closes the connection.

    ``deadline`` (``time.monotonic()``): no read waits past it (:class:`TimeoutError`); otherwise each read
    waits as long as the socket's own timeout.  A connection closed inside a frame ends the iteration
    (nothing to answer); callers that expect an answer check they got one.
    """
    frames = FrameBuffer(max_message)
    while True:
        message = frames.next_frame()
        if message is not None:
            yield message
            continue
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("MLLP peer too slow")
            sock.settimeout(remaining)
        chunk = sock.recv(min(_RECV, frames.room()))
        if not chunk:
            return
        frames.feed(chunk)


def exchange(host: str, port: int, message: bytes, *, timeout: float = 10.0,
             max_message: int = MAX_MESSAGE, ssl_context: ssl.SSLContext | None = None) -> bytes:
    """Send one framed message and return the first framed answer (an HL7 ACK): a minimal MLLP client.

    ``timeout`` bounds the whole exchange (the TLS handshake included).  ``ssl_context``: MLLP over TLS, a
    client context presenting our certificate and verifying the server's (:func:`xds_core.tls.client_context`;
    at the edge ``atna.tls.node_client_context()``).  Raises OSError (incl. TimeoutError and ssl.SSLError:
    a refused handshake or certificate) for network failures and :class:`MllpError` when the answer is not a
    complete frame of at most ``max_message`` bytes.
    """
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock = raw if ssl_context is None else ssl_context.wrap_socket(raw, server_hostname=host)
        with sock:
            sock.sendall(frame(message))
            for answer in read_frames(sock, max_message=max_message, deadline=deadline):
                return answer
    raise MllpError("the peer closed the connection without a complete MLLP frame")


# --- server -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ServerLimits:
    """What one MLLP listener grants its peers.  Times in seconds, sizes in bytes.

    HL7 interfaces keep a connection open and may be quiet for long between messages, so the wait for the
    next frame is long (``idle_timeout``); once a frame has begun it must keep moving: at least
    ``min_rate`` bytes per second averaged over each ``rate_window`` (a window with no byte at all drops
    it too, whatever ``min_rate``), and be complete within ``frame_deadline``.  Our answer must be taken
    by the peer at the same pace (a peer that stops reading its ACKs is dropped after ``rate_window``).
    On a TLS listener the handshake must be complete within ``handshake_timeout`` of the accept.
    """

    max_connections: int = 32
    max_connections_per_peer: int = 8
    workers: int = 4
    idle_timeout: float = 120.0
    min_rate: int = 1024
    rate_window: float = 30.0
    frame_deadline: float = 120.0
    max_message: int = MAX_MESSAGE
    handshake_timeout: float = 10.0

    def __post_init__(self) -> None:
        if min(self.max_connections, self.max_connections_per_peer, self.workers, self.max_message) < 1:
            raise ValueError("MLLP connection, worker and size limits must be >= 1")
        if (min(self.idle_timeout, self.rate_window, self.frame_deadline, self.handshake_timeout) <= 0
                or self.min_rate < 0):
            raise ValueError("MLLP timeouts must be > 0 and the minimum rate >= 0")


class _State(Enum):
    HANDSHAKE = "handshake"    # TLS: the handshake is under way (no HL7 byte is read before it succeeds)
    READING = "reading"        # waiting for (the rest of) a frame
    PROCESSING = "processing"  # a worker has the message; nothing is read meanwhile (one ACK per message, in order)
    WRITING = "writing"        # sending the answer
    REFUSING = "refusing"      # sending the answer to a refused frame, then draining
    DRAINING = "draining"      # discarding what the peer still sends, so it can read our answer, then closing
    CLOSED = "closed"


#: How many bytes of a refused frame the application may look at to answer it (the MSH segment).
REFUSAL_HEAD = 4096
#: Refused connections are logged at most once per this many seconds and limit (the line counts them): a flood of
#: connections must not become a flood of log lines.
_REFUSAL_LOG_INTERVAL = 1.0


@dataclass(eq=False, slots=True)
class Peer:
    """The other end of one connection, as the application sees it (``respond`` / ``refusal``).

    ``certificate``: the certificate TLS verified (mutual authentication, ITI TF-2a 3.19.6.1); None on a plain
    listener.  ``session``: what the application decided about this connection (e.g. the node identity its
    certificate maps to), kept for the connection's next messages; one worker at a time handles a connection,
    so it needs no lock.
    """

    address: str
    port: int
    certificate: PeerCertificate | None = None
    session: Any = None


class _Connection:
    __slots__ = ("sock", "peer", "tls", "frames", "state", "out", "idle_since", "frame_started", "window_started",
                 "window_bytes", "last_byte", "last_progress", "drain_until", "handshake_until", "messages")

    def __init__(self, sock: socket.socket, peer: Peer, max_message: int, now: float) -> None:
        self.sock = sock
        self.peer = peer
        self.tls = isinstance(sock, ssl.SSLSocket)
        self.frames = FrameBuffer(max_message)
        self.state = _State.READING
        self.out = b""
        self.idle_since = now
        self.frame_started = self.window_started = self.last_byte = self.last_progress = now
        self.window_bytes = 0
        self.drain_until = self.handshake_until = now
        self.messages = 0

    def pending(self) -> bool:
        """TLS has decrypted bytes of ours in its buffer: the socket will not signal them (ssl ``pending()``)."""
        return self.tls and self.state is not _State.CLOSED and self.sock.pending() > 0  # type: ignore[attr-defined]

    def begin_frame(self, now: float) -> None:
        self.frame_started = self.window_started = self.last_byte = now
        self.window_bytes = 0


class MllpListener:
    """A bounded MLLP server: ``MllpListener((host, port), limits)``; ``serve_forever()`` / ``shutdown()`` /
    ``server_close()``, like :mod:`socketserver`.

    One I/O thread (the one running :meth:`serve_forever`) multiplexes every connection with a selector and
    keeps the time rules; complete messages go to a fixed pool of ``limits.workers`` threads running
    :meth:`respond`, so a held connection costs a socket and its buffer, never a thread.  A connection
    carries any number of messages; each is answered before the next is read (HL7 original acknowledgment
    mode).  A connection beyond ``max_connections`` in total or ``max_connections_per_peer`` from one
    address is closed as soon as it is accepted.  Subclasses give :meth:`respond` (and optionally
    :meth:`refusal`, :meth:`authentication_failed`, :meth:`worker_finished`); ``label`` starts their log lines.

    ``ssl_context`` (a :func:`xds_core.tls.server_context`): MLLP over TLS; every accepted connection first
    completes a handshake with a verified client certificate (see the module's docstring).
    """

    label = "MLLP"
    #: ITI TF-2a 3.20.4.1.1.1: a failed node authentication is a Security Alert -- at most one per peer address
    #: per this many seconds (the log line counts the others).
    alert_interval = 10.0

    def __init__(self, address: tuple[str, int], limits: ServerLimits | None = None, *,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.limits = limits or ServerLimits()
        self.ssl_context = ssl_context
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.socket = socket.create_server(address, family=family, backlog=128)  # SO_REUSEADDR on POSIX
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()
        # A message to answer, or bookkeeping kept off the I/O thread (a Security Alert may write to a database).
        self._jobs: SimpleQueue[tuple[_Connection, bytes] | Callable[[], None] | None] = SimpleQueue()
        self._answers: SimpleQueue[tuple[_Connection, bytes | None]] = SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._connections: set[_Connection] = set()
        self._per_peer: Counter[str] = Counter()
        self._selector: selectors.BaseSelector | None = None
        self._shutdown_request = False
        self._is_shut_down = threading.Event()
        self._is_shut_down.set()
        self._refusals: dict[str, tuple[float, int]] = {}  # reason -> (last logged, refused since)
        self._alerted: dict[str, float] = {}  # peer address -> when its last Security Alert was raised

    @property
    def uri(self) -> str:
        """This listener as the audit trail names it (``mllp://host:port``)."""
        host, port = self.server_address[:2]
        return f"mllp://{f'[{host}]' if ':' in host else host}:{port}"

    # -- what a subclass provides ------------------------------------------------------------------

    def respond(self, message: bytes, peer: Peer) -> bytes:
        """The answer to one message (unframed), on a worker thread."""
        raise NotImplementedError

    def refusal(self, head: bytes, peer: Peer, reason: str) -> bytes | None:
        """The answer to a frame refused before it was read whole (``head``: its first bytes), or None.
        Called on the I/O thread: no database, no waiting."""
        return None

    def authentication_failed(self, peer: Peer, reason: str) -> None:
        """A peer failed the TLS handshake (on a worker thread, rate-limited per address): by default the
        Security Alert "Node Authentication" of ITI TF-2a 3.20.4.1.1.1 (PS3.15 A.5.3.11)."""
        audit.record(audit.node_authentication_failure(listener=self.uri, peer_address=peer.address, reason=reason))

    def worker_finished(self) -> None:
        """Called on each worker thread as it ends (release what the thread holds, e.g. a DB connection)."""

    # -- life cycle --------------------------------------------------------------------------------

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._is_shut_down.clear()
        selector = self._selector = selectors.DefaultSelector()
        selector.register(self.socket, selectors.EVENT_READ, "accept")
        selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        workers = [threading.Thread(target=self._work, name=f"mllp-worker-{i}", daemon=True)
                   for i in range(self.limits.workers)]
        for worker in workers:
            worker.start()
        try:
            while not self._shutdown_request:
                now = time.monotonic()
                timeout = min(poll_interval, max(0.0, self._next_timer(now) - now))
                for key, _events in selector.select(timeout):
                    now = time.monotonic()
                    if key.data == "accept":
                        self._accept(now)
                    elif key.data == "wake":
                        self._take_answers(now)
                    else:
                        self._ready(key.data, now)
                self._check_timers(time.monotonic())
        finally:
            for conn in list(self._connections):
                self._close(conn)
            for _ in workers:
                self._jobs.put(None)
            for worker in workers:
                worker.join(5)
            selector.close()
            self._selector = None
            self._shutdown_request = False
            self._is_shut_down.set()

    def stop_soon(self) -> None:
        """Ask :meth:`serve_forever` to end, without waiting (safe in a signal handler of its own thread)."""
        self._shutdown_request = True
        self._wake()

    def shutdown(self) -> None:
        """Stop :meth:`serve_forever` (from another thread) and wait until it has."""
        self.stop_soon()
        self._is_shut_down.wait()

    def server_close(self) -> None:
        self.socket.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- I/O thread --------------------------------------------------------------------------------

    def _accept(self, now: float) -> None:
        limits = self.limits
        for _ in range(64):  # a burst of connections must not starve the others
            try:
                sock, peer = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. EMFILE: leave the rest in the backlog for the next round
                logger.error("%s accept failed: %s", self.label, exc.strerror or exc)
                return
            address = peer[0]
            if len(self._connections) >= limits.max_connections:
                self._refuse_connection(sock, peer, now, f"{limits.max_connections} connections in total")
                continue
            if self._per_peer[address] >= limits.max_connections_per_peer:
                self._refuse_connection(sock, peer, now, f"{limits.max_connections_per_peer} connections per peer")
                continue
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.ssl_context is not None:  # the handshake itself runs from the selector (_handshake)
                    sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            except OSError:  # reset before we got to it
                sock.close()
                continue
            conn = _Connection(sock, Peer(peer[0], peer[1]), limits.max_message, now)
            self._connections.add(conn)
            self._per_peer[address] += 1
            if conn.tls:
                conn.state = _State.HANDSHAKE
                conn.handshake_until = now + limits.handshake_timeout
                self._handshake(conn, now)
            else:
                self._watch(conn, selectors.EVENT_READ)

    def _refuse_connection(self, sock: socket.socket, peer: tuple[str, int], now: float, reason: str) -> None:
        logged, refused = self._refusals.get(reason, (-_REFUSAL_LOG_INTERVAL, 0))
        if now - logged < _REFUSAL_LOG_INTERVAL:
            self._refusals[reason] = (logged, refused + 1)
        else:
            logger.warning("%s peer=%s:%s refused: limit of %s reached (refused=%d since the last such line)",
                           self.label, peer[0], peer[1], reason, refused + 1)
            self._refusals[reason] = (now, 0)
        sock.close()

    def _ready(self, conn: _Connection, now: float) -> None:
        """The socket of ``conn`` can be read or written: go on with what its state is doing.  (TLS may need to
        write to read, or read to write, so the operation follows the state, not the event.)"""
        if conn.state is _State.HANDSHAKE:
            self._handshake(conn, now)
        elif conn.state in (_State.READING, _State.DRAINING):
            self._read(conn, now)
        elif conn.state in (_State.WRITING, _State.REFUSING):
            self._write(conn, now)

    def _handshake(self, conn: _Connection, now: float) -> None:
        sock: ssl.SSLSocket = conn.sock  # type: ignore[assignment]
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(conn, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._watch(conn, selectors.EVENT_WRITE)
            return
        except ssl.SSLCertVerificationError as exc:
            self._handshake_failed(conn, now, f"certificate not accepted: {exc.verify_message or exc.reason}")
            return
        except ssl.SSLEOFError:
            self._handshake_failed(conn, now, "connection closed during the TLS handshake")
            return
        except ssl.SSLError as exc:
            self._handshake_failed(conn, now, f"TLS handshake failed: {exc.reason or type(exc).__name__}")
            return
        except OSError as exc:
            self._handshake_failed(conn, now, f"connection lost during the TLS handshake "
                                              f"({exc.strerror or type(exc).__name__})")
            return
        conn.peer.certificate = peer_certificate(sock)
        conn.state = _State.READING
        conn.idle_since = now
        self._read(conn, now)  # the first frame may have come with the handshake's last flight

    def _handshake_failed(self, conn: _Connection, now: float, reason: str) -> None:
        """Close a connection whose TLS handshake failed or timed out; log it and raise the Security Alert
        (both rate-limited: a flood of bad handshakes costs neither a line nor a record each)."""
        address = conn.peer.address
        key = f"TLS:{reason}"
        logged, failed = self._refusals.get(key, (-_REFUSAL_LOG_INTERVAL, 0))
        if now - logged < _REFUSAL_LOG_INTERVAL:
            self._refusals[key] = (logged, failed + 1)
        else:
            logger.warning("%s peer=%s:%s refused: %s (refused=%d since the last such line)", self.label,
                           address, conn.peer.port, reason, failed + 1)
            self._refusals[key] = (now, 0)
        if now - self._alerted.get(address, -self.alert_interval) >= self.alert_interval:
            if len(self._alerted) >= 4096:  # bounded: forget the addresses whose interval is over
                self._alerted = {a: t for a, t in self._alerted.items() if now - t < self.alert_interval}
            self._alerted[address] = now
            self._jobs.put(functools.partial(self.authentication_failed, conn.peer, reason))
        self._close(conn)

    def _read(self, conn: _Connection, now: float) -> None:
        while True:
            try:
                data = conn.sock.recv(_RECV if conn.state is _State.DRAINING else min(_RECV, conn.frames.room()))
            except ssl.SSLWantReadError:  # a TLS record not complete yet
                self._watch(conn, selectors.EVENT_READ)
                return
            except ssl.SSLWantWriteError:  # TLS has to send before it can read on
                self._watch(conn, selectors.EVENT_WRITE)
                return
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # reset, or a TLS error (a bad record, an alert)
                self._close(conn)
                return
            if not data:
                if conn.frames.in_frame:
                    logger.info("%s peer=%s:%s closed the connection inside a frame", self.label, conn.peer.address,
                                conn.peer.port)
                self._close(conn)
                return
            if conn.state is _State.DRAINING:
                if END_BLOCK in data:  # the refused frame is over: the peer now reads our answer (or the close)
                    self._close(conn)
                    return
            else:
                started = conn.frames.in_frame
                conn.frames.feed(data)
                if conn.frames.in_frame:
                    if not started:
                        conn.begin_frame(now)
                    conn.window_bytes += len(data)
                    conn.last_byte = now
                self._next_message(conn, now)
            # Bytes TLS already decrypted are not signalled by the socket: take them now.
            if conn.state not in (_State.READING, _State.DRAINING) or not conn.pending():
                return

    def _next_message(self, conn: _Connection, now: float) -> None:
        try:
            message = conn.frames.next_frame()
        except MllpError as exc:
            self._refuse_frame(conn, now, str(exc))
            return
        if message is None:
            self._watch(conn, selectors.EVENT_READ)
            return
        conn.state = _State.PROCESSING
        conn.messages += 1
        self._watch(conn, 0)
        self._jobs.put((conn, message))

    def _refuse_frame(self, conn: _Connection, now: float, reason: str) -> None:
        logger.warning("%s peer=%s:%s %s; answering where possible, then closing", self.label, conn.peer.address,
                       conn.peer.port, reason)
        try:
            answer = self.refusal(conn.frames.head(REFUSAL_HEAD), conn.peer, reason)
        except Exception as exc:  # the answer is a courtesy; the refusal stands without it
            logger.error("%s refusal answer failed: %s", self.label, type(exc).__name__)
            answer = None
        conn.frames.clear()  # the refused frame is not held any longer
        self._answer(conn, answer, _State.REFUSING, now)

    def _take_answers(self, now: float) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while not self._answers.empty():
            conn, answer = self._answers.get()
            if conn in self._connections:
                self._answer(conn, answer, _State.WRITING, now)

    def _answer(self, conn: _Connection, answer: bytes | None, state: _State, now: float) -> None:
        """Start sending ``answer`` framed (the connection then in ``state``); no answer closes it."""
        if answer is None:
            self._close(conn)
            return
        conn.state = state
        conn.out = frame(answer)
        conn.last_progress = now
        self._write(conn, now)

    def _write(self, conn: _Connection, now: float) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except ssl.SSLWantReadError:  # TLS has to read before it can write on (the same bytes are offered again)
            self._watch(conn, selectors.EVENT_READ)
            return
        except (ssl.SSLWantWriteError, BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close(conn)
            return
        if sent:
            conn.out = conn.out[sent:]
            conn.last_progress = now
        if conn.out:
            self._watch(conn, selectors.EVENT_WRITE)
            return
        if conn.state is _State.REFUSING:
            if not conn.tls:  # TLS has no half-close of its own: drain what the peer sends, then close
                try:
                    conn.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    self._close(conn)
                    return
            conn.state = _State.DRAINING
            conn.drain_until = now + self.limits.rate_window
            self._watch(conn, selectors.EVENT_READ)
            if conn.pending():
                self._read(conn, now)
            return
        conn.state = _State.READING
        conn.idle_since = now
        if conn.frames.in_frame:  # the peer sent ahead: what is buffered starts the next frame's clock now
            conn.begin_frame(now)
        self._next_message(conn, now)
        if conn.state is _State.READING and conn.pending():  # sent ahead, and still inside TLS's buffer
            self._read(conn, now)

    def _watch(self, conn: _Connection, events: int) -> None:
        selector = self._selector
        if selector is None:
            return
        try:
            key = selector.get_key(conn.sock)
        except KeyError:
            if events:
                selector.register(conn.sock, events, conn)
            return
        if not events:
            selector.unregister(conn.sock)
        elif key.events != events:
            selector.modify(conn.sock, events, conn)

    def _close(self, conn: _Connection) -> None:
        if conn not in self._connections:
            return
        self._watch(conn, 0)
        conn.state = _State.CLOSED
        self._connections.discard(conn)
        self._per_peer[conn.peer.address] -= 1
        if self._per_peer[conn.peer.address] <= 0:
            del self._per_peer[conn.peer.address]
        conn.frames.clear()
        conn.sock.close()

    # -- time rules --------------------------------------------------------------------------------

    def _deadline(self, conn: _Connection) -> float:
        """When ``conn`` must next be looked at (inf: nothing can expire, a worker has it)."""
        limits = self.limits
        if conn.state is _State.HANDSHAKE:
            return conn.handshake_until
        if conn.state is _State.READING:
            if not conn.frames.in_frame:
                return conn.idle_since + limits.idle_timeout
            return min(conn.window_started + limits.rate_window, conn.last_byte + limits.rate_window,
                       conn.frame_started + limits.frame_deadline)
        if conn.state in (_State.WRITING, _State.REFUSING):
            return conn.last_progress + limits.rate_window
        if conn.state is _State.DRAINING:
            return conn.drain_until
        return float("inf")

    def _next_timer(self, now: float) -> float:
        return min((self._deadline(conn) for conn in self._connections), default=now + 3600)

    def _check_timers(self, now: float) -> None:
        limits = self.limits
        for conn in list(self._connections):
            if self._deadline(conn) > now:
                continue
            reason = ""
            if conn.state is _State.HANDSHAKE:
                self._handshake_failed(conn, now, f"TLS handshake not complete within {limits.handshake_timeout:g}s")
                continue
            if conn.state is _State.READING and not conn.frames.in_frame:
                logger.info("%s peer=%s:%s idle for %gs after %d messages; closing", self.label, conn.peer.address,
                            conn.peer.port, limits.idle_timeout, conn.messages)
            elif conn.state is _State.READING:
                if conn.frame_started + limits.frame_deadline <= now:
                    reason = f"frame not complete within {limits.frame_deadline:g}s"
                elif conn.last_byte + limits.rate_window <= now:
                    reason = f"no byte for {limits.rate_window:g}s inside a frame"
                elif conn.window_started + limits.rate_window > now:
                    continue
                elif conn.window_bytes < limits.min_rate * limits.rate_window:
                    reason = (f"frame arriving at {conn.window_bytes / limits.rate_window:.0f} B/s, below "
                              f"{limits.min_rate} B/s over {limits.rate_window:g}s")
                else:  # this window brought enough: the next one starts
                    conn.window_started = now
                    conn.window_bytes = 0
                    continue
            elif conn.state is not _State.DRAINING:
                reason = f"answer not taken for {limits.rate_window:g}s"
            if reason:
                logger.warning("%s peer=%s:%s dropped: %s", self.label, conn.peer.address, conn.peer.port, reason)
            self._close(conn)

    # -- workers -----------------------------------------------------------------------------------

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, InterruptedError):
            pass  # a wake-up is already pending
        except OSError:
            pass  # closed: the server is going away

    def _work(self) -> None:
        try:
            while (job := self._jobs.get()) is not None:
                if not isinstance(job, tuple):
                    try:
                        job()
                    except Exception as exc:  # bookkeeping must not end the worker
                        logger.error("%s bookkeeping failed (%s)", self.label, type(exc).__name__)
                    continue
                conn, message = job
                try:
                    answer: bytes | None = self.respond(message, conn.peer)
                except Exception as exc:  # the connection cannot be answered in order any more: close it
                    # The class only: an exception's text may quote the message (patient data).
                    logger.error("%s peer=%s:%s internal error (%s); closing", self.label, conn.peer.address,
                                 conn.peer.port, type(exc).__name__)
                    answer = None
                self._answers.put((conn, answer))
                self._wake()
        finally:
            self.worker_finished()
