"""Admin: reconciliation queue (resolve and publish, discard), patient mapping, publications."""

from __future__ import annotations

import socket

import pytest
from django.urls import reverse

from imaging_source.models import PatientMapping, Publication, ReconciliationItem
from imaging_source.publish import Outcome, publish

from .conftest import AFFINITY_PATIENT, publish_config

pytestmark = pytest.mark.django_db


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def configured(settings, recording_repository):
    settings.XDS_REPOSITORY_URL = recording_repository.url
    settings.XDS_IMAGING_PATIENT_REWRITE = ""
    settings.XDS_AFFINITY_DOMAIN_CODES = ""
    # No PACS answers: the admin must fall back to the study snapshot kept in the queue.
    settings.DICOM_PACS = {"ae_title": "NOBODY", "host": "127.0.0.1", "port": _closed_port()}
    settings.DICOMWEB_URL = ""
    return recording_repository


@pytest.fixture
def queued(ids_study, configured) -> ReconciliationItem:
    assert publish(ids_study, publish_config(configured.url)).outcome == Outcome.QUEUED
    return ReconciliationItem.objects.get()


def _action(admin_client, action: str, items, **extra):
    url = reverse("admin:imaging_source_reconciliationitem_changelist")
    data = {"action": action, "_selected_action": [i.pk for i in items], **extra}
    return admin_client.post(url, data, follow=True)


def test_resolve_asks_for_the_affinity_id_then_maps_and_publishes(admin_client, queued, configured) -> None:
    page = _action(admin_client, "resolve_and_publish", [queued])
    assert page.status_code == 200
    assert b"IDS-DEPT002-a" in page.content and b"Map and publish" in page.content
    assert configured.received == []  # asking is not publishing

    done = _action(admin_client, "resolve_and_publish", [queued], apply="1", affinity_patient_id=AFFINITY_PATIENT)
    assert done.status_code == 200
    assert PatientMapping.objects.get().affinity_patient_id == AFFINITY_PATIENT
    assert len(configured.received) == 1
    assert configured.received[0].pnr.submission.document_entries[0].patient_id == AFFINITY_PATIENT
    queued.refresh_from_db()
    assert queued.status == ReconciliationItem.Status.RESOLVED
    assert queued.publication.status == Publication.Status.PUBLISHED
    assert queued.publication.trigger == "reconciliation"
    assert b"published" in done.content


def test_resolve_with_a_malformed_id_publishes_nothing(admin_client, queued, configured) -> None:
    page = _action(admin_client, "resolve_and_publish", [queued], apply="1", affinity_patient_id="IDS-AD002-a")
    assert page.status_code == 200
    assert b"CX.4" in page.content
    assert configured.received == [] and PatientMapping.objects.count() == 0
    queued.refresh_from_db()
    assert queued.status == ReconciliationItem.Status.OPEN


def test_discard_closes_the_item_without_publishing(admin_client, queued, configured) -> None:
    _action(admin_client, "discard", [queued])
    queued.refresh_from_db()
    assert queued.status == ReconciliationItem.Status.DISCARDED
    assert configured.received == []


def test_patient_mapping_admin_validates_the_affinity_id(admin_client) -> None:
    url = reverse("admin:imaging_source_patientmapping_add")
    bad = admin_client.post(url, {"local_patient_id": "L1", "local_issuer": "", "affinity_patient_id": "x",
                                  "note": ""})
    assert bad.status_code == 200 and PatientMapping.objects.count() == 0
    good = admin_client.post(url, {"local_patient_id": "L1", "local_issuer": "",
                                   "affinity_patient_id": AFFINITY_PATIENT, "note": ""})
    assert good.status_code == 302 and PatientMapping.objects.get().affinity_patient_id == AFFINITY_PATIENT


def test_publications_are_listed_and_republish_reports_an_unreachable_pacs(admin_client, ids_study, configured
                                                                           ) -> None:
    PatientMapping.objects.create(local_patient_id="IDS-DEPT002-a", affinity_patient_id=AFFINITY_PATIENT)
    publication = publish(ids_study, publish_config(configured.url)).publication
    listing = admin_client.get(reverse("admin:imaging_source_publication_changelist"))
    assert listing.status_code == 200 and publication.study_instance_uid.encode() in listing.content
    detail = admin_client.get(reverse("admin:imaging_source_publication_change", args=[publication.pk]))
    assert detail.status_code == 200
    page = admin_client.post(reverse("admin:imaging_source_publication_changelist"),
                             {"action": "republish", "_selected_action": [publication.pk]}, follow=True)
    assert page.status_code == 200
    assert b"cannot query the PACS" in page.content or b"not found in the PACS" in page.content
    assert len(configured.received) == 1


def test_publish_study_page_reports_an_unreachable_pacs(admin_client, configured) -> None:
    url = reverse("admin:imaging_source_publication_publish_study")
    assert admin_client.get(url).status_code == 200
    assert b"Publish studies" in admin_client.get(reverse("admin:imaging_source_publication_changelist")).content
    bad = admin_client.post(url, {"study_uids": "1.2.abc"})
    assert bad.status_code == 200 and b"not a UID" in bad.content
    page = admin_client.post(url, {"study_uids": "1.2.3.4"}, follow=True)
    assert b"cannot query the PACS" in page.content
    assert configured.received == [] and Publication.objects.count() == 0


@pytest.mark.pacs
def test_publish_study_page_publishes_a_study_found_in_the_real_pacs(admin_client, settings, pacs,
                                                                       recording_repository) -> None:
    from .pacs_fixtures import NIST_STUDY_UID

    settings.XDS_REPOSITORY_URL = recording_repository.url
    settings.XDS_IMAGING_PATIENT_REWRITE = ""
    settings.XDS_AFFINITY_DOMAIN_CODES = ""
    settings.XDS_IMAGING_RETRIEVE_AE_TITLE = ""
    settings.DICOM_PACS = {"ae_title": pacs.peer.ae_title, "host": pacs.peer.host, "port": pacs.peer.port}
    settings.DICOM_AE_TITLE = pacs.ae_title
    settings.DICOMWEB_URL = ""
    PatientMapping.objects.create(local_patient_id="IDS-DEPT002-a", affinity_patient_id=AFFINITY_PATIENT)

    page = admin_client.post(reverse("admin:imaging_source_publication_publish_study"),
                             {"study_uids": NIST_STUDY_UID}, follow=True)
    assert page.status_code == 200 and b"published" in page.content
    [received] = recording_repository.received
    entry = received.pnr.submission.document_entries[0]
    from kos.reader import read_manifest

    manifest = read_manifest(received.documents[entry.id])
    assert manifest.study_instance_uid == NIST_STUDY_UID and manifest.instance_count == 36
    assert {s.retrieve_ae_title for s in manifest.studies[0].series} == {pacs.peer.ae_title}
    assert Publication.objects.get().trigger == "admin"
