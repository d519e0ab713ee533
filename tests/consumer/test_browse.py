"""A patient's record through ITI-18 GetAll: parsing, grouping and lifecycle, on answers of the real registry
(this process's, reached by SOAP bytes on ``local:`` or over real HTTP) after real ITI-42 registrations."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from lxml import etree

from consumer import browse
from consumer.browse import (
    BrowseError,
    PatientRecord,
    Relation,
    UnknownPatient,
    count_documents,
    get_all_parameters,
    normalise_patient_id,
    read_record,
    read_response,
    readable_dtm,
)
from tests.consumer.conftest import AUTHORITY, KOS_CODE, KOS_FORMAT, REPOSITORY_ID, entry_for, new_oid
from tests.soap_peer import SoapPeer
from xds_core import audit
from xds_core.ebxml import parse as ebxml_parse
from xds_core.ebxml import serialize as ebxml_serialize
from xds_core.ebxml.responses import adhoc_query_response, parse_registry_response
from xds_core.errors import ErrorCode, RegistryError
from xds_core.metadata.objects import Association, Submission, SubmissionSet
from xds_core.metadata.values import Author, Code
from xds_core.soap.client import SoapClient
from xds_core.soap.envelope import SoapRequest, SoapResponse
from xds_core.vocabulary import (
    DICOM_MIME_TYPE,
    Action,
    AssociationType,
    ClassificationNode,
    ClassificationScheme,
    ResponseStatus,
    StoredQuery,
)

SOURCE_A = "1.3.6.1.4.1.21367.13.80.110"
SOURCE_B = "1.3.6.1.4.1.21367.13.80.120"
REPORT_CODE = Code("urn:ihe:iti:xds:2017:mimeTypeSufficient", "1.3.6.1.4.1.19376.1.2.3", "mimeType Sufficient")
CT = Code("CT", "1.2.840.10008.2.16.4", "Computed Tomography")
MANIFESTS = frozenset({KOS_FORMAT})


def patient_record(*args: object, **kwargs: object) -> PatientRecord:
    """browse.patient_record with every entry read in full (a page completes only those it shows)."""
    record = browse.patient_record(*args, **kwargs)  # type: ignore[arg-type]
    record.complete(list(record.documents.values()))
    return record


@dataclass
class Registered:
    unique_id: str
    entry_uuid: str
    submission_set_uid: str


def fed_patient() -> str:
    """A patient the registry knows (what an ITI-8 feed leaves behind)."""
    import uuid

    from xds_registry.patient_identity_feed.patients import add_or_update_patient

    patient_id = f"B{uuid.uuid4().hex[:10]}^^^&{AUTHORITY}&ISO"
    add_or_update_patient(patient_id)
    return patient_id


def register(patient_id: str, *, submission_time: str = "20261127120000", creation_time: str = "20261127120000",
             institution: str | None = "Hospital A", source_id: str = SOURCE_A, relation: AssociationType | None = None,
             target: str | None = None, mime_type: str = DICOM_MIME_TYPE, format_code: Code = KOS_CODE,
             title: str = "imaging manifest", registry_url: str = "local:registry", count: int = 1) -> Registered:
    """One ITI-42 Register Document Set-b of ``count`` entries (``relation`` of the first to ``target``:
    ITI TF-3 4.2.2.2); the first entry's ids are returned."""
    authors = [Author(institutions=[f"{institution}^^^^^^^^^{source_id}"])] if institution else []
    entries = []
    for _ in range(count):
        entry = entry_for(patient_id, new_oid(), creation_time=creation_time, mime_type=mime_type,
                          format_code=format_code, hash="0" * 40, size=1234, event_codes=(CT,),
                          service_start_time="20150402095400")
        entry.repository_unique_id = REPOSITORY_ID
        entry.name.strings[0].value = title
        entry.set_authors(ClassificationScheme.DocumentEntry_author, authors)
        entries.append(entry)
    entry = entries[0]
    ss = SubmissionSet.build(
        patient_id=patient_id, unique_id=new_oid(), source_id=source_id, submission_time=submission_time,
        authors=authors, title=f"set {submission_time}",
        content_type_code=Code("18748-4", "2.16.840.1.113883.6.1", "Diagnostic imaging study"))
    associations = [Association.has_member(ss.id, e.id) for e in entries]
    if relation is not None:
        associations.append(Association.build(relation, entry.id, target or ""))
    body = ebxml_serialize.submit_objects_request(
        Submission(submission_set=ss, document_entries=entries, associations=associations))
    result = SoapClient(registry_url).call(Action.RegisterDocumentSet, body)
    assert result.fault is None, result.fault
    status, errors = parse_registry_response(result.body)
    assert status == ResponseStatus.SUCCESS, errors
    return Registered(entry.unique_id or "", entry.id, ss.unique_id)


@pytest.fixture
def registry(db, settings):  # type: ignore[no-untyped-def]
    settings.XDS_CONSUMER_REGISTRY_URL = ""
    settings.XDS_REPOSITORY_UNIQUE_ID = REPOSITORY_ID


@dataclass
class Lifecycle:
    patient_id: str
    k1: Registered  # a manifest of Hospital A, replaced by k2 (RPLC)
    k2: Registered
    report: Registered  # Hospital B (no author institution: named by sourceId), transformed and appended
    xfrm: Registered
    apnd: Registered


def lifecycle(registry_url: str = "local:registry") -> Lifecycle:
    pid = fed_patient()
    k1 = register(pid, submission_time="20260101080000", creation_time="20260101070000", registry_url=registry_url)
    k2 = register(pid, submission_time="20260201080000", creation_time="20260201070000", relation=AssociationType.RPLC,
                  target=k1.entry_uuid, registry_url=registry_url)
    b = {"institution": None, "source_id": SOURCE_B, "registry_url": registry_url}
    report = register(pid, submission_time="20260301080000", mime_type="text/plain", format_code=REPORT_CODE,
                      title="CT report", **b)  # type: ignore[arg-type]
    xfrm = register(pid, submission_time="20260302080000", mime_type="application/pdf", format_code=REPORT_CODE,
                    title="CT report (PDF)", relation=AssociationType.XFRM, target=report.entry_uuid,
                    **b)  # type: ignore[arg-type]
    apnd = register(pid, submission_time="20260303080000", mime_type="text/plain", format_code=REPORT_CODE,
                    title="addendum", relation=AssociationType.APND, target=report.entry_uuid,
                    **b)  # type: ignore[arg-type]
    return Lifecycle(pid, k1, k2, report, xfrm, apnd)


def test_get_all_is_read_into_sources_submission_sets_and_documents_with_lifecycle(registry) -> None:  # type: ignore[no-untyped-def]
    life = lifecycle()
    other = fed_patient()
    register(other)

    with audit.capture() as events:
        record = patient_record("", life.patient_id, manifest_format_codes=MANIFESTS,
                                source_names={SOURCE_B: "Hospital B (directory)"})

    # one ITI-18, GetAll, audited with the patient (in process: the consumer's side and the registry's)
    queries = [e for e in events if e.transaction == audit.Transaction.ITI_18]
    assert len(queries) == 2
    for sent in queries:
        assert sent.patient_ids == (life.patient_id,)
        assert any(o.object_id == StoredQuery.GetAll.value for o in sent.objects)
    # grouped: source hospital by author institution, else the directory's name of the sourceId
    assert [g.name for g in record.sources] == ["Hospital A", "Hospital B (directory)"]
    hospital_a, hospital_b = record.sources
    assert hospital_b.source_ids == (SOURCE_B,) and hospital_a.source_ids == (SOURCE_A,)
    # submission sets newest first
    assert [s.unique_id for s in hospital_a.submission_sets] == [life.k2.submission_set_uid,
                                                                 life.k1.submission_set_uid]
    assert [s.unique_id for s in hospital_b.submission_sets] == [
        life.apnd.submission_set_uid, life.xfrm.submission_set_uid, life.report.submission_set_uid]
    assert len(record.documents) == 5 and other not in {d.unique_id for d in record.documents.values()}
    docs = {d.unique_id: d for d in record.documents.values()}
    k1, k2 = docs[life.k1.unique_id], docs[life.k2.unique_id]
    # the replaced manifest is shown, Deprecated, with its replacement named (ITI TF-3 4.2.2.2.3)
    assert (k1.status, k1.deprecated, k2.status) == ("Deprecated", True, "Approved")
    assert [(link.relation, link.other) for link in k1.links] == [(Relation.REPLACED_BY, life.k2.unique_id)]
    assert [(link.relation, link.other) for link in k2.links] == [(Relation.REPLACES, life.k1.unique_id)]
    report = docs[life.report.unique_id]
    assert {(link.relation, link.other) for link in report.links} == {
        (Relation.TRANSFORMED_BY, life.xfrm.unique_id), (Relation.APPENDED_BY, life.apnd.unique_id)}
    assert [(link.relation, link.other) for link in docs[life.xfrm.unique_id].links] == [
        (Relation.TRANSFORMS, life.report.unique_id)]
    assert [(link.relation, link.other) for link in docs[life.apnd.unique_id].links] == [
        (Relation.APPENDS, life.report.unique_id)]
    assert report.status == "Approved"  # XFRM / APND leave the original alone
    # plain typed values, display names from the Classification's Name
    assert k2.is_manifest and not report.is_manifest
    assert k2.format_code is not None and k2.format_code.label == "Key Object Selection"
    assert k2.class_code is not None and k2.class_code.label == "Images"
    assert k2.type_code is not None and k2.type_code.code == "18748-4"
    assert k2.practice_setting_code is not None and k2.practice_setting_code.label == "Radiology"
    assert k2.healthcare_facility_type_code is not None and k2.healthcare_facility_type_code.label == "Hospital"
    assert [c.label for c in k2.confidentiality_codes] == ["normal"]
    assert [c.label for c in k2.event_codes] == ["Computed Tomography"]
    assert k2.repository_unique_id == REPOSITORY_ID and k2.size == 1234 and k2.mime_type == DICOM_MIME_TYPE
    assert k2.entry_uuid == life.k2.entry_uuid and k2.study_instance_uids and k2.author_institutions == ("Hospital A",)
    assert (k2.created, k2.service_start) == ("2026-02-01 07:00:00 UTC", "2015-04-02 09:54:00 UTC")
    assert hospital_a.submission_sets[0].submitted == "2026-02-01 08:00:00 UTC"
    assert hospital_a.submission_sets[0].author_institutions == ("Hospital A",)
    assert report.title == "CT report" and report.mime_type == "text/plain"


def test_without_a_directory_name_the_source_is_its_source_id(registry) -> None:  # type: ignore[no-untyped-def]
    pid = fed_patient()
    register(pid, institution=None, source_id=SOURCE_B)
    record = patient_record("", pid, manifest_format_codes=MANIFESTS)
    assert [g.name for g in record.sources] == [f"Source {SOURCE_B}"]


def shape(record: PatientRecord) -> list[object]:
    return [(g.name, [(s.unique_id, [(d.unique_id, d.status, [(lk.relation, lk.other) for lk in d.links])
                                     for d in s.documents]) for s in g.submission_sets]) for g in record.sources]


@pytest.mark.django_db(transaction=True)
def test_over_http_the_record_is_the_same_as_in_process(live_server, settings) -> None:  # type: ignore[no-untyped-def]
    settings.XDS_REPOSITORY_UNIQUE_ID = REPOSITORY_ID
    url = f"{live_server.url}/xds/registry"
    life = lifecycle(url)
    over_http = patient_record(url, life.patient_id, manifest_format_codes=MANIFESTS)
    local = patient_record("", life.patient_id, manifest_format_codes=MANIFESTS)
    assert shape(over_http) == shape(local) and len(over_http.documents) == 5
    assert count_documents(url, life.patient_id) == 5


def test_count_of_documents_includes_deprecated_and_any_format(registry) -> None:  # type: ignore[no-untyped-def]
    life = lifecycle()
    assert count_documents("", life.patient_id) == 5
    assert count_documents("", fed_patient()) == 0


def test_unknown_patient_has_an_empty_record(registry) -> None:  # type: ignore[no-untyped-def]
    record = patient_record("", f"NOBODY^^^&{AUTHORITY}&ISO")
    assert record.sources == [] and record.documents == {}


@pytest.mark.parametrize("typed, expected", [
    ("IDS-AD002-a", f"IDS-AD002-a^^^&{AUTHORITY}&ISO"),
    (f"  IDS-AD002-a^^^&{AUTHORITY}&ISO ", f"IDS-AD002-a^^^&{AUTHORITY}&ISO"),
    ("P1^^^&1.2.3&ISO", "P1^^^&1.2.3&ISO"),
])
def test_patient_ids_are_normalised(typed: str, expected: str) -> None:
    assert normalise_patient_id(typed, AUTHORITY) == (expected, [])


@pytest.mark.parametrize("hostile", [
    "", "   ", "x" * 300, "P1\x00^^^&1.2.3&ISO", "P1\nX", "a&b", "P1^^^&1.2.3", "P1^^^&not-an-oid&ISO",
    "P1^x^^&1.2.3&ISO", "P1^^^&1.2.3&ISO^PI", "P1^^^1.2.3", "^^^&1.2.3&ISO", "P'1~x^^^&1.2.3&ISO",
    "<script>^^^&1.2.3&ISO\u202e",
])
def test_hostile_patient_ids_are_refused_before_anything_is_sent(hostile: str, registry) -> None:  # type: ignore[no-untyped-def]
    with audit.capture() as events:
        patient_id, problems = normalise_patient_id(hostile, AUTHORITY)
        assert patient_id == "" and problems
        with pytest.raises(BrowseError, match="Not a patient id"):
            patient_record("", hostile)
    assert [e for e in events if e.transaction == audit.Transaction.ITI_18] == []


@pytest.fixture
def refusing_registry() -> Iterator[str]:
    """A registry over real HTTP that answers every query with XDSUnknownPatientId (ours answers empty)."""
    def answer(request: SoapRequest, _content_type: str) -> SoapResponse:
        ebxml_parse.parse_adhoc_query_request(request.body)
        body = adhoc_query_response([RegistryError(ErrorCode.XDSUnknownPatientId, "patient not known")], [])
        return SoapResponse(Action.RegistryStoredQueryResponse, body)

    peer = SoapPeer("/registry", answer)
    yield peer.url
    peer.stop()


def test_xds_unknown_patient_id_is_said_in_words(refusing_registry: str) -> None:
    with pytest.raises(UnknownPatient, match="does not know this patient"):
        patient_record(refusing_registry, f"P1^^^&{AUTHORITY}&ISO")


def test_unreachable_registry_is_a_browse_error_naming_it() -> None:
    with pytest.raises(BrowseError, match="127.0.0.1:9.*not reachable"):
        patient_record("http://127.0.0.1:9/registry", f"P1^^^&{AUTHORITY}&ISO", timeout=2)


@pytest.mark.parametrize("dtm, readable", [
    ("20261127120000", "2026-11-27 12:00:00 UTC"), ("202611271200", "2026-11-27 12:00 UTC"),
    ("2026112712", "2026-11-27 12:00 UTC"), ("20261127", "2026-11-27"), ("2026", "2026"), ("", ""),
    ("garbage", "garbage"),
])
def test_dates_are_readable(dtm: str, readable: str) -> None:
    assert readable_dtm(dtm) == readable


def get_all_answer(patient_id: str) -> etree._Element:
    """The registry's AdhocQueryResponse to GetAll for the patient (SOAP bytes on ``local:``)."""
    request = ebxml_serialize.adhoc_query_request(StoredQuery.GetAll, get_all_parameters(patient_id))
    result = SoapClient("local:registry").call(Action.RegistryStoredQuery, request)
    assert result.fault is None and result.body is not None
    return result.body


def test_the_fast_reader_agrees_with_xds_core_parser(registry) -> None:  # type: ignore[no-untyped-def]
    life = lifecycle()
    body = get_all_answer(life.patient_id)
    names = {SOURCE_B: "Hospital B"}
    fast = read_response(life.patient_id, body, manifest_format_codes=MANIFESTS, source_names=names)
    some = list(fast.documents.values())[:2]
    fast.complete(some)
    assert len(fast.pending) == 3 and some[0].entry_uuid not in fast.pending
    assert some[0].mime_type and some[0].class_code is not None  # read in full
    pending = next(d for d in fast.documents.values() if d.entry_uuid in fast.pending)
    assert pending.unique_id and pending.creation_time and pending.class_code is None  # not yet
    fast.complete(list(fast.documents.values()))
    assert fast.pending == {}
    reference = read_record(life.patient_id, ebxml_parse.parse_adhoc_query_response(body).objects,
                            manifest_format_codes=MANIFESTS, source_names=names)
    assert len(fast.documents) == 5 and fast.sources == reference.sources
    assert fast.documents == reference.documents


def test_top_level_submission_set_markers_are_read_through_xds_core(registry) -> None:  # type: ignore[no-untyped-def]
    """ebRIM lets a registry put the SubmissionSet marker Classification at the top level (ITI TF-3 4.2.3.3.1)."""
    life = lifecycle()
    body = get_all_answer(life.patient_id)
    expected = read_response(life.patient_id, body, manifest_format_codes=MANIFESTS)
    expected.complete(list(expected.documents.values()))
    rim = "{urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0}"
    object_list = body.find(f"{rim}RegistryObjectList")
    moved = 0
    for package in object_list.findall(f"{rim}RegistryPackage"):
        markers = package.findall(f"{rim}Classification[@classificationNode='{ClassificationNode.SUBMISSION_SET}']")
        for marker in markers:
            package.remove(marker)
            marker.set("classifiedObject", package.get("id"))
            object_list.append(marker)
            moved += 1
    assert moved == 5
    moved_record = read_response(life.patient_id, body, manifest_format_codes=MANIFESTS)
    assert moved_record.pending == {}  # read through xds_core: complete from the start
    assert [g.name for g in moved_record.sources] == ["Hospital A", f"Source {SOURCE_B}"]
    assert moved_record.sources == expected.sources
