"""``manage.py xds_bench_registry``: the Document Registry benchmark (``make bench-registry``).

Runs against a server that is already up (``make run``: gunicorn on PostgreSQL) and must be
started with the SAME ``DATABASE_URL`` as this command, because step 0 loads data straight into
the database.  Steps:

0. load ``--entries`` DocumentEntries with the registry's bulk loader
   (``xds_bench_registry_load``: the ITI-42 validation and persistence code, batched), unless
   ``--skip-load`` re-uses the previous load (its summary in ``var/bench/registry_load.json``);
a. ITI-42 Register Document Set-b, one document per submission, over HTTP with ``--clients``
   concurrent clients (request bodies are prepared before the clock starts) -> submissions/s;
b. ITI-18 FindDocuments (patient + status + classCode + creationTime range) and
   GetSubmissionSetAndContents over HTTP, one client, LeafClass -> p50 / p99 latency;
c. peak RSS (``VmHWM``) of the gunicorn processes (``--server-pids`` or found in /proc);
d. the raw PostgreSQL limit for the same rows: COPY of the loaded rows into scratch copies of the
   registry tables (bulk, vs step 0) and one transaction per registration with ``--clients``
   connections (vs step a); our ratio to each.

Figures are printed and written to ``var/bench/registry.json``.
"""

from __future__ import annotations

import json
import os
import random
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from xds_core.affinity_domain import load_affinity_domain
from xds_core.bench import server_pids
from xds_core.ebxml.serialize import adhoc_query_request, submit_objects_request
from xds_core.soap.envelope import build_envelope, render_message
from xds_core.vocabulary import Action, AvailabilityStatus, StoredQuery
from xds_registry import models
from xds_registry.management.commands.xds_bench_registry_load import LoadPlan, codes_for, make_submission
from xds_registry.stored_query import parameters as prm

SUCCESS = b"urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
APPROVED = AvailabilityStatus.APPROVED.value


@dataclass(frozen=True)
class Prepared:
    content_type: str
    body: bytes


def soap_message(action: Action, body: Any) -> Prepared:
    content_type, _length, chunks = render_message(build_envelope(action.value, body), [], action=action.value,
                                                   mtom=False)
    return Prepared(content_type, b"".join(chunks))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def peak_rss(pids: list[int]) -> dict[int, int]:
    """VmHWM (peak resident set, kB) of each process."""
    out: dict[int, int] = {}
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    out[pid] = int(line.split()[1])
        except OSError:
            continue
    return out


class Command(BaseCommand):
    help = "Benchmark the Document Registry over HTTP (ITI-42 rate, ITI-18 latency, RSS, raw PostgreSQL limit)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--url", default=f"http://127.0.0.1:{settings.PORT}",
                            help="base URL of the running server (the registry is <url>/xds/registry)")
        parser.add_argument("--entries", type=int, default=100_000, help="DocumentEntries to load (default 100000)")
        parser.add_argument("--skip-load", action="store_true", help="re-use the previous load")
        # One more loader than cores: each loader waits on PostgreSQL (COPY, commit) part of the time.
        parser.add_argument("--load-workers", type=int, default=(os.cpu_count() or 2) + 1,
                            help="parallel loader processes for step 0 (default: cores + 1)")
        parser.add_argument("--clients", type=int, default=8, help="concurrent ITI-42 clients (default 8)")
        parser.add_argument("--submissions", type=int, default=2000, help="ITI-42 submissions in step a")
        parser.add_argument("--queries", type=int, default=1000, help="requests per stored query in step b")
        parser.add_argument("--raw-entries", type=int, default=20_000,
                            help="entries copied for the raw PostgreSQL limit (step d)")
        parser.add_argument("--server-pids", default="", help="comma-separated gunicorn pids (default: found)")
        parser.add_argument("--output", default=str(Path(settings.VAR_DIR) / "bench" / "registry.json"))

    def say(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def handle(self, *args: Any, **options: Any) -> None:
        url = options["url"].rstrip("/") + "/xds/registry"
        out_dir = Path(options["output"]).parent
        out_dir.mkdir(parents=True, exist_ok=True)
        summary_file = out_dir / "registry_load.json"
        try:
            requests.get(url, timeout=10).raise_for_status()
        except requests.RequestException as exc:
            raise CommandError(f"no registry at {url} ({exc}); start the server first (make run)") from exc
        results: dict[str, Any] = {"url": url, "database": connection.vendor, "started": time.strftime("%FT%TZ",
                                                                                                       time.gmtime())}

        # --- 0. load -------------------------------------------------------------------------------
        if not options["skip_load"]:
            self.say(f"[0] loading {options['entries']} entries with xds_bench_registry_load")
            call_command("xds_bench_registry_load", entries=options["entries"], workers=options["load_workers"],
                         summary=str(summary_file), stdout=self.stdout)
            if connection.vendor == "postgresql":
                # Fresh statistics after a bulk load: the planner needs them (autovacuum may be off
                # or not have caught up), exactly as a production bulk import would end.
                self.say("    ANALYZE of the registry tables")
                with connection.cursor() as cursor:
                    for model in (models.DocumentEntry, models.SubmissionSet, models.Folder, models.Association,
                                  models.RegistryCode, models.Patient):
                        cursor.execute(f"ANALYZE {model._meta.db_table}")
        if not summary_file.exists():
            raise CommandError(f"{summary_file} is missing: run once without --skip-load")
        load = json.loads(summary_file.read_text())
        results["load"] = load
        results["registry_entries"] = models.DocumentEntry.objects.count()
        self.say(f"    registry holds {results['registry_entries']} DocumentEntries; "
                 f"load rate {load.get('entries_per_second')} entries/s")
        patients = load["sample_patient_ids"]

        # --- a. ITI-42 -----------------------------------------------------------------------------
        results["iti42"] = self.bench_register(url, patients, options["submissions"], options["clients"])
        # --- b. ITI-18 -----------------------------------------------------------------------------
        results["find_documents"] = self.bench_find_documents(url, patients, load, options["queries"])
        results["get_submission_set_and_contents"] = self.bench_get_ss_and_contents(url, patients,
                                                                                    options["queries"])
        # --- c. RSS --------------------------------------------------------------------------------
        pids = [int(p) for p in options["server_pids"].split(",") if p.strip()] or \
            server_pids(urlsplit(url).port or 80)
        rss = peak_rss(pids)
        results["server_peak_rss_kb"] = {str(k): v for k, v in rss.items()}
        results["server_peak_rss_mb_max"] = round(max(rss.values()) / 1024, 1) if rss else None
        self.say("[c] gunicorn peak RSS (VmHWM): "
                 + (", ".join(f"pid {p}: {v / 1024:.0f} MB" for p, v in rss.items())
                    or "no server process found (pass --server-pids)"))
        # --- d. raw PostgreSQL -----------------------------------------------------------------------
        if connection.vendor == "postgresql":
            results["raw_postgresql"] = self.bench_raw(options["raw_entries"], options["clients"])
            raw = results["raw_postgresql"]
            if load.get("entries_per_second"):
                raw["load_ratio"] = round(load["entries_per_second"] / raw["copy_entries_per_second"], 3)
            raw["iti42_ratio"] = round(results["iti42"]["submissions_per_second"]
                                       / raw["transaction_registrations_per_second"], 3)
            self.say(f"    ours/raw: bulk load {raw.get('load_ratio')}, ITI-42 {raw['iti42_ratio']}")
        else:
            results["raw_postgresql"] = None
            self.say("[d] skipped: the raw insert limit is measured on PostgreSQL only")

        Path(options["output"]).write_text(json.dumps(results, indent=2))
        self.say(f"wrote {options['output']}")

    # ------------------------------------------------------------------------------------------------

    def bench_register(self, url: str, patients: list[str], count: int, clients: int) -> dict[str, Any]:
        self.say(f"[a] ITI-42: preparing {count} one-document submissions")
        codes, mimes = codes_for(load_affinity_domain(settings.XDS_AFFINITY_DOMAIN_CODES))
        plan = LoadPlan(run="bench", authority="", patients=len(patients), docs_per_patient=1, per_submission=1,
                        seed=7, codes=codes, mime_types=mimes, repository_unique_id=settings.XDS_REPOSITORY_UNIQUE_ID)
        rng = random.Random(int(time.time()))
        messages = [soap_message(Action.RegisterDocumentSet,
                                 submit_objects_request(make_submission(plan, rng.choice(patients), i, 1, rng)))
                    for i in range(count)]
        self.say(f"    sending with {clients} concurrent clients")
        # The clients share the server's cores: each sends a pre-built raw HTTP/1.1 request over a
        # plain socket and reads the answer by Content-Length (no requests/urllib3 machinery), and
        # their CPU time is reported beside the rate.
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        raw = [_raw_request(parts.path or "/", f"{host}:{port}", m) for m in messages]
        failures: list[str] = []
        done = 0
        lock = threading.Lock()

        def send(request: bytes) -> float:
            nonlocal done
            started = time.perf_counter()
            status, body = _raw_post(host, port, request)
            elapsed = time.perf_counter() - started
            with lock:
                done += 1
                if status != 200 or SUCCESS not in body:
                    failures.append(f"HTTP {status}: {body[:500]!r}")
                if done % 500 == 0:
                    self.say(f"    {done}/{len(raw)}")
            return elapsed

        load_before = os.getloadavg()
        cpu_before = time.process_time()
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            latencies = list(pool.map(send, raw))
        wall = time.perf_counter() - started
        client_cpu = time.process_time() - cpu_before
        load_after = os.getloadavg()
        if failures:
            raise CommandError(f"{len(failures)} ITI-42 submissions failed; first: {failures[0]}")
        result = {"submissions": count, "clients": clients, "seconds": round(wall, 2),
                  "submissions_per_second": round(count / wall, 1),
                  "latency_ms_p50": round(percentile(latencies, 0.5) * 1000, 2),
                  "latency_ms_p99": round(percentile(latencies, 0.99) * 1000, 2),
                  "client_cpu_seconds": round(client_cpu, 2),
                  "client_cpu_ms_per_submission": round(client_cpu / count * 1000, 3),
                  "loadavg_1min_before_after": [round(load_before[0], 2), round(load_after[0], 2)]}
        self.say(f"    {result['submissions_per_second']} submissions/s "
                 f"(p50 {result['latency_ms_p50']} ms, p99 {result['latency_ms_p99']} ms); client CPU "
                 f"{result['client_cpu_ms_per_submission']} ms/submission; load average "
                 f"{load_before[0]:.2f} -> {load_after[0]:.2f}")
        return result

    def _latency(self, name: str, url: str, messages: list[Prepared], expect_objects: bool) -> dict[str, Any]:
        session = requests.Session()
        for message in messages[: min(50, len(messages))]:  # warm-up: connections, caches
            session.post(url, data=message.body, headers={"Content-Type": message.content_type}, timeout=60)
        latencies: list[float] = []
        empty = 0
        for i, message in enumerate(messages, 1):
            started = time.perf_counter()
            response = session.post(url, data=message.body, headers={"Content-Type": message.content_type},
                                    timeout=60)
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200 or SUCCESS not in response.content:
                raise CommandError(f"{name} failed: {response.text[:500]}")
            if b"ExtrinsicObject" not in response.content and b"RegistryPackage" not in response.content:
                empty += 1
            if i % 250 == 0:
                self.say(f"    {i}/{len(messages)}")
        result = {"requests": len(messages), "latency_ms_p50": round(percentile(latencies, 0.5) * 1000, 2),
                  "latency_ms_p99": round(percentile(latencies, 0.99) * 1000, 2),
                  "latency_ms_mean": round(statistics.fmean(latencies) * 1000, 2), "empty_answers": empty}
        self.say(f"    {name}: p50 {result['latency_ms_p50']} ms, p99 {result['latency_ms_p99']} ms "
                 f"({empty} empty answers)")
        if expect_objects and empty == len(messages):
            raise CommandError(f"{name} found nothing at all: the load and the server use different databases?")
        return result

    def bench_find_documents(self, url: str, patients: list[str], load: dict[str, Any], count: int
                             ) -> dict[str, Any]:
        self.say(f"[b] FindDocuments (patient + status + classCode + creationTime range), {count} requests")
        rng = random.Random(11)
        class_codes = load["codes"]["classCode"]
        messages = []
        for _ in range(count):
            chosen = rng.sample(class_codes, k=min(3, len(class_codes)))
            low = rng.randint(2015, 2019)
            params = [(prm.DE_PATIENT_ID, [f"'{rng.choice(patients)}'"]), (prm.DE_STATUS, [f"('{APPROVED}')"]),
                      (prm.DE_CLASS_CODE, ["(" + ", ".join(f"'{c}'" for c in chosen) + ")"]),
                      (prm.DE_CREATION_FROM, [str(low)]), (prm.DE_CREATION_TO, [str(low + 6)])]
            messages.append(soap_message(Action.RegistryStoredQuery,
                                         adhoc_query_request(StoredQuery.FindDocuments.value, params)))
        result = self._latency("FindDocuments", url, messages, expect_objects=True)
        result["documents_per_patient"] = load.get("docs_per_patient")
        return result

    def bench_get_ss_and_contents(self, url: str, patients: list[str], count: int) -> dict[str, Any]:
        self.say(f"[b] GetSubmissionSetAndContents, {count} requests")
        uuids = list(models.SubmissionSet.objects.filter(patient_id__in=patients)
                     .values_list("entry_uuid", flat=True)[:500])
        if not uuids:
            raise CommandError("no SubmissionSet of the loaded patients found")
        rng = random.Random(13)
        messages = [soap_message(Action.RegistryStoredQuery, adhoc_query_request(
            StoredQuery.GetSubmissionSetAndContents.value, [(prm.SS_ENTRY_UUID, [f"'{rng.choice(uuids)}'"])]))
            for _ in range(count)]
        return self._latency("GetSubmissionSetAndContents", url, messages, expect_objects=True)

    def bench_raw(self, entries: int, clients: int) -> dict[str, Any]:
        """The same rows, inserted by PostgreSQL alone: COPY (bulk) and one transaction per registration."""
        import psycopg

        self.say(f"[d] raw PostgreSQL: copying the rows of {entries} loaded entries into scratch tables")
        de_table = models.DocumentEntry._meta.db_table
        code_table = models.RegistryCode._meta.db_table
        as_table = models.Association._meta.db_table
        ss_table = models.SubmissionSet._meta.db_table
        dsn = _dsn()
        rows: dict[str, list[tuple[Any, ...]]] = {}
        columns: dict[str, list[str]] = {}

        def fetch(conn: Any, table: str, where: str, value: Any) -> None:
            cursor = conn.execute(f"SELECT * FROM {table} WHERE {where}", (value,))
            columns[table] = [d.name for d in cursor.description]
            rows[table] = cursor.fetchall()

        with psycopg.connect(dsn, autocommit=True) as conn:
            de_ids = [r[0] for r in conn.execute(f"SELECT id FROM {de_table} ORDER BY id DESC LIMIT %s", (entries,))]
            if not de_ids:
                raise CommandError("no DocumentEntry to copy")
            fetch(conn, de_table, "id = ANY(%s)", de_ids)
            fetch(conn, code_table, "object_kind = 'DE' AND object_id = ANY(%s)", de_ids)
            uuids = [row[columns[de_table].index("entry_uuid")] for row in rows[de_table]]
            fetch(conn, as_table, "target_uuid = ANY(%s)", uuids)
            ss_uuids = sorted({row[columns[as_table].index("source_uuid")] for row in rows[as_table]})
            fetch(conn, ss_table, "entry_uuid = ANY(%s)", ss_uuids)
        total_rows = sum(len(v) for v in rows.values())
        order = [ss_table, de_table, as_table, code_table]

        def scratch(conn: Any) -> None:
            for table in order:
                conn.execute(f"DROP TABLE IF EXISTS bench_{table}")
                conn.execute(f"CREATE TABLE bench_{table} (LIKE {table} INCLUDING ALL)")

        def drop(conn: Any) -> None:
            for table in order:
                conn.execute(f"DROP TABLE IF EXISTS bench_{table}")

        with psycopg.connect(dsn, autocommit=True) as conn:
            scratch(conn)
            started = time.perf_counter()
            with conn.transaction():
                for table in order:
                    with conn.cursor().copy(f"COPY bench_{table} FROM STDIN") as copy:
                        for row in rows[table]:
                            copy.write_row(row)
            copy_seconds = time.perf_counter() - started
            drop(conn)
        copy_rate = len(rows[de_table]) / copy_seconds
        self.say(f"    COPY: {total_rows} rows ({len(rows[de_table])} entries) in {copy_seconds:.2f} s "
                 f"= {copy_rate:.0f} entries/s")

        # One registration = 1 SubmissionSet + 1 DocumentEntry + its codes + its HasMember, one transaction.
        codes_by_de: dict[int, list[tuple[Any, ...]]] = {}
        for row in rows[code_table]:
            codes_by_de.setdefault(row[columns[code_table].index("object_id")], []).append(row)
        target = columns[as_table].index("target_uuid")
        assoc_by_target = {row[target]: row for row in rows[as_table]}
        ss_rows = rows[ss_table]
        registrations = []
        for i, de in enumerate(rows[de_table][: min(len(rows[de_table]), len(ss_rows), 5000)]):
            registrations.append((ss_rows[i], de, codes_by_de.get(de[columns[de_table].index("id")], []),
                                  assoc_by_target.get(de[columns[de_table].index("entry_uuid")])))

        def insert_sql(table: str, width: int) -> str:
            return f"INSERT INTO bench_{table} VALUES ({', '.join(['%s'] * width)})"

        with psycopg.connect(dsn, autocommit=True) as conn:
            scratch(conn)
        chunks = [registrations[i::clients] for i in range(clients)]

        def worker(chunk: list[Any]) -> None:
            with psycopg.connect(dsn) as conn:
                for ss, de, codes, assoc in chunk:
                    with conn.transaction():
                        cur = conn.cursor()
                        cur.execute(insert_sql(ss_table, len(ss)), ss)
                        cur.execute(insert_sql(de_table, len(de)), de)
                        if assoc is not None:
                            cur.execute(insert_sql(as_table, len(assoc)), assoc)
                        if codes:
                            cur.executemany(insert_sql(code_table, len(codes[0])), codes)

        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(worker, chunks))
        tx_seconds = time.perf_counter() - started
        with psycopg.connect(dsn, autocommit=True) as conn:
            drop(conn)
        tx_rate = len(registrations) / tx_seconds
        self.say(f"    one transaction per registration, {clients} connections: {len(registrations)} in "
                 f"{tx_seconds:.2f} s = {tx_rate:.0f} registrations/s")
        return {"copy_rows": total_rows, "copy_entries": len(rows[de_table]), "copy_seconds": round(copy_seconds, 2),
                "copy_entries_per_second": round(copy_rate, 1), "transaction_registrations": len(registrations),
                "transaction_connections": clients, "transaction_seconds": round(tx_seconds, 2),
                "transaction_registrations_per_second": round(tx_rate, 1)}


def _raw_request(path: str, host: str, message: Prepared) -> bytes:
    """A complete HTTP/1.1 POST of ``message`` (built before the clock starts)."""
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {message.content_type}\r\n"
            f"Content-Length: {len(message.body)}\r\nConnection: close\r\n\r\n")
    return head.encode("latin-1") + message.body


def _raw_post(host: str, port: int, request: bytes) -> tuple[int, bytes]:
    """Send one pre-built request on a fresh connection (gunicorn sync workers close after each answer)."""
    with socket.create_connection((host, port), timeout=60) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
        length = next((int(line.split(b":", 1)[1]) for line in lines[1:]
                       if line.lower().startswith(b"content-length:")), None)
        while length is None or len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return status, body


def _dsn() -> str:
    db = connection.settings_dict
    parts = {"dbname": db.get("NAME"), "user": db.get("USER"), "password": db.get("PASSWORD"),
             "host": db.get("HOST"), "port": db.get("PORT")}
    return " ".join(f"{k}={v}" for k, v in parts.items() if v)
