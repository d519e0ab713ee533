"""The HMAC chain (atna/chain.py): seqs given by one chainer, no gaps, the key outside the database, anchors."""

from __future__ import annotations

import hashlib
import hmac
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.db import connection

from atna import chain, trail, trail_jobs
from atna.models import AuditAnchor, AuditChainState, AuditRecord
from jobs.models import Job
from jobs.worker import run_pending
from tests.atna.trail_helpers import SOURCE, Files, files, submission_event, write  # noqa: F401

pytestmark = pytest.mark.django_db


def test_rows_are_chained_in_id_order_with_consecutive_seqs_and_recomputable_hmacs(files: Files) -> None:  # noqa: F811
    key = files.key_bytes()
    rows = write(5)

    result = chain.chain_pending(key)

    assert result == chain.ChainResult(5, 5)
    chained = list(AuditRecord.objects.order_by("chain_seq"))
    assert [r.pk for r in chained] == [r.pk for r in rows] and [r.chain_seq for r in chained] == [1, 2, 3, 4, 5]
    previous = chain.GENESIS
    for row in chained:
        expected = hmac.new(key, previous + chain.canonical(row, row.chain_seq), hashlib.sha256).digest()
        assert row.chain_hmac == expected.hex()
        previous = expected
    state = AuditChainState.objects.get(pk=1)
    assert (state.head_seq, state.head_hmac, state.key_id) == (5, previous.hex(), chain.key_id(key))


def test_rows_written_after_a_chaining_continue_the_chain_without_a_gap(files: Files) -> None:  # noqa: F811
    key = files.key_bytes()
    write(3)
    chain.chain_pending(key, batch=2)
    write(4)
    assert chain.chain_pending(key, batch=3).head_seq == 7
    assert sorted(AuditRecord.objects.values_list("chain_seq", flat=True)) == list(range(1, 8))
    assert chain.chain_pending(key) == chain.ChainResult(0, 7)


def test_the_canonical_bytes_cover_every_column_and_cannot_be_confused_by_shifting_text(files: Files) -> None:  # noqa: F811
    [row] = write(1)
    base = chain.canonical(row, 1)
    for column, value in [("patient_id", "other"), ("user_id", "u"), ("user_name", "n"), ("message", "<x/>"),
                          ("event_id", "110100"), ("action", "R"), ("outcome", 8), ("transaction", "ITI-18"),
                          ("event_time", row.event_time + timedelta(microseconds=1)),
                          ("recorded_at", row.recorded_at + timedelta(seconds=1))]:
        changed = AuditRecord(**{**{f.attname: getattr(row, f.attname) for f in AuditRecord._meta.fields},
                                 column: value})
        assert chain.canonical(changed, 1) != base, column
    assert chain.canonical(row, 2) != base
    shifted = AuditRecord(**{**{f.attname: getattr(row, f.attname) for f in AuditRecord._meta.fields},
                             "user_id": row.user_id + "x", "user_name": row.user_name[1:] if row.user_name else ""})
    assert chain.canonical(shifted, 1) != base


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql",
                    reason="needs concurrent writers: the in-memory shared-cache SQLite test database answers a "
                           "second writer with SQLITE_LOCKED at once (tests/jobs/test_concurrency.py)")
def test_concurrent_writers_and_concurrent_chainers_leave_no_gap(files: Files) -> None:  # noqa: F811
    key = files.key_bytes()
    writers, per_writer = 4, 40
    done = threading.Event()
    barrier = threading.Barrier(writers + 2)
    errors: list[BaseException] = []
    raced: list[int] = []

    def writer() -> None:
        try:
            barrier.wait()
            for _ in range(per_writer):
                trail.store(submission_event(), SOURCE)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    def chainer() -> None:
        try:
            barrier.wait()
            while not done.is_set():
                try:
                    chain.chain_pending(key, batch=7)
                except chain.ChainRaced:
                    raced.append(1)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer) for _ in range(writers)]
    chainers = [threading.Thread(target=chainer) for _ in range(2)]
    for t in threads + chainers:
        t.start()
    for t in threads:
        t.join(60)
    done.set()
    for t in chainers:
        t.join(60)
    assert errors == []
    chain.chain_pending(key)

    seqs = sorted(AuditRecord.objects.values_list("chain_seq", flat=True))
    assert seqs == list(range(1, writers * per_writer + 1))
    report = chain.verify(key, files.anchors, unchained_grace=timedelta(minutes=5))
    assert report.ok, report.problems


def test_the_key_file_is_created_0600_once_and_a_missing_or_damaged_one_fails_loudly(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "hmac.key"
    with pytest.raises(chain.AuditKeyError, match="does not exist"):
        chain.load_key(path)
    key = chain.load_key(path, create=True)
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert chain.load_key(path, create=True) == key  # never replaced
    path.write_text("not a key\n")
    with pytest.raises(chain.AuditKeyError, match="does not hold a key"):
        chain.load_key(path)
    path.chmod(0)
    if path.stat().st_uid != 0 and __import__("os").geteuid() != 0:
        with pytest.raises(chain.AuditKeyError, match="unreadable"):
            chain.load_key(path)


def test_chaining_with_another_key_is_refused(files: Files) -> None:  # noqa: F811
    write(2)
    chain.chain_pending(files.key_bytes())
    write(1)
    with pytest.raises(chain.AuditKeyError, match="not hold the key this chain was made with"):
        chain.chain_pending(bytes(32))
    assert AuditRecord.objects.filter(chain_seq__isnull=True).count() == 1


def test_the_head_is_anchored_to_the_file_and_the_database_when_due(files: Files) -> None:  # noqa: F811
    key = files.key_bytes()
    now = datetime(2026, 12, 8, 1, 0, tzinfo=UTC)
    assert chain.anchor_if_due(files.anchors, timedelta(seconds=60), now=now) is None  # nothing chained
    write(3)
    chain.chain_pending(key)

    first = chain.anchor_if_due(files.anchors, timedelta(seconds=60), now=now)
    assert first is not None and first.seq == 3
    write(1)
    chain.chain_pending(key)
    assert chain.anchor_if_due(files.anchors, timedelta(seconds=60), now=now + timedelta(seconds=30)) is None
    second = chain.anchor_if_due(files.anchors, timedelta(seconds=60), now=now + timedelta(seconds=61))
    assert second is not None and second.seq == 4
    assert chain.anchor_if_due(files.anchors, timedelta(seconds=60), now=now + timedelta(hours=1)) is None  # unmoved

    anchors, problems = chain.read_anchors(files.anchors)
    assert problems == [] and [(a.kind, a.seq) for a in anchors] == [("head", 3), ("head", 4)]
    assert anchors[1].hmac == AuditRecord.objects.get(chain_seq=4).chain_hmac
    assert list(AuditAnchor.objects.order_by("id").values_list("seq", flat=True)) == [3, 4]
    assert files.anchors.read_text().splitlines()[0] == f"2026-12-08T01:00:00.000000Z head seq=3 hmac={first.hmac}"


def test_the_chain_job_chains_anchors_creates_the_key_and_queues_its_next_run(files: Files, settings) -> None:  # noqa: F811
    settings.XDS_AUDIT_CHAIN_INTERVAL = 5
    write(4)
    job = trail_jobs.schedule_next(trail_jobs.CHAIN, 5, now=datetime.now(UTC) - timedelta(seconds=10))

    ran = run_pending(max_jobs=1)

    assert [j.pk for j in ran] == [job.pk] and ran[0].state == Job.State.SUCCEEDED
    assert files.key.exists() and AuditChainState.objects.get(pk=1).head_seq == 4
    assert chain.read_anchors(files.anchors)[0][-1].seq == 4
    following = Job.objects.get(kind=trail_jobs.CHAIN, state=Job.State.QUEUED)
    assert following.run_after > job.run_after
    # ... and the other kinds are queued again if their chains broke (here: never started).
    assert Job.objects.filter(kind=trail_jobs.PRUNE, state=Job.State.QUEUED).count() == 1


def test_the_chain_job_fails_loudly_when_the_key_file_went_missing(files: Files, caplog) -> None:  # noqa: F811
    write(1)
    chain.chain_pending(files.key_bytes())
    files.key.unlink()
    write(1)
    trail_jobs.schedule_next(trail_jobs.CHAIN, 5, now=datetime.now(UTC) - timedelta(seconds=10))

    [ran] = run_pending(max_jobs=1)

    assert ran.state == Job.State.FAILED and "does not exist" in ran.last_error
    assert not files.key.exists()  # never silently replaced by a new key once the chain has records
    assert "does not exist" in caplog.text
    assert Job.objects.filter(kind=trail_jobs.CHAIN, state=Job.State.QUEUED).exists()  # the chain of runs goes on


def test_the_daily_prune_job_applies_the_retention_and_clears_the_trails_finished_jobs(files: Files, settings) -> None:  # noqa: F811
    settings.XDS_AUDIT_RETENTION_DAYS = 30
    rows = write(4)
    old_rows = AuditRecord.objects.filter(pk__in=[r.pk for r in rows[:2]])
    old_rows.update(recorded_at=datetime.now(UTC) - timedelta(days=31))
    key = files.key_bytes()
    chain.chain_pending(key)
    old = trail_jobs.schedule_next(trail_jobs.CHAIN, 5, now=datetime.now(UTC) - timedelta(days=3))
    Job.objects.filter(pk=old.pk).update(state=Job.State.SUCCEEDED, finished_at=datetime.now(UTC) - timedelta(days=2))
    trail_jobs.schedule_next(trail_jobs.PRUNE, trail_jobs.PRUNE_INTERVAL, now=datetime.now(UTC) - timedelta(days=1))

    [ran] = run_pending(max_jobs=1)

    assert ran.kind == trail_jobs.PRUNE and ran.state == Job.State.SUCCEEDED
    assert sorted(AuditRecord.objects.values_list("chain_seq", flat=True)) == [3, 4]
    assert not Job.objects.filter(pk=old.pk).exists()
    assert Job.objects.filter(kind=trail_jobs.PRUNE, state=Job.State.QUEUED).exists()
    assert chain.verify(key, files.anchors, unchained_grace=timedelta(minutes=5)).ok
