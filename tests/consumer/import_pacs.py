"""A second, private Orthanc for import tests: the importing hospital's PACS (imported by conftest.py).

Started per test session with ``imaging_source/pacs/local-pacs.sh`` on free ports with its own state
directory, so UIDs imported unchanged never meet the originals in the shared test PACS (``pacs``
fixture) and concurrent sessions never share it.  Only ``CALLING_AE`` (registered as the script's
``xdsi`` modality) may store or query; ``studies``/``source_files`` help the tests.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
import requests

from tests.imaging_source.pacs_fixtures import NIST_STUDY_UID, SCRIPT, Pacs
from xds_core.multipart import boundary_of, iter_parts

CALLING_AE = "XDSI_CONSUMER"


@dataclass(frozen=True)
class ImportPacs:
    env: dict[str, str]
    dicom_port: int
    http_port: int
    ae_title: str = "ORTHANC"
    calling_ae_title: str = CALLING_AE
    worklists: Path | None = None  # worklist files (*.wl) it serves as a Modality Worklist SCP

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.rest_url}/dicom-web"

    def script(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(SCRIPT), *args], env=self.env, capture_output=True, text=True, timeout=120)

    def wipe_studies(self) -> None:
        for orthanc_id in requests.get(f"{self.rest_url}/studies", timeout=30).json():
            requests.delete(f"{self.rest_url}/studies/{orthanc_id}", timeout=60).raise_for_status()

    def study_patient_ids(self, study_uid: str) -> list[str]:
        """Patient ID of the study as the PACS lists it (QIDO-RS study level)."""
        rows = requests.get(f"{self.dicomweb_url}/studies", params={"StudyInstanceUID": study_uid},
                            headers={"Accept": "application/dicom+json"}, timeout=30)
        return [row["00100020"]["Value"][0] for row in rows.json()] if rows.content.strip() else []

    def instance_files(self, study_uid: str) -> dict[str, bytes]:
        """{SOP Instance UID: the Part 10 file as stored}, through Orthanc's REST API."""
        found = requests.post(f"{self.rest_url}/tools/find", json={
            "Level": "Instance", "Query": {"StudyInstanceUID": study_uid}}, timeout=30).json()
        files = {}
        for orthanc_id in found:
            tags = requests.get(f"{self.rest_url}/instances/{orthanc_id}/simplified-tags", timeout=30).json()
            files[tags["SOPInstanceUID"]] = requests.get(f"{self.rest_url}/instances/{orthanc_id}/file",
                                                         timeout=30).content
        return files

    def delete_instance(self, sop_instance_uid: str) -> None:
        """Remove one instance (a loss the next import must repair), through Orthanc's REST API."""
        (orthanc_id,) = requests.post(f"{self.rest_url}/tools/find", json={
            "Level": "Instance", "Query": {"SOPInstanceUID": sop_instance_uid}}, timeout=30).json()
        requests.delete(f"{self.rest_url}/instances/{orthanc_id}", timeout=30).raise_for_status()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def import_pacs(pacs: Pacs) -> Iterator[ImportPacs]:
    """The importing hospital's PACS: a fresh Orthanc of this session (stopped and deleted at the end).

    Its ports must not be the port the shared test PACS sends C-MOVEs to (``pacs.scp_port``, free until a
    test's listener binds it): an Orthanc there would take the moved instances instead of that listener.
    """
    state = Path(tempfile.mkdtemp(prefix="xdsi-import-pacs-"))
    started = None
    taken = {pacs.scp_port, pacs.dicom_port, pacs.http_port}
    for _ in range(3):  # a free port can be taken between choosing and binding it
        dicom_port, http_port = _free_port(), _free_port()
        while dicom_port in taken or http_port in taken or dicom_port == http_port:
            dicom_port, http_port = _free_port(), _free_port()
        env = {**os.environ, "LOCAL_PACS_DIR": str(state), "ORTHANC_DICOM_PORT": str(dicom_port),
               "ORTHANC_HTTP_PORT": str(http_port), "XDSI_AET": CALLING_AE, "XDSI_HOST": "127.0.0.1",
               "XDSI_PORT": str(_free_port()), "PYTHON": sys.executable, "TCP_NODELAY": "1",
               # The hospital's schedule too: the PACS serves the worklist files of this folder.
               "LOCAL_PACS_WORKLISTS": str(state / "worklists")}
        info = ImportPacs(env, dicom_port, http_port, worklists=state / "worklists")
        started = info.script("start")
        if started.returncode == 0:
            break
    else:
        shutil.rmtree(state, ignore_errors=True)
        pytest.fail(f"the import PACS did not start: {started.stdout}{started.stderr}")
    try:
        yield info
    finally:
        info.script("stop")
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def nist_files(pacs: Pacs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The NIST study's instances, fetched from the shared test PACS by WADO-RS into temp files:
    {SOP Instance UID: file}."""
    target = tmp_path_factory.mktemp("nist")
    response = requests.get(f"{pacs.dicomweb_url}/studies/{NIST_STUDY_UID}", timeout=120, headers={
        "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    assert response.status_code == 200, response.status_code
    files: dict[str, Path] = {}
    for _headers, body in iter_parts(boundary_of(response.headers["Content-Type"]), [response.content]):
        data = bytes(body)
        path = target / f"{len(files):03d}.dcm"
        path.write_bytes(data)
        files[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = path
    assert len(files) == 36
    return files
