"""The stored-query value grammar and parameter rules (xds_registry.stored_query.parameters)."""

from __future__ import annotations

from pathlib import Path

import pytest

from xds_core.errors import ErrorCode, XdsError
from xds_core.metadata.values import Code
from xds_core.safe_xml import parse_xml
from xds_core.vocabulary import StoredQuery
from xds_registry.stored_query import parameters as prm
from xds_registry.stored_query.parameters import (
    Kind,
    ValueSyntaxError,
    normalize_dtm,
    parse_parameters,
    tokenize_value,
)

APPROVED = "('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"
PID = "'1234^^^&1.2.3&ISO'"
FIND = StoredQuery.FindDocuments.value


def codes_of(error: XdsError) -> list[str]:
    return [e.error_code for e in error.errors]


def find(*extra: tuple[str, list[str]]) -> prm.QueryParameters:
    return parse_parameters(FIND, [(prm.DE_PATIENT_ID, [PID]), (prm.DE_STATUS, [APPROVED]), *extra])


# --- grammar ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "expected"), [
    ("'abc'", [("abc", True)]),
    ("  'abc'  ", [("abc", True)]),
    ("('a', 'b')", [("a", True), ("b", True)]),
    ("('a','b' ,  'c')", [("a", True), ("b", True), ("c", True)]),
    ("20041224", [("20041224", False)]),
    ("(2004, 2005)", [("2004", False), ("2005", False)]),
    ("'O''Brien'", [("O'Brien", True)]),
    ("('a,b', 'c)')", [("a,b", True), ("c)", True)]),
    ("'id^^^&1.2.3&ISO'", [("id^^^&1.2.3&ISO", True)]),
])
def test_tokenize_accepts_quoted_lists_and_unquoted_numbers(raw: str, expected: list[tuple[str, bool]]) -> None:
    assert [(t.text, t.quoted) for t in tokenize_value(raw)] == expected


@pytest.mark.parametrize("raw", ["", "   ", "()", "('a'", "'abc", "('a' 'b')", "'a', 'b'", "('a',)", "(,'a')",
                                 "a b"])
def test_tokenize_rejects_malformed_values(raw: str) -> None:
    with pytest.raises(ValueSyntaxError):
        tokenize_value(raw)


@pytest.mark.parametrize(("value", "expected"), [
    ("2005", "20050101000000"),
    ("200412", "20041201000000"),
    ("20041224", "20041224000000"),
    ("200401010934", "20040101093400"),
    ("20041224235050", "20041224235050"),
    ("20041224235050.123", "20041224235050"),
    ("20040101010000+0100", "20040101000000"),
    ("20040101-0230", "20040101023000"),
])
def test_dtm_is_normalized_to_the_earliest_utc_instant(value: str, expected: str) -> None:
    assert normalize_dtm(value) == expected


@pytest.mark.parametrize("value", ["200", "20041", "20041301", "20040230", "2004122425", "abcd", "2004-12-24",
                                   "2005\n", "\u0662\u0660\u0660\u0665"])
def test_invalid_dtm_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        normalize_dtm(value)


# --- conversion and rules --------------------------------------------------------------------------

def test_find_documents_minimal_parameters() -> None:
    params = find()
    assert params.value(prm.DE_PATIENT_ID) == "1234^^^&1.2.3&ISO"
    assert params.values(prm.DE_STATUS) == ["urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"]
    assert prm.DE_CLASS_CODE not in params


def test_codes_are_parsed_as_code_and_scheme() -> None:
    params = find((prm.DE_CLASS_CODE,
                   ["('SUMMARIES^^1.3.6.1.4.1.19376.1.2.6.1', 'HEALTH^^1.3.6.1.4.1.19376.1.2.6.1')"]))
    assert params.values(prm.DE_CLASS_CODE) == [Code("SUMMARIES", "1.3.6.1.4.1.19376.1.2.6.1"),
                                               Code("HEALTH", "1.3.6.1.4.1.19376.1.2.6.1")]


def test_a_list_may_be_split_across_several_values() -> None:
    params = parse_parameters(StoredQuery.GetDocuments.value,
                              [(prm.DE_ENTRY_UUID, ["('urn:uuid:1')", "('urn:uuid:2')", "'urn:uuid:3'"])])
    assert params.values(prm.DE_ENTRY_UUID) == ["urn:uuid:1", "urn:uuid:2", "urn:uuid:3"]


def test_single_valued_parameter_accepts_a_one_element_list() -> None:
    assert find((prm.DE_CREATION_FROM, ["(20041224)"])).value(prm.DE_CREATION_FROM) == "20041224000000"
    assert parse_parameters(FIND, [(prm.DE_PATIENT_ID, [f"({PID})"]), (prm.DE_STATUS, [APPROVED])]).value(
        prm.DE_PATIENT_ID) == "1234^^^&1.2.3&ISO"


@pytest.mark.parametrize("name", [prm.DE_EVENT_CODE_LIST, prm.DE_CONFIDENTIALITY_CODE])
def test_and_or_parameters_keep_one_group_per_slot(name: str) -> None:
    params = find((name, ["('a^^s1', 'b^^s1')"]), (name, ["('c^^s2')"]))
    assert params.and_groups(name) == [[Code("a", "s1"), Code("b", "s1")], [Code("c", "s2")]]


def test_folder_code_list_and_reference_id_list_may_repeat() -> None:
    folders = parse_parameters(StoredQuery.FindFolders.value, [
        (prm.FOLDER_PATIENT_ID, [PID]), (prm.FOLDER_STATUS, [APPROVED]),
        (prm.FOLDER_CODE_LIST, ["('a^^s')"]), (prm.FOLDER_CODE_LIST, ["('b^^s')"])])
    assert len(folders.and_groups(prm.FOLDER_CODE_LIST)) == 2
    refs = parse_parameters(StoredQuery.FindDocumentsByReferenceId.value, [
        (prm.DE_PATIENT_ID, [PID]), (prm.DE_STATUS, [APPROVED]),
        (prm.DE_REFERENCE_ID_LIST, ["('x^^^&1.2&ISO^urn:ihe:iti:xds:2013:order')"]),
        (prm.DE_REFERENCE_ID_LIST, ["('y^^^&1.2&ISO^urn:ihe:iti:xds:2013:order')"])])
    assert len(refs.and_groups(prm.DE_REFERENCE_ID_LIST)) == 2


def test_repeating_a_plain_multi_valued_slot_is_param_number() -> None:
    with pytest.raises(XdsError) as info:
        find((prm.DE_CLASS_CODE, ["('a^^s')"]), (prm.DE_CLASS_CODE, ["('b^^s')"]))
    assert codes_of(info.value) == [ErrorCode.XDSStoredQueryParamNumber]


def test_several_values_for_a_single_valued_parameter_is_param_number() -> None:
    with pytest.raises(XdsError) as info:
        parse_parameters(FIND, [(prm.DE_PATIENT_ID, [f"({PID}, 'other^^^&1.2.3&ISO')"]), (prm.DE_STATUS, [APPROVED])])
    assert codes_of(info.value) == [ErrorCode.XDSStoredQueryParamNumber]
    with pytest.raises(XdsError) as info:
        find((prm.DE_CREATION_FROM, ["2004"]), (prm.DE_CREATION_FROM, ["2005"]))
    assert codes_of(info.value) == [ErrorCode.XDSStoredQueryParamNumber]


def test_missing_required_parameters_are_all_reported() -> None:
    with pytest.raises(XdsError) as info:
        parse_parameters(FIND, [])
    assert codes_of(info.value) == [ErrorCode.XDSStoredQueryMissingParam] * 2
    assert {e.location for e in info.value.errors} == {prm.DE_PATIENT_ID, prm.DE_STATUS}


@pytest.mark.parametrize(("raw", "why"), [
    ("('a^^')", "code without scheme"),
    ("('Dialysis')", "code without ^^"),
    ("('^^1.2.3')", "scheme without code"),
    ("(SUMMARIES^^1.2)", "unquoted string"),
    ("('a^^s'", "unbalanced"),
])
def test_malformed_code_is_registry_error(raw: str, why: str) -> None:
    with pytest.raises(XdsError) as info:
        find((prm.DE_CLASS_CODE, [raw]))
    assert codes_of(info.value) == [ErrorCode.XDSRegistryError], why


def test_malformed_time_is_registry_error() -> None:
    with pytest.raises(XdsError) as info:
        find((prm.DE_CREATION_FROM, ["2004-12-24"]))
    assert codes_of(info.value) == [ErrorCode.XDSRegistryError]


def test_all_findings_are_collected() -> None:
    with pytest.raises(XdsError) as info:
        parse_parameters(FIND, [(prm.DE_CLASS_CODE, ["('a^^')"]), (prm.DE_CREATION_TO, ["x"])])
    assert sorted(codes_of(info.value)) == sorted([ErrorCode.XDSRegistryError, ErrorCode.XDSRegistryError,
                                                   ErrorCode.XDSStoredQueryMissingParam,
                                                   ErrorCode.XDSStoredQueryMissingParam])


def test_unknown_parameters_are_ignored() -> None:
    params = find(("$XDSDocumentEntryPracticeSettingCodeScheme", ["('Connect-a-thon practiceSettingCodes')"]))
    assert "$XDSDocumentEntryPracticeSettingCodeScheme" not in params


def test_unknown_query_id() -> None:
    with pytest.raises(XdsError) as info:
        parse_parameters("urn:uuid:00000000-0000-0000-0000-000000000000", [])
    assert codes_of(info.value) == [ErrorCode.XDSUnknownStoredQuery]


@pytest.mark.parametrize(("query", "group"), [
    (StoredQuery.GetDocuments, (prm.DE_ENTRY_UUID, prm.DE_UNIQUE_ID)),
    (StoredQuery.GetFolders, (prm.FOLDER_ENTRY_UUID, prm.FOLDER_UNIQUE_ID)),
    (StoredQuery.GetSubmissionSetAndContents, (prm.SS_ENTRY_UUID, prm.SS_UNIQUE_ID)),
    (StoredQuery.GetFolderAndContents, (prm.FOLDER_ENTRY_UUID, prm.FOLDER_UNIQUE_ID)),
    (StoredQuery.GetFoldersForDocument, (prm.DE_ENTRY_UUID, prm.DE_UNIQUE_ID)),
    (StoredQuery.GetDocumentsAndAssociations, (prm.DE_ENTRY_UUID, prm.DE_UNIQUE_ID)),
])
def test_exactly_one_of_the_selectors(query: StoredQuery, group: tuple[str, str]) -> None:
    extra = [(prm.ASSOCIATION_TYPES, ["('urn:ihe:iti:2007:AssociationType:RPLC')"])] \
        if query is StoredQuery.GetRelatedDocuments else []
    with pytest.raises(XdsError) as info:
        parse_parameters(query.value, extra)
    assert codes_of(info.value) == [ErrorCode.XDSStoredQueryMissingParam]
    with pytest.raises(XdsError) as info:
        parse_parameters(query.value, [(group[0], ["'urn:uuid:1'"]), (group[1], ["'1.2.3'"]), *extra])
    assert codes_of(info.value) == [ErrorCode.XDSStoredQueryParamNumber]
    assert parse_parameters(query.value, [(group[1], ["'1.2.3'"]), *extra]).values(group[1]) == ["1.2.3"]


def test_get_related_documents_needs_association_types() -> None:
    with pytest.raises(XdsError) as info:
        parse_parameters(StoredQuery.GetRelatedDocuments.value, [(prm.DE_UNIQUE_ID, ["'1.2.3'"])])
    assert codes_of(info.value) == [ErrorCode.XDSStoredQueryMissingParam]


def test_get_submission_set_and_contents_selector_is_single_valued() -> None:
    with pytest.raises(XdsError) as info:
        parse_parameters(StoredQuery.GetSubmissionSetAndContents.value, [(prm.SS_UNIQUE_ID, ["('1.2', '1.3')"])])
    assert codes_of(info.value) == [ErrorCode.XDSStoredQueryParamNumber]


def test_multi_patient_find_documents_needs_one_of_its_anchor_parameters() -> None:
    query = StoredQuery.FindDocumentsForMultiplePatients.value
    with pytest.raises(XdsError) as info:
        parse_parameters(query, [(prm.DE_STATUS, [APPROVED])])
    assert codes_of(info.value) == [ErrorCode.XDSStoredQueryMissingParam]
    params = parse_parameters(query, [(prm.DE_STATUS, [APPROVED]),
                                      (prm.DE_PATIENT_ID, ["('a^^^&1.2&ISO', 'b^^^&1.2&ISO')"])])
    assert params.values(prm.DE_PATIENT_ID) == ["a^^^&1.2&ISO", "b^^^&1.2&ISO"]
    assert parse_parameters(query, [(prm.DE_STATUS, [APPROVED]), (prm.DE_HCFT_CODE, ["('x^^y')"])])


def test_multi_patient_find_folders_needs_patient_or_code_list() -> None:
    query = StoredQuery.FindFoldersForMultiplePatients.value
    with pytest.raises(XdsError) as info:
        parse_parameters(query, [(prm.FOLDER_STATUS, [APPROVED])])
    assert codes_of(info.value) == [ErrorCode.XDSStoredQueryMissingParam]
    assert parse_parameters(query, [(prm.FOLDER_STATUS, [APPROVED]), (prm.FOLDER_CODE_LIST, ["('x^^y')"])])


def test_metadata_level_is_an_unquoted_integer() -> None:
    assert find((prm.METADATA_LEVEL, ["1"])).value(prm.METADATA_LEVEL) == 1
    with pytest.raises(XdsError):
        find((prm.METADATA_LEVEL, ["one"]))


def test_every_stored_query_has_a_specification() -> None:
    assert set(prm.SPECS) == set(StoredQuery)
    for spec in prm.SPECS.values():
        for name in spec.required + tuple(n for g in spec.exactly_one_of + spec.at_least_one_of for n in g):
            assert name in spec.params, (spec.query.name, name)
        for param in spec.params.values():
            assert not param.and_or or param.multiple
            assert param.kind in Kind


# --- the real requests of the NIST testkit ------------------------------------------------------

def _adhoc_queries(corpus_dir: Path) -> list[Path]:
    files = sorted((corpus_dir / "nist").glob("**/*.xml"))
    out = []
    for path in files:
        data = path.read_bytes()
        if b"AdhocQueryRequest" in data and b"AdhocQuery " in data:
            out.append(path)
    return out


def _slots(path: Path) -> tuple[str, list[tuple[str, list[str]]]]:
    data = path.read_bytes()
    # The testkit fills $placeholders$ in at run time; put well-formed values there.
    for placeholder, value in ((b"$patient_id1$", b"p1^^^&amp;1.2.3&amp;ISO"),
                               (b"$patient_id2$", b"p2^^^&amp;1.2.3&amp;ISO"),
                               (b"$patient_id$", b"p^^^&amp;1.2.3&amp;ISO"),
                               (b"$lastyear$", b"2020"), (b"$now$", b"20261127120000")):
        data = data.replace(placeholder, value)
    root = parse_xml(data)
    query = next(root.iter("{*}AdhocQuery"))
    slots = [(s.get("name"), [v.text or "" for v in s.iter("{*}Value")]) for s in query.iter("{*}Slot")]
    return query.get("id"), slots


#: NIST sections whose request is meant to fail on its parameters.
_EXPECTED_PARAMETER_FAILURES = {"classcode_scheme_mismatch", "old_scheme", "nothing"}


def test_every_nist_stored_query_request_parses(corpus_dir: Path) -> None:
    paths = _adhoc_queries(corpus_dir)
    assert len(paths) > 100
    parsed = failed = 0
    for path in paths:
        query_id, slots = _slots(path)
        if query_id not in {q.value for q in StoredQuery}:
            continue  # e.g. a deliberately unknown id
        section = path.parent.name
        try:
            parse_parameters(query_id, slots)
        except XdsError as exc:
            assert section in _EXPECTED_PARAMETER_FAILURES, (path, exc)
            failed += 1
        else:
            assert section not in _EXPECTED_PARAMETER_FAILURES, path
            parsed += 1
    assert parsed > 100 and failed >= 3
