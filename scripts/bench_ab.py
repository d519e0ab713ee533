#!/usr/bin/env python3
"""Interleaved A/B benchmark of two commits: ``make bench-ab BASE=<rev> [HEAD=<rev>] [PAIRS=5]``.

A change to a hot path (ITI-42, ITI-41/43 streaming, RAD-69) is judged against the commit before
it, measured in one sitting on the same machine, in alternating order (A B, B A, A B, ...), because
this machine's speed drifts by 20-30 % within minutes: figures from different runs do not compare.

What it does:

1. checks out BASE and HEAD as detached git worktrees under ``var/bench-ab/`` (their own code,
   sharing this checkout's ``.venv``);
2. gives each its own PostgreSQL database (``DATABASE_URL`` of this run's server, default
   ``postgres://postgres@127.0.0.1:5432``), its own ports and ``XDS_VAR_DIR``, migrates it and
   starts it the way ``make run`` does (``python -m config.supervisor``), both against ONE local
   Orthanc PACS started here (``XDS_RUN_PACS=false`` for the servers);
3. loads the registry of each once (``xds_bench_registry --entries``), then runs ``PAIRS`` rounds;
   a round runs, for each side in that round's order, each side's OWN benchmark commands:
   ``xds_bench_registry --skip-load`` (ITI-42 /s), ``xds_bench_repository`` (ITI-41 and ITI-43 MB/s
   on one large document) and ``xds_bench_imaging`` (the RAD-69 / WADO-RS ratio);
4. prints every figure side by side: each side's values, medians and the HEAD/BASE ratio of
   medians, and writes them to ``var/bench/ab.json``.

The two sides may also be ONE commit run two ways: ``--base-env`` / ``--head-env KEY=VALUE`` give a side
settings of its own (``XDS_AUDIT=off`` against ``on``), and ``--tls head`` runs that side as a secure node
(``XDS_TLS=on`` with a PKI made for the run under ``var/bench-ab/pki``: the server's listeners and the
benchmark clients speak TLS with mutual authentication, ITI-19).  ``--benches`` picks the benchmarks
(``repository,imaging`` for the TLS figures: the registry benchmark's ITI-42 client is a raw plain socket).

Everything runs on loopback and stops by itself; the worktrees, databases and servers are removed
at the end (``--keep`` keeps the worktrees).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
PYTHON = str(BASE_DIR / ".venv" / "bin" / "python")
PACS = BASE_DIR / "imaging_source" / "pacs" / "local-pacs.sh"

#: (name, bench, JSON path in that bench's output, unit, higher is better)
METRICS: list[tuple[str, str, tuple[str, ...], str]] = [
    ("ITI-42 registrations/s", "registry", ("iti42", "submissions_per_second"), "/s"),
    ("ITI-18 FindDocuments p50", "registry", ("find_documents", "latency_ms_p50"), "ms"),
    ("ITI-41 small documents/s", "repository", ("small", "per_second"), "/s"),
    ("ITI-41 large document MB/s", "repository", ("large", "in_mb_per_second"), "MB/s"),
    ("ITI-43 large document MB/s", "repository", ("large", "out_mb_per_second"), "MB/s"),
    ("RAD-69 ratio WADO-RS/RAD-69", "imaging", ("ratio_wado_over_rad69",), ""),
]
LOWER_IS_BETTER = {"ITI-18 FindDocuments p50"}


@dataclass
class Side:
    label: str
    rev: str
    tree: Path
    port: int
    hl7_port: int
    dicom_port: int
    database_url: str
    var_dir: Path
    process: subprocess.Popen | None = None
    figures: dict[str, list[float]] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    tls: bool = False

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def env(self, pacs_env: dict[str, str]) -> dict[str, str]:
        return {**os.environ, **pacs_env, **self.extra_env, "DATABASE_URL": self.database_url, "PORT": str(self.port),
                "HL7_PORT": str(self.hl7_port), "DICOM_PORT": str(self.dicom_port), "XDS_VAR_DIR": str(self.var_dir),
                "XDS_RUN_PACS": "false", "PYTHONDONTWRITEBYTECODE": "1",
                # One node with every actor (`make run` starts the two-hospital demo by default).
                "XDS_DEMO": "false"}


def say(text: str) -> None:
    print(f"bench-ab | {text}", flush=True)


def run(argv: list[str], *, cwd: Path, env: dict[str, str] | None = None, quiet: bool = False) -> None:
    result = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.PIPE if quiet else None,
                            stderr=subprocess.STDOUT if quiet else None, text=True)
    if result.returncode != 0:
        if quiet and result.stdout:
            sys.stdout.write(result.stdout[-4000:])
        raise SystemExit(f"bench-ab: {' '.join(argv[:4])} ... failed (exit {result.returncode})")


def psql(base_url: str, sql: str) -> None:
    run(["psql", f"{base_url}/postgres", "-qc", sql], cwd=BASE_DIR, quiet=True)


def wait_for(url: str, process: subprocess.Popen, seconds: float = 120.0, context: ssl.SSLContext | None = None
             ) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"bench-ab: the server for {url} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2, context=context):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"bench-ab: no answer from {url} after {seconds:.0f} s")


#: Run in a TLS side's manage.py shell: the node's own certificate (XDS_TLS_CERT) is an identity with every
#: role, so the benchmark clients, which present it, are admitted (the identity table, issue 13).
_REGISTER_NODE = """
import ssl
from django.conf import settings
from atna.models import NodeIdentity
from xds_core.identity import PeerCertificate, Role
der = ssl.PEM_cert_to_DER_cert(open(settings.XDS_TLS_CERT).read())
NodeIdentity.objects.update_or_create(name="bench-node", defaults={
    "cert_sha256": PeerCertificate.from_der(der).sha256, "roles": ",".join(r.value for r in Role)})
"""


def _make_pki(directory: Path, sides: list[Side]) -> ssl.SSLContext:
    """A CA and one node certificate per TLS side (xds_core.pki); the sides' XDS_TLS settings point at them.
    Returns a client context presenting the first TLS side's certificate (for the readiness checks)."""
    sys.path.insert(0, str(BASE_DIR))
    from xds_core import pki
    from xds_core.tls import TlsSettings, client_context

    ca = pki.issue_ca("bench-ab CA")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.crt").write_bytes(ca.cert_pem)
    first: TlsSettings | None = None
    for side in sides:
        if not side.tls:
            continue
        stem = side.label.split()[0].lower()
        cert, key = pki.issue(ca, f"bench-{stem}", dns_names=("localhost",), addresses=("127.0.0.1",)
                              ).write(directory, stem)
        side.extra_env.update({"XDS_TLS": "on", "XDS_TLS_CERT": str(cert), "XDS_TLS_KEY": str(key),
                               "XDS_TLS_CA": str(directory / "ca.crt")})
        first = first or TlsSettings(enabled=True, cert=str(cert), key=str(key), ca=(str(directory / "ca.crt"),))
    assert first is not None
    return client_context(first)


def dig(data: dict, path: tuple[str, ...]) -> float:
    value: object = data
    for key in path:
        value = value[key]  # type: ignore[index]
    return float(value)  # type: ignore[arg-type]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the commit to compare against (e.g. the previous main)")
    parser.add_argument("--head", default="HEAD", help="the commit under test (default HEAD)")
    parser.add_argument("--pairs", type=int, default=5, help="rounds; each side runs once per round")
    parser.add_argument("--entries", type=int, default=20_000, help="registry entries loaded once per side")
    parser.add_argument("--submissions", type=int, default=2000, help="ITI-42 submissions per round")
    parser.add_argument("--queries", type=int, default=300, help="stored queries per round")
    parser.add_argument("--small-count", type=int, default=500, help="small ITI-41 per round")
    parser.add_argument("--large-size", type=int, default=300_000_000, help="bytes of the large ITI-41/43 document")
    parser.add_argument("--imaging-repeat", type=int, default=11, help="RAD-69/WADO-RS pairs per imaging run")
    parser.add_argument("--database", default=os.environ.get("BENCH_AB_DATABASE", "postgres://postgres@127.0.0.1:5432"),
                        help="PostgreSQL server URL without a database name")
    parser.add_argument("--keep", action="store_true", help="keep the worktrees under var/bench-ab")
    parser.add_argument("--base-env", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for the BASE side only (repeatable)")
    parser.add_argument("--head-env", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for the HEAD side only (repeatable)")
    parser.add_argument("--tls", choices=("base", "head", "both"), help="run that side as a TLS secure node")
    parser.add_argument("--benches", default="registry,repository,imaging",
                        help="comma-separated: registry, repository, imaging")
    args = parser.parse_args()
    args.benches = [b.strip() for b in args.benches.split(",") if b.strip()]
    unknown = set(args.benches) - {"registry", "repository", "imaging"}
    if unknown:
        parser.error(f"unknown benches: {', '.join(sorted(unknown))}")

    work = BASE_DIR / "var" / "bench-ab"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sides: list[Side] = []
    for index, (label, rev) in enumerate((("BASE", args.base), ("HEAD", args.head))):
        sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=BASE_DIR, capture_output=True, text=True,
                             check=True).stdout.strip()
        tree = work / label.lower()
        run(["git", "worktree", "add", "--detach", "-f", str(tree), sha], cwd=BASE_DIR, quiet=True)
        db = f"xdsi_bench_ab_{label.lower()}"
        side_env = dict(item.split("=", 1) for item in (args.base_env if label == "BASE" else args.head_env))
        tls = args.tls in (label.lower(), "both")
        suffix = " TLS" if tls else "".join(f" {k}={v}" for k, v in side_env.items())
        sides.append(Side(f"{label} {sha}{suffix}"[:40], sha, tree, 8201 + index, 12701 + index, 11201 + index,
                          f"{args.database}/{db}", work / f"var-{label.lower()}", extra_env=side_env, tls=tls))
    client_context = _make_pki(work / "pki", sides) if args.tls else None
    # One PACS for both servers (ports of its own, so a developer's `make run` keeps running).
    pacs_env = {"LOCAL_PACS_DIR": str(work / "pacs"), "ORTHANC_DICOM_PORT": "14252", "ORTHANC_HTTP_PORT": "18052",
                "DICOM_PACS": "ORTHANC@127.0.0.1:14252", "DICOMWEB_URL": "http://127.0.0.1:18052/dicom-web"}
    pacs_env["XDSI_PORT"] = "11209"
    try:
        say("starting the local PACS")
        run(["bash", str(PACS), "start"], cwd=BASE_DIR, env={**os.environ, **pacs_env}, quiet=True)
        run(["bash", str(PACS), "load", "--demo"], cwd=BASE_DIR, env={**os.environ, **pacs_env, "PYTHON": PYTHON},
            quiet=True)
        for side in sides:
            db = side.database_url.rsplit("/", 1)[1]
            psql(args.database, f"DROP DATABASE IF EXISTS {db}")
            psql(args.database, f"CREATE DATABASE {db}")
            side.var_dir.mkdir(parents=True)
            env = side.env(pacs_env)
            run([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=side.tree, env=env)
            if side.tls:  # the node's own certificate is the benchmark clients' identity: all roles
                run([PYTHON, "manage.py", "shell", "-c", _REGISTER_NODE], cwd=side.tree, env=env, quiet=True)
            side.process = subprocess.Popen([PYTHON, "-m", "config.supervisor"], cwd=side.tree, env=env,
                                            stdout=open(side.var_dir / "server.log", "wb"),
                                            stderr=subprocess.STDOUT, start_new_session=True)
            wait_for(f"{side.url}/xds/registry?wsdl", side.process,
                     context=client_context if side.tls else None)
            if "registry" not in args.benches:
                continue
            say(f"{side.label}: server on port {side.port}; loading {args.entries} registry entries")
            run([PYTHON, "manage.py", "xds_bench_registry", "--url", side.url,
                 "--entries", str(args.entries), "--submissions", "200", "--queries", "50", "--raw-entries", "1000"],
                cwd=side.tree, env=env, quiet=True)
        for round_index in range(args.pairs):
            order = sides if round_index % 2 == 0 else sides[::-1]
            for side in order:
                say(f"round {round_index + 1}/{args.pairs}: {side.label}")
                measure(side, pacs_env, args)
    finally:
        for side in sides:
            if side.process is not None and side.process.poll() is None:
                os.killpg(side.process.pid, signal.SIGTERM)
                try:
                    side.process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(side.process.pid, signal.SIGKILL)
        subprocess.run(["bash", str(PACS), "stop"], cwd=BASE_DIR, env={**os.environ, **pacs_env},
                       capture_output=True)
        for side in sides:
            subprocess.run(["psql", f"{args.database}/postgres", "-qc",
                            f"DROP DATABASE IF EXISTS {side.database_url.rsplit('/', 1)[1]}"], capture_output=True)
            if not args.keep:
                subprocess.run(["git", "worktree", "remove", "--force", str(side.tree)], cwd=BASE_DIR,
                               capture_output=True)
    report(sides, args)
    return 0


def measure(side: Side, pacs_env: dict[str, str], args: argparse.Namespace) -> None:
    env = side.env(pacs_env)
    url = side.url
    out = side.var_dir / "bench"
    runs = {
        "registry": ["xds_bench_registry", "--skip-load", "--submissions", str(args.submissions),
                     "--queries", str(args.queries), "--raw-entries", "1000", "--output", str(out / "registry.json")],
        "repository": ["xds_bench_repository", "--small-count", str(args.small_count), "--large-size",
                       str(args.large_size), "--hl7", f"127.0.0.1:{side.hl7_port}",
                       "--output", str(out / "repository.json")],
        "imaging": ["xds_bench_imaging", "--repeat", str(args.imaging_repeat), "--dicomweb", pacs_env["DICOMWEB_URL"],
                    "--output", str(out / "imaging.json")],
    }
    results: dict[str, dict] = {}
    for bench, argv in runs.items():
        if bench not in args.benches:
            continue
        run([PYTHON, "manage.py", *argv, "--url", url], cwd=side.tree, env=env, quiet=True)
        results[bench] = json.loads((out / f"{bench}.json").read_text())
    for name, bench, path, _unit in METRICS:
        if bench not in results:
            continue
        value = dig(results[bench], path)
        side.figures.setdefault(name, []).append(value)
        say(f"  {name}: {value:g}")


def report(sides: list[Side], args: argparse.Namespace) -> None:
    base, head = sides
    if not head.figures:
        return
    print()
    print(f"Interleaved A/B, {args.pairs} rounds (order alternating), same machine, same PACS")
    print(f"{'measure':30} {base.label:>19} {head.label:>19} {'HEAD/BASE':>10}  values BASE | HEAD")
    summary: dict[str, dict] = {}
    for name, _bench, _path, unit in METRICS:
        a, b = base.figures.get(name, []), head.figures.get(name, [])
        if not a or not b:
            continue
        ma, mb = statistics.median(a), statistics.median(b)
        ratio = (ma / mb if name in LOWER_IS_BETTER else mb / ma) if ma and mb else float("nan")
        print(f"{name:30} {ma:>14.4g} {unit:<4} {mb:>14.4g} {unit:<4} {ratio:>10.3f}  "
              f"{', '.join(f'{v:g}' for v in a)} | {', '.join(f'{v:g}' for v in b)}")
        summary[name] = {"base": a, "head": b, "base_median": ma, "head_median": mb, "head_over_base": round(ratio, 3)}
    print("(HEAD/BASE > 1: HEAD better; for latencies the inverse ratio is shown so that > 1 is better too)")
    out = BASE_DIR / "var" / "bench" / "ab.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"base": base.rev, "head": head.rev, "pairs": args.pairs, "figures": summary},
                              indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
