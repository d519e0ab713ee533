"""ebXML parsing: real samples to the typed model; structural problems to XdsError with all findings."""

from __future__ import annotations

import copy

import pytest
from lxml import etree

from tests.xds_core.ebxml.helpers import load, submit_objects_request_of
from xds_core import ns
from xds_core.ebxml.parse import (
    first_series_request,
    parse_adhoc_query_request,
    parse_adhoc_query_response,
    parse_provide_and_register_request,
    parse_registry_object,
    parse_registry_object_list,
    parse_retrieve_document_set_request,
    parse_retrieve_document_set_response,
    parse_retrieve_imaging_document_set_request,
    parse_submit_objects_request,
)
from xds_core.errors import ErrorCode, Severity, XdsError
from xds_core.metadata.objects import (
    Association,
    DocumentEntry,
    Folder,
    RegistryPackage,
    SubmissionSet,
)
from xds_core.safe_xml import parse_xml
from xds_core.vocabulary import (
    KOS_FORMAT_CODE,
    AssociationType,
    ClassificationNode,
    ClassificationScheme,
    ObjectType,
    StoredQuery,
)

RIM = ns.RIM
LCM = ns.LCM


def xml(text: str) -> etree._Element:
    return parse_xml(text.encode())


def submit(objects: str, extra_ns: str = "") -> etree._Element:
    return xml(f'<lcm:SubmitObjectsRequest xmlns:lcm="{LCM}" xmlns:rim="{RIM}" {extra_ns}>'
               f"<rim:RegistryObjectList>{objects}</rim:RegistryObjectList></lcm:SubmitObjectsRequest>")


def findings(exc: pytest.ExceptionInfo[XdsError]) -> list[str]:
    return [e.code_context for e in exc.value.errors]


# --- submissions from real samples ---------------------------------------------------

def test_openxds_folder_submission_types_packages_by_top_level_marker_classification() -> None:
    submission = parse_submit_objects_request(
        submit_objects_request_of(load("openxds_add_document2_folder.xml")))

    assert isinstance(submission.submission_set, SubmissionSet)
    assert submission.submission_set.id == "SubmissionSet"
    assert [f.id for f in submission.folders] == ["Folder"]
    assert isinstance(submission.folders[0], Folder)
    assert [d.id for d in submission.document_entries] == ["doc1"]
    assert {a.id for a in submission.associations} == {"sub-fol", "FolderDocument01Assoc", "sub-fol-doc1",
                                                      "sub-doc1"}
    # The top-level marker Classifications moved into their packages, ids kept; nothing left loose.
    assert [c.id for c in submission.submission_set.classifications
            if c.classification_node == ClassificationNode.SUBMISSION_SET] == ["cl-ss0"]
    assert [c.id for c in submission.folders[0].classifications
            if c.classification_node == ClassificationNode.FOLDER] == ["cl-fol"]
    assert submission.classifications == []
    assert submission.unknown_packages == []
    folder = submission.folders[0]
    assert folder.title == "FOLDER"
    assert folder.comments == "Test add document to Folder"
    assert [str(c) for c in folder.code_list] == ["Referrals^^Connect-a-thon folderCodeList"]
    assert folder.unique_id == "$folder_uniqueid"


def test_openxds_document_entry_typed_accessors() -> None:
    submission = parse_submit_objects_request(submit_objects_request_of(load("openxds_submit_document.xml")))
    entry = submission.document_entries[0]

    assert entry.mime_type == "text/xml"
    assert entry.object_type == ObjectType.STABLE_DOCUMENT_ENTRY
    assert entry.title == "My Test Referral Summary Document"
    assert entry.creation_time and entry.creation_time.isdigit()
    assert entry.source_patient_id == "33334455^^^&1.3.6.1.4.1.21367.2010.1.2.108&ISO"
    assert entry.legal_authenticator.startswith("2.3.515.3.12345^DePinto^John")
    assert len(entry.source_patient_info) == 5
    assert entry.class_code is not None and entry.format_code is not None
    assert entry.patient_id is not None and entry.unique_id is not None
    hm = [a for a in submission.associations if a.type == AssociationType.HasMember]
    assert hm and hm[0].submission_set_status == "Original"


def test_xdsi_manifest_metadata_parses_to_a_kos_document_entry() -> None:
    submission = parse_submit_objects_request(load("nist_idc_metadata_IDCDEPT001.xml"))
    entry = submission.document_entries[0]

    assert entry.id == "Document01"
    assert entry.mime_type == "application/dicom"
    assert entry.format_code.code == KOS_FORMAT_CODE
    assert [c.code for c in entry.event_code_list] == ["CT", "R-FAB55"]
    assert submission.submission_set is not None
    assert submission.submission_set.unique_id == "SubmissionSet01"
    # The SubmissionSet marker was top-level with an id; it is kept on the package.
    assert any(c.id == "ID_1795960102_1" for c in submission.submission_set.classifications)
    assert len(submission.associations) == 1


def test_replacement_submission_keeps_rplc_association_to_an_object_outside_the_message() -> None:
    submission = parse_provide_and_register_request(load("nist_repos1111_rplc_pnr.xml")).submission
    rplc = [a for a in submission.associations if a.type == AssociationType.RPLC]

    assert [(a.source_object, a.target_object) for a in rplc] == [("myDocId1", "$original_doc_uuid$")]


def test_unknown_slots_attributes_elements_and_localized_string_details_are_kept() -> None:
    el = submit(f"""
      <rim:ExtrinsicObject id="d1" mimeType="text/plain" objectType="{ObjectType.STABLE_DOCUMENT_ENTRY}"
            status="urn:oasis:names:tc:ebxml-regrep:StatusType:Approved" lid="d1" isOpaque="false"
            xmlns:x="urn:example:x" x:custom="kept">
        <rim:Slot name="urn:example:unknownSlot" slotType="urn:example:type">
          <rim:ValueList><rim:Value>v1</rim:Value><rim:Value>v2</rim:Value></rim:ValueList>
        </rim:Slot>
        <rim:Name><rim:LocalizedString xml:lang="de-CH" charset="UTF-8" value="Titel"/>
                  <rim:LocalizedString xml:lang="fr-CH" value="Titre"/></rim:Name>
        <rim:VersionInfo versionName="2" comment="second"/>
        <rim:ContentVersionInfo versionName="7"/>
      </rim:ExtrinsicObject>""")
    entry = parse_submit_objects_request(el).document_entries[0]

    assert entry.slot("urn:example:unknownSlot").values == ["v1", "v2"]
    assert entry.slot("urn:example:unknownSlot").slot_type == "urn:example:type"
    assert entry.extra_attributes == {"{urn:example:x}custom": "kept"}
    assert [(s.lang, s.charset, s.value) for s in entry.name.strings] == [
        ("de-CH", "UTF-8", "Titel"), ("fr-CH", None, "Titre")]
    assert (entry.version_name, entry.version_comment) == ("2", "second")
    assert entry.lid == "d1" and entry.status.endswith("Approved") and entry.is_opaque == "false"
    assert [e.tag for e in entry.extra_elements] == [ns.q(RIM, "ContentVersionInfo")]


def test_nested_classification_without_classified_object_points_at_its_parent() -> None:
    el = submit(f"""
      <rim:ExtrinsicObject id="d1" objectType="{ObjectType.STABLE_DOCUMENT_ENTRY}">
        <rim:Classification id="c1" classificationScheme="{ClassificationScheme.DocumentEntry_classCode}"
              nodeRepresentation="X"/>
        <rim:ExternalIdentifier id="e1" identificationScheme="urn:uuid:x" value="v"/>
      </rim:ExtrinsicObject>""")
    entry = parse_submit_objects_request(el).document_entries[0]

    assert entry.classifications[0].classified_object == "d1"
    assert entry.external_identifiers[0].registry_object == "d1"


def test_top_level_objects_pointing_outside_the_message_stay_top_level() -> None:
    el = submit("""
      <rim:Classification id="c9" classifiedObject="urn:uuid:elsewhere" classificationNode="urn:uuid:n"/>
      <rim:ExternalIdentifier id="e9" registryObject="urn:uuid:elsewhere" identificationScheme="urn:uuid:s"
            value="v"/>
      <rim:ObjectRef id="urn:uuid:elsewhere"/>
      <rim:RegistryPackage id="p1"/>
      <rim:ExternalLink id="l1" externalURI="http://example.org/"/>""")
    submission = parse_submit_objects_request(el)

    assert [c.id for c in submission.classifications] == ["c9"]
    assert [e.id for e in submission.external_identifiers] == ["e9"]
    assert [r.id for r in submission.object_refs] == ["urn:uuid:elsewhere"]
    assert [type(p) for p in submission.unknown_packages] == [RegistryPackage]
    assert [o.tag for o in submission.unknown_objects] == [ns.q(RIM, "ExternalLink")]


def test_second_submission_set_is_reported_separately() -> None:
    marker = ClassificationNode.SUBMISSION_SET
    el = submit(f"""
      <rim:RegistryPackage id="ss1"><rim:Classification id="m1" classifiedObject="ss1"
          classificationNode="{marker}"/></rim:RegistryPackage>
      <rim:RegistryPackage id="ss2"/>
      <rim:Classification id="m2" classifiedObject="ss2" classificationNode="{marker}"/>""")
    submission = parse_submit_objects_request(el)

    assert submission.submission_set.id == "ss1"
    assert [s.id for s in submission.extra_submission_sets] == ["ss2"]


def test_request_slots_and_attributes_are_kept() -> None:
    el = xml(f'<lcm:SubmitObjectsRequest xmlns:lcm="{LCM}" xmlns:rim="{RIM}" xmlns:rs="{ns.RS}" id="r1">'
             '<rs:RequestSlotList><rim:Slot name="s"><rim:ValueList><rim:Value>v</rim:Value></rim:ValueList>'
             '</rim:Slot></rs:RequestSlotList><rim:RegistryObjectList/></lcm:SubmitObjectsRequest>')
    submission = parse_submit_objects_request(el)

    assert [(s.name, s.values) for s in submission.request_slots] == [("s", ["v"])]
    assert submission.request_attributes == {"id": "r1"}


# --- non-standard wrappers and ebRIM 2.1 -------------------------------------------------

def test_non_standard_root_is_refused_naming_it() -> None:
    root = load("nist_ids4802_selftest_pnr_metadata.xml")
    with pytest.raises(XdsError) as exc:
        parse_submit_objects_request(root)

    assert exc.value.errors[0].error_code == ErrorCode.XDSRegistryMetadataError
    assert "urn:oasis:names:tc:ebxml-regrep:registry:xsd:3.0" in findings(exc)[0]


def test_objects_inside_a_non_standard_wrapper_parse_once_associations_have_ids() -> None:
    # NIST's IDS sample wraps rim 3.0 objects in LeafRegistryObjectList and leaves Association ids
    # out; the conformance runner adds them (conformance/corpus/README.md §2 step 9), as done here.
    root = load("nist_ids4802_selftest_pnr_metadata.xml")
    wrapper = root.find(ns.q(RIM, "LeafRegistryObjectList"))
    with pytest.raises(XdsError) as exc:
        parse_registry_object_list(wrapper)
    assert findings(exc) == ["rim:Association without the required id attribute"]

    for n, association in enumerate(wrapper.iter(ns.q(RIM, "Association"))):
        association.set("id", f"id_{n}")
    submission = parse_registry_object_list(wrapper)

    assert submission.submission_set is not None and submission.submission_set.id == "SubmissionSet01"
    assert [d.mime_type for d in submission.document_entries] == ["application/dicom"]
    assert len(submission.object_refs) == 19


def test_xdsi_kos_sample_objects_parse_after_moving_them_into_the_rim_namespace() -> None:
    root = load("nist_ids_dept002_kos_metadata.xml")
    # Its objects are in the non-standard "urn:...:rim:xsd:3.0"; move them, as the runner does.
    odd = "urn:oasis:names:tc:ebxml-regrep:rim:xsd:3.0"
    for el in root.iter():
        if isinstance(el.tag, str) and el.tag.startswith(f"{{{odd}}}"):
            el.tag = ns.q(RIM, etree.QName(el).localname)
    wrapper = root.find(ns.q(RIM, "LeafRegistryObjectList"))
    entry = parse_registry_object(wrapper.find(ns.q(RIM, "ExtrinsicObject")))

    assert isinstance(entry, DocumentEntry)
    assert entry.mime_type == "application/dicom"
    assert entry.format_code.code == KOS_FORMAT_CODE
    assert [a.person for a in entry.author] == ["^Smitty^Gerald^^^", "^Dopplemeyer^Sherry^^^"]
    assert entry.title == "DocA"


def test_ebrim_21_message_is_refused_naming_the_namespace() -> None:
    el = xml(f'<rs:SubmitObjectsRequest xmlns:rs="{ns.RS21}" xmlns="{ns.RIM21}"><LeafRegistryObjectList/>'
             "</rs:SubmitObjectsRequest>")
    with pytest.raises(XdsError) as exc:
        parse_submit_objects_request(el)

    assert "ebRIM 2.1" in findings(exc)[0] and ns.RS21 in findings(exc)[0]


# --- malformed submissions: every finding at once ----------------------------------------

def test_malformed_submission_reports_all_structural_findings() -> None:
    el = submit(f"""
      <rim:ExtrinsicObject mimeType="text/plain" objectType="{ObjectType.STABLE_DOCUMENT_ENTRY}"/>
      <rim:ExtrinsicObject id="d2" mimeType="text/plain">
        <rim:ExternalIdentifier id="e1" registryObject="d2" identificationScheme="urn:uuid:x"/>
        <rim:Slot><rim:ValueList/></rim:Slot>
        <rim:Name><rim:LocalizedString/></rim:Name>
      </rim:ExtrinsicObject>
      <rim:Association id="a1" associationType="{AssociationType.HasMember}" targetObject="d2"/>
      <rim:Classification id="c1" classificationNode="urn:uuid:x"/>
      <rim:ObjectRef/>""")
    with pytest.raises(XdsError) as exc:
        parse_submit_objects_request(el)
    texts = findings(exc)

    assert {e.error_code for e in exc.value.errors} == {ErrorCode.XDSRegistryMetadataError}
    assert all(e.severity == Severity.ERROR for e in exc.value.errors)
    expected = [
        "rim:ExtrinsicObject (DocumentEntry) without the required id attribute",
        "rim:ExtrinsicObject without objectType",
        "without the required value attribute",
        "rim:Slot without the required name attribute",
        "rim:LocalizedString in rim:Name without the required value attribute",
        "rim:Association without the required sourceObject attribute",
        "rim:Classification without the required classifiedObject attribute",
        "rim:ObjectRef without the required id attribute",
    ]
    for text in expected:
        assert any(text in t for t in texts), (text, texts)
    assert len(texts) == len(expected)
    # Findings carry the object id as location where there is one.
    assert any(e.location == "d2" for e in exc.value.errors)


def test_submission_error_code_can_be_the_repository_one() -> None:
    with pytest.raises(XdsError) as exc:
        parse_submit_objects_request(submit("<rim:RegistryPackage/>"),
                                     error_code=ErrorCode.XDSRepositoryMetadataError)
    assert exc.value.errors[0].error_code == ErrorCode.XDSRepositoryMetadataError


def test_submit_objects_request_without_object_list_is_refused() -> None:
    with pytest.raises(XdsError) as exc:
        parse_submit_objects_request(xml(f'<lcm:SubmitObjectsRequest xmlns:lcm="{LCM}"/>'))
    assert findings(exc) == ["lcm:SubmitObjectsRequest without rim:RegistryObjectList"]


def test_parse_registry_object_refuses_a_non_object_element() -> None:
    with pytest.raises(XdsError) as exc:
        parse_registry_object(xml(f'<rim:Slot xmlns:rim="{RIM}" name="x"/>'))
    assert "rim:Slot" in findings(exc)[0]


def test_lone_package_is_typed_by_nested_marker() -> None:
    el = xml(f'<rim:RegistryPackage xmlns:rim="{RIM}" id="f1"><rim:Classification id="c" classifiedObject="f1" '
             f'classificationNode="{ClassificationNode.FOLDER}"/></rim:RegistryPackage>')
    assert isinstance(parse_registry_object(el), Folder)
    assert isinstance(parse_registry_object(xml(
        f'<rim:Association xmlns:rim="{RIM}" id="a" associationType="t" sourceObject="s" targetObject="t"/>')),
        Association)


# --- ProvideAndRegister ---------------------------------------------------------------

def test_provide_and_register_lists_documents_with_their_elements() -> None:
    request = parse_provide_and_register_request(load("nist_ids4802_validate_metadata_pnr.xml"))

    assert [doc_id for doc_id, _ in request.documents] == [d.id for d in request.submission.document_entries]
    _, element = request.documents[0]
    assert element.tag == ns.q(ns.XDSB, "Document")
    assert element[0].tag == ns.q(ns.XOP, "Include")


def test_provide_and_register_problems_are_collected_with_those_of_the_metadata() -> None:
    root = load("nist_ids4802_validate_metadata_pnr.xml")
    del next(root.iter(ns.q(RIM, "Association"))).attrib["id"]
    copy_of_document = copy.deepcopy(root.find(ns.q(ns.XDSB, "Document")))
    del copy_of_document.attrib["id"]
    root.append(copy_of_document)
    with pytest.raises(XdsError) as exc:
        parse_provide_and_register_request(root)
    texts = findings(exc)

    assert "rim:Association without the required id attribute" in texts
    assert any(t.startswith("xdsb:Document without the required id") for t in texts)


def test_provide_and_register_without_submit_objects_request_is_refused() -> None:
    with pytest.raises(XdsError) as exc:
        parse_provide_and_register_request(xml(f'<x:ProvideAndRegisterDocumentSetRequest xmlns:x="{ns.XDSB}"/>'))
    assert "without lcm:SubmitObjectsRequest" in findings(exc)[0]


# --- AdhocQueryRequest ------------------------------------------------------------------

def test_query_request_parameters_in_document_order_with_raw_values() -> None:
    request = parse_adhoc_query_request(load("nist_11897_and_repeated_slot.xml"))

    assert request.query_id == StoredQuery.FindDocuments
    assert request.return_type == "ObjectRef"
    assert request.return_composed_objects is True
    assert request.home_community_id is None
    assert [name for name, _ in request.parameters] == [
        "$XDSDocumentEntryStatus", "$XDSDocumentEntryPatientId",
        "$XDSDocumentEntryEventCodeList", "$XDSDocumentEntryEventCodeList"]
    assert request.parameters[1] == ("$XDSDocumentEntryPatientId", ["'$patient_id$'"])
    assert request.values("$XDSDocumentEntryEventCodeList") == [
        ["('urn:connectathon:bppc:foundational:policy^^1.3.6.1.4.1.21367.2017.3')"],
        ["('urn:connectathon:policy:full-access^^1.3.6.1.4.1.21367.2017.3')"]]


def test_query_request_with_values_split_over_several_value_elements_and_home() -> None:
    two = parse_adhoc_query_request(load("nist_11901_query5_two_values.xml"))
    home = parse_adhoc_query_request(load("nist_11901_query6_get_documents_home.xml"))

    assert two.parameters == [("$XDSDocumentEntryEntryUUID", ["('$uuid1$')", "('$uuid2$')"])]
    assert home.query_id == StoredQuery.GetDocuments and home.home_community_id == "urn:oid:1.1.1"
    assert home.return_type == "LeafClass"


@pytest.mark.parametrize(("body", "expected"), [
    ('<query:ResponseOption returnType="RegistryObject"/><rim:AdhocQuery id="q"/>',
     ["ResponseOption returnType 'RegistryObject' is not LeafClass or ObjectRef"]),
    ('<query:ResponseOption/><rim:AdhocQuery id="q"/>',
     ["ResponseOption returnType 'RegistryObject' is not LeafClass or ObjectRef"]),
    ('<rim:AdhocQuery id="q"/>', ["query:AdhocQueryRequest without query:ResponseOption"]),
    ('<query:ResponseOption returnType="LeafClass"/>', ["query:AdhocQueryRequest without rim:AdhocQuery"]),
    ('<query:ResponseOption returnType="Bogus"/><rim:AdhocQuery><rim:Slot><rim:ValueList/></rim:Slot>'
     '</rim:AdhocQuery>',
     ["ResponseOption returnType 'Bogus' is not LeafClass or ObjectRef",
      "rim:AdhocQuery without the stored query id attribute",
      "rim:Slot without the required name attribute"]),
])
def test_malformed_query_request_reports_all_findings_as_registry_error(body: str, expected: list[str]) -> None:
    el = xml(f'<query:AdhocQueryRequest xmlns:query="{ns.QUERY}" xmlns:rim="{RIM}">{body}'
             "</query:AdhocQueryRequest>")
    with pytest.raises(XdsError) as exc:
        parse_adhoc_query_request(el)

    assert findings(exc) == expected
    assert {e.error_code for e in exc.value.errors} == {ErrorCode.XDSRegistryError}


def test_query_request_with_wrong_root_is_refused() -> None:
    with pytest.raises(XdsError) as exc:
        parse_adhoc_query_request(load("nist_12360_retrieve_request.xml"))
    assert findings(exc) == ["expected root element query:AdhocQueryRequest, got xdsb:RetrieveDocumentSetRequest"]


# --- AdhocQueryResponse -----------------------------------------------------------------

def test_query_response_leaf_class_objects_typed_and_errors_read() -> None:
    marker = ClassificationNode.SUBMISSION_SET
    el = xml(f"""<query:AdhocQueryResponse xmlns:query="{ns.QUERY}" xmlns:rim="{RIM}" xmlns:rs="{ns.RS}"
        status="urn:ihe:iti:2007:ResponseStatusType:PartialSuccess">
      <rs:RegistryErrorList highestSeverity="{Severity.WARNING}">
        <rs:RegistryError errorCode="XDSUnknownCommunity" codeContext="c" severity="{Severity.WARNING}"
            location="here"/>
        <rs:RegistryError errorCode="XDSRegistryError" codeContext="d"/>
      </rs:RegistryErrorList>
      <rim:RegistryObjectList>
        <rim:ExtrinsicObject id="urn:uuid:1" objectType="{ObjectType.STABLE_DOCUMENT_ENTRY}"/>
        <rim:RegistryPackage id="urn:uuid:2"/>
        <rim:Classification id="urn:uuid:3" classifiedObject="urn:uuid:2" classificationNode="{marker}"/>
        <rim:Association id="urn:uuid:4" associationType="{AssociationType.HasMember}" sourceObject="urn:uuid:2"
            targetObject="urn:uuid:1"/>
      </rim:RegistryObjectList></query:AdhocQueryResponse>""")
    result = parse_adhoc_query_response(el)

    assert result.status.endswith("PartialSuccess")
    assert [(e.error_code, e.severity, e.location) for e in result.errors] == [
        ("XDSUnknownCommunity", Severity.WARNING, "here"), ("XDSRegistryError", Severity.ERROR, "")]
    assert [type(o) for o in result.objects] == [DocumentEntry, SubmissionSet, Association]
    assert result.object_refs == []


def test_query_response_object_refs() -> None:
    el = xml(f'<query:AdhocQueryResponse xmlns:query="{ns.QUERY}" xmlns:rim="{RIM}" '
             'status="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"><rim:RegistryObjectList>'
             '<rim:ObjectRef id="urn:uuid:a"/><rim:ObjectRef id="urn:uuid:b"/></rim:RegistryObjectList>'
             "</query:AdhocQueryResponse>")
    result = parse_adhoc_query_response(el)

    assert result.object_refs == ["urn:uuid:a", "urn:uuid:b"] and result.objects == []


def test_query_response_without_status_is_refused() -> None:
    with pytest.raises(XdsError) as exc:
        parse_adhoc_query_response(xml(f'<query:AdhocQueryResponse xmlns:query="{ns.QUERY}"/>'))
    assert findings(exc) == ["query:AdhocQueryResponse without the required status attribute"]


# --- retrieve ------------------------------------------------------------------------------

def test_retrieve_request_from_nist_sample() -> None:
    assert [(r.repository_unique_id, r.document_unique_id, r.home_community_id)
            for r in parse_retrieve_document_set_request(load("nist_12360_retrieve_request.xml"))] == [
        ("$repuid$", "$docuid1$", None)]


def test_retrieve_request_problems_all_reported_as_repository_error() -> None:
    el = xml(f'<b:RetrieveDocumentSetRequest xmlns:b="{ns.XDSB}">'
             "<b:DocumentRequest><b:RepositoryUniqueId>1.2</b:RepositoryUniqueId></b:DocumentRequest>"
             "<b:DocumentRequest><b:HomeCommunityId>urn:oid:1</b:HomeCommunityId>"
             "<b:DocumentUniqueId> 1.3 </b:DocumentUniqueId></b:DocumentRequest>"
             "</b:RetrieveDocumentSetRequest>")
    with pytest.raises(XdsError) as exc:
        parse_retrieve_document_set_request(el)

    assert findings(exc) == ["xdsb:DocumentRequest without DocumentUniqueId",
                             "xdsb:DocumentRequest without RepositoryUniqueId"]
    assert [e.location for e in exc.value.errors] == ["1.2", "1.3"]
    assert {e.error_code for e in exc.value.errors} == {ErrorCode.XDSRepositoryError}


def test_empty_retrieve_request_is_refused() -> None:
    with pytest.raises(XdsError):
        parse_retrieve_document_set_request(xml(f'<b:RetrieveDocumentSetRequest xmlns:b="{ns.XDSB}"/>'))


def test_rad69_request_from_nist_sample() -> None:
    request = parse_retrieve_imaging_document_set_request(load("nist_ids4811_rad69_request.xml"))

    assert [s.study_instance_uid for s in request.studies] == ["1.3.6.1.4.1.21367.201599.1.201604020954059"]
    series = request.studies[0].series
    assert [s.series_instance_uid for s in series] == ["1.3.6.1.4.1.21367.201599.2.201604020954059",
                                                       "1.3.6.1.4.1.21367.201599.2.201604020954059.21"]
    assert len(request.document_requests()) == sum(len(s.documents) for s in series) == 36
    assert series[0].documents[0].repository_unique_id == "1.3.6.1.4.1.21367.13.80.110"
    assert series[0].documents[0].document_unique_id == "1.3.6.1.4.1.21367.201599.3.201604020954059.1"
    assert request.transfer_syntax_uids == ["1.2.840.10008.1.2.1"]


def test_first_series_of_a_rad69_request_is_read_without_the_full_parse() -> None:
    element = load("nist_ids4811_rad69_request.xml")
    request = parse_retrieve_imaging_document_set_request(element)
    study, series, uids = first_series_request(element)  # type: ignore[misc]

    first = request.studies[0].series[0]
    assert (study, series) == (request.studies[0].study_instance_uid, first.series_instance_uid)
    assert uids == [d.document_unique_id for d in first.documents]
    assert first_series_request(element, max_documents=2) == (study, series, uids[:2])
    assert first_series_request(xml(f'<i:RetrieveImagingDocumentSetRequest xmlns:i="{ns.XDSI}">'
                                    '<i:StudyRequest studyInstanceUID="1.3"/></i:RetrieveImagingDocumentSetRequest>'
                                    )) is None


def test_rad69_request_structural_problems_all_reported() -> None:
    el = xml(f'<i:RetrieveImagingDocumentSetRequest xmlns:i="{ns.XDSI}" xmlns:b="{ns.XDSB}">'
             '<i:StudyRequest><i:SeriesRequest seriesInstanceUID="1.2"/></i:StudyRequest>'
             '<i:StudyRequest studyInstanceUID="1.3"/>'
             "<i:TransferSyntaxUIDList/></i:RetrieveImagingDocumentSetRequest>")
    with pytest.raises(XdsError) as exc:
        parse_retrieve_imaging_document_set_request(el)

    assert findings(exc) == [
        "iherad:StudyRequest without studyInstanceUID",
        "iherad:SeriesRequest 1.2 without xdsb:DocumentRequest",
        "iherad:StudyRequest 1.3 without iherad:SeriesRequest",
        "iherad:TransferSyntaxUIDList without iherad:TransferSyntaxUID",
    ]


def test_rad69_request_without_transfer_syntax_list_or_studies() -> None:
    with pytest.raises(XdsError) as exc:
        parse_retrieve_imaging_document_set_request(
            xml(f'<i:RetrieveImagingDocumentSetRequest xmlns:i="{ns.XDSI}"/>'))
    assert findings(exc) == ["iherad:RetrieveImagingDocumentSetRequest without iherad:StudyRequest",
                             "iherad:RetrieveImagingDocumentSetRequest without iherad:TransferSyntaxUIDList"]


def test_retrieve_response_documents_and_errors() -> None:
    el = xml(f"""<b:RetrieveDocumentSetResponse xmlns:b="{ns.XDSB}" xmlns:rs="{ns.RS}" xmlns:xop="{ns.XOP}">
      <rs:RegistryResponse status="urn:ihe:iti:2007:ResponseStatusType:PartialSuccess">
        <rs:RegistryErrorList><rs:RegistryError errorCode="XDSDocumentUniqueIdError" codeContext="gone"
            severity="{Severity.ERROR}" location="1.9"/></rs:RegistryErrorList>
      </rs:RegistryResponse>
      <b:DocumentResponse><b:HomeCommunityId>urn:oid:1.1</b:HomeCommunityId>
        <b:RepositoryUniqueId>1.2</b:RepositoryUniqueId><b:DocumentUniqueId>1.3</b:DocumentUniqueId>
        <b:mimeType>application/dicom</b:mimeType><b:Document><xop:Include href="cid:a"/></b:Document>
      </b:DocumentResponse></b:RetrieveDocumentSetResponse>""")
    status, errors, documents = parse_retrieve_document_set_response(el)

    assert status.endswith("PartialSuccess")
    assert [(e.error_code, e.location) for e in errors] == [("XDSDocumentUniqueIdError", "1.9")]
    assert [(d.repository_unique_id, d.document_unique_id, d.mime_type, d.home_community_id)
            for d in documents] == [("1.2", "1.3", "application/dicom", "urn:oid:1.1")]
    assert documents[0].element.tag == ns.q(ns.XDSB, "Document")


def test_retrieve_response_missing_parts_are_reported() -> None:
    el = xml(f'<b:RetrieveDocumentSetResponse xmlns:b="{ns.XDSB}"><b:DocumentResponse>'
             "<b:DocumentUniqueId>1.3</b:DocumentUniqueId></b:DocumentResponse></b:RetrieveDocumentSetResponse>")
    with pytest.raises(XdsError) as exc:
        parse_retrieve_document_set_response(el)
    assert findings(exc) == ["xdsb:DocumentResponse without xdsb:RepositoryUniqueId",
                             "xdsb:DocumentResponse without xdsb:mimeType",
                             "xdsb:DocumentResponse without xdsb:Document",
                             "xdsb:RetrieveDocumentSetResponse without rs:RegistryResponse"]


def test_parser_leaves_business_rules_to_validation() -> None:
    # No slots, no codes, no patient id, unknown objectType, wrong mimeType: structurally fine.
    el = submit('<rim:ExtrinsicObject id="d1" objectType="urn:uuid:not-a-document-entry-type"/>'
                '<rim:Association id="a1" associationType="urn:example:unknown" sourceObject="x" targetObject="y"/>')
    submission = parse_submit_objects_request(el)

    assert [d.id for d in submission.document_entries] == ["d1"]
    assert submission.document_entries[0].mime_type == ""
    assert submission.associations[0].type is None
    assert submission.submission_set is None
