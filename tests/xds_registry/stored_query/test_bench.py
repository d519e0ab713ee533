"""The registry benchmark command (xds_bench_registry) runs end to end against a live server.

Kept beside the stored-query tests because the stored-query engineer owns the benchmark.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection

from xds_core.bench import server_pids
from xds_registry.management.commands.xds_bench_registry import peak_rss, percentile


def test_percentile_picks_ranked_values() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) in (50.0, 51.0)
    assert percentile(values, 0.99) == 99.0
    assert percentile([3.0], 0.99) == 3.0


def test_peak_rss_of_this_process() -> None:
    rss = peak_rss([os.getpid()])
    assert rss[os.getpid()] > 1000  # kB


def test_server_pids_finds_the_process_listening_on_a_port() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert os.getpid() in server_pids(listener.getsockname()[1])


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_benchmark_runs_against_a_live_server(live_server, tmp_path: Path) -> None:
    output = tmp_path / "registry.json"
    call_command("xds_bench_registry", url=live_server.url, entries=40, load_workers=1, clients=1, submissions=5,
                 queries=5, raw_entries=10, output=str(output), stdout=open(os.devnull, "w"))
    result = json.loads(output.read_text())
    assert result["load"]["entries"] == 40
    assert result["registry_entries"] == 40  # counted before the ITI-42 step
    assert result["iti42"]["submissions_per_second"] > 0
    assert result["find_documents"]["requests"] == 5 and result["find_documents"]["empty_answers"] < 5
    assert result["get_submission_set_and_contents"]["empty_answers"] == 0
    assert result["server_peak_rss_mb_max"] > 0
    if connection.vendor == "postgresql":
        assert result["raw_postgresql"]["copy_entries"] == 10
        assert result["raw_postgresql"]["transaction_registrations_per_second"] > 0
    else:
        assert result["raw_postgresql"] is None
