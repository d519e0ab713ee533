"""manage.py xds_bench_render renders the benchmark CT in three syntaxes and writes its figures."""

from __future__ import annotations

import json
from io import StringIO

from django.core.management import call_command

from imaging_source.management.commands.xds_bench_render import GOAL_MS, percentile


def test_benchmark_writes_figures_for_each_syntax(tmp_path) -> None:
    output = tmp_path / "render.json"
    out = StringIO()
    call_command("xds_bench_render", "--repeat", "3", "--output", str(output), stdout=out)
    result = json.loads(output.read_text())
    assert result["repeat"] == 3 and result["goal_ms"] == GOAL_MS
    assert list(result["syntaxes"]) == ["uncompressed", "jpeg-ls-lossless", "jpeg2000-lossless"]
    for figures in result["syntaxes"].values():
        assert 0 < figures["ms_min"] <= figures["ms_median"] <= figures["ms_p95"] <= figures["ms_max"]
        assert figures["meets_goal"] == (figures["ms_p95"] < GOAL_MS)
    text = out.getvalue()
    assert "uncompressed: 3/3 renders" in text and "jpeg2000-lossless" in text and "< 150 ms" in text


def test_json_option_prints_the_figures(tmp_path) -> None:
    out = StringIO()
    call_command("xds_bench_render", "--repeat", "1", "--json", "--output", str(tmp_path / "r.json"),
                 stdout=out, stderr=StringIO())
    assert json.loads(out.getvalue())["benchmark"] == "thumbnail_render"


def test_percentile_is_a_measured_value() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.95) == 95.0 and percentile(values, 0.5) == 50.0 and percentile([7.0], 0.95) == 7.0
