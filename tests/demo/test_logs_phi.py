"""No patient data in operational logs (issue 13): a whole ``make run`` demo, driven through its transactions, and
every line its services printed searched for the demo patients' ids, names and study UIDs (slow: once, on the
PostgreSQL pass of CI).

The supervisor's banner is left out on purpose: it is the instructions printed for the person at the terminal,
and its example commands name the demo patient.  Everything else the supervisor relays -- set-up steps, every
service's log, gunicorn's access log -- is searched.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import requests

from demo.studies import PATIENTS, RECORDS, STUDIES, affinity_cx
from tests.demo_process import Demo, running_demo

pytestmark = [pytest.mark.slow, pytest.mark.pacs]

PASSWORD = "phi-test-password-1"
#: A line relayed by the supervisor: ``<label> | <text>`` (the banner's lines have no label).
_RELAYED = re.compile(r"^\s*[\w-]+ \| ")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    with running_demo(tmp_path_factory.mktemp("phi-demo") / "var", "demo_phi",
                      {"DEMO_PASSWORD": PASSWORD}) as running:
        yield running


def _needles() -> list[tuple[str, re.Pattern[str]]]:
    """The demo patients' affinity and local ids, their names (DICOM PN and each part as a word), the studies'
    UIDs."""
    found: list[tuple[str, str]] = []
    for patient in PATIENTS:
        found += [("patient id", patient.affinity_id), ("name", f"{patient.family}^{patient.given}"),
                  ("given name", patient.given)]
        if patient.family != "Demo":  # "Demo" is also every demo line's word: the PN form covers it
            found.append(("family name", patient.family))
    found += [("local patient id", record.local_id) for record in RECORDS]
    found += [("study UID", study.study_instance_uid) for study in STUDIES]
    return [(kind, re.compile(rf"(?<![\w.-]){re.escape(value)}(?![\w-]|\.\d)")) for kind, value in found]


def _logged(demo: Demo) -> list[str]:
    return [line for line in demo.output if _RELAYED.match(line)]


def _portal_session(base: str) -> requests.Session:
    session = requests.Session()
    login = session.get(f"{base}/login/", timeout=30)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text).group(1)  # type: ignore[union-attr]
    done = session.post(f"{base}/login/", data={"username": "clinician-b", "password": PASSWORD,
                                                "csrfmiddlewaretoken": token, "next": "/"},
                        headers={"Referer": f"{base}/login/"}, timeout=30)
    assert done.status_code == 200 and "logout" in done.text.lower(), done.text[:500]
    return session


def test_a_full_demo_run_logs_no_patient_id_name_or_study_uid(demo: Demo) -> None:
    nist = PATIENTS[0]
    b = demo.portal("B")
    session = _portal_session(b)
    # The portal's searches carry the patient in the query string (the access log must not).
    assert session.get(f"{b}/patients/", params={"pid": nist.affinity_id}, timeout=60).status_code == 200
    assert session.get(f"{b}/patients/", params={"name": nist.family}, timeout=60).status_code == 200
    page = session.get(f"{b}/patient/?id={quote(affinity_cx(nist.affinity_id))}", timeout=120)
    assert page.status_code == 200
    manifests = sorted(set(re.findall(r'href="(/manifests/[^"]+/)"', page.text)))
    assert manifests, page.text[:2000]
    for link in manifests[:2]:  # ITI-43 + a thumbnail per series by RAD-69
        shown = session.get(f"{b}{link}", timeout=120)
        assert shown.status_code == 200
        for thumb in re.findall(r'src="(/manifests/[^"]+/thumbnail\.png)"', shown.text)[:2]:
            assert session.get(f"{b}{thumb}", timeout=120).status_code == 200
    # The printed commands: a consumer import (ITI-18, ITI-43, RAD-69, C-STORE) and an MPPS (prefetch).
    fetched = demo.run_printed(demo.line("xds_fetch"))
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    sent = demo.run_printed(demo.line("xds_demo_mpps"))
    assert sent.returncode == 0, sent.stdout + sent.stderr
    deadline = time.monotonic() + 60
    while not any("consumer.prefetch_priors" in line and "state=" in line for line in demo.output):
        assert time.monotonic() < deadline, "prefetch did not run:\n" + demo.tail()
        time.sleep(1)
    time.sleep(2)  # the last lines of the services

    logged = _logged(demo)
    banner = [line for line in demo.output if not _RELAYED.match(line)]
    assert any(needle.search(line) for line in banner for _, needle in _needles())  # the search does find them
    assert any('"GET /patients/ HTTP/1.1" 200' in line for line in logged)  # the access log is searched too
    leaks = [(kind, line) for line in logged for kind, needle in _needles() if needle.search(line)]
    assert not leaks, "patient data in the logs:\n" + "\n".join(f"{kind}: {line}" for kind, line in leaks[:40])
