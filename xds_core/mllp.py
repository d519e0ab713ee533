"""MLLP, the HL7 v2 Minimal Lower Layer Protocol: framing, a small client and a bounded server (the one implementation).

Frame (HL7 v2.5.1 Appendix C.4, MLLP; ITI TF-2x C.2): ``<SB 0x0b> message <EB 0x1c><CR 0x0d>``.
Bytes outside a frame are ignored.  The ITI-8 listener (:mod:`xds_registry.patient_identity_feed.mllp`),
the conformance harness's feed (:mod:`conformance.patients`) and the benchmark's feed use this module.

Limits: a frame longer than ``max_message`` bytes is refused (:class:`MllpError`) before it is all held in
memory (no read asks for more than the frame may still hold); the client's ``timeout`` bounds the whole
exchange (connect, send, answer), not each read.  The server (:class:`MllpListener`) bounds connections in
total and per peer address, threads (one I/O thread and a fixed pool of workers, whatever the number of
connections) and time (:class:`ServerLimits`).
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from queue import SimpleQueue

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


# --- server -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ServerLimits:
    """What one MLLP listener grants its peers.  Times in seconds, sizes in bytes.

    HL7 interfaces keep a connection open and may be quiet for long between messages, so the wait for the
    next frame is long (``idle_timeout``); once a frame has begun it must keep moving: at least
    ``min_rate`` bytes per second averaged over each ``rate_window`` (a window with no byte at all drops
    it too, whatever ``min_rate``), and be complete within ``frame_deadline``.  Our answer must be taken
    by the peer at the same pace (a peer that stops reading its ACKs is dropped after ``rate_window``).
    """

    max_connections: int = 32
    max_connections_per_peer: int = 8
    workers: int = 4
    idle_timeout: float = 120.0
    min_rate: int = 1024
    rate_window: float = 30.0
    frame_deadline: float = 120.0
    max_message: int = MAX_MESSAGE

    def __post_init__(self) -> None:
        if min(self.max_connections, self.max_connections_per_peer, self.workers, self.max_message) < 1:
            raise ValueError("MLLP connection, worker and size limits must be >= 1")
        if min(self.idle_timeout, self.rate_window, self.frame_deadline) <= 0 or self.min_rate < 0:
            raise ValueError("MLLP timeouts must be > 0 and the minimum rate >= 0")


class _State(Enum):
    READING = "reading"        # waiting for (the rest of) a frame
    PROCESSING = "processing"  # a worker has the message; nothing is read meanwhile (one ACK per message, in order)
    WRITING = "writing"        # sending the answer
    REFUSING = "refusing"      # sending the answer to a refused frame, then draining
    DRAINING = "draining"      # discarding what the peer still sends, so it can read our answer, then closing


#: How many bytes of a refused frame the application may look at to answer it (the MSH segment).
REFUSAL_HEAD = 4096
#: Refused connections are logged at most once per this many seconds and limit (the line counts them): a flood of
#: connections must not become a flood of log lines.
_REFUSAL_LOG_INTERVAL = 1.0


class _Connection:
    __slots__ = ("sock", "peer", "frames", "state", "out", "idle_since", "frame_started", "window_started",
                 "window_bytes", "last_byte", "last_progress", "drain_until", "messages")

    def __init__(self, sock: socket.socket, peer: tuple[str, int], max_message: int, now: float) -> None:
        self.sock = sock
        self.peer = peer
        self.frames = FrameBuffer(max_message)
        self.state = _State.READING
        self.out = b""
        self.idle_since = now
        self.frame_started = self.window_started = self.last_byte = self.last_progress = now
        self.window_bytes = 0
        self.drain_until = now
        self.messages = 0

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
    :meth:`refusal`, :meth:`worker_finished`); ``label`` starts their log lines.
    """

    label = "MLLP"

    def __init__(self, address: tuple[str, int], limits: ServerLimits | None = None) -> None:
        self.limits = limits or ServerLimits()
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.socket = socket.create_server(address, family=family, backlog=128)  # SO_REUSEADDR on POSIX
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()
        self._jobs: SimpleQueue[tuple[_Connection, bytes] | None] = SimpleQueue()
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

    # -- what a subclass provides ------------------------------------------------------------------

    def respond(self, message: bytes, peer: tuple[str, int]) -> bytes:
        """The answer to one message (unframed), on a worker thread."""
        raise NotImplementedError

    def refusal(self, head: bytes, peer: tuple[str, int], reason: str) -> bytes | None:
        """The answer to a frame refused before it was read whole (``head``: its first bytes), or None."""
        return None

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
                for key, events in selector.select(timeout):
                    now = time.monotonic()
                    if key.data == "accept":
                        self._accept(now)
                    elif key.data == "wake":
                        self._take_answers(now)
                    elif events & selectors.EVENT_READ:
                        self._read(key.data, now)
                    elif events & selectors.EVENT_WRITE:
                        self._write(key.data, now)
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

    def shutdown(self) -> None:
        """Stop :meth:`serve_forever` (from another thread) and wait until it has."""
        self._shutdown_request = True
        self._wake()
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
            elif self._per_peer[address] >= limits.max_connections_per_peer:
                self._refuse_connection(sock, peer, now, f"{limits.max_connections_per_peer} connections per peer")
            else:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn = _Connection(sock, peer, limits.max_message, now)
                self._connections.add(conn)
                self._per_peer[address] += 1
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

    def _read(self, conn: _Connection, now: float) -> None:
        try:
            data = conn.sock.recv(_RECV if conn.state is _State.DRAINING else min(_RECV, conn.frames.room()))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            if conn.frames.in_frame:
                logger.info("%s peer=%s:%s closed the connection inside a frame", self.label, *conn.peer[:2])
            self._close(conn)
            return
        if conn.state is _State.DRAINING:
            if END_BLOCK in data:  # the refused frame is over: the peer now reads our answer (or the close)
                self._close(conn)
            return
        started = conn.frames.in_frame
        conn.frames.feed(data)
        if conn.frames.in_frame:
            if not started:
                conn.begin_frame(now)
            conn.window_bytes += len(data)
            conn.last_byte = now
        self._next_message(conn, now)

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
        logger.warning("%s peer=%s:%s %s; answering where possible, then closing", self.label, *conn.peer[:2],
                       reason)
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
        except (BlockingIOError, InterruptedError):
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
            try:
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                self._close(conn)
                return
            conn.state = _State.DRAINING
            conn.drain_until = now + self.limits.rate_window
            self._watch(conn, selectors.EVENT_READ)
            return
        conn.state = _State.READING
        conn.idle_since = now
        if conn.frames.in_frame:  # the peer sent ahead: what is buffered starts the next frame's clock now
            conn.begin_frame(now)
        self._next_message(conn, now)

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
        self._connections.discard(conn)
        self._per_peer[conn.peer[0]] -= 1
        if self._per_peer[conn.peer[0]] <= 0:
            del self._per_peer[conn.peer[0]]
        conn.frames.clear()
        conn.sock.close()

    # -- time rules --------------------------------------------------------------------------------

    def _deadline(self, conn: _Connection) -> float:
        """When ``conn`` must next be looked at (inf: nothing can expire, a worker has it)."""
        limits = self.limits
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
            if conn.state is _State.READING and not conn.frames.in_frame:
                logger.info("%s peer=%s:%s idle for %gs after %d messages; closing", self.label, *conn.peer[:2],
                            limits.idle_timeout, conn.messages)
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
                logger.warning("%s peer=%s:%s dropped: %s", self.label, *conn.peer[:2], reason)
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
                conn, message = job
                try:
                    answer: bytes | None = self.respond(message, conn.peer)
                except Exception as exc:  # the connection cannot be answered in order any more: close it
                    # The class only: an exception's text may quote the message (patient data).
                    logger.error("%s peer=%s:%s internal error (%s); closing", self.label, *conn.peer[:2],
                                 type(exc).__name__)
                    answer = None
                self._answers.put((conn, answer))
                self._wake()
        finally:
            self.worker_finished()
