"""The stored-documents admin: visible, read-only."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from xds_repository.models import StoredDocument

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_logged_in() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("admin", "admin@example.org", "pw"))
    return client


@pytest.fixture
def row() -> StoredDocument:
    return StoredDocument.objects.create(unique_id="1.2.3.4", mime_type="application/dicom", hash="a" * 40,
                                         size=1234, storage_name="aa/" + "a" * 40,
                                         state=StoredDocument.State.REGISTERED)


def test_list_shows_size_hash_mime_type_and_state(admin_client_logged_in: Client, row: StoredDocument) -> None:
    page = admin_client_logged_in.get("/admin/xds_repository/storeddocument/")
    assert page.status_code == 200
    text = page.content.decode()
    for value in ("1.2.3.4", "application/dicom", "a" * 40, "1234", "registered"):
        assert value in text


def test_documents_cannot_be_added_changed_or_deleted(admin_client_logged_in: Client, row: StoredDocument) -> None:
    assert admin_client_logged_in.get("/admin/xds_repository/storeddocument/add/").status_code == 403
    detail = admin_client_logged_in.get(f"/admin/xds_repository/storeddocument/{row.pk}/change/")
    assert detail.status_code == 200 and b'name="_save"' not in detail.content
    assert admin_client_logged_in.post(f"/admin/xds_repository/storeddocument/{row.pk}/change/",
                                       {"unique_id": "9.9"}).status_code == 403
    assert admin_client_logged_in.post(f"/admin/xds_repository/storeddocument/{row.pk}/delete/",
                                       {"post": "yes"}).status_code == 403
    assert StoredDocument.objects.get().unique_id == "1.2.3.4"
