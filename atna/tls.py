"""This node's TLS settings, read once from Django settings (the edge) for listeners and clients."""

from __future__ import annotations

import functools
import logging
import ssl

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from xds_core.tls import TlsConfigurationError, TlsSettings, client_context, server_context

logger = logging.getLogger(__name__)


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
