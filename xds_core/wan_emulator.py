"""A user-space WAN link emulator: a TCP proxy that adds one-way delay and a bandwidth limit.

Why: XDS-I.b retrievals (RAD-69) cross sites, and their cost is dominated by round trips and by the
bottleneck bandwidth, neither of which a loopback benchmark sees.  The usual tool, ``tc qdisc ... netem``,
needs a kernel module and privileges that CI machines and containers often lack, so benchmarks put this
proxy between the client and the server instead: ``client -> DelayingProxy -> server``.

Model (per direction, independently, as on a real full-duplex link): a chunk read from one side at
``arrival`` starts serialising when the link is free, ``departure = max(arrival, link_free_at) +
size * 8 / rate``, and is handed to the other side at ``departure + delay``.  Latency and bandwidth
therefore compose the way they do on a wire: a 10 MB transfer at 100 Mbit/s takes ~0.8 s plus one delay,
and a small request/response exchange costs two delays.  A new connection also pays the handshake's round
trip (see :class:`DelayingProxy`).  Not modelled: packet loss, jitter, and TCP's own window dynamics over
the emulated path (slow start, a window smaller than the bandwidth-delay product) -- the proxy's TCP
legs are on loopback, so results are those of a well-tuned long-lived TCP connection over the link.

Every accepted connection gets four threads (a reader and a writer per direction) joined by a queue of
``(deliver_at, bytes)``.  The queue is bounded in bytes: a reader blocks when its direction already holds
``max_queued_bytes``, so TCP back-pressure reaches the fast sender and the proxy never buffers a whole
study.  A half-close (``shutdown(SHUT_WR)``) is forwarded after the data before it, with the same delay;
a reset or a write error tears the whole connection down.

Standard library only, and no import from the rest of the project: benchmarks and ad-hoc runs
(``python -m xds_core.wan_emulator``) use it without Django.
"""

from __future__ import annotations

import argparse
import collections
import math
import re
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import TypeVar

Address = tuple[str, int]
_T = TypeVar("_T")

#: At most this many bytes are read (and later written) at once: small enough that pacing is smooth
#: (64 KiB is 5 ms at 100 Mbit/s), large enough that a fast link is not CPU-bound on tiny chunks.
CHUNK_SIZE = 64 * 1024
#: Default bound of one direction's queue; together with the kernel's socket buffers this is all the
#: proxy lets a fast sender run ahead of the emulated link.
MAX_QUEUED_BYTES = 4 * 1024 * 1024
#: Thread-name prefix of every thread the proxy starts, so tests and debuggers can find leftovers.
THREAD_PREFIX = "wan-emulator"

_RATE_UNITS = {"bit": 1.0, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
_DELAY_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
_QUANTITY = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Z]*)\s*")


@dataclass(frozen=True, slots=True)
class WanLink:
    """The emulated link, the same in both directions.

    :param rate: bits per second per direction; ``0`` = unlimited (delay only).
    :param delay: one-way delay in seconds, added in each direction (so the RTT grows by ``2 * delay``).
    """

    rate: float = 0.0
    delay: float = 0.0

    def __post_init__(self) -> None:
        # Checked here, not only in the CLI parser: a negative or infinite value would make the pacing
        # clock run backwards or sleep forever, which is far harder to diagnose than an error now.
        for name, value in (("rate", self.rate), ("delay", self.delay)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"WanLink {name} must be a finite number >= 0, not {value!r}")

    def serialisation_time(self, size: int) -> float:
        """Seconds the link needs to put ``size`` bytes on the wire (``0`` when unlimited)."""
        return size * 8 / self.rate if self.rate else 0.0

    def describe(self) -> str:
        """Human-readable summary for log lines and reports, e.g. ``100 Mbit/s, 20 ms one-way delay``."""
        return f"{format_rate(self.rate)}, {format_delay(self.delay)} one-way delay each way"


# ----------------------------------------------------------------------------- units

def _quantity(text: str, units: dict[str, float], what: str, example: str) -> float:
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(f"{what} {text!r}: expected a number with a unit, e.g. {example} "
                         f"(units: {', '.join(units)})")
    number, unit = float(match.group(1)), match.group(2).lower()
    if not unit:
        if number == 0:
            return 0.0
        raise ValueError(f"{what} {text!r} has no unit: write e.g. {example} (units: {', '.join(units)})")
    if unit not in units:
        hint = " ('bps' is ambiguous: bits or bytes? use kbit/mbit/gbit)" if unit.endswith("bps") else ""
        raise ValueError(f"{what} {text!r}: unknown unit {unit!r}{hint}; use one of {', '.join(units)}")
    value = number * units[unit]
    if not math.isfinite(value):
        raise ValueError(f"{what} {text!r} is too large")
    return value


def parse_rate(text: str) -> float:
    """``"100mbit"`` -> ``100e6`` bits/s.  Units kbit/mbit/gbit are decimal (as in ``tc``); ``"0"``,
    ``"unlimited"`` and ``"none"`` mean no limit.

    :raises ValueError: naming the bad value and the accepted units.
    """
    if text.strip().lower() in ("unlimited", "none", "inf"):
        return 0.0
    return _quantity(text, _RATE_UNITS, "rate", "100mbit")


def parse_delay(text: str) -> float:
    """``"20ms"`` -> ``0.02`` seconds (units us/ms/s; ``"0"`` = none).

    :raises ValueError: naming the bad value and the accepted units.
    """
    return _quantity(text, _DELAY_UNITS, "delay", "20ms")


def parse_address(text: str) -> Address:
    """``"127.0.0.1:9001"`` -> ``("127.0.0.1", 9001)``; ``"[::1]:9001"`` for IPv6.

    :raises ValueError: no port, or a port outside 0..65535.
    """
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9001")
    return host.strip("[]"), int(port)


def format_rate(rate: float) -> str:
    """``100e6`` -> ``"100 Mbit/s"``; ``0`` -> ``"unlimited rate"``."""
    if not rate:
        return "unlimited rate"
    for unit, factor in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if rate >= factor:
            return f"{rate / factor:g} {unit}"
    return f"{rate:g} bit/s"


def format_delay(delay: float) -> str:
    """``0.02`` -> ``"20 ms"``."""
    return f"{delay * 1e3:g} ms"


# ----------------------------------------------------------------------------- one direction

#: A direction's pumping loop: ``pump(socket, direction)``.
_Pump = Callable[[socket.socket, "_Direction"], None]


class _Direction:
    """One direction of one connection: the pacing clock and the bounded queue between its threads."""

    def __init__(self, name: str, link: WanLink, max_queued_bytes: int) -> None:
        self.name = name
        self.link = link
        self.max_queued_bytes = max_queued_bytes
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.queued_bytes = 0
        self.link_free_at = 0.0  # monotonic time at which the emulated wire is idle again
        self.cond = threading.Condition()

    def schedule(self, data: bytes, arrival: float) -> float:
        """The delivery time of ``data`` read at ``arrival``; advances the serialisation clock."""
        departure = max(arrival, self.link_free_at) + self.link.serialisation_time(len(data))
        self.link_free_at = departure
        return departure + self.link.delay


class _Connection:
    """One proxied TCP connection: client socket, upstream socket, two directions, four threads."""

    def __init__(self, proxy: DelayingProxy, client: socket.socket, peer: Address) -> None:
        self.proxy = proxy
        self.client = client
        self.peer = peer
        self.upstream: socket.socket | None = None
        self.closed = threading.Event()
        self.up = _Direction("up", proxy.link, proxy.max_queued_bytes)      # client -> target
        self.down = _Direction("down", proxy.link, proxy.max_queued_bytes)  # target -> client
        if proxy.handshake:
            # The kernel completed the client's handshake on loopback, at no cost; on the emulated link
            # SYN / SYN-ACK take a round trip before the client's first byte can leave, and the server's
            # accept() returns one more one-way delay later.  Holding each direction's wire busy until
            # then charges every new connection the round trip it costs for real.
            accepted_at = time.monotonic()
            self.up.link_free_at = accepted_at + 2 * proxy.link.delay
            self.down.link_free_at = accepted_at + 3 * proxy.link.delay
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._running = 0

    def start(self) -> None:
        """Connect upstream and start the four pumping threads (runs on its own thread: connect may block)."""
        try:
            upstream = socket.create_connection(self.proxy.target, timeout=self.proxy.connect_timeout)
        except OSError:
            # The target refused: refuse the client too, as a router in front of a closed port would.
            _reset(self.client)
            self.proxy._forget(self)
            return
        upstream.settimeout(None)
        for sock in (self.client, upstream):
            # Nagle would hold back small writes by up to one RTT of the *loopback* hop and so distort the
            # emulated latency; the emulated link decides when bytes move.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        plan: tuple[tuple[_Pump, socket.socket, _Direction], ...] = (
            (self._read, self.client, self.up), (self._write, upstream, self.up),
            (self._read, upstream, self.down), (self._write, self.client, self.down))
        with self._lock:
            self.upstream = upstream
            if self.closed.is_set():  # stop() raced with the connect
                self._close_sockets()
                self.proxy._forget(self)
                return
            self._running = len(plan)
            for target, sock, direction in plan:
                role = "reader" if target == self._read else "writer"
                thread = threading.Thread(target=self._run, args=(target, sock, direction), daemon=True,
                                          name=f"{THREAD_PREFIX}-{direction.name}-{role}-{self.peer[1]}")
                self.threads.append(thread)
            for thread in self.threads:
                thread.start()

    def _run(self, target: _Pump, sock: socket.socket, direction: _Direction) -> None:
        try:
            target(sock, direction)
        except OSError:
            self.abort()
        finally:
            with self._lock:
                self._running -= 1
                last = self._running == 0
            if last:
                # The last thread out closes the sockets: closing an fd another thread still blocks on
                # would not wake it (Linux), and could hand the number to an unrelated new socket.
                self._close_sockets()
                self.proxy._forget(self)

    def _read(self, sock: socket.socket, direction: _Direction) -> None:
        while not self.closed.is_set():
            try:
                data = sock.recv(CHUNK_SIZE)
            except OSError:
                self.abort()  # a reset: the other side must not wait for bytes that will never come
                return
            with direction.cond:
                # Bounded memory: wait while the direction holds its quota (one chunk always fits).
                while (direction.queued_bytes and direction.queued_bytes + len(data) > direction.max_queued_bytes
                       and not self.closed.is_set()):
                    direction.cond.wait(0.5)
                if self.closed.is_set():
                    return
                direction.queue.append((direction.schedule(data, time.monotonic()), data))
                direction.queued_bytes += len(data)
                direction.cond.notify_all()
            if not data:
                return  # EOF queued behind the data: the writer forwards the half-close

    def _write(self, sock: socket.socket, direction: _Direction) -> None:
        while True:
            with direction.cond:
                while not direction.queue and not self.closed.is_set():
                    direction.cond.wait(0.5)
                if self.closed.is_set():
                    return
                deliver_at, data = direction.queue[0]
            # Sleep until the chunk's delivery time; closed.wait returns early when the connection dies.
            while (remaining := deliver_at - time.monotonic()) > 0:
                if self.closed.wait(remaining):
                    return
            if data:
                sock.sendall(data)
            with direction.cond:
                direction.queue.popleft()
                direction.queued_bytes -= len(data)
                direction.cond.notify_all()
            if not data:
                sock.shutdown(socket.SHUT_WR)  # the half-close, delayed like the data before it
                return
            self.proxy._count(direction.name, len(data))

    def abort(self) -> None:
        """Tear the connection down now (stop(), a reset, a failed write): wake every thread."""
        with self._lock:  # against start(): either it sees ``closed`` or we see its upstream socket
            if self.closed.is_set():
                return
            self.closed.set()
            sockets = (self.client, self.upstream)
        for sock in sockets:
            if sock is not None:
                try:
                    # shutdown, not close: it wakes threads blocked in recv()/sendall() on this socket.
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for direction in (self.up, self.down):
            with direction.cond:
                direction.cond.notify_all()

    def _close_sockets(self) -> None:
        for sock in (self.client, self.upstream):
            if sock is not None:
                sock.close()


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with an RST (SO_LINGER 0) rather than an orderly FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


# ----------------------------------------------------------------------------- the proxy

class DelayingProxy:
    """Listens on ``listen`` and forwards each accepted TCP connection to ``target`` through ``link``.

    Use as a context manager, or :meth:`start` / :meth:`stop`.  ``address`` is the listening
    ``(host, port)`` (an ephemeral port when ``listen``'s port is 0); ``bytes_up`` counts bytes forwarded
    client -> target, ``bytes_down`` target -> client, over all connections.

    ``max_queued_bytes`` bounds each direction's queue.  With ``handshake`` (the default) a new
    connection pays the TCP handshake's round trip: the client's first bytes reach the target no earlier
    than ``3 * delay`` after the connect, the target's first bytes reach the client no earlier than
    ``4 * delay`` after it, as on a real link; without it the handshake is free (it happens on loopback).
    """

    def __init__(self, target: Address, link: WanLink, *, listen: Address = ("127.0.0.1", 0),
                 max_queued_bytes: int = MAX_QUEUED_BYTES, connect_timeout: float = 10.0,
                 handshake: bool = True) -> None:
        if max_queued_bytes < CHUNK_SIZE:
            raise ValueError(f"max_queued_bytes must be at least one chunk ({CHUNK_SIZE}), not {max_queued_bytes}")
        self.target = target
        self.link = link
        self.listen = listen
        self.max_queued_bytes = max_queued_bytes
        self.connect_timeout = connect_timeout
        self.handshake = handshake
        self.bytes_up = 0
        self.bytes_down = 0
        self.connections_accepted = 0
        self._lock = threading.Lock()
        self._connections: set[_Connection] = set()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()

    @property
    def address(self) -> Address:
        """The listening ``(host, port)``; only after :meth:`start`."""
        if self._listener is None:
            raise RuntimeError("the proxy is not started")
        host, port = self._listener.getsockname()[:2]
        return host, port

    def start(self) -> DelayingProxy:
        """Bind, listen and start accepting (in a background thread); returns ``self``."""
        if self._listener is not None:
            raise RuntimeError("the proxy is already started")
        family = socket.AF_INET6 if ":" in self.listen[0] else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(self.listen)
            listener.listen(128)
        except OSError:
            listener.close()
            raise
        # A timeout, so the accept loop also notices stop() where shutdown() does not wake accept().
        listener.settimeout(0.25)
        self._listener = listener
        self._stopping.clear()
        thread = threading.Thread(target=self._accept_loop, name=f"{THREAD_PREFIX}-accept-{self.address[1]}",
                                  daemon=True)
        self._threads.append(thread)
        thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop accepting, abort every open connection (their peers see EOF or a reset), close all
        sockets and wait up to ``timeout`` seconds for the proxy's threads to end."""
        self._stopping.set()
        listener = self._listener
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.abort()
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in [*threads, *(t for c in connections for t in c.threads)]:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        if listener is not None:
            listener.close()
        self._listener = None
        self._threads.clear()

    def __enter__(self) -> DelayingProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._connections)

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set():
            try:
                client, peer = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # the listener was shut down by stop()
            client.settimeout(None)
            connection = _Connection(self, client, peer[:2])
            with self._lock:
                if self._stopping.is_set():
                    client.close()
                    return
                self._connections.add(connection)
                self.connections_accepted += 1
                # Connecting upstream happens off the accept thread: a slow target must not stall new clients.
                opener = threading.Thread(target=connection.start, daemon=True,
                                          name=f"{THREAD_PREFIX}-connect-{peer[1]}")
                self._threads = [t for t in self._threads if t.is_alive()] + [opener]
            opener.start()

    def _forget(self, connection: _Connection) -> None:
        with self._lock:
            self._connections.discard(connection)

    def _count(self, direction: str, size: int) -> None:
        with self._lock:
            if direction == "up":
                self.bytes_up += size
            else:
                self.bytes_down += size


# ----------------------------------------------------------------------------- CLI

def _argument(parse: Callable[[str], _T]) -> Callable[[str], _T]:
    """``parse`` for argparse: its ValueError message is shown (argparse hides a plain ValueError's)."""
    def convert(text: str) -> _T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return convert


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m xds_core.wan_emulator --listen HOST:PORT --to HOST:PORT --rate 100mbit --delay 20ms``."""
    parser = argparse.ArgumentParser(
        prog="python -m xds_core.wan_emulator",
        description="TCP proxy emulating a WAN link (bandwidth + one-way delay in each direction), "
                    "for machines without netem.")
    parser.add_argument("--listen", type=_argument(parse_address), default=("127.0.0.1", 0),
                        help="HOST:PORT to listen on (default 127.0.0.1 and an ephemeral port)")
    parser.add_argument("--to", dest="target", type=_argument(parse_address), required=True,
                        help="HOST:PORT to forward to")
    parser.add_argument("--rate", type=_argument(parse_rate), default=0.0,
                        help="bandwidth per direction: e.g. 500kbit, 100mbit, 1gbit; 0 = unlimited (default)")
    parser.add_argument("--delay", type=_argument(parse_delay), default=0.0,
                        help="one-way delay added in each direction: e.g. 20ms, 0.1s (default 0)")
    parser.add_argument("--no-handshake-delay", dest="handshake", action="store_false",
                        help="do not charge new connections the TCP handshake's round trip")
    args = parser.parse_args(argv)
    proxy = DelayingProxy(args.target, WanLink(args.rate, args.delay), listen=args.listen,
                          handshake=args.handshake)
    try:
        proxy.start()
    except OSError as exc:
        print(f"wan_emulator: cannot listen on {args.listen[0]}:{args.listen[1]}: {exc}", file=sys.stderr)
        return 1
    host, port = proxy.address
    print(f"wan_emulator: forwarding {host}:{port} -> {args.target[0]}:{args.target[1]} over "
          f"{proxy.link.describe()} (round trip +{format_delay(2 * proxy.link.delay)}); Ctrl-C to stop", flush=True)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stop.wait(0.5):
        pass
    proxy.stop()
    print(f"wan_emulator: stopped after {proxy.connections_accepted} connection(s), "
          f"{proxy.bytes_up} bytes up, {proxy.bytes_down} bytes down", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
