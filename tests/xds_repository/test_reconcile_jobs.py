"""Reconcile beyond start-up: who is settled when, the periodic job in the database job queue, and the
command's counts."""

from __future__ import annotations

import hashlib
import io
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone

from jobs.models import Job, JobState
from jobs.worker import WorkerConfig, run_one
from tests.xds_repository.conftest import REPOSITORY_ID, StandInRegistry, new_oid
from xds_repository import records
from xds_repository import storage as store
from xds_repository.conf import reconcile_config, repository_config
from xds_repository.models import StoredDocument
from xds_repository.reconcile import reconcile
from xds_repository.reconcile_jobs import RECONCILE, ensure_scheduled, next_run, schedule_next

pytestmark = pytest.mark.django_db


def dead_identity() -> str:
    """A ``records.process_identity()`` of a process of this host that has run and exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return f"{socket.gethostname()}/{boot_id}/{child.pid}/1"


def pending(content: bytes, *, owner: str | None = None) -> StoredDocument:
    sha1 = hashlib.sha1(content).hexdigest()
    [row] = records.record_pending([records.NewDocument(new_oid(), "text/plain", sha1, len(content))],
                                   storage_alias="xds_documents")
    store.put(repository_config().storage, sha1=sha1, size=len(content), path=None,
              open_stream=lambda: io.BytesIO(content))
    if owner is not None:
        StoredDocument.objects.filter(pk=row.pk).update(owner=owner)
    return row


def test_a_dead_writers_rows_are_settled_at_once_and_a_live_ones_after_the_grace_period(
        doc_dir: Path, stand_in_registry: StandInRegistry) -> None:
    dead = pending(b"writer killed", owner=dead_identity())
    live = pending(b"writer still registering")  # owned by this (live) process
    report = reconcile(repository_unique_id=REPOSITORY_ID, registry_url=stand_in_registry.url,
                       storage=repository_config().storage, grace=timedelta(hours=1), registry_timeout=10)
    assert (report.examined, report.removed) == (1, [dead.unique_id])
    assert list(StoredDocument.objects.values_list("unique_id", "state")) == [(live.unique_id, "pending")]
    StoredDocument.objects.filter(pk=live.pk).update(created=timezone.now() - timedelta(hours=2))
    report = reconcile(repository_unique_id=REPOSITORY_ID, registry_url=stand_in_registry.url,
                       storage=repository_config().storage, grace=timedelta(hours=1), registry_timeout=10)
    assert report.removed == [live.unique_id] and not StoredDocument.objects.exists()


def test_next_run_is_the_start_of_the_next_period_on_the_clock() -> None:
    now = datetime(2026, 12, 7, 10, 2, 30, tzinfo=UTC)
    assert next_run(now, 300) == datetime(2026, 12, 7, 10, 5, tzinfo=UTC)
    assert next_run(datetime(2026, 12, 7, 10, 5, tzinfo=UTC), 300) == datetime(2026, 12, 7, 10, 10, tzinfo=UTC)
    with pytest.raises(ValueError):
        next_run(now, 0)


def test_scheduling_twice_or_ensuring_keeps_a_single_queued_run() -> None:
    now = datetime(2026, 12, 7, 10, 2, 30, tzinfo=UTC)
    first = schedule_next(300, now=now)
    assert (first.kind, first.state, first.run_after) == (RECONCILE, JobState.QUEUED, next_run(now, 300))
    assert schedule_next(300, now=now + timedelta(seconds=100)).pk == first.pk  # same period: same key
    assert ensure_scheduled(300).pk == first.pk
    assert Job.objects.filter(kind=RECONCILE).count() == 1


def test_the_periodic_job_reconciles_sweeps_and_queues_its_next_run(
        doc_dir: Path, stand_in_registry: StandInRegistry, settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The real chain, run by the job worker's own step: each run settles what is due, sweeps, and queues
    the run of the next period (a 1 s period here, waited for in real time)."""
    settings.XDS_REPOSITORY_RECONCILE_INTERVAL = 1
    spool = tmp_path / "spool"
    spool.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(spool)
    leftover = spool / f"xds-part-{dead_identity().split('/')[2]}-x.bin"
    leftover.write_bytes(b"spilled by a killed worker")
    row = pending(b"left by a killed worker", owner=dead_identity())
    first = ensure_scheduled(1)
    worker = WorkerConfig(worker_id="test-worker", kinds=(RECONCILE,))
    ran = []
    for _ in range(2):
        job = Job.objects.get(kind=RECONCILE, state=JobState.QUEUED)
        time.sleep(max(0.0, (job.run_after - timezone.now()).total_seconds()) + 0.05)
        done = run_one(worker)
        assert done is not None and done.pk == job.pk and done.state == JobState.SUCCEEDED
        ran.append(done)
    assert ran[0].pk == first.pk
    assert not StoredDocument.objects.filter(pk=row.pk).exists() and not leftover.exists()
    [following] = Job.objects.filter(kind=RECONCILE, state=JobState.QUEUED)
    assert ran[0].run_after < ran[1].run_after < following.run_after
    assert Job.objects.filter(kind=RECONCILE).count() == 3


def test_a_failing_run_still_queues_the_next(settings, doc_dir: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A run that fails (here: a document store it cannot scan) records its error and the chain goes on."""
    settings.XDS_REPOSITORY_RECONCILE_INTERVAL = 1
    doc_dir.parent.joinpath("not-a-directory").write_bytes(b"")
    settings.STORAGES = {**settings.STORAGES, "xds_documents": {
        "BACKEND": "xds_repository.storage.ContentAddressedStorage",
        "OPTIONS": {"location": str(doc_dir.parent / "not-a-directory")}}}
    job = ensure_scheduled(1)
    time.sleep(max(0.0, (job.run_after - timezone.now()).total_seconds()) + 0.05)
    done = run_one(WorkerConfig(worker_id="test-worker", kinds=(RECONCILE,)))
    assert done is not None and done.state == JobState.FAILED and "reconcile failed" in done.last_error
    assert Job.objects.filter(kind=RECONCILE, state=JobState.QUEUED).count() == 1


def test_the_command_prints_its_counts_and_queues_the_periodic_job(
        doc_dir: Path, stand_in_registry: StandInRegistry, settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spool = tmp_path / "spool"
    spool.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(spool)
    (spool / f"xds-part-{dead_identity().split('/')[2]}-y.bin").write_bytes(b"x")
    pending(b"dead writer's", owner=dead_identity())
    out = StringIO()
    call_command("xds_repository_reconcile", stdout=out, stderr=StringIO())
    assert out.getvalue().strip() == ("pending examined: 1; confirmed registered: 0; removed: 1; "
                                      "temporary files swept: 1")
    assert Job.objects.filter(kind=RECONCILE, state=JobState.QUEUED).count() == 1
    assert reconcile_config().spool_dirs == (str(spool),)


_HOLD_A_MARKER = """
import sys, time
from pathlib import Path
import django, os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()
from xds_repository.records import InFlight
marker = InFlight(Path(sys.argv[1]))
print(marker.owner, flush=True)
time.sleep(120)
"""


def test_with_our_own_registry_a_finished_requests_rows_are_settled_at_once_while_a_running_ones_wait(
        local: Path) -> None:
    """The in-process registry's answer cannot change once the ITI-41 is over, even if the request could not
    record its end (the database was away): its marker is no longer held.  A request still running holds
    its marker: its rows wait for the grace period, even though its process is alive either way."""
    markers = store.inflight_dir(repository_config().storage)
    assert markers is not None
    running = records.InFlight(markers)
    finished = records.InFlight(markers)
    in_flight = pending(b"ITI-42 still under way", owner=running.owner)
    over = pending(b"ITI-41 over, outcome not recorded", owner=finished.owner)
    finished.close()
    try:
        report = reconcile(repository_unique_id=REPOSITORY_ID, registry_url="", storage=repository_config().storage,
                           grace=timedelta(hours=1))
        assert (report.examined, report.removed, report.error) == (1, [over.unique_id], None)
        assert list(StoredDocument.objects.values_list("unique_id", "state")) == [(in_flight.unique_id, "pending")]
    finally:
        running.close()


def test_a_request_whose_process_is_killed_is_over(local: Path) -> None:
    markers = store.inflight_dir(repository_config().storage)
    assert markers is not None
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_A_MARKER, str(markers)], stdout=subprocess.PIPE,
                              text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        assert holder.stdout is not None
        owner = holder.stdout.readline().strip()
        assert owner.count("/") == 4 and not records.request_is_over(owner, markers)
    finally:
        holder.kill()
        holder.wait()
    assert records.request_is_over(owner, markers)
    assert not records.request_is_over(owner.rsplit("/", 1)[0], markers)  # no request named: unknown
    assert not records.request_is_over("elsewhere/" + owner.split("/", 1)[1], markers)  # another host's
