"""The one place the repository reads Django settings (view and command layer).

Domain modules receive a :class:`~xds_repository.provide_and_register.RepositoryConfig`
built here; they never import ``django.conf.settings``.
"""

from __future__ import annotations

from django.conf import settings
from django.core.files.storage import storages

from xds_repository.provide_and_register import RepositoryConfig

#: The STORAGES alias holding repository documents (config/settings.py).
STORAGE_ALIAS = "xds_documents"


def repository_config() -> RepositoryConfig:
    return RepositoryConfig(
        repository_unique_id=settings.XDS_REPOSITORY_UNIQUE_ID,
        registry_url=settings.XDS_REGISTRY_URL,
        max_document_size=settings.XDS_MAX_DOCUMENT_SIZE,
        storage=storages[STORAGE_ALIAS],
        storage_alias=STORAGE_ALIAS,
    )
