"""manage.py xds_bench_kos writes its figure for the imaging benchmark."""

from __future__ import annotations

import json
from io import StringIO

from django.core.management import call_command


def test_benchmark_writes_a_valid_figure(tmp_path) -> None:
    output = tmp_path / "kos.json"
    out = StringIO()
    call_command("xds_bench_kos", "--instances", "300", "--repeat", "2", "--output", str(output), stdout=out)
    result = json.loads(output.read_text())
    assert result["instances"] == 300 and result["repeat"] == 2
    assert 0 < result["seconds_best"] <= result["seconds_median"]
    assert result["meets_target"] == (result["seconds_best"] <= 1.0)
    assert "KOS for 300 instances" in out.getvalue()
