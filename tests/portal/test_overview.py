"""The portal's front page: what this node is, its parts and the other nodes, counts, the last transactions --
fast and whole even when a PACS or a peer is down (real sockets: closed and silent ports, a live peer)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from portal import journal
from tests.portal.status_helpers import closed_port, isolate, silent_port
from xds_core import audit

pytestmark = pytest.mark.django_db

SECTIONS = ("node", "actors", "endpoints", "sites", "counts", "transactions")


@pytest.fixture
def user_client(client):  # type: ignore[no-untyped-def]
    user = get_user_model().objects.create_user("clinician-b", password="pw-overview-test")
    client.force_login(user)
    return client


def _section(html: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}".*?</section>', html, re.S)
    assert match, section_id
    return match.group(0)


def test_the_page_shows_every_section_with_this_nodes_actors_and_endpoints(user_client, settings) -> None:  # type: ignore[no-untyped-def]
    isolate(settings)
    answer = user_client.get("/")
    assert answer.status_code == 200
    html = answer.content.decode()
    for section in SECTIONS:
        assert f'<section id="{section}"' in html
    assert re.findall(r"<h1>(.*?)</h1>", html) == ["Hospital B"]
    assert "<code>hospital-b</code>" in _section(html, "node")
    endpoints = _section(html, "endpoints")
    for path in ("/xds/registry", "/xds/repository"):  # the registry and repository are this server's
        assert f"http://testserver{path}?wsdl" in endpoints
    assert "/xds/imaging-source" not in endpoints  # no PACS configured: no imaging source
    assert "Imaging Document Consumer" in _section(html, "actors")
    assert "No other node configured" in _section(html, "sites")
    assert "Patients" in _section(html, "counts")


def test_a_down_pacs_and_down_peers_are_words_and_the_page_stays_fast(user_client, settings) -> None:  # type: ignore[no-untyped-def]
    isolate(settings)
    settings.DICOM_PACS = {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": closed_port()}
    settings.DICOMWEB_URL = f"http://127.0.0.1:{closed_port()}/dicom-web"
    settings.XDS_CONSUMER_REGISTRY_URL = f"http://127.0.0.1:{closed_port()}/xds/registry"
    with silent_port() as hanging:
        settings.XDS_PORTAL_PEERS = [("Hospital A", f"http://127.0.0.1:{closed_port()}"),
                                     ("Affinity domain", f"http://127.0.0.1:{hanging}")]
        started = time.monotonic()
        answer = user_client.get("/")
        elapsed = time.monotonic() - started
    assert answer.status_code == 200 and elapsed < 2.5  # every check at once, each bounded by 1.5 s
    html = answer.content.decode()
    actors = _section(html, "actors")
    assert actors.count("unreachable: connection refused") >= 2  # DICOMweb, C-ECHO, registry
    sites = _section(html, "sites")
    assert "Hospital A" in sites and "unreachable: connection refused" in sites
    assert "Affinity domain" in sites and "timed out" in sites
    assert "/xds/imaging-source" in _section(html, "endpoints")  # a PACS is configured, even if down


def test_a_peer_that_answers_shows_its_state_counts_and_portal_link(user_client, settings, live_server) -> None:  # type: ignore[no-untyped-def]
    isolate(settings)  # the peer is this same process behind a real HTTP server: its /healthz is ok
    settings.XDS_PORTAL_PEERS = [("Hospital A", live_server.url)]
    html = user_client.get("/").content.decode()
    sites = _section(html, "sites")
    row = re.search(r'<tr class="site">.*?</tr>', sites, re.S).group(0)
    assert "Hospital A" in row and '<td class="ok">up</td>' in row
    assert f'href="{live_server.url}/"' in row
    assert "Queued jobs 0" in row


def test_the_last_transactions_come_from_the_journal_without_patient_ids(user_client, settings,
                                                                          tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    isolate(settings)
    settings.VAR_DIR = tmp_path
    j = journal.Journal(tmp_path / "journal")
    for n in range(25):
        j(audit.transaction_event(
            audit.Transaction.ITI_43, audit.Side.RESPONDER, requestor=audit.soap_client("10.1.2.3"),
            responder=audit.soap_server(f"http://repo.example/{n}"),
            objects=[audit.patient("OV-SECRET^^^&1.2.3&ISO")], time=datetime(2026, 1, 1, 0, 0, n, tzinfo=UTC)))
    html = user_client.get("/").content.decode()
    transactions = _section(html, "transactions")
    rows = re.findall(r'<tr class="transaction">.*?</tr>', transactions, re.S)
    assert len(rows) == 20 and "http://repo.example/24" in rows[0] and "http://repo.example/5" in rows[-1]
    assert "ITI-43 Retrieve Document Set" in rows[0]
    assert "OV-SECRET" not in html


def test_counts_come_from_the_registry_tables_when_the_registry_is_here(user_client, settings) -> None:  # type: ignore[no-untyped-def]
    from jobs.models import Job
    from xds_registry.patient_identity_feed.patients import add_or_update_patient

    isolate(settings)
    add_or_update_patient("OV-1^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO")
    Job.objects.create(kind="test.kind", key="overview-1")
    html = user_client.get("/").content.decode()
    counts = _section(html, "counts")
    assert re.search(r'<div class="n">1</div><div>Patients</div>', counts)
    assert re.search(r'<div class="n">1</div><div>Queued jobs</div>', counts)
    settings.XDS_CONSUMER_REGISTRY_URL = f"http://127.0.0.1:{closed_port()}/xds/registry"
    counts = _section(user_client.get("/").content.decode(), "counts")
    assert "<div>Patients</div>" not in counts and "counted by the registry's node" in counts


def test_a_part_that_is_down_is_an_alert_in_words(user_client, settings) -> None:  # type: ignore[no-untyped-def]
    isolate(settings)
    settings.DICOM_PACS = {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": closed_port()}
    settings.XDS_RUN_DICOM = False
    html = user_client.get("/").content.decode()
    alert = re.search(r'<div class="error-box" role="alert">.*?</div>', _section(html, "node"), re.S).group(0)
    assert "PACS" in alert and "connection refused" in alert and "Database" not in alert
    isolate(settings)
    assert 'role="alert"' not in _section(user_client.get("/").content.decode(), "node")
