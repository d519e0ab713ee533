"""Judging canned responses: status, error codes, contents legend, assertions, retrieve comparisons."""

from __future__ import annotations

import hashlib
from pathlib import Path

from conformance import expectations as ex
from conformance.xmlutil import parse

RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"
HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
SS_NODE = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
FOLDER_NODE = "urn:uuid:d9d542f3-6cc4-48b6-8870-ea235fbc94c2"
DE_UID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"


def failure(*errors: tuple[str, str, str]):
    items = "".join(f'<rs:RegistryError errorCode="{c}" codeContext="{ctx}" '
                    f'severity="urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:{sev}"/>' for c, ctx, sev in errors)
    return parse(f'<rs:RegistryResponse xmlns:rs="{RS}" status="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:'
                 f'Failure"><rs:RegistryErrorList>{items}</rs:RegistryErrorList></rs:RegistryResponse>'.encode())


def query_response(objects: str, status: str = "Success"):
    return parse(f'<query:AdhocQueryResponse xmlns:query="{QUERY}" xmlns:rim="{RIM}" '
                 f'status="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:{status}">'
                 f'<rim:RegistryObjectList>{objects}</rim:RegistryObjectList></query:AdhocQueryResponse>'.encode())


def document(uuid: str, status: str = APPROVED, uid: str = "1.2.3", extra: str = "") -> str:
    return (f'<rim:ExtrinsicObject id="{uuid}" status="{status}" mimeType="text/plain" '
            f'objectType="urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1">{extra}'
            f'<rim:ExternalIdentifier id="ei-{uuid}" registryObject="{uuid}" identificationScheme="{DE_UID}" '
            f'value="{uid}"/></rim:ExtrinsicObject>')


def package(uuid: str, node: str, status: str = APPROVED) -> str:
    return (f'<rim:RegistryPackage id="{uuid}" status="{status}"><rim:Classification id="c-{uuid}" '
            f'classifiedObject="{uuid}" classificationNode="{node}"/></rim:RegistryPackage>')


def association(source: str, target: str, kind: str = HAS_MEMBER, aid: str = "") -> str:
    return (f'<rim:Association id="{aid or "a-" + source + "-" + target}" sourceObject="{source}" '
            f'targetObject="{target}" associationType="{kind}"/>')


SS_ONE_DOC = query_response(package("ss", SS_NODE) + document("d1") + association("ss", "d1"))


def test_status_any_of_and_fault() -> None:
    status = ex.response_status(failure())
    assert ex.check_status(["Failure"], status, None) == []
    assert ex.check_status(["Success", "PartialSuccess"], status, None) == ["status Failure, expected Success or "
                                                                          "PartialSuccess"]
    assert ex.check_status(["Fault"], None, "Sender: bad") == []
    assert ex.check_status(["Success"], None, "Receiver: boom")[0].startswith("SOAP Fault")
    partial = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"
    assert ex.check_status(["PartialSuccess"], partial, None) == []


def test_status_of_a_retrieve_answer_is_its_registry_response() -> None:
    body = parse(f'<x:RetrieveDocumentSetResponse xmlns:x="urn:ihe:iti:xds-b:2007"><rs:RegistryResponse xmlns:rs="{RS}"'
                 f' status="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"/>'
                 f'</x:RetrieveDocumentSetResponse>'.encode())
    assert ex.response_status(body).endswith("Success")


def test_error_message_needs_error_severity_and_matches_code_or_context() -> None:
    errors = ex.reported_errors(failure(("XDSRegistryError", "patient XDSUnknownPatientId here", "Error")))
    assert ex.check_error_message("XDSUnknownPatientId", errors) == []
    warnings = ex.reported_errors(failure(("XDSUnknownPatientId", "", "Warning")))
    assert ex.check_error_message("XDSUnknownPatientId", warnings) != []


def test_error_code_is_an_exact_match_of_any_severity() -> None:
    errors = ex.reported_errors(failure(("XDSExtraMetadataNotSaved", "", "Warning")))
    assert ex.check_error_code("XDSExtraMetadataNotSaved", errors) == []
    assert ex.check_error_code("XDSExtraMetadata", errors) != []


def test_ss_with_one_doc_passes_and_wrong_shapes_fail() -> None:
    assert ex.check_contents(["SSwithOneDoc", "DocApp"], SS_ONE_DOC) == []
    assert ex.check_contents(["DocDep"], SS_ONE_DOC) == ["DocumentEntry d1 is " + APPROVED + ", expected Deprecated"]
    two = query_response(package("ss", SS_NODE) + document("d1") + document("d2") + association("ss", "d1"))
    problems = ex.check_contents(["SSwithOneDoc"], two)
    assert "2 Documents, expected 1" in problems
    assert ex.check_contents(["SSwithTwoDoc"], two) == ["no SubmissionSet HasMember association to d2",
                                                      "1 Associations, expected 2"]


def test_counts_and_object_refs() -> None:
    assert ex.check_contents([{"SubmissionSets": 1}, {"Documents": 1}, {"Associations": 1}, {"Folders": 0}],
                             SS_ONE_DOC) == []
    refs = query_response('<rim:ObjectRef id="urn:uuid:1"/><rim:ObjectRef id="urn:uuid:2"/>')
    assert ex.check_contents([{"ObjectRefs": 2}], refs) == []
    assert ex.check_contents([{"ObjectRefs": 3}], refs) == ["2 ObjectRefs, expected 3"]
    assert ex.check_contents([{"ObjectRefs": 1}], SS_ONE_DOC) == ["0 ObjectRefs, expected 1",
                                                                "3 objects besides ObjectRefs"]
    assert ex.check_contents(["None"], query_response("")) == []
    assert ex.check_contents(["None"], SS_ONE_DOC) != []


def test_folder_shapes() -> None:
    body = query_response(package("ss", SS_NODE) + package("f", FOLDER_NODE) + document("d1")
                          + association("ss", "d1") + association("ss", "f") + association("f", "d1", aid="fd")
                          + association("ss", "fd"))
    assert ex.check_contents(["SSwithOneDocOneFol", "SSApproved", "FolApp"], body) == []
    assert ex.check_contents(["SSwithOneFol"], body) == ["1 Documents, expected 0"]
    assert ex.check_contents([{"Folders": 1}, {"SubmissionSets": 1}], body) == []


def test_xfrm_rplc_relationship_must_be_unique_per_target() -> None:
    kind = "urn:ihe:iti:2007:AssociationType:XFRM_RPLC"
    once = query_response(document("d1") + document("d2", DEPRECATED) + association("d1", "d2", kind))
    assert ex.check_contents(["HasXFRM_RPLC"], once) == []
    twice = query_response(document("d1") + document("d2") + association("d1", "d2", kind, "x1")
                           + association("d3", "d2", kind, "x2"))
    assert ex.check_contents(["HasXFRM_RPLC"], twice) == ["several XFRM_RPLC associations for one target"]
    assert ex.check_contents(["HasXFRM_RPLC"], SS_ONE_DOC) == ["no XFRM_RPLC association"]


def test_unknown_contents_keyword_fails_loudly() -> None:
    assert ex.check_contents(["SomethingNew"], SS_ONE_DOC) == ["unknown contents expectation 'SomethingNew'"]


def test_assertions_over_the_section_log() -> None:
    log = ex.log_document([("verify_by_query", "ITI-18", None, SS_ONE_DOC)])
    path = ("//TestStep[@id='verify_by_query']/StoredQueryTransaction/Result/*[local-name()='AdhocQueryResponse']"
            "//*[local-name()='ExtrinsicObject']/@status")
    assert ex.check_assertion(log, "a", f"{path} = '{APPROVED}'", {}) == []
    assert ex.check_assertion(log, "a", f"{path} = '{DEPRECATED}'", {}) != []
    times = {"old_time": "20260101120000", "new_time": "20260101120004"}
    assert ex.check_assertion(log, "b", "'old_time' < 'new_time'", times) == []
    assert ex.check_assertion(log, "b", "'new_time' < 'old_time'", times) != []
    assert ex.check_assertion(log, "c", "'old_time' != 'new_time'", {"old_time": "1", "new_time": "2"}) == []
    assert ex.check_assertion(log, "d", 'substring("when",1,8) = "$DATE$"', {"when": "19990101000000"}) != []
    assert "bad XPath" in ex.check_assertion(log, "e", "//[", {})[0]


def test_date_assertion_accepts_today() -> None:
    from datetime import datetime

    log = ex.log_document([])
    today = datetime.now().strftime("%Y%m%d") + "120000"
    assert ex.check_assertion(log, "d", 'substring("when",1,8) = "$DATE$"', {"when": today}) == []


def test_report_xpath_string_value() -> None:
    assert ex.xpath_string(SS_ONE_DOC, "//*[local-name()='ExtrinsicObject']/@id") == "d1"
    assert ex.xpath_string(SS_ONE_DOC, "//*[local-name()='Nothing']") is None


def test_retrieve_compared_with_file_and_query_metadata(tmp_path: Path) -> None:
    content = b"hello conformance\n"
    (tmp_path / "doc.txt").write_bytes(content)
    sha1 = hashlib.sha1(content).hexdigest()
    slots = (f'<rim:Slot name="hash"><rim:ValueList><rim:Value>{sha1.upper()}</rim:Value></rim:ValueList></rim:Slot>'
             f'<rim:Slot name="size"><rim:ValueList><rim:Value>{len(content)}</rim:Value></rim:ValueList></rim:Slot>')
    query = query_response(document("d1", uid="1.2.3", extra=slots))
    good = [ex.RetrievedDocument("1.9", "1.2.3", "text/plain", content)]
    assert ex.check_retrieved_equal([("1.2.3", tmp_path / "doc.txt")], good) == []
    assert ex.check_against_query(good, query, {"1.2.3": "1.9"}) == []
    bad = [ex.RetrievedDocument("1.8", "1.2.3", "text/xml", content + b"x")]
    assert ex.check_retrieved_equal([("1.2.3", tmp_path / "doc.txt")], bad) != []
    problems = ex.check_against_query(bad, query, {"1.2.3": "1.9"})
    assert len(problems) == 4  # repository id, mimeType, hash, size
    assert ex.check_retrieved_equal([("9.9", tmp_path / "doc.txt")], good) == ["document 9.9 not returned"]


def test_same_ret_imgs_needs_every_requested_instance() -> None:
    request = parse(b'<r xmlns:x="urn:ihe:iti:xds-b:2007"><x:DocumentRequest><x:RepositoryUniqueId>1.1'
                    b'</x:RepositoryUniqueId><x:DocumentUniqueId>1.2.1</x:DocumentUniqueId></x:DocumentRequest>'
                    b'<x:DocumentRequest><x:RepositoryUniqueId>1.1</x:RepositoryUniqueId><x:DocumentUniqueId>1.2.2'
                    b'</x:DocumentUniqueId></x:DocumentRequest></r>')
    success = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
    both = [ex.RetrievedDocument("1.1", u, "application/dicom", b"x") for u in ("1.2.1", "1.2.2")]
    assert ex.check_same_ret_imgs(request, both, success) == []
    assert ex.check_same_ret_imgs(request, both[:1], success) == ["1 requested instances not returned (e.g. 1.2.2)"]
    wrong = [ex.RetrievedDocument("1.1", "1.2.1", "image/jpeg", b"x"), both[1]]
    assert ex.check_same_ret_imgs(request, wrong, success) == ["mimeType image/jpeg for 1.2.1"]


def test_registry_error_list_not_empty() -> None:
    body = failure(("XDSDocumentUniqueIdError", "unknown", "Error"))
    assert ex.check_registry_error_list_not_empty(ex.response_status(body), ex.reported_errors(body)) == []
    empty = failure()
    assert ex.check_registry_error_list_not_empty(ex.response_status(empty), []) == ["RegistryErrorList is empty"]


def test_must_only_include_the_bound_document_entry() -> None:
    body = query_response(document("urn:uuid:d1"))
    stable = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
    item = {"DocumentEntries": {"MustOnlyInclude": {"DocumentEntry": "$deid$", "DocumentEntryType": stable}}}
    assert ex.check_contents([item], body, symbols={"$deid$": "urn:uuid:d1"}) == []
    assert ex.check_contents([item], body, symbols={"$deid$": "urn:uuid:d2"}) != []
