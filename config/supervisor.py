"""`make run`'s process supervisor: one command, several processes.

Two shapes, chosen by ``XDS_DEMO``:

- **demo** (default): the two-hospital affinity domain of :mod:`demo.sites` on one machine.  The
  *domain* node (registry + repository, ITI-8 feed) and *Hospital A* and *Hospital B*, each a site with
  its own environment file (``var/demo/<site>.env``), database, Orthanc, imaging-source web server,
  DICOM listener and job worker.  The demo data is then put in place through the real paths
  (``manage.py xds_demo_load``: patients, STOW-RS into each hospital's PACS, RAD-68), and the
  supervisor prints every URL, AE title and port and the ``xds_fetch`` line that imports Hospital A's
  study into Hospital B's PACS.
- **single node** (``XDS_DEMO=false``): one empty node with every actor on ``PORT``, the local Orthanc
  unless ``XDS_RUN_PACS=false``.

A node's services: ``web`` gunicorn (SOAP endpoints and admin); ``hl7`` the ITI-8 feed (MLLP);
``dicom`` the Imaging Document Source's DICOM listener (C-STORE + MPPS SCP, stable-study watcher);
``jobs`` the job worker (publications, prefetch, the audit trail's chaining).  Output is prefixed with the
service's name.

``XDS_TLS=demo`` (issue 13) makes every node a secure node: the supervisor first creates or completes the demo
PKI under ``XDS_PKI_DIR`` (``atna.pki_demo``), writes each site's env file with ``XDS_TLS=on`` and that site's
node certificate, fills each site's node identity table (``manage.py xds_demo_identities``, from
``demo.sites.demo_identities``) before any listener starts, checks readiness over TLS presenting the site's own
certificate, and prints ``https://`` URLs and how to present the role certificates.  The listeners read the
TLS settings themselves (gunicorn's worker, the MLLP and DICOM listeners, ``local-pacs.sh`` for the Orthancs).
Plain TCP (``XDS_TLS=off``) stays the default, with a warning.

A service that exits is started again after a delay (1 s, doubling with each crash to at most 60 s; back
to 1 s once it had run :data:`STABLE_AFTER` seconds), and its crash count is logged: one failing listener
no longer takes the registry down with it.  Ctrl-C / SIGTERM stops everything, and the Orthancs it
started.  The children die with the supervisor even when it is killed (``kill -9``, OOM killer): each
is started with ``PR_SET_PDEATHSIG`` = SIGTERM, so the kernel sends it its ordinary stop signal (gunicorn's
arbiter then stops its workers, which also leave by themselves once their parent changes).  The Orthancs
``local-pacs.sh`` starts are daemons of their own and outlive a killed supervisor.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from config.http_worker import worker_arguments

if TYPE_CHECKING:
    from atna.pki_demo import DemoPki

BASE_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PACS_SCRIPT = str(BASE_DIR / "imaging_source" / "pacs" / "local-pacs.sh")
COLOURS = ["\033[36m", "\033[33m", "\033[35m", "\033[32m", "\033[34m", "\033[31m"]
RESET = "\033[0m"
#: How long the demo's domain web server may take to answer before start-up is given up.
START_TIMEOUT = 90.0


@dataclass
class Service:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] | None = None  # added to (not replacing) the supervisor's environment
    colour: str = ""
    crashes: int = 0  # exits since the supervisor started it first
    consecutive: int = 0  # crashes without a stable run (STABLE_AFTER) between them: the backoff's exponent
    started_at: float = 0.0  # time.monotonic() of the current process's start
    restart_at: float | None = None  # when it exited: time.monotonic() at which it is started again


#: Delay before restarting a service after its n-th consecutive crash: RESTART_BASE * 2**(n-1) s, at most
#: RESTART_CAP.  A service that cannot start (its port taken, its database away) is tried again within
#: a minute without a tight loop filling the log.
RESTART_BASE = 1.0
RESTART_CAP = 60.0
#: A service that ran at least this long before exiting was stable: its next delay is RESTART_BASE again.
STABLE_AFTER = 60.0
#: How often the watcher looks for exited services.
WATCH_INTERVAL = 0.2


def restart_delay(consecutive: int, base: float = RESTART_BASE, cap: float = RESTART_CAP) -> float:
    """Seconds to wait before the restart that follows the ``consecutive``-th crash in a row (1, 2, 3, ...)."""
    return float(min(cap, base * 2 ** max(0, min(consecutive - 1, 30))))


#: <linux/prctl.h>
_PR_SET_PDEATHSIG = 1


def die_with_supervisor() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive SIGTERM when the supervisor dies (Linux), else None.

    The kernel sends the signal when the *thread* that started the child ends, so children are started
    only from threads that live as long as the supervisor (the main thread and the watcher).  If the
    supervisor died between fork and prctl, the child would miss the signal: it checks its parent and
    leaves at once.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    option, signum = ctypes.c_int(_PR_SET_PDEATHSIG), ctypes.c_ulong(int(signal.SIGTERM))

    def preexec() -> None:
        prctl(option, signum)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


#: glibc malloc for the web workers: keep freed heap memory instead of returning it to the
#: kernel after every request.  A streamed RAD-69 answer allocates ~40 buffers of 1 MiB
#: (received chunks, joined writes); with glibc's defaults they are trimmed after each
#: response and faulted back in on the next (~5,600 page faults and ~8 ms of system time
#: per 500-instance study, measured).  Ignored by other allocators; an operator's own
#: setting wins.
WEB_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(4 * 1024 * 1024), "MALLOC_TRIM_THRESHOLD_": str(64 * 1024 * 1024)}


def _settings():  # type: ignore[no-untyped-def]
    """Load (and so validate) every setting before anything starts."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(BASE_DIR))
    from django.conf import settings

    return settings


def node_services(port: int, workers: int, kinds: Iterable[str], *, prefix: str = "",
                  env: dict[str, str] | None = None) -> list[Service]:
    """The processes of one node: gunicorn on ``port`` and the listeners / worker named in ``kinds``."""
    web = [
        PYTHON, "-m", "gunicorn", "config.wsgi:application",
        "--bind", f"127.0.0.1:{port}", *worker_arguments(workers, _settings().XDS_HTTP_THREADS),
        # gunicorn 27 opens a control socket at a fixed per-user path; several servers on one
        # machine (tests, benchmarks) would fight over it, and we do not use it.
        "--no-control-socket",
        "--timeout", "3600", "--graceful-timeout", "10", "--access-logfile", "-",
        # The path without its query string (%(U)s, not %(r)s): a query carries patient ids (portal
        # /patient/?id=, WADO's studyUID=); no PHI in operational logs (issue 13).
        "--access-logformat", 'http %(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms',
        # ... and UIDs in the path (/manifests/.../series/<UID>/thumbnail.png) as their log references.
        "--logger-class", "config.access_log.PhiSafeLogger",
    ]
    extra = dict(env or {})
    malloc = {k: v for k, v in WEB_MALLOC_ENV.items() if k not in os.environ}
    commands = {"hl7": "xds_hl7_listener", "dicom": "xds_dicom_listener", "jobs": "xds_jobs_worker"}
    out = [Service(f"{prefix}web", web, env={**extra, **malloc})]
    manage = [PYTHON, str(BASE_DIR / "manage.py")]
    out += [Service(f"{prefix}{kind}", manage + [commands[kind]], env=extra) for kind in kinds if kind in commands]
    return out


def services() -> list[Service]:
    """The single node's services, from this process's settings."""
    settings = _settings()
    kinds = [kind for kind, wanted in (("hl7", settings.XDS_RUN_HL7), ("dicom", settings.XDS_RUN_DICOM),
                                       ("jobs", settings.XDS_RUN_JOBS)) if wanted]
    return node_services(settings.PORT, settings.WEB_CONCURRENCY, kinds)


def say(message: str) -> None:
    print(f"supervisor | {message}", flush=True)


def _pump(stream: Any, label: str, colour: str) -> None:
    prefix = f"{colour}{label:>8}{RESET} | " if sys.stdout.isatty() else f"{label:>8} | "
    for raw in iter(stream.readline, b""):
        sys.stdout.write(prefix + raw.decode("utf-8", "replace"))
        sys.stdout.flush()


def _run_step(argv: list[str], what: str, env: dict[str, str] | None = None, label: str = "setup") -> None:
    """Run one set-up command to its end, its output prefixed; exit the supervisor if it fails."""
    say(what)
    process = subprocess.Popen(argv, cwd=BASE_DIR, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, preexec_fn=die_with_supervisor())
    assert process.stdout
    _pump(process.stdout, label, "")
    code = process.wait()
    if code != 0:
        say(f"{what} failed (exit {code})")
        raise SystemExit(code)


def _parallel(steps: list[tuple[list[str], str, dict[str, str], str]]) -> None:
    """Run set-up commands side by side (one per site); the first failure stops ``make run``."""
    with ThreadPoolExecutor(max_workers=max(1, len(steps))) as pool:
        for future in [pool.submit(_run_step, *step) for step in steps]:
            future.result()


class Supervisor:
    """Starts services, restarts those that exit (with backoff), and stops them all (and the Orthancs it started).

    A watcher thread looks at the services every :data:`WATCH_INTERVAL` seconds (see :meth:`check`); the
    main thread meanwhile runs the set-up steps, then :meth:`wait` s for Ctrl-C / SIGTERM.
    """

    def __init__(self, *, handle_signals: bool = True) -> None:
        self.running: list[Service] = []
        self.stopping = threading.Event()
        self.started_pacs: list[dict[str, str]] = []
        self._lock = threading.Lock()  # the services' processes: replaced by the watcher, stopped by stop()
        self._watcher: threading.Thread | None = None
        if handle_signals:
            signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
            signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())

    def start_pacs(self, env: dict[str, str], label: str) -> None:
        full = {**os.environ, **env}
        already = subprocess.run(["bash", PACS_SCRIPT, "status"], cwd=BASE_DIR, env=full,
                                 capture_output=True).returncode == 0
        _run_step(["bash", PACS_SCRIPT, "start"], f"starting {label}", env, label=label)
        if not already:
            self.started_pacs.append(env)

    def start(self, services: list[Service]) -> None:
        with self._lock:
            for service in services:
                service.colour = COLOURS[len(self.running) % len(COLOURS)]
                self._spawn(service)
                self.running.append(service)
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="supervisor-watcher", daemon=True)
            self._watcher.start()

    def _spawn(self, service: Service) -> None:
        # Its own session: Ctrl-C in the terminal reaches the supervisor only, which stops the services in
        # order; stop() signals each service's whole process group.
        service.process = subprocess.Popen(
            service.argv, cwd=BASE_DIR, env={**os.environ, **(service.env or {})}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_supervisor())
        service.started_at = time.monotonic()
        threading.Thread(target=_pump, args=(service.process.stdout, service.name, service.colour),
                         daemon=True).start()

    def _watch(self) -> None:
        while not self.stopping.wait(WATCH_INTERVAL):
            try:
                self.check()
            except Exception as exc:  # noqa: BLE001 - the watcher must outlive one failed restart
                say(f"watcher: {type(exc).__name__}: {exc}")

    def check(self) -> None:
        """One look: note each service that exited (crash count, delay) and start those whose delay is over."""
        with self._lock:
            if self.stopping.is_set():
                return
            now = time.monotonic()
            for service in self.running:
                assert service.process
                if service.restart_at is None:
                    code = service.process.poll()
                    if code is None:
                        continue
                    ran = now - service.started_at
                    service.crashes += 1
                    service.consecutive = 1 if ran >= STABLE_AFTER else service.consecutive + 1
                    delay = restart_delay(service.consecutive)
                    service.restart_at = now + delay
                    say(f"{service.name} exited with {code} after {ran:.1f}s (crash {service.crashes}); "
                        f"restarting in {delay:g}s")
                elif now >= service.restart_at:
                    service.restart_at = None
                    self._spawn(service)
                    say(f"{service.name} restarted (crash {service.crashes}, pid {service.process.pid})")

    def wait(self) -> int:
        """Until Ctrl-C / SIGTERM (services that exit meanwhile are restarted); the exit status for ``make run``."""
        while not self.stopping.wait(0.5):
            pass
        return 0

    def stop(self) -> None:
        self.stopping.set()
        with self._lock:  # no restart from here on
            for service in self.running:
                if service.process and service.process.poll() is None:
                    _signal_group(service.process.pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            for service in self.running:
                assert service.process
                try:
                    service.process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    _signal_group(service.process.pid, signal.SIGKILL)
                    service.process.wait()
        for env in self.started_pacs:
            subprocess.run(["bash", PACS_SCRIPT, "stop"], cwd=BASE_DIR, env={**os.environ, **env})
        say("stopped")


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:  # already gone (its group with it)
        pass


def _answers(url: str, context: ssl.SSLContext | None = None) -> bool:
    """Whether ``url`` answers 200; ``context``: over TLS, presenting that context's certificate."""
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310 - our loopback URL
            return bool(response.status == 200)
    except OSError:
        return False


def _wait_for(url: str, supervisor: Supervisor, timeout: float = START_TIMEOUT,
              context: ssl.SSLContext | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not _answers(url, context):
        if supervisor.stopping.is_set() or time.monotonic() > deadline:
            raise SystemExit(f"supervisor | {url} did not answer")
        time.sleep(0.2)


def _ensure_postgres_database(url: str) -> None:
    """Create a demo site's PostgreSQL database if it does not exist (each site has its own)."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as connection:
        if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


#: The single node's name in the demo PKI (``XDS_DEMO=false XDS_TLS=demo``).
SINGLE_NODE = "node"


def single_node_tls(settings: Any) -> dict[str, str]:
    """``XDS_DEMO=false XDS_TLS=demo``: the demo PKI with one node certificate, this node's TLS environment, and
    its identity plan (itself with every role, the role certificates with theirs) written beside the PKI."""
    from atna.pki_demo import DEMO_ROLES, ensure_demo_pki
    from demo.sites import DemoIdentity, tls_env
    from xds_core.identity import Role

    if settings.XDS_TLS != "demo":
        return {}
    pki, issued = ensure_demo_pki(Path(settings.XDS_PKI_DIR), (SINGLE_NODE,))
    say(f"demo PKI {_shown(pki.directory)}: " + (f"issued {', '.join(issued)}" if issued else "kept as it was"))
    rows = [DemoIdentity(SINGLE_NODE, pki.node(SINGLE_NODE).cert, tuple(Role), (), "this node (demo)")]
    rows += [DemoIdentity(f"demo-{role.value}", pki.client(role).cert, (role,), (),
                          f"demo client certificate of the {role.value} role") for role in DEMO_ROLES]
    plan = pki.directory / "single-node-identities.json"
    plan.write_text(json.dumps({SINGLE_NODE: [row.as_json() for row in rows]}, indent=2))
    return {**tls_env(pki, SINGLE_NODE), "XDS_DEMO_IDENTITIES": str(plan)}


def run_single() -> int:
    settings = _settings()
    tls = single_node_tls(settings)
    # Every step and service of this node inherits it (children get {**os.environ, **their env}).
    os.environ.update({k: v for k, v in tls.items() if k != "XDS_DEMO_IDENTITIES"})
    if settings.XDS_TLS == "off":
        say("XDS_TLS=off: every listener speaks plain TCP, for local development only (SECURITY.md)")
    supervisor = Supervisor()
    try:
        if settings.XDS_RUN_PACS:
            supervisor.start_pacs({}, "pacs")
        _run_step([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], "migrating the database")
        if tls:
            _run_step([PYTHON, "manage.py", "xds_demo_identities", SINGLE_NODE, "--plan", tls["XDS_DEMO_IDENTITIES"]],
                      "the node identity table")
        _run_step([PYTHON, "manage.py", "xds_repository_reconcile"],
                  "reconciling repository documents left by an interrupted run")
        _run_step([PYTHON, "manage.py", "xds_audit", "schedule"], "the audit trail's jobs (atna.trail_jobs)")
        supervisor.start(services())
        scheme = "https" if settings.XDS_TLS != "off" else "http"
        say(f"started {', '.join(s.name for s in supervisor.running)}; endpoints at "
            f"{scheme}://127.0.0.1:{settings.PORT}/xds/{{registry,repository,imaging-source}}; Ctrl-C stops "
            "everything")
        return supervisor.wait()
    finally:
        supervisor.stop()


#: Written (mode 0600, no password in it) once the demo's portal users exist: later starts do not make a new
#: password, and the banner says the one printed at first start still holds.
PORTAL_USERS_MARKER = "portal-users"
#: The demo user the banner invites to log in (Hospital B's clinician: the issue's walk).
PORTAL_LOGIN_USER = "clinician-b"


@dataclass(frozen=True)
class DemoLogin:
    """The demo portal users' password for this start: the environment the xds_demo_load runs get, and what
    the banner says about it."""

    env: dict[str, str]
    text: str
    generated: bool = False


def demo_login(demo_dir: Path, demo_password: str) -> DemoLogin:
    """``DEMO_PASSWORD`` when set (it reaches xds_demo_load through the environment); else a new password at
    first start (the users do not exist yet: no marker), printed once; else the one printed then still holds."""
    if demo_password:
        return DemoLogin({}, f"log in as {PORTAL_LOGIN_USER} / the password in DEMO_PASSWORD")
    if not (demo_dir / PORTAL_USERS_MARKER).exists():
        password = secrets.token_urlsafe(12)
        return DemoLogin({"DEMO_PASSWORD": password}, f"log in as {PORTAL_LOGIN_USER} / {password} "
                         "(printed once; DEMO_PASSWORD sets it)", generated=True)
    return DemoLogin({}, f"log in as {PORTAL_LOGIN_USER}, password: as printed at first start "
                         "(DEMO_PASSWORD=... resets it)")


def mark_portal_users(demo_dir: Path) -> None:
    """Note that the demo's portal users exist (the marker holds no password)."""
    marker = demo_dir / PORTAL_USERS_MARKER
    fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("The demo portal users exist; their password was printed at first start (DEMO_PASSWORD resets "
                 "it).\n")
    marker.chmod(0o600)


def demo_pki(settings: Any) -> DemoPki | None:
    """``XDS_TLS=demo``: the demo PKI under ``XDS_PKI_DIR``, created or completed now (atna.pki_demo); None
    when the demo runs in plain TCP (``XDS_TLS=off``, the local-development default: a warning says so)."""
    from atna.pki_demo import DEMO_NODES, ensure_demo_pki

    if settings.XDS_TLS == "off":
        say("XDS_TLS=off: every listener speaks plain TCP, for local development only (XDS_TLS=demo: TLS with "
            "a demo PKI; SECURITY.md)")
        return None
    if settings.XDS_TLS != "demo":
        raise SystemExit("supervisor | the demo affinity domain makes its own certificates: XDS_TLS=demo (or off); "
                         "XDS_TLS=on is for a node run with its own (XDS_DEMO=false)")
    pki, issued = ensure_demo_pki(Path(settings.XDS_PKI_DIR), DEMO_NODES)
    say(f"demo PKI {_shown(pki.directory)}: " + (f"issued {', '.join(issued)}" if issued else "kept as it was"))
    return pki


def site_client_context(pki: DemoPki | None, site_key: str) -> ssl.SSLContext | None:
    """The TLS client context of a demo site's node certificate (None without a PKI: plain HTTP)."""
    if pki is None:
        return None
    from xds_core.tls import TlsSettings, client_context

    node = pki.node(site_key)
    return client_context(TlsSettings(enabled=True, cert=str(node.cert), key=str(node.key), ca=(str(pki.ca.cert),)))


def run_demo() -> int:
    """The two-hospital affinity domain; serving within ~30 s of a warm start (everything installed)."""
    from demo.sites import demo_identities, demo_sites, endpoint_directory, write_env_files
    from demo.studies import B_NIST, NIST_PATIENT, NIST_STUDY_UID, SCHEDULED_EXAMPLE, affinity_cx

    began = time.monotonic()
    settings = _settings()
    database_url = os.environ.get("DATABASE_URL", "")
    pki = demo_pki(settings)
    sites = demo_sites(settings, database_url, pki)
    demo_dir = Path(settings.VAR_DIR) / "demo"
    env_files = write_env_files(sites, demo_dir)
    endpoints_file = demo_dir / "endpoints.json"
    endpoints_file.write_text(json.dumps(endpoint_directory(sites), indent=2))
    identities_file = demo_dir / "identities.json"
    if pki is not None:
        identities_file.write_text(json.dumps({key: [row.as_json() for row in rows] for key, rows
                                               in demo_identities(sites, pki).items()}, indent=2))
    # The site's file wins over the environment (config.env.apply_env_file): each process is its site.
    site_env = {site.key: {"XDS_ENV_FILE": str(env_files[site.key])} for site in sites}
    if database_url.startswith(("postgres://", "postgresql://")):
        for site in sites:
            _ensure_postgres_database(site.env["DATABASE_URL"])
    hospitals = [site for site in sites if site.is_hospital]
    domain = next(site for site in sites if site.key == "domain")
    manage = [PYTHON, "manage.py"]
    login = demo_login(demo_dir, settings.DEMO_PASSWORD)
    supervisor = Supervisor()
    try:
        with ThreadPoolExecutor(max_workers=len(hospitals)) as pool:
            for future in [pool.submit(supervisor.start_pacs, h.pacs.script_env(h), f"{h.key[-1]}-pacs")
                           for h in hospitals if h.pacs]:
                future.result()
        _parallel([(manage + ["migrate", "--noinput", "-v", "0"], f"migrating {site.key}'s database",
                    site_env[site.key], f"{site.key[-1] if site.is_hospital else 'dom'}-setup") for site in sites])
        if pki is not None:  # before any listener starts: the first call between nodes is already known
            _parallel([(manage + ["xds_demo_identities", site.key, "--plan", str(identities_file)],
                        f"{site.key}'s node identity table", site_env[site.key],
                        f"{site.key[-1] if site.is_hospital else 'dom'}-setup") for site in sites])
        _run_step(manage + ["xds_repository_reconcile"], "reconciling the domain repository", site_env["domain"],
                  "dom-setup")
        _parallel([(manage + ["xds_audit", "schedule"], f"{site.key}'s audit trail jobs", site_env[site.key],
                    f"{site.key[-1] if site.is_hospital else 'dom'}-setup") for site in sites])
        for site in sites:
            label = "dom-" if site.key == "domain" else f"{site.key[-1]}-"
            workers = int(site.env["WEB_CONCURRENCY"]) if site.is_hospital else settings.WEB_CONCURRENCY
            supervisor.start(node_services(site.http_port, workers, site.services, prefix=label,
                                           env=site_env[site.key]))
        # Readiness over TLS is checked as the site itself would call it: with its own node certificate.
        _wait_for(f"{domain.base_url}/xds/registry?wsdl", supervisor, context=site_client_context(pki, domain.key))
        _run_step(manage + ["xds_demo_load", "domain"], "demo patients into the registry",
                  {**site_env["domain"], **login.env}, "dom-demo")
        for hospital in hospitals:
            _wait_for(f"{hospital.base_url}/xds/imaging-source?wsdl", supervisor,
                      context=site_client_context(pki, hospital.key))
        _parallel([(manage + ["xds_demo_load", h.key, "--endpoints", str(endpoints_file)],
                    f"demo studies of {h.title}: its PACS, then RAD-68", {**site_env[h.key], **login.env},
                    f"{h.key[-1]}-demo") for h in hospitals])
        mark_portal_users(demo_dir)
        b = next(h for h in hospitals if h.key == "hospital-b")
        scheduled, modality = SCHEDULED_EXAMPLE
        print(banner(sites, env_files, affinity_cx(NIST_PATIENT.affinity_id), NIST_STUDY_UID, b,
                     B_NIST.local_cx(), B_NIST.local_id, B_NIST.issuer, time.monotonic() - began,
                     scheduled=(scheduled.local_id, scheduled.issuer, modality), portal_login=login.text, pki=pki),
              flush=True)
        return supervisor.wait()
    finally:
        supervisor.stop()


def banner(sites: list[Any], env_files: dict[str, Path], affinity_patient: str, study_uid: str, importer: Any,
           local_patient: str, local_id: str, issuer: str, seconds: float,
           scheduled: tuple[str, str, str] | None = None, portal_login: str = "", pki: DemoPki | None = None) -> str:
    """What ``make run`` prints once the demo serves: every address, and the commands to try (and, with a demo
    PKI, how to present its client certificates)."""
    python = _shown(Path(PYTHON)) if Path(PYTHON).is_relative_to(BASE_DIR) else PYTHON
    lines = ["", f"XDS-I.b demo affinity domain serving ({seconds:.0f}s). Ctrl-C stops everything.", ""]
    if portal_login:
        lines += [f"Portal: {importer.base_url}/  {portal_login}", ""]
    for site in sites:
        lines.append(f"{site.title}   (settings: {_shown(env_files[site.key])})")
        lines.append(f"  Portal               {site.base_url}/   (health: {site.base_url}/healthz)")
        if site.key == "domain":
            lines += [f"  Document Registry    {site.base_url}/xds/registry     (ITI-18, ITI-42; ?wsdl)",
                      f"  Document Repository  {site.base_url}/xds/repository   (ITI-41, ITI-43) "
                      f"repositoryUniqueId {site.env['XDS_REPOSITORY_UNIQUE_ID']}",
                      f"  Patient Identity Feed mllp://127.0.0.1:{site.env['HL7_PORT']}  (ITI-8)",
                      f"  Admin                {site.base_url}/admin/"]
        else:
            lines += [f"  Imaging Document Source  {site.base_url}/xds/imaging-source  (RAD-69) "
                      f"Retrieve Location UID {site.imaging_source_id}",
                      f"  DICOM listener           {site.dicom_ae_title}@127.0.0.1:{site.dicom_port}  (C-STORE, MPPS)",
                      f"  Orthanc PACS             {site.pacs.ae_title}@127.0.0.1:{site.pacs.dicom_port}  "
                      f"{site.pacs.http_url}/  DICOMweb {site.pacs.dicomweb_url}"]
    b_env = _shown(env_files[importer.key])
    lines += ["", f"Import Hospital A's study into {importer.title}'s PACS, as a prior of its own patient {local_id}:",
              f"  XDS_ENV_FILE={b_env} {python} manage.py xds_fetch --patient '{affinity_patient}' "
              f"--study {study_uid} --to-pacs {importer.pacs.ae_title}@127.0.0.1:{importer.pacs.dicom_port} "
              f"--local-patient '{local_patient}'",
              f"Or let prefetch do it: an MPPS IN PROGRESS (MR) for {local_id} reaching {importer.title}:",
              f"  XDS_ENV_FILE={b_env} {python} manage.py xds_demo_mpps --patient {local_id} --issuer {issuer} "
              f"--modality MR --to {importer.dicom_ae_title}@127.0.0.1:{importer.dicom_port}"]
    if scheduled:
        patient, patient_issuer, modality = scheduled
        lines += [f"Or before the examination: a {modality} for {patient} on {importer.title}'s worklist (prefetch of "
                  f"its priors at other sites within {importer.env.get('DICOM_WORKLIST_POLL', '60')}s):",
                  f"  XDS_ENV_FILE={b_env} {python} manage.py xds_demo_schedule --patient {patient} "
                  f"--issuer {patient_issuer} --modality {modality}"]
    if pki is not None:
        lines += tls_lines(pki, sites)
    return "\n".join([*lines, ""])


def tls_lines(pki: DemoPki, sites: list[Any]) -> list[str]:
    """The banner's TLS part: every listener wants a client certificate of the demo PKI; how to present one."""
    from atna.pki_demo import DEMO_ROLES

    domain = next(site for site in sites if site.key == "domain")
    consumer, admin = pki.client("consumer"), pki.client("admin")
    ca = _shown(pki.ca.cert)
    roles = ", ".join(role.value for role in DEMO_ROLES)
    return ["", f"TLS (XDS_TLS=demo): every listener (HTTPS, MLLP, DICOM, Orthanc) requires a client certificate of "
                f"the demo PKI {_shown(pki.directory)}; ours admit only those their identity table knows.",
            f"  role certificates ({roles}): {_shown(consumer.cert.parent)}/<role>.crt and .key; the CA: {ca}",
            f"  curl --cert {_shown(consumer.cert)} --key {_shown(consumer.key)} --cacert {ca} "
            f"'{domain.base_url}/xds/registry?wsdl'",
            f"  a browser: import {_shown(admin.p12)} (password in {_shown(admin.p12_password_file)}) and trust {ca}",
            f"  more: {_shown(Path(PYTHON)) if Path(PYTHON).is_relative_to(BASE_DIR) else PYTHON} manage.py xds_pki "
            "issue --role consumer --name NAME --out DIR --p12 --register (with a site's XDS_ENV_FILE)"]


def main() -> int:
    os.chdir(BASE_DIR)
    settings = _settings()
    try:
        return run_demo() if settings.XDS_DEMO else run_single()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


if __name__ == "__main__":
    sys.exit(main())
