"""The clinician's patient search and patient page, on this process's real registry (ITI-42 registrations,
ITI-18 in process) and on a registry that is down (a closed port over real HTTP)."""

from __future__ import annotations

import re
import socket
from html import unescape
from urllib.parse import urlencode

import pytest
from django.test import Client
from django.urls import reverse

from portal.views.patients import DOCUMENTS_PER_PAGE
from tests.consumer.conftest import AUTHORITY
from tests.consumer.test_browse import SOURCE_A, fed_patient, lifecycle, register
from xds_core import audit
from xds_registry.patient_identity_feed.patients import Demographics, add_or_update_patient

pytestmark = pytest.mark.django_db


@pytest.fixture
def user(django_user_model):  # type: ignore[no-untyped-def]
    from portal.models import Hospital, Membership

    person = django_user_model.objects.create_user("dr-b", password="pw-for-tests", first_name="Bea",
                                                   last_name="Doctor")
    Membership.objects.create(user=person, hospital=Hospital.objects.create(key="hospital-b", name="Hospital B"))
    return person


@pytest.fixture
def client(user, settings) -> Client:  # type: ignore[no-untyped-def]
    settings.XDS_CONSUMER_REGISTRY_URL = ""  # the registry (and its patient table) in this process
    settings.XDS_AFFINITY_DOMAIN_AUTHORITY = AUTHORITY
    c = Client()
    c.force_login(user)
    return c


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def patient_url(patient_id: str, **more: str) -> str:
    return reverse("portal:patient") + "?" + urlencode({"id": patient_id, **more})


def text(response) -> str:  # type: ignore[no-untyped-def]
    return unescape(response.content.decode())


# --- search ------------------------------------------------------------------------------------

def test_search_by_bare_id_asks_the_registry_and_links_the_patient(client: Client) -> None:
    pid = fed_patient()
    for _ in range(3):
        register(pid)
    bare = pid.split("^", 1)[0]

    response = client.get(reverse("portal:patients"), {"pid": bare})

    assert response.status_code == 200
    page = text(response)
    assert 'id="patient-search"' in page and 'id="pid"' in page and 'id="name"' in page
    assert "names come from the patient feed (ITI-8)" in page.replace("Names", "names")
    table = page[page.index('id="patients-results"'):]
    assert len(re.findall(r'class="patient-link"', table)) == 1
    assert patient_url(pid).replace("&", "&amp;") in response.content.decode()
    assert re.search(r'<td class="num">3</td>', table)


def test_search_by_id_of_a_patient_without_documents_says_so(client: Client) -> None:
    response = client.get(reverse("portal:patients"), {"pid": "NOBODY-1"})
    assert response.status_code == 200
    page = text(response)
    assert "The registry holds no documents for patient" in page
    assert "does not know this patient either" in page
    assert 'id="patients-results"' not in page


@pytest.mark.parametrize("hostile", ["a'b^^^&1.2&ISO^x", "P1^^^&not-an-oid&ISO", "x" * 400, "P\x001",
                                     "<script>alert(1)</script>^^^&1.2.3&ISO"])
def test_hostile_ids_are_a_clear_message_and_nothing_is_asked(client: Client, hostile: str) -> None:
    with audit.capture() as events:
        response = client.get(reverse("portal:patients"), {"pid": hostile})
    assert response.status_code == 200
    page = response.content.decode()
    assert 'class="error-box" role="alert"' in page and "not an affinity domain patient id" in page
    assert "<script>alert" not in page
    assert [e for e in events if e.transaction == audit.Transaction.ITI_18] == []


def test_search_by_name_is_paged_in_a_stable_order(client: Client) -> None:
    ids = []
    for n in range(30):
        pid = f"NAME{n:02d}^^^&{AUTHORITY}&ISO"
        add_or_update_patient(pid, Demographics(family_name="Zebrafish", given_name=f"Anna{n % 3}",
                                                birth_date="19800102", sex="F"))
        ids.append(pid)
    add_or_update_patient(f"OTHER^^^&{AUTHORITY}&ISO", Demographics(family_name="Other", given_name="Bob"))

    first = client.get(reverse("portal:patients"), {"name": "zebra"})
    second = client.get(reverse("portal:patients"), {"name": "zebra", "page": "2"})
    hostile_page = client.get(reverse("portal:patients"), {"name": "zebra", "page": "9999'"})

    def listed(response) -> list[str]:  # type: ignore[no-untyped-def]
        return re.findall(r'class="patient-link" href="[^"]*"><code>([^<]+)</code>', text(response))

    assert first.status_code == second.status_code == hostile_page.status_code == 200
    expected = sorted(ids, key=lambda p: (f"Anna{int(p[4:6]) % 3}", p))
    assert listed(first) == expected[:25] and listed(second) == expected[25:]
    assert listed(hostile_page) == expected[:25]  # a page that is not a number: the first
    assert "Zebrafish, Anna0" in text(first) and "1980-01-02" in text(first)
    assert "Page 1 of 2" in text(first)
    # two words: both must match (family or given)
    assert listed(client.get(reverse("portal:patients"), {"name": "Zebrafish Anna1"})) == [
        p for p in expected if int(p[4:6]) % 3 == 1]


def test_name_search_with_a_remote_registry_says_where_names_are(client: Client, settings) -> None:  # type: ignore[no-untyped-def]
    settings.XDS_CONSUMER_REGISTRY_URL = "http://127.0.0.1:8000/xds/registry"
    settings.XDS_PORTAL_PEERS = [("Domain node", "http://127.0.0.1:8000"), ("Hospital A", "http://127.0.0.1:8001")]
    response = client.get(reverse("portal:patients"), {"name": "Smith"})
    page = text(response)
    assert response.status_code == 200
    assert "a name search is done there" in page
    assert '<a href="http://127.0.0.1:8000/patients/">Domain node</a>' in page


def test_registry_unreachable_is_a_message_not_a_500(client: Client, settings) -> None:  # type: ignore[no-untyped-def]
    settings.XDS_CONSUMER_REGISTRY_URL = f"http://127.0.0.1:{closed_port()}/xds/registry"
    pid = f"P1^^^&{AUTHORITY}&ISO"
    for response in (client.get(reverse("portal:patients"), {"pid": pid}), client.get(patient_url(pid))):
        assert response.status_code == 200
        page = text(response)
        assert 'class="error-box" role="alert"' in page and "is not reachable" in page


def test_every_page_needs_a_login() -> None:
    anonymous = Client()
    for url in (reverse("portal:patients"), patient_url(f"P1^^^&{AUTHORITY}&ISO")):
        response = anonymous.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("portal:login"))


# --- the patient page --------------------------------------------------------------------------

def test_patient_page_groups_by_source_and_shows_lifecycle_and_manifest_links(client: Client) -> None:
    life = lifecycle()
    add_or_update_patient(life.patient_id, Demographics(family_name="Moore", given_name="Chris"))

    response = client.get(patient_url(life.patient_id))

    assert response.status_code == 200
    page = text(response)
    h1 = re.findall(r"<h1>(.*?)</h1>", page, re.S)
    assert len(h1) == 1 and life.patient_id in h1[0] and "Moore, Chris" in h1[0]
    sections = re.findall(r'<section class="source"[^>]*>\s*<h2[^>]*>([^<]+)</h2>', page)
    assert sections == ["Hospital A", f"Source {'1.3.6.1.4.1.21367.13.80.120'}"]
    assert page.count('<table class="documents"') == 5 and page.count('<tr class="document') == 5
    assert page.count('class="document deprecated"') == 1
    # manifests link to their manifest page, reports do not
    links = re.findall(r'<a class="manifest-link" href="([^"]+)"', page)
    assert sorted(links) == sorted(f"/manifests/1.3.6.1.4.1.21367.13.70.201/{u}/"
                                   for u in (life.k1.unique_id, life.k2.unique_id))
    # lifecycle in words, status as badges, dates readable, code display names
    assert f"replaced by</span> <code>{life.k2.unique_id}" in page
    assert f"replaces</span> <code>{life.k1.unique_id}" in page
    assert f"transformation of</span> <code>{life.report.unique_id}" in page
    assert f"appended to</span> <code>{life.report.unique_id}" in page
    assert '<span class="badge warn">Deprecated</span>' in page and '<span class="badge ok">Approved</span>' in page
    assert "2026-02-01 07:00:00 UTC" in page and "Computed Tomography" in page and "Key Object Selection" in page
    # newest submission set first within a source
    assert page.index(life.k2.unique_id + "</code>\n") < page.index(life.k1.unique_id + "</code>\n")


def test_patient_page_records_one_patient_record_read_with_the_user_as_requestor(client: Client) -> None:
    pid = fed_patient()
    shown = register(pid)
    with audit.capture() as events:
        response = client.get(patient_url(pid.split("^", 1)[0]), REMOTE_ADDR="10.1.2.3")
    assert response.status_code == 200
    [event] = [e for e in events if e.event_id == audit.EventId.PATIENT_RECORD]
    assert event.action == audit.EventAction.READ and event.outcome == audit.EventOutcome.SUCCESS
    assert event.requestor is not None and event.requestor.user_id == "dr-b"
    assert event.requestor.network_address == "10.1.2.3"
    assert event.patient_ids == (pid,)
    assert shown.unique_id in {o.object_id for o in event.objects}


def test_patient_pages_are_paged_by_document_newest_set_first(client: Client) -> None:
    per_page = DOCUMENTS_PER_PAGE
    pid = fed_patient()
    for n in range(per_page + 2):  # one set each, two a day from 2026-01-01
        register(pid, submission_time=f"202601{1 + n // 2:02d}08{n % 2:02d}00", source_id=SOURCE_A)
    newest = f"2026-01-{1 + (per_page + 1) // 2:02d} 08:{(per_page + 1) % 2:02d}:00 UTC"
    first = text(client.get(patient_url(pid)))
    second = text(client.get(patient_url(pid, page="2")))
    beyond = client.get(patient_url(pid, page="99"))
    hostile = client.get(patient_url(pid, page="1 OR 1=1"))
    assert first.count('<tr class="document') == per_page and second.count('<tr class="document') == 2
    assert f"submitted {newest}" in first and "submitted 2026-01-01 08:00:00 UTC" in second
    assert "submitted 202601" not in first  # raw DTMs are not shown
    assert "Page 1 of 2" in first and f"{per_page + 2} documents in {per_page + 2} submission sets" in first
    assert beyond.status_code == hostile.status_code == 200
    assert text(beyond).count('<tr class="document') == 2 and text(hostile).count('<tr class="document') == per_page


def test_a_large_submission_set_continues_on_the_next_page(client: Client) -> None:
    pid = fed_patient()
    register(pid, count=DOCUMENTS_PER_PAGE + 10)
    first = text(client.get(patient_url(pid)))
    second = text(client.get(patient_url(pid, page="2")))
    assert first.count('<tr class="document') == DOCUMENTS_PER_PAGE and second.count('<tr class="document') == 10
    assert "(continued)" in second and "(continued)" not in first
    assert first.count('<table class="documents"') == second.count('<table class="documents"') == 1


def test_patient_without_documents_and_hostile_id_on_the_patient_page(client: Client) -> None:
    empty = client.get(patient_url(fed_patient()))
    assert empty.status_code == 200 and "The registry holds no documents for this patient." in text(empty)
    with audit.capture() as events:
        hostile = client.get(patient_url("P1^^^&1.2&ISO<script>"))
    assert hostile.status_code == 400
    assert 'class="error-box" role="alert"' in hostile.content.decode() and "<script>" not in hostile.content.decode()
    assert events == []
