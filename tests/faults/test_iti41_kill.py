"""ITI-41 under faults: 100 concurrent submitters, a web worker killed (-9) every 5 s, one PostgreSQL restart.

What a source may rely on afterwards (issue 15):

- every acknowledged submission (RegistryResponse Success) is in the registry, in the repository, and
  retrievable with ITI-43, byte for byte;
- every unacknowledged one (a transport error, an HTTP 5xx, a Failure) is wholly present (registry, repository
  row and content) or wholly absent, and submitting it again gives Success (absent) or a deterministic
  duplicate error (present);
- no orphan files (content no row names, spill files of killed workers) and no pending row once
  ``manage.py xds_repository_reconcile`` has run.

The server is the real one (gunicorn with ``make run``'s worker, registry and repository in one node) on a
private PostgreSQL cluster (tests/faults/postgres.py), so restarting it disturbs nothing else.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.faults.figures import report
from tests.faults.postgres import NoPostgres, private_cluster
from tests.xds_repository.conftest import Doc, provide_and_register_parts
from tests.xds_repository.servers import Server, manage, start_server
from xds_core.ebxml import serialize as ebxml_serialize
from xds_core.ebxml.messages import DocumentRequest
from xds_core.ebxml.parse import parse_adhoc_query_response, parse_retrieve_document_set_response
from xds_core.ebxml.responses import parse_registry_response
from xds_core.errors import ErrorCode
from xds_core.soap.client import SoapClient, TransportError
from xds_core.vocabulary import Action, ResponseStatus, ReturnType, StoredQuery

pytestmark = [pytest.mark.slow, pytest.mark.fault]

REPOSITORY_ID = "1.3.6.1.4.1.21367.13.70.201"
PATIENT = "FAULT41^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO"
SUBMITTERS = 100
SECONDS = float(os.environ.get("XDS_FAULT_ITI41_SECONDS", "60"))
KILL_EVERY = 5.0
#: Errors a source gets, deterministically, for a submission that is already wholly present.
DUPLICATE_CODES = {ErrorCode.XDSDuplicateUniqueIdInRegistry, ErrorCode.XDSNonIdenticalHash}


@dataclass
class Attempt:
    doc: Doc
    acknowledged: bool
    outcome: str  # "success", "failure:<codes>", "transport", "fault"


def _submit(url: str, doc: Doc) -> Attempt:
    body, parts, _ = provide_and_register_parts([doc], patient_id=PATIENT)
    try:
        result = SoapClient(url + "/xds/repository", timeout=60).call(
            Action.ProvideAndRegisterDocumentSet, body, parts=parts, mtom=True)
    except TransportError:
        return Attempt(doc, False, "transport")
    try:
        if result.fault is not None or result.body is None:
            return Attempt(doc, False, "fault")
        status, errors = parse_registry_response(result.body)
    finally:
        result.close()
    if status == ResponseStatus.SUCCESS:
        return Attempt(doc, True, "success")
    return Attempt(doc, False, "failure:" + ",".join(sorted({str(e.error_code) for e in errors})))


def _content(rng: random.Random) -> bytes:
    size = rng.choice((2_000, 20_000, 200_000))  # small and past the read-ahead / in-memory thresholds
    return rng.randbytes(size)


def _registered(url: str, unique_ids: list[str]) -> dict[str, str]:
    """uniqueId -> hash, as the registry knows them (ITI-18 GetDocuments, in batches)."""
    known: dict[str, str] = {}
    for start in range(0, len(unique_ids), 100):
        batch = unique_ids[start:start + 100]
        query = ebxml_serialize.adhoc_query_request(StoredQuery.GetDocuments, [
            ("$XDSDocumentEntryUniqueId", ["(" + ",".join(f"'{u}'" for u in batch) + ")"])],
            return_type=ReturnType.LeafClass)
        result = SoapClient(url + "/xds/registry", timeout=60).call(Action.RegistryStoredQuery, query)
        for entry in parse_adhoc_query_response(result.body).objects:
            known[entry.unique_id] = (entry.hash or "").lower()
    return known


def _retrieve(url: str, unique_id: str) -> bytes | None:
    request = ebxml_serialize.retrieve_document_set_request([DocumentRequest(REPOSITORY_ID, unique_id)])
    result = SoapClient(url + "/xds/repository", timeout=60).call(Action.RetrieveDocumentSet, request)
    try:
        status, _, documents = parse_retrieve_document_set_response(result.body)
        if status != ResponseStatus.SUCCESS or not documents:
            return None
        return result.binary(documents[0].element).read_bytes()
    finally:
        result.close()


def _rows(database_url: str) -> dict[str, tuple[str, str]]:
    with psycopg.connect(database_url) as db:
        return {uid: (state, name) for uid, state, name in db.execute(
            "SELECT unique_id, state, storage_name FROM xds_repository_storeddocument")}


def _rss_kb(pid: int) -> int:
    """A process's resident set (kB), 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def test_iti41_loses_nothing_under_worker_kills_and_a_database_restart(tmp_path: Path) -> None:
    try:
        cluster_context = private_cluster(settings={"max_connections": "400"})
        pg = cluster_context.__enter__()
    except NoPostgres as exc:
        pytest.skip(str(exc))
    spill = tmp_path / "tmp"
    spill.mkdir()
    server: Server | None = None
    try:
        database_url = pg.database_url("xdsi_fault_iti41")
        server = start_server(tmp_path / "node", workers=3, DATABASE_URL=database_url, TMPDIR=str(spill),
                              XDS_REPOSITORY_UNIQUE_ID=REPOSITORY_ID, XDS_PORTAL_JOURNAL="false")
        manage(server.env, "shell", "-c", "from xds_registry.patient_identity_feed.patients import "
               f"add_or_update_patient; add_or_update_patient({PATIENT!r})")

        attempts: list[Attempt] = []
        lock = threading.Lock()
        stop = threading.Event()

        def submitter(seed: int) -> None:
            rng = random.Random(seed)
            while not stop.is_set():
                attempt = _submit(server.url, Doc(content=_content(rng)))
                with lock:
                    attempts.append(attempt)

        kills = 0
        restarted_at = None
        threads = [threading.Thread(target=submitter, args=(n,), daemon=True) for n in range(SUBMITTERS)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        next_kill = started + KILL_EVERY
        max_rss_kb = 0
        while time.monotonic() - started < SECONDS:
            time.sleep(0.2)
            max_rss_kb = max([max_rss_kb, *(_rss_kb(pid) for pid in server.worker_pids())])
            if time.monotonic() >= next_kill:
                pids = server.worker_pids()
                if pids:
                    os.kill(random.choice(pids), signal.SIGKILL)
                    kills += 1
                next_kill += KILL_EVERY
            if restarted_at is None and time.monotonic() - started >= SECONDS / 2:
                pg.restart()
                restarted_at = time.monotonic() - started
        stop.set()
        for thread in threads:
            thread.join(120)
        assert not any(t.is_alive() for t in threads), "a submitter hung"

        # What `make run` does at start-up and the job worker does periodically: settle what killed workers left.
        reconcile = manage(server.env, "xds_repository_reconcile", timeout=300)

        acknowledged = [a for a in attempts if a.acknowledged]
        unacknowledged = [a for a in attempts if not a.acknowledged]
        all_ids = [a.doc.unique_id for a in attempts]
        in_registry = _registered(server.url, all_ids)
        rows = _rows(database_url)
        documents = server.document_dir
        stored_files = _files(documents)

        lost = [a for a in acknowledged if a.doc.unique_id not in in_registry
                or rows.get(a.doc.unique_id, ("", ""))[0] != "registered"
                or _retrieve(server.url, a.doc.unique_id) != a.doc.content]
        half = []
        present = []
        for a in unacknowledged:
            parts = (a.doc.unique_id in in_registry, a.doc.unique_id in rows,
                     a.doc.unique_id in rows and rows[a.doc.unique_id][1] in stored_files)
            if all(parts):
                present.append(a)
            elif any(parts):
                half.append(a)
                a.outcome += f" registry/row/file={parts}"
        duplicated = [uid for uid, count in Counter(all_ids).items() if count > 1]
        named = {name for _, name in rows.values()}
        orphans = sorted(stored_files - named - {f for f in stored_files if "/." in f or f.startswith(".")})
        orphans += sorted(p.name for p in spill.iterdir())  # spill files of killed workers, swept by reconcile
        temp_left = sorted(f for f in stored_files if Path(f).name.startswith(".tmp-"))
        pending = [uid for uid, (state, _) in rows.items() if state != "registered"]

        # Submitting an unacknowledged one again: Success if absent, a deterministic duplicate error if present.
        resubmitted = Counter()
        for a in unacknowledged[:40]:
            again = _submit(server.url, a.doc)
            if a in present:
                codes = set(again.outcome.removeprefix("failure:").split(",")) if again.outcome.startswith(
                    "failure:") else set()
                ok = again.outcome == "success" or (codes and codes <= {str(c) for c in DUPLICATE_CODES})
            else:
                ok = again.outcome == "success"
            resubmitted["ok" if ok else again.outcome] += 1

        outcomes = Counter(a.outcome.split(":")[0] for a in attempts)
        report("iti41-kill", submitters=SUBMITTERS, seconds=int(SECONDS), worker_kills=kills,
               postgres_restarts=1, attempts=len(attempts), acknowledged=len(acknowledged),
               unacknowledged=len(unacknowledged), unacknowledged_present=len(present), lost=len(lost),
               duplicated=len(duplicated), orphaned=len(orphans) + len(temp_left), half_present=len(half),
               pending_after_reconcile=len(pending), resubmitted_ok=resubmitted["ok"],
               max_worker_rss_mb=round(max_rss_kb / 1024, 1),
               outcomes="/".join(f"{k}={v}" for k, v in sorted(outcomes.items())))
        assert kills >= int(SECONDS / KILL_EVERY) - 2 and restarted_at is not None
        assert len(acknowledged) > 100, "the fault load should still let most submissions through"
        assert lost == [], [a.doc.unique_id for a in lost[:5]]
        assert half == [], [(a.doc.unique_id, a.outcome) for a in half[:5]]
        assert duplicated == []
        assert orphans == [] and temp_left == [], (orphans[:10], temp_left[:10], reconcile.stdout)
        assert pending == [], (pending[:5], reconcile.stdout)
        assert set(resubmitted) == {"ok"}, resubmitted
        assert hashlib.sha1(acknowledged[0].doc.content).hexdigest() == in_registry[acknowledged[0].doc.unique_id]
    finally:
        if server is not None:
            server.stop()
        cluster_context.__exit__(None, None, None)
