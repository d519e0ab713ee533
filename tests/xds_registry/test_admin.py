"""Registry admin: lists and details render, registry objects are read-only, patients addable via the feed code."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings

from tests.xds_registry.registry_helpers import AUTHORITY, fed_patient, load_submission, new_patient_id
from xds_registry import models as m
from xds_registry.register_document_set import register_document_set

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_logged() -> Client:
    user = User.objects.create_superuser("admin", "a@example.org", "pw")
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def registered():
    pid = fed_patient()
    register_document_set(load_submission("folder_with_doc.xml", pid)[0])
    return pid


@pytest.mark.parametrize("model", ["documententry", "submissionset", "folder", "association", "patient"])
def test_changelists_and_searches_render(admin_client_logged: Client, registered: str, model: str):
    response = admin_client_logged.get(f"/admin/xds_registry/{model}/", {"q": registered})
    assert response.status_code == 200
    if model != "association":
        assert registered.split("^")[0] in response.content.decode()


def test_document_detail_shows_codes_associations_and_xml(admin_client_logged: Client, registered: str):
    de = m.DocumentEntry.objects.get()
    page = admin_client_logged.get(f"/admin/xds_registry/documententry/{de.pk}/change/").content.decode()
    assert "confidentialityCode" in page and "HasMember" in page and "ExtrinsicObject" in page
    assert 'type="submit"' not in page or "Save" not in page  # view only


@pytest.mark.parametrize("model", ["documententry", "submissionset", "folder", "association"])
def test_registry_objects_are_read_only(admin_client_logged: Client, registered: str, model: str):
    assert admin_client_logged.get(f"/admin/xds_registry/{model}/add/").status_code == 403
    obj = {"documententry": m.DocumentEntry, "submissionset": m.SubmissionSet, "folder": m.Folder,
           "association": m.Association}[model].objects.first()
    before = obj.xml
    response = admin_client_logged.post(f"/admin/xds_registry/{model}/{obj.pk}/change/", {"status": "x"})
    assert response.status_code == 403
    assert admin_client_logged.post(f"/admin/xds_registry/{model}/{obj.pk}/delete/", {"post": "yes"}).status_code == 403
    obj.refresh_from_db()
    assert obj.xml == before


def test_patient_add_goes_through_feed_validation(admin_client_logged: Client):
    pid = new_patient_id()
    response = admin_client_logged.post("/admin/xds_registry/patient/add/", {"patient_id": pid, "family_name": "Doe"})
    assert response.status_code == 302
    patient = m.Patient.objects.get(patient_id=pid)
    assert patient.assigning_authority == AUTHORITY and patient.family_name == "Doe"
    bad = admin_client_logged.post("/admin/xds_registry/patient/add/", {"patient_id": "nonsense"})
    assert bad.status_code == 200 and "CX.4" in bad.content.decode()
    assert not m.Patient.objects.filter(patient_id="nonsense").exists()


def test_affinity_domain_page(admin_client_logged: Client, corpus_dir: Path):
    assert "No affinity domain configured" in admin_client_logged.get(
        "/admin/xds_registry/patient/affinity-domain/").content.decode()
    codes = corpus_dir / "affinity-domain" / "codes.xml"
    with override_settings(XDS_AFFINITY_DOMAIN_CODES=str(codes)):
        page = admin_client_logged.get("/admin/xds_registry/patient/affinity-domain/").content.decode()
    assert "1.3.6.1.4.1.21367.2005.13.20.1000" in page and "classCode" in page and "REPORTS" in page
