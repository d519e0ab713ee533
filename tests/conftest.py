"""Project-wide test configuration.

Tests use real parts: the database Django is configured with (SQLite in memory
by default, PostgreSQL when DATABASE_URL points at it), real sockets on
loopback, and the local Orthanc PACS for tests marked ``pacs``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parent.parent
# The public conformance corpus kept inside the project (origins in its NOTICE).
CORPUS_DIR = BASE_DIR / "conformance" / "corpus"


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """The conformance corpus (NIST testkit cases, manifest, codes.xml, the NIST imaging study)."""
    if not (CORPUS_DIR / "manifest.yaml").is_file():
        pytest.fail(f"{CORPUS_DIR} is incomplete: the conformance corpus is part of the project")
    return CORPUS_DIR


@pytest.fixture(autouse=True)
def _documents_in_tmp(settings, tmp_path_factory) -> None:
    """Keep repository documents written by any test out of the checkout's var/."""
    location = tmp_path_factory.mktemp("documents")
    settings.STORAGES = {**settings.STORAGES,
                         "xds_documents": {**settings.STORAGES["xds_documents"],
                                           "OPTIONS": {"location": str(location)}}}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The figures fault and flood tests measured (tests/faults/figures.py), shown even when they pass."""
    from tests.faults.figures import REPORTED

    if REPORTED:
        terminalreporter.section("measured figures")
        for line in REPORTED:
            terminalreporter.write_line(line)


# Session fixtures shared by several test packages are defined here, once: a fixture imported into two
# conftests or modules is two fixtures, and a session-scoped PACS would then start (and register our AE
# title with another C-MOVE port) twice in one session.
from tests.consumer.import_pacs import import_pacs, nist_files  # noqa: E402, F401
from tests.imaging_source.pacs_fixtures import pacs, spool_dir  # noqa: E402, F401
