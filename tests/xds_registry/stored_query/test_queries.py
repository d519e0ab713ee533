"""Every stored query against a registry populated through ITI-42 (see conftest.py)."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.xds_registry.registry_helpers import fed_patient, load_submission
from xds_core import ns
from xds_core.errors import ErrorCode, XdsError
from xds_core.vocabulary import AssociationType, AvailabilityStatus, ObjectType, StoredQuery
from xds_registry.register_document_set import register_document_set
from xds_registry.stored_query import parameters as prm
from xds_registry.stored_query.execute import QueryConfig, StoredQueryOutcome, Transaction

from .conftest import (
    CLASS_A,
    CLASS_B,
    CONF_N,
    CONF_R,
    EVENT_1,
    EVENT_2,
    FOLDER_CODE,
    FORMAT_2,
    HOME,
    P1,
    P2,
    P_UNKNOWN,
    REF_ACC1,
    Registry,
    q,
    ql,
    run,
)

APPROVED = AvailabilityStatus.APPROVED.value
DEPRECATED = AvailabilityStatus.DEPRECATED.value
STABLE = ObjectType.STABLE_DOCUMENT_ENTRY.value
ON_DEMAND = ObjectType.ON_DEMAND_DOCUMENT_ENTRY.value
RIM = f"{{{ns.RIM}}}"


def names(registry: Registry, outcome: StoredQueryOutcome) -> list[str]:
    return registry.names([el.get("id") for el in outcome.objects])


def find_documents(*extra: tuple[str, list[str]], statuses: tuple[str, ...] = (APPROVED,), patient: str = P1,
                   return_type: str = "ObjectRef") -> StoredQueryOutcome:
    return run(StoredQuery.FindDocuments,
               [(prm.DE_PATIENT_ID, [q(patient)]), (prm.DE_STATUS, [ql(*statuses)]), *extra], return_type=return_type)


def error_codes(info: pytest.ExceptionInfo[XdsError]) -> list[str]:
    return [e.error_code for e in info.value.errors]


# --- FindDocuments -----------------------------------------------------------------------------------

def test_find_documents_by_patient_and_status(registry: Registry) -> None:
    assert names(registry, find_documents()) == ["doc_b", "doc_d"]
    assert names(registry, find_documents(statuses=(APPROVED, DEPRECATED))) == ["doc_a", "doc_b", "doc_d"]
    assert names(registry, find_documents(statuses=(DEPRECATED,))) == ["doc_a"]


def test_find_documents_for_an_unknown_patient_is_an_empty_success(registry: Registry) -> None:
    assert find_documents(patient=P_UNKNOWN).objects == []


def test_document_entry_type_defaults_to_stable_only(registry: Registry) -> None:
    assert "doc_c" not in names(registry, find_documents())
    assert names(registry, find_documents((prm.DE_TYPE, [ql(ON_DEMAND)]))) == ["doc_c"]
    assert names(registry, find_documents((prm.DE_TYPE, [ql(STABLE, ON_DEMAND)]))) == ["doc_b", "doc_c", "doc_d"]


def test_class_code_values_are_ored(registry: Registry) -> None:
    assert names(registry, find_documents((prm.DE_CLASS_CODE, [ql(str(CLASS_B))]))) == ["doc_b"]
    assert names(registry, find_documents((prm.DE_CLASS_CODE, [ql(str(CLASS_A), str(CLASS_B))]))) == ["doc_b", "doc_d"]
    assert find_documents((prm.DE_CLASS_CODE, [ql("A^^other.scheme")])).objects == []


def test_event_codes_or_inside_a_slot_and_between_slots(registry: Registry) -> None:
    both = (APPROVED, DEPRECATED)
    assert names(registry, find_documents((prm.DE_EVENT_CODE_LIST, [ql(str(EVENT_1))]), statuses=both)) == \
        ["doc_a", "doc_b"]
    assert names(registry, find_documents((prm.DE_EVENT_CODE_LIST, [ql(str(EVENT_2), str(EVENT_1))]),
                                          statuses=both)) == ["doc_a", "doc_b"]
    assert names(registry, find_documents((prm.DE_EVENT_CODE_LIST, [ql(str(EVENT_1))]),
                                          (prm.DE_EVENT_CODE_LIST, [ql(str(EVENT_2))]), statuses=both)) == ["doc_a"]


def test_confidentiality_codes_and_semantics(registry: Registry) -> None:
    assert names(registry, find_documents((prm.DE_CONFIDENTIALITY_CODE, [ql(str(CONF_R))]))) == ["doc_b"]
    assert names(registry, find_documents((prm.DE_CONFIDENTIALITY_CODE, [ql(str(CONF_N))]))) == ["doc_b", "doc_d"]
    assert names(registry, find_documents((prm.DE_CONFIDENTIALITY_CODE, [ql(str(CONF_N))]),
                                          (prm.DE_CONFIDENTIALITY_CODE, [ql(str(CONF_R))]))) == ["doc_b"]


@pytest.mark.parametrize(("low", "high", "expected"), [
    ("20200101120000", None, ["doc_a", "doc_b", "doc_d"]),     # From is inclusive
    (None, "20200101120000", []),                             # To is exclusive
    (None, "20200101120001", ["doc_a"]),
    ("2020", "202002", ["doc_a"]),
    ("20200201", "20200301", ["doc_b"]),
    ("202001011300+0100", "20200101120001", ["doc_a"]),       # time zone folded into UTC
])
def test_creation_time_range_edges(registry: Registry, low: str | None, high: str | None,
                                   expected: list[str]) -> None:
    extra = ([(prm.DE_CREATION_FROM, [low])] if low else []) + ([(prm.DE_CREATION_TO, [high])] if high else [])
    assert names(registry, find_documents(*extra, statuses=(APPROVED, DEPRECATED))) == expected


def test_service_time_ranges(registry: Registry) -> None:
    both = (APPROVED, DEPRECATED)
    assert names(registry, find_documents((prm.DE_SERVICE_START_FROM, ["2019"]), (prm.DE_SERVICE_START_TO, ["2020"]),
                                          statuses=both)) == ["doc_a"]
    assert names(registry, find_documents((prm.DE_SERVICE_STOP_FROM, ["2021"]), statuses=both)) == []


def test_codes_on_columns(registry: Registry) -> None:
    assert names(registry, find_documents((prm.DE_FORMAT_CODE, [ql(str(FORMAT_2))]))) == ["doc_b"]
    assert names(registry, find_documents((prm.DE_TYPE_CODE, [ql(f"T1^^{CLASS_A.scheme}")]))) == ["doc_b", "doc_d"]
    assert names(registry, find_documents((prm.DE_PRACTICE_SETTING_CODE, [ql(f"PS1^^{CLASS_A.scheme}")]),
                                          (prm.DE_HCFT_CODE, [ql(f"H1^^{CLASS_A.scheme}")]),
                                          (prm.DE_CLASS_CODE, [ql(str(CLASS_B))]))) == ["doc_b"]


def test_author_person_like_wildcards(registry: Registry) -> None:
    both = (APPROVED, DEPRECATED)
    assert names(registry, find_documents((prm.DE_AUTHOR_PERSON, [ql("%Ford%")]), statuses=both)) == ["doc_a"]
    assert names(registry, find_documents((prm.DE_AUTHOR_PERSON, [ql("^_mith%")]), statuses=both)) == ["doc_b"]
    assert names(registry, find_documents((prm.DE_AUTHOR_PERSON, [ql("%Ford%", "%Smith%")]), statuses=both)) == \
        ["doc_a", "doc_b"]
    # Without a wildcard it is an exact match.
    assert find_documents((prm.DE_AUTHOR_PERSON, [ql("Ford")]), statuses=both).objects == []


def test_find_documents_by_reference_id(registry: Registry) -> None:
    outcome = run(StoredQuery.FindDocumentsByReferenceId, [
        (prm.DE_PATIENT_ID, [q(P1)]), (prm.DE_STATUS, [ql(APPROVED, DEPRECATED)]),
        (prm.DE_REFERENCE_ID_LIST, [ql(REF_ACC1)])])
    assert names(registry, outcome) == ["doc_a"]
    with pytest.raises(XdsError) as info:
        run(StoredQuery.FindDocumentsByReferenceId, [(prm.DE_PATIENT_ID, [q(P1)]), (prm.DE_STATUS, [ql(APPROVED)])])
    assert error_codes(info) == [ErrorCode.XDSStoredQueryMissingParam]


def test_find_documents_leaf_class_returns_stored_metadata_with_home(registry: Registry) -> None:
    outcome = find_documents(return_type="LeafClass")
    assert [el.tag for el in outcome.objects] == [f"{RIM}ExtrinsicObject"] * 2
    assert [el.get("id") for el in outcome.objects] == [registry.uuid["doc_b"], registry.uuid["doc_d"]]
    assert {el.get("home") for el in outcome.objects} == {HOME}
    assert {el.get("status") for el in outcome.objects} == {APPROVED}
    external_ids = {e.get("value") for e in outcome.objects[0].iter(f"{RIM}ExternalIdentifier")}
    assert registry.uid["doc_b"] in external_ids and P1 in external_ids


def test_deprecated_document_leaf_class_carries_deprecated_status(registry: Registry) -> None:
    outcome = find_documents(statuses=(DEPRECATED,), return_type="LeafClass")
    assert [el.get("status") for el in outcome.objects] == [DEPRECATED]


def test_object_refs_carry_home(registry: Registry) -> None:
    outcome = find_documents()
    assert [el.tag for el in outcome.objects] == [f"{RIM}ObjectRef"] * 2
    assert {el.get("home") for el in outcome.objects} == {HOME}


def test_too_many_results(registry: Registry) -> None:
    small = QueryConfig(max_results=1, home_community_id=None)
    with pytest.raises(XdsError) as info:
        run(StoredQuery.FindDocuments, [(prm.DE_PATIENT_ID, [q(P1)]), (prm.DE_STATUS, [ql(APPROVED)])], config=small)
    assert error_codes(info) == [ErrorCode.XDSTooManyResults]
    exact = QueryConfig(max_results=2, home_community_id=None)
    outcome = run(StoredQuery.FindDocuments, [(prm.DE_PATIENT_ID, [q(P1)]), (prm.DE_STATUS, [ql(APPROVED)])],
                  config=exact)
    assert len(outcome.objects) == 2
    assert outcome.objects[0].get("home") is None


# --- FindSubmissionSets / FindFolders -------------------------------------------------------------

def find_submission_sets(*extra: tuple[str, list[str]]) -> StoredQueryOutcome:
    return run(StoredQuery.FindSubmissionSets, [(prm.SS_PATIENT_ID, [q(P1)]), (prm.SS_STATUS, [ql(APPROVED)]), *extra])


def test_find_submission_sets(registry: Registry) -> None:
    assert names(registry, find_submission_sets()) == ["ss1", "ss2", "ss3", "ss4"]
    assert names(registry, find_submission_sets((prm.SS_SOURCE_ID, [ql("1.2.3.4.5.6.999")]))) == \
        ["ss1", "ss2", "ss3", "ss4"]
    assert find_submission_sets((prm.SS_SOURCE_ID, [ql("9.9.9")])).objects == []
    assert len(find_submission_sets((prm.SS_SUBMISSION_TIME_FROM, ["200412"]),
                                    (prm.SS_SUBMISSION_TIME_TO, ["200501"])).objects) == 4
    assert find_submission_sets((prm.SS_SUBMISSION_TIME_TO, ["20041225235050"])).objects == []
    assert len(find_submission_sets((prm.SS_AUTHOR_PERSON, [q("%Dopplemeyer%")])).objects) == 4
    assert find_submission_sets((prm.SS_AUTHOR_PERSON, [q("%Smith%")])).objects == []
    assert len(find_submission_sets((prm.SS_CONTENT_TYPE, [ql(f"CT1^^{CLASS_A.scheme}")])).objects) == 4
    assert find_submission_sets((prm.SS_CONTENT_TYPE, [ql("CT2^^x")])).objects == []


def test_find_folders(registry: Registry) -> None:
    base = [(prm.FOLDER_PATIENT_ID, [q(P1)]), (prm.FOLDER_STATUS, [ql(APPROVED)])]
    assert names(registry, run(StoredQuery.FindFolders, base)) == ["folder_f"]
    assert names(registry, run(StoredQuery.FindFolders, [*base, (prm.FOLDER_CODE_LIST, [ql(str(FOLDER_CODE))])])) \
        == ["folder_f"]
    assert run(StoredQuery.FindFolders, [*base, (prm.FOLDER_CODE_LIST, [ql(str(FOLDER_CODE))]),
                                         (prm.FOLDER_CODE_LIST, [ql("x^^y")])]).objects == []
    assert run(StoredQuery.FindFolders, [*base, (prm.FOLDER_LAST_UPDATE_FROM, ["2001"]),
                                         (prm.FOLDER_LAST_UPDATE_TO, ["2003"])]).objects == []
    assert names(registry, run(StoredQuery.FindFolders, [*base, (prm.FOLDER_LAST_UPDATE_FROM, ["2020"])])) == \
        ["folder_f"]


# --- GetAll ------------------------------------------------------------------------------------------

def test_get_all(registry: Registry) -> None:
    outcome = run(StoredQuery.GetAll, [(prm.PATIENT_ID, [q(P1)]), (prm.DE_STATUS, [ql(APPROVED, DEPRECATED)]),
                                       (prm.SS_STATUS, [ql(APPROVED)]), (prm.FOLDER_STATUS, [ql(APPROVED)])],
                  return_type="LeafClass")
    objects = [o for o in names(registry, outcome) if not o.startswith("urn:uuid:")]
    assert objects == ["ss1", "ss2", "ss3", "ss4", "folder_f", "doc_a", "doc_b", "doc_d"]
    associations = [el for el in outcome.objects if el.tag == f"{RIM}Association"]
    # 3 SS->DE (the On-Demand doc_c is not returned, nor its HasMember), SS->Folder, Folder->DE,
    # SS->(Folder->DE), RPLC
    assert len(associations) == 7
    assert {el.get("home") for el in outcome.objects} == {HOME}


def test_get_all_with_format_filter(registry: Registry) -> None:
    outcome = run(StoredQuery.GetAll, [(prm.PATIENT_ID, [q(P1)]), (prm.DE_STATUS, [ql(APPROVED)]),
                                       (prm.SS_STATUS, [ql(APPROVED)]), (prm.FOLDER_STATUS, [ql(APPROVED)]),
                                       (prm.DE_FORMAT_CODE, [ql(str(FORMAT_2))])])
    objects = [o for o in names(registry, outcome) if not o.startswith("urn:uuid:")]
    assert objects == ["ss1", "ss2", "ss3", "ss4", "folder_f", "doc_b"]


def test_get_all_unknown_patient(registry: Registry) -> None:
    outcome = run(StoredQuery.GetAll, [(prm.PATIENT_ID, [q(P_UNKNOWN)]), (prm.DE_STATUS, [ql(APPROVED)]),
                                       (prm.SS_STATUS, [ql(APPROVED)]), (prm.FOLDER_STATUS, [ql(APPROVED)])])
    assert outcome.objects == []


# --- GetDocuments / GetFolders --------------------------------------------------------------------

def test_get_documents_by_uuid_uid_and_lid(registry: Registry) -> None:
    uuids = [registry.uuid["doc_a"], registry.uuid["doc_c"]]
    assert names(registry, run(StoredQuery.GetDocuments, [(prm.DE_ENTRY_UUID, [ql(*uuids)])])) == ["doc_a", "doc_c"]
    assert names(registry, run(StoredQuery.GetDocuments, [(prm.DE_UNIQUE_ID, [ql(registry.uid["doc_b"])])])) == \
        ["doc_b"]
    assert names(registry, run(StoredQuery.GetDocuments, [(prm.DE_LOGICAL_ID, [ql(registry.uuid["doc_b"])])])) == \
        ["doc_b"]
    assert run(StoredQuery.GetDocuments, [(prm.DE_ENTRY_UUID, [ql("urn:uuid:00000000-0000-0000-0000-000000000000")])]
               ).objects == []


def test_get_documents_of_two_patients_leaf_class_is_not_single_patient(registry: Registry) -> None:
    params = [(prm.DE_ENTRY_UUID, [ql(registry.uuid["doc_a"], registry.uuid["doc_e"])])]
    with pytest.raises(XdsError) as info:
        run(StoredQuery.GetDocuments, params, return_type="LeafClass")
    assert error_codes(info) == [ErrorCode.XDSResultNotSinglePatient]
    # ObjectRef carries no patient data: allowed (NIST 12368 doc_objectref).
    assert names(registry, run(StoredQuery.GetDocuments, params)) == ["doc_a", "doc_e"]


def test_get_folders(registry: Registry) -> None:
    assert names(registry, run(StoredQuery.GetFolders, [(prm.FOLDER_UNIQUE_ID, [ql(registry.uid["folder_f"])])],
                               return_type="LeafClass")) == ["folder_f"]
    params = [(prm.FOLDER_ENTRY_UUID, [ql(registry.uuid["folder_f"], registry.uuid["folder_g"])])]
    with pytest.raises(XdsError) as info:
        run(StoredQuery.GetFolders, params, return_type="LeafClass")
    assert error_codes(info) == [ErrorCode.XDSResultNotSinglePatient]
    assert names(registry, run(StoredQuery.GetFolders, params)) == ["folder_f", "folder_g"]


# --- associations ------------------------------------------------------------------------------------

def _associations(outcome: StoredQueryOutcome) -> list[tuple[str, str, str]]:
    return [(el.get("associationType"), el.get("sourceObject"), el.get("targetObject"))
            for el in outcome.objects if el.tag == f"{RIM}Association"]


def test_get_associations(registry: Registry) -> None:
    outcome = run(StoredQuery.GetAssociations, [(prm.UUID, [ql(registry.uuid["doc_a"])])], return_type="LeafClass")
    assert sorted(_associations(outcome)) == sorted([
        (AssociationType.HasMember.value, registry.uuid["ss1"], registry.uuid["doc_a"]),
        (AssociationType.RPLC.value, registry.uuid["doc_d"], registry.uuid["doc_a"])])


def test_get_documents_and_associations(registry: Registry) -> None:
    outcome = run(StoredQuery.GetDocumentsAndAssociations, [(prm.DE_UNIQUE_ID, [ql(registry.uid["doc_b"])])],
                  return_type="LeafClass")
    assert [el.get("id") for el in outcome.objects if el.tag == f"{RIM}ExtrinsicObject"] == [registry.uuid["doc_b"]]
    assert sorted(_associations(outcome)) == sorted([
        (AssociationType.HasMember.value, registry.uuid["ss2"], registry.uuid["doc_b"]),
        (AssociationType.HasMember.value, registry.uuid["folder_f"], registry.uuid["doc_b"])])


def test_get_submission_sets(registry: Registry) -> None:
    outcome = run(StoredQuery.GetSubmissionSets, [(prm.UUID, [ql(registry.uuid["doc_a"], registry.uuid["folder_f"])])],
                  return_type="LeafClass")
    assert [el.get("id") for el in outcome.objects if el.tag == f"{RIM}RegistryPackage"] == \
        [registry.uuid["ss1"], registry.uuid["ss2"]]
    assert sorted(_associations(outcome)) == sorted([
        (AssociationType.HasMember.value, registry.uuid["ss1"], registry.uuid["doc_a"]),
        (AssociationType.HasMember.value, registry.uuid["ss2"], registry.uuid["folder_f"])])


def test_get_submission_sets_of_two_patients(registry: Registry) -> None:
    params = [(prm.UUID, [ql(registry.uuid["doc_a"], registry.uuid["doc_e"])])]
    with pytest.raises(XdsError) as info:
        run(StoredQuery.GetSubmissionSets, params, return_type="LeafClass")
    assert error_codes(info) == [ErrorCode.XDSResultNotSinglePatient]
    assert len(run(StoredQuery.GetSubmissionSets, params).objects) == 4  # 2 SubmissionSets + 2 HasMembers


def test_get_submission_set_and_contents(registry: Registry) -> None:
    for selector in ((prm.SS_ENTRY_UUID, [q(registry.uuid["ss2"])]), (prm.SS_UNIQUE_ID, [q(registry.uid["ss2"])])):
        outcome = run(StoredQuery.GetSubmissionSetAndContents, [selector], return_type="LeafClass")
        objects = [o for o in names(registry, outcome) if not o.startswith("urn:uuid:")]
        assert objects == ["ss2", "folder_f", "doc_b"]
        assert len(_associations(outcome)) == 4  # SS->DE, SS->Folder, Folder->DE, SS->(Folder->DE)


def test_get_submission_set_and_contents_filters_documents_only(registry: Registry) -> None:
    outcome = run(StoredQuery.GetSubmissionSetAndContents,
                  [(prm.SS_ENTRY_UUID, [q(registry.uuid["ss2"])]), (prm.DE_FORMAT_CODE, [ql("none^^x")])])
    objects = [o for o in names(registry, outcome) if not o.startswith("urn:uuid:")]
    assert objects == ["ss2", "folder_f"]
    assert len(outcome.objects) == 3  # and only the SS->Folder HasMember
    assert run(StoredQuery.GetSubmissionSetAndContents,
               [(prm.SS_ENTRY_UUID, [q("urn:uuid:00000000-0000-0000-0000-000000000000")])]).objects == []


def test_get_submission_set_and_contents_on_demand_only_when_asked(registry: Registry) -> None:
    selector = (prm.SS_ENTRY_UUID, [q(registry.uuid["ss3"])])
    assert names(registry, run(StoredQuery.GetSubmissionSetAndContents, [selector])) == ["ss3"]
    outcome = run(StoredQuery.GetSubmissionSetAndContents, [selector, (prm.DE_TYPE, [ql(ON_DEMAND)])])
    assert names(registry, outcome)[:2] == ["ss3", "doc_c"]


def test_get_folder_and_contents(registry: Registry) -> None:
    outcome = run(StoredQuery.GetFolderAndContents, [(prm.FOLDER_UNIQUE_ID, [q(registry.uid["folder_f"])])],
                  return_type="LeafClass")
    assert names(registry, outcome)[:2] == ["folder_f", "doc_b"]
    assert _associations(outcome) == [
        (AssociationType.HasMember.value, registry.uuid["folder_f"], registry.uuid["doc_b"])]
    outcome = run(StoredQuery.GetFolderAndContents, [(prm.FOLDER_ENTRY_UUID, [q(registry.uuid["folder_f"])]),
                                                     (prm.DE_CONFIDENTIALITY_CODE, [ql(str(CONF_N))]),
                                                     (prm.DE_CONFIDENTIALITY_CODE, [ql("X^^y")])])
    assert names(registry, outcome) == ["folder_f"]


def test_get_folders_for_document(registry: Registry) -> None:
    assert names(registry, run(StoredQuery.GetFoldersForDocument, [(prm.DE_UNIQUE_ID, [q(registry.uid["doc_b"])])],
                               return_type="LeafClass")) == ["folder_f"]
    assert run(StoredQuery.GetFoldersForDocument, [(prm.DE_ENTRY_UUID, [q(registry.uuid["doc_a"])])]).objects == []


def test_get_related_documents(registry: Registry) -> None:
    types = (prm.ASSOCIATION_TYPES, [ql(AssociationType.RPLC.value, AssociationType.HasMember.value)])
    outcome = run(StoredQuery.GetRelatedDocuments, [(prm.DE_UNIQUE_ID, [q(registry.uid["doc_a"])]), types],
                  return_type="LeafClass")
    assert [el.get("id") for el in outcome.objects if el.tag == f"{RIM}ExtrinsicObject"] == \
        [registry.uuid["doc_a"], registry.uuid["doc_d"]]
    assert _associations(outcome) == [(AssociationType.RPLC.value, registry.uuid["doc_d"], registry.uuid["doc_a"])]
    # A document with no relationship (its Folder HasMember does not count): nothing.
    assert run(StoredQuery.GetRelatedDocuments, [(prm.DE_ENTRY_UUID, [q(registry.uuid["doc_b"])]), types]).objects == []
    # Other association types only: nothing.
    apnd_only = [(prm.DE_ENTRY_UUID, [q(registry.uuid["doc_d"])]),
                 (prm.ASSOCIATION_TYPES, [ql(AssociationType.APND.value)])]
    assert run(StoredQuery.GetRelatedDocuments, apnd_only).objects == []


def test_association_status_filter(registry: Registry) -> None:
    params = [(prm.UUID, [ql(registry.uuid["doc_a"])]), (prm.ASSOCIATION_STATUS, [ql(DEPRECATED)])]
    assert run(StoredQuery.GetAssociations, params).objects == []


# --- ITI-51 ------------------------------------------------------------------------------------------

def test_multi_patient_find_documents(registry: Registry) -> None:
    def mpq(*params: tuple[str, list[str]]) -> list[str]:
        return names(registry, run(StoredQuery.FindDocumentsForMultiplePatients,
                                   [(prm.DE_STATUS, [ql(APPROVED)]), *params],
                                   transaction=Transaction.MultiPatientStoredQuery, return_type="LeafClass"))
    assert mpq((prm.DE_CLASS_CODE, [ql(str(CLASS_A))])) == ["doc_d", "doc_e"]
    assert mpq((prm.DE_PATIENT_ID, [ql(P1, P2)])) == ["doc_b", "doc_d", "doc_e"]
    assert mpq((prm.DE_PATIENT_ID, [ql(P2)])) == ["doc_e"]
    assert mpq((prm.DE_EVENT_CODE_LIST, [ql(str(EVENT_1))])) == ["doc_b"]


def test_multi_patient_find_folders(registry: Registry) -> None:
    outcome = run(StoredQuery.FindFoldersForMultiplePatients,
                  [(prm.FOLDER_STATUS, [ql(APPROVED)]), (prm.FOLDER_CODE_LIST, [ql(str(FOLDER_CODE))])],
                  transaction=Transaction.MultiPatientStoredQuery)
    assert names(registry, outcome) == ["folder_f", "folder_g"]


def test_iti18_refuses_multi_patient_queries_and_iti51_the_others(registry: Registry) -> None:
    with pytest.raises(XdsError) as info:
        run(StoredQuery.FindDocumentsForMultiplePatients, [(prm.DE_STATUS, [ql(APPROVED)]),
                                                           (prm.DE_PATIENT_ID, [ql(P1)])])
    assert error_codes(info) == [ErrorCode.XDSUnknownStoredQuery]
    with pytest.raises(XdsError) as info:
        run(StoredQuery.FindDocuments, [(prm.DE_PATIENT_ID, [q(P1)]), (prm.DE_STATUS, [ql(APPROVED)])],
            transaction=Transaction.MultiPatientStoredQuery)
    assert error_codes(info) == [ErrorCode.XDSUnknownStoredQuery]


def test_bad_return_type(registry: Registry) -> None:
    with pytest.raises(XdsError) as info:
        find_documents(return_type="LeafClassWithRepositoryItem")
    assert error_codes(info) == [ErrorCode.XDSRegistryError]


# --- no N+1: one statement per query (+ one for associations) --------------------------------------

@pytest.mark.parametrize(("query", "statements"), [
    (StoredQuery.FindDocuments, 1),
    (StoredQuery.GetSubmissionSetAndContents, 2),
    (StoredQuery.GetAll, 2),
])
def test_statement_count_does_not_grow_with_results(registry: Registry, django_assert_num_queries,
                                                    query: StoredQuery, statements: int) -> None:
    params = {
        StoredQuery.FindDocuments: [(prm.DE_PATIENT_ID, [q(P1)]), (prm.DE_STATUS, [ql(APPROVED, DEPRECATED)]),
                                    (prm.DE_CLASS_CODE, [ql(str(CLASS_A), str(CLASS_B))]),
                                    (prm.DE_EVENT_CODE_LIST, [ql(str(EVENT_1))]),
                                    (prm.DE_CREATION_FROM, ["2019"]), (prm.DE_CREATION_TO, ["2021"])],
        StoredQuery.GetSubmissionSetAndContents: [(prm.SS_ENTRY_UUID, [q(registry.uuid["ss2"])])],
        StoredQuery.GetAll: [(prm.PATIENT_ID, [q(P1)]), (prm.DE_STATUS, [ql(APPROVED)]),
                             (prm.SS_STATUS, [ql(APPROVED)]), (prm.FOLDER_STATUS, [ql(APPROVED)])],
    }[query]
    with django_assert_num_queries(statements):
        outcome = run(query, params, return_type="LeafClass")
    assert outcome.objects


def test_too_many_results_counts_every_returned_object(registry: Registry) -> None:
    # ss2 + folder_f + doc_b = 3 objects, then 4 associations: 7 in all.
    params = [(prm.SS_ENTRY_UUID, [q(registry.uuid["ss2"])])]
    with pytest.raises(XdsError) as info:
        run(StoredQuery.GetSubmissionSetAndContents, params, config=QueryConfig(max_results=6, home_community_id=None))
    assert error_codes(info) == [ErrorCode.XDSTooManyResults]
    outcome = run(StoredQuery.GetSubmissionSetAndContents, params,
                  config=QueryConfig(max_results=7, home_community_id=None))
    assert len(outcome.objects) == 7


def test_get_related_documents_type_filter_applies_to_related_entries(registry: Registry) -> None:
    params = [(prm.DE_ENTRY_UUID, [q(registry.uuid["doc_a"])]),
              (prm.ASSOCIATION_TYPES, [ql(AssociationType.RPLC.value)])]
    # doc_d (the replacement) is Stable: filtered out when only On-Demand entries are asked for.
    assert run(StoredQuery.GetRelatedDocuments, [*params, (prm.DE_TYPE, [ql(ON_DEMAND)])]).objects == []
    assert len(run(StoredQuery.GetRelatedDocuments, [*params, (prm.DE_TYPE, [ql(STABLE)])]).objects) == 3


@pytest.mark.django_db
def test_get_folder_and_contents_after_rplc_returns_original_and_replacement() -> None:
    # NIST 12327: a replacement joins the replaced document's Folders (ITI TF-3 4.2.2.1.3); GetFolderAndContents
    # has no status parameter, so both the Deprecated original and the replacement come back with their HasMembers.
    pid = fed_patient()
    sub, uids = load_submission("folder_with_doc.xml", pid)
    original = register_document_set(sub).entry_uuids["Document01"]
    contents = run(StoredQuery.GetSubmissionSetAndContents, [(prm.SS_UNIQUE_ID, [q(uids["SubmissionSet01"])])],
                   return_type="LeafClass")
    assert Counter(el.tag for el in contents.objects) == {
        f"{RIM}RegistryPackage": 2, f"{RIM}ExtrinsicObject": 1, f"{RIM}Association": 4}
    register_document_set(load_submission("rplc.xml", pid, rplc_doc_uuid=original)[0])
    contents = run(StoredQuery.GetFolderAndContents, [(prm.FOLDER_UNIQUE_ID, [q(uids["Folder"])])],
                   return_type="LeafClass")
    assert Counter(el.tag for el in contents.objects) == {
        f"{RIM}RegistryPackage": 1, f"{RIM}ExtrinsicObject": 2, f"{RIM}Association": 2}
    assert original in {el.get("id") for el in contents.objects}
