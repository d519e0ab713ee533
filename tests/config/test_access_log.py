"""The web servers' access log carries no patient data (issue 13): the gunicorn ``make run`` starts, as it starts
it, logs paths without their query string and UID path segments as their log references."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from config.access_log import safe_path
from config.supervisor import BASE_DIR, node_services
from xds_core.log_ref import log_ref

SERIES_UID = "1.2.826.0.1.3680043.8.498.99887766554433221100"
DOCUMENT_UID = "1.3.6.1.4.1.21367.2005.3.99.1^20260101"


def test_uid_path_segments_become_references_and_other_segments_stay() -> None:
    path = f"/manifests/1.3.6.1.4.1.21367.13.70.201/{DOCUMENT_UID}/series/{SERIES_UID}/thumbnail.png"
    assert safe_path(path) == (f"/manifests/{log_ref('1.3.6.1.4.1.21367.13.70.201')}/{log_ref(DOCUMENT_UID)}/series/"
                               f"{log_ref(SERIES_UID)}/thumbnail.png")
    assert safe_path("/xds/registry") == "/xds/registry" and safe_path("/imports/12/") == "/imports/12/"
    assert safe_path("/v1.2/x") == "/v1.2/x"  # two arcs: not an identifier


def test_the_make_run_web_server_logs_no_query_string_and_no_uid(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (web,) = [s for s in node_services(port, 1, ()) if s.name == "web"]
    env = {**os.environ, "XDS_VAR_DIR": str(tmp_path), "SECRET_KEY": "access-log-test-" + "x" * 40,
           "XDS_TLS": "off", "PYTHONUNBUFFERED": "1", **(web.env or {})}
    env.pop("DATABASE_URL", None)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=BASE_DIR, env=env,
                   check=True, timeout=300)
    process = subprocess.Popen(web.argv, cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True).start()  # type: ignore[union-attr]
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{base}/healthz", timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and process.poll() is None, "".join(lines)
                time.sleep(0.2)
        requests.get(f"{base}/patient/", params={"id": "SECRET-PATIENT-7^^^&1.2.3&ISO"}, timeout=30,
                     allow_redirects=False, headers={"Referer": f"{base}/patients/?pid=SECRET-PATIENT-7"})
        requests.get(f"{base}/manifests/1.3.6.1.4.1.21367.13.70.201/{DOCUMENT_UID}/series/{SERIES_UID}/thumbnail.png",
                     timeout=30, allow_redirects=False)
        deadline = time.monotonic() + 10
        while sum('"GET /' in line for line in lines) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(30)
    access = [line for line in lines if line.startswith("http ")]
    assert any('"GET /patient/ HTTP/1.1" 302' in line for line in access), lines
    assert any(f"/series/{log_ref(SERIES_UID)}/thumbnail.png" in line for line in access), access
    text = "".join(lines)
    assert "SECRET-PATIENT-7" not in text and SERIES_UID not in text and DOCUMENT_UID.split("^")[0] not in text
