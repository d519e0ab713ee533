"""This node's TLS settings, read once from Django settings (the edge) for listeners and clients.

Outbound HTTP to other nodes (ITI-19: "the client presents its certificate"): :func:`new_http_session` is
the one place a ``requests.Session`` for another node is made -- under ``XDS_TLS`` it mounts
``xds_core.tls.TlsAdapter`` on ``https://`` (our node certificate presented, the server verified against
``XDS_TLS_CA`` / ``XDS_TLS_PINNED``, never certifi's world-wide CA set).  :func:`tls_session` is installed as
the session factory of :mod:`xds_core.soap.client` (``AtnaConfig.ready``): every SoapClient of the actors
(ITI-18/41/42/43, RAD-68/69) given no session uses one such session per thread, and ``new_session()`` there
(the consumer's RAD-69 retrievals, the portal's peer checks) makes one -- so no caller can forget the
certificate, and ``xds_core`` never imports this module.  The PACS clients (DICOMweb to the local Orthanc)
keep their own sessions.
"""

from __future__ import annotations

import functools
import logging
import ssl
import threading
import time

import requests
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from xds_core.tls import TlsAdapter, TlsConfigurationError, TlsSettings, client_context, server_context

logger = logging.getLogger(__name__)

#: Security Alerts for refused peers (ITI TF-2a 3.20.4.1.1.1 Node Authentication failure): at most one per peer
#: address per interval, ALERT_BURST in all per interval -- a scan must not flood the audit trail.
ALERT_INTERVAL = 10.0
ALERT_BURST = 20


@functools.cache
def node_tls() -> TlsSettings:
    """XDS_TLS* as a :class:`TlsSettings`; fails loudly (ImproperlyConfigured) listing every problem."""
    enabled = settings.XDS_TLS != "off"
    found = TlsSettings(enabled=enabled, cert=settings.XDS_TLS_CERT, key=settings.XDS_TLS_KEY,
                        ca=tuple(settings.XDS_TLS_CA), pinned=tuple(settings.XDS_TLS_PINNED),
                        verify_hostname=settings.XDS_TLS_VERIFY_HOSTNAME)
    problems = found.problems()
    if problems:
        raise ImproperlyConfigured(f"XDS_TLS={settings.XDS_TLS}: " + "; ".join(problems))
    if not enabled:
        logger.warning("XDS_TLS=off: listeners and clients use plain TCP; ITI-19 requires TLS outside an "
                       "otherwise secured network (see SECURITY.md)")
    return found


@functools.cache
def node_server_context() -> ssl.SSLContext | None:
    """The listeners' TLS context, or None when TLS is off."""
    tls = node_tls()
    if not tls.enabled:
        return None
    try:
        return server_context(tls)
    except TlsConfigurationError as exc:
        raise ImproperlyConfigured(f"XDS_TLS: {exc}") from None


@functools.cache
def node_client_context() -> ssl.SSLContext | None:
    """The outbound connections' TLS context (our certificate presented), or None when TLS is off."""
    tls = node_tls()
    if not tls.enabled:
        return None
    try:
        return client_context(tls)
    except TlsConfigurationError as exc:
        raise ImproperlyConfigured(f"XDS_TLS: {exc}") from None


def new_http_session() -> requests.Session:
    """A new session for calls to other nodes: under TLS, ``https://`` presents our certificate (module doc).
    The caller owns it (closes it)."""
    session = requests.Session()
    context = node_client_context()
    if context is not None:
        session.mount("https://", TlsAdapter(context))
    return session


def tls_session() -> requests.Session | None:
    """SoapClient's session factory (``xds_core.soap.client.set_session_factory``): a new TLS session under
    XDS_TLS; None when TLS is off (plain ``requests``, as before issue 13)."""
    return new_http_session() if node_tls().enabled else None


class AlertLimiter:
    """Which failed handshakes become a Security Alert: one per peer address per ``interval``, ``burst`` in
    all per interval (a scan from many addresses).  The rest are counted and the count is logged with the next
    alert.  Thread-safe (the web worker's event loop, request threads, listeners)."""

    def __init__(self, interval: float = ALERT_INTERVAL, burst: int = ALERT_BURST) -> None:
        self.interval = interval
        self.burst = burst
        self._last: dict[str, float] = {}
        self._period_start = 0.0
        self._period_count = 0
        self.suppressed = 0
        self._lock = threading.Lock()

    def allow(self, address: str, now: float | None = None) -> bool:
        """Whether a failure from ``address`` is alerted now (else counted in :attr:`suppressed`)."""
        with self._lock:
            return self._allow(address, time.monotonic() if now is None else now)

    def take_suppressed(self) -> int:
        """How many were held back since the last call."""
        with self._lock:
            held, self.suppressed = self.suppressed, 0
            return held

    def _allow(self, address: str, now: float) -> bool:
        if now - self._period_start >= self.interval:
            self._period_start, self._period_count = now, 0
            if len(self._last) > 4096:  # forget addresses whose interval is over
                self._last = {a: t for a, t in self._last.items() if now - t < self.interval}
        last = self._last.get(address)
        if (last is not None and now - last < self.interval) or self._period_count >= self.burst:
            self.suppressed += 1
            return False
        self._last[address] = now
        self._period_count += 1
        return True
