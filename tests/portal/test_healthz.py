"""``/healthz``: the node's state as JSON for load balancers -- public, 200 / 503, no patient data, no peers."""

from __future__ import annotations

import time

import pytest

from tests.portal.status_helpers import closed_port, echo_scp, isolate, silent_port

pytestmark = pytest.mark.django_db


def test_a_node_whose_parts_all_answer_is_ok_without_a_login(client, settings) -> None:  # type: ignore[no-untyped-def]
    isolate(settings)
    answer = client.get("/healthz")
    assert answer.status_code == 200 and answer["Content-Type"] == "application/json"
    body = answer.json()
    assert body["status"] == "ok"
    assert body["site"]["key"] == "hospital-b" and body["site"]["name"] == "Hospital B"
    assert body["components"]["database"]["state"] == "up"
    assert body["components"]["registry"]["state"] == "up"  # its own tables
    assert body["components"]["pacs"]["state"] == body["components"]["dicom_listener"]["state"] == "not configured"
    assert set(body["counts"]) >= {"patients", "documents", "manifests", "queued_jobs", "running_jobs"}
    assert "no-cache" in answer["Cache-Control"]


def test_a_pacs_that_refuses_makes_the_node_degraded_with_the_reason_in_words(client, settings) -> None:  # type: ignore[no-untyped-def]
    isolate(settings)
    settings.DICOM_PACS = {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": closed_port()}
    settings.DICOMWEB_URL = f"http://127.0.0.1:{closed_port()}/dicom-web"
    settings.XDS_RUN_DICOM = False
    answer = client.get("/healthz")
    assert answer.status_code == 503
    pacs = answer.json()["components"]["pacs"]
    assert answer.json()["status"] == "degraded" and pacs["state"] == "down"
    assert pacs["parts"]["dicomweb"]["detail"] == "unreachable: connection refused"
    assert pacs["parts"]["dimse"]["detail"] == "unreachable: connection refused"


def test_a_remote_registry_that_never_answers_costs_at_most_the_timeout(client, settings) -> None:  # type: ignore[no-untyped-def]
    isolate(settings)
    with silent_port() as port:
        settings.XDS_CONSUMER_REGISTRY_URL = f"http://127.0.0.1:{port}/xds/registry"
        started = time.monotonic()
        answer = client.get("/healthz")
        elapsed = time.monotonic() - started
    assert answer.status_code == 503 and elapsed < 2.5
    registry = answer.json()["components"]["registry"]
    assert registry["state"] == "down" and "timed out" in registry["detail"]
    assert "patients" not in answer.json()["counts"]  # the registry's tables are not this node's


def test_a_remote_registry_that_answers_and_our_listener_make_it_ok(client, settings, live_server) -> None:  # type: ignore[no-untyped-def]
    isolate(settings)
    settings.XDS_CONSUMER_REGISTRY_URL = f"{live_server.url}/xds/registry"
    settings.DICOM_AE_TITLE = "HOSPB_IDS"
    with echo_scp("HOSPB_IDS") as port:
        # An imaging source whose PACS is the listener itself: a real C-ECHO both ways.
        settings.DICOM_PACS = {"ae_title": "HOSPB_IDS", "host": "127.0.0.1", "port": port}
        settings.XDS_RUN_DICOM, settings.DICOM_HOST, settings.DICOM_PORT = True, "0.0.0.0", port
        answer = client.get("/healthz")
    body = answer.json()
    assert answer.status_code == 200, body
    assert body["components"]["registry"]["detail"] == "HTTP 200"
    assert body["components"]["dicom_listener"] == {**body["components"]["dicom_listener"], "state": "up",
                                                    "detail": "C-ECHO Success",
                                                    "target": f"HOSPB_IDS@127.0.0.1:{port}"}


def test_a_listener_that_is_down_is_reported(client, settings) -> None:  # type: ignore[no-untyped-def]
    isolate(settings)
    with echo_scp("ORTHANC") as pacs_port:
        settings.DICOM_PACS = {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": pacs_port}
        settings.XDS_RUN_DICOM, settings.DICOM_HOST, settings.DICOM_PORT = True, "127.0.0.1", closed_port()
        answer = client.get("/healthz")
    body = answer.json()
    assert answer.status_code == 503
    assert body["components"]["pacs"]["state"] == "up"
    assert body["components"]["dicom_listener"]["detail"] == "unreachable: connection refused"


def test_healthz_never_asks_the_peers_and_holds_no_patient_data(client, settings) -> None:  # type: ignore[no-untyped-def]
    from xds_registry.patient_identity_feed.patients import add_or_update_patient

    isolate(settings)
    add_or_update_patient("HZ-SECRET-1^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO")
    with silent_port() as port:  # a peer that would hang the answer if it were asked
        settings.XDS_PORTAL_PEERS = [("Hospital A", f"http://127.0.0.1:{port}")]
        started = time.monotonic()
        answer = client.get("/healthz")
        assert time.monotonic() - started < 1.0
    assert answer.status_code == 200
    assert b"HZ-SECRET" not in answer.content and b"Hospital A" not in answer.content
    assert answer.json()["counts"]["patients"] >= 1


@pytest.mark.parametrize("method", ["post", "put", "delete"])
def test_healthz_answers_only_get(client, settings, method: str) -> None:  # type: ignore[no-untyped-def]
    isolate(settings)
    assert getattr(client, method)("/healthz").status_code == 405


@pytest.mark.pacs
def test_the_real_pacs_answers_both_dicomweb_and_c_echo(client, settings, pacs) -> None:  # type: ignore[no-untyped-def]
    isolate(settings)
    settings.DICOM_PACS = {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": pacs.dicom_port}
    settings.DICOMWEB_URL = pacs.dicomweb_url
    settings.XDS_RUN_DICOM = False
    answer = client.get("/healthz")
    pacs_state = answer.json()["components"]["pacs"]
    assert answer.status_code == 200, pacs_state
    assert pacs_state["parts"]["dimse"]["detail"] == "C-ECHO Success"
    assert pacs_state["parts"]["dicomweb"]["state"] == "up"


def test_a_document_store_below_its_free_space_watermark_makes_the_node_degraded_with_its_free_bytes(
        client, settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    isolate(settings)
    settings.STORAGES = {**settings.STORAGES, "xds_documents": {
        "BACKEND": "xds_repository.storage.ContentAddressedStorage", "OPTIONS": {"location": str(tmp_path / "docs")}}}
    settings.XDS_MIN_FREE_SPACE = 1 << 20
    healthy = client.get("/healthz")
    store = healthy.json()["components"]["document_store"]
    assert healthy.status_code == 200 and store["state"] == "up"
    assert isinstance(store["free_bytes"], int) and store["free_bytes"] > 1 << 20
    assert store["min_free_bytes"] == 1 << 20 and store["target"] == str(tmp_path / "docs")

    settings.XDS_MIN_FREE_SPACE = store["free_bytes"] + (1 << 40)  # more than the disk holds
    low = client.get("/healthz")
    assert low.status_code == 503 and low.json()["status"] == "degraded"
    store = low.json()["components"]["document_store"]
    assert store["state"] == "degraded" and "new documents are refused" in store["detail"]
    assert isinstance(store["free_bytes"], int) and store["min_free_bytes"] == settings.XDS_MIN_FREE_SPACE


def test_a_document_store_backend_without_local_files_is_not_measured(client, settings) -> None:  # type: ignore[no-untyped-def]
    isolate(settings)
    settings.STORAGES = {**settings.STORAGES, "xds_documents": {
        "BACKEND": "django.core.files.storage.InMemoryStorage"}}
    answer = client.get("/healthz")
    assert answer.status_code == 200
    assert answer.json()["components"]["document_store"]["state"] == "not configured"
