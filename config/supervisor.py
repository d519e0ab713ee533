"""`make run`'s process supervisor: one command, several processes.

Starts every service of the suite, prefixes their output with the service
name, and stops them all on Ctrl-C / SIGTERM (or when one of them dies).
Services:

- ``web``    gunicorn serving the three SOAP endpoints and admin (sync workers = cores);
- ``hl7``    the ITI-8 patient identity feed (MLLP);
- ``dicom``  the Imaging Document Source's DICOM listener (C-STORE + MPPS SCP, stable-study watcher);
- ``jobs``   the job worker (``manage.py xds_jobs_worker``): runs the queued jobs, e.g. the publications
  MPPS COMPLETED and stable studies queue;
- the local Orthanc PACS is started first (and demo studies loaded) unless ``XDS_RUN_PACS=false``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
COLOURS = ["\033[36m", "\033[33m", "\033[35m", "\033[32m", "\033[34m"]
RESET = "\033[0m"


@dataclass
class Service:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] | None = None  # added to (not replacing) the supervisor's environment


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


def services() -> list[Service]:
    settings = _settings()
    port = str(settings.PORT)
    workers = str(settings.WEB_CONCURRENCY)
    web = [
        PYTHON, "-m", "gunicorn", "config.wsgi:application",
        "--bind", f"127.0.0.1:{port}", "--workers", workers, "--worker-class", "sync",
        # gunicorn 27 opens a control socket at a fixed per-user path; several servers on one
        # machine (tests, benchmarks) would fight over it, and we do not use it.
        "--no-control-socket",
        "--timeout", "3600", "--graceful-timeout", "10", "--access-logfile", "-",
        "--access-logformat", 'http %(h)s "%(r)s" %(s)s %(B)s %(M)sms',
    ]
    out = [Service("web", web, env={k: v for k, v in WEB_MALLOC_ENV.items() if k not in os.environ})]
    manage = [PYTHON, str(BASE_DIR / "manage.py")]
    if settings.XDS_RUN_HL7:
        out.append(Service("hl7", manage + ["xds_hl7_listener"]))
    if settings.XDS_RUN_DICOM:
        out.append(Service("dicom", manage + ["xds_dicom_listener"]))
    if settings.XDS_RUN_JOBS:
        out.append(Service("jobs", manage + ["xds_jobs_worker"]))
    return out


def _pump(service: Service, colour: str) -> None:
    assert service.process and service.process.stdout
    prefix = f"{colour}{service.name:>6}{RESET} | " if sys.stdout.isatty() else f"{service.name:>6} | "
    for raw in iter(service.process.stdout.readline, b""):
        sys.stdout.write(prefix + raw.decode("utf-8", "replace"))
        sys.stdout.flush()


def _run_step(argv: list[str], what: str) -> None:
    print(f"supervisor | {what}", flush=True)
    result = subprocess.run(argv, cwd=BASE_DIR)
    if result.returncode != 0:
        print(f"supervisor | {what} failed (exit {result.returncode})", flush=True)
        sys.exit(result.returncode)


def main() -> int:
    os.chdir(BASE_DIR)
    env = dict(os.environ)
    settings = _settings()
    pacs = str(BASE_DIR / "imaging_source" / "pacs" / "local-pacs.sh")
    started_pacs = False
    if settings.XDS_RUN_PACS:
        already = subprocess.run(["bash", pacs, "status"], cwd=BASE_DIR, capture_output=True).returncode == 0
        _run_step(["bash", pacs, "start"], "starting the local Orthanc PACS")
        started_pacs = not already
        _run_step(["env", f"PYTHON={PYTHON}", "bash", pacs, "load", "--demo"], "loading demo studies into the PACS")
    reconcile = [PYTHON, "manage.py", "xds_repository_reconcile"]
    _run_step(reconcile, "reconciling repository documents left by an interrupted run")

    running = services()
    stopping = threading.Event()

    def stop(*_: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for index, service in enumerate(running):
        service.process = subprocess.Popen(
            service.argv, cwd=BASE_DIR, env={**env, **(service.env or {})}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True)
        threading.Thread(target=_pump, args=(service, COLOURS[index % len(COLOURS)]), daemon=True).start()
    print(f"supervisor | started {', '.join(s.name for s in running)}; "
          f"endpoints at http://127.0.0.1:{settings.PORT}/xds/{{registry,repository,imaging-source}}; "
          "Ctrl-C stops everything", flush=True)

    exit_code = 0
    while not stopping.is_set():
        for service in running:
            assert service.process
            code = service.process.poll()
            if code is not None:
                print(f"supervisor | {service.name} exited with {code}; stopping everything", flush=True)
                exit_code = code or 1
                stopping.set()
                break
        stopping.wait(0.5)

    for service in running:
        if service.process and service.process.poll() is None:
            os.killpg(service.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for service in running:
        assert service.process
        try:
            service.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(service.process.pid, signal.SIGKILL)
    if started_pacs:
        subprocess.run(["bash", pacs, "stop"], cwd=BASE_DIR)
    print("supervisor | stopped", flush=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
