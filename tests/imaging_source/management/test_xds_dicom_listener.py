"""manage.py xds_dicom_listener as its own process: answers DICOM, logs one line per transaction, stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pydicom.data import get_testdata_file

BASE_DIR = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_listener_process_answers_echo_and_store_and_stops_cleanly(tmp_path) -> None:
    port = _free_port()
    env = {**os.environ, "XDS_VAR_DIR": str(tmp_path), "LOG_LEVEL": "INFO", "DICOM_STABLE_DELAY": "0",
           "PYTHONUNBUFFERED": "1", "TCP_NODELAY": "1"}
    process = subprocess.Popen([sys.executable, str(BASE_DIR / "manage.py"), "xds_dicom_listener", "--port", str(port)],
                               cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        echo = subprocess.run(["echoscu", "-aet", "MODALITY", "-aec", "XDSI_IDS", "127.0.0.1", str(port)],
                              env=env, capture_output=True, text=True, timeout=30)
        store = subprocess.run(["storescu", "-aet", "MODALITY", "-aec", "XDSI_IDS", "127.0.0.1", str(port),
                                get_testdata_file("CT_small.dcm")], env=env, capture_output=True, text=True,
                               timeout=30)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert echo.returncode == 0, echo.stderr
    assert store.returncode == 0, store.stderr
    assert process.returncode == 0, output
    assert "dicom C-ECHO from=MODALITY@127.0.0.1 status=0x0000" in output
    assert "dicom C-STORE from=MODALITY@127.0.0.1 kind=incoming sop=1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322" \
        " status=0x0000" in output
    assert "dicom listener stopped" in output
