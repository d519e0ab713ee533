"""The real local PACS for the Imaging Document Source tests (imported by conftest.py).

A session fixture starts Orthanc with ``imaging_source/pacs/local-pacs.sh`` on NON-default
ports (DICOM 4243, HTTP 8043, state in ``$TMPDIR/xdsi-test-pacs``) so it never clashes with
``make run``'s PACS, loads the NIST IDS-DEPT002-a study and pydicom's sample files, and
registers this test session's own AE (its own title and an ephemeral port) as a modality, so
parallel sessions (pytest-xdist workers) each have a C-MOVE destination of their own.
Tests that need it are marked ``@pytest.mark.pacs``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from imaging_source.dicom.ae import POOL
from imaging_source.dicom.config import DicomConfig, FetchMethod, Peer

BASE_DIR = Path(__file__).resolve().parents[2]
SCRIPT = BASE_DIR / "imaging_source" / "pacs" / "local-pacs.sh"
NIST_STUDY_UID = "1.3.6.1.4.1.21367.201599.1.201604020954059"
NIST_SERIES = ("1.3.6.1.4.1.21367.201599.2.201604020954059", "1.3.6.1.4.1.21367.201599.2.201604020954059.21")
#: pydicom's examples_ybr_color.dcm (US, JPEG Baseline) as loaded by ``local-pacs.sh load``.
JPEG_PATIENT_ID = "204"


@dataclass(frozen=True)
class Pacs:
    env: dict[str, str]
    dicom_port: int
    http_port: int
    ae_title: str  # our AE title for this session, registered in Orthanc
    scp_port: int  # where our SCP must listen for this AE's C-MOVE sub-operations
    spool_root: Path  # default spool directory of configs made without one (removed at session end)

    @property
    def dicomweb_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def peer(self) -> Peer:
        return Peer("ORTHANC", "127.0.0.1", self.dicom_port)

    def config(self, method: FetchMethod = FetchMethod.C_GET, *, dicomweb: bool | None = None,
               spool_dir: Path | None = None) -> DicomConfig:
        use_web = method == FetchMethod.WADO_RS if dicomweb is None else dicomweb
        return DicomConfig(ae_title=self.ae_title, pacs=self.peer, dicomweb_url=self.dicomweb_url if use_web else "",
                           fetch_method=method, scp_host="127.0.0.1", scp_port=self.scp_port,
                           spool_dir=spool_dir or self.spool_root)

    def script(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(SCRIPT), *args], env=self.env, capture_output=True, text=True, timeout=300)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture(scope="session")
def pacs() -> Iterator[Pacs]:
    """The shared test Orthanc.  Several pytest processes (xdist workers, or two people's
    sessions) may use it at once: each registers itself under ``users/``; the last one out
    stops it, but only if a test session started it (a PACS someone started by hand stays up).
    """
    state = Path(os.environ.get("XDSI_TEST_PACS_DIR", Path(tempfile.gettempdir()) / "xdsi-test-pacs"))
    users = state.parent / "xdsi-test-pacs.users"
    users.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LOCAL_PACS_DIR": str(state), "ORTHANC_DICOM_PORT": "4243", "ORTHANC_HTTP_PORT": "8043",
           "XDSI_PORT": "11113", "PYTHON": sys.executable, "TCP_NODELAY": "1",
           "XDS_TLS": "off"}  # the shared test PACS is plain whatever the shell says (TLS: tests/faults/orthanc.py)
    scp_port = _free_port()
    ae_title = f"XDSI_T{os.getpid() % 100000}"
    info = Pacs(env, 4243, 8043, ae_title, scp_port, Path(tempfile.mkdtemp(prefix="xdsi-spool-")))
    started_by_tests = users / "started-by-tests"
    lock_path = state.parent / "xdsi-test-pacs.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if info.script("status").returncode != 0:
            started = info.script("start")
            if started.returncode != 0:
                pytest.fail(f"local PACS did not start: {started.stdout}{started.stderr}")
            started_by_tests.touch()
        (users / str(os.getpid())).touch()
        loaded = info.script("load", "--demo")
        if loaded.returncode != 0:
            pytest.fail(f"loading the PACS failed: {loaded.stdout}{loaded.stderr}")
        registered = info.script("register", ae_title.lower(), ae_title, "127.0.0.1", str(scp_port))
        if registered.returncode != 0:
            pytest.fail(f"registering {ae_title}: {registered.stderr}")
    yield info
    POOL.close()  # idle pooled associations would hold Orthanc's shutdown
    shutil.rmtree(info.spool_root, ignore_errors=True)
    subprocess.run(["curl", "-sf", "-X", "DELETE", f"{info.rest_url}/modalities/{ae_title.lower()}"],
                   capture_output=True, timeout=10)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        (users / str(os.getpid())).unlink(missing_ok=True)
        others = [p for p in users.iterdir() if p.name.isdigit() and _alive(int(p.name))]
        if not others and started_by_tests.exists():
            info.script("stop")
            started_by_tests.unlink(missing_ok=True)


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    path = tmp_path / "spool"
    path.mkdir()
    return path


__all__ = ["pacs", "spool_dir", "Pacs", "replace"]


def configure_imaging_source(settings, pacs: Pacs, method: FetchMethod, *, root_last: bool, source_id: str,  # type: ignore[no-untyped-def]
                             spool_dir: Path) -> None:
    """Point our Imaging Document Source (Django settings) at the test PACS with one fetch method."""
    settings.XDS_RAD69_ROOT_LAST = root_last
    settings.XDS_IMAGING_SOURCE_ID = source_id
    settings.DICOM_AE_TITLE = pacs.ae_title
    settings.DICOM_PACS = {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": pacs.dicom_port}
    settings.DICOMWEB_URL = pacs.dicomweb_url if method == FetchMethod.WADO_RS else ""
    settings.DICOM_FETCH_METHOD = method.value
    settings.DICOM_SPOOL_DIR = str(spool_dir)
    settings.DICOM_PORT = pacs.scp_port
