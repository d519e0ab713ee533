"""`make run`'s two-hospital affinity domain, end to end, as a new user plays it (slow: once, on the PostgreSQL
pass of CI).

The real supervisor starts the domain node and both hospitals (their own Orthancs, imaging sources, DICOM
listeners, job workers) on free ports; the test then runs the ``xds_fetch`` line the supervisor printed,
exactly as printed, and checks that Hospital B's Orthanc holds Hospital A's NIST study under B's own patient
id with SOP Instance UIDs and pixel data identical to Orthanc A's, and that the registry still holds one
manifest for it (B's imaging source does not publish what B imported).  Then the study is removed from
Orthanc B and the printed MPPS line is sent: prefetch must bring it back by itself.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests

from demo.studies import B_NIST, NIST_STUDY_UID
from tests.demo_process import Demo, delete_study, running_demo

pytestmark = [pytest.mark.slow, pytest.mark.pacs]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    with running_demo(tmp_path_factory.mktemp("two-hospital-demo") / "var", "demo_e2e") as running:
        yield running


def _instances(orthanc: str, study_uid: str) -> dict[str, pydicom.Dataset]:
    found = requests.post(f"{orthanc}/tools/find", json={"Level": "Instance", "Query": {
        "StudyInstanceUID": study_uid}}, timeout=30).json()
    out = {}
    for orthanc_id in found:
        ds = pydicom.dcmread(io.BytesIO(requests.get(f"{orthanc}/instances/{orthanc_id}/file", timeout=30).content))
        out[ds.SOPInstanceUID] = ds
    return out


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def test_the_printed_fetch_line_imports_hospital_as_study_into_hospital_bs_pacs(demo: Demo) -> None:
    banner = demo.text()
    for port in demo.ports.values():
        assert f":{port}" in banner  # every address is printed
    a, b = demo.orthanc("A"), demo.orthanc("B")
    original = _instances(a, NIST_STUDY_UID)
    assert len(original) == 36
    assert _instances(b, NIST_STUDY_UID) == {}

    fetched = demo.run_printed(demo.line("xds_fetch"))

    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert f"study {NIST_STUDY_UID}: 36/36 instances present (36 retrieved" in fetched.stdout
    imported = _instances(b, NIST_STUDY_UID)
    assert imported.keys() == original.keys()
    for uid, ds in imported.items():
        assert (ds.PatientID, ds.IssuerOfPatientID) == (B_NIST.local_id, B_NIST.issuer)
        assert _sha1(ds.PixelData) == _sha1(original[uid].PixelData), uid  # hashes: a short failure message
        assert ds.SeriesInstanceUID == original[uid].SeriesInstanceUID
        assert ds.OriginalAttributesSequence[-1].ModifyingSystem == "XDSI_CONSUMER@HOSPITAL-B"
    rows = requests.get(f"{b}/dicom-web/studies", params={"StudyInstanceUID": NIST_STUDY_UID}, timeout=30).json()
    assert [row["00100020"]["Value"][0] for row in rows] == [B_NIST.local_id]

    # Hospital B's imaging source will not publish what it imported: the registry keeps one manifest.
    b_env = demo.line("xds_fetch").split()[0]
    republished = demo.run_printed(f"{b_env} {sys.executable} manage.py xds_publish --study {NIST_STUDY_UID}")
    assert republished.returncode == 0, republished.stderr
    assert "skipped" in republished.stdout.lower()
    listed = demo.run_printed(f"{b_env} {sys.executable} manage.py xds_fetch --patient "
                              f"'{demo.line('xds_fetch').split(chr(39))[1]}' --study {NIST_STUDY_UID} --json")
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)["manifests"]) == 1


def test_an_mpps_in_progress_at_hospital_b_prefetches_the_study_by_itself(demo: Demo) -> None:
    b = demo.orthanc("B")
    delete_study(b, NIST_STUDY_UID)
    assert _instances(b, NIST_STUDY_UID) == {}

    sent = demo.run_printed(demo.line("xds_demo_mpps"))

    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "status=0x0000" in sent.stdout
    deadline = time.monotonic() + 90
    while len(imported := _instances(b, NIST_STUDY_UID)) < 36:
        assert time.monotonic() < deadline, "prefetch did not import the study:\n" + "\n".join(demo.output[-40:])
        time.sleep(1)
    assert {ds.PatientID for ds in imported.values()} == {B_NIST.local_id}
    original = _instances(demo.orthanc("A"), NIST_STUDY_UID)
    assert {uid: _sha1(ds.PixelData) for uid, ds in imported.items()} == {
        uid: _sha1(ds.PixelData) for uid, ds in original.items()}
    assert any("consumer.import_prior" in line and "state=succeeded" in line for line in demo.output)


def test_a_worklist_entry_at_hospital_b_prefetches_the_patients_prior_before_the_examination(demo: Demo) -> None:
    """The RIS schedules a CT for B-1003; B polls its worklist; A's CT of the same affinity patient lands in
    B's PACS under B-1003 before any MPPS."""
    from demo.studies import A_3, SCHEDULED_EXAMPLE, studies_of

    record, modality = SCHEDULED_EXAMPLE
    (prior,) = [s for s in studies_of("hospital-a") if s.record is A_3]
    b = demo.orthanc("B")
    assert _instances(b, prior.study_instance_uid) == {}

    scheduled = demo.run_printed(demo.line("xds_demo_schedule"))

    assert scheduled.returncode == 0, scheduled.stdout + scheduled.stderr
    assert f"scheduled {modality} for {record.local_id}" in scheduled.stdout
    deadline = time.monotonic() + 90
    while len(imported := _instances(b, prior.study_instance_uid)) < prior.instances:
        assert time.monotonic() < deadline, "the worklist entry prefetched nothing:\n" + "\n".join(demo.output[-40:])
        time.sleep(1)
    assert {ds.PatientID for ds in imported.values()} == {record.local_id}
    original = _instances(demo.orthanc("A"), prior.study_instance_uid)
    assert {uid: _sha1(ds.PixelData) for uid, ds in imported.items()} == {
        uid: _sha1(ds.PixelData) for uid, ds in original.items()}


def test_hospital_bs_portal_takes_the_printed_password_and_shows_the_other_nodes(demo: Demo) -> None:
    """The banner's portal line, as a person reads it: open the URL, log in with the printed password (a real
    session with the CSRF token of the login form), see the overview with the domain and Hospital A up."""
    (line,) = [x for x in demo.output if x.startswith("Portal: ")]
    match = re.fullmatch(r"Portal: (http://127\.0\.0\.1:(\d+)/)  log in as clinician-b / (\S+) \(printed once; "
                         r"DEMO_PASSWORD sets it\)", line.strip())
    assert match, line
    url, port, password = match.group(1), int(match.group(2)), match.group(3)
    assert port == demo.ports["HOSPITAL_B_HTTP_PORT"]
    marker = Path(demo.env["XDS_VAR_DIR"]) / "demo" / "portal-users"
    assert marker.stat().st_mode & 0o077 == 0 and password not in marker.read_text()

    session = requests.Session()
    login = session.get(f"{url}login/", timeout=30)
    assert login.status_code == 200
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text).group(1)
    answer = session.post(f"{url}login/", data={"username": "clinician-b", "password": password,
                                                "csrfmiddlewaretoken": token, "next": "/"},
                          headers={"Referer": f"{url}login/"}, timeout=30, allow_redirects=False)
    assert answer.status_code == 302, answer.text[:500]
    home = session.get(url, timeout=30)
    assert home.status_code == 200 and 'id="sites"' in home.text
    sites = home.text[home.text.index('id="sites"'):home.text.index('id="counts"')]
    for name, port_name in (("Hospital A", "HOSPITAL_A_HTTP_PORT"), ("Affinity domain", "PORT")):
        assert name in sites and f"http://127.0.0.1:{demo.ports[port_name]}/" in sites
    assert sites.count('<td class="ok">up</td>') == 2, sites
    assert "Hospital B" in home.text and "clinician-b" in home.text
    # /healthz: public, and Hospital B's parts all answer.
    health = requests.get(f"{url}healthz", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok", health.text
    assert health.json()["components"]["dicom_listener"]["state"] == "up"
    # The domain's journal holds the demo's transactions (RAD-68's ITI-41 / ITI-42), without patient ids.
    domain_journal = Path(demo.env["XDS_VAR_DIR"]) / "demo" / "domain" / "journal" / "transactions.jsonl"
    text = domain_journal.read_text()
    assert '"transaction":"ITI-41"' in text and B_NIST.local_id not in text and "IDS-AD002" not in text
