"""A private Orthanc for fault tests: its own state directory, free ports, and a pause button.

The real local PACS (``imaging_source/pacs/local-pacs.sh``: Debian's Orthanc + DICOMweb plugin), started
on ports nobody else uses, so a test may stop, stall or kill it without touching the shared test PACS
(``tests/imaging_source/pacs_fixtures.py``, ports 4243/8043) or ``make run``'s.

API::

    from tests.faults.orthanc import PrivateOrthanc, private_orthanc

    with private_orthanc(tmp_path, xdsi_aet="XDSI_T1", xdsi_port=11190) as pacs:   # started, stopped after
        pacs.load(*files)          # upload DICOM files or folders (REST); pacs.load() = pydicom's samples
        pacs.register("name", "AET", "127.0.0.1", 11191)   # one more C-MOVE destination / retrieving AE
        pacs.stall()               # SIGSTOP: the process is frozen; its kernel still accepts TCP
                                   # connections (listen backlog), nothing is ever answered
        pacs.resume()              # SIGCONT: it goes on where it stopped
        pacs.stalled               # True while stopped
        pacs.pid                   # from local-pacs.sh's PID file
        pacs.ae_title, pacs.dicom_port, pacs.http_port, pacs.rest_url, pacs.dicomweb_url
        pacs.peer                  # imaging_source.dicom.config.Peer of its DICOM side
        pacs.dicom_pacs_setting    # "AET@127.0.0.1:port", the DICOM_PACS setting's form
        pacs.state_dir             # LOCAL_PACS_DIR (config, storage, orthanc.log, orthanc.pid)

``tls=TlsFiles(cert, key, trust)``: the PACS speaks DICOM TLS and HTTPS with client certificates required
(local-pacs.sh's XDS_TLS / XDS_TLS_CERT / XDS_TLS_KEY / XDS_TLS_CA); ``rest_url`` is then ``https://...``.

``PrivateOrthanc(state_dir, ...)`` with ``start()`` / ``stop()`` does the same without the context
manager; ``stop()`` resumes a stalled Orthanc first (a stopped process does not act on SIGTERM).  The
script's environment: LOCAL_PACS_DIR, ORTHANC_DICOM_PORT / ORTHANC_HTTP_PORT (free ephemeral ports,
picked at construction), ORTHANC_AET, and XDSI_AET / XDSI_HOST / XDSI_PORT (the AE allowed to query
and retrieve, and the C-MOVE destination: where our listener runs).  The state directory is the
caller's (a pytest ``tmp_path``); nothing outside it is written.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from imaging_source.dicom.config import Peer

BASE_DIR = Path(__file__).resolve().parents[2]
SCRIPT = BASE_DIR / "imaging_source" / "pacs" / "local-pacs.sh"


def free_port() -> int:
    """A TCP port free on loopback right now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class TlsFiles:
    """The certificate and key the PACS presents and the certificates it trusts (PEM paths)."""

    cert: Path
    key: Path
    trust: tuple[Path, ...]


class OrthancError(RuntimeError):
    """local-pacs.sh failed (its output is in the message)."""


class PrivateOrthanc:
    """One private Orthanc, driven through local-pacs.sh (see the module docstring)."""

    def __init__(self, state_dir: Path, *, ae_title: str = "ORTHANC", xdsi_aet: str = "XDSI_IDS",
                 xdsi_host: str = "127.0.0.1", xdsi_port: int | None = None, tls: TlsFiles | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.ae_title = ae_title
        self.dicom_port = free_port()
        self.http_port = free_port()
        while self.http_port == self.dicom_port:
            self.http_port = free_port()
        self.xdsi_aet = xdsi_aet
        self.xdsi_host = xdsi_host
        self.xdsi_port = xdsi_port if xdsi_port is not None else free_port()
        self.env = {**os.environ, "LOCAL_PACS_DIR": str(self.state_dir), "ORTHANC_AET": ae_title,
                    "ORTHANC_DICOM_PORT": str(self.dicom_port), "ORTHANC_HTTP_PORT": str(self.http_port),
                    "XDSI_AET": xdsi_aet, "XDSI_HOST": xdsi_host, "XDSI_PORT": str(self.xdsi_port),
                    "PYTHON": sys.executable, "TCP_NODELAY": "1", "XDS_TLS": "off"}
        self.tls = tls
        if tls is not None:
            self.env.update({"XDS_TLS": "on", "XDS_TLS_CERT": str(tls.cert), "XDS_TLS_KEY": str(tls.key),
                             "ORTHANC_HTTP_BACKEND_PORT": str(free_port()),
                             "XDS_TLS_CA": ",".join(str(t) for t in tls.trust), "XDS_TLS_PINNED": ""})

    # -- addresses ---------------------------------------------------------------------------------
    @property
    def rest_url(self) -> str:
        return f"{'https' if self.tls is not None else 'http'}://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.rest_url}/dicom-web"

    @property
    def peer(self) -> Peer:
        return Peer(self.ae_title, "127.0.0.1", self.dicom_port)

    @property
    def dicom_pacs_setting(self) -> str:
        return f"{self.ae_title}@127.0.0.1:{self.dicom_port}"

    # -- life cycle ----------------------------------------------------------------------------------
    def script(self, *args: str, timeout: float = 300) -> str:
        """Run ``local-pacs.sh args...`` with this Orthanc's environment; its output, or OrthancError."""
        done = subprocess.run(["bash", str(SCRIPT), *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if done.returncode != 0:
            raise OrthancError(f"local-pacs.sh {' '.join(args)} failed ({done.returncode}):"
                               f" {done.stdout}{done.stderr}")
        return done.stdout

    def start(self) -> None:
        self.script("start")

    def stop(self) -> None:
        if self._pid_or_none() is None:
            return
        self.resume()
        self.script("stop")

    def load(self, *paths: Path | str) -> None:
        """Upload DICOM files / folders (none: pydicom's bundled samples)."""
        self.script("load", *(str(p) for p in paths))

    def register(self, name: str, ae_title: str, host: str, port: int) -> None:
        self.script("register", name, ae_title, host, str(port))

    # -- faults ----------------------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        pid = self._pid_or_none()
        if pid is None:
            raise OrthancError(f"no running Orthanc for {self.state_dir}")
        return pid

    def _pid_or_none(self) -> int | None:
        try:
            pid = int((self.state_dir / "orthanc.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:  # the PID file's process is ours only while it is an Orthanc (local-pacs.sh checks the same)
            if Path(f"/proc/{pid}/comm").read_text().strip() != "Orthanc":
                return None
        except FileNotFoundError:
            return None
        return pid

    @property
    def stalled(self) -> bool:
        """True while the process is stopped (state T in /proc/PID/stat)."""
        pid = self._pid_or_none()
        if pid is None:
            return False
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] in "Tt"

    def stall(self) -> None:
        """SIGSTOP the Orthanc: connections are still accepted by the kernel, nothing is answered."""
        os.kill(self.pid, signal.SIGSTOP)
        self._wait_for(True)

    def resume(self) -> None:
        """SIGCONT a stalled Orthanc (a no-op for a running one)."""
        pid = self._pid_or_none()
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
            self._wait_for(False)

    def _wait_for(self, stalled: bool, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.stalled != stalled:
            if time.monotonic() > deadline:
                raise OrthancError(f"Orthanc {self.pid} did not {'stop' if stalled else 'continue'}")
            time.sleep(0.01)


@contextmanager
def private_orthanc(state_dir: Path, **kwargs: object) -> Iterator[PrivateOrthanc]:
    """A started :class:`PrivateOrthanc` (keyword arguments as its constructor's), stopped on exit."""
    pacs = PrivateOrthanc(state_dir, **kwargs)  # type: ignore[arg-type]
    pacs.start()
    try:
        yield pacs
    finally:
        pacs.stop()
