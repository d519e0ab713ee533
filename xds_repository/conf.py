"""The one place the repository reads Django settings (view and command layer).

Domain modules receive a :class:`~xds_repository.provide_and_register.RepositoryConfig`
(and a :class:`~xds_repository.reconcile.ReconcileConfig`) built here; they never import ``django.conf.settings``.
"""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.files.storage import storages

from xds_core.http.endpoint import Limits
from xds_repository import storage as store
from xds_repository.provide_and_register import RepositoryConfig
from xds_repository.reconcile import ReconcileConfig
from xds_repository.retrieve_document_set import RetrieveLimits

#: The STORAGES alias holding repository documents (config/settings.py).
STORAGE_ALIAS = "xds_documents"


def repository_config() -> RepositoryConfig:
    return RepositoryConfig(
        repository_unique_id=settings.XDS_REPOSITORY_UNIQUE_ID,
        registry_url=settings.XDS_REGISTRY_URL,
        max_document_size=settings.XDS_MAX_DOCUMENT_SIZE,
        storage=storages[STORAGE_ALIAS],
        storage_alias=STORAGE_ALIAS,
        registry_timeout=float(settings.XDS_REGISTRY_TIMEOUT),
        min_free_space=settings.XDS_MIN_FREE_SPACE,
    )


def document_store_root() -> Path | None:
    """The directory holding the documents, when the backend keeps local files (for its free space)."""
    return store.filesystem_root(storages[STORAGE_ALIAS])


def spool_dirs() -> list[str]:
    """Where the SOAP endpoint's MTOM reader spills large parts (its spool directory, else the system's
    temp directory, as :func:`tempfile.mkstemp` chooses): the places the sweep looks."""
    return [Limits.from_settings().spool_dir or tempfile.gettempdir()]


def reconcile_config(*, grace: float | None = None) -> ReconcileConfig:
    """The settings' reconcile configuration; ``grace`` (seconds) overrides XDS_REPOSITORY_RECONCILE_GRACE."""
    seconds = settings.XDS_REPOSITORY_RECONCILE_GRACE if grace is None else grace
    return ReconcileConfig(repository=repository_config(), grace=timedelta(seconds=seconds),
                           interval=float(settings.XDS_REPOSITORY_RECONCILE_INTERVAL),
                           spool_dirs=tuple(spool_dirs()))


def retrieve_limits() -> RetrieveLimits:
    """What one ITI-43 answers at most (XDS_ITI43_MAX_DOCUMENTS / XDS_ITI43_MAX_BYTES)."""
    return RetrieveLimits(max_documents=settings.XDS_ITI43_MAX_DOCUMENTS, max_bytes=settings.XDS_ITI43_MAX_BYTES)
