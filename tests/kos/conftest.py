"""Fixtures: the NIST IDS-DEPT002-a study (36 MR images, 2 series) and its reference manifest."""

from __future__ import annotations

import pydicom
import pytest

from imaging_source.study import StudyRef
from tests.conftest import CORPUS_DIR

IDS_DIR = (CORPUS_DIR / "nist" / "_imagecache" / "std"
           / "IDS-DEPT002-a")
NIST_LOCATION_UID = "1.3.6.1.4.1.21367.13.80.110"


@pytest.fixture(scope="session")
def ids_study() -> StudyRef:
    files = sorted((IDS_DIR / "images").glob("*.dcm"))
    assert len(files) == 36, f"IDS-DEPT002-a images missing under {IDS_DIR}"
    return StudyRef.from_datasets(pydicom.dcmread(f, stop_before_pixels=True) for f in files)


@pytest.fixture(scope="session")
def reference_kos() -> pydicom.Dataset:
    return pydicom.dcmread(IDS_DIR / "kos" / "kos.dcm")
