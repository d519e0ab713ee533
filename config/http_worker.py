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

**TLS (issue 13, ITI-19) is terminated here, by this worker**, with ``xds_core.tls.server_context`` (the one
ITI-19 profile of every listener: TLS >= 1.2, the IHE suites, a client certificate required and verified against
``XDS_TLS_CA`` / ``XDS_TLS_PINNED``).  Not gunicorn's ``--certfile``: its options cannot express that trust (a
pinned leaf as its own anchor, DER files, directories of pinned certificates), its handshake runs in a request
thread (a silent client would hold it), and its worker never hands the client certificate to the application.
Not a TLS front (stunnel, nginx) on loopback: one more process and hop per node, and the verified identity
would have to travel in a header the application must then trust.  So:

4. **The handshake runs in the event loop, non-blocking, under a deadline** (:data:`HANDSHAKE_SECONDS`): a
   client that connects and says nothing (or drips its ClientHello) costs a socket, never a thread, and is
   closed at the deadline.  Then the request is read ahead exactly as on a plain socket (an ``SSLSocket``'s
   non-blocking ``recv`` raises ``SSLWantReadError`` until a whole record is in; decrypted bytes OpenSSL
   holds -- ``pending()`` -- do not make the socket readable, so they are read at once).  A full handshake
   costs the loop a few ms of CPU (RSA-2048 signature; measured ~3 ms more per request on a new connection
   than plain HTTP, none on a kept-alive one): the actors' clients keep their connections alive.
5. **A failed handshake completes no request** (no certificate, TLS 1.0/1.1, a certificate of no trusted CA
   and not pinned, plain HTTP on the TLS port): the connection is closed and a Security Alert (Node
   Authentication, ``xds_core.audit.node_authentication_failure``) is recorded -- rate-limited by
   :class:`atna.tls.AlertLimiter` (one per peer address per 10 s, 20 per 10 s in all), so that a scan cannot
   flood the audit trail; the ones held back are counted in the next log line.
6. **The verified certificate reaches Django** in the WSGI environ: ``environ["xds.peer_certificate"]`` (a
   :class:`~xds_core.identity.PeerCertificate`), ``SSL_CLIENT_S_DN`` and ``SSL_CLIENT_FINGERPRINT_SHA256``
   (the names mod_ssl uses; a client cannot forge them: request headers become ``HTTP_*`` keys), and
   ``wsgi.url_scheme`` = ``https``.  Which identity that is, and whether it may come in, is
   ``atna.middleware.NodeIdentityMiddleware``'s business (the node identity table).

The worker reads ``XDS_TLS*`` itself, from Django's settings, when it loads the application
(``atna.tls.node_server_context()``): TLS needs no gunicorn option, ``worker_arguments`` is the same for both
modes, and the listener is TLS exactly when the node's settings say so.  ``XDS_TLS=off`` (the default) keeps
plain HTTP with a warning at start.
"""

from __future__ import annotations

import errno
import logging
import select
import selectors
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from gunicorn.workers.gthread import TConn, ThreadWorker

from atna.tls import AlertLimiter
from xds_core import audit
from xds_core.identity import PeerCertificate
from xds_core.tls import ENVIRON_PEER_CERTIFICATE, peer_certificate

logger = logging.getLogger("xds.http")

#: End of an HTTP/1.1 head (RFC 9112 2.1: start-line, fields, an empty line).
_HEAD_END = b"\r\n\r\n"
#: One non-blocking read of the event loop.
_READ_SIZE = 65536
#: RFC 9110 15.5.9: the server closes a connection it no longer wants to wait on with a 408.
_TIMEOUT_ANSWER = (b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain\r\n"
                   b"Content-Length: 33\r\n\r\nrequest not received fast enough\n")

#: A TLS handshake not done within this many seconds (a silent or dripping client) is closed.
HANDSHAKE_SECONDS = 10.0

#: WSGI environ keys of the verified client certificate (module doc, point 6).
ENVIRON_PEER = ENVIRON_PEER_CERTIFICATE
ENVIRON_SUBJECT = "SSL_CLIENT_S_DN"
ENVIRON_FINGERPRINT = "SSL_CLIENT_FINGERPRINT_SHA256"


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
        self.tls = False
        self.peer: PeerCertificate | None = None  # the verified client certificate (TLS)
        self.handshake_deadline = 0.0
        self.waiting: int | None = None  # the selector events the handshake is registered for

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


def handshake_failure_reason(exc: BaseException) -> str:
    """A failed handshake, in words for the log and the alert (OpenSSL's reason: never patient data)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS handshake refused: client certificate not trusted ({exc.verify_message})"
    reason = getattr(exc, "reason", None) or type(exc).__name__
    return f"TLS handshake refused: {reason}"


#: The connection whose request this thread is running (the WSGI wrapper reads its certificate).
_serving = threading.local()


def _with_peer_certificate(app: Any) -> Any:
    """The WSGI application, with the verified client certificate of the connection put in the environ."""

    def application(environ: dict[str, Any], start_response: Any) -> Any:
        conn: GuardedConn | None = getattr(_serving, "conn", None)
        if conn is not None and conn.tls:
            environ["wsgi.url_scheme"] = "https"
            environ["HTTPS"] = "on"
            if conn.peer is not None:
                environ[ENVIRON_PEER] = conn.peer
                environ[ENVIRON_SUBJECT] = conn.peer.subject
                environ[ENVIRON_FINGERPRINT] = conn.peer.sha256
        return app(environ, start_response)

    return application


class GuardedThreadWorker(ThreadWorker):
    """gunicorn's gthread worker, reading requests ahead in its event loop under a minimum rate, and
    terminating TLS there when the node's settings ask for it (module doc)."""

    policy = GuardPolicy()
    tls_context: ssl.SSLContext | None = None

    def load_wsgi(self) -> None:
        super().load_wsgi()
        # The WSGI application has loaded Django's settings (config.settings validates them).
        from django.conf import settings

        from atna.activity import started
        from atna.tls import node_server_context

        self.policy = GuardPolicy(min_rate=settings.XDS_HTTP_MIN_RATE, window=float(settings.XDS_HTTP_RATE_WINDOW),
                                  prebuffer=settings.XDS_HTTP_PREBUFFER,
                                  send_timeout=float(settings.XDS_HTTP_SEND_TIMEOUT))
        if self.cfg.is_ssl:  # the module doc says why; two TLS layers would read each other's bytes
            raise RuntimeError("gunicorn's --certfile/--keyfile are not used with this worker: set XDS_TLS")
        # XDS_TLS off: None, plain HTTP.  A broken certificate/key/trust fails the worker's boot, loudly.
        self.tls_context = node_server_context()
        if self.tls_context is not None:
            self.wsgi = _with_peer_certificate(self.wsgi)
        started("web")  # Application Activity start/stop of this worker process (atna.activity)

    def init_process(self) -> None:
        self.reading: set[GuardedConn] = set()
        self.handshaking: set[GuardedConn] = set()
        self.alerts = AlertLimiter()
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
        if self.tls_context is not None:
            self._start_handshake(conn)
            return
        self._read_ahead(conn)

    # -- TLS handshake, in the event loop ---------------------------------------------------
    def _start_handshake(self, conn: GuardedConn) -> None:
        assert self.tls_context is not None
        try:
            conn.sock = self.tls_context.wrap_socket(conn.sock, server_side=True, do_handshake_on_connect=False)
        except OSError:
            self.nr_conns -= 1
            conn.close()
            return
        conn.tls = True
        conn.handshake_deadline = time.monotonic() + HANDSHAKE_SECONDS
        self.handshaking.add(conn)
        self._continue_handshake(conn, conn.sock)

    def _continue_handshake(self, conn: GuardedConn, _client: socket.socket) -> None:
        tls_sock: ssl.SSLSocket = conn.sock  # type: ignore[assignment]
        try:
            tls_sock.do_handshake()
        except ssl.SSLWantReadError:
            self._wait_handshake(conn, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._wait_handshake(conn, selectors.EVENT_WRITE)
            return
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError):
            # Gone before finishing the handshake (a port probe, a client that gave up): nothing to refuse.
            self._end_handshake(conn)
            self._close(conn)
            return
        except ssl.SSLError as exc:
            self._end_handshake(conn)
            self._refuse(conn, exc)
            return
        except OSError:
            self._end_handshake(conn)
            self._close(conn)
            return
        self._end_handshake(conn)
        conn.peer = peer_certificate(tls_sock)
        self._read_ahead(conn)
        # Bytes that came with the handshake's last flight may already be decrypted: read them now.
        if conn in self.reading:
            self._on_readable(conn, conn.sock)

    def _wait_handshake(self, conn: GuardedConn, events: int) -> None:
        if conn.waiting is None:
            self.poller.register(conn.sock, events, partial(self._continue_handshake, conn))
        elif conn.waiting != events:
            self.poller.modify(conn.sock, events, partial(self._continue_handshake, conn))
        conn.waiting = events

    def _end_handshake(self, conn: GuardedConn) -> None:
        self.handshaking.discard(conn)
        if conn.waiting is not None:
            try:
                self.poller.unregister(conn.sock)
            except (KeyError, ValueError, OSError):
                pass
            conn.waiting = None

    def _refuse(self, conn: GuardedConn, exc: ssl.SSLError) -> None:
        """A failed handshake: closed, logged and recorded as a Security Alert (rate-limited)."""
        address = _peer(conn.client)
        reason = handshake_failure_reason(exc)
        host, port = (conn.server[0], conn.server[1]) if isinstance(conn.server, tuple) else (conn.server, "")
        if self.alerts.allow(address):
            held = self.alerts.take_suppressed()
            logger.warning("tls refused peer=%s reason=%s (alerts held back since the last one: %d)", address,
                           reason, held)
            audit.record(audit.node_authentication_failure(listener=f"https://{host}:{port}", peer_address=address,
                                                           reason=reason))
        else:
            logger.debug("tls refused peer=%s reason=%s (alert held back)", address, reason)
        self._close(conn)

    def _close(self, conn: GuardedConn) -> None:
        self.nr_conns -= 1
        conn.close()

    # -- reading requests ahead -------------------------------------------------------------
    def on_client_socket_readable(self, conn: GuardedConn, client: socket.socket) -> None:
        """A kept-alive connection carries a new request: read it ahead too."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._read_ahead(conn)
        if conn.tls and conn in self.reading:
            self._on_readable(conn, conn.sock)  # pending() bytes do not make the socket readable

    def finish_request(self, conn: GuardedConn, fs: Any) -> None:
        super().finish_request(conn, fs)
        # A TLS record may have carried the start of the next request: decrypted, invisible to the poller.
        if conn.tls and _pending(conn.sock) and conn in self.keepalived_conns:
            self.on_client_socket_readable(conn, conn.sock)

    def _read_ahead(self, conn: GuardedConn) -> None:
        conn.begin_request()
        conn.sock.setblocking(False)
        self.reading.add(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))

    def _on_readable(self, conn: GuardedConn, client: socket.socket) -> None:
        while True:
            try:
                data = conn.sock.recv(_READ_SIZE)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
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
                return
            if not (conn.tls and _pending(conn.sock)):
                return

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
        """gunicorn's own clean-up of idle connections, then the clients below the minimum rate, then the
        TLS handshakes past their deadline."""
        super().murder_pending()
        now = time.monotonic()
        for conn in [c for c in self.reading if not self.alive or c.too_slow(now)]:
            if self.alive:
                logger.warning("http slow-client dropped peer=%s phase=read-ahead bytes=%d seconds=%.0f",
                               _peer(conn.client), len(conn.ahead), now - conn.began)
            self._drop(conn, answer=self.alive)
        for conn in [c for c in self.handshaking if not self.alive or now >= c.handshake_deadline]:
            logger.info("tls handshake not done in %.0f s, closed peer=%s", HANDSHAKE_SECONDS, _peer(conn.client))
            self._end_handshake(conn)
            self._close(conn)

    def handle_request(self, req: Any, conn: GuardedConn) -> bool:
        # Each request gets a new rate window; sends (gunicorn's sendall / our sendmsg) an inactivity limit.
        if conn.guard is not None:
            conn.guard.restart()
        conn.sock.settimeout(self.policy.send_timeout)
        if conn.tls:
            req.scheme = "https"  # gunicorn derives it from its own certfile option, which is not used
        _serving.conn = conn
        try:
            return bool(super().handle_request(req, conn))
        finally:
            _serving.conn = None


def _pending(sock: socket.socket) -> int:
    """Decrypted bytes an SSLSocket holds (0 for a plain or closed socket)."""
    try:
        return int(sock.pending())  # type: ignore[attr-defined]
    except (AttributeError, ValueError, OSError):
        return 0


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
