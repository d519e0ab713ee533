"""Resolving an authenticated peer to its :class:`~xds_core.identity.Identity` through the identity table.

Every listener asks here after its handshake: a certificate (fingerprint first, then exact subject) or a DICOM
calling AE title at an address.  No row, or a disabled one: None -- the listener refuses the peer with its own
protocol's answer and records a Security Alert.  Lookups are cached per process for :data:`CACHE_SECONDS`, so
a keep-alive-less client costs no query per request; an edit of the table is seen within that time (and at
once in the process that saved it).
"""

from __future__ import annotations

import threading
import time

from django.db.models.signals import post_delete, post_save

from atna.models import NodeIdentity
from xds_core.identity import Identity, PeerCertificate

CACHE_SECONDS = 30.0

_cache: dict[tuple[str, ...], tuple[float, Identity | None]] = {}
_lock = threading.Lock()


def _cached(key: tuple[str, ...], lookup) -> Identity | None:  # type: ignore[no-untyped-def]
    now = time.monotonic()
    hit = _cache.get(key)
    if hit is not None and now - hit[0] < CACHE_SECONDS:
        return hit[1]
    found = lookup()
    with _lock:
        if len(_cache) > 4096:
            _cache.clear()
        _cache[key] = (now, found)
    return found


def _first(**match: str) -> Identity | None:
    row = NodeIdentity.objects.filter(enabled=True, **match).order_by("pk").first()
    return row.identity() if row is not None else None


def for_certificate(certificate: PeerCertificate) -> Identity | None:
    """The identity of a verified certificate: by SHA-256 fingerprint, else by exact subject."""
    return _cached(("cert", certificate.sha256, certificate.subject),
                   lambda: _first(cert_sha256=certificate.sha256) or _first(cert_subject=certificate.subject))


def for_dicom(ae_title: str, address: str) -> Identity | None:
    """The identity of a DICOM calling AE title calling from ``address`` (a row with that address, else any)."""
    title = ae_title.strip()
    return _cached(("ae", title, address),
                   lambda: _first(ae_title=title, address=address) or _first(ae_title=title, address=""))


def forget() -> None:
    """Drop the cache (the table changed)."""
    with _lock:
        _cache.clear()


def _changed(**_kwargs: object) -> None:
    forget()


post_save.connect(_changed, sender=NodeIdentity, dispatch_uid="atna.identities.saved")
post_delete.connect(_changed, sender=NodeIdentity, dispatch_uid="atna.identities.deleted")
