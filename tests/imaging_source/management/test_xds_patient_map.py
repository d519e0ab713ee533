"""manage.py xds_patient_map: set, list, remove, import (all or nothing)."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from imaging_source.models import PatientMapping

pytestmark = pytest.mark.django_db
CX = "AD-1^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO"


def _run(*args: str) -> str:
    out = StringIO()
    call_command("xds_patient_map", *args, stdout=out)
    return out.getvalue()


def test_set_list_remove() -> None:
    assert "added" in _run("set", "LOCAL-1", CX, "--issuer", "HOSP", "--note", "ward 3")
    assert "updated" in _run("set", "LOCAL-1", CX, "--issuer", "HOSP")
    assert _run("list").strip() == f"LOCAL-1\tHOSP\t{CX}\tward 3"  # an update keeps the note
    assert "removed" in _run("remove", "LOCAL-1", "--issuer", "HOSP")
    assert PatientMapping.objects.count() == 0
    with pytest.raises(CommandError, match="no mapping"):
        _run("remove", "LOCAL-1")


def test_malformed_affinity_id_is_refused() -> None:
    with pytest.raises(CommandError, match="CX.4"):
        _run("set", "LOCAL-1", "AD-1")


def test_import_is_all_or_nothing(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text(f"# local,issuer,affinity\nL1,,{CX}\nL2,HOSP,{CX},note\n", encoding="utf-8")
    assert "2 added, 0 updated" in _run("import", str(good))
    bad = tmp_path / "bad.csv"
    bad.write_text(f"L3,,{CX}\nL4,,not-a-cx\nL5\n", encoding="utf-8")
    with pytest.raises(CommandError) as exc:
        _run("import", str(bad))
    assert "row 2" in str(exc.value) and "row 3" in str(exc.value)
    assert set(PatientMapping.objects.values_list("local_patient_id", flat=True)) == {"L1", "L2"}
