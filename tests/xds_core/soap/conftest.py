"""Every SOAP-layer test must leave no MTOM spill file behind."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def no_leaked_spill_files(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    directory = tmp_path_factory.mktemp("default-spool")
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    yield
    leaked = [p.name for p in Path(directory).iterdir() if p.name.startswith("xds-part-")]
    assert leaked == [], f"spill files left behind: {leaked}"
