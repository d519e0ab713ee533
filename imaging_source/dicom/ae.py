"""Application Entity factory: every DICOM socket we open or accept has TCP_NODELAY.

pynetdicom 3.0.4 never sets ``TCP_NODELAY``.  A DIMSE message that spans several
P-DATA PDUs (any C-STORE larger than the peer's max PDU, 16 kB for Orthanc) then waits
for the peer's delayed ACK (Nagle's algorithm): ~40 ms per PDU.  Measured on this
machine (loopback, Orthanc, 2 cores): 100 C-STOREs
5.5 s without, 1.4 s with the option.  Rather than monkey-patching pynetdicom globally,
we use its own extension points:

- requestor side: :meth:`AE._create_socket` builds the ``AssociationSocket``; our
  :class:`NoDelayAE` returns a :class:`NoDelayAssociationSocket` whose ``_create_socket``
  sets the option on the fresh socket before ``connect``;
- acceptor side: :meth:`AE.make_server` takes a ``server_class``; our
  :class:`NoDelayAssociationServer` sets the option on each accepted socket
  (``get_request``).

This package (``imaging_source.dicom``) is the only one that imports pynetdicom.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from pynetdicom import AE
from pynetdicom.transport import AddressInformation, AssociationSocket, ThreadedAssociationServer

from imaging_source.dicom.config import DicomConfig, Peer

logger = logging.getLogger(__name__)

# pynetdicom logs every DIMSE message with a full dataset dump at INFO: for a 500-instance
# retrieve that is megabytes of log and a large share of the CPU time.  Quiet it unless
# the deployment configured the "pynetdicom" logger explicitly.
if logging.getLogger("pynetdicom").level == logging.NOTSET:
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)

#: Seconds: TCP connect, ACSE (association negotiation) and DIMSE (per message) timeouts.
DEFAULT_TIMEOUTS = {"connection": 10.0, "acse": 30.0, "dimse": 120.0, "network": 120.0}


def set_nodelay(sock: socket.socket) -> None:
    """Disable Nagle's algorithm on a TCP socket (no-op for non-TCP sockets)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:  # e.g. an AF_UNIX socket in a test double: nothing to tune
        pass


class NoDelayAssociationSocket(AssociationSocket):
    """An ``AssociationSocket`` whose outgoing TCP socket has TCP_NODELAY set."""

    def _create_socket(self, address: AddressInformation) -> socket.socket:
        sock = super()._create_socket(address)
        set_nodelay(sock)
        return sock


class NoDelayAssociationServer(ThreadedAssociationServer):
    """A threaded association server that sets TCP_NODELAY on every accepted connection."""

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        client_socket, address = super().get_request()
        set_nodelay(client_socket)
        return client_socket, address


class NoDelayAE(AE):
    """A pynetdicom ``AE`` whose associations (requested and accepted) use TCP_NODELAY."""

    def _create_socket(self, assoc: Any, address: AddressInformation, tls_args: Any) -> AssociationSocket:
        sock = NoDelayAssociationSocket(assoc, address=address)
        sock.tls_args = tls_args
        return sock

    def start_listener(self, address: tuple[str, int], *, evt_handlers: Sequence[Any] = (),
                       server_class: type[NoDelayAssociationServer] | None = None,
                       **server_kwargs: Any) -> NoDelayAssociationServer:
        """Start a non-blocking SCP on ``address`` (port 0 = ephemeral); returns the server.

        The same as ``start_server(block=False)`` but with :class:`NoDelayAssociationServer` (or a
        subclass, ``server_class``, built with ``server_kwargs``).
        ``server.server_address`` holds the bound (host, port); stop it with ``server.shutdown()``.
        """
        server = self.make_server(address, evt_handlers=list(evt_handlers),
                                  server_class=server_class or NoDelayAssociationServer, **server_kwargs)
        thread = threading.Thread(target=server.serve_forever, name=f"dicom-scp@{address[1]}", daemon=True)
        thread.start()
        self._servers.append(server)
        return server


def make_ae(ae_title: str, *, timeouts: dict[str, float] | None = None, maximum_pdu_size: int = 0) -> NoDelayAE:
    """A fresh AE with our AE title and sane timeouts.

    ``maximum_pdu_size``: the Maximum Length we advertise (PS3.8 D.1).  0 (no limit: fewer, larger
    PDUs) for the associations we request of a PACS we are configured to trust; the listener, which
    anyone may call, advertises a finite one and enforces it (acceptor.py, pdu_limits.py).
    """
    t = {**DEFAULT_TIMEOUTS, **(timeouts or {})}
    ae = NoDelayAE(ae_title=ae_title)
    ae.connection_timeout = t["connection"]
    ae.acse_timeout = t["acse"]
    ae.dimse_timeout = t["dimse"]
    ae.network_timeout = t["network"]
    ae.maximum_pdu_size = maximum_pdu_size
    return ae


class AssociationError(ConnectionError):
    """The peer refused, aborted or never answered the association request."""


def associate(ae: NoDelayAE, peer: Peer, **kwargs: Any) -> Any:
    """Open an association to ``peer`` or raise :class:`AssociationError`.

    Over TLS when the peer has a context (PS3.15 B.10: our certificate presented, the peer's verified; a
    failed handshake is a failed association, nothing is sent in clear).
    """
    if peer.tls_args is not None:
        kwargs.setdefault("tls_args", peer.tls_args)
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, **kwargs)
    if not assoc.is_established:
        state = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "failed"
        raise AssociationError(f"association {ae.ae_title} -> {peer} {state}")
    return assoc


def pacs_ae(config: DicomConfig) -> NoDelayAE:
    """An AE to talk to the configured PACS (callers add their requested contexts)."""
    return make_ae(config.ae_title, timeouts=config.timeouts)


class AssociationPool:
    """Idle associations kept for reuse, keyed by (our AE title, peer, purpose).

    Association set-up costs a TCP handshake plus A-ASSOCIATE negotiation (~2-5 ms on
    loopback, much more across a WAN); C-FINDs come in bursts (study -> series -> image
    levels, or a poll over many studies), so reusing an open association pays there.
    An association is lent to one caller at a time; one that went stale (peer released
    or aborted it: Orthanc closes idle ones after ~30 s) is dropped and a new one opened.
    """

    def __init__(self, *, max_idle_seconds: float = 15.0) -> None:
        self._idle: dict[tuple[str, Peer, str], list[tuple[float, Any]]] = {}
        self._lock = threading.Lock()
        self.max_idle_seconds = max_idle_seconds

    def acquire(self, key: tuple[str, Peer, str], factory: Any) -> Any:
        now = time.monotonic()
        with self._lock:
            stack = self._idle.get(key, [])
            while stack:
                since, assoc = stack.pop()
                if assoc.is_established and now - since < self.max_idle_seconds:
                    return assoc
                _quietly_release(assoc)
        return factory()

    def release(self, key: tuple[str, Peer, str], assoc: Any, *, reusable: bool = True) -> None:
        if not reusable or not assoc.is_established:
            _quietly_release(assoc)
            return
        with self._lock:
            self._idle.setdefault(key, []).append((time.monotonic(), assoc))

    def close(self) -> None:
        with self._lock:
            stacks, self._idle = list(self._idle.values()), {}
        for stack in stacks:
            for _, assoc in stack:
                _quietly_release(assoc)


def _quietly_release(assoc: Any) -> None:
    try:
        if assoc.is_established:
            assoc.release()
    except Exception:  # noqa: BLE001 - a dying association must not break the caller
        logger.debug("release of a stale association failed", exc_info=True)


#: Process-wide pool (C-FIND associations to the PACS).
POOL = AssociationPool()


def quiesce(assoc: Any, *, settle: float = 0.002, timeout: float = 2.0) -> None:
    """Park pynetdicom's association reactor before we send a DIMSE request on ``assoc``.

    pynetdicom 3.0.4 pauses its reactor thread for a send_*() by clearing a checkpoint and
    then trusting a ``_is_paused`` flag that the reactor sets *before* it blocks; right after
    the previous operation the flag can still be True while the reactor is running again,
    and the reactor then takes our response off the DIMSE queue ("Received unexpected C-FIND
    service message", pydicom/pynetdicom issue #875): a C-FIND loses matches, a C-GET/C-MOVE
    loses its final response.  Seen here with back-to-back C-FINDs under load.  We clear the
    checkpoint ourselves and give the reactor time to finish its iteration and block, so the
    flag is true when pynetdicom looks at it.
    """
    checkpoint = getattr(assoc, "_reactor_checkpoint", None)
    if checkpoint is None:  # another pynetdicom version: nothing we know how to do
        return
    checkpoint.clear()
    deadline = time.monotonic() + timeout
    time.sleep(settle)
    while not getattr(assoc, "_is_paused", True) and time.monotonic() < deadline:
        time.sleep(0.0005)
