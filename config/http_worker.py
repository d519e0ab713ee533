"""The web server's worker: gunicorn's threaded worker with a guard against slow clients.

Why not gunicorn's ``sync`` worker (the model before issue 15): one request per process, read and answered
by that process alone.  Three clients dripping a request body one byte every two seconds held every worker
of a node, and every actor of the node stopped answering.  Why not gunicorn's ``gthread`` worker as it is:
it waits up to 5 s for a connection's first byte off the thread pool, but from the first byte on the request
holds a thread for as long as the client cares to take - the same starvation with more threads.  Why not a
front (nginx and the like): a buffering front spools multi-GB ITI-41 bodies to disk before the application
sees a byte, and a non-buffering one solves nothing that this worker does not; it would also be one more
process for ``make run`` and one more hop for every transaction.

So (:class:`GuardedThreadWorker`):

1. **Requests are read off the thread pool.**  The worker's event loop reads each request's head, and its
   body when it is small (``Content-Length`` up to :attr:`GuardPolicy.prebuffer` bytes - every query, every
   registration, small submissions), without blocking; only a request that has arrived whole (or whose body
   is large or chunked, which then streams) is handed to a thread.  A slow or silent client costs a socket
   and a buffer, never a thread.
2. **A minimum rate, not a total deadline** (RFC 9110 15.5.9 408 Request Timeout): while a request is being
   received, fewer than ``min_rate`` bytes/s over a ``window`` (default 1 kB/s over 30 s) drops the client,
   in the event loop (with a 408) or in the thread streaming a large body.  A legitimate 1 GB submission over
   a slow WAN passes; a client dripping bytes is gone within one window.
3. **Sends have an inactivity limit** (``send_timeout``): a client that stops reading its answer is dropped
   instead of holding the thread.

The connection cap of each worker is gunicorn's ``worker_connections``.  Figures (threads, per-request cost,
slow-client floods) are in the README's Reliability table; ``tests/config/test_http_worker.py`` drives this
worker in a real gunicorn.

TLS (issue 13) wraps the socket in the thread: for a TLS listener the head is not read ahead (the handshake
happens in the thread, as in gunicorn's own worker) and only the rate guard applies.
"""

from __future__ import annotations

import errno
import logging
import select
import selectors
import socket
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from gunicorn.workers.gthread import TConn, ThreadWorker

logger = logging.getLogger("xds.http")

#: End of an HTTP/1.1 head (RFC 9112 2.1: start-line, fields, an empty line).
_HEAD_END = b"\r\n\r\n"
#: One non-blocking read of the event loop.
_READ_SIZE = 65536
#: RFC 9110 15.5.9: the server closes a connection it no longer wants to wait on with a 408.
_TIMEOUT_ANSWER = (b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain\r\n"
                   b"Content-Length: 33\r\n\r\nrequest not received fast enough\n")


@dataclass(frozen=True)
class GuardPolicy:
    """The slow-client rules of one worker (from settings: ``XDS_HTTP_*``)."""

    #: Fewer bytes per second than this, averaged over ``window`` seconds, while a request is received: dropped.
    min_rate: int = 1024
    window: float = 30.0
    #: Bodies up to this size are read whole by the event loop before a thread is used.
    prebuffer: int = 256 * 1024
    #: A send that makes no progress for this long drops the client (it stopped reading).
    send_timeout: float = 60.0
    #: Largest request head read ahead; a longer one goes to gunicorn's parser, which refuses it (431/400).
    max_head: int = 64 * 1024

    def too_slow(self, received: int) -> bool:
        """Whether ``received`` bytes over one whole window is below the minimum rate."""
        return received < self.min_rate * self.window


class RateGuardedSocket:
    """The socket as gunicorn's request parser sees it in a thread: ``recv`` enforces the minimum rate.

    A tumbling window: each ``window`` seconds the bytes received in it must reach ``min_rate * window``;
    waiting for data never outlasts the current window (nor the socket's own timeout, which gunicorn sets
    when it drains an unread body: that wait then ends with :class:`socket.timeout` as it would have).
    A client below the rate is logged once and its side of the connection shut: the parser sees the end of
    the stream, so the request ends as a truncated one would (a body shorter than announced: the SOAP layer
    answers 400, gunicorn drops a half-received head), with no thread left waiting.  Everything else is the
    real socket's.
    """

    def __init__(self, sock: socket.socket, policy: GuardPolicy, peer: str) -> None:
        self._sock = sock
        self._policy = policy
        self._peer = peer
        self._cut = False
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN)
        self.restart()

    def restart(self) -> None:
        """A new request begins: a new window."""
        self._cut = False
        self._window_start = time.monotonic()
        self._window_bytes = 0

    def recv(self, size: int) -> bytes:
        if self._cut:
            return b""
        policy = self._policy
        own_timeout = self._sock.gettimeout()
        waited_since = time.monotonic()
        while True:
            now = time.monotonic()
            if now - self._window_start >= policy.window:
                if policy.too_slow(self._window_bytes):
                    return self._cut_off(now)
                self._window_start, self._window_bytes = now, 0
            wait = self._window_start + policy.window - now
            if own_timeout is not None:
                left = waited_since + own_timeout - now
                if left <= 0:
                    raise TimeoutError("timed out")
                wait = min(wait, left)
            pending = getattr(self._sock, "pending", None)  # TLS: decrypted bytes the kernel does not see
            if (pending is not None and pending()) or self._poll.poll(max(1, int(wait * 1000))):
                data = self._sock.recv(size)
                self._window_bytes += len(data)
                return data

    def _cut_off(self, now: float) -> bytes:
        logger.warning("http slow-client dropped peer=%s phase=thread bytes=%d seconds=%.0f", self._peer,
                       self._window_bytes, now - self._window_start)
        self._cut = True
        try:
            self._sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass
        return b""

    def gettimeout(self) -> float | None:
        return self._sock.gettimeout()

    def settimeout(self, value: float | None) -> None:
        self._sock.settimeout(value)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class GuardedConn(TConn):
    """A connection whose next request the event loop reads ahead (see the module doc)."""

    def __init__(self, cfg: Any, sock: socket.socket, client: Any, server: Any, policy: GuardPolicy) -> None:
        super().__init__(cfg, sock, client, server)
        self.policy = policy
        self.guard: RateGuardedSocket | None = None
        self.ahead = bytearray()
        self.needed: int | None = None  # total bytes of head + buffered body once the head is known
        self.began = self.window_start = time.monotonic()
        self.window_bytes = 0

    # -- event loop side ------------------------------------------------------------------
    def begin_request(self) -> None:
        self.ahead.clear()
        self.needed = None
        self.began = self.window_start = time.monotonic()
        self.window_bytes = 0

    def feed(self, data: bytes) -> bool:
        """Take bytes read by the event loop; True once the request can go to a thread."""
        self.ahead += data
        self.window_bytes += len(data)
        if self.needed is None:
            end = self.ahead.find(_HEAD_END)
            if end < 0:
                return len(self.ahead) > self.policy.max_head  # gunicorn's parser refuses it
            self.needed = _bytes_to_read_ahead(bytes(self.ahead[:end]), end + len(_HEAD_END), self.policy)
        return len(self.ahead) >= self.needed

    def too_slow(self, now: float) -> bool:
        if now - self.window_start < self.policy.window:
            return False
        if self.policy.too_slow(self.window_bytes):
            return True
        self.window_start, self.window_bytes = now, 0
        return False

    def hand_over(self) -> None:
        """The read-ahead bytes go in front of whatever the parser reads next (on a kept-alive connection
        now; on a new one when the thread creates the parser, :meth:`init`)."""
        self.sock.setblocking(True)
        self.data_ready = True
        if self.parser is not None and self.ahead:
            self.parser.unreader.unread(bytes(self.ahead))
            self.ahead.clear()

    # -- thread side ------------------------------------------------------------------------
    def init(self) -> None:
        fresh = not self.initialized
        super().init()
        if not fresh or self.parser is None or self.is_http2:
            return
        if self.ahead:
            self.parser.unreader.unread(bytes(self.ahead))
            self.ahead.clear()
        unreader = self.parser.unreader
        if hasattr(unreader, "sock"):
            self.guard = RateGuardedSocket(self.sock, self.policy, _peer(self.client))
            unreader.sock = self.guard


def _bytes_to_read_ahead(head: bytes, head_size: int, policy: GuardPolicy) -> int:
    """How much of the request the event loop waits for: the head, plus a small body of known length.

    Chunked or large bodies stream in the thread (under the rate guard); so does a request with
    ``Expect: 100-continue`` (RFC 9110 10.1.1: the client waits for the interim answer before its body).
    A head gunicorn will refuse (two lengths, a bad number) goes to it as it is.
    """
    length: int | None = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name in (b"transfer-encoding", b"expect"):
            return head_size
        if name == b"content-length":
            if length is not None or not value.strip().isdigit():
                return head_size
            length = int(value.strip())
    if length is None or length > policy.prebuffer:
        return head_size
    return head_size + length


class GuardedThreadWorker(ThreadWorker):
    """gunicorn's gthread worker, reading requests ahead in its event loop under a minimum rate."""

    policy = GuardPolicy()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        # The WSGI application has loaded Django's settings (config.settings validates them).
        from django.conf import settings

        self.policy = GuardPolicy(min_rate=settings.XDS_HTTP_MIN_RATE, window=float(settings.XDS_HTTP_RATE_WINDOW),
                                  prebuffer=settings.XDS_HTTP_PREBUFFER,
                                  send_timeout=float(settings.XDS_HTTP_SEND_TIMEOUT))

    def init_process(self) -> None:
        self.reading: set[GuardedConn] = set()
        super().init_process()

    def accept(self, listener: socket.socket) -> None:
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = GuardedConn(self.cfg, client_sock, client_addr, listener.getsockname(), self.policy)
        if self.cfg.is_ssl:  # the handshake happens in the thread (module doc)
            client_sock.setblocking(True)
            self.enqueue_req(conn)
            return
        self._read_ahead(conn)

    def on_client_socket_readable(self, conn: GuardedConn, client: socket.socket) -> None:
        """A kept-alive connection carries a new request: read it ahead too."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        if self.cfg.is_ssl:
            self.enqueue_req(conn)
            return
        self._read_ahead(conn)

    def _read_ahead(self, conn: GuardedConn) -> None:
        conn.begin_request()
        conn.sock.setblocking(False)
        self.reading.add(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))

    def _on_readable(self, conn: GuardedConn, client: socket.socket) -> None:
        try:
            data = conn.sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away before its request was whole
            self._drop(conn, answer=False)
            return
        if conn.feed(data):
            self.poller.unregister(conn.sock)
            self.reading.discard(conn)
            conn.hand_over()
            self.enqueue_req(conn)

    def _drop(self, conn: GuardedConn, *, answer: bool) -> None:
        self.reading.discard(conn)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        if answer:
            try:
                conn.sock.send(_TIMEOUT_ANSWER)  # non-blocking: best effort
            except OSError:
                pass
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        """gunicorn's own clean-up of idle connections, then the clients below the minimum rate."""
        super().murder_pending()
        now = time.monotonic()
        for conn in [c for c in self.reading if not self.alive or c.too_slow(now)]:
            if self.alive:
                logger.warning("http slow-client dropped peer=%s phase=read-ahead bytes=%d seconds=%.0f",
                               _peer(conn.client), len(conn.ahead), now - conn.began)
            self._drop(conn, answer=self.alive)

    def handle_request(self, req: Any, conn: GuardedConn) -> bool:
        # Each request gets a new rate window; sends (gunicorn's sendall / our sendmsg) an inactivity limit.
        if conn.guard is not None:
            conn.guard.restart()
        conn.sock.settimeout(self.policy.send_timeout)
        return bool(super().handle_request(req, conn))


def _peer(client: Any) -> str:
    """The client's address for a log line (an address, never patient data)."""
    if isinstance(client, tuple) and client:
        return str(client[0])
    return str(client or "-")


#: gunicorn's ``--worker-class`` for this worker.
WORKER_CLASS = f"{__name__}.GuardedThreadWorker"


def worker_arguments(workers: int, threads: int) -> list[str]:
    """The gunicorn options that select this worker: ``make run``'s servers and the tests' use the same."""
    return ["--workers", str(workers), "--worker-class", WORKER_CLASS, "--threads", str(threads)]
