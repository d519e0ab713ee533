"""`make run`'s supervisor: which services it starts; restarts with backoff; children that die with it."""

from __future__ import annotations

import glob
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from config.supervisor import _answers, services
from tests.faults.figures import report
from tests.faults.processes import LoggedProcess


def test_the_job_worker_is_a_service_unless_turned_off(settings) -> None:
    settings.XDS_RUN_HL7 = settings.XDS_RUN_DICOM = settings.XDS_RUN_JOBS = True
    jobs = {s.name: s for s in services()}["jobs"]
    assert jobs.argv[-1] == "xds_jobs_worker"
    settings.XDS_RUN_JOBS = False
    assert [s.name for s in services()] == ["web", "hl7", "dicom"]


def test_a_demo_site_runs_its_own_processes_with_its_env_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from config.supervisor import node_services

    running = node_services(8002, 2, ("web", "dicom", "jobs"), prefix="b-",
                            env={"XDS_ENV_FILE": str(tmp_path / "hospital-b.env")})
    assert [s.name for s in running] == ["b-web", "b-dicom", "b-jobs"]
    assert all(s.env and s.env["XDS_ENV_FILE"].endswith("hospital-b.env") for s in running)
    assert "127.0.0.1:8002" in running[0].argv


def test_the_banner_prints_every_address_and_the_import_line(settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from config.supervisor import banner
    from demo.sites import demo_sites, write_env_files
    from demo.studies import B_NIST, NIST_PATIENT, NIST_STUDY_UID, affinity_cx

    settings.VAR_DIR = tmp_path
    sites = demo_sites(settings)
    files = write_env_files(sites, tmp_path / "demo")
    b = sites[2]
    text = banner(sites, files, affinity_cx(NIST_PATIENT.affinity_id), NIST_STUDY_UID, b, B_NIST.local_cx(),
                  B_NIST.local_id, B_NIST.issuer, 12.0)
    for site in sites:
        assert site.base_url in text
    for hospital in sites[1:]:
        assert f"{hospital.dicom_ae_title}@127.0.0.1:{hospital.dicom_port}" in text
        assert f"{hospital.pacs.ae_title}@127.0.0.1:{hospital.pacs.dicom_port}" in text
        assert hospital.imaging_source_id in text
    (fetch,) = [line for line in text.splitlines() if "xds_fetch" in line]
    assert f"XDS_ENV_FILE={files['hospital-b']}" in fetch or "hospital-b.env" in fetch
    assert f"--study {NIST_STUDY_UID}" in fetch and f"--local-patient '{B_NIST.local_cx()}'" in fetch
    assert f"--to-pacs {b.pacs.ae_title}@127.0.0.1:{b.pacs.dicom_port}" in fetch
    assert "xds_demo_mpps" in text


# --- restarts with backoff, and children that die with the supervisor (issue 15) ---------------------------------


def test_the_restart_delay_doubles_from_one_second_to_a_one_minute_cap() -> None:
    from config.supervisor import restart_delay

    assert [restart_delay(n) for n in (1, 2, 3, 4, 5, 6, 7, 8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert restart_delay(10_000) == 60  # no overflow after a long crash loop


def test_a_service_that_exits_is_restarted_with_backoff_and_its_crashes_counted(capsys) -> None:
    """Real processes under an in-process supervisor: one crashes at once every time, the other keeps running."""
    from config.supervisor import Service, Supervisor

    supervisor = Supervisor(handle_signals=False)
    crashing = Service("crashing", [sys.executable, "-c", "import sys; print('up', flush=True); sys.exit(3)"])
    steady = Service("steady", [sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        supervisor.start([crashing, steady])
        steady_pid = steady.process.pid
        deadline = time.monotonic() + 30
        while crashing.crashes < 3 and time.monotonic() < deadline:  # delays 1 s, then 2 s
            time.sleep(0.1)
        assert crashing.crashes >= 3
        assert steady.process.pid == steady_pid and steady.process.poll() is None and steady.crashes == 0
    finally:
        supervisor.stop()
    out = capsys.readouterr().out
    assert "crashing exited with 3 after" in out
    assert "(crash 1); restarting in 1s" in out and "(crash 2); restarting in 2s" in out
    assert "crashing restarted (crash 1, pid" in out and "crashing restarted (crash 2, pid" in out
    assert out.count("crashing |") >= 3  # its output, once per start
    assert steady.process.returncode is not None  # stop() ended the steady one too
    assert out.rstrip().endswith("supervisor | stopped")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children of each of its threads, recursively)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for children in glob.glob(f"/proc/{parent}/task/*/children"):
            try:
                kids = {int(k) for k in open(children).read().split()}
            except OSError:
                continue
            todo += list(kids - found)
            found |= kids
    return found


def _alive(pid: int) -> bool:
    """Running: a zombie waiting to be reaped counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _command(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the services bind: TIME_WAIT is no owner
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _until(condition, timeout: float, what: str, log: LoggedProcess) -> float:  # noqa: ANN001
    """Wait until ``condition()``; the seconds it took."""
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"{what} not within {timeout}s:\n" + "\n".join(log.lines[-60:]))
        time.sleep(0.1)
    return time.monotonic() - began


def _single_node(tmp_path: Path) -> tuple[LoggedProcess, dict[str, int]]:
    """`make run` in single-node shape (no PACS) on free ports, with its own var directory and SQLite file;
    returns once every service answers."""
    ports = {"web": _free_port(), "hl7": _free_port(), "dicom": _free_port()}
    env = {key: value for key, value in os.environ.items() if key not in ("XDS_ENV_FILE", "DJANGO_SETTINGS_MODULE")}
    env.update({"XDS_DEMO": "false", "XDS_RUN_PACS": "false", "XDS_VAR_DIR": str(tmp_path),
                "DATABASE_URL": f"sqlite:///{tmp_path / 'xds.sqlite3'}", "PORT": str(ports["web"]),
                "HL7_PORT": str(ports["hl7"]), "DICOM_PORT": str(ports["dicom"]), "WEB_CONCURRENCY": "2",
                "DICOM_STABLE_POLL": "0", "DICOMWEB_URL": "", "LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"})
    supervisor = LoggedProcess.start([sys.executable, "-m", "config.supervisor"], env)
    supervisor.wait_for("supervisor | started web, hl7, dicom, jobs", timeout=180)
    url = f"http://127.0.0.1:{ports['web']}/xds/registry?wsdl"
    _until(lambda: _answers(url), 120, "the web server", supervisor)
    _until(lambda: _accepts(ports["hl7"]) and _accepts(ports["dicom"]), 60, "the listeners", supervisor)
    supervisor.wait_for("jobs worker", timeout=60)
    return supervisor, ports


def _service_pid(supervisor: LoggedProcess, command: str) -> int:
    [pid] = [p for p in _children(supervisor.process.pid) if command in _command(p)]
    return pid


def _children(pid: int) -> set[int]:
    kids: set[int] = set()
    for children in glob.glob(f"/proc/{pid}/task/*/children"):
        kids |= {int(k) for k in open(children).read().split()}
    return kids


@pytest.mark.slow
@pytest.mark.fault
def test_a_killed_service_comes_back_and_sigterm_still_stops_every_service(tmp_path) -> None:
    supervisor, ports = _single_node(tmp_path)
    try:
        hl7 = _service_pid(supervisor, "xds_hl7_listener")
        arbiter = _service_pid(supervisor, "gunicorn")
        workers = _children(arbiter)
        assert workers, "gunicorn has no workers"
        mark = supervisor.mark()
        os.kill(hl7, signal.SIGKILL)
        line = supervisor.wait_for("hl7 exited with -9", since=mark, timeout=30)
        assert "(crash 1); restarting in 1s" in line
        supervisor.wait_for("hl7 restarted (crash 1, pid", since=mark, timeout=30)
        hl7_back = _until(lambda: _accepts(ports["hl7"]), 60, "the restarted HL7 listener", supervisor)
        assert _service_pid(supervisor, "xds_hl7_listener") != hl7

        # gunicorn's arbiter killed: its workers see their parent change and leave (freeing the port the
        # restarted arbiter binds); the web answers again.
        mark = supervisor.mark()
        began = time.monotonic()
        os.kill(arbiter, signal.SIGKILL)
        supervisor.wait_for("web exited with -9", since=mark, timeout=30)
        workers_gone = _until(lambda: not any(_alive(w) for w in workers), 30, "the orphaned workers", supervisor)
        url = f"http://127.0.0.1:{ports['web']}/xds/registry?wsdl"
        _until(lambda: _answers(url), 120, "the restarted web server", supervisor)
        web_back = time.monotonic() - began
        assert supervisor.process.poll() is None, supervisor.text
        every = _descendants(supervisor.process.pid)
    finally:
        supervisor.process.send_signal(signal.SIGTERM)
        code = supervisor.process.wait(60)
    assert code == 0, supervisor.text
    assert "supervisor | stopped" in supervisor.text
    _until(lambda: not any(_alive(p) for p in every), 10, "every service stopped", supervisor)
    report("supervisor-restart", hl7_seconds_back=hl7_back, gunicorn_orphan_workers_gone_s=workers_gone,
           web_seconds_back=web_back)


@pytest.mark.slow
@pytest.mark.fault
def test_kill_9_of_the_supervisor_leaves_no_service_running_and_frees_the_ports(tmp_path) -> None:
    supervisor, ports = _single_node(tmp_path)
    every = _descendants(supervisor.process.pid)
    services = _children(supervisor.process.pid)
    assert len(services) == 4 and len(every) >= 6, [_command(p) for p in every]  # + gunicorn's two workers
    began = time.monotonic()
    try:
        supervisor.process.kill()
        supervisor.process.wait(10)
        gone = _until(lambda: not any(_alive(p) for p in every), 30, "every child gone", supervisor)
        freed = _until(lambda: all(_bindable(port) for port in ports.values()), 30, "the ports freed", supervisor)
    finally:
        for pid in every:  # whatever survived a failed test: not left running on the machine
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert gone < 10 and time.monotonic() - began < 15, (gone, freed)
    report("supervisor-kill-9", children=len(every), seconds_all_gone=gone, seconds_ports_free=freed)
