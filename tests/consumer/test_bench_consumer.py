"""The pure helpers of ``manage.py xds_bench_consumer`` (no demo, no PACS, no network)."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest
from django.core.management.base import CommandError

from consumer.management.commands.xds_bench_consumer import (
    Goal,
    RssSampler,
    breakdown_medians,
    disk_problem,
    format_table,
    instances_for,
    interleaved,
    published_line,
    ratio,
    read_env_file,
    vmrss_bytes,
)

STATUS = """Name:\tpython
VmPeak:\t  300000 kB
VmSize:\t  290000 kB
VmRSS:\t  123456 kB
RssAnon:\t   100000 kB
"""


# --- env files ------------------------------------------------------------------------------

def test_env_file_names_missing_keys_and_missing_files(tmp_path: Path) -> None:
    env = tmp_path / "hospital-a.env"
    env.write_text("DICOMWEB_URL=http://x/dicom-web\nPORT=\n")
    assert read_env_file(env, ["DICOMWEB_URL"])["DICOMWEB_URL"] == "http://x/dicom-web"
    with pytest.raises(CommandError, match="has no PORT, XDS_IMAGING_SOURCE_ID"):
        read_env_file(env, ["DICOMWEB_URL", "PORT", "XDS_IMAGING_SOURCE_ID"])
    with pytest.raises(CommandError, match="cannot read"):
        read_env_file(tmp_path / "absent.env")


# --- RSS ------------------------------------------------------------------------------------

def test_vmrss_is_read_in_bytes() -> None:
    assert vmrss_bytes(STATUS) == 123456 * 1024
    with pytest.raises(ValueError):
        vmrss_bytes("Name:\tpython\n")


def test_vmrss_of_this_process_is_plausible() -> None:
    rss = vmrss_bytes(Path("/proc/self/status").read_text())
    assert 10 * 2**20 < rss < 64 * 2**30


def test_rss_sampler_reports_peak_minus_start() -> None:
    values = iter([100, 150, 400, 120] + [110] * 10_000)
    lock = threading.Lock()
    seen = threading.Event()
    calls = {"n": 0}

    def read() -> int:
        with lock:
            calls["n"] += 1
            if calls["n"] >= 4:
                seen.set()
            return next(values)

    sampler = RssSampler(0.001, read)
    with sampler:
        assert seen.wait(5)
    assert sampler.before == 100
    assert sampler.peak == 400
    assert sampler.growth == 300
    assert sampler.samples >= 4


def test_rss_sampler_growth_is_never_negative() -> None:
    values = iter([500] + [100] * 10_000)
    sampler = RssSampler(0.001, lambda: next(values)).start()
    sampler.stop()
    assert sampler.growth == 0


def test_rss_sampler_samples_the_real_process_while_memory_grows() -> None:
    with RssSampler(0.01) as sampler:
        block = bytearray(64 * 2**20)  # touched: resident
        for i in range(0, len(block), 4096):
            block[i] = 1
        threading.Event().wait(0.1)
    del block
    assert sampler.growth >= 48 * 2**20


# --- goals and ratios ------------------------------------------------------------------------

def test_ratio_and_goals() -> None:
    assert ratio(0.7, 1.0) == pytest.approx(0.7)
    assert math.isnan(ratio(1.0, 0.0))
    assert Goal("files", 0.7, ">=", 0.7).met is True
    assert Goal("files", 0.69, ">=", 0.7).met is False
    assert Goal("wan", 0.6, "<=", 0.6).met is True
    assert Goal("wan", 0.61, "<=", 0.6).met is False
    assert Goal("rss", 99.9, "<", 100, "MB").met is True
    assert Goal("rss", 100.0, "<", 100, "MB").met is False
    assert Goal("pixels", True, "==", True).met is True
    assert Goal("pixels", False, "==", True).met is False
    assert Goal("none", None, ">=", 0.7).met is None
    assert Goal("nan", math.nan, ">=", 0.7).met is None
    assert Goal("rss", 12.5, "<", 100, "MB").as_dict() == {"name": "rss", "value": 12.5, "goal": "< 100 MB",
                                                           "met": True}
    assert Goal("pixels", True, "==", True).text() == "== true"
    with pytest.raises(ValueError):
        _ = Goal("x", 1.0, "!=", 1.0).met


def test_pairs_alternate_their_order() -> None:
    order: list[str] = []

    def first() -> float:
        order.append("A")
        return float(len(order))

    def second() -> float:
        order.append("B")
        return float(len(order))

    pairs: list[tuple[int, float, float]] = []
    a, b = interleaved(4, first, second, lambda i, x, y: pairs.append((i, x, y)))
    assert order == ["A", "B", "B", "A", "A", "B", "B", "A"]
    assert a == [1.0, 4.0, 5.0, 8.0]
    assert b == [2.0, 3.0, 6.0, 7.0]
    assert pairs == [(0, 1.0, 2.0), (1, 4.0, 3.0), (2, 5.0, 6.0), (3, 8.0, 7.0)]


def test_breakdown_medians() -> None:
    runs = [{"iti18": 0.01, "rad69": 1.0}, {"iti18": 0.03, "rad69": 3.0}, {"iti18": 0.02, "rad69": 2.0}]
    assert breakdown_medians(runs) == {"iti18": 0.02, "rad69": 2.0}
    assert breakdown_medians([]) == {}


# --- big study sizing -------------------------------------------------------------------------

def test_disk_check_wants_three_times_the_study() -> None:
    assert disk_problem(free=6 * 10**9, needed_size=2 * 10**9) is None
    problem = disk_problem(free=5 * 10**9, needed_size=2 * 10**9)
    assert problem is not None and "6.0 GB free" in problem and "only 5.0 GB" in problem and "--skip-big" in problem


def test_instances_for_a_size() -> None:
    assert instances_for(2e9, 525_000) == 3810
    assert instances_for(1, 525_000) == 1
    assert instances_for(1_050_000, 525_000) == 2


# --- output -------------------------------------------------------------------------------------

def test_published_line_accepts_what_is_in_the_registry_only() -> None:
    assert published_line("[1/1] 1.2.3: published (500 instances) published 1.2.4\n") == \
        "[1/1] 1.2.3: published (500 instances) published 1.2.4"
    assert published_line("[1/1] 1.2.3: unchanged (500 instances) \n").endswith("unchanged (500 instances)")
    assert published_line("[1/1] 1.2.3: queued (500 instances) patient not mapped\n") == ""
    assert published_line("") == ""


def test_table_columns_line_up() -> None:
    table = format_table([["measurement", "consumer", "ratio"], ["files", "1.000 s", "0.71"],
                          ["PACS import", "10.0 s", "0.2"]]).splitlines()
    assert table[0] == "measurement  consumer  ratio"
    assert table[1] == "-----------  --------  -----"
    assert table[2] == "files        1.000 s   0.71"
    assert table[3].startswith("PACS import  10.0 s")
