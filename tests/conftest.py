"""Project-wide test configuration.

Tests use real parts: the database Django is configured with (SQLite in memory
by default, PostgreSQL when DATABASE_URL points at it), real sockets on
loopback, and the local Orthanc PACS for tests marked ``pacs``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parent.parent
SHARED_DIR = BASE_DIR.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only shared material (conformance corpus, schemas) beside the checkout."""
    if not SHARED_DIR.is_dir():
        pytest.fail(f"{SHARED_DIR} is missing: the conformance corpus must be beside the checkout")
    return SHARED_DIR


@pytest.fixture(autouse=True)
def _documents_in_tmp(settings, tmp_path_factory) -> None:
    """Keep repository documents written by any test out of the checkout's var/."""
    location = tmp_path_factory.mktemp("documents")
    settings.STORAGES = {**settings.STORAGES,
                         "xds_documents": {**settings.STORAGES["xds_documents"],
                                           "OPTIONS": {"location": str(location)}}}
