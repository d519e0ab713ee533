"""``manage.py xds_bench_portal``'s own parts (no demo, no PACS): percentiles, the Server-Timing it reads,
seeding (ITI-8 message, ITI-42 sizes, the ITI-18 count against the real registry endpoint), page parsing,
the generated studies, and its refusals in words."""

from __future__ import annotations

import math
import random
from io import BytesIO

import pydicom
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from conformance.patients import check_ack
from portal.management.commands.xds_bench_portal import (
    PER_SUBMISSION,
    adt_a04,
    count_object_refs,
    csrf_cookie_name,
    ct_512,
    documents_to_register,
    find_documents,
    import_fields,
    page_facts,
    patient_cx,
    percentile,
    portal_study,
    series_of,
    server_time_ms,
    study_uids,
    submission_sizes,
    summary,
    zip_complete,
)
from xds_core import mllp
from xds_core.ebxml.serialize import submit_objects_request
from xds_core.identifiers import is_dicom_uid
from xds_core.vocabulary import Action, ReturnType
from xds_registry.management.commands.xds_bench_registry import SUCCESS, soap_message
from xds_registry.management.commands.xds_bench_registry_load import LoadPlan, codes_for, make_submission
from xds_registry.models import Patient
from xds_registry.patient_identity_feed.mllp import serve_in_thread

AUTHORITY = "1.3.6.1.4.1.21367.2005.13.20.1000"
MIDDLEWARE = "portal.middleware.ServerTimingMiddleware"


# --- percentiles ---------------------------------------------------------------------------

def test_percentile_interpolates_between_closest_ranks_like_numpy() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 0.5) == pytest.approx(50.5)
    assert percentile(values, 0.95) == pytest.approx(95.05)
    assert percentile(values, 0.99) == pytest.approx(99.01)
    assert percentile(values, 0.0) == 1.0 and percentile(values, 1.0) == 100.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0  # unsorted input


def test_percentile_of_nothing_is_nan_and_a_fraction_outside_0_1_is_refused() -> None:
    assert math.isnan(percentile([], 0.5))
    with pytest.raises(ValueError):
        percentile([1.0], 95)  # a percent, not a fraction


def test_summary_rounds_and_counts() -> None:
    s = summary([10.0, 20.0, 30.0, 40.0, 1000.0])
    assert s["n"] == 5 and s["p50_ms"] == 30.0 and s["max_ms"] == 1000.0
    assert s["p95_ms"] == pytest.approx(808.0) and s["p99_ms"] == pytest.approx(961.6)
    assert summary([])["p95_ms"] is None


# --- Server-Timing -------------------------------------------------------------------------

@pytest.mark.parametrize(("header", "expected"), [
    ("app;dur=12.5", 12.5), ("db;dur=3, app;dur=40", 40.0), ("app;desc=\"django\";dur=7", 7.0),
    ("APP; dur=\"9.25\"", 9.25), ("db;dur=3", None), ("", None), (None, None), ("app;dur=", None),
    ("application;dur=5", None),
])
def test_server_time_is_read_from_the_app_metric_only(header: str | None, expected: float | None) -> None:
    assert server_time_ms(header) == expected


@pytest.mark.django_db
def test_the_bench_reads_what_the_middleware_writes(settings) -> None:
    settings.MIDDLEWARE = [MIDDLEWARE, *(m for m in settings.MIDDLEWARE if m != MIDDLEWARE)]  # first, once
    response = Client().get("/login/")
    assert server_time_ms(response["Server-Timing"]) is not None
    assert server_time_ms(Client().get("/xds/registry?wsdl").get("Server-Timing")) is None


def test_csrf_cookie_name_is_per_port(settings) -> None:
    assert csrf_cookie_name(8002) == "xds_csrf_8002"
    assert csrf_cookie_name(settings.PORT) == settings.CSRF_COOKIE_NAME


# --- seeding -------------------------------------------------------------------------------

def test_documents_to_register_tops_up_and_never_goes_negative() -> None:
    assert documents_to_register(0, 200) == 200
    assert documents_to_register(150, 200) == 50
    assert documents_to_register(200, 200) == 0
    assert documents_to_register(260, 200) == 0
    with pytest.raises(ValueError):
        documents_to_register(0, 0)
    with pytest.raises(ValueError):
        documents_to_register(-1, 200)


def test_submission_sizes_cover_the_count_exactly() -> None:
    assert submission_sizes(200) == [PER_SUBMISSION] * 10
    assert submission_sizes(45, 20) == [20, 20, 5]
    assert submission_sizes(0) == []
    with pytest.raises(ValueError):
        submission_sizes(10, 0)


def test_bench_patient_cx_is_checked() -> None:
    assert patient_cx("PORTAL-BENCH-200", AUTHORITY) == f"PORTAL-BENCH-200^^^&{AUTHORITY}&ISO"
    for hostile in ("", "A^B", "x'; DROP TABLE--"):
        with pytest.raises(ValueError, match="bench patient"):
            patient_cx(hostile, AUTHORITY)
    with pytest.raises(ValueError):
        patient_cx("P1", "not-an-oid")


@pytest.mark.django_db(transaction=True)
def test_the_adt_a04_is_accepted_by_the_real_iti8_listener() -> None:
    patient = patient_cx("PORTAL-BENCH-T1", AUTHORITY)
    server, thread = serve_in_thread("127.0.0.1", 0, None)
    try:
        host, port = server.server_address[:2]
        answer = mllp.exchange(host, port, adt_a04(patient, "Bench", "Portal", "XBTEST1"), timeout=10)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    check_ack(answer, "XBTEST1")
    stored = Patient.objects.get(patient_id=patient)
    assert stored.family_name == "Bench"


@pytest.mark.django_db
def test_seeded_documents_are_counted_by_iti18_object_refs(settings) -> None:
    """The bench's ITI-42 submissions and its ITI-18 count, through the real registry endpoint."""
    patient = patient_cx("PORTAL-BENCH-T2", AUTHORITY)
    Patient.objects.create(patient_id=patient, assigning_authority=AUTHORITY, family_name="Bench")
    client = Client()

    def post(message) -> bytes:  # type: ignore[no-untyped-def]
        response = client.post("/xds/registry", data=message.body, content_type=message.content_type)
        assert response.status_code == 200
        return response.content

    count = find_documents(patient, ReturnType.ObjectRef)
    assert count_object_refs(post(count)) == 0
    codes, mimes = codes_for(None)
    plan = LoadPlan(run="t", authority=AUTHORITY, patients=1, docs_per_patient=7, per_submission=5, seed=1,
                    codes=codes, mime_types=mimes, repository_unique_id=settings.XDS_REPOSITORY_UNIQUE_ID)
    rng = random.Random(3)
    first = 0
    for size in submission_sizes(7, 5):
        body = post(soap_message(Action.RegisterDocumentSet,
                                 submit_objects_request(make_submission(plan, patient, first, size, rng))))
        assert SUCCESS in body, body[:500]
        first += size
    assert count_object_refs(post(count)) == 7
    leaf = post(find_documents(patient, ReturnType.LeafClass))
    assert leaf.count(b"ExtrinsicObject ") + leaf.count(b"ExtrinsicObject\n") >= 7
    assert count_object_refs(leaf) == 0


def test_count_object_refs_by_element_not_by_word() -> None:
    body = (b'<rim:RegistryObjectList><rim:ObjectRef id="urn:uuid:1"/><ObjectRef id="2"></ObjectRef>'
            b'<x:ObjectRefList/><rim:Slot name="ObjectRef"/></rim:RegistryObjectList>')
    assert count_object_refs(body) == 2


# --- pages ---------------------------------------------------------------------------------

MANIFEST_PAGE = """<!doctype html><html><body><h1>Study</h1>
<div class="error-box" role="alert">Hospital A's imaging source <b>is down</b>: timed out</div>
<figure class="series-item"><img class="thumbnail" src="/manifests/1.2/3.4/series/1.2.3/thumbnail.png"
 alt="Series 1"></figure>
<figure class="series-item"><img class="thumbnail big" src="/manifests/1.2/3.4/series/1.2.4/thumbnail.png"
 alt="Series 2"></figure><img src="/static/logo.png" alt="">
<form id="import-form" method="post" action="/manifests/1.2/3.4/import">
<input type="hidden" name="csrfmiddlewaretoken" value="x"><input type="hidden" name="study" value="1.2.3">
<input type="checkbox" name="all" value="1"><input type="radio" name="to" value="b" checked>
<button id="import-button" type="submit">Import</button></form>
<form id="other"><input name="q" value="nope"></form>
<a id="download-zip" href="/manifests/1.2/3.4/download.zip">zip</a>
<table class="documents"><tr><th scope="col">x</th></tr><tr class="document"><td>
<a class="manifest-link" href="/manifests/1.2/3.4/">m</a></td></tr><tr class="document other"><td>t</td></tr></table>
</body></html>"""


def test_page_facts_follow_the_dom_contract() -> None:
    facts = page_facts(MANIFEST_PAGE)
    assert facts.thumbnails == ["/manifests/1.2/3.4/series/1.2.3/thumbnail.png",
                                "/manifests/1.2/3.4/series/1.2.4/thumbnail.png"]
    assert facts.download == "/manifests/1.2/3.4/download.zip"
    assert facts.import_action == "/manifests/1.2/3.4/import"
    assert facts.import_fields == {"csrfmiddlewaretoken": "x", "study": "1.2.3", "to": "b"}
    assert facts.manifest_links == ["/manifests/1.2/3.4/"]
    assert facts.document_rows == 2
    assert facts.error_boxes == ["Hospital A's imaging source is down: timed out"]
    assert facts.import_state is None


def test_import_state_text_is_read() -> None:
    html = '<p>State: <strong id="import-state">\n  Running </strong></p><progress value="3" max="9"></progress>'
    assert page_facts(html).import_state == "running"
    assert page_facts("<p>nothing</p>").import_state is None


# --- generated studies ---------------------------------------------------------------------

def test_study_uids_are_stable_valid_and_distinct() -> None:
    study, series, sops = study_uids("seed-x", 10, 3)
    assert (study, series, sops) == study_uids("seed-x", 10, 3)
    assert study != study_uids("seed-y", 10, 3)[0]
    uids = [study, *series, *sops]
    assert all(is_dicom_uid(u) for u in uids) and len(set(uids)) == len(uids) == 14
    for bad in ((0, 1), (3, 4), (5, 0)):
        with pytest.raises(ValueError):
            study_uids("s", *bad)


def test_series_are_consecutive_and_balanced() -> None:
    members = [series_of(i, 500, 4) for i in range(500)]
    assert members == sorted(members)
    assert [members.count(s) for s in range(4)] == [125] * 4
    assert {series_of(i, 7, 3) for i in range(7)} == {0, 1, 2}


def test_portal_study_instances_carry_their_uids_and_patient() -> None:
    study, series, sops, parts = portal_study("1.3.6.1.4.1.21367.13.81.1", 8, series=2, seed="t")
    datasets = [pydicom.dcmread(BytesIO(part)) for part in parts]
    assert [str(d.SOPInstanceUID) for d in datasets] == sops
    assert {str(d.StudyInstanceUID) for d in datasets} == {study}
    assert [str(d.SeriesInstanceUID) for d in datasets] == [series[0]] * 4 + [series[1]] * 4
    assert {(d.PatientID, d.IssuerOfPatientID) for d in datasets} == {("A-1002", "1.3.6.1.4.1.21367.13.81.1")}


def test_render_source_is_a_512_ct_of_16_bits() -> None:
    ds = pydicom.dcmread(BytesIO(ct_512()))
    assert ds.Modality == "CT" and (ds.Rows, ds.Columns, ds.BitsAllocated) == (512, 512, 16)
    pixels = ds.pixel_array
    assert pixels.shape == (512, 512) and pixels.max() > pixels.min()


# --- refusals ------------------------------------------------------------------------------

def test_the_bench_refuses_to_run_without_demo_password(settings, monkeypatch) -> None:
    settings.DEMO_PASSWORD = ""
    monkeypatch.delenv("DEMO_PASSWORD", raising=False)
    with pytest.raises(CommandError, match="DEMO_PASSWORD is not set"):
        call_command("xds_bench_portal")


@pytest.mark.parametrize("option", ["requests", "documents", "renders", "cold_runs", "iti18_idle"])
def test_the_bench_refuses_non_positive_counts(option: str) -> None:
    with pytest.raises(CommandError, match="must be positive"):
        call_command("xds_bench_portal", **{option: 0})


def test_the_bench_says_when_it_is_not_run_as_a_hospital(settings, tmp_path) -> None:
    settings.DEMO_PASSWORD = "pw"
    with pytest.raises(CommandError, match="cannot read .*hospital-a.env"):
        call_command("xds_bench_portal", site_a_env=tmp_path / "hospital-a.env")


def test_import_fields_fill_the_local_patient_only_when_the_page_asks() -> None:
    assert import_fields({"csrfmiddlewaretoken": "x", "local_patient_id": ""}, "B-1002") == {
        "csrfmiddlewaretoken": "x", "local_patient_id": "B-1002"}
    assert import_fields({"local_patient_id": "B-7"}, "B-1002") == {"local_patient_id": "B-7"}
    assert import_fields({}, "B-1002") == {"local_patient_id": "B-1002"}


def test_a_zip_is_complete_only_with_its_end_record(tmp_path) -> None:
    import zipfile

    path = tmp_path / "x.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.dcm", b"\0" * 100_000)
    data = path.read_bytes()
    assert zip_complete(data[-70_000:])
    assert not zip_complete(data[: len(data) // 2])
